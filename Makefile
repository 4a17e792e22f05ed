GO ?= go
BIN := bin/topoha

.PHONY: build test test-race lint check-deploy e2e-vitess chaos chaos-short bench bench-go demo clean

build:
	$(GO) build -o $(BIN) ./cmd/topoha

# The whole system on one machine with embedded etcd servers, narrated. Needs nothing but Go.
demo:
	$(GO) run ./cmd/topoha demo

# The README's test command; .ci/run runs exactly this. The deploy package's tests need promtool too.
test: check-deploy
	$(GO) vet ./...
	$(GO) vet -tags e2evitess ./e2e/
	$(GO) vet -tags chaos ./chaos/
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) test -race -timeout 15m ./...

lint:
	$(GO) vet ./...
	gofmt -l . | (! grep .)

# The alert rules and their unit tests; promtool comes from Debian's prometheus package.
check-deploy:
	command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)
	promtool check rules deploy/prometheus/topoha-alerts.yml
	promtool test rules deploy/prometheus/topoha-alerts.test.yml

# topoha against real vtctld, vtctldclient and vtctlclient (e2e/README.md). The Vitess binaries are built
# once into a cache (minutes cold; build.sh prints the time) and reused.
e2e-vitess:
	@bin="$$(bash e2e/vitess/build.sh | tail -n1)" && \
	TOPOHA_VITESS_BIN="$$bin" $(GO) test -tags e2evitess -count=1 -v -timeout 20m ./e2e/

# The fault-injection suite (chaos/doc.go): real etcd servers behind toxiproxy links, topoha processes,
# every scenario of issue 6 with invariants checked after each; prints a table. chaos-short is the same
# scenarios with fewer iterations (CI runs it); CHAOS_REPORT=FILE also writes the table to FILE.
chaos:
	$(GO) test -tags chaos -count=1 -v -timeout 30m ./chaos/

chaos-short:
	$(GO) test -tags chaos -count=1 -v -timeout 30m -short ./chaos/

# Mirror benchmark against etcdctl make-mirror on the same two etcd servers (installs etcd from Debian).
bench:
	bash bench/run.sh

bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./replication/

clean:
	rm -rf bin
