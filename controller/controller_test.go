package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/clusterstatus"
	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/vitess"
)

const wait = 60 * time.Second

type rig struct {
	t        *testing.T
	dc1, dc2 *testenv.Cluster
	c1, c2   *clientv3.Client
	cfg      *config.Config
	yaml     string
}

// newRig starts the two-DC fixture (each DC a 3-member etcd cluster, every member listed) with a config
// in mode with failover.after after; tune changes the etcd members (a quota).
func newRig(t *testing.T, mode string, after time.Duration, tune ...testenv.EtcdOption) *rig {
	t.Helper()
	return newRigWith(t, mode, after, testenv.WithEtcd(tune...))
}

// newVIPRig is newRig with the other layout: each DC's etcd configured as one endpoint, a VIP in front of
// its members.
func newVIPRig(t *testing.T, mode string, after time.Duration) *rig {
	t.Helper()
	return newRigWith(t, mode, after, testenv.WithEndpoints(func(_ string, c *testenv.Cluster) []string {
		return []string{"http://" + testenv.StartVIP(t, c.Addrs()).Addr()}
	}))
}

func newRigWith(t *testing.T, mode string, after time.Duration, layout testenv.DCsOption) *rig {
	t.Helper()
	logs := t.TempDir()
	d := testenv.StartDCs(t, layout, testenv.WithConfigFor(func(d *testenv.DCs) string {
		return fmt.Sprintf(`election: {ttl: 2s}
health: {interval: 100ms, timeout: 1s, failure_threshold: 2, success_threshold: 1}
failover:
  mode: %s
  allow_two_site_auto: true
  after: %s
  promote_timeout: 5s
  promote_command: %s
  shards:
    - {keyspace: commerce, shard: "0", tablets: {dc1: dc1-0000000100, dc2: dc2-0000000101}}`, mode, after, d.FakePromote(logs+"/{{.Keyspace}}.log"))
	}))
	r := &rig{t: t, dc1: d.Cluster["dc1"], dc2: d.Cluster["dc2"], cfg: d.Config, yaml: d.YAML}
	// The controllers' clients are the ones `topoha run` makes from the config.
	r.c1, r.c2 = r.client("dc1"), r.client("dc2")
	d.SetShardPrimary("dc1", "commerce", "0", vitess.TabletAlias{Cell: "dc1", UID: 100})
	return r
}

func (r *rig) client(dc string) *clientv3.Client {
	r.t.Helper()
	cc, err := r.cfg.DCs[dc].Etcd.ClientConfig("dcs." + dc + ".etcd")
	if err != nil {
		r.t.Fatal(err)
	}
	c, err := clientv3.New(cc)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

func (r *rig) put(c *clientv3.Client, key, val string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, key, val); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) start(dc, id string) (*Controller, context.CancelFunc) {
	r.t.Helper()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("id", id)
	}
	ctl, err := New(Config{Config: r.cfg, DC: dc, ID: id, Clients: map[string]*clientv3.Client{"dc1": r.c1, "dc2": r.c2}, Logger: log})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			done <- err
			if !errors.Is(err, context.Canceled) {
				r.t.Errorf("%s: Run returned %v", id, err)
			}
		case <-time.After(wait):
			r.t.Errorf("%s: Run did not return after cancel", id)
		}
	}
	r.t.Cleanup(stop)
	return ctl, stop
}

func (r *rig) waitEqual(src, dst *clientv3.Client) {
	r.t.Helper()
	testenv.Eventually(r.t, wait, func() (bool, string) {
		// Short reads, retried: a read sent to a hung member must not fail the wait.
		a, err := testenv.TrySnapshot(src, "/vt/", 2*time.Second)
		if err != nil {
			return false, err.Error()
		}
		b, err := testenv.TrySnapshot(dst, "/vt/", 2*time.Second)
		if err != nil {
			return false, err.Error()
		}
		diff := testenv.DescribeDiff(a, b)
		return diff == "", diff
	})
}

func shardPrimary(t *testing.T, c *clientv3.Client) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, vitess.ShardKey("/vt", "commerce", "0"))
	if err != nil || len(resp.Kvs) == 0 {
		return fmt.Sprintf("unreadable: %v", err)
	}
	a, _, err := vitess.ShardPrimary(resp.Kvs[0].Value)
	if err != nil {
		return err.Error()
	}
	return a.String()
}

