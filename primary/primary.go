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
	"sync"
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

// Key is the record's key for a cluster's key root (/topoha/<cluster>/).
func Key(keyRoot string) string { return keyRoot + "primary" }

// Observed is what one etcd holds at the record's key.
type Observed = etcdrec.Observed[Record]

// Read reads the record at key from one etcd.
func Read(ctx context.Context, cli *clientv3.Client, key string) Observed {
	return etcdrec.Read(ctx, cli, "primary record", key, decode)
}

// decode reads the value stored at key as a record: anything but a JSON record with a dc and an epoch of
// at least 0 is an error, so that garbage never reads as a record.
func decode(key string, value []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(value, &r); err != nil || r.DC == "" || r.Epoch < 0 {
		return nil, fmt.Errorf("primary record %s holds %q, not a record with a dc and an epoch; fix or delete it by hand", key, truncate(value))
	}
	return &r, nil
}

// Resolve returns the record that holds: the readable one with the highest epoch, or the initial
// primary at epoch 0 when no etcd holds one.
func Resolve(initial string, observed ...Observed) Record {
	best := Record{DC: initial, Epoch: 0, Reason: "initial_primary"}
	for _, o := range observed {
		if o.Record != nil && o.Record.Epoch > best.Epoch {
			best = *o.Record
		}
	}
	return best
}

// ReadAll reads the record from every etcd of clients at once, each read within timeout, keyed like
// clients: a lost DC costs one timeout, not one per DC.
func ReadAll(ctx context.Context, clients map[string]*clientv3.Client, key string, timeout time.Duration) map[string]Observed {
	out := make(map[string]Observed, len(clients))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for dc, cli := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, timeout)
			o := Read(rctx, cli, key)
			cancel()
			mu.Lock()
			out[dc] = o
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// ResolveAll is Resolve over what ReadAll returned, taken in the order of dcs: with two records of the
// same epoch, the first DC's holds, so that every caller agrees.
func ResolveAll(initial string, dcs []string, observed map[string]Observed) Record {
	list := make([]Observed, 0, len(dcs))
	for _, dc := range dcs {
		list = append(list, observed[dc])
	}
	return Resolve(initial, list...)
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

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}
