package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
		if isTooLarge(err) {
			return 0, m.tooLarge(ops, err)
		}
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

// isTooLarge says whether the destination refused a request for its size: etcd itself above its
// --max-request-bytes, gRPC above that plus 512 KiB, or this client above its send limit (2 MiB by
// default). A refused request never commits, so nothing it holds is counted as applied.
func isTooLarge(err error) bool {
	return errors.Is(err, rpctypes.ErrRequestTooLarge) ||
		(status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "larger than max"))
}

// tooLargeError is a destination transaction refused for its size. With one change, that change does not
// fit in any transaction the destination accepts: it and everything after it wait until the limit is
// raised or the source key is changed. With more, Run retries in smaller transactions.
type tooLargeError struct {
	changes, bytes int    // the refused transaction's changes and their keys' and values' bytes
	largest        string // the source key of its largest change, shortened for logs
	largestBytes   int
	err            error
}

func (e *tooLargeError) Error() string {
	switch e.changes {
	case 0:
		// Only a full sync's checkpoint, which holds the next source key, gets this large.
		return fmt.Sprintf("the destination refuses the mirror's checkpoint as too large (%v)", e.err)
	case 1:
		return fmt.Sprintf("the destination refuses the change of source key %s (%d bytes of key and value) as too large (%v): "+
			"the destination's --max-request-bytes must hold it and the mirror's checkpoint, a few hundred bytes more; "+
			"nothing after it is applied until it does, or until the key is made smaller and the source compacted past this revision",
			e.largest, e.largestBytes, e.err)
	}
	return fmt.Sprintf("the destination refuses %d changes of %d bytes in one transaction as too large (%v); the largest is source key %s (%d bytes); retrying in smaller transactions",
		e.changes, e.bytes, e.err, e.largest, e.largestBytes)
}

func (e *tooLargeError) Unwrap() error { return e.err }

func (m *Mirror) tooLarge(ops []clientv3.Op, err error) error {
	e := &tooLargeError{changes: len(ops), err: err}
	for _, op := range ops {
		n := len(op.KeyBytes()) + len(op.ValueBytes())
		e.bytes += n
		if n >= e.largestBytes {
			e.largest, e.largestBytes = shortKey(m.scope.sourceKey(string(op.KeyBytes()))), n
		}
	}
	return e
}

// shortKey quotes a key for logs and errors, cutting a huge one (etcd takes keys of up to about its
// --max-request-bytes) to its start and length.
func shortKey(k string) string {
	if len(k) > 200 {
		return fmt.Sprintf("%q... (%d bytes)", k[:200], len(k))
	}
	return strconv.Quote(k)
}
