package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
	key := m.cfg.CheckpointKey
	cmps := append(slices.Clone(m.cfg.Fence), clientv3.Compare(clientv3.ModRevision(key), "=", m.cpModRev))
	then := append(slices.Clip(ops), clientv3.OpPut(key, string(val)))

	cctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	resp, err := m.cfg.Dest.Txn(cctx).If(cmps...).Then(then...).Else(clientv3.OpGet(key)).Commit()
	cancel()
	if err != nil {
		return fmt.Errorf("write %d changes to the destination: %w", len(ops), err)
	}
	if !resp.Succeeded {
		var current int64
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			current = kvs[0].ModRevision
		}
		if current != m.cpModRev {
			m.update(func(s *Status) { s.Conflicts++ })
			return fmt.Errorf("%w (at destination revision %d, expected %d); is a second mirror running?", errConflict, current, m.cpModRev)
		}
		return ErrFenced
	}
	m.cpModRev = resp.Header.Revision
	m.lastPersist = time.Now()
	if cp.Sync == nil {
		m.persistedRev = cp.Revision
	}
	m.noteCommit(len(ops))
	return nil
}

func isCompacted(err error) bool { return errors.Is(err, rpctypes.ErrCompacted) }
