package failover

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// shardView keeps the Shard records of one etcd current for a driver's attempts: one range read, then a
// watch. However many shards wait for their new primary, the etcd serves one stream of changes instead
// of a read per shard per poll, and an attempt learns of its promotion as soon as it is written.
type shardView struct {
	cli     *clientv3.Client
	prefix  string
	timeout time.Duration // bounds the range read
	retry   time.Duration // the wait before reading again after a failure
	log     *slog.Logger

	mu      sync.Mutex
	recs    map[string][]byte // Shard record key -> value; nil until the first read
	err     error             // why recs is not current, when it is not
	changed chan struct{}     // closed at the next change of recs or err
}

func newShardView(cli *clientv3.Client, globalRoot string, timeout, retry time.Duration, log *slog.Logger) *shardView {
	return &shardView{cli: cli, prefix: path.Join(globalRoot, "keyspaces") + "/", timeout: timeout, retry: retry, log: log,
		err: errors.New("the Shard records are not read yet"), changed: make(chan struct{})}
}

// Run reads the Shard records and follows them with a watch until ctx ends, reading again whenever the
// watch fails (a compaction, a member lost).
func (v *shardView) Run(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := v.load(ctx)
		if err == nil {
			err = v.follow(ctx, rev)
		}
		if ctx.Err() != nil {
			return
		}
		// No shard is attempted while the view is not current: say why.
		v.log.Warn("failover: the Shard records cannot be followed; reading them again", "prefix", v.prefix, "err", err, "retry_in", v.retry)
		v.update(func() { v.err = err })
		select {
		case <-ctx.Done():
		case <-time.After(v.retry):
		}
	}
}

func (v *shardView) load(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, v.timeout)
	resp, err := v.cli.Get(rctx, v.prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return 0, err
	}
	recs := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if isShardRecord(string(kv.Key)) {
			recs[string(kv.Key)] = kv.Value
		}
	}
	v.update(func() { v.recs, v.err = recs, nil })
	return resp.Header.Revision, nil
}

// follow applies the changes after rev until the watch ends.
func (v *shardView) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range v.cli.Watch(wctx, v.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		v.update(func() {
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				switch {
				case !isShardRecord(key):
				case ev.Type == clientv3.EventTypeDelete:
					delete(v.recs, key)
				default:
					v.recs[key] = ev.Kv.Value
				}
			}
		})
	}
	return errors.New("the watch of the Shard records ended")
}

func (v *shardView) update(f func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	f()
	close(v.changed)
	v.changed = make(chan struct{})
}

// get returns the Shard record at key as the view holds it, and a channel closed at the view's next
// change; err says why the view is not current.
func (v *shardView) get(key string) (val []byte, found bool, changed <-chan struct{}, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		return nil, false, v.changed, v.err
	}
	val, found = v.recs[key]
	return val, found, v.changed, nil
}

// wait returns once the view has read the Shard records, or when ctx ends.
func (v *shardView) wait(ctx context.Context) error {
	for {
		_, _, changed, err := v.get("")
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

func isShardRecord(key string) bool { return strings.HasSuffix(key, "/Shard") }
