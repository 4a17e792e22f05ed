// Package replication is the topo mirror: it keeps a key prefix of a destination etcd equal to a prefix of a
// source etcd, continuously, and proves it (Verify).
//
// Unlike `etcdctl make-mirror` it
//   - checkpoints the last applied source revision in the destination, in the same transaction as the
//     changes, and resumes from it; deletes made while it was stopped arrive as watch events;
//   - does a full sync that also deletes what the source no longer has when there is no usable checkpoint
//     (first start, source compacted past it, another source cluster, another scope);
//   - writes in batched transactions that end on source revision boundaries, so that while streaming the
//     destination only shows states the source had;
//   - never writes a leased source key (a Vitess lock or election entry) as a permanent key;
//   - carries a fence (clientv3.Cmp conditions) and a compare on its own checkpoint in every transaction,
//     so a deposed leader or a second mirror cannot write.
package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/metrics"
)

// ErrFenced is returned by Run when a write was refused because a fence condition no longer holds (the
// caller lost leadership, or the primary epoch changed). The mirror must not run again under that fence.
var ErrFenced = errors.New("mirror fenced: a fence condition failed, this writer is no longer allowed to write")

// Config configures a Mirror. Source, Dest, Prefix, DestPrefix and CheckpointKey are required; the rest
// have defaults.
type Config struct {
	Source, Dest *clientv3.Client

	// Prefix is the raw source key prefix (e.g. "/vt/"); its keys are written below DestPrefix.
	Prefix, DestPrefix string
	// Exclude lists source key prefixes below Prefix that are neither written nor deleted.
	Exclude []string
	// Rewrite, if set, changes some values on their way to the destination.
	Rewrite *Rewrite

	// CheckpointKey is the destination key of the checkpoint. It must be outside DestPrefix.
	CheckpointKey string
	// Fence is added to the conditions of every transaction; when one fails, Run returns ErrFenced.
	Fence []clientv3.Cmp

	RequestTimeout time.Duration // every RPC (request_timeout); required
	PageSize       int           // keys per read in a full sync; default 1000
	// SyncConcurrency is how many transactions a full sync runs at once; etcd commits concurrent
	// transactions together. Streaming stays strictly ordered. Default 8.
	SyncConcurrency int
	MaxTxnOps       int // the destination's --max-txn-ops; default 128
	MaxTxnBytes     int // bound on one transaction's keys and values; default 1 MiB (etcd allows 1.5 MiB)
	// ProgressInterval is how often an idle watch asks the source for a progress notification: it keeps the
	// applied revision current and shows that the source is alive. Default 1s.
	ProgressInterval time.Duration
	// BatchDelay is how long the first watch event of a batch may wait for more before the batch is
	// written. It bounds the added latency; under load it turns many small writes into few large ones.
	// Default 1ms.
	BatchDelay time.Duration
	// StallTimeout is how long the watch may stay silent before it is restarted. Default 10s.
	StallTimeout time.Duration
	// CheckpointInterval bounds how often an idle mirror records progress notifications in its checkpoint,
	// so that a restart need not replay revisions outside the prefix. Default 5s.
	CheckpointInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts after an error. Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration

	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ProgressInterval, time.Second)
	def(&c.StallTimeout, 10*time.Second)
	def(&c.BatchDelay, time.Millisecond)
	def(&c.CheckpointInterval, 5*time.Second)
	def(&c.MinBackoff, 100*time.Millisecond)
	def(&c.MaxBackoff, 10*time.Second)
	if c.PageSize == 0 {
		c.PageSize = 1000
	}
	if c.SyncConcurrency == 0 {
		c.SyncConcurrency = 8
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = 128
	}
	if c.MaxTxnBytes == 0 {
		c.MaxTxnBytes = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Rewrite changes the values of some source keys on their way to the destination, such as the Vitess
// CellInfo records that must name the destination DC's own etcd. Apply must be deterministic and return
// value itself for keys it does not change: the full sync and Verify compare the rewritten source value
// with the destination's. Name identifies the rewrite in the checkpoint's scope, so that a changed
// rewrite forces a full sync instead of leaving old values behind.
type Rewrite struct {
	Name  string
	Apply func(srcKey string, value []byte) []byte
}

func (c *Config) scope() scope {
	return scope{prefix: c.Prefix, destPrefix: c.DestPrefix, exclude: c.Exclude, rewrite: c.Rewrite}
}

func (c *Config) validate() error {
	var problems []error
	if c.Source == nil || c.Dest == nil {
		problems = append(problems, errors.New("Source and Dest clients are required"))
	}
	if c.Prefix == "" || c.DestPrefix == "" {
		problems = append(problems, errors.New("Prefix and DestPrefix are required (an empty prefix would mirror the whole keyspace)"))
	}
	if c.RequestTimeout <= 0 {
		problems = append(problems, errors.New("RequestTimeout must be positive (request_timeout)"))
	}
	if c.CheckpointKey == "" {
		problems = append(problems, errors.New("CheckpointKey is required"))
	} else if c.DestPrefix != "" && strings.HasPrefix(c.CheckpointKey, c.DestPrefix) {
		problems = append(problems, fmt.Errorf("CheckpointKey %q is inside DestPrefix %q; the mirror would delete it", c.CheckpointKey, c.DestPrefix))
	}
	for _, ex := range c.Exclude {
		if !strings.HasPrefix(ex, c.Prefix) {
			problems = append(problems, fmt.Errorf("Exclude %q is not below Prefix %q", ex, c.Prefix))
		}
	}
	if c.MaxTxnOps < 2 {
		problems = append(problems, errors.New("MaxTxnOps must be at least 2 (one change and the checkpoint)"))
	}
	if c.Rewrite != nil && (c.Rewrite.Name == "" || c.Rewrite.Apply == nil) {
		problems = append(problems, errors.New("Rewrite needs a Name and an Apply function"))
	}
	if c.PageSize < 1 || c.SyncConcurrency < 1 {
		problems = append(problems, errors.New("PageSize and SyncConcurrency must be positive"))
	}
	if len(problems) > 0 {
		return fmt.Errorf("replication config: %w", errors.Join(problems...))
	}
	return nil
}

// Mirror copies one prefix between two etcd clusters. Create it with New and start it with Run.
type Mirror struct {
	cfg   Config
	scope scope
	log   *slog.Logger

	// Owned by the Run goroutine.
	clusterID    uint64
	cpModRev     int64 // mod revision of the checkpoint key in the destination; every write compares it
	applied      int64 // source revision up to which the destination is complete (0 during a full sync)
	lastPersist  time.Time
	persistedRev int64

	mu     sync.Mutex
	status Status
	rate   rateWindow
}

// New validates cfg and returns a Mirror.
func New(cfg Config) (*Mirror, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Mirror{
		cfg:   cfg,
		scope: cfg.scope(),
		log:   cfg.Logger,
	}
	m.status.Phase = PhaseStarting
	m.status.StartedAt = time.Now()
	m.status.Resyncs = map[string]uint64{}
	return m, nil
}

// Run mirrors until ctx is done (it then returns ctx.Err()) or a write is fenced (ErrFenced). Every other
// error is recorded in Status, and Run retries with exponential back-off, resuming from the checkpoint.
func (m *Mirror) Run(ctx context.Context) error {
	backoff := m.cfg.MinBackoff
	for {
		appliedBefore := m.applied
		err := m.runOnce(ctx)
		if ctx.Err() != nil {
			m.setPhase(PhaseStopped)
			return ctx.Err()
		}
		if errors.Is(err, ErrFenced) {
			m.recordError(err)
			m.setPhase(PhaseFenced)
			m.log.Error("mirror stopped: fenced", "err", err)
			return err
		}
		if m.applied > appliedBefore {
			backoff = m.cfg.MinBackoff
		}
		// A destination that takes smaller requests than MaxTxnBytes refuses transactions of changes that
		// each fit: write smaller ones from now on instead of failing on the same one forever.
		var tl *tooLargeError
		if errors.As(err, &tl) && tl.changes > 1 && tl.bytes/2 < m.cfg.MaxTxnBytes {
			m.cfg.MaxTxnBytes = max(tl.bytes/2, 1)
			m.log.Warn("the destination refused a transaction as too large; writing smaller ones", "max_txn_bytes", m.cfg.MaxTxnBytes)
		}
		m.recordError(err)
		m.setPhase(PhaseRetrying)
		m.log.Warn("mirror error; retrying from the checkpoint", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			m.setPhase(PhaseStopped)
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, m.cfg.MaxBackoff)
	}
}

// runOnce reads the checkpoint, decides between resuming and a full sync, and streams until an error.
func (m *Mirror) runOnce(ctx context.Context) error {
	cp, modRev, _, err := readCheckpoint(ctx, m.cfg.Dest, m.cfg.CheckpointKey, m.cfg.RequestTimeout, 0)
	if err != nil && !errors.Is(err, errBadCheckpoint) {
		return err
	}
	if err != nil {
		m.log.Warn("ignoring the checkpoint; a full sync follows", "err", err)
	}
	m.cpModRev = modRev

	cctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	head, err := m.cfg.Source.Get(cctx, m.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return fmt.Errorf("read source header: %w", err)
	}
	m.clusterID = head.Header.ClusterId
	m.noteSourceRevision(head.Header.Revision)

	switch reason := m.resyncReason(cp, head.Header.Revision); {
	case reason != "":
		m.log.Info("full sync", "reason", reason, "source_revision", head.Header.Revision)
		if err := m.fullSync(ctx, reason, nil); err != nil {
			return err
		}
	case cp.Sync != nil:
		m.log.Info("resuming an interrupted full sync", "sync_revision", cp.Sync.Revision, "next_key", string(cp.Sync.NextKey))
		if err := m.fullSync(ctx, "", cp.Sync); err != nil {
			return err
		}
	default:
		m.setApplied(cp.Revision)
		m.persistedRev = cp.Revision
		m.log.Info("resuming from the checkpoint", "revision", cp.Revision)
	}
	for {
		err := m.stream(ctx)
		if !isCompacted(err) {
			return err
		}
		m.log.Warn("source compacted past the checkpoint; full sync", "checkpoint", m.applied, "err", err)
		if err := m.fullSync(ctx, ResyncCompacted, nil); err != nil {
			return err
		}
	}
}

// Reasons for a full sync, as counted in Status.Resyncs.
const (
	ResyncNoCheckpoint  = "no_checkpoint"
	ResyncSourceChanged = "source_cluster_changed"
	ResyncScopeChanged  = "scope_changed"
	ResyncSourceBehind  = "source_behind_checkpoint"
	ResyncCompacted     = "compacted"
)

func (m *Mirror) resyncReason(cp *Checkpoint, sourceRev int64) string {
	switch {
	case cp == nil:
		return ResyncNoCheckpoint
	case cp.ClusterID != clusterIDString(m.clusterID):
		return ResyncSourceChanged
	case cp.Scope != m.scope.fingerprint():
		return ResyncScopeChanged
	case cp.Revision > sourceRev || (cp.Sync != nil && cp.Sync.Revision > sourceRev):
		// A source restored from a backup reuses revisions: what they mean now is unknown.
		return ResyncSourceBehind
	}
	return ""
}