// The whole path: mirror, primary DC lost, automatic failover, lost DC back and resynced from the new
// primary.
func TestAutomaticFailoverAndReturn(t *testing.T) {
	r := newRig(t, "auto", time.Second)
	ctl, _ := r.start("dc2", "ctl-dc2")
	r.put(r.c1, "/vt/keyspaces/commerce/Keyspace", "k")
	r.put(r.c1, "/vt/doomed", "deleted by the new primary while dc1 is away")
	r.waitEqual(r.c1, r.c2)
	testenv.Eventually(t, wait, func() (bool, string) {
		s := ctl.Status()
		return s.Leading && s.Mirror != nil, fmt.Sprintf("leading %v", s.Leading)
	})
	r.waitAnnounced(ctl, r.c2, PhaseMirroring)

	r.dc1.Stop()
	testenv.Eventually(t, wait, func() (bool, string) {
		got := primary.Read(context.Background(), r.c2, r.cfg.Keys().Primary())
		return got.Record != nil && got.Record.DC == "dc2" && got.Record.Epoch == 1, fmt.Sprintf("dc2 record %+v", got)
	})
	var res *failover.Result
	testenv.Eventually(t, wait, func() (bool, string) {
		got := failover.ReadResult(context.Background(), r.c2, r.cfg.Keys().LastFailover())
		res = got.Record
		return res != nil && len(res.Shards) == 1 && res.Shards[0].Confirmed && !res.ConvergedAt.IsZero(), fmt.Sprintf("failover %+v", got)
	})
	s := ctl.Status()
	if got := shardPrimary(t, r.c2); got != "dc2-0000000101" {
		t.Fatalf("commerce/0 primary in dc2 = %s", got)
	}
	// The etcd server stops answering while Stop shuts it down, so its death is dated by the first failed
	// probe, which is also where failover.after starts.
	died := s.Health["dc1"].Since
	decided := res.StartedAt
	promoted := decided.Add(res.Shards[0].Duration)
	t.Logf("first failed probe -> failover decided: %s; -> shard promoted: %s (failover.after %s)",
		decided.Sub(died).Round(time.Millisecond), promoted.Sub(died).Round(time.Millisecond), r.cfg.Failover.After)
	if decided.Sub(died) < r.cfg.Failover.After {
		t.Errorf("failed over %s after the first failed probe, before failover.after %s", decided.Sub(died), r.cfg.Failover.After)
	}

	// The new primary changes; the old one returns and must end up equal to it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.c2.Delete(ctx, "/vt/doomed"); err != nil {
		t.Fatal(err)
	}
	r.put(r.c2, "/vt/after-failover", "written in dc2")
	r.dc1.Start()
	r.waitEqual(r.c2, r.c1)
	testenv.Eventually(t, wait, func() (bool, string) {
		got := primary.Read(context.Background(), r.c1, r.cfg.Keys().Primary())
		return got.Record != nil && got.Record.Epoch == 1, fmt.Sprintf("dc1 record %+v", got)
	})
	if s := ctl.Status(); s.Primary.DC != "dc2" || s.Primary.Epoch != 1 {
		t.Errorf("controller's primary after the return = %+v", s.Primary)
	}
	// The election moved to dc1, the DR side now, and the leader there mirrors dc2 into it.
	r.waitAnnounced(ctl, r.c1, PhaseMirroring)
}

// waitAnnounced waits until ctl is in phase p and, as the leader, has announced p in the election in the
// etcd of cli: what `topoha status` shows.
func (r *rig) waitAnnounced(ctl *Controller, cli *clientv3.Client, p Phase) {
	r.t.Helper()
	testenv.Eventually(r.t, wait, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		l, err := election.CurrentLeader(ctx, cli, r.cfg.Keys().Election())
		s := ctl.Status()
		return s.Phase == p && err == nil && l != nil && l.ID == s.ID && l.Phase == string(p) && !l.PhaseSince.IsZero(),
			fmt.Sprintf("phase %s since %s; leader in the election %+v %v", s.Phase, s.PhaseSince, l, err)
	})
}

