package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/internal/testenv"
)

const (
	srcPrefix = "/vt/"
	cpKey     = "/topoha/test/mirror/checkpoint"
	waitLong  = 60 * time.Second
)

// pair is a source and a destination etcd with a client each.
type pair struct {
	src, dst   *testenv.Etcd
	sc, dc     *clientv3.Client
	destPrefix string
}

func newPair(t testing.TB, srcOpts ...testenv.EtcdOption) *pair {
	t.Helper()
	p := &pair{src: testenv.StartEtcd(t, "src", srcOpts...), dst: testenv.StartEtcd(t, "dst"), destPrefix: srcPrefix}
	p.sc, p.dc = p.src.Client(), p.dst.Client()
	return p
}

func (p *pair) config(mutate ...func(*Config)) Config {
	cfg := Config{
		Source: p.sc, Dest: p.dc,
		Prefix: srcPrefix, DestPrefix: p.destPrefix,
		CheckpointKey:      cpKey,
		RequestTimeout:     5 * time.Second,
		ProgressInterval:   50 * time.Millisecond,
		CheckpointInterval: 100 * time.Millisecond,
		StallTimeout:       5 * time.Second,
		MinBackoff:         20 * time.Millisecond,
		MaxBackoff:         300 * time.Millisecond,
		PageSize:           100,
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, f := range mutate {
		f(&cfg)
	}
	return cfg
}

// running is a Mirror whose Run goroutine the test controls.
type running struct {
	*Mirror
	cancel context.CancelFunc
	done   chan error
}

func (p *pair) start(t testing.TB, mutate ...func(*Config)) *running {
	t.Helper()
	m, err := New(p.config(mutate...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Mirror: m, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- m.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns its error, which must be the cancellation or ErrFenced.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // later calls see the same result
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrFenced) {
			t.Errorf("Run returned %v", err)
		}
		return err
	case <-time.After(waitLong):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

// waitEqual polls until the destination's mirrored keys equal the source's, read independently of the
// mirror's own code.
func (p *pair) waitEqual(t testing.TB, exclude ...string) {
	t.Helper()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		return p.equal(t, exclude...)
	})
}

func (p *pair) equal(t testing.TB, exclude ...string) (bool, string) {
	src := testenv.Snapshot(t, p.sc, srcPrefix)
	dst := testenv.Snapshot(t, p.dc, p.destPrefix)
	for _, ex := range exclude {
		for k := range src {
			if len(k) >= len(ex) && k[:len(ex)] == ex {
				delete(src, k)
			}
		}
	}
	if diff := testenv.DescribeDiff(src, dst); diff != "" {
		return false, "source vs destination: " + diff
	}
	return true, ""
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t testing.TB, c *clientv3.Client, key, val string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	t.Helper()
	resp, err := c.Put(ctxT(t), key, val, opts...)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp
}

func mustDelete(t testing.TB, c *clientv3.Client, key string, opts ...clientv3.OpOption) {
	t.Helper()
	if _, err := c.Delete(ctxT(t), key, opts...); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}

// fill puts n keys below srcPrefix+dir in transactions of up to 100 puts.
func fill(t testing.TB, c *clientv3.Client, dir string, n int, value string) {
	t.Helper()
	for i := 0; i < n; i += 100 {
		var ops []clientv3.Op
		for j := i; j < min(i+100, n); j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%s%06d", srcPrefix, dir, j), value))
		}
		if _, err := c.Txn(ctxT(t)).Then(ops...).Commit(); err != nil {
			t.Fatalf("fill: %v", err)
		}
	}
}

func checkpointOf(t testing.TB, c *clientv3.Client) *Checkpoint {
	t.Helper()
	cp, err := ReadCheckpoint(ctxT(t), c, cpKey, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func currentRev(t testing.TB, c *clientv3.Client) int64 {
	t.Helper()
	resp, err := c.Get(ctxT(t), "rev-probe")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// waitApplied waits until the mirror has applied the source's current revision.
func (p *pair) waitApplied(t testing.TB, r *running) {
	t.Helper()
	want := currentRev(t, p.sc)
	testenv.Eventually(t, waitLong, func() (bool, string) {
		s := r.Status()
		return s.AppliedRevision >= want, fmt.Sprintf("applied %d, want %d (phase %s, last error %q)", s.AppliedRevision, want, s.Phase, s.LastError)
	})
}
