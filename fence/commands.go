package fence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/command"
	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/vitess"
)

// targets picks the tablet to fence in each configured shard: the primary that the DC's own etcd names in
// the Shard record when it is one of the DC's tablets (a local reparent may have moved it), else the DC's
// first tablet of the shard. ctx bounds all the reads together.
func targets(ctx context.Context, c *config.Config, cli *clientv3.Client, dc string) []Tablet {
	out := make([]Tablet, 0, len(c.Failover.Shards.List))
	for _, s := range c.Failover.Shards.List {
		t := Tablet{Keyspace: s.Keyspace, Shard: s.Shard, Tablet: s.Tablets[dc][0]}
		resp, err := cli.Get(ctx, vitess.ShardKey(c.Vitess.GlobalRoot, s.Keyspace, s.Shard))
		if err == nil && len(resp.Kvs) > 0 {
			if alias, ok, err := vitess.ShardPrimary(resp.Kvs[0].Value); err == nil && ok {
				for _, mine := range s.Tablets[dc] {
					if mine == alias.String() {
						t.Tablet = mine
					}
				}
			}
		}
		out = append(out, t)
	}
	return out
}

// discoveredTargets are, with failover.shards: auto, the primaries that the DC's own etcd names in the
// Shard records of the shards in scope, where the primary is a tablet of one of the DC's cells: a shard
// whose primary is elsewhere has nothing here to fence. Only the Shard records are read. unknown names
// the shards in scope whose Shard record cannot be decoded: whether their primary is here is not known.
func discoveredTargets(ctx context.Context, c *config.Config, cli *clientv3.Client, dc string) (tablets []Tablet, unknown []string, err error) {
	topo, err := discovery.ReadShards(ctx, cli, c.Vitess.GlobalRoot, c.RequestTimeout)
	if err != nil {
		return nil, nil, err
	}
	for _, s := range topo.Shards {
		switch {
		case !discovery.InScope(c.Failover.Discovery.Keyspaces, s):
		case s.Err != nil:
			unknown = append(unknown, s.ID())
		case slices.Contains(c.DCs[dc].Cells, s.Primary.Cell):
			tablets = append(tablets, Tablet{Keyspace: s.Keyspace, Shard: s.Name, Tablet: s.Primary.String()})
		}
	}
	return tablets, unknown, nil
}

// fenceTimeout bounds one fence command: the fence is only worth something if it is in place before the
// other side may promote, failover.after - failover.fence_after after the cut.
func fenceTimeout(c *config.Config) time.Duration {
	return min(c.Failover.After-c.Failover.FenceAfter, c.Failover.PromoteTimeout)
}

// runEach runs argv for each of tablets at once, each in its own process group killed at timeout, and
// returns each run's output and error in the same order.
func runEach(ctx context.Context, c *config.Config, dc, action string, epoch int64, argv []string, tablets []Tablet, timeout time.Duration) ([]string, []error) {
	outputs := make([]string, len(tablets))
	errs := make([]error, len(tablets))
	var wg sync.WaitGroup
	// At most failover.max_parallel at once, as promotions: a thousand vtctldclient processes at once
	// would swamp this host and vtctld.
	slots := make(chan struct{}, c.Failover.Parallel())
	for i, t := range tablets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				errs[i] = fmt.Errorf("%s_command for %s/%s: not run: %w", action, t.Keyspace, t.Shard, ctx.Err())
				return
			}
			vars := config.CommandVars{Keyspace: t.Keyspace, Shard: t.Shard, Tablet: t.Tablet, Vtctld: c.DCs[dc].Vtctld,
				DC: dc, Epoch: epoch, Timeout: timeout.String()}
			args, err := command.Render(argv, vars)
			if err != nil {
				errs[i] = fmt.Errorf("%s_command for %s/%s: %w", action, t.Keyspace, t.Shard, err)
				return
			}
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			out, err := command.Run(cctx, args, "TOPOHA_CLUSTER="+c.Cluster, "TOPOHA_DC="+dc, "TOPOHA_FENCE_ACTION="+action)
			outputs[i] = strings.TrimSpace(out)
			if err != nil {
				errs[i] = fmt.Errorf("%s_command for %s/%s (tablet %s): %w", action, t.Keyspace, t.Shard, t.Tablet, err)
			}
		}()
	}
	wg.Wait()
	return outputs, errs
}

// fenceTablets runs fence_command for each tablet of r not fenced yet and notes the outcomes in r. It
// returns how many commands ran and how many failed.
func fenceTablets(ctx context.Context, c *config.Config, r *Record) (ran, failed int) {
	var todo []int
	for i, t := range r.Tablets {
		if !t.Fenced {
			todo = append(todo, i)
		}
	}
	list := make([]Tablet, len(todo))
	for j, i := range todo {
		list[j] = r.Tablets[i]
	}
	outputs, errs := runEach(ctx, c, r.DC, "fence", r.Epoch, c.Failover.FenceCommand, list, fenceTimeout(c))
	for j, i := range todo {
		t := &r.Tablets[i]
		t.Output, t.Fenced, t.Error = outputs[j], errs[j] == nil, ""
		if errs[j] != nil {
			t.Error = errs[j].Error()
			failed++
		}
	}
	return len(todo), failed
}

// Lift runs unfence_command for every tablet of r at once — fenced or not: a fence command that failed may
// have half worked — each killed at failover.promote_timeout. The error names every tablet whose command
// failed; the caller keeps the record then, so that the lift is tried again.
func Lift(ctx context.Context, c *config.Config, r *Record) error {
	outputs, errs := runEach(ctx, c, r.DC, "unfence", r.Epoch, c.Failover.UnfenceCommand, r.Tablets, c.Failover.PromoteTimeout)
	var all []error
	for i, err := range errs {
		if err != nil {
			all = append(all, fmt.Errorf("%w: %s", err, outputs[i]))
		}
	}
	return errors.Join(all...)
}