// The second failover, decided by a leader elected while the primary's etcd is already down: dc1 lost
// (failover to dc2), dc1 back and resynced, then dc2 lost with its controller. The controller in dc1 wins
// the election there with dc2's etcd gone: it cannot mirror out of dc2, but it must still fail over.
func TestFailoverBackByALeaderElectedWithThePrimaryDown(t *testing.T) {
	r := newRig(t, "auto", time.Second)
	r.cfg.Failover.Cooldown = time.Second
	ctlB, stopB := r.start("dc2", "ctl-dc2")
	testenv.Eventually(t, wait, func() (bool, string) { return ctlB.Status().Leading, "ctl-dc2 not leading" })
	r.dc1.Stop()
	testenv.Eventually(t, wait, func() (bool, string) {
		got := primary.Read(context.Background(), r.c2, r.cfg.Keys().Primary())
		return got.Record != nil && got.Record.DC == "dc2" && got.Record.Epoch == 1, fmt.Sprintf("dc2 record %+v", got)
	})
	r.put(r.c2, "/vt/after-first-failover", "written in dc2")
	r.dc1.Start()
	r.waitEqual(r.c2, r.c1)

	stopB()
	r.dc2.Stop()
	ctlA, _ := r.start("dc1", "ctl-dc1")
	testenv.Eventually(t, wait, func() (bool, string) {
		got := primary.Read(context.Background(), r.c1, r.cfg.Keys().Primary())
		s := ctlA.Status()
		return got.Record != nil && got.Record.DC == "dc1" && got.Record.Epoch == 2,
			fmt.Sprintf("dc1 record %+v; ctl-dc1 leading %v, problem %q, decision %q", got.Record, s.Leading, s.Problem, s.Decision.Reason)
	})
	testenv.Eventually(t, wait, func() (bool, string) {
		got := shardPrimary(t, r.c1)
		return got == "dc1-0000000100", "commerce/0 primary in dc1 = " + got
	})
}

// A primary etcd down for less than failover.after does not fail over.
func TestNoFailoverOnShortOutage(t *testing.T) {
	r := newRig(t, "auto", 30*time.Second)
	ctl, _ := r.start("dc2", "ctl-dc2")
	testenv.Eventually(t, wait, func() (bool, string) { return ctl.Status().Leading, "not leading" })
	r.dc1.Stop()
	testenv.Eventually(t, wait, func() (bool, string) {
		s := ctl.Status()
		return s.Health["dc1"].State == "down" && strings.Contains(s.Decision.Reason, "failover after 30s"),
			fmt.Sprintf("dc1 %s, decision %q", s.Health["dc1"].State, s.Decision.Reason)
	})
	r.dc1.Start()
	testenv.Eventually(t, wait, func() (bool, string) { return ctl.Status().Health["dc1"].State == "up", "dc1 not up again" })
	if got := primary.Read(context.Background(), r.c2, r.cfg.Keys().Primary()); got.Record != nil {
		t.Fatalf("a short outage caused a failover: %+v", got.Record)
	}
}

// A paused leader does not fail over however long the primary is down; once resumed, it does.
func TestPauseHoldsAutomaticFailover(t *testing.T) {
	r := newRig(t, "auto", time.Second)
	ctl, _ := r.start("dc2", "ctl-dc2")
	testenv.Eventually(t, wait, func() (bool, string) { return ctl.Status().Leading, "not leading" })
	if err := ctl.SetPaused(context.Background(), true, "test"); err != nil {
		t.Fatal(err)
	}
	r.dc1.Stop()
	testenv.Eventually(t, wait, func() (bool, string) {
		s := ctl.Status()
		return s.Health["dc1"].DownFor(time.Now()) > 3*r.cfg.Failover.After && s.Decision.Reason == "paused: no automatic failover",
			fmt.Sprintf("dc1 down for %s, decision %q", s.Health["dc1"].DownFor(time.Now()), s.Decision.Reason)
	})
	if got := primary.Read(context.Background(), r.c2, r.cfg.Keys().Primary()); got.Record != nil {
		t.Fatalf("a paused controller failed over: %+v", got.Record)
	}
	if err := ctl.SetPaused(context.Background(), false, "test"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() (bool, string) {
		got := primary.Read(context.Background(), r.c2, r.cfg.Keys().Primary())
		return got.Record != nil && got.Record.Epoch == 1, "no failover after resume"
	})
}

