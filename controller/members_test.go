package controller

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/primary"
)

// memberTestAfter is failover.after in the tests of one member's faults. A raft leader lost or restarted
// leaves its cluster without a leader, so that no member serves, until the others elect one: within the
// election timeout (200 ms here) when the machine is idle, but over a second on a loaded one. A failover
// must wait longer than any election, in production too (failover.after 30 s against etcd's 1 s).
const memberTestAfter = 3 * time.Second

// leadingAndMirroring starts a controller in each DC and waits until one of them leads with its mirror
// caught up; it returns that leader and its full syncs so far.
func leadingAndMirroring(t *testing.T, r *rig) (*Controller, map[string]uint64) {
	t.Helper()
	ctls := []*Controller{}
	for _, dc := range []string{"dc1", "dc2"} {
		ctl, _ := r.start(dc, "ctl-"+dc)
		ctls = append(ctls, ctl)
	}
	r.put(r.c1, "/vt/keyspaces/commerce/Keyspace", "k")
	r.waitEqual(r.c1, r.c2)
	var leader Status
	var ctl *Controller
	testenv.Eventually(t, wait, func() (bool, string) {
		for _, c := range ctls {
			if s := c.Status(); s.Leading && s.Mirror != nil && s.Mirror.LagRevisions() == 0 {
				leader, ctl = s, c
				return true, ""
			}
		}
		return false, "no controller leads with its mirror caught up"
	})
	return ctl, leader.Mirror.Resyncs
}

