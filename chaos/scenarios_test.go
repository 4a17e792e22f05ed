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
	"syscall"
	"testing"
	"time"

	"github.com/topoha/topoha/fence"
	"github.com/topoha/topoha/internal/testenv"
)

// knobs are the sizes that -short shrinks; every scenario runs in both forms.
type knobs struct {
	// quiet is how long a failover that must not come is waited for (a multiple of failover.after).
	quiet time.Duration
	// writeFor is how long the writer goes on under a fault.
	writeFor time.Duration
	// kills is how often the leader is killed in a loop; restarts how often the DR etcd is restarted; flaps
	// how often the primary's VIP goes down for less than failover.after.
	kills, restarts, flaps int
	// convergeShards is how many shards the converger kill loop fails over; convergeKills how often it
	// kills the converging controller.
	convergeShards, convergeKills int
}

func tune() knobs {
	if testing.Short() {
		return knobs{quiet: 3 * after, writeFor: time.Second, kills: 3, restarts: 1, flaps: 3, convergeShards: 12, convergeKills: 3}
	}
	return knobs{quiet: 6 * after, writeFor: 3 * time.Second, kills: 20, restarts: 5, flaps: 15, convergeShards: 30, convergeKills: 10}
}

func TestChaos(t *testing.T) {
	k := tune()

	scenario(t, "1 partition, two sites", "links dc1<->dc2 cut both ways; no witness (allow_two_site_auto); writes go on into dc1",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("partition")
			cut := time.Now()
			c.partition()
			rec := c.waitEpoch(1)
			if rec.DC != "dc2" {
				t.Fatalf("failed over to %s", rec.DC)
			}
			r.add("failover %s after the cut", round(rec.ChangedAt.Sub(cut)))
			// The documented two-site risk: dc1's side cannot learn of the failover and still takes itself
			// for primary, so both answer /primary with 200 (a VIP health check would send traffic to both).
			r.step("observing both sides during the partition")
			testenv.Eventually(t, waitLong, func() (bool, string) {
				a, b := c.get("ctl-a", "/primary"), c.get("ctl-b", "/primary")
				return a == 200 && b == 200, fmt.Sprintf("/primary: ctl-a (dc1) %d, ctl-b (dc2) %d", a, b)
			})
			if st := c.status(); !slices.ContainsFunc(st.Warnings, func(w string) bool {
				return strings.Contains(w, "a partition between the DCs can make both primary")
			}) {
				t.Errorf("status does not warn of the two-site risk: %v", st.Warnings)
			}
			c.steady(k.quiet, "dc2", 1, "during the partition")
			r.step("healing")
			// Writes into dc1 stop at the heal. Writes that reach the old primary after the leader's resync
			// of it read the new primary would stay in the DR copy until the next full sync (documented in
			// docs/operations.md; `topoha verify` shows them), so the clients here move at once.
			c.w.setTarget("")
			c.healLinks()
			healed := time.Now()
			testenv.Eventually(t, waitLong, func() (bool, string) {
				a := c.get("ctl-a", "/primary")
				return a == 503, fmt.Sprintf("ctl-a (dc1) still answers /primary with %d after the heal", a)
			})
			r.add("dc1's side stepped down %s after the heal", round(time.Since(healed)))
			c.w.setTarget("dc2")
			time.Sleep(k.writeFor)
			c.check(1)
			r.set("failed over to dc2 (epoch 1); during the partition BOTH sides answered /primary 200 (the documented two-site risk, warned in status); after the heal dc1 stepped down and its split-brain writes were discarded by the resync")
		})

	scenario(t, "1b partition, two sites, self-fencing", "links dc1<->dc2 cut both ways; no witness; failover.self_fence (fence_after 1s, after 3s)",
		func(t *testing.T, r *row) {
			opts := defaults()
			opts.after, opts.selfFence = 3*time.Second, true
			c := newCluster(t, r, opts)
			c.waitLog("self-fencing armed")
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("partition")
			cut := time.Now()
			c.partition()
			var fenced *fence.Record
			testenv.Eventually(t, waitLong, func() (bool, string) {
				fenced = c.status().Fences["dc1"]
				return fenced != nil && fenced.FencedCount() == len(shards), fmt.Sprintf("dc1 not fenced: %+v", fenced)
			})
			rec := c.waitEpoch(1)
			if rec.DC != "dc2" || !fenced.At.Before(rec.ChangedAt) {
				t.Fatalf("fenced at %s, %s promoted at %s: the fence must come first", fenced.At, rec.DC, rec.ChangedAt)
			}
			r.add("dc1 fenced %s after the cut, %s before dc2 promoted", round(fenced.At.Sub(cut)), round(rec.ChangedAt.Sub(fenced.At)))
			r.step("observing both sides during the partition")
			testenv.Eventually(t, waitLong, func() (bool, string) {
				a, b := c.get("ctl-a", "/primary"), c.get("ctl-b", "/primary")
				return a == 503 && b == 200, fmt.Sprintf("/primary: ctl-a (dc1) %d, ctl-b (dc2) %d", a, b)
			})
			c.steady(k.quiet, "dc2", 1, "during the partition")
			r.step("healing")
			c.w.setTarget("")
			c.healLinks()
			c.waitLog("stays fenced")
			if code, out, _ := c.cli("unfence", "--dc", "dc1"); code != 1 || !strings.Contains(out, "dc2 is primary now") {
				t.Errorf("unfence of the old side: exit %d, %s", code, out)
			}
			if code, _, errOut := c.cli("unfence", "--dc", "dc1", "--clear"); code != 0 {
				t.Errorf("unfence --clear: exit %d, %s", code, errOut)
			}
			data, err := os.ReadFile(filepath.Join(c.promoteDir, "fence.log"))
			if err != nil || strings.Count(string(data), "fence ") != len(shards) || strings.Contains(string(data), "unfence") {
				t.Errorf("fence commands run: %q (%v); want one fence per shard and no unfence", data, err)
			}
			c.w.setTarget("dc2")
			time.Sleep(k.writeFor)
			c.check(1)
			r.set("dc1 fenced itself before dc2 promoted: only dc2 answered /primary 200 during the partition; after the heal dc1 stayed fenced (epoch moved) until `topoha unfence --clear`")
		})

	scenario(t, "2 partition, witness", "links dc1<->dc2 cut both ways; one witness at a third site still reaches dc1",
		func(t *testing.T, r *row) {
			opts := defaults()
			opts.witnesses, opts.twoSite = 1, false
			c := newCluster(t, r, opts)
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("partition")
			c.partition()
			who := c.waitLog("but only 0 of 1 witnesses see it down")
			c.steady(k.quiet, "dc1", 0, "partition with a witness that still sees dc1")
			r.step("healing")
			c.healLinks()
			time.Sleep(k.writeFor)
			c.check(0)
			r.set(fmt.Sprintf("no failover: the leader (%s) saw dc1 down, the witness did not; the mirror caught up after the heal", who))
		})

	scenario(t, "3 primary DC death", "dc1's etcd stopped and its controller killed; later back",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			lost := c.writeThenLose("dc1", k.writeFor)
			rec := c.waitEpoch(1)
			if rec.DC != "dc2" {
				t.Fatalf("failed over to %s", rec.DC)
			}
			res := c.waitResult("dc2", 1)
			if res.Outcome != "success" || len(res.Shards) != len(shards) || len(res.FailedShards()) != 0 {
				t.Errorf("failover result %s, shards %+v", res.Outcome, res.Shards)
			}
			for _, s := range shards {
				runs := c.promoteRuns(s)
				if len(runs) != 1 || !strings.Contains(runs[0], s.keyspace+"/"+s.shard+" "+s.tablets["dc2"]) {
					t.Errorf("promote runs for %s/%s: %q, want one for %s", s.keyspace, s.shard, runs, s.tablets["dc2"])
				}
			}
			c.w.setTarget("dc2")
			c.steady(k.quiet, "dc2", 1, "after the failover")
			r.add("failover %s after the loss (failover.after %s)", round(rec.ChangedAt.Sub(lost)), after)
			r.add("promotions took %s", round(res.FinishedAt.Sub(res.StartedAt)))
			r.step("dc1 back")
			c.reviveDC("dc1")
			time.Sleep(k.writeFor)
			c.check(1)
			r.set(fmt.Sprintf("one failover to dc2 at epoch 1; promote ran once for each of %d shards, all confirmed; dc1 resynced on return", len(shards)))
		})

	scenario(t, "3b primary DC death, then the new primary's", "dc1 lost (failover to dc2) and back; the leader made ctl-b (dc2); then dc2's etcd stopped and its controller killed",
		func(t *testing.T, r *row) {
			opts := defaults()
			opts.cooldown = time.Second
			c := failOverToDC2AndReturn(t, r, opts, k.writeFor)
			// The leader must die with dc2, so that the one that fails over back is elected with the primary's
			// etcd already gone.
			r.step("making ctl-b the leader")
			for c.waitLeader("") != "ctl-b" {
				c.kill("ctl-a")
				c.waitLeader("ctl-a")
				c.startController("ctl-a")
			}
			lost := c.writeThenLose("dc2", k.writeFor)
			rec := c.waitEpoch(2)
			if rec.DC != "dc1" {
				t.Fatalf("failed over to %s at epoch %d", rec.DC, rec.Epoch)
			}
			if res := c.waitResult("dc1", 2); res.Outcome != "success" {
				t.Errorf("failover back: result %s, shards %+v", res.Outcome, res.Shards)
			}
			r.add("failover back to dc1 %s after dc2's loss (failover.after %s), by a leader elected after it", round(rec.ChangedAt.Sub(lost)), after)
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("dc2 back")
			c.reviveDC("dc2")
			c.check(2)
			r.set("two failovers: to dc2, then back to dc1 by ctl-a, elected once dc2 was gone; each DC resynced on its return")
		})

	scenario(t, "4 DR DC death", "dc2's etcd stopped and its controller killed; later back",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("losing dc2")
			lost := time.Now()
			c.killDC("dc2")
			testenv.Eventually(t, waitLong, func() (bool, string) {
				st := c.status()
				return !st.DCs["dc2"].EtcdHealthy && st.Leader == nil, fmt.Sprintf("status: dc2 healthy %v, leader %+v", st.DCs["dc2"].EtcdHealthy, st.Leader)
			})
			c.steady(k.quiet, "dc1", 0, "with the DR DC lost")
			n, failed := c.w.stats("dc1", lost)
			if n == 0 || failed > 0 {
				var errs []string
				for _, o := range c.w.snapshot() {
					if o.err != nil && o.start.After(lost) {
						errs = append(errs, fmt.Sprintf("%s %s at +%s (took %s): %v", o.kind, o.keys[0], round(o.start.Sub(lost)), round(o.end.Sub(o.start)), o.err))
					}
				}
				t.Errorf("the primary was affected by the DR DC's loss: %d of %d writes into dc1 failed:\n%s", failed, n, strings.Join(errs, "\n"))
			}
			r.add("writes into dc1 while dc2 was away %d, failed %d", n, failed)
			r.step("dc2 back")
			c.reviveDC("dc2")
			c.check(0)
			r.add("mirror resumed from the checkpoint %d times, full syncs %d", c.countLogs("resuming from the checkpoint"), c.countLogs(`msg="full sync" `))
			r.set("no failover; dc1 served every write; no leader while dc2 was away (status said so); the mirror caught up on return")
		})

	scenario(t, "5 leader kill -9 loop", fmt.Sprintf("the leader killed with SIGKILL %d times (and restarted) while the writer puts and deletes", k.kills),
		func(t *testing.T, r *row) {
			opts := defaults()
			opts.controllers = map[string]string{"ctl-a": "dc1", "ctl-b": "dc2", "ctl-c": "dc2"}
			c := newCluster(t, r, opts)
			c.w.setTarget("dc1")
			var took []time.Duration
			for i := range k.kills {
				r.step(fmt.Sprintf("kill %d of %d", i+1, k.kills))
				l := c.waitLeader("")
				killed := time.Now()
				c.kill(l)
				c.waitLeader(l)
				took = append(took, time.Since(killed))
				c.startController(l)
				time.Sleep(time.Duration(rand.IntN(1000)) * time.Millisecond)
			}
			c.check(0)
			// From the logs, not the history: a leader killed just after it won may not have written the event.
			terms := c.countLogs(`msg="became the leader"`)
			if terms < k.kills+1 {
				t.Errorf("%d leadership terms in the history after %d kills", terms, k.kills)
			}
			syncs := c.countLogs(`msg="full sync" `)
			if syncs != 1 {
				t.Errorf("%d full syncs, want only the initial one: every new leader must resume from the checkpoint", syncs)
			}
			slices.Sort(took)
			var sum time.Duration
			for _, d := range took {
				sum += d
			}
			r.add("leadership changes %d (terms %d); takeover mean %s, max %s (election.ttl %s)", k.kills, terms,
				round(sum/time.Duration(len(took))), round(took[len(took)-1]), ttl)
			r.add("full syncs %d, resumes from the checkpoint %d", syncs, c.countLogs("resuming from the checkpoint"))
			r.set("another controller took over after every kill; every new leader resumed from the checkpoint; DR copy equal and in order")
		})

	scenario(t, "6 leader SIGSTOP past the TTL", "the leader frozen with SIGSTOP until another leads, writes go on, then SIGCONT",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("freezing the leader")
			var frozen string
			var batches float64
			var logAt int
			for attempt := 1; ; attempt++ {
				// A quiet mirror, and no checkpoint write between the scrape and the freeze: then every batch
				// the frozen process ever commits afterwards shows in its counter.
				c.w.setTarget("")
				c.waitEqual("before the freeze")
				frozen = c.waitLeader("")
				cp := c.checkpointRev("dc2")
				batches = c.metric(frozen, "topoha_mirror_batches_total")
				p := c.ctls[frozen].proc
				logAt = len(p.Stderr())
				p.Signal(syscall.SIGSTOP)
				time.Sleep(300 * time.Millisecond)
				if c.checkpointRev("dc2") == cp {
					break
				}
				p.Signal(syscall.SIGCONT)
				if attempt == 5 {
					t.Fatal("the leader kept writing checkpoints around every freeze")
				}
			}
			stopped := time.Now()
			c.w.setTarget("dc1")
			next := c.waitLeader(frozen)
			r.add("%s led %s after the freeze (election.ttl %s)", next, round(time.Since(stopped)), ttl)
			time.Sleep(k.writeFor)
			r.step("thawing")
			p := c.ctls[frozen].proc
			p.Signal(syscall.SIGCONT)
			time.Sleep(k.writeFor)
			// Once it logs that it no longer leads, its old term's mirror has stopped: every batch committed
			// under the old lease is in the counter from then on.
			testenv.Eventually(t, waitLong, func() (bool, string) {
				return strings.Contains(p.Stderr()[logAt:], "no longer the leader"), "the thawed leader has not noticed it lost leadership"
			})
			later := c.metric(frozen, "topoha_mirror_batches_total")
			fenced := c.metric(frozen, "topoha_fence_rejections_total", "writer=mirror")
			if strings.Contains(p.Stderr()[logAt:], "became the leader") {
				// It won a new term (a new lease) since: its batches may be legitimate; only the log says.
				r.note("the thawed process was elected again before the scrape: batch count not conclusive")
			} else if later != batches {
				t.Errorf("the thawed process committed %v mirror batches after its lease expired", later-batches)
			}
			how := "its session's end"
			if strings.Contains(p.Stderr()[logAt:], "fenced") {
				how = "a fenced write"
			}
			c.check(0)
			r.add("batches the thawed process committed %v; its fence rejections %v; it stepped down on %s", later-batches, fenced, how)
			r.set(fmt.Sprintf("%s led while %s was frozen; the thawed process stepped down and committed nothing", next, frozen))
		})

	scenario(t, "7 DR etcd restart under writes", fmt.Sprintf("dc2's etcd stopped for 1s and started again, %d times, while writes go on", k.restarts),
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.w.setTarget("dc1")
			var startup, shutdown time.Duration
			for i := range k.restarts {
				r.step(fmt.Sprintf("restart %d of %d", i+1, k.restarts))
				time.Sleep(k.writeFor)
				stopping := time.Now()
				c.etcd["dc2"].Stop()
				shutdown = max(shutdown, time.Since(stopping))
				time.Sleep(time.Second)
				started := time.Now()
				c.etcd["dc2"].Start()
				startup = max(startup, time.Since(started))
			}
			r.add("dc2's etcd took up to %s to stop and %s to start", round(shutdown), round(startup))
			time.Sleep(k.writeFor)
			c.check(0)
			r.add("full syncs %d, resumes from the checkpoint %d", c.countLogs(`msg="full sync" `), c.countLogs("resuming from the checkpoint"))
			r.set("no failover; the mirror resumed after each restart; DR copy equal and in order")
		})

	scenario(t, "8a compaction, mirror stopped", "every controller killed; puts and deletes; dc1 compacted; controllers restarted",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			c.w.setTarget("")
			c.waitEqual("before stopping the mirror")
			r.step("stopping every controller")
			for id := range c.ctls {
				c.kill(id)
			}
			stopped := time.Now()
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			c.w.setTarget("")
			deletes := 0
			for _, o := range c.w.snapshot() {
				if o.start.After(stopped) && o.err == nil && strings.HasPrefix(o.kind, "delete") {
					deletes++
				}
			}
			if deletes == 0 {
				t.Fatal("no delete while the mirror was stopped")
			}
			rev := testenv.Compact(ctxFor(t, 30*time.Second), t, c.direct["dc1"])
			r.step("restarting the controllers")
			for _, id := range slices.Sorted(maps.Keys(c.ctls)) {
				c.startController(id)
			}
			c.waitLog("source compacted past the checkpoint")
			c.check(0)
			resyncs := 0.0
			for id := range c.ctls {
				resyncs += c.metric(id, "topoha_mirror_resyncs_total", "reason=compacted")
			}
			if resyncs < 1 {
				t.Errorf("topoha_mirror_resyncs_total{reason=compacted} = %v", resyncs)
			}
			r.add("compacted at revision %d; deletes while stopped %d; resyncs{compacted} %v", rev, deletes, resyncs)
			r.set("full resync (reason compacted) with delete reconciliation; DR copy equal")
		})

	scenario(t, "8b compaction, mirror cut off", "paused; the controllers' links to dc1 cut; writes; dc1 compacted; links healed; resumed at once",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.mustCLI("pause")
			testenv.Eventually(t, waitLong, func() (bool, string) { return c.status().Paused, "not paused" })
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("cutting the controllers off dc1")
			c.links["dc1"]["dc1"].Cut()
			c.links["dc2"]["dc1"].Cut()
			time.Sleep(k.writeFor)
			c.w.setTarget("")
			rev := testenv.Compact(ctxFor(t, 30*time.Second), t, c.direct["dc1"])
			c.steady(k.quiet, "dc1", 0, "paused, with dc1 cut off")
			r.step("healing")
			c.healLinks()
			c.waitLog("source compacted past the checkpoint")
			// Resumed at once, while the controllers' probes may still count dc1 down since the cut: the time
			// it spent down while paused must not count toward failover.after.
			c.mustCLI("resume")
			c.check(0)
			resyncs := 0.0
			for id := range c.ctls {
				resyncs += c.metric(id, "topoha_mirror_resyncs_total", "reason=compacted")
			}
			if resyncs < 1 {
				t.Errorf("topoha_mirror_resyncs_total{reason=compacted} = %v", resyncs)
			}
			r.add("compacted at revision %d; resyncs{compacted} %v", rev, resyncs)
			r.set("no failover, neither while paused nor on the resume right after the heal; the mirror's watch came back to a compacted source and resynced; DR copy equal")
		})

	scenario(t, "9 blackholed primary VIP", "every link to dc1 accepts and never answers (toxiproxy timeout toxic, timeout 0)",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("blackholing dc1")
			hole := time.Now()
			stopHealthz := c.watchHealthz()
			c.blackhole("dc1")
			rec := c.waitEpoch(1)
			if rec.DC != "dc2" {
				t.Fatalf("failed over to %s", rec.DC)
			}
			r.add("failover %s after the blackhole (failover.after %s)", round(rec.ChangedAt.Sub(hole)), after)
			c.w.setTarget("dc2")
			var errs []string
			for _, ev := range c.history() {
				if ev.Message == "etcd health changed" && ev.Attrs["of_dc"] == "dc1" && ev.Attrs["to"] == "down" && ev.Time.After(hole) {
					errs = append(errs, ev.Attrs["last_error"])
				}
			}
			if len(errs) == 0 || !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, "deadline exceeded") || strings.Contains(e, "timeout") }) {
				t.Errorf("the probes of dc1 did not time out: %q", errs)
			}
			c.steady(k.quiet, "dc2", 1, "after the failover")
			if bad, n := stopHealthz(); n > 0 {
				t.Errorf("/healthz did not answer 200 %d times with the primary VIP blackholed: %v", n, bad)
			}
			r.step("healing")
			c.healLinks()
			c.check(1)
			if len(errs) > 0 {
				r.add("probe error: %s", errs[0])
			}
			r.set("probes timed out, dc1 marked down, one failover to dc2 after failover.after; dc1 resynced once the blackhole ended")
		})

	scenario(t, "9b blackholed DR VIP", "every link to dc2 accepts and never answers; writes go on into dc1; the blackhole ends",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("blackholing dc2")
			hole := time.Now()
			c.blackhole("dc2")
			// The controllers' loops must not hang on the DR etcd: /healthz answers 200 all along.
			stopHealthz := c.watchHealthz()
			c.steady(k.quiet+k.writeFor, "dc1", 0, "the DR VIP blackholed")
			if bad, n := stopHealthz(); n > 0 {
				t.Errorf("/healthz did not answer 200 %d times with the DR VIP blackholed: %v", n, bad)
			}
			n, failed := c.w.stats("dc1", hole)
			if n == 0 || failed > 0 {
				t.Errorf("the primary was affected: %d of %d writes into dc1 failed", failed, n)
			}
			r.step("healing")
			c.healLinks()
			c.check(0)
			r.add("writes into dc1 during the blackhole %d (%d failed)", n, failed)
			r.set("no failover; dc1 served every write; every controller's loop stayed live (/healthz 200); the mirror caught up")
		})

	scenario(t, "10 hanging promote command", "dc1 lost; promote for commerce/-80 hangs 4 times (promote_timeout 1s), then works; commerce/80- works",
		func(t *testing.T, r *row) {
			opts := defaults()
			opts.promoteTimeout = time.Second
			opts.promoteModes = map[string]string{"-80": "hang,hang,hang,hang,ok"}
			hung, fine := shards[0], shards[1]
			c := newCluster(t, r, opts)
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("losing dc1")
			stopHealthz := c.watchHealthz()
			c.killDC("dc1")
			c.waitEpoch(1)
			c.w.setTarget("dc2")
			res := c.waitResult("dc2", 1)
			if res.Outcome != "partial" || !slices.Equal(res.FailedShards(), []string{"commerce/-80"}) {
				t.Errorf("first failover result %s, failed shards %v; want partial, commerce/-80", res.Outcome, res.FailedShards())
			}
			for _, s := range res.Shards {
				switch s.Shard {
				case hung.shard:
					if s.Confirmed || s.Attempts != 3 || !strings.Contains(s.Error, "timeout") {
						t.Errorf("hanging shard in the first result: %+v, want 3 attempts, an error, not confirmed", s)
					}
				case fine.shard:
					if !s.Confirmed || s.Attempts != 1 {
						t.Errorf("working shard: %+v, want confirmed at the first attempt", s)
					}
				}
			}
			code, out, _ := c.cli("status")
			// Exit 1: an unfinished failover needs a person.
			if code != 1 || !strings.Contains(out, "PARTIAL") || !strings.Contains(out, "FAILOVER unfinished: 1 of 2 shards without a primary in dc2") {
				t.Errorf("status does not show the unfinished failover: exit %d\n%s", code, out)
			}
			r.step("retries")
			converged := c.waitConverged("dc2", 1)
			if bad, n := stopHealthz(); n > 0 {
				t.Errorf("/healthz did not answer 200 %d times during a long failover: %v", n, bad)
			}
			pids, at := c.promoteStarts(hung)
			if len(pids) != 5 || c.promoteDone(hung) != 1 || c.promoteDone(fine) != 1 {
				t.Errorf("commerce/-80 ran %d times (%d completed), commerce/80- completed %d times; want 5 (1) and 1", len(pids), c.promoteDone(hung), c.promoteDone(fine))
			}
			testenv.Eventually(t, waitLong, func() (bool, string) {
				for _, pid := range pids[:len(pids)-1] {
					if !processGone(pid) {
						return false, fmt.Sprintf("promote attempt %d is still running", pid)
					}
				}
				return true, ""
			})
			if st := c.status(); st.Unfinished != nil {
				t.Errorf("status after convergence: %+v", st.Unfinished)
			}
			c.steady(k.quiet, "dc2", 1, "after a failover that converged late")
			var offsets []string
			for _, a := range at {
				offsets = append(offsets, "+"+round(a.Sub(at[0])))
			}
			r.add("commerce/-80 attempts started at %s (the first 3 in the first result, then back-off); converged %s after the epoch bump",
				strings.Join(offsets, ", "), round(converged.ConvergedAt.Sub(converged.StartedAt)))
			r.step("dc1 back")
			c.reviveDC("dc1")
			c.check(1)
			r.set("epoch 1 kept; the first result named commerce/-80 failed after 3 attempts killed at promote_timeout; it was retried with back-off and converged at the 5th, with no human; status showed the unfinished failover meanwhile")
		})

	scenario(t, "11 SIGHUP during a failover", "dc1 lost; promote takes 3s; config changed and SIGHUP sent to every controller while it runs",
		func(t *testing.T, r *row) {
			opts := defaults()
			opts.promoteDelay = 3 * time.Second
			c := newCluster(t, r, opts)
			c.writeThenLose("dc1", k.writeFor)
			testenv.Eventually(t, waitLong, func() (bool, string) {
				for _, s := range shards {
					if pids, _ := c.promoteStarts(s); len(pids) == 0 {
						return false, "no promotion under way yet"
					}
				}
				return true, ""
			})
			if res := c.lastFailover("dc2"); res != nil {
				t.Fatalf("the failover finished before the reload: %+v", res)
			}
			r.step("reloading")
			reloaded := time.Now()
			c.reload(func(f map[string]any) { f["after"] = "2s" })
			c.w.setTarget("dc2")
			res := c.waitResult("dc2", 1)
			if res.Outcome != "success" || len(res.FailedShards()) != 0 {
				t.Errorf("failover result %s, failed shards %v", res.Outcome, res.FailedShards())
			}
			if !res.FinishedAt.After(reloaded) {
				t.Errorf("the failover finished at %s, before the reload at %s", res.FinishedAt, reloaded)
			}
			for _, s := range shards {
				if pids, _ := c.promoteStarts(s); len(pids) != 1 {
					t.Errorf("promote ran %d times for %s/%s", len(pids), s.keyspace, s.shard)
				}
			}
			for _, id := range c.controllersIn("dc2") {
				testenv.Eventually(t, waitLong, func() (bool, string) {
					return strings.Contains(c.ctls[id].logs(), "config reloaded"), id + " has not reloaded"
				})
				if strings.Contains(c.ctls[id].logs(), "config not reloaded") {
					t.Errorf("%s refused the reload", id)
				}
			}
			c.steady(k.quiet, "dc2", 1, "after the failover the reload came in")
			_, started := c.promoteStarts(shards[0])
			r.add("reload %s after the promotions started; failover finished %s after the reload", round(reloaded.Sub(started[0])), round(res.FinishedAt.Sub(reloaded)))
			r.step("dc1 back")
			c.reviveDC("dc1")
			c.check(1)
			r.set("the reload was taken during the promotions; the failover completed (all shards, one attempt each); no second failover")
		})

	scenario(t, "12a pause, then primary DC death", "paused; dc1's etcd stopped and its controller killed; resumed; dc1 back",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.mustCLI("pause")
			testenv.Eventually(t, waitLong, func() (bool, string) { return c.status().Paused, "not paused" })
			c.w.setTarget("dc1")
			time.Sleep(k.writeFor)
			r.step("losing dc1 while paused")
			c.killDC("dc1")
			testenv.Eventually(t, waitLong, func() (bool, string) {
				return c.metric("ctl-b", "topoha_etcd_up", "dc=dc1") == 0, "ctl-b does not see dc1 down"
			})
			c.steady(k.quiet, "dc1", 0, "paused, with dc1 lost")
			c.w.setTarget("")
			r.step("resuming")
			resumed := time.Now()
			c.mustCLI("resume")
			rec := c.waitEpoch(1)
			if rec.DC != "dc2" {
				t.Fatalf("failed over to %s", rec.DC)
			}
			r.add("failover %s after resume", round(rec.ChangedAt.Sub(resumed)))
			if d := rec.ChangedAt.Sub(resumed); d < after {
				t.Errorf("failed over %s after the resume: dc1's time down while paused counted toward failover.after %s", d, after)
			}
			c.w.setTarget("dc2")
			time.Sleep(k.writeFor)
			r.step("dc1 back")
			c.reviveDC("dc1")
			c.check(1)
			r.set("no failover while paused; one to dc2 after resume; dc1 resynced on return")
		})

	scenario(t, "12b cooldown", "dc1 lost (failover to dc2), dc1 back; then dc2, the new primary, lost inside failover.cooldown (10m)",
		func(t *testing.T, r *row) {
			opts := defaults()
			opts.cooldown = 10 * time.Minute
			c := failOverToDC2AndReturn(t, r, opts, k.writeFor)
			r.step("losing dc2 inside the cooldown")
			c.killDC("dc2")
			who := c.waitLog("but the last failover was")
			c.steady(k.quiet, "dc2", 1, "the new primary lost inside the cooldown")
			r.step("dc2 back")
			c.reviveDC("dc2")
			c.check(1)
			r.set(fmt.Sprintf("one failover; none when dc2 was lost inside the cooldown (%s decided so)", who))
		})

	scenario(t, "13 pause set while the DR DC is away", "dc2 lost; `topoha pause` (reaches dc1 only); dc2 back; then dc1 lost",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.w.setTarget("dc1")
			r.step("losing dc2")
			c.killDC("dc2")
			testenv.Eventually(t, waitLong, func() (bool, string) {
				return !c.status().DCs["dc2"].EtcdHealthy, "dc2 still healthy"
			})
			r.step("pausing")
			c.mustCLI("pause")
			r.step("dc2 back")
			c.reviveDC("dc2")
			c.waitLeader("")
			testenv.Eventually(t, waitLong, func() (bool, string) {
				st := c.status()
				return st.Paused && st.DCs["dc2"].EtcdHealthy, fmt.Sprintf("status: paused %v, dc2 healthy %v", st.Paused, st.DCs["dc2"].EtcdHealthy)
			})
			c.waitEqual("dc2 caught up")
			// Both controllers read the flag at every turn while both etcds answer: give them a few.
			time.Sleep(time.Second)
			r.step("losing dc1 while paused")
			c.killDC("dc1")
			c.steady(k.quiet, "dc1", 0, "paused (the flag was set while dc2 was away; status shows PAUSED), with dc1 lost")
			c.mustCLI("resume")
			c.waitEpoch(1)
			c.w.setTarget("dc2") // clients follow the new primary
			c.reviveDC("dc1")
			c.check(1)
			r.set("no failover while paused, though the flag was written while dc2 was away")
		})

	scenario(t, "14 flapping primary VIP", fmt.Sprintf("every link to dc1 cut for 1.5s then healed for 1.5s, %d times (failover.after 3s)", k.flaps),
		func(t *testing.T, r *row) {
			opts := defaults()
			// Two failed probes of up to health.timeout each mark a DC down about 1s after the cut: the cut
			// is long enough to be seen, and short of failover.after.
			opts.after = 3 * time.Second
			c := newCluster(t, r, opts)
			c.w.setTarget("dc1")
			for i := range k.flaps {
				r.step(fmt.Sprintf("flap %d of %d", i+1, k.flaps))
				for _, site := range sites {
					c.links[site]["dc1"].Cut()
				}
				c.steady(1500*time.Millisecond, "dc1", 0, "a VIP down for less than failover.after")
				c.healLinks()
				c.steady(1500*time.Millisecond, "dc1", 0, "a VIP down for less than failover.after, back up")
			}
			c.steady(k.quiet, "dc1", 0, "after the flaps")
			downs := 0
			for _, ev := range c.history() {
				if ev.Message == "etcd health changed" && ev.Attrs["of_dc"] == "dc1" && ev.Attrs["to"] == "down" {
					downs++
				}
			}
			c.check(0)
			r.add("dc1 marked down %d times (summed over controllers)", downs)
			r.set("no failover: dc1 was never down for failover.after in a row")
		})

	scenario(t, "15 slow primary VIP", "50ms latency each way on every link to dc1 (probe timeout 500ms), writes go on",
		func(t *testing.T, r *row) {
			c := newCluster(t, r, defaults())
			c.w.setTarget("dc1")
			for _, site := range sites {
				c.links[site]["dc1"].Slow(50 * time.Millisecond)
			}
			c.steady(k.quiet+k.writeFor, "dc1", 0, "a slow but answering primary")
			n, failed := c.w.stats("dc1", time.Time{})
			c.healLinks()
			c.check(0)
			r.add("writes through the slow VIP %d (%d failed)", n, failed)
			r.set("no failover; the mirror kept up through the latency")
		})
	memberScenarios(t, k)
	convergeScenarios(t, k)
	convergeHookScenario(t, k)
}

// failOverToDC2AndReturn is the start of the scenarios that lose the new primary too: writes into dc1, dc1
// lost, the failover to dc2 at epoch 1, writes into dc2, dc1 back and resynced from dc2. The writer is
// stopped when it returns.
func failOverToDC2AndReturn(t *testing.T, r *row, opts options, writeFor time.Duration) *cluster {
	t.Helper()
	c := newCluster(t, r, opts)
	c.writeThenLose("dc1", writeFor)
	if rec := c.waitEpoch(1); rec.DC != "dc2" {
		t.Fatalf("failed over to %s", rec.DC)
	}
	c.w.setTarget("dc2")
	time.Sleep(writeFor)
	r.step("dc1 back")
	c.reviveDC("dc1")
	c.w.setTarget("")
	c.waitEqual("dc1 resynced from dc2")
	return c
}
