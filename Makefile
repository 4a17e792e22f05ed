GO ?= go
BIN := bin/topoha

.PHONY: build image image-test release test test-race lint check-deploy test-etcd-versions e2e-vitess chaos chaos-short bench bench-failover bench-go demo clean

# Stamped with the version, commit and build date (build/version.sh); `topoha version` prints them.
build:
	ldflags="$$(build/version.sh ldflags)" && $(GO) build -ldflags "$$ldflags" -o $(BIN) ./cmd/topoha

# The container image as an OCI archive, bin/topoha-image.tar: static topoha, vtctldclient and vtctlclient,
# no shell, user 65532 (build/image.sh). Needs root and buildah, which it installs from Debian if missing.
image:
	command -v buildah >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah)
	bash build/image.sh

# Runs `topoha version`, the Vitess clients and `topoha demo` inside the image and checks its configuration.
image-test:
	bash build/image-test.sh

# Static linux/amd64 and linux/arm64 binaries and SHA256SUMS in bin/release (build/release.sh).
release:
	bash build/release.sh

# The whole system on one machine with embedded etcd servers, narrated. Needs nothing but Go.
demo:
	$(GO) run ./cmd/topoha demo

# The README's test command; .ci/run runs exactly this. The deploy package's tests need promtool too.
# cmd/topoha runs without -race: its tests drive the built binary as processes (built without -race), and
# the race detector would only slow the 3-member etcd clusters in the test process several times over;
# the packages it wires are race-tested on their own. It runs beside the race-tested packages: the tests
# mostly wait on etcd and timers (about one core busy of two), and its output is printed when it ends.
test: check-deploy
	$(GO) vet ./...
	$(GO) vet -tags e2evitess ./e2e/
	$(GO) vet -tags chaos ./chaos/
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	@out=$$(mktemp); $(GO) test -timeout 15m ./cmd/topoha/ >"$$out" 2>&1 & cmd=$$!; \
	$(GO) test -race -timeout 15m $$($(GO) list ./... | grep -v '/cmd/topoha$$'); race=$$?; \
	wait $$cmd; status=$$?; cat "$$out"; rm -f "$$out"; [ $$race -eq 0 ] && [ $$status -eq 0 ]

lint:
	$(GO) vet ./...
	gofmt -l . | (! grep .)

# The alert rules and their unit tests; promtool comes from Debian's prometheus package.
check-deploy:
	command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)
	promtool check rules deploy/prometheus/topoha-alerts.yml
	promtool test rules deploy/prometheus/topoha-alerts.test.yml

# The health, election, mirror and controller tests again with every etcd member a process of each etcd
# version production runs, instead of the embedded 3.7 (internal/testenv: TOPOHA_ETCD_BIN): Debian's 3.4.23
# (etcd-server), and 3.5.36 and 3.6.17, each built once from the module proxy (e2e/etcd/build.sh). Each
# version runs them twice, without authentication and with it (TOPOHA_ETCD_AUTH=password: a user without
# the root role), then the process tests of authentication (cmd/topoha TestAuth*: a DC loss, a controller
# started during it, status, history and plan, a user refused at start). A member stop is then a kill -9.
# ETCD_VERSIONS picks versions, e.g. make test-etcd-versions ETCD_VERSIONS="3.4 3.6".
ETCD_VERSIONS ?= 3.4 3.5 3.6
ETCD_VERSION_PACKAGES := ./health/ ./election/ ./replication/ ./controller/
test-etcd-versions:
	command -v etcd >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server)
	@for v in $(ETCD_VERSIONS); do \
		if [ "$$v" = 3.4 ]; then bin="$$(command -v etcd)"; else bin="$$(bash e2e/etcd/build.sh "$$v" | tail -n1)" || exit 1; fi; \
		for auth in "" password; do \
			echo "== $$($$bin --version | head -n1) ($$bin), authentication: $${auth:-off}"; \
			TOPOHA_ETCD_BIN="$$bin" TOPOHA_ETCD_AUTH="$$auth" $(GO) test -count=1 -timeout 20m $(ETCD_VERSION_PACKAGES) || exit 1; \
		done; \
		echo "== $$($$bin --version | head -n1): process tests of authentication"; \
		TOPOHA_ETCD_BIN="$$bin" $(GO) test -count=1 -timeout 20m -run '^TestAuth' ./cmd/topoha/ || exit 1; \
	done

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

# Shard discovery and a failover of 1,000 shards (3-member etcd clusters, promote commands of 0.5 s).
bench-failover:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench/failoverbench/

bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./replication/

clean:
	rm -rf bin
