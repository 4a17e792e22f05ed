package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
)

// stream watches the source from the applied revision on and applies its events in batched transactions
// until an error.
func (m *Mirror) stream(ctx context.Context) error {
	m.setPhase(PhaseStreaming)
	var opening sync.WaitGroup
	defer opening.Wait() // after cancel, which ends a Watch call still waiting
	// WithRequireLeader ends the watch when the source member loses its leader, instead of leaving it
	// silently connected to a member that will never see another write.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// The watch starts at the applied revision itself, not the next one: etcd sends no progress
	// notification while a watcher's start revision is ahead of the store, so an idle source would look
	// stalled. Events of the applied revision are already in the destination and are skipped.
	b := &batch{m: m, index: map[string]int{}, skipThrough: m.applied, trustProgress: m.progressTrusted(ctx)}
	// Watch returns only once the source has created the watch, and waits for as long as the source is
	// unreachable. It is opened beside the stall check, so a source lost at this very moment is noticed
	// like one lost later, instead of leaving the mirror "streaming" until the source returns.
	from := m.applied
	opened := make(chan clientv3.WatchChan, 1)
	opening.Go(func() {
		opened <- m.cfg.Source.Watch(wctx, m.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(from),
			clientv3.WithProgressNotify())
	})
	var wch clientv3.WatchChan // nil, so never ready, until the watch is open
	tick := time.NewTicker(m.cfg.ProgressInterval)
	defer tick.Stop()

	lastHeard := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wch = <-opened:
			opened = nil
			lastHeard = time.Now()
		case <-tick.C:
			if silent := time.Since(lastHeard); silent > m.cfg.StallTimeout {
				if wch == nil {
					return fmt.Errorf("source watch not open after %s (the source does not answer); opening it again", silent.Round(time.Millisecond))
				}
				return fmt.Errorf("source watch silent for %s (no events, no progress notification); restarting it", silent.Round(time.Millisecond))
			}
			if wch == nil {
				continue
			}
			// The request must carry wctx's metadata to reach the stream the watch is on.
			pctx, pcancel := context.WithTimeout(wctx, m.cfg.RequestTimeout)
			if err := m.cfg.Source.RequestProgress(pctx); err != nil && ctx.Err() == nil {
				m.log.Debug("request progress from source", "err", err)
			}
			pcancel()
		case resp, ok := <-wch:
			// Gather what arrives within BatchDelay before writing: under load, batches grow instead of lag.
			linger := time.NewTimer(m.cfg.BatchDelay)
			for ok {
				if err := b.take(ctx, resp); err != nil {
					linger.Stop()
					return err
				}
				select {
				case resp, ok = <-wch:
					continue
				case <-linger.C:
				}
				break
			}
			linger.Stop()
			if !ok {
				return errors.New("source watch closed")
			}
			if err := b.flush(ctx); err != nil {
				return err
			}
			if err := m.persistProgress(ctx); err != nil {
				return err
			}
			lastHeard = time.Now()
		}
	}
}

// persistProgress records an applied revision that only progress notifications or excluded events moved,
// at most every CheckpointInterval.
func (m *Mirror) persistProgress(ctx context.Context) error {
	if m.applied <= m.persistedRev || time.Since(m.lastPersist) < m.cfg.CheckpointInterval {
		return nil
	}
	return m.commit(ctx, nil, Checkpoint{Revision: m.applied})
}

// batch coalesces watch events into destination transactions. A transaction holds whole source revisions,
// so the destination passes only through states the source had; only a single source revision larger than
// a destination transaction is split.
type batch struct {
	m     *Mirror
	ops   []clientv3.Op
	index map[string]int // destination key -> position in ops
	size  int
	from  int64 // the first source revision with changes in ops
	rev   int64 // every source revision up to rev is in ops
	// skipThrough is the revision the watch started at, already applied.
	skipThrough int64
	// trustProgress says progress notifications may move the applied revision (progressTrusted).
	trustProgress bool
}

