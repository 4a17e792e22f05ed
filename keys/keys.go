// Package keys names every key topoha keeps in etcd. All of them live below /topoha/<cluster>/, which is
// never inside the mirrored prefix. docs/design.md ("topoha's keys in etcd") says what each holds and
// in which etcd; a test keeps that table and this file in step.
package keys

// Dir is the directory of every topoha cluster's keys: no mirrored prefix may overlap it.
const Dir = "/topoha/"

// Layout names the keys of one topoha cluster.
type Layout struct{ root string }

// For returns the layout of the cluster named cluster (the config's `cluster`).
func For(cluster string) Layout { return Layout{root: Dir + cluster + "/"} }

// Primary is the primary record: which DC is primary, at which epoch.
func (l Layout) Primary() string { return l.root + "primary" }

// Paused is the pause flag.
func (l Layout) Paused() string { return l.root + "paused" }

// Request is where `topoha failover`, SIGUSR1 and --force-primary leave a request for the leader.
func (l Layout) Request() string { return l.root + "request" }

// RequestResult is the leader's answer to the last request it took.
func (l Layout) RequestResult() string { return l.root + "request_result" }

// LastFailover is the result of the last failover or switchover.
func (l Layout) LastFailover() string { return l.root + "last_failover" }

// Progress is the progress record of the last failover or switchover: its decision and each shard's
// target, written in the same transaction as the epoch bump, in the new primary DC's etcd.
func (l Layout) Progress() string { return l.root + "failover/progress" }

// ProgressShards is the prefix of the per-shard progress of the last failover, one key per shard that
// has been worked on (<keyspace>/<shard>), next to Progress.
func (l Layout) ProgressShards() string { return l.root + "failover/shards/" }

// Converger is the prefix of the convergence lock, an election in the new primary DC's etcd: its holder
// is the one controller that drives an unfinished failover's shards to their new primaries.
func (l Layout) Converger() string { return l.root + "failover/converger/" }

// Fence is a DC's self-fence record, in that DC's own etcd.
func (l Layout) Fence() string { return l.root + "fence" }

// Election is the prefix of the leader election, in the DR DC's etcd.
func (l Layout) Election() string { return l.root + "election/" }

// History is the prefix of the event history.
func (l Layout) History() string { return l.root + "history/" }

// MirrorCheckpoint is the mirror's checkpoint, in the destination etcd.
func (l Layout) MirrorCheckpoint() string { return l.root + "mirror/checkpoint" }

// Probe is never written: health probes read it (a linearizable read of a key that does not exist proves
// a quorum without moving data), as do the reads that only want a response header (a revision, a
// cluster ID).
func (l Layout) Probe() string { return l.root + "health" }
