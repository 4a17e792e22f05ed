package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/keys"
)

// With authentication on in both DCs, and topoha's user holding exactly the grants docs/operations.md
// lists (no root role), dc1's etcd is lost. The failover is decided and its converger killed with its
// promote commands; a dc2 controller started during the loss finishes it. While dc1 stays down, status
// exits 1 and shows the new primary, history shows the failover, plan and pause answer from dc2.
func TestAuthDCLossLeastPrivilege(t *testing.T) {
	t.Parallel()
	const n = 2
	d := startDCs(t, testenv.WithAuth())
	config, logDir := convergeConfig(t, d, n, 2*time.Second, "ok")
	procs := map[string]*testenv.Process{"ctl-a": startController(t, config, "dc1", "ctl-a"), "ctl-b": startController(t, config, "dc2", "ctl-b")}
	d.leaderID(t, "")
	d.waitEqual(t)

	// Only dc1's etcd is lost: ctl-a still reaches dc2, leads there and decides the failover; ctl-b
	// converges it, and dies with its promote commands.
	d.dc1.Stop()
	lock := keys.For("t").Converger()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		l, err := election.CurrentLeader(ctxT(t), d.c2, lock)
		runs := promoteRuns(t, logDir, n)
		return err == nil && l != nil && l.ID == "ctl-b" && runs[0]+runs[1] > 0,
			fmt.Sprintf("ctl-b holds no convergence lock with a promote command running: %+v, %v, runs %v", l, err, runs)
	})
	procs["ctl-b"].KillWithChildren()
	procs["ctl-b2"] = startController(t, config, "dc2", "ctl-b2")
	apiAddr(t, procs["ctl-b2"])

	var res *failover.Result
	testenv.Eventually(t, waitLong, func() (bool, string) {
		got := failover.ReadResult(ctxT(t), d.c2, keys.For("t").LastFailover())
		res = got.Record
		return res != nil && !res.ConvergedAt.IsZero(), fmt.Sprintf("not converged: %+v", got)
	})
	if res.Outcome != failover.ResultSuccess || res.Decision.To != "dc2" {
		t.Errorf("result %s to %s", res.Outcome, res.Decision.To)
	}
	for i := range n {
		if got := shardPrimaryIn(t, d, fmt.Sprint(i)); got != fmt.Sprintf("dc2-%010d", 200+i) {
			t.Errorf("commerce/%d primary in dc2 = %s", i, got)
		}
	}

	code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "status", "--config", config)
	if code != exitStatusAttention || !strings.Contains(out, "dc2") || !strings.Contains(out, "CHECK") {
		t.Errorf("status during the loss: exit %d\n%s%s", code, out, errOut)
	}
	if st := status(t, config); st.Primary.DC != "dc2" || st.Primary.Epoch != 1 || st.DCs["dc2"].State != "up" {
		t.Errorf("status --json during the loss: primary %+v, dc2 %+v", st.Primary, st.DCs["dc2"])
	}
	code, out, errOut = testenv.RunProcess(t, waitLong, testenv.Binary(t), "history", "--config", config)
	if code != exitOK || !strings.Contains(out, "failover") {
		t.Errorf("history during the loss: exit %d\n%s%s", code, out, errOut)
	}
	if code, p := planJSON(t, config, "--to", "dc2"); code == exitBadConfig || p == nil {
		t.Errorf("plan --to dc2 during the loss: exit %d", code)
	}
	for _, cmd := range []string{"pause", "resume"} {
		if code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), cmd, "--config", config); code != exitOK {
			t.Errorf("%s during the loss: exit %d\n%s%s", cmd, code, out, errOut)
		}
	}
	stopWithSIGTERM(t, procs["ctl-b2"])
	stopWithSIGTERM(t, procs["ctl-a"])
}

// A user that etcd knows but whose role is gone: run and mirror stop at start (exit 2) naming the
// field and the grant it lacks, before anything starts; status says which DC refused it, and never calls
// that DC down.
func TestAuthUserWithoutRoleRefusedAtStart(t *testing.T) {
	t.Parallel()
	d := startDCs(t, testenv.WithAuth())
	config := runConfig(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := d.Root["dc1"].UserRevokeRole(ctx, testenv.User, testenv.User); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"run", "--dc", "dc2"}, {"mirror"}} {
		code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), append(args, "--config", config)...)
		if code != exitBadConfig || !strings.Contains(errOut, "dcs.dc1.etcd.username") || !strings.Contains(errOut, "permission denied") ||
			!strings.Contains(errOut, "docs/operations.md#etcd-permissions") {
			t.Errorf("%s with a user without its role: exit %d\n%s%s", args[0], code, out, errOut)
		}
	}
	st := status(t, config)
	if dc1 := st.DCs["dc1"]; dc1.State != "degraded" || !strings.Contains(dc1.Refused, "permission denied") {
		t.Errorf("status: dc1 %+v", dc1)
	}
}

// etcd's tokens expire (simple tokens after --auth-token-ttl unused, 1 s here): the leader keeps its term
// and the mirror its watch across many expiries, renewing tokens without a restart.
func TestTokensExpireWithoutALostTerm(t *testing.T) {
	t.Parallel()
	d := startDCs(t, testenv.WithAuth(), testenv.WithEtcd(testenv.WithAuthTokenTTL(time.Second)))
	config := runConfig(t, d)
	ctl := startController(t, config, "dc1", "ctl-a")
	d.leaderID(t, "")
	d.waitEqual(t)
	// The term's value is first written by the campaign, and from the first announced phase on carries
	// the time the term began: that is the one to hold.
	var l *election.Leader
	testenv.Eventually(t, waitLong, func() (bool, string) {
		var err error
		l, err = election.CurrentLeader(ctxT(t), d.c2, electionPrefix)
		return err == nil && l != nil && l.Phase != "", fmt.Sprintf("no leader that announced a phase: %+v, %v", l, err)
	})
	// Idle long enough for every token to expire several times over, while the term must hold.
	end := time.Now().Add(6 * time.Second)
	testenv.Eventually(t, waitLong, func() (bool, string) {
		now, err := election.CurrentLeader(ctxT(t), d.c2, electionPrefix)
		if err != nil || now == nil || now.Since != l.Since {
			t.Fatalf("the term ended while tokens expired: %+v then %+v, %v", l, now, err)
		}
		return time.Now().After(end), "tokens still expiring"
	})
	// d.c1 (a client as topoha makes them) sat idle meanwhile: its token has expired, and the put renews it.
	// etcd 3.4 answered the renewal "invalid auth token" and client v3.7 retried it for ever (config's
	// lazyAuthentication).
	mustPut(t, d.c1, "/vt/after-expiry", "v")
	d.waitEqual(t)
	if code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "history", "--config", config); code != exitOK {
		t.Errorf("history with expired tokens: exit %d\n%s%s", code, out, errOut)
	}
	stopWithSIGTERM(t, ctl)
}
