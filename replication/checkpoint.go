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
	var cp Checkpoint
	if err := json.Unmarshal(kv.Value, &cp); err != nil {
		// A checkpoint that cannot be read is treated as none: the full sync that follows is always safe.
		return nil, kv.ModRevision, resp.Header.Revision, fmt.Errorf("%w: %s holds %q: %v", errBadCheckpoint, key, truncate(kv.Value, 80), err)
	}
	return &cp, kv.ModRevision, resp.Header.Revision, nil
}

var errBadCheckpoint = errors.New("unreadable checkpoint")

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