// noFailoverWhile fails the test if, for failover.after and 1 s more, anything happens to the leader: a
// failover, a lost term, or a full resync. Meanwhile it writes and deletes in the primary.
func noFailoverWhile(t *testing.T, r *rig, ctl *Controller, resyncs map[string]uint64, what string) {
	t.Helper()
	end := time.Now().Add(r.cfg.Failover.After + time.Second)
	for i := 0; time.Now().Before(end); i++ {
		key := fmt.Sprintf("/vt/during/%s/%d", strings.ReplaceAll(what, " ", "-"), i)
		// A write in flight when a raft leader dies can time out, as Vitess's own would: retry it.
		testenv.Eventually(t, wait, func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := r.c1.Put(ctx, key, "v")
			if err == nil && i%2 == 1 {
				_, err = r.c1.Delete(ctx, key)
			}
			return err == nil, fmt.Sprintf("%s: write %s in dc1: %v", what, key, err)
		})
		s := ctl.Status()
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		got := primary.Read(rctx, r.c2, r.cfg.Keys().Primary())
		cancel()
		if got.Record != nil {
			t.Fatalf("%s: failed over: %+v (decision %q)", what, got.Record, s.Decision.Reason)
		}
		if !s.Leading {
			t.Fatalf("%s: the leader lost its term (problem %q)", what, s.Problem)
		}
		if s.Mirror != nil && !maps.Equal(s.Mirror.Resyncs, resyncs) {
			t.Fatalf("%s: full resyncs %v, before %v", what, s.Mirror.Resyncs, resyncs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.waitEqual(r.c1, r.c2)
}

// The raft leader of either DC's 3-member cluster stopped, and a rolling restart of the primary's (each
// member stopped and started in turn): no failover, no lost term, no full resync, and the copy keeps up.
// The chaos suite restarts every member of both DCs.
func TestMemberLossIsNoDCLoss(t *testing.T) {
	r := newRig(t, "auto", memberTestAfter)
	ctl, resyncs := leadingAndMirroring(t, r)
	for _, dc := range []*testenv.Cluster{r.dc1, r.dc2} {
		leader := dc.WaitLeader()
		dc.StopMember(leader)
		noFailoverWhile(t, r, ctl, resyncs, dc.Members()[0].Name()+" raft leader stopped")
		dc.StartMember(leader)
	}
	for i := range r.dc1.Members() {
		r.dc1.StopMember(i)
		noFailoverWhile(t, r, ctl, resyncs, fmt.Sprintf("dc1 rolling restart, member %d down", i))
		r.dc1.StartMember(i)
	}
}

// A member blackholed (it accepts connections and never answers), or cut off from its peers while it
// still accepts clients, is not a DC loss either.
func TestHungOrIsolatedMemberIsNoDCLoss(t *testing.T) {
	r := newRig(t, "auto", memberTestAfter)
	ctl, resyncs := leadingAndMirroring(t, r)
	r.dc1.Blackhole(0)
	noFailoverWhile(t, r, ctl, resyncs, "dc1 member 0 blackholed")
	r.dc1.Unblackhole(0)
	if r.dc1.CanIsolate() {
		r.dc2.Isolate(2)
		noFailoverWhile(t, r, ctl, resyncs, "dc2 member 2 cut off from its peers")
		r.dc2.Rejoin(2)
	}
	// Each member of the election's cluster in turn: the leader's lease refresh must not sit on it.
	for i := range r.dc2.Members() {
		r.dc2.Blackhole(i)
		noFailoverWhile(t, r, ctl, resyncs, fmt.Sprintf("dc2 member %d blackholed", i))
		r.dc2.Unblackhole(i)
	}
}

// The primary's cluster loses its quorum while one member still accepts connections: that is a DC loss,
// and the failover comes after failover.after.
func TestQuorumLossFailsOver(t *testing.T) {
	r := newRig(t, "auto", time.Second)
	ctl, _ := leadingAndMirroring(t, r)
	lost := time.Now()
	r.dc1.StopMember(0)
	r.dc1.StopMember(1)
	res := waitFailedOver(t, r, ctl)
	t.Logf("quorum lost -> failover decided: %s (failover.after %s)", res.StartedAt.Sub(lost).Round(time.Millisecond), r.cfg.Failover.After)
	if got := ctl.Status().Health["dc1"]; got.State != health.Down || !strings.Contains(got.LastError, "no member serves") {
		t.Errorf("dc1 health after losing its quorum: %+v", got)
	}
}

// waitFailedOver waits until a failover to dc2 at epoch 1 has stored its result in dc2's etcd, whichever
// controller carried it out, and returns the result.
func waitFailedOver(t *testing.T, r *rig, ctl *Controller) *failover.Result {
	t.Helper()
	var res *failover.Result
	testenv.Eventually(t, wait, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		res = failover.ReadResult(ctx, r.c2, r.cfg.Keys().LastFailover()).Record
		return res != nil && res.Epoch == 1 && res.Decision.To == "dc2", fmt.Sprintf("no failover to dc2 stored; decision here %q", ctl.Status().Decision.Reason)
	})
	return res
}

// A NOSPACE alarm in either DC is no failover. In the primary, the leader says why it does not fail over;
// in the DR side, the mirror stalls and says so. After compact, defrag and disarm the copy is equal again,
// without a full resync.
func TestNoSpaceIsNoFailover(t *testing.T) {
	r := newRig(t, "auto", memberTestAfter, testenv.WithQuota(4<<20))
	ctl, resyncs := leadingAndMirroring(t, r)

	testenv.FillUntilNoSpace(t, r.dc1.RootClient(), "/fill/")
	testenv.Eventually(t, wait, func() (bool, string) {
		s := ctl.Status()
		return s.Health["dc1"].State == health.Degraded && strings.Contains(s.Decision.Reason, "dc1 etcd is degraded: NOSPACE"),
			fmt.Sprintf("dc1 %s, decision %q", s.Health["dc1"].State, s.Decision.Reason)
	})
	holdFor := time.Now().Add(r.cfg.Failover.After + 2*time.Second)
	for time.Now().Before(holdFor) {
		if got := primary.Read(context.Background(), r.c2, r.cfg.Keys().Primary()); got.Record != nil {
			t.Fatalf("NOSPACE in the primary failed over: %+v", got.Record)
		}
		time.Sleep(100 * time.Millisecond)
	}
	testenv.ClearNoSpace(t, r.dc1, "/fill/")
	r.put(r.c1, "/vt/after-dc1-nospace", "v")
	r.waitEqual(r.c1, r.c2)

	testenv.FillUntilNoSpace(t, r.dc2.RootClient(), "/fill/")
	r.put(r.c1, "/vt/while-dc2-is-full", "v")
	testenv.Eventually(t, wait, func() (bool, string) {
		s := ctl.Status()
		return s.Health["dc2"].State == health.Degraded && s.Mirror != nil && strings.Contains(s.Mirror.LastError, "database space exceeded"),
			fmt.Sprintf("dc2 %s, mirror %+v", s.Health["dc2"].State, s.Mirror)
	})
	testenv.ClearNoSpace(t, r.dc2, "/fill/")
	r.waitEqual(r.c1, r.c2)
	s := ctl.Status()
	if got := primary.Read(context.Background(), r.c2, r.cfg.Keys().Primary()); got.Record != nil {
		t.Fatalf("NOSPACE in the DR side failed over: %+v", got.Record)
	}
	if !s.Leading || !maps.Equal(s.Mirror.Resyncs, resyncs) {
		t.Errorf("after the alarms: leading %v, full resyncs %v (before %v)", s.Leading, s.Mirror.Resyncs, resyncs)
	}
}

// The other layout: one endpoint per DC, a VIP spreading connections over the members. A dead member
// behind it breaks the connections it held; they are dialed again, to another member, and nothing fails
// over. The DC's quorum lost behind the VIP is a DC loss.
func TestMemberLossBehindAVIP(t *testing.T) {
	r := newVIPRig(t, "auto", memberTestAfter)
	ctl, resyncs := leadingAndMirroring(t, r)
	for _, dc := range []*testenv.Cluster{r.dc1, r.dc2} {
		for i := range dc.Members() {
			dc.StopMember(i)
			noFailoverWhile(t, r, ctl, resyncs, fmt.Sprintf("%s member %d stopped behind the VIP", dc.Members()[0].Name(), i))
			dc.StartMember(i)
		}
	}
	r.dc1.StopMember(0)
	r.dc1.StopMember(1)
	waitFailedOver(t, r, ctl)
}
