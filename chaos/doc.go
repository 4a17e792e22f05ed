// Package chaos is topoha's fault-injection suite: real etcd clusters (3 embedded members per DC, each site
// reaching each member through an in-process toxiproxy link), real `topoha run` controllers and witnesses
// as processes, the recording fake promote program, and a writer that keeps changing the topo while faults
// are injected: partitions, DC losses, kill -9 and SIGSTOP of the leader, etcd restarts, compaction,
// blackholed VIPs, hanging promote commands, reloads during a failover, pause and cooldown; one member
// stopped, restarted in turn, blackholed or cut off from its peers; a lost quorum; NOSPACE. After every scenario one checker
// verifies the invariants of docs/design.md, and the suite prints a table of what happened.
//
// Its files carry the build tag chaos, so `go test ./...` does not run it:
//
//	go test -tags chaos -count=1 -v -timeout 30m ./chaos/          # full
//	go test -tags chaos -count=1 -v -timeout 30m -short ./chaos/   # short, for CI: every scenario, fewer iterations
//
// CHAOS_REPORT=FILE also writes the table (Markdown) to FILE.
package chaos
