//go:build chaos

package chaos

// The writer: a stand-in for Vitess changing its topo. It puts, deletes, deletes whole directories and
// commits multi-key transactions under /vt in one DC's etcd, through the third site's link to that DC's
// VIP, and records every operation: the invariant checker needs to know what was written where, and when.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// op is one operation of the writer. Values are unique: "<dc>#<seq>" (".<i>" added per key of a
// transaction), so a value found anywhere tells which operation wrote it.
type op struct {
	seq        int
	dc         string
	kind       string // put, delete, delete-dir, txn, leased (a put bound to a short lease, like a Vitess lock)
	keys       []string
	values     []string
	start, end time.Time
	err        error
}

type writer struct {
	t       *testing.T
	clients map[string]*clientv3.Client
	rnd     *rand.Rand
	// busy is held while an operation runs: setTarget takes it, so no operation to the old target is
	// under way once it returns.
	busy sync.Mutex

	mu     sync.Mutex
	target string
	ops    []op

	stop chan struct{}
	done chan struct{}
}

// writeTimeout bounds one operation.
const writeTimeout = time.Second

func newWriter(c *cluster) *writer {
	w := &writer{
		t: c.t, clients: map[string]*clientv3.Client{}, rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	for _, dc := range dcNames {
		w.clients[dc] = newClient(c.t, c.links["ext"][dc].Endpoints())
	}
	go w.run()
	c.t.Cleanup(func() {
		close(w.stop)
		<-w.done
	})
	return w
}

// setTarget makes the writer write into dc's etcd from now on; "" stops it.
func (w *writer) setTarget(dc string) {
	w.busy.Lock()
	defer w.busy.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.target = dc
}

func (w *writer) run() {
	defer close(w.done)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for seq := 1; ; {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		w.busy.Lock()
		w.mu.Lock()
		dc := w.target
		w.mu.Unlock()
		if dc != "" {
			o := w.next(seq, dc)
			seq++
			w.do(&o)
			w.mu.Lock()
			w.ops = append(w.ops, o)
			w.mu.Unlock()
		}
		w.busy.Unlock()
	}
}

// next chooses an operation on 10 directories of 20 keys each.
func (w *writer) next(seq int, dc string) op {
	o := op{seq: seq, dc: dc}
	key := func() string { return fmt.Sprintf("%schaos/%d/%02d", vtPrefix, w.rnd.IntN(10), w.rnd.IntN(20)) }
	val := fmt.Sprintf("%s#%d", dc, seq)
	switch n := w.rnd.IntN(100); {
	case n < 60:
		o.kind, o.keys, o.values = "put", []string{key()}, []string{val}
	case n < 80:
		o.kind, o.keys = "delete", []string{key()}
	case n < 85:
		o.kind, o.keys, o.values = "leased", []string{fmt.Sprintf("%schaos/locks/%d", vtPrefix, w.rnd.IntN(5))}, []string{val}
	case n < 88:
		o.kind, o.keys = "delete-dir", []string{fmt.Sprintf("%schaos/%d/", vtPrefix, w.rnd.IntN(10))}
	default:
		o.kind = "txn"
		for len(o.keys) < 3 {
			if k := key(); !slices.Contains(o.keys, k) {
				o.values = append(o.values, fmt.Sprintf("%s.%d", val, len(o.keys)))
				o.keys = append(o.keys, k)
			}
		}
	}
	return o
}

func (w *writer) do(o *op) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	cli := w.clients[o.dc]
	o.start = time.Now()
	switch o.kind {
	case "put":
		_, o.err = cli.Put(ctx, o.keys[0], o.values[0])
	case "delete":
		_, o.err = cli.Delete(ctx, o.keys[0])
	case "delete-dir":
		_, o.err = cli.Delete(ctx, o.keys[0], clientv3.WithPrefix())
	case "leased":
		var lease *clientv3.LeaseGrantResponse
		if lease, o.err = cli.Grant(ctx, 2); o.err == nil {
			_, o.err = cli.Put(ctx, o.keys[0], o.values[0], clientv3.WithLease(lease.ID))
		}
	case "txn":
		var ops []clientv3.Op
		for i, k := range o.keys {
			ops = append(ops, clientv3.OpPut(k, o.values[i]))
		}
		_, o.err = cli.Txn(ctx).Then(ops...).Commit()
	}
	o.end = time.Now()
}

// snapshot returns the operations recorded so far.
func (w *writer) snapshot() []op {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]op(nil), w.ops...)
}

// stats counts operations (into dc, or anywhere for "") since a time: all, and failed.
func (w *writer) stats(dc string, since time.Time) (n, failed int) {
	for _, o := range w.snapshot() {
		if (dc == "" || o.dc == dc) && !o.start.Before(since) {
			n++
			if o.err != nil {
				failed++
			}
		}
	}
	return n, failed
}

// origin parses a value the writer wrote: the DC it was written into and the operation's seq.
func origin(value string) (dc string, seq int, ok bool) {
	dc, rest, found := strings.Cut(value, "#")
	if !found {
		return "", 0, false
	}
	rest, _, _ = strings.Cut(rest, ".")
	seq, err := strconv.Atoi(rest)
	return dc, seq, err == nil
}
