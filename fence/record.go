// Package fence is self-fencing (failover.self_fence). A controller in the primary DC that can reach
// neither the DR DC's etcd nor a majority of the witnesses for failover.fence_after makes its DC's
// primaries read-only with fence_command, one run per shard, so that an isolated primary stops taking
// writes before the other side may promote it away (failover.after, counted from the same cut, is longer).
//
// The fence is a record in the fenced DC's own etcd, shared by that DC's controllers: the first to claim
// it runs the commands, any of them retries a tablet whose command failed. It is lifted — unfence_command
// for the same tablets, then the record deleted — when the link returns and the primary record, read from
// both etcds, still names this DC at the fenced epoch. If the epoch moved meanwhile the DC's tablets are
// the old side: the fence stays until an operator clears it (`topoha unfence`).
package fence

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/internal/etcdrec"
	"github.com/topoha/topoha/primary"
)

// State is a fence record's state.
type State string

const (
	// StateFenced: the DC's primaries were (or are being) made read-only.
	StateFenced State = "fenced"
	// StateLifted: an operator lifted the fence while the DC may still be cut off. The controllers do not
	// fence again until they have read the other DC's primary record, then delete the record.
	StateLifted State = "lifted"
)

// Record is a DC's fence, kept in that DC's etcd at Key.
type Record struct {
	DC    string `json:"dc"`
	State State  `json:"state"`
	// Epoch is the primary record's epoch when the fence went up; it is lifted automatically only while
	// this DC is still primary at that epoch.
	Epoch  int64     `json:"epoch"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
	// Tablets are the fenced tablets, one per configured shard.
	Tablets  []Tablet  `json:"tablets"`
	LiftedBy string    `json:"lifted_by,omitempty"`
	LiftedAt time.Time `json:"lifted_at,omitzero"`
}

// Tablet is one shard's tablet and the outcome of the last command run on it.
type Tablet struct {
	Keyspace string `json:"keyspace"`
	Shard    string `json:"shard"`
	Tablet   string `json:"tablet"`
	// Fenced is true once fence_command exited 0 for it.
	Fenced bool   `json:"fenced"`
	Error  string `json:"error,omitempty"`
	Output string `json:"output,omitempty"`
}

// FencedCount is how many of the record's tablets are fenced.
func (r *Record) FencedCount() int {
	n := 0
	for _, t := range r.Tablets {
		if t.Fenced {
			n++
		}
	}
	return n
}

// StillPrimary says whether p, the primary record that holds, still names the fenced DC at the fenced
// epoch: only then may the fence be lifted with its tablets made writable.
func (r *Record) StillPrimary(p primary.Record) bool { return p.DC == r.DC && p.Epoch == r.Epoch }

// Observed is what one etcd holds at the fence key.
type Observed = etcdrec.Observed[Record]

// Read reads the fence record at key from one etcd.
func Read(ctx context.Context, cli *clientv3.Client, key string) Observed {
	return etcdrec.Read(ctx, cli, "fence record", key, decode)
}

func decode(key string, b []byte) (*Record, error) {
	var r Record
	err := json.Unmarshal(b, &r)
	switch {
	case err != nil:
		err = fmt.Errorf("not a fence record: %w", err)
	case r.DC == "" || (r.State != StateFenced && r.State != StateLifted) || r.Epoch < 0:
		err = fmt.Errorf("not a fence record: dc %q, state %q, epoch %d", r.DC, r.State, r.Epoch)
	}
	if err != nil {
		return nil, fmt.Errorf("fence record %s: %w; fix or delete it by hand", key, err)
	}
	return &r, nil
}

// write puts r at key if the key's mod revision is still rev (0: if it does not exist). It returns the
// new mod revision, or 0 when the key had changed.
func write(ctx context.Context, cli *clientv3.Client, key string, r *Record, rev int64) (int64, error) {
	val, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, string(val))).Commit()
	if err != nil {
		return 0, fmt.Errorf("write fence record %s: %w", key, err)
	}
	if !resp.Succeeded {
		return 0, nil
	}
	return resp.Header.Revision, nil
}

// Delete deletes the fence record at key if its mod revision is still rev; false when it had changed.
func Delete(ctx context.Context, cli *clientv3.Client, key string, rev int64) (bool, error) {
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return false, fmt.Errorf("delete fence record %s: %w", key, err)
	}
	return resp.Succeeded, nil
}

// MarkLifted records that an operator lifted the fence, if the record at key is still at rev.
func MarkLifted(ctx context.Context, cli *clientv3.Client, key string, o Observed, by string, at time.Time) (bool, error) {
	r := *o.Record
	r.State, r.LiftedBy, r.LiftedAt = StateLifted, by, at.UTC()
	rev, err := write(ctx, cli, key, &r, o.ModRevision)
	return rev != 0, err
}
