package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// errConflict means another writer changed the checkpoint: this mirror's view is stale, so it re-reads the
// checkpoint and resumes from there.
var errConflict = errors.New("another writer changed the mirror checkpoint")

// commit writes ops and the checkpoint in one transaction that holds only if every fence condition holds
// and the checkpoint is still the one this mirror last wrote or read.
func (m *Mirror) commit(ctx context.Context, ops []clientv3.Op, cp Checkpoint) error {
	cp.ClusterID = clusterIDString(m.clusterID)
	cp.Scope = m.scope.fingerprint()
	cp.UpdatedAt = time.Now().UTC()
	val, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	rev, err := m.txn(ctx, m.cpModRev, ops, clientv3.OpPut(m.cfg.CheckpointKey, string(val)))
	if err != nil {
		return err
	}
	m.cpModRev = rev
	m.lastPersist = time.Now()
	if cp.Sync == nil {
		m.persistedRev = cp.Revision
	}
	return nil
}

// txn commits ops (and checkpoint, if given) if every fence condition holds and the checkpoint's mod
// revision is still cpModRev, and returns the destination revision of the commit. It is safe for
// concurrent use.
func (m *Mirror) txn(ctx context.Context, cpModRev int64, ops []clientv3.Op, checkpoint ...clientv3.Op) (int64, error) {
	key := m.cfg.CheckpointKey
	cmps := append(slices.Clone(m.cfg.Fence), clientv3.Compare(clientv3.ModRevision(key), "=", cpModRev))
	cctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	resp, err := m.cfg.Dest.Txn(cctx).If(cmps...).Then(append(slices.Clip(ops), checkpoint...)...).Else(clientv3.OpGet(key)).Commit()
	cancel()
	if err != nil {
		return 0, fmt.Errorf("write %d changes to the destination: %w", len(ops), err)
	}
	if !resp.Succeeded {
		var current int64
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			current = kvs[0].ModRevision
		}
		if current != cpModRev {
			m.update(func(s *Status) { s.Conflicts++ })
			m.cfg.Metrics.MirrorConflict()
			return 0, fmt.Errorf("%w (at destination revision %d, expected %d); is a second mirror running?", errConflict, current, cpModRev)
		}
		m.cfg.Metrics.FenceRejected("mirror")
		return 0, ErrFenced
	}
	m.noteCommit(len(ops))
	m.cfg.Metrics.MirrorCommitted(len(ops))
	return resp.Header.Revision, nil
}

// parallelWriter runs up to n fenced transactions at once, for the full sync, where the order of writes
// to distinct keys does not matter. None of them moves the checkpoint, so each still fails if another
// writer moved it since this mirror read it.
type parallelWriter struct {
	m        *Mirror
	ctx      context.Context
	cpModRev int64
	sem      chan struct{}
	wg       sync.WaitGroup

	mu  sync.Mutex
	err error
}

func newParallelWriter(ctx context.Context, m *Mirror, n int) *parallelWriter {
	return &parallelWriter{m: m, ctx: ctx, cpModRev: m.cpModRev, sem: make(chan struct{}, n)}
}

// submit starts a transaction of ops, which the writer then owns. It returns the first error of an earlier
// transaction, if any.
func (w *parallelWriter) submit(ops []clientv3.Op) error {
	select {
	case w.sem <- struct{}{}:
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
	if err := w.firstErr(); err != nil {
		<-w.sem
		return err
	}
	w.wg.Add(1)
	go func() {
		defer func() { <-w.sem; w.wg.Done() }()
		if _, err := w.m.txn(w.ctx, w.cpModRev, ops); err != nil {
			w.mu.Lock()
			if w.err == nil {
				w.err = err
			}
			w.mu.Unlock()
		}
	}()
	return nil
}

// wait waits for every submitted transaction and returns the first error.
func (w *parallelWriter) wait() error {
	w.wg.Wait()
	return w.firstErr()
}

func (w *parallelWriter) firstErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func isCompacted(err error) bool { return errors.Is(err, rpctypes.ErrCompacted) }
