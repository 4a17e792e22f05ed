GO ?= go
BIN := bin/topoha

.PHONY: build test test-race lint bench bench-go demo clean

build:
	$(GO) build -o $(BIN) ./cmd/topoha

# The whole system on one machine with embedded etcd servers, narrated. Needs nothing but Go.
demo:
	$(GO) run ./cmd/topoha demo

# The README's test command; .ci/run runs exactly this.
test:
	$(GO) vet ./...
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) test -race -timeout 15m ./...

lint:
	$(GO) vet ./...
	gofmt -l . | (! grep .)

# Mirror benchmark against etcdctl make-mirror on the same two etcd servers (installs etcd from Debian).
bench:
	bash bench/run.sh

bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./replication/

clean:
	rm -rf bin
