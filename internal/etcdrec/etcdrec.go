// Package etcdrec is the one reader of the small JSON records topoha keeps under its own keys (the primary
// record, the pause flag, requests and their answers, a failover's result, a DC's fence). Every reader
// follows one rule: what one etcd holds at a key is a record, absent, unreachable (the etcd did not
// answer), or garbage (a value that is not such a record). What garbage means is for the caller to decide;
// it is never silently read as a record or as absent.
package etcdrec

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Observed is what one etcd holds at a record's key.
type Observed[T any] struct {
	// Record is nil when the key does not exist or does not hold a record (Err says which).
	Record *T
	// ModRevision is the key's mod revision in that etcd, 0 when it does not exist or was not read: a
	// compare-and-swap on it replaces exactly what was observed.
	ModRevision int64
	// Err is set when the etcd could not be read or the key holds something else than a record.
	Err error
}

// Absent says the etcd answered and holds nothing at the key.
func (o Observed[T]) Absent() bool { return o.Record == nil && o.Err == nil }

// Unreachable says the etcd did not answer.
func (o Observed[T]) Unreachable() bool { return o.Err != nil && o.ModRevision == 0 }

// Garbage says the key holds a value that is not a record.
func (o Observed[T]) Garbage() bool { return o.Err != nil && o.ModRevision != 0 }

// Decoder turns the value at key into a record, or says why it is not one.
type Decoder[T any] func(key string, value []byte) (*T, error)

// JSON decodes a JSON record named what and accepts it only if valid says so: `null`, `{}` or a record
// missing what makes it one are garbage, not a zero record.
func JSON[T any](what string, valid func(*T) bool) Decoder[T] {
	return func(key string, value []byte) (*T, error) {
		var r T
		if err := json.Unmarshal(value, &r); err != nil || !valid(&r) {
			return nil, fmt.Errorf("%s %s holds %q, which is not a %s; fix or delete it by hand", what, key, truncate(value), what)
		}
		return &r, nil
	}
}

// Read reads key from one etcd within ctx; what names the record in the error of a failed read.
func Read[T any](ctx context.Context, cli *clientv3.Client, what, key string, decode Decoder[T]) Observed[T] {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return Observed[T]{Err: fmt.Errorf("read %s %s: %w", what, key, err)}
	}
	if len(resp.Kvs) == 0 {
		return Observed[T]{}
	}
	kv := resp.Kvs[0]
	r, err := decode(key, kv.Value)
	if err != nil {
		return Observed[T]{ModRevision: kv.ModRevision, Err: err}
	}
	return Observed[T]{Record: r, ModRevision: kv.ModRevision}
}

// ReadAll reads key from every etcd of clients at once, each read within timeout, keyed like clients.
func ReadAll[T any](ctx context.Context, clients map[string]*clientv3.Client, timeout time.Duration, what, key string, decode Decoder[T]) map[string]Observed[T] {
	return EachDC(clients, func(_ string, cli *clientv3.Client) Observed[T] {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return Read(rctx, cli, what, key, decode)
	})
}

// EachDC runs do for every DC of clients at once and returns what each returned, keyed like clients: a
// lost DC costs one timeout, not one per DC.
func EachDC[T any](clients map[string]*clientv3.Client, do func(dc string, cli *clientv3.Client) T) map[string]T {
	out := make(map[string]T, len(clients))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for dc, cli := range clients {
		wg.Go(func() {
			v := do(dc, cli)
			mu.Lock()
			out[dc] = v
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}