func (b *batch) take(ctx context.Context, resp clientv3.WatchResponse) error {
	m := b.m
	if err := resp.Err(); err != nil {
		if errors.Is(err, rpctypes.ErrPermissionDenied) {
			return fmt.Errorf("watch source from revision %d: etcd refused user %s a watch of %s: %w; the role needs read on %s (%s)",
				b.skipThrough, m.cfg.Source.Username, m.cfg.Prefix, err, m.cfg.Prefix, config.PermissionsDoc)
		}
		return fmt.Errorf("watch source from revision %d: %w", b.skipThrough, err)
	}
	if resp.IsProgressNotify() && !b.trustProgress {
		// Not even the source revision: it may be ahead of events still to come.
		return nil
	}
	m.noteSourceRevision(resp.Header.Revision)
	if resp.IsProgressNotify() {
		// Every event up to the header's revision has been delivered.
		if err := b.flush(ctx); err != nil {
			return err
		}
		if resp.Header.Revision > m.applied {
			m.setApplied(resp.Header.Revision)
		}
		return nil
	}
	evs := resp.Events
	for len(evs) > 0 && evs[0].Kv.ModRevision <= b.skipThrough {
		evs = evs[1:]
	}
	for len(evs) > 0 {
		n := 1
		for n < len(evs) && evs[n].Kv.ModRevision == evs[0].Kv.ModRevision {
			n++
		}
		if err := b.addRevision(ctx, evs[0].Kv.ModRevision, evs[:n]); err != nil {
			return err
		}
		evs = evs[n:]
	}
	return nil
}

func (b *batch) addRevision(ctx context.Context, rev int64, evs []*clientv3.Event) error {
	m := b.m
	ops := make([]clientv3.Op, 0, len(evs))
	keys := make([]string, 0, len(evs))
	sizes := make([]int, 0, len(evs))
	size := 0
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		if m.scope.excluded(key) {
			continue
		}
		dk := m.scope.destKey(key)
		n := len(dk)
		if ev.Type == mvccpb.PUT && ev.Kv.Lease == 0 {
			v := m.scope.value(key, ev.Kv.Value)
			ops = append(ops, clientv3.OpPut(dk, string(v)))
			n += len(v)
		} else {
			// A delete, or a key now bound to a lease: a permanent copy of it must not stay.
			ops = append(ops, clientv3.OpDelete(dk))
		}
		keys = append(keys, dk)
		sizes = append(sizes, n)
		size += n
	}
	limitOps := m.cfg.MaxTxnOps - 1 // one op is the checkpoint
	if len(b.ops)+len(ops) > limitOps || b.size+size > m.cfg.MaxTxnBytes {
		if err := b.flush(ctx); err != nil {
			return err
		}
	}
	for {
		// The longest run of changes one transaction holds; a single change too large for any goes alone.
		n, part := 0, 0
		for n < len(ops) && n < limitOps && (n == 0 || part+sizes[n] <= m.cfg.MaxTxnBytes) {
			part += sizes[n]
			n++
		}
		if n == len(ops) {
			break
		}
		m.log.Warn("a source revision is larger than one destination transaction; applying it in parts",
			"revision", rev, "changes", len(ops), "bytes", size, "max_txn_ops", m.cfg.MaxTxnOps, "max_txn_bytes", m.cfg.MaxTxnBytes)
		if err := m.commit(ctx, ops[:n], Checkpoint{Revision: rev - 1}); err != nil {
			return fmt.Errorf("apply source revision %d: %w", rev, err)
		}
		ops, keys, sizes, size = ops[n:], keys[n:], sizes[n:], size-part
	}
	if len(b.ops) == 0 {
		b.from = rev
	}
	for i, op := range ops {
		if j, seen := b.index[keys[i]]; seen {
			b.ops[j] = op
			continue
		}
		b.index[keys[i]] = len(b.ops)
		b.ops = append(b.ops, op)
	}
	b.size += size
	b.rev = rev
	return nil
}

// flush commits the batch with its revision as the checkpoint. A batch of excluded events only moves the
// applied revision in memory; persistProgress records it later.
func (b *batch) flush(ctx context.Context) error {
	m := b.m
	if len(b.ops) == 0 && b.rev <= m.applied {
		return nil
	}
	// Events at or below a revision a progress notification already reported are still applied: etcd
	// before 3.4.24/3.5.8 could send a progress notification ahead of pending events (etcd#15220).
	rev := max(b.rev, m.applied)
	if len(b.ops) > 0 {
		if err := m.commit(ctx, b.ops, Checkpoint{Revision: rev}); err != nil {
			if b.from == rev {
				return fmt.Errorf("apply source revision %d: %w", rev, err)
			}
			return fmt.Errorf("apply source revisions %d to %d: %w", b.from, rev, err)
		}
	}
	m.setApplied(rev)
	b.ops = b.ops[:0]
	clear(b.index)
	b.size = 0
	return nil
}
