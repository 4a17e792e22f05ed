package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/clusterstatus"
	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/controller"
	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/vitess"
)

// The failover half of the demo: controllers in both DCs, dc1 lost, dc2 promoted, dc1 back and resynced.

const failoverAfter = 3 * time.Second

func (d *demo) controllerConfig() (*config.Config, error) {
	promote := make([]string, 0, len(d.promoter)+4)
	for _, arg := range d.promoter {
		promote = append(promote, fmt.Sprintf("%q", arg))
	}
	yaml := fmt.Sprintf(`cluster: demo
initial_primary: dc1
dcs:
  dc1: {etcd: {endpoints: [%s], dial_timeout: 1s}, vtctld: vtctld.dc1:15999, cells: [dc1]}
  dc2: {etcd: {endpoints: [%s], dial_timeout: 1s}, vtctld: vtctld.dc2:15999, cells: [dc2]}
election: {ttl: 2s}
health: {interval: 200ms, timeout: 500ms, failure_threshold: 3, success_threshold: 2}
failover:
  mode: auto
  allow_two_site_auto: true
  after: %s
  promote_timeout: 10s
  promote_command: [%s, -etcd, "{{if eq .DC \"dc1\"}}%[1]s{{else}}%[2]s{{end}}", "{{.Keyspace}}/{{.Shard}}", "{{.Tablet}}"]
  shards: auto
  discovery: {interval: 1s}
`, d.dc1.Endpoint(), d.dc2.Endpoint(), failoverAfter, strings.Join(promote, ", "))
	return config.Parse([]byte(yaml))
}

func (d *demo) startControllers(ctx context.Context) error {
	cfg, err := d.controllerConfig()
	if err != nil {
		return err
	}
	d.cfg = cfg
	clients := map[string]*clientv3.Client{"dc1": d.c1, "dc2": d.c2}
	for _, dc := range []string{"dc1", "dc2"} {
		id := "ctl-" + dc
		rec, err := events.New(events.Config{Clients: clients, Prefix: cfg.Keys().History(), Controller: id, DC: dc, MaxEvents: cfg.History.MaxEvents, Timeout: cfg.RequestTimeout})
		if err != nil {
			return err
		}
		ctl, err := controller.New(controller.Config{Config: cfg, DC: dc, ID: id, Clients: clients, Logger: slog.New(slog.DiscardHandler), Events: rec})
		if err != nil {
			return err
		}
		cctx, cancel := context.WithCancel(context.Background())
		rctx, rcancel := context.WithCancel(context.Background())
		done, recDone := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			_ = ctl.Run(cctx)
		}()
		go func() {
			defer close(recDone)
			_ = rec.Run(rctx)
		}()
		d.controllers = append(d.controllers, ctl)
		d.stops = append(d.stops, func() { cancel(); <-done; rcancel(); <-recDone })
	}
	leader, err := d.waitLeader(ctx)
	if err != nil {
		return err
	}
	d.sayf("controllers ctl-dc1 and ctl-dc2 run; the election lives in dc2's etcd (the DR side), where the\n")
	d.sayf("leader writes: %s leads, probes both etcds every %s and mirrors dc1 -> dc2 under its fence\n", leader, cfg.Health.Interval)
	d.sayf("(the create revision of its leader key and the primary epoch, compared in every transaction)\n")
	if err := d.waitMirrored(ctx, d.c1, d.c2); err != nil {
		return err
	}
	// A shard lock that an old make-mirror copied without its lease: it would block
	// EmergencyReparentShard in dc2 for the whole lock timeout.
	if _, err := d.c2.Put(ctx, prefix+"keyspaces/commerce/shards/80-/locks/7587890123456789012", "copied by make-mirror"); err != nil {
		return err
	}
	d.sayf("dc2 also holds a shard lock that an old make-mirror copied without its lease\n")
	// No shard is listed in the config: the leader discovers them in dc2's copy of the topo.
	p, err := poll(ctx, func() (*discovery.Plan, bool) {
		for _, c := range d.controllers {
			if p := c.Plan(); p != nil && len(p.Shards) > 0 {
				return p, true
			}
		}
		return nil, false
	})
	if err != nil {
		return fmt.Errorf("no plan from the leader: %w", err)
	}
	d.sayf("failover.shards is auto: the leader's plan, read from dc2's copy of the topo: %s\n", p.Summarize(3).Line())
	for _, s := range p.Shards {
		d.sayf("  %s: would promote %s (candidates %s; --ignore-replicas %s)\n", s.ID(), s.Tablet, strings.Join(s.Candidates, ","), strings.Join(s.IgnoreTablets, ","))
	}
	if ready, notReady := p.Counts(); ready != 2 || notReady != 0 || len(p.Warnings) > 0 {
		return fmt.Errorf("the plan should have commerce's 2 shards ready and nothing to warn of: %+v", p)
	}
	return nil
}

