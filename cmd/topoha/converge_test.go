package main

// A failover finishes whoever dies: controllers as processes, the converging one killed (kill -9, its
// promote commands with it) in the middle of the promotions.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/keys"
	"github.com/topoha/topoha/vitess"
)

// convergeConfig is runConfig in auto mode with shards commerce/0..n-1, each promoted in dc2 by the fake
// promote program, which takes delay per run, runs with its -modes set to modes (a template) and logs each
// shard's runs to its own file in logDir.
func convergeConfig(t *testing.T, d *dcs, n int, delay time.Duration, modes string) (config, logDir string) {
	t.Helper()
	config = runConfig(t, d)
	logDir = t.TempDir()
	var shards []string
	for i := range n {
		shard := fmt.Sprint(i)
		shards = append(shards, fmt.Sprintf(`{keyspace: commerce, shard: %q, tablets: {dc1: dc1-%010d, dc2: dc2-%010d}}`, shard, 100+i, 200+i))
		for _, dc := range []string{"dc1", "dc2"} {
			d.SetShardPrimary(dc, "commerce", shard, vitess.TabletAlias{Cell: "dc1", UID: uint32(100 + i)})
		}
	}
	editConfig(t, config, "failover: {mode: manual}\n", fmt.Sprintf(`failover:
  mode: auto
  allow_two_site_auto: true
  after: 1s
  promote_timeout: 20s
  retry_max_backoff: 1s
  promote_command: %s
  shards: [%s]
`, d.FakePromote(logDir+"/{{.Shard}}.log", "-delay", delay.String(), "-modes", modes), strings.Join(shards, ", ")))
	return config, logDir
}

// promoteRuns reads each shard's fake promote log: one line per run, written when the run starts.
func promoteRuns(t *testing.T, logDir string, n int) []int {
	t.Helper()
	runs := make([]int, n)
	for i := range n {
		data, err := os.ReadFile(filepath.Join(logDir, fmt.Sprintf("%d.log", i)))
		if err == nil {
			runs[i] = strings.Count(string(data), "\n")
		}
	}
	return runs
}

// dc1's etcd and its controller are lost; the dc2 controller that converges the failover dies with its
// promote commands while they run. The other dc2 controller takes the convergence lock when the dead
// one's lease expires, and every shard ends with its primary in dc2, each promoted by one completed run.
func TestFailoverFinishesWhenItsConvergerDies(t *testing.T) {
	t.Parallel()
	const n = 4
	d := startDCs(t)
	config, logDir := convergeConfig(t, d, n, 2*time.Second, "ok")
	procs := map[string]*testenv.Process{}
	for id, dc := range map[string]string{"ctl-a": "dc1", "ctl-b": "dc2", "ctl-c": "dc2"} {
		procs[id] = startController(t, config, dc, id)
	}
	d.leaderID(t, "")
	d.waitEqual(t)

	d.dc1.Stop()
	procs["ctl-a"].Kill()
	lock := keys.For("t").Converger()
	var holder string
	testenv.Eventually(t, waitLong, func() (bool, string) {
		l, err := election.CurrentLeader(ctxT(t), d.c2, lock)
		if err != nil || l == nil {
			return false, fmt.Sprintf("nobody holds the convergence lock: %v", err)
		}
		holder = l.ID
		runs := promoteRuns(t, logDir, n)
		return runs[0]+runs[1]+runs[2]+runs[3] > 0, fmt.Sprintf("no promote command started yet: %v", runs)
	})
	killed := time.Now()
	procs[holder].KillWithChildren()
	survivor := map[string]string{"ctl-b": "ctl-c", "ctl-c": "ctl-b"}[holder]

	var res *failover.Result
	testenv.Eventually(t, waitLong, func() (bool, string) {
		got := failover.ReadResult(ctxT(t), d.c2, keys.For("t").LastFailover())
		res = got.Record
		return res != nil && !res.ConvergedAt.IsZero(), fmt.Sprintf("not converged: %+v", got)
	})
	took := res.ConvergedAt.Sub(killed)
	runs := promoteRuns(t, logDir, n)
	t.Logf("converger %s killed with its promote commands -> every shard confirmed by %s: %s; promote runs per shard %v",
		holder, survivor, took.Round(time.Millisecond), runs)
	if res.Outcome != failover.ResultSuccess || res.Epoch != 1 {
		t.Errorf("result %s at epoch %d", res.Outcome, res.Epoch)
	}
	p, err := failover.ReadProgress(ctxT(t), d.c2, keys.For("t"), waitLong)
	if err != nil || p == nil {
		t.Fatalf("progress: %v", err)
	}
	for i, s := range p.Shards {
		// A run killed with the converger never got to promote (each takes 2s): at most one more ran.
		if s.State != failover.ShardConfirmed || runs[i] < 1 || runs[i] > 2 {
			t.Errorf("commerce/%s: %s after %d promote runs", s.Shard, s.State, runs[i])
		}
		if got := shardPrimaryIn(t, d, s.Shard); got != fmt.Sprintf("dc2-%010d", 200+i) {
			t.Errorf("commerce/%s primary in dc2 = %s", s.Shard, got)
		}
	}
	// Nothing is promoted again once confirmed: a few more intervals change nothing.
	time.Sleep(time.Second)
	if again := promoteRuns(t, logDir, n); fmt.Sprint(again) != fmt.Sprint(runs) {
		t.Errorf("promote runs went from %v to %v after convergence", runs, again)
	}
	if st := status(t, config); st.Unfinished != nil {
		t.Errorf("status still shows an unfinished failover: %+v", st.Unfinished)
	}
	stopWithSIGTERM(t, procs[survivor])
}

