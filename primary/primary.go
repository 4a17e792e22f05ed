// Package primary keeps the primary record: which DC is primary and at which epoch. The record is kept in
// both DCs' etcds at /topoha/<cluster>/primary; the readable record with the highest epoch wins, and
// before any record exists the configured initial primary holds at epoch 0.
//
// Every change of the record is a compare-and-swap on what the writer read, so two writers cannot both
// move it, and a writer whose view is stale fails instead of overwriting a newer epoch.
package primary

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/internal/etcdrec"
)

// Record says which DC is primary.
type Record struct {
	DC        string    `json:"dc"`
	Epoch     int64     `json:"epoch"`
	ChangedAt time.Time `json:"changed_at"`
	Reason    string    `json:"reason"`
}

// Observed is what one etcd holds at the record's key.
type Observed = etcdrec.Observed[Record]

// decode accepts only a JSON record with a dc and an epoch of at least 0, so that garbage never reads as a
// record.
var decode = etcdrec.JSON("primary record", func(r *Record) bool { return r.DC != "" && r.Epoch >= 0 })

// Read reads the record at key from one etcd.
func Read(ctx context.Context, cli *clientv3.Client, key string) Observed {
	return etcdrec.Read(ctx, cli, "primary record", key, decode)
}

// ReadAll reads the record from every etcd of clients at once, each read within timeout, keyed like
// clients: a lost DC costs one timeout, not one per DC.
func ReadAll(ctx context.Context, clients map[string]*clientv3.Client, key string, timeout time.Duration) map[string]Observed {
	return etcdrec.ReadAll(ctx, clients, timeout, "primary record", key, decode)
}

// HeldByAny is the record that holds by what the etcds that answered say: the readable one with the
// highest epoch, or the initial primary at epoch 0 when none holds one. An etcd that does not answer, or
// holds garbage, cannot take the record back to an older epoch, so this is the rule for following the
// primary (the control loop, `topoha status`). With two records of the same epoch, the first DC of dcs
// holds, so that every caller agrees.
func HeldByAny(initial string, dcs []string, observed map[string]Observed) Record {
	best := Record{DC: initial, Epoch: 0, Reason: "initial_primary"}
	for _, dc := range dcs {
		if o := observed[dc]; o.Record != nil && o.Record.Epoch > best.Epoch {
			best = *o.Record
		}
	}
	return best
}

// HeldByEvery is the record that holds when every DC of dcs answered with a record or with none, and an
// error naming the first DC that did not: the rule for acting on the direction itself (starting a
// mirror, lifting a fence), where a DC that cannot be read may hold a newer epoch.
func HeldByEvery(initial string, dcs []string, observed map[string]Observed) (Record, error) {
	for _, dc := range dcs {
		o, read := observed[dc]
		switch {
		case !read:
			return Record{}, fmt.Errorf("%s's primary record was not read", dc)
		case o.Err != nil:
			return Record{}, fmt.Errorf("%s's primary record: %w", dc, o.Err)
		}
	}
	return HeldByAny(initial, dcs, observed), nil
}

// Holds says whether the record in one etcd is rec, for a write whose outcome is unknown (a timeout
// that may have committed): it is re-read with its own timeout.
func Holds(ctx context.Context, cli *clientv3.Client, key string, rec Record, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	got := Read(ctx, cli, key)
	return got.Record != nil && got.Record.DC == rec.DC && got.Record.Epoch == rec.Epoch && got.Record.ChangedAt.Equal(rec.ChangedAt)
}

// Unchanged is the condition that the record in one etcd is still what o observed. A writer that adds it
// to its transaction fails once anyone moved the record there.
func Unchanged(key string, o Observed) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(key), "=", o.ModRevision)
}

// Write puts rec at key in one etcd if the record there is still what o observed and every fence holds.
// It reports false, without error, when a condition failed.
func Write(ctx context.Context, cli *clientv3.Client, key string, rec Record, o Observed, fence ...clientv3.Cmp) (bool, error) {
	return WriteWith(ctx, cli, key, rec, o, fence, nil)
}

// WriteWith is Write with more operations in the same transaction.
func WriteWith(ctx context.Context, cli *clientv3.Client, key string, rec Record, o Observed, fence []clientv3.Cmp, also []clientv3.Op) (bool, error) {
	val, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	cmps := append([]clientv3.Cmp{Unchanged(key, o)}, fence...)
	ops := append([]clientv3.Op{clientv3.OpPut(key, string(val))}, also...)
	resp, err := cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("write primary record %s: %w", key, err)
	}
	return resp.Succeeded, nil
}
