// Package demo plays topoha on one machine, narrated: two embedded etcd servers stand in for the two DCs'
// etcd clusters; the mirror copes with restarts, deletes and compaction; then controllers in both DCs
// fail over when dc1 is lost and resync dc1 when it returns. Each step checks that what it tells really
// happened, so a demo that prints "done" has shown it.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/controller"
	"github.com/topoha/topoha/internal/embedetcd"
	"github.com/topoha/topoha/keys"
	"github.com/topoha/topoha/replication"
	"github.com/topoha/topoha/vitess"
)

const (
	prefix  = "/vt/"
	tablets = 2000
	waitFor = 30 * time.Second
)

// Run plays the demo, writing the narration to w. promoter is the argument vector that stands in for
// vtctldclient: it is run as `promoter... -etcd URL KEYSPACE/SHARD TABLET` and writes the new primary
// into the Shard record. Run returns an error when a step does not behave as described.
func Run(ctx context.Context, w io.Writer, promoter []string) error {
	d := &demo{w: w, promoter: promoter}
	dir, err := os.MkdirTemp("", "topoha-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer d.close()
	steps := []struct {
		title string
		run   func(context.Context) error
	}{
		{"Two datacenters, one etcd cluster each", func(ctx context.Context) error { return d.startDCs(ctx, dir) }},
		{"A Vitess topo in dc1 (the primary)", d.writeTopo},
		{"topoha mirror: first full sync dc1 -> dc2", d.firstSync},
		{"Live changes stream across", d.liveChange},
		{"The mirror is down while dc1 changes (deletes included)", d.downWhileChanging},
		{"dc1 compacts its history past the mirror's checkpoint", d.compactedWhileDown},
		{"topoha verify: key by key", d.verify},
		{"topoha run in both DCs", d.startControllers},
		{"dc1 is lost: automatic failover to dc2", d.loseDC1},
		{"dc1 comes back", d.dc1Returns},
		{"topoha history: what the controllers recorded", d.history},
	}
	for i, s := range steps {
		d.sayf("\n== %d. %s\n", i+1, s.title)
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, s.title, err)
		}
	}
	d.sayf("\nDone: every claim above was checked as it was made.\n")
	return nil
}

type demo struct {
	w        io.Writer
	promoter []string
	dc1, dc2 *embedetcd.Server
	c1, c2   *clientv3.Client
	mirror   *replication.Mirror
	stop     context.CancelFunc
	done     chan error

	cfg         *config.Config
	controllers []*controller.Controller
	stops       []func()
}

func (d *demo) sayf(format string, args ...any) { fmt.Fprintf(d.w, format, args...) }

func (d *demo) close() {
	d.stopMirror()
	for _, stop := range d.stops {
		stop()
	}
	for _, c := range []*clientv3.Client{d.c1, d.c2} {
		if c != nil {
			c.Close()
		}
	}
	for _, s := range []*embedetcd.Server{d.dc1, d.dc2} {
		if s != nil {
			s.Stop()
		}
	}
}

func (d *demo) startDCs(_ context.Context, dir string) error {
	var err error
	if d.dc1, err = embedetcd.New("dc1", dir+"/dc1"); err != nil {
		return err
	}
	if d.dc2, err = embedetcd.New("dc2", dir+"/dc2"); err != nil {
		return err
	}
	for _, s := range []*embedetcd.Server{d.dc1, d.dc2} {
		if err := s.Start(); err != nil {
			return err
		}
	}
	if d.c1, err = d.dc1.Client(); err != nil {
		return err
	}
	if d.c2, err = d.dc2.Client(); err != nil {
		return err
	}
	d.sayf("dc1 etcd at %s (primary DC), dc2 etcd at %s (DR DC)\n", d.dc1.Endpoint(), d.dc2.Endpoint())
	return nil
}

