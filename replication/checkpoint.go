package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Checkpoint is the mirror's progress, stored as JSON in the destination in the same transaction as the
// changes it describes, so that it can never claim more than the destination holds.
type Checkpoint struct {
	// Revision is the source revision up to which every change is applied. It is 0 while the first full
	// sync runs.
	Revision int64 `json:"revision"`
	// ClusterID is the source etcd's cluster ID (hex): revisions of another cluster mean nothing.
	ClusterID string `json:"cluster_id"`
	// Scope is the prefix mapping and exclusions the checkpoint was written under.
	Scope string `json:"scope"`
	// Sync is set while a full sync runs; the destination then mixes old and new keys.
	Sync      *SyncProgress `json:"sync,omitempty"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// SyncProgress is how far an unfinished full sync got: every source key below NextKey, read at Revision,
// is in the destination.
type SyncProgress struct {
	Revision int64  `json:"revision"`
	NextKey  []byte `json:"next_key"`
}

func clusterIDString(id uint64) string { return strconv.FormatUint(id, 16) }

// ReadCheckpoint reads the mirror checkpoint at key from the destination. It returns nil and no error when
// there is none.
func ReadCheckpoint(ctx context.Context, dest *clientv3.Client, key string, timeout time.Duration) (*Checkpoint, error) {
	cp, _, _, err := readCheckpoint(ctx, dest, key, timeout, 0)
	return cp, err
}

// readCheckpoint also returns the key's mod revision (0 if absent), which every later write compares, and
// the destination revision it was read at. rev pins the read to a destination revision when non-zero.
func readCheckpoint(ctx context.Context, dest *clientv3.Client, key string, timeout time.Duration, rev int64) (*Checkpoint, int64, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var opts []clientv3.OpOption
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := dest.Get(cctx, key, opts...)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read checkpoint %s from the destination: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, resp.Header.Revision, nil
	}
	kv := resp.Kvs[0]
	cp, err := decodeCheckpoint(key, kv.Value)
	if err != nil {
		// A checkpoint that cannot be read is treated as none: the full sync that follows is always safe.
		return nil, kv.ModRevision, resp.Header.Revision, err
	}
	return cp, kv.ModRevision, resp.Header.Revision, nil
}

// decodeCheckpoint reads the value stored at key as a checkpoint. Only what commit writes is one: the
// source cluster and scope, and either a revision every change up to which is applied or an unfinished
// full sync at a source revision. Anything else, such as JSON null or a revision of 0 without a sync, is
// errBadCheckpoint: resuming from it would stream from the source's current revision and skip what the
// destination lacks.
func decodeCheckpoint(key string, value []byte) (*Checkpoint, error) {
	var cp Checkpoint
	err := json.Unmarshal(value, &cp)
	switch {
	case err != nil:
	case cp.ClusterID == "" || cp.Scope == "":
		err = errors.New("no source cluster_id or scope")
	case cp.Sync == nil && cp.Revision <= 0:
		err = fmt.Errorf("revision %d without a full sync under way", cp.Revision)
	case cp.Sync != nil && (cp.Sync.Revision <= 0 || cp.Revision != 0):
		err = fmt.Errorf("a full sync at revision %d with applied revision %d", cp.Sync.Revision, cp.Revision)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s holds %q: %s", errBadCheckpoint, key, truncate(value, 80), truncate([]byte(err.Error()), 200))
	}
	return &cp, nil
}

var errBadCheckpoint = errors.New("unreadable checkpoint")

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