func (d *demo) waitLeader(ctx context.Context) (string, error) {
	return poll(ctx, func() (string, bool) {
		for _, c := range d.controllers {
			if s := c.Status(); s.Leading && s.Mirror != nil && s.Mirror.Phase == "streaming" {
				return s.ID, true
			}
		}
		return "", false
	})
}

func (d *demo) loseDC1(ctx context.Context) error {
	var leader *controller.Controller
	for _, c := range d.controllers {
		if c.Status().Leading {
			leader = c
		}
	}
	if leader == nil {
		return errors.New("no leader")
	}
	// Timed from the moment the stop begins: the server refuses clients long before Stop returns.
	lost := time.Now()
	d.dc1.Stop()
	d.sayf("dc1's etcd is stopped (the DC is lost). failover.after is %s, mode auto; times from here:\n", failoverAfter)
	elapsed := func() string { return time.Since(lost).Round(100 * time.Millisecond).String() }
	if _, err := poll(ctx, func() (string, bool) { return "", leader.Status().Health["dc1"].State == "down" }); err != nil {
		return err
	}
	d.sayf("  +%s  dc1 marked down after %d failed probes in a row\n", elapsed(), d.cfg.Health.FailureThreshold)
	// The result is recorded in dc2's etcd by whichever controller converged the failover.
	f, err := poll(ctx, func() (*failover.Result, bool) {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		got := failover.ReadResult(rctx, d.c2, d.cfg.Keys().LastFailover())
		return got.Record, got.Record != nil && !got.Record.FinishedAt.IsZero()
	})
	if err != nil {
		return err
	}
	d.sayf("  +%s  failover: %s\n", elapsed(), f.Decision.Reason)
	d.sayf("          1. epoch %d recorded in dc2's etcd, fenced by the leader's term: the old mirror direction is fenced\n", f.Epoch)
	d.sayf("          2. lock keys without a lease deleted: %v\n", f.Locks)
	for _, s := range f.Shards {
		if !s.Confirmed {
			return fmt.Errorf("%s/%s not promoted: %s", s.Keyspace, s.Shard, s.Error)
		}
		d.sayf("          3. %s/%s: promote command ran, the Shard record now names %s (%s)\n", s.Keyspace, s.Shard, s.Tablet, s.Duration.Round(time.Millisecond))
	}
	// The one warning there must be, shown on purpose: dc1's cell record points at dc1's etcd, now gone.
	for _, w := range f.Warnings {
		if !strings.Contains(w, "cell dc1's CellInfo points at") {
			return fmt.Errorf("unexpected pre-flight warning: %s", w)
		}
		d.sayf("          the pre-flight warned, as it should: %s\n", w)
	}
	d.sayf("  dc1 lost -> every shard promoted: %s (failover.after %s, counted from the first failed probe,\n", elapsed(), failoverAfter)
	d.sayf("  + up to one probe interval + the promotions)\n")
	return nil
}

