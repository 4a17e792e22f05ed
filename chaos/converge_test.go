//go:build chaos

package chaos

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/internal/testenv"
)

// convergeScenarios kill the controller that converges a failover, again and again, while its promote
// commands run.
func convergeScenarios(t *testing.T, k knobs) {
	scenario(t, "22 converger kill -9 loop", fmt.Sprintf("dc1 lost; %d shards, promote takes 1 to 5s; the converging controller killed with its promote commands %d times (and restarted)",
		k.convergeShards, k.convergeKills),
		func(t *testing.T, r *row) {
			opts := defaults()
			opts.controllers = map[string]string{"ctl-a": "dc1", "ctl-b": "dc2", "ctl-c": "dc2"}
			opts.shards = shardsOf(k.convergeShards)
			opts.promoteTimeout = 10 * time.Second
			opts.promoteSleep = `{{if eq .Keyspace "ks0"}}1{{else if eq .Keyspace "ks1"}}2.5{{else}}5{{end}}`
			c := newCluster(t, r, opts)
			c.writeThenLose("dc1", k.writeFor)
			c.waitEpoch(1)
			c.w.setTarget("dc2")
			var kills []time.Time
			var killed []string
			for i := range k.convergeKills {
				r.step(fmt.Sprintf("kill %d of %d", i+1, k.convergeKills))
				holder := c.waitConverging(kills)
				if holder == "" {
					break // converged before this kill
				}
				// Somewhere in the promotions: some shards confirmed, the slower ones killed mid-run.
				time.Sleep(time.Duration(rand.IntN(1000)) * time.Millisecond)
				kills = append(kills, time.Now())
				killed = append(killed, holder)
				c.ctls[holder].proc.KillWithChildren()
				c.startController(holder)
			}
			res := c.waitConverged("dc2", 1)
			if res.Outcome != "success" || len(res.FailedShards()) != 0 {
				t.Errorf("result %s, failed %v", res.Outcome, res.FailedShards())
			}
			runs := map[int]int{}
			for _, s := range c.shards {
				starts, _ := c.promoteStarts(s)
				runs[len(starts)]++
				if done := c.promoteDone(s); done != 1 {
					t.Errorf("%s/%s: %d promote runs completed, want exactly 1 (%d started)", s.keyspace, s.shard, done, len(starts))
				}
			}
			st := c.status()
			if st.Unfinished != nil || st.Primary.DC != "dc2" || st.Primary.Epoch != 1 {
				t.Errorf("status after convergence: primary %+v, unfinished %+v", st.Primary, st.Unfinished)
			}
			if len(kills) == 0 {
				t.Fatal("the failover converged before the first kill: nothing was tested")
			}
			var hist []string
			for _, n := range slices.Sorted(maps.Keys(runs)) {
				hist = append(hist, fmt.Sprintf("%d shards %d", runs[n], n))
			}
			r.add("convergers killed: %s; last kill -> every shard confirmed %s; from the epoch bump %s",
				strings.Join(killed, ", "), round(res.ConvergedAt.Sub(kills[len(kills)-1])), round(res.ConvergedAt.Sub(res.StartedAt)))
			r.add("promote runs started per shard: %s; completed: exactly 1 for every shard", strings.Join(hist, ", "))
			r.step("dc1 back")
			c.reviveDC("dc1")
			c.check(1)
			r.set(fmt.Sprintf("every shard of %d converged to dc2 after %d kills of the converging controller; no shard promoted by more than one completed run", len(c.shards), len(kills)))
		})
}

// convergeHookScenario kills the converging controller after the promotions, while after_failover runs:
// nothing is recorded yet, and the next holder must record it without promoting again.
func convergeHookScenario(t *testing.T, k knobs) {
	scenario(t, "23 converger killed before the result", "dc1 lost; the converging controller killed with after_failover (it hangs the first time) after every shard was promoted",
		func(t *testing.T, r *row) {
			opts := defaults()
			opts.controllers = map[string]string{"ctl-a": "dc1", "ctl-b": "dc2", "ctl-c": "dc2"}
			marker := filepath.Join(t.TempDir(), "after_failover.started")
			opts.afterFailover = []string{"sh", "-c", "test -e " + marker + " || { touch " + marker + "; sleep 60; }"}
			c := newCluster(t, r, opts)
			c.writeThenLose("dc1", k.writeFor)
			c.waitEpoch(1)
			c.w.setTarget("dc2")
			var holder string
			testenv.Eventually(t, waitLong, func() (bool, string) {
				_, err := os.Stat(marker)
				l, lerr := election.CurrentLeader(ctxFor(t, 5*time.Second), c.direct["dc2"], topohaKeys.Converger())
				if err != nil || lerr != nil || l == nil {
					return false, "after_failover has not started under a converger"
				}
				holder = l.ID
				return true, ""
			})
			if res := c.lastFailover("dc2"); res != nil && res.Epoch == 1 {
				t.Fatalf("a result was recorded before after_failover ended: %+v", res)
			}
			killed := time.Now()
			c.ctls[holder].proc.KillWithChildren()
			res := c.waitConverged("dc2", 1)
			for _, s := range c.shards {
				if starts, _ := c.promoteStarts(s); len(starts) != 1 || c.promoteDone(s) != 1 {
					t.Errorf("%s/%s: %d promote runs, %d completed; want 1 and 1", s.keyspace, s.shard, len(starts), c.promoteDone(s))
				}
			}
			if res.Outcome != "success" || !slices.Contains(res.Hooks, "after_failover: ok") {
				t.Errorf("result %s, hooks %v", res.Outcome, res.Hooks)
			}
			c.startController(holder)
			r.add("%s killed in after_failover; the result recorded %s later by the next holder", holder, round(res.FinishedAt.Sub(killed)))
			r.step("dc1 back")
			c.reviveDC("dc1")
			c.check(1)
			r.set("the controller that had promoted every shard died before recording the result; the next one recorded it (after_failover run again) without promoting anything twice")
		})
}

// waitConverging waits until a controller holds the convergence lock and has started a promote command
// since the last of kills, and returns its ID; "" when the failover converged first.
func (c *cluster) waitConverging(kills []time.Time) string {
	c.t.Helper()
	var since time.Time
	if len(kills) > 0 {
		since = kills[len(kills)-1]
	}
	var holder string
	testenv.Eventually(c.t, waitLong, func() (bool, string) {
		if res := c.lastFailover("dc2"); res != nil && !res.ConvergedAt.IsZero() {
			holder = ""
			return true, ""
		}
		l, err := election.CurrentLeader(ctxFor(c.t, 5*time.Second), c.direct["dc2"], topohaKeys.Converger())
		if err != nil || l == nil {
			return false, fmt.Sprintf("nobody holds the convergence lock: %v", err)
		}
		holder = l.ID
		for _, s := range c.shards {
			if _, at := c.promoteStarts(s); len(at) > 0 && at[len(at)-1].After(since) {
				return true, ""
			}
		}
		return false, holder + " has started no promote command since the last kill"
	})
	return holder
}