// SIGHUP's reload: failover settings change at once; a change that needs a restart is refused whole.
func TestReloadChangesFailoverSettings(t *testing.T) {
	r := newRig(t, "manual", time.Second)
	ctl, _ := r.start("dc2", "ctl-dc2")
	testenv.Eventually(t, wait, func() (bool, string) { return ctl.Status().Leading, "not leading" })
	r.dc1.Stop()
	testenv.Eventually(t, wait, func() (bool, string) {
		s := ctl.Status()
		return s.Health["dc1"].DownFor(time.Now()) > 2*r.cfg.Failover.After && strings.Contains(s.Decision.Reason, "mode is manual"),
			fmt.Sprintf("decision %q", s.Decision.Reason)
	})

	parse := func(yaml string) func() (*config.Config, error) {
		return func() (*config.Config, error) { return config.Parse([]byte(yaml)) }
	}
	if err := ctl.Reload(parse(strings.Replace(strings.Replace(r.yaml, "mode: manual", "mode: auto", 1), "cluster: t", "cluster: other", 1))); err == nil || !strings.Contains(err.Error(), "need a restart") {
		t.Fatalf("a reload that renames the cluster: %v", err)
	}
	if ctl.config().Failover.Mode != "manual" {
		t.Fatal("a refused reload changed the mode")
	}

	if err := ctl.Reload(parse("cluster: [")); err == nil {
		t.Fatal("a config that does not parse was reloaded")
	}
	if err := ctl.Reload(parse(strings.Replace(r.yaml, "mode: manual", "mode: auto", 1))); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() (bool, string) {
		got := primary.Read(context.Background(), r.c2, r.cfg.Keys().Primary())
		return got.Record != nil && got.Record.Epoch == 1, "no failover after mode auto was reloaded"
	})
}

// A primary record in the DR etcd that is not a record (hand-edited, truncated) stops the leader from
// acting on it: no mirror writes, no failover even with the primary DC gone; the problem is in its status
// and in `topoha status`; and once it is fixed by hand, mirroring resumes.
func TestGarbagePrimaryRecordStopsTheLeader(t *testing.T) {
	r := newRig(t, "auto", time.Second)
	key := r.cfg.Keys().Primary()
	r.put(r.c2, key, "{not a record")
	r.put(r.c1, "/vt/keyspaces/commerce/Keyspace", "ks")
	ctl, _ := r.start("dc2", "ctl-b")
	testenv.Eventually(t, wait, func() (bool, string) {
		s := ctl.Status()
		return s.Leading && strings.Contains(s.Problem, "primary record"), fmt.Sprintf("leading %v, problem %q", s.Leading, s.Problem)
	})
	r.waitAnnounced(ctl, r.c2, PhaseBlocked)
	st := clusterstatus.Read(context.Background(), r.cfg, map[string]*clientv3.Client{"dc1": r.c1, "dc2": r.c2})
	if !strings.Contains(strings.Join(st.Warnings, "\n"), "primary record") {
		t.Errorf("status warnings lack the garbage record: %q", st.Warnings)
	}
	if st.Leader == nil || st.Leader.Phase != string(PhaseBlocked) {
		t.Errorf("status shows the leader as %+v, want it blocked", st.Leader)
	}
	r.dc1.Stop()
	testenv.Eventually(t, wait, func() (bool, string) {
		return ctl.Status().Health["dc1"].DownFor(time.Now()) > 3*r.cfg.Failover.After, "dc1 not down long enough yet"
	})
	if got := testenv.Snapshot(t, r.c2, "/vt/"); len(got) != 0 {
		t.Errorf("the leader mirrored under a garbage primary record: %v", got)
	}
	if got, _ := r.c2.Get(context.Background(), key); string(got.Kvs[0].Value) != "{not a record" {
		t.Errorf("the garbage record was overwritten: %q", got.Kvs[0].Value)
	}
	r.dc1.Start()
	if _, err := r.c2.Delete(context.Background(), key); err != nil { // the operator's fix
		t.Fatal(err)
	}
	r.waitEqual(r.c1, r.c2)
}

// A controller that does not lead computes a plan on request and keeps it for one discovery interval:
// dashboards polling every controller's GET /plan share one read of the DR etcd's topology, concurrent
// requests included.
func TestFollowerPlanIsSharedByRequests(t *testing.T) {
	r := newRig(t, "manual", time.Second)
	a, _ := r.start("dc1", "ctl-a")
	b, _ := r.start("dc2", "ctl-b")
	var follower *Controller
	testenv.Eventually(t, wait, func() (bool, string) {
		switch {
		case a.Status().Leading:
			follower = b
		case b.Status().Leading:
			follower = a
		}
		return follower != nil, "no leader yet"
	})
	plans := make(chan *discovery.Plan, 8)
	var wg sync.WaitGroup
	for range cap(plans) {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			p, err := follower.PlanOnRequest(ctx)
			if err != nil {
				t.Error(err)
			}
			plans <- p
		})
	}
	wg.Wait()
	close(plans)
	first := <-plans
	for p := range plans {
		if p != first {
			t.Fatalf("concurrent requests computed plans of their own: %p and %p", first, p)
		}
	}
	if first == nil || first.To != "dc2" || len(first.Shards) != 1 {
		t.Fatalf("follower's plan: %+v", first)
	}
}
