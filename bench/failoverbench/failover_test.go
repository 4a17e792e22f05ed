// Package failoverbench measures shard discovery and a failover at scale (issue 13): 1,000 shards in 50
// keyspaces, 3,000 tablets in two DCs, written as the protobuf records Vitess writes, into 3-member etcd
// clusters; promote commands that take 0.5 s each. Run it with `make bench-failover`; the numbers of
// this machine are in docs/benchmarks.md.
package failoverbench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/vitess"
)

const (
	keyspaces         = 50
	shardsPerKeyspace = 20
	promoteTakes      = 500 * time.Millisecond
)

// rig is two DCs of 3-member etcd clusters, dc2 holding the mirrored topo of a cluster whose primaries
// are all in dc1: per shard a PRIMARY in dc1, a REPLICA and an RDONLY in dc2.
type rig struct {
	d    *testenv.DCs
	topo *vitess.Topo
	cfg  *config.Config
	fake string
	logs string
}

func newRig(b *testing.B, parallel int) *rig {
	b.Helper()
	fake := testenv.Build(b, "./internal/fakepromote")
	logs := b.TempDir()
	d := testenv.StartDCs(b, testenv.WithDCFields(func(dc string) string { return fmt.Sprintf("cells: [%s], vtctld: vtctld-%s:15999", dc, dc) }),
		testenv.WithConfigFor(func(d *testenv.DCs) string {
			return fmt.Sprintf(`failover:
  shards: auto
  max_parallel: %d
  promote_command: [%s, -etcd, %q, -root, /vt, -delay, %s, -log, "%s/{{.Keyspace}}.{{.Shard}}.log", "{{.Keyspace}}/{{.Shard}}", "{{.Tablet}}"]`,
				parallel, fake, strings.Join(d.Cluster["dc2"].Endpoints(), ","), promoteTakes, logs)
		}))
	topo := vitess.NewTopo("/vt")
	address := strings.TrimPrefix(d.Cluster["dc2"].Endpoints()[0], "http://")
	for _, cell := range []string{"dc1", "dc2"} {
		topo.Cell(cell, address, "/vt/"+cell)
	}
	uid := uint32(100)
	for k := range keyspaces {
		ks := fmt.Sprintf("ks%02d", k)
		topo.Keyspace(ks, "none")
		for s := range shardsPerKeyspace {
			shard := fmt.Sprintf("%02x-%02x", s*256/shardsPerKeyspace, (s+1)*256/shardsPerKeyspace)
			primary := vitess.TabletAlias{Cell: "dc1", UID: uid}
			topo.Shard(ks, shard, primary)
			for _, tab := range []vitess.Tablet{
				{Alias: primary, Keyspace: ks, Shard: shard, Type: vitess.TypePrimary},
				{Alias: vitess.TabletAlias{Cell: "dc2", UID: uid + 1}, Keyspace: ks, Shard: shard, Type: vitess.TypeReplica},
				{Alias: vitess.TabletAlias{Cell: "dc2", UID: uid + 2}, Keyspace: ks, Shard: shard, Type: vitess.TypeRdonly},
			} {
				if err := topo.Tablet(tab); err != nil {
					b.Fatal(err)
				}
			}
			uid += 10
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := topo.Put(ctx, d.Client["dc2"]); err != nil {
		b.Fatal(err)
	}
	return &rig{d: d, topo: topo, cfg: d.Config, fake: fake, logs: logs}
}

func (r *rig) plan(b *testing.B) *discovery.Plan {
	p, err := discovery.Compute(context.Background(), discovery.Input{Config: r.cfg, Client: r.d.Client["dc2"], From: "dc1", To: "dc2",
		Epoch: 1, Timeout: 10 * time.Second, CheckCells: true})
	if err != nil {
		b.Fatal(err)
	}
	if ready, notReady := p.Counts(); ready != keyspaces*shardsPerKeyspace || notReady != 0 {
		b.Fatalf("plan: %d ready, %d not: %+v", ready, notReady, p.Summarize(5))
	}
	return p
}

// BenchmarkPlan is the time to read the topo of 1,000 shards and 3,000 tablets and plan every shard,
// the check of each cell's topo address included. Goal: under 1 s.
func BenchmarkPlan(b *testing.B) {
	r := newRig(b, 0)
	b.ResetTimer()
	for b.Loop() {
		r.plan(b)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/plan")
}

// BenchmarkFailover is the time from the decision (the epoch bump, with its plan) to every one of 1,000
// shards confirmed from its Shard record, promote commands taking 0.5 s, at the default parallelism;
// and topoha's overhead over the same 1,000 commands run directly at that parallelism. Goal: under 2 s.
func BenchmarkFailover(b *testing.B) {
	parallel := config.DefaultMaxParallel
	r := newRig(b, parallel)
	clients := r.d.Client
	x, err := failover.NewExecutor(failover.ExecutorConfig{Config: r.cfg, Clients: clients})
	if err != nil {
		b.Fatal(err)
	}
	p := r.plan(b)
	direct := r.runDirectly(b, p, parallel)
	for b.Loop() {
		ctx := context.Background()
		seen := primary.Read(ctx, clients["dc2"], r.cfg.Keys().Primary())
		epoch := int64(1)
		if seen.Record != nil {
			epoch = seen.Record.Epoch + 1
		}
		start := time.Now()
		d := failover.Decision{Action: failover.ActionFailover, From: "dc1", To: "dc2", NewEpoch: epoch, Trigger: failover.TriggerCLI, Reason: "bench"}
		if _, err := x.Execute(ctx, d, seen); err != nil {
			b.Fatal(err)
		}
		rec := primary.Record{DC: "dc2", Epoch: epoch}
		conv, err := failover.NewConverger(failover.ConvergerConfig{Config: func() *config.Config { return r.cfg }, Clients: clients, DC: "dc2", ID: "bench",
			Primary: func() (primary.Record, bool) { return rec, true }, Paused: func(context.Context) bool { return false }})
		if err != nil {
			b.Fatal(err)
		}
		if err := conv.Finish(ctx, rec); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		res := failover.ReadResult(ctx, clients["dc2"], r.cfg.Keys().LastFailover()).Record
		if res == nil || res.Outcome != failover.ResultSuccess || len(res.Shards) != keyspaces*shardsPerKeyspace {
			b.Fatalf("result: %+v", res)
		}
		b.ReportMetric(took.Seconds(), "s/failover")
		b.ReportMetric(direct.Seconds(), "s/commands-alone")
		b.ReportMetric((took - direct).Seconds(), "s/overhead")
		b.Logf("1,000 shards, promote 0.5 s, max_parallel %d: decision -> all confirmed %s; the same commands alone %s; overhead %s",
			parallel, took.Round(time.Millisecond), direct.Round(time.Millisecond), (took - direct).Round(time.Millisecond))
		b.StopTimer()
		r.reset(b)
		b.StartTimer()
	}
}

// runDirectly runs every shard's promote command as the failover would, parallel at a time, with no
// topoha around them, and returns the wall time; then puts the Shard records back.
func (r *rig) runDirectly(b *testing.B, p *discovery.Plan, parallel int) time.Duration {
	slots := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range p.Shards {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			if out, err := exec.Command(r.fake, "-etcd", strings.Join(r.d.Cluster["dc2"].Endpoints(), ","), "-root", "/vt", "-delay", promoteTakes.String(),
				"-log", filepath.Join(r.logs, "direct.log"), s.ID(), s.Tablet).CombinedOutput(); err != nil {
				b.Errorf("%s: %v: %s", s.ID(), err, out)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	r.reset(b)
	return took
}

// reset writes the whole topo again (each Shard record naming its dc1 primary, each dc2 tablet a
// REPLICA or RDONLY again), and removes the promote logs.
func (r *rig) reset(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.topo.Put(ctx, r.d.Client["dc2"]); err != nil {
		b.Fatal(err)
	}
	entries, _ := os.ReadDir(r.logs)
	for _, e := range entries {
		os.Remove(filepath.Join(r.logs, e.Name()))
	}
}
