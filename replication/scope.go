package replication

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// scope is what the mirror covers: the source prefix, where it lands, and what it leaves alone.
type scope struct {
	prefix, destPrefix string
	exclude            []string
	rewrite            *Rewrite
}

// value is what the destination holds for a source key-value.
func (s scope) value(srcKey string, v []byte) []byte {
	if s.rewrite == nil {
		return v
	}
	return s.rewrite.Apply(srcKey, v)
}

// destKey maps a source key (below prefix, or prefix's range end) to its destination key.
func (s scope) destKey(src string) string {
	if src == clientv3.GetPrefixRangeEnd(s.prefix) {
		return clientv3.GetPrefixRangeEnd(s.destPrefix)
	}
	return s.destPrefix + strings.TrimPrefix(src, s.prefix)
}

// sourceKey maps a destination key back to the source key it mirrors.
func (s scope) sourceKey(dst string) string { return s.prefix + strings.TrimPrefix(dst, s.destPrefix) }

func (s scope) excluded(srcKey string) bool {
	for _, ex := range s.exclude {
		if strings.HasPrefix(srcKey, ex) {
			return true
		}
	}
	return false
}

// mirroredSource says whether a source key-value belongs in the destination. Keys bound to a lease are left
// out: written without their lease they would never expire (a Vitess shard lock would block every
// reparent on the DR side).
func (s scope) mirroredSource(kv *mvccpb.KeyValue) bool {
	return kv.Lease == 0 && !s.excluded(string(kv.Key))
}

// managedDest says whether a destination key is the mirror's to overwrite or delete. Leased keys there
// belong to live processes of the destination DC and expire by themselves; excluded keys are not the
// mirror's business.
func (s scope) managedDest(kv *mvccpb.KeyValue) bool {
	return kv.Lease == 0 && !s.excluded(s.sourceKey(string(kv.Key)))
}

// fingerprint identifies the scope in a checkpoint: a checkpoint written for another scope cannot be
// resumed, because keys that were out of scope were never copied.
func (s scope) fingerprint() string {
	f := fmt.Sprintf("%q->%q exclude=%q", s.prefix, s.destPrefix, s.exclude)
	if s.rewrite != nil {
		f += fmt.Sprintf(" rewrite=%q", s.rewrite.Name)
	}
	return f
}

// rangeReader pages through a key range of one etcd, so that memory stays bounded by the page size
// whatever the size of the range. With pin, every page is read at one revision: rev, or the first page's.
type rangeReader struct {
	cli      *clientv3.Client
	next     string // first key not yet fetched
	end      string
	rev      int64
	pin      bool
	pageSize int64
	timeout  time.Duration

	page []*mvccpb.KeyValue
	more bool
	done bool
}

// peek returns the current key-value, or nil at the end of the range.
func (r *rangeReader) peek(ctx context.Context) (*mvccpb.KeyValue, error) {
	for len(r.page) == 0 && !r.done {
		if err := r.fetch(ctx); err != nil {
			return nil, err
		}
	}
	if len(r.page) == 0 {
		return nil, nil
	}
	return r.page[0], nil
}

func (r *rangeReader) advance() { r.page = r.page[1:] }

func (r *rangeReader) fetch(ctx context.Context) error {
	opts := []clientv3.OpOption{clientv3.WithRange(r.end), clientv3.WithLimit(r.pageSize)}
	if r.rev != 0 {
		opts = append(opts, clientv3.WithRev(r.rev))
	}
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	resp, err := r.cli.Get(cctx, r.next, opts...)
	cancel()
	if err != nil {
		return err
	}
	if r.pin && r.rev == 0 {
		r.rev = resp.Header.Revision
	}
	r.page = resp.Kvs
	if !resp.More || len(resp.Kvs) == 0 {
		r.done = true
		return nil
	}
	r.next = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	return nil
}

// change is one difference between source and destination, in source key order.
type change struct {
	srcKey string
	src    *mvccpb.KeyValue // nil: the destination key must go
	dst    *mvccpb.KeyValue // nil: the destination lacks the key
}

// diff walks the source and destination ranges side by side in key order and calls visit for every key
// whose destination copy is missing, different or superfluous. It returns the number of distinct keys seen.
func (s scope) diff(ctx context.Context, src, dst *rangeReader, visit func(change) error) (int, error) {
	compared := 0
	for {
		sk, err := s.peekMirrored(ctx, src, s.mirroredSource)
		if err != nil {
			return compared, fmt.Errorf("read source: %w", err)
		}
		dk, err := s.peekMirrored(ctx, dst, s.managedDest)
		if err != nil {
			return compared, fmt.Errorf("read destination: %w", err)
		}
		if sk == nil && dk == nil {
			return compared, nil
		}
		compared++
		var c change
		switch {
		case dk == nil || (sk != nil && string(sk.Key) < s.sourceKey(string(dk.Key))):
			c = change{srcKey: string(sk.Key), src: sk}
			src.advance()
		case sk == nil || string(sk.Key) > s.sourceKey(string(dk.Key)):
			c = change{srcKey: s.sourceKey(string(dk.Key)), dst: dk}
			dst.advance()
		default:
			src.advance()
			dst.advance()
			if bytes.Equal(s.value(string(sk.Key), sk.Value), dk.Value) {
				continue
			}
			c = change{srcKey: string(sk.Key), src: sk, dst: dk}
		}
		if err := visit(c); err != nil {
			return compared, err
		}
	}
}

func (s scope) peekMirrored(ctx context.Context, r *rangeReader, keep func(*mvccpb.KeyValue) bool) (*mvccpb.KeyValue, error) {
	for {
		kv, err := r.peek(ctx)
		if err != nil || kv == nil || keep(kv) {
			return kv, err
		}
		r.advance()
	}
}
