// Package etcdrec reads the small JSON records topoha keeps under its own keys (the primary record, a
// DC's fence): what one etcd holds at a key, told apart as absent, unreadable, or not a record.
package etcdrec

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Observed is what one etcd holds at a record's key.
type Observed[T any] struct {
	// Record is nil when the key does not exist or does not hold a record (Err says which).
	Record *T
	// ModRevision is the key's mod revision in that etcd, 0 when it does not exist.
	ModRevision int64
	// Err is set when the etcd could not be read or the key holds something else than a record.
	Err error
}

// Read reads key from one etcd and decodes its value with decode, whose error is kept as it is; what
// names the record in the error of a failed read.
func Read[T any](ctx context.Context, cli *clientv3.Client, what, key string, decode func(key string, value []byte) (*T, error)) Observed[T] {
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
