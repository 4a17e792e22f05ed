package controller

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/events"
)

// refreshPlans plans a failover to the DR DC every failover.discovery.interval while this controller
// leads, from the DR etcd: what a failover would find there now. A shard created at run time is in the
// next plan. The plan's readiness is an event each time it changes, and metrics.
func (ctl *Controller) refreshPlans(ctx context.Context) {
	var lastNotReady []string
	for {
		interval := ctl.config().Failover.Discovery.Interval
		if ctl.Status().Leading {
			if p, err := ctl.ComputePlan(ctx); err != nil {
				ctl.log.Warn("plan: cannot read the topo; the last plan stands", "err", err)
			} else {
				ctl.planMu.Lock()
				ctl.plan = p
				ctl.planMu.Unlock()
				lastNotReady = ctl.announcePlan(p, lastNotReady)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		case <-ctl.replan:
		}
	}
}

// announcePlan records an event when the shards that cannot fail over are not the ones before, and
// returns them.
func (ctl *Controller) announcePlan(p *discovery.Plan, before []string) []string {
	notReady := slices.Clone(p.Problems)
	for _, s := range p.Shards {
		if !s.Ready() || len(p.Problems) > 0 {
			notReady = append(notReady, s.ID())
		}
	}
	if slices.Equal(notReady, before) {
		return before
	}
	sum := p.Summarize(10)
	if !p.Ready() {
		ctl.ev.Warn(events.KindFailover, "plan: some shards cannot fail over", "to", p.To, "plan", sum.Line())
	} else {
		ctl.ev.Info(events.KindFailover, "plan: every shard can fail over", "to", p.To, "shards", sum.Shards)
	}
	return notReady
}

// ComputePlan plans a failover from the followed primary to the other DC now, from the other DC's etcd.
func (ctl *Controller) ComputePlan(ctx context.Context) (*discovery.Plan, error) {
	cfg := ctl.config()
	rec, read := ctl.followed()
	if !read {
		return nil, errors.New("no etcd has answered with the primary record yet: which DC a failover would promote is unknown")
	}
	to := cfg.OtherDC(rec.DC)
	return discovery.Compute(ctx, discovery.Input{Config: cfg, Client: ctl.cfg.Clients[to], From: rec.DC, To: to, Epoch: rec.Epoch + 1,
		Timeout: cfg.RequestTimeout, CheckCells: true})
}

// PlanOnRequest is Plan, or on a controller that does not lead, a plan computed on request and kept for
// one discovery interval: a dashboard polling every controller must not have each read the whole topology
// from the DR etcd, the one a failover depends on, at every poll. Requests meanwhile wait for the one
// computing and share its plan.
func (ctl *Controller) PlanOnRequest(ctx context.Context) (*discovery.Plan, error) {
	if p := ctl.Plan(); p != nil {
		return p, nil
	}
	ctl.askedMu.Lock()
	defer ctl.askedMu.Unlock()
	if p := ctl.asked; p != nil && time.Since(p.ComputedAt) < ctl.config().Failover.Discovery.Interval {
		return p, nil
	}
	p, err := ctl.ComputePlan(ctx)
	if err != nil {
		return nil, err
	}
	ctl.asked = p
	return p, nil
}

// Plan returns the plan this controller computed last while it led, if it is no older than two
// discovery intervals; nil otherwise.
func (ctl *Controller) Plan() *discovery.Plan {
	ctl.planMu.Lock()
	defer ctl.planMu.Unlock()
	if ctl.plan == nil || time.Since(ctl.plan.ComputedAt) > 2*ctl.config().Failover.Discovery.Interval || !ctl.Status().Leading {
		return nil
	}
	return ctl.plan
}