// shardPrimaryIn reads commerce/shard's primary from dc2's Shard record.
func shardPrimaryIn(t *testing.T, d *dcs, shard string) string {
	t.Helper()
	resp, err := d.c2.Get(ctxT(t), vitess.ShardKey("/vt", "commerce", shard))
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("Shard record of commerce/%s: %v", shard, err)
	}
	a, _, err := vitess.ShardPrimary(resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return a.String()
}

// A shard whose promotion keeps failing: a person holds it with topoha pause --shard, promotes a tablet by
// hand, and the converger confirms it without running its command again.
func TestAPersonTakesOverAShard(t *testing.T) {
	t.Parallel()
	d := startDCs(t)
	config, logDir := convergeConfig(t, d, 2, 0, `{{if eq .Shard "1"}}fail{{else}}ok{{end}}`)
	procs := startControllers(t, d, config)
	d.leaderID(t, "")
	d.waitEqual(t)
	d.dc1.Stop()
	procs["ctl-a"].Kill()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st := status(t, config)
		return st.Unfinished != nil && len(st.Unfinished.Unconfirmed) == 1 && st.Unfinished.Unconfirmed[0].State == failover.ShardFailed,
			fmt.Sprintf("unfinished %+v", st.Unfinished)
	})
	cli := func(args ...string) (int, string) {
		code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), append(args, "--config", config)...)
		return code, out + errOut
	}
	for _, bad := range [][]string{{"pause", "--shard", "commerce"}, {"pause", "--shard", "commerce/0"}, {"resume", "--shard", "commerce/1"},
		{"resume", "--reason", "x"}} {
		if code, out := cli(bad...); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", bad, code, out)
		}
	}
	if code, out := cli("pause", "--shard", "commerce/1", "--reason", "promoting dc2-0000000201 by hand"); code != 0 || !strings.Contains(out, "commerce/1 is held") {
		t.Fatalf("pause --shard: exit %d: %s", code, out)
	}
	var before int
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st := status(t, config)
		before = promoteRuns(t, logDir, 2)[1]
		u := st.Unfinished
		return u != nil && u.Unconfirmed[0].State == failover.ShardHeld && strings.Contains(u.Unconfirmed[0].LastError, "by hand"),
			fmt.Sprintf("unfinished %+v", u)
	})
	d.Promote("dc2", "commerce/1", "dc2-0000000201")
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st := status(t, config)
		return st.Unfinished == nil && st.LastFailover != nil && !st.LastFailover.ConvergedAt.IsZero(), fmt.Sprintf("unfinished %+v", st.Unfinished)
	})
	// An attempt may have been under way when the hold came; none starts after it.
	if runs := promoteRuns(t, logDir, 2); runs[1] > before {
		t.Errorf("commerce/1 was run %d times after it was held (%d before)", runs[1]-before, before)
	}
	for _, p := range procs {
		if !p.Exited() {
			stopWithSIGTERM(t, p)
		}
	}
}