func (d *demo) writeTopo(ctx context.Context) error {
	// Records as Vitess writes them (the encoders are tested on bytes Vitess wrote): each cell's CellInfo
	// points at its own DC's etcd; the cells' records live below /vt, so the mirror carries them too.
	topo := vitess.NewTopo("/vt")
	topo.Cell("dc1", hostPort(d.dc1.Endpoint()), "/vt/dc1")
	topo.Cell("dc2", hostPort(d.dc2.Endpoint()), "/vt/dc2")
	topo.Keyspace("commerce", "semi_sync")
	topo.Keyspace("customer", "none")
	add := func(keyspace, shard string, primary uint32, tablets ...vitess.Tablet) error {
		topo.Shard(keyspace, shard, vitess.TabletAlias{Cell: "dc1", UID: primary})
		for _, t := range append([]vitess.Tablet{{Alias: vitess.TabletAlias{Cell: "dc1", UID: primary}, Type: vitess.TypePrimary}}, tablets...) {
			t.Keyspace, t.Shard, t.Hostname = keyspace, shard, "tablet-"+t.Alias.String()
			if err := topo.Tablet(t); err != nil {
				return err
			}
		}
		return nil
	}
	replica := func(uid uint32) vitess.Tablet {
		return vitess.Tablet{Alias: vitess.TabletAlias{Cell: "dc2", UID: uid}, Type: vitess.TypeReplica}
	}
	// semi_sync: each commerce shard has two REPLICAs in dc2, so that one can acknowledge the other.
	if err := add("commerce", "-80", 100, replica(101), replica(102)); err != nil {
		return err
	}
	if err := add("commerce", "80-", 200, replica(201), replica(202)); err != nil {
		return err
	}
	var bulk []vitess.Tablet
	for i := range tablets {
		bulk = append(bulk, vitess.Tablet{Alias: vitess.TabletAlias{Cell: "dc1", UID: uint32(1000 + i)}, Type: vitess.TypeRdonly})
	}
	if err := add("customer", "0", 300, bulk...); err != nil {
		return err
	}
	if err := topo.Put(ctx, d.c1); err != nil {
		return err
	}
	records, tabletRecords := len(topo.Records()), 0
	for k := range topo.Records() {
		if strings.HasSuffix(k, "/Tablet") {
			tabletRecords++
		}
	}
	lease, err := d.c1.Grant(ctx, 60)
	if err != nil {
		return err
	}
	lockKey := fmt.Sprintf("%skeyspaces/commerce/shards/-80/locks/%d", prefix, lease.ID)
	if _, err := d.c1.Put(ctx, lockKey, "vtctld: PlannedReparentShard", clientv3.WithLease(lease.ID)); err != nil {
		return err
	}
	d.sayf("wrote %d Vitess records below /vt/ (2 keyspaces, 3 shards, %d tablets, their cells and replication graphs)\n", records, tabletRecords)
	d.sayf("and a shard lock bound to a lease, as vtctld holds one during a reparent:\n  %s\n", lockKey)
	return nil
}

