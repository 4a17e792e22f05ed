package failover

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/primary"
)

// Tests of convergence after the epoch bump: every shard ends with its primary in the new primary DC,
// whichever converger dies and whichever attempts fail, and no confirmed shard is promoted again.

const wait = 60 * time.Second

// bump starts the failover (the epoch bump and its progress record) and returns the record it wrote.
func (r *rig) bump(t *testing.T) primary.Record {
	t.Helper()
	p, err := r.executor(t).Execute(ctxT(t), decision, primary.Read(ctxT(t), r.clients["dc2"], r.cfg.Keys().Primary()))
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	return primary.Record{DC: "dc2", Epoch: p.Epoch}
}

// convergerRun runs a Converger of controller id following rec until the returned stop is called (as a
// controller stopped by a signal: it resigns the lock) or the test ends.
func (r *rig) convergerRun(t *testing.T, id string, rec primary.Record, paused *atomic.Bool) (stop func()) {
	t.Helper()
	c := r.converger(t, id, rec, paused)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	c.Kick()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

func (r *rig) progress(t *testing.T) *Progress {
	t.Helper()
	p, err := ReadProgress(ctxT(t), r.clients["dc2"], r.cfg.Keys(), 10*time.Second)
	if err != nil || p == nil {
		t.Fatalf("progress: %+v, %v", p, err)
	}
	return p
}

// waitConverged waits until the failover's result says every shard has its primary, and returns it.
func (r *rig) waitConverged(t *testing.T) *Result {
	t.Helper()
	var res *Result
	testenv.Eventually(t, wait, func() (bool, string) {
		got := ReadResult(ctxT(t), r.clients["dc2"], r.cfg.Keys().LastFailover())
		res = got.Record
		if res == nil || res.ConvergedAt.IsZero() {
			return false, fmt.Sprintf("not converged: %+v", r.progress(t).Shards)
		}
		return true, ""
	})
	if res.Outcome != ResultSuccess || len(res.FailedShards()) != 0 {
		t.Errorf("converged result %s, failed %v", res.Outcome, res.FailedShards())
	}
	return res
}

// A shard whose promote command fails its first attempts and works later converges with no human, after
// the first result named it failed.
func TestFailedShardIsRetriedUntilItHasItsPrimary(t *testing.T) {
	r := newRig(t, `{{if eq .Shard "-80"}}fail,fail,fail,fail,ok{{else}}ok{{end}}`, 2*time.Second)
	r.cfg.Failover.RetryMaxBackoff = 200 * time.Millisecond
	r.convergerRun(t, "ctl-b", r.bump(t), nil)
	res := r.waitConverged(t)
	if !res.FinishedAt.Before(res.ConvergedAt) {
		t.Errorf("first result at %s, converged at %s: the result must be recorded after the first attempts, before convergence", res.FinishedAt, res.ConvergedAt)
	}
	for shard, want := range map[string]int{"-80": 5, "80-": 1} {
		if got := len(r.runs(t, shard)); got != want {
			t.Errorf("commerce/%s: %d promote runs, want %d: %q", shard, got, want, r.runs(t, shard))
		}
	}
	if s, _ := r.progress(t).Shard("commerce/-80"); s.State != ShardConfirmed || s.Attempts != 5 {
		t.Errorf("commerce/-80 progress %+v", s)
	}
}

// While paused, a shard that had its first attempts is not retried; a person can hold one shard and
// promote it by hand, and the converger confirms it without running its command.
func TestPauseStopsRetriesAndAHeldShardIsLeftToAPerson(t *testing.T) {
	r := newRig(t, `{{if eq .Shard "-80"}}fail,fail,fail,ok{{else}}fail{{end}}`, 2*time.Second)
	r.cfg.Failover.RetryMaxBackoff = 200 * time.Millisecond
	var paused atomic.Bool
	paused.Store(true)
	r.convergerRun(t, "ctl-b", r.bump(t), &paused)
	testenv.Eventually(t, wait, func() (bool, string) {
		p := r.progress(t)
		return p.Reported, fmt.Sprintf("first attempts not done: %+v", p.Shards)
	})
	// Paused: no fourth attempt, however long we wait; the back-off would allow one every 200ms.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if n := len(r.runs(t, "-80")); n != 3 {
			t.Fatalf("commerce/-80 was run %d times while paused", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	by := "cli:alice@host"
	if _, err := HoldShard(ctxT(t), r.clients["dc2"], r.cfg.Keys(), 10*time.Second, "commerce/80-", true, by, "promoting by hand"); err != nil {
		t.Fatal(err)
	}
	if _, err := HoldShard(ctxT(t), r.clients["dc2"], r.cfg.Keys(), 10*time.Second, "commerce/nope", true, by, ""); err == nil ||
		!strings.Contains(err.Error(), "covers commerce/-80, commerce/80-") {
		t.Errorf("holding a shard the failover does not cover: %v", err)
	}
	paused.Store(false)
	testenv.Eventually(t, wait, func() (bool, string) {
		s, _ := r.progress(t).Shard("commerce/-80")
		return s.State == ShardConfirmed, fmt.Sprintf("-80 after resume: %+v", s)
	})
	if s, _ := r.progress(t).Shard("commerce/80-"); s.State != ShardHeld || len(r.runs(t, "80-")) != 3 {
		t.Fatalf("the held shard: %+v, %d runs", s, len(r.runs(t, "80-")))
	}
	// The person promotes it; the converger confirms it from the topo.
	r.d.Promote("dc2", "commerce/80-", "dc2-0000000201")
	r.waitConverged(t)
	if n := len(r.runs(t, "80-")); n != 3 {
		t.Errorf("commerce/80- promote runs = %d after it was held, want the 3 from before", n)
	}
	if _, err := HoldShard(ctxT(t), r.clients["dc2"], r.cfg.Keys(), 10*time.Second, "commerce/80-", false, by, ""); err == nil {
		t.Error("resuming a shard of a converged failover was accepted")
	}
}

// Two controllers that each run a converger: the lock lets one promote, and each shard is promoted once.
func TestTwoConvergersPromoteEachShardOnce(t *testing.T) {
	r := newRig(t, "ok", 10*time.Second, "-delay", "500ms")
	rec := r.bump(t)
	r.convergerRun(t, "ctl-b", rec, nil)
	r.convergerRun(t, "ctl-c", rec, nil)
	r.waitConverged(t)
	for _, shard := range []string{"-80", "80-"} {
		if runs := r.runs(t, shard); len(runs) != 1 {
			t.Errorf("commerce/%s promoted %d times: %q", shard, len(runs), runs)
		}
	}
}

// A converger that stops mid-failover (its promote command killed with it) leaves the lock; the next
// one re-confirms what was confirmed, never runs it again, and finishes the rest.
func TestTheNextConvergerResumesWithoutPromotingAgain(t *testing.T) {
	r := newRig(t, `{{if eq .Shard "-80"}}ok{{else}}hang,ok{{end}}`, 30*time.Second)
	rec := r.bump(t)
	stopB := r.convergerRun(t, "ctl-b", rec, nil)
	testenv.Eventually(t, wait, func() (bool, string) {
		s, _ := r.progress(t).Shard("commerce/-80")
		return s.State == ShardConfirmed && len(r.runs(t, "80-")) == 1, fmt.Sprintf("-80 %s, 80- runs %d", s.State, len(r.runs(t, "80-")))
	})
	stopB()
	if s, _ := r.progress(t).Shard("commerce/80-"); s.State != ShardPending || s.Attempts != 1 {
		t.Fatalf("80- after its converger stopped mid-attempt: %+v", s)
	}
	r.convergerRun(t, "ctl-c", rec, nil)
	r.waitConverged(t)
	if runs := r.runs(t, "-80"); len(runs) != 1 {
		t.Errorf("the confirmed commerce/-80 was promoted again: %q", runs)
	}
	if runs := r.runs(t, "80-"); len(runs) != 2 || !strings.HasPrefix(runs[1], "ok ") {
		t.Errorf("commerce/80- runs %q, want the killed one and one more", runs)
	}
	if s, _ := r.progress(t).Shard("commerce/80-"); s.By != "ctl-c" || s.Attempts != 2 {
		t.Errorf("80- progress %+v", s)
	}
}

// A converger that stops after the promotions (or after before_promote vetoed them), while after_failover
// runs, has recorded no result: the next one records it, without promoting anything again.
func TestTheResultIsRecordedWhenItsConvergerDiesBeforeRecordingIt(t *testing.T) {
	for name, veto := range map[string]bool{"promoted": false, "vetoed": true} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, "ok", 10*time.Second)
			marker := filepath.Join(r.logDir, "after_failover.ran")
			// The first run hangs (its converger dies meanwhile); the next returns at once.
			r.cfg.Failover.Hooks.AfterFailover = []string{"sh", "-c", "test -e " + marker + " || { touch " + marker + "; sleep 60; }"}
			if veto {
				r.cfg.Failover.Hooks.BeforePromote = []string{"sh", "-c", "echo not now; exit 3"}
			}
			rec := r.bump(t)
			stopB := r.convergerRun(t, "ctl-b", rec, nil)
			testenv.Eventually(t, wait, func() (bool, string) {
				_, err := os.Stat(marker)
				return err == nil, "after_failover has not started"
			})
			stopB()
			if p := r.progress(t); p.Reported || p.Vetoed() != veto {
				t.Fatalf("before the next converger: reported %v, vetoed %v", p.Reported, p.Vetoed())
			}
			r.convergerRun(t, "ctl-c", rec, nil)
			var res *Result
			testenv.Eventually(t, wait, func() (bool, string) {
				got := ReadResult(ctxT(t), r.clients["dc2"], r.cfg.Keys().LastFailover())
				res = got.Record
				return res != nil && res.Epoch == 1, fmt.Sprintf("no result: %+v", got)
			})
			wantRuns, outcome := 1, ResultSuccess
			if veto {
				wantRuns, outcome = 0, ResultFailed
			}
			for _, shard := range []string{"-80", "80-"} {
				if runs := r.runs(t, shard); len(runs) != wantRuns {
					t.Errorf("commerce/%s promoted %d times: %q", shard, len(runs), runs)
				}
			}
			if res.Outcome != outcome || len(res.Shards) != 2 {
				t.Errorf("recorded result %s, shards %+v", res.Outcome, res.Shards)
			}
		})
	}
}