func (d *demo) dc1Returns(ctx context.Context) error {
	// A new tablet in dc2, as a starting vttablet registers it.
	added := vitess.Tablet{Alias: vitess.TabletAlias{Cell: "dc2", UID: 103}, Hostname: "tablet-dc2-0000000103", Keyspace: "commerce", Shard: "-80", Type: vitess.TypeReplica}
	if _, err := d.c2.Put(ctx, vitess.TabletKey("/vt/dc2", added.Alias), string(vitess.EncodeTablet(added, 15999))); err != nil {
		return err
	}
	d.sayf("dc2 serves as primary and changes its topo; then dc1's etcd comes back with its stale copy\n")
	if err := d.dc1.Start(); err != nil {
		return err
	}
	if _, err := poll(ctx, func() (string, bool) {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		got := primary.Read(rctx, d.c1, d.cfg.Keys().Primary())
		return "", got.Record != nil && got.Record.DC == "dc2" && got.Record.Epoch == 1
	}); err != nil {
		return err
	}
	d.sayf("every controller adopted epoch 1; the leader (now in dc1's etcd, the new DR side) told dc1 it is\n")
	d.sayf("not primary any more, then mirrored dc2 -> dc1 with a full resync that deleted dc1's stale keys\n")
	if err := d.waitMirrored(ctx, d.c2, d.c1); err != nil {
		return err
	}
	st := clusterstatus.Read(ctx, d.cfg, map[string]*clientv3.Client{"dc1": d.c1, "dc2": d.c2})
	leader := "none"
	if st.Leader != nil {
		leader = st.Leader.ID
	}
	d.sayf("topoha status: primary %s (epoch %d), leader %s, mirror %s -> %s\n", st.Primary.DC, st.Primary.Epoch, leader, st.Mirror.Source, st.Mirror.Destination)
	return nil
}

// history shows what the controllers recorded of the failover, read back from the etcds as `topoha
// history` reads it.
func (d *demo) history(ctx context.Context) error {
	clients := map[string]*clientv3.Client{"dc1": d.c1, "dc2": d.c2}
	evs, err := poll(ctx, func() ([]events.Event, bool) {
		evs, err := events.Read(ctx, clients, d.cfg.Keys().History(), time.Second, 0)
		for _, ev := range evs {
			if err == nil && ev.Message == "failover done" && ev.Attrs["result"] == string(failover.ResultSuccess) {
				return evs, true
			}
		}
		return evs, false
	})
	if err != nil {
		return fmt.Errorf("no successful failover in the history: %w", err)
	}
	var shown []events.Event
	for _, ev := range evs {
		if ev.Kind == events.KindFailover || ev.Kind == events.KindRole {
			shown = append(shown, ev)
		}
	}
	d.sayf("every controller writes its events to both etcds (%d so far); the failover and role changes:\n", len(evs))
	events.WriteText(d.w, shown)
	d.sayf("the same events are log records; `topoha history` prints them all, and /metrics counts them\n")
	return nil
}

// waitMirrored waits until dst holds exactly src's permanent keys below /vt/.
func (d *demo) waitMirrored(ctx context.Context, src, dst *clientv3.Client) error {
	_, err := poll(ctx, func() (string, bool) {
		a, err1 := permanentKeys(ctx, src)
		b, err2 := permanentKeys(ctx, dst)
		return "", err1 == nil && err2 == nil && fmt.Sprint(a) == fmt.Sprint(b)
	})
	if err == nil {
		d.sayf("checked: the DR copy equals the primary's topo\n")
	}
	return err
}

// poll calls cond every 20ms until it reports done or waitFor passes.
func poll[T any](ctx context.Context, cond func() (T, bool)) (T, error) {
	deadline := time.Now().Add(waitFor)
	for {
		v, ok := cond()
		if ok {
			return v, nil
		}
		if time.Now().After(deadline) {
			return v, fmt.Errorf("not done after %s", waitFor)
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