func (d *demo) startMirror() error {
	m, err := replication.New(replication.Config{
		Source: d.c1, Dest: d.c2,
		Prefix: prefix, DestPrefix: prefix,
		CheckpointKey:      keys.For("demo").MirrorCheckpoint(),
		RequestTimeout:     config.DefaultRequestTimeout,
		ProgressInterval:   100 * time.Millisecond,
		CheckpointInterval: 200 * time.Millisecond,
		Logger:             slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.mirror, d.stop, d.done = m, cancel, make(chan error, 1)
	go func() { d.done <- m.Run(ctx) }()
	return nil
}

func (d *demo) stopMirror() {
	if d.stop != nil {
		d.stop()
		<-d.done
		d.stop = nil
	}
}

// waitCaughtUp waits until the mirror has applied dc1's current revision.
func (d *demo) waitCaughtUp(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	resp, err := d.c1.Get(ctx, "rev")
	if err != nil {
		return 0, err
	}
	want := resp.Header.Revision
	for {
		s := d.mirror.Status()
		if s.AppliedRevision >= want && s.Phase == replication.PhaseStreaming {
			return time.Since(start), nil
		}
		if time.Since(start) > waitFor {
			return 0, fmt.Errorf("mirror at revision %d, dc1 at %d after %s (phase %s, last error %q)", s.AppliedRevision, want, waitFor, s.Phase, s.LastError)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (d *demo) firstSync(ctx context.Context) error {
	if err := d.startMirror(); err != nil {
		return err
	}
	took, err := d.waitCaughtUp(ctx)
	if err != nil {
		return err
	}
	s := d.mirror.Status()
	d.sayf("copied %d keys in %s with %d transactions (make-mirror writes one key per request)\n",
		s.KeysApplied, took.Round(time.Millisecond), s.Transactions)
	locks, err := d.c2.Get(ctx, prefix+"keyspaces/commerce/shards/-80/locks/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if locks.Count != 0 {
		return errors.New("the leased shard lock reached dc2")
	}
	d.sayf("the leased shard lock was NOT copied: a permanent copy would never expire and would block\n")
	d.sayf("EmergencyReparentShard in dc2 after a failover\n")
	return d.checkEqual(ctx)
}

func (d *demo) liveChange(ctx context.Context) error {
	key := prefix + "keyspaces/commerce/shards/80-/Shard"
	start := time.Now()
	if _, err := d.c1.Put(ctx, key, shardRecord(201)); err != nil {
		return err
	}
	for {
		resp, err := d.c2.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == shardRecord(201) {
			break
		}
		if time.Since(start) > waitFor {
			return errors.New("the change did not reach dc2")
		}
		time.Sleep(time.Millisecond)
	}
	d.sayf("a reparent in dc1 rewrote commerce/80-'s Shard record: visible in dc2 after %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func (d *demo) downWhileChanging(ctx context.Context) error {
	d.stopMirror()
	cp, err := replication.ReadCheckpoint(ctx, d.c2, keys.For("demo").MirrorCheckpoint(), 5*time.Second)
	if err != nil || cp == nil {
		return fmt.Errorf("no checkpoint in dc2: %v", err)
	}
	d.sayf("mirror stopped; its checkpoint in dc2 says dc1 revision %d is applied\n", cp.Revision)
	for _, dir := range []string{"keyspaces/customer/", "dc1/keyspaces/customer/", "dc1/tablets/dc1-0000001"} {
		if _, err := d.c1.Delete(ctx, prefix+dir, clientv3.WithPrefix()); err != nil {
			return err
		}
	}
	if _, err := d.c1.Put(ctx, prefix+"keyspaces/commerce/shards/-80/Shard", shardRecord(102)); err != nil {
		return err
	}
	d.sayf("meanwhile in dc1: keyspace customer deleted, 1000 of its tablets deleted, a Shard record changed\n")
	d.sayf("(make-mirror restarted here would never delete those keys from dc2)\n")
	if err := d.startMirror(); err != nil {
		return err
	}
	if _, err := d.waitCaughtUp(ctx); err != nil {
		return err
	}
	s := d.mirror.Status()
	if len(s.Resyncs) != 0 {
		return fmt.Errorf("expected a resume from the checkpoint, got full syncs %v", s.Resyncs)
	}
	d.sayf("restarted: resumed from revision %d and applied %d changes (the deletes arrive as watch events);\n", cp.Revision, s.KeysApplied)
	d.sayf("nothing else was re-copied\n")
	return d.checkEqual(ctx)
}

func (d *demo) compactedWhileDown(ctx context.Context) error {
	d.stopMirror()
	if _, err := d.c1.Delete(ctx, prefix+"dc1/tablets/dc1-0000002", clientv3.WithPrefix()); err != nil {
		return err
	}
	if _, err := d.c1.Put(ctx, prefix+"keyspaces/commerce/shards/80-/Shard", shardRecord(200)); err != nil {
		return err
	}
	resp, err := d.c1.Get(ctx, "rev")
	if err != nil {
		return err
	}
	if _, err := d.c1.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		return err
	}
	d.sayf("mirror stopped; dc1 deleted the other 1000 tablet records, then compacted its history at revision %d\n", resp.Header.Revision)
	d.sayf("(make-mirror fails here with \"required revision has been compacted\")\n")
	if err := d.startMirror(); err != nil {
		return err
	}
	if _, err := d.waitCaughtUp(ctx); err != nil {
		return err
	}
	s := d.mirror.Status()
	if s.Resyncs[replication.ResyncCompacted] != 1 {
		return fmt.Errorf("expected one full sync for compaction, got %v", s.Resyncs)
	}
	d.sayf("restarted: the checkpoint is compacted away, so a full sync at one dc1 revision ran and deleted\n")
	d.sayf("what dc1 no longer has (%d changes; counted as resync reason %q)\n", s.KeysApplied, replication.ResyncCompacted)
	return d.checkEqual(ctx)
}

func (d *demo) verify(ctx context.Context) error {
	rep, err := replication.Verify(ctx, replication.Config{
		Source: d.c1, Dest: d.c2, Prefix: prefix, DestPrefix: prefix, CheckpointKey: keys.For("demo").MirrorCheckpoint(),
		RequestTimeout: config.DefaultRequestTimeout,
	}, 10)
	if err != nil {
		return err
	}
	if !rep.Equal {
		return fmt.Errorf("verify found %d differences: %v", rep.DifferenceCount, rep.Differences)
	}
	d.sayf("EQUAL: %d keys compared, dc1 read at the checkpoint revision %d, dc2 at its revision %d\n",
		rep.KeysCompared, rep.SourceRevision, rep.DestRevision)
	return nil
}

// checkEqual reads both prefixes independently of the mirror and compares them (leased keys aside).
func (d *demo) checkEqual(ctx context.Context) error {
	a, err := permanentKeys(ctx, d.c1)
	if err != nil {
		return err
	}
	b, err := permanentKeys(ctx, d.c2)
	if err != nil {
		return err
	}
	if !maps.Equal(a, b) {
		return fmt.Errorf("dc1 has %d keys, dc2 %d: not equal", len(a), len(b))
	}
	d.sayf("checked: dc2 holds exactly dc1's %d permanent keys\n", len(a))
	return nil
}

func permanentKeys(ctx context.Context, c *clientv3.Client) (map[string]string, error) {
	resp, err := c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		if kv.Lease == 0 {
			out[string(kv.Key)] = string(kv.Value)
		}
	}
	return out, nil
}

// shardRecord is a topodata.Shard record, protobuf-encoded as Vitess stores it, whose primary is the dc1
// tablet with uid.
func shardRecord(uid uint32) string {
	return string(vitess.EncodeShard(vitess.TabletAlias{Cell: "dc1", UID: uid}))
}

// hostPort is an etcd endpoint URL's host:port, as CellInfo.server_address holds it.
func hostPort(endpoint string) string {
	if _, rest, ok := strings.Cut(endpoint, "://"); ok {
		return rest
	}
	return endpoint
}
