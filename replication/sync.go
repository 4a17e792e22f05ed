package replication

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxCompactedRestarts bounds how often one full sync starts over because the source compacted the
// revision it was reading; past it Run backs off and tries again.
const maxCompactedRestarts = 3

// syncCheckpointEvery is how many full-sync transactions run between two checkpoints.
const syncCheckpointEvery = 32

// fullSync makes the destination equal to the source at one revision R: it copies what is missing or
// different and deletes what the source does not have, then records R as applied. With resume it continues
// an interrupted sync at its revision and key; if that revision was compacted it starts over.
func (m *Mirror) fullSync(ctx context.Context, reason string, resume *SyncProgress) error {
	for attempt := 0; ; attempt++ {
		if reason != "" {
			m.update(func(s *Status) { s.Resyncs[reason]++ })
			m.cfg.Metrics.MirrorResynced(reason)
		}
		err := m.syncAt(ctx, resume)
		if !isCompacted(err) || attempt == maxCompactedRestarts {
			return err
		}
		m.log.Warn("source compacted during the full sync; starting it over at a newer revision", "err", err)
		reason, resume = ResyncCompacted, nil
	}
}

func (m *Mirror) syncAt(ctx context.Context, resume *SyncProgress) error {
	m.setPhase(PhaseSyncing)
	m.setApplied(0)
	start := m.cfg.Prefix
	src := &rangeReader{cli: m.cfg.Source, end: clientv3.GetPrefixRangeEnd(m.cfg.Prefix), pin: true,
		pageSize: int64(m.cfg.PageSize), timeout: m.cfg.RequestTimeout}
	if resume != nil {
		start, src.rev = string(resume.NextKey), resume.Revision
	}
	src.next = start
	// Reading the first page pins the revision R that every later page and every checkpoint names.
	if _, err := src.peek(ctx); err != nil {
		return fmt.Errorf("full sync: read source: %w", err)
	}
	rev := src.rev
	dst := &rangeReader{cli: m.cfg.Dest, next: m.scope.destKey(start), end: clientv3.GetPrefixRangeEnd(m.cfg.DestPrefix),
		pageSize: int64(m.cfg.PageSize), timeout: m.cfg.RequestTimeout}

	// Claim the checkpoint before the first change: the parallel transactions compare it without moving
	// it, so another mirror's sync that started before this one is fenced from here on.
	if err := m.commit(ctx, nil, Checkpoint{Sync: &SyncProgress{Revision: rev, NextKey: []byte(start)}}); err != nil {
		return fmt.Errorf("full sync at source revision %d: %w", rev, err)
	}
	// Changes go out in transactions running in parallel; every syncCheckpointEvery of them, a barrier and
	// a checkpoint record how far the sync got.
	w := newParallelWriter(ctx, m, m.cfg.SyncConcurrency)
	var ops []clientv3.Op
	size, chunks := 0, 0
	compared, err := m.scope.diff(ctx, src, dst, func(c change) error {
		op, n := c.op(m.scope)
		if len(ops) > 0 && (len(ops)+1 >= m.cfg.MaxTxnOps || size+n > m.cfg.MaxTxnBytes) {
			if err := w.submit(ops); err != nil {
				return err
			}
			ops, size = nil, 0
			if chunks++; chunks%syncCheckpointEvery == 0 {
				if err := w.wait(); err != nil {
					return err
				}
				// c.srcKey is not written yet: a resumed sync starts there.
				if err := m.commit(ctx, nil, Checkpoint{Sync: &SyncProgress{Revision: rev, NextKey: []byte(c.srcKey)}}); err != nil {
					return err
				}
				w.cpModRev = m.cpModRev
			}
		}
		ops = append(ops, op)
		size += n
		return nil
	})
	if werr := w.wait(); err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("full sync at source revision %d: %w", rev, err)
	}
	if err := m.commit(ctx, ops, Checkpoint{Revision: rev}); err != nil {
		return fmt.Errorf("full sync at source revision %d: %w", rev, err)
	}
	m.setApplied(rev)
	m.log.Info("full sync done", "source_revision", rev, "keys_compared", compared)
	return nil
}

// op is the destination write that resolves c, and its size in bytes.
func (c change) op(s scope) (clientv3.Op, int) {
	if c.src == nil {
		return clientv3.OpDelete(string(c.dst.Key)), len(c.dst.Key)
	}
	key := s.destKey(c.srcKey)
	v := s.value(c.srcKey, c.src.Value)
	return clientv3.OpPut(key, string(v)), len(key) + len(v)
}
