package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/replication"
	"github.com/topoha/topoha/witness"
)

// lead is one leadership term won under rec. What it does first is decideTermStart's; then it mirrors
// the primary's topo into the DR etcd under the term's fence, decides every interval, and fails over when
// the decision says so. It returns when the term ends, the mirror is fenced, or a failover ran (the
// primary record then moved the election).
func (ctl *Controller) lead(ctx context.Context, et election.Term, rec primary.Record) {
	dr := ctl.config().OtherDC(rec.DC)
	seen := ctl.readPrimaryIn(ctx, dr)
	start := decideTermStart(rec, seen)
	// The terms given up here are not leadership: nothing is done in them, and they are neither counted
	// nor announced.
	switch {
	case ctx.Err() != nil:
		return
	case start == startGiveUp:
		ctl.log.Warn("won the election but cannot read the primary record in the DR etcd; campaigning again", "dc", dr, "err", seen.Err)
		return
	case start == startAdopt:
		ctl.log.Info("won the election with a stale primary record; adopting the DR etcd's and campaigning where it says",
			"epoch", rec.Epoch, "newer_epoch", seen.Record.Epoch, "primary", seen.Record.DC)
		ctl.learn(*seen.Record)
		select {
		case <-ctx.Done():
		case <-time.After(ctl.config().Election.TTL):
		}
		return
	}
	t := &term{ctl: ctl, et: et, rec: rec, dr: dr, seen: seen, mdone: make(chan error, 1)}
	ctl.beginTerm(t)
	defer ctl.endTerm()
	switch start {
	case startBlocked:
		t.blocked(ctx)
		return
	case startDemote:
		if !t.demote(ctx) {
			return
		}
	}
	t.run(ctx)
}

func (ctl *Controller) beginTerm(t *term) {
	ctl.update(func(s *Status) { s.Leading = true })
	select {
	case ctl.replan <- struct{}{}:
	default:
	}
	ctl.cfg.Metrics.LeaderChanged()
	ctl.ev.Info(events.KindLeadership, "became the leader", "election_in", t.dr, "primary", t.rec.DC, "epoch", t.rec.Epoch)
}

func (ctl *Controller) endTerm() {
	ctl.update(func(s *Status) { s.Leading, s.Mirror, s.Problem = false, nil, "" })
	ctl.cfg.Metrics.LeaderChanged()
	ctl.ev.Info(events.KindLeadership, "no longer the leader")
	ctl.enter(PhaseFollowing)
}

// term is one leadership term's state, owned by lead's goroutine.
type term struct {
	ctl  *Controller
	et   election.Term
	rec  primary.Record   // the primary record the term was won under
	dr   string           // the DR DC, where the election and the mirror's destination are
	seen primary.Observed // the record in the DR etcd, as the term last read it: every write is fenced on it

	m       *replication.Mirror
	mcancel context.CancelFunc // nil while the mirror does not run
	mdone   chan error
	last    failover.Decision // the last decision logged
}

// enter moves the controller to phase p and announces it as the leader's (topoha status shows it).
func (t *term) enter(ctx context.Context, p Phase, attrs ...any) {
	if !t.ctl.enter(p, attrs...) {
		return
	}
	actx, cancel := context.WithTimeout(ctx, t.ctl.config().RequestTimeout)
	defer cancel()
	if err := t.et.Announce(actx, string(p), time.Now()); err != nil && ctx.Err() == nil {
		t.ctl.log.Warn("leader: phase not announced in the election", "phase", p, "err", err)
	}
}

// blocked waits, doing nothing, until the DR etcd's primary record is readable again (fixed by hand, or
// deleted so that the highest epoch elsewhere holds); the next term then starts from it.
func (t *term) blocked(ctx context.Context) {
	t.ctl.update(func(s *Status) { s.Problem = t.seen.Err.Error() })
	t.enter(ctx, PhaseBlocked, "dc", t.dr, "err", t.seen.Err)
	tick := time.NewTicker(t.ctl.config().Health.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if got := t.ctl.readPrimaryIn(ctx, t.dr); got.Err == nil {
			t.ctl.ev.Info(events.KindLeadership, "the primary record in the DR etcd is readable again; starting over", "dc", t.dr)
			return
		}
	}
}

// demote tells the DR side, the old primary back from a loss, that it is not primary any more, before
// anything is mirrored into it. It reports whether the term may go on.
func (t *term) demote(ctx context.Context) bool {
	t.enter(ctx, PhaseDemoting, "returning_dc", t.dr, "epoch", t.rec.Epoch)
	c := t.ctl.config()
	wctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	ok, err := primary.Write(wctx, t.ctl.cfg.Clients[t.dr], c.Keys().Primary(), t.rec, t.seen, t.et.Fence())
	cancel()
	if err == nil && !ok {
		err = errors.New("the record or the leadership changed meanwhile")
	}
	if err != nil {
		t.ctl.log.Error("leader: cannot record the current primary in the returning DC's etcd", "dc", t.dr, "err", err)
		return false
	}
	t.ctl.ev.Info(events.KindPrimary, "recorded the current primary in the returning DC's etcd; it will be resynced",
		"returning_dc", t.dr, "primary", t.rec.DC, "epoch", t.rec.Epoch)
	t.seen = t.ctl.readPrimaryIn(ctx, t.dr)
	return t.seen.Err == nil
}

// run mirrors and decides every interval until the term ends, the mirror stops, or a failover ran.
func (t *term) run(ctx context.Context) {
	c := t.ctl.config()
	// Every mirror write compares the term and the DR etcd's primary record: a deposed leader, or one
	// whose view of the epoch is stale, cannot write.
	mc := replication.ConfigFor(c, t.ctl.cfg.Clients, t.rec.DC, t.dr, t.ctl.log)
	mc.Fence, mc.Metrics = []clientv3.Cmp{t.et.Fence(), primary.Unchanged(c.Keys().Primary(), t.seen)}, t.ctl.cfg.Metrics
	m, err := replication.New(mc)
	if err != nil {
		t.ctl.log.Error("leader: cannot start the mirror", "err", err)
		<-ctx.Done()
		return
	}
	t.m = m
	defer t.stopMirror()
	tick := time.NewTicker(c.Health.Interval)
	defer tick.Stop()
	for {
		t.mirrorWhenAllowed(ctx)
		select {
		case <-ctx.Done():
			return
		case err := <-t.mdone:
			t.mcancel = nil
			if errors.Is(err, replication.ErrFenced) {
				t.ctl.ev.Warn(events.KindLeadership, "the mirror was fenced (leadership or epoch is stale); stepping down", "err", err)
			}
			return
		case <-tick.C:
		}
		if d := t.decide(ctx); d.Action == failover.ActionFailover {
			t.execute(ctx, d)
			return
		}
	}
}

// mirrorWhenAllowed starts the mirror once the primary's own etcd carries the term's epoch. A switchover
// tells the old primary first: until the new primary's own record carries the epoch, nothing may be
// mirrored out of it. The decisions do not wait for that: with the primary's etcd down it never will,
// and that is when a failover is needed.
func (t *term) mirrorWhenAllowed(ctx context.Context) {
	switch {
	case t.mcancel != nil:
	case t.ctl.mayMirrorFrom(ctx, t.rec):
		mctx, cancel := context.WithCancel(ctx)
		t.mcancel = cancel
		go func() { t.mdone <- t.m.Run(mctx) }()
		t.ctl.update(func(s *Status) { s.Problem = "" })
		t.enter(ctx, PhaseMirroring, "from", t.rec.DC, "to", t.dr, "epoch", t.rec.Epoch)
	default:
		problem := fmt.Sprintf("not mirroring until %s's own etcd carries epoch %d", t.rec.DC, t.rec.Epoch)
		t.ctl.update(func(s *Status) { s.Problem = problem })
		t.enter(ctx, PhaseAwaitingEpoch, "problem", problem)
	}
}

func (t *term) stopMirror() {
	if t.mcancel != nil {
		t.mcancel()
		<-t.mdone
		t.mcancel = nil
	}
}

// decide gathers the facts, answers a pending request, and returns what failover.Decide says.
func (t *term) decide(ctx context.Context) failover.Decision {
	ctl := t.ctl
	if t.mcancel != nil {
		ms := t.m.Status()
		ctl.update(func(s *Status) { s.Mirror = &ms })
	}
	request := ctl.takeRequest(ctx)
	facts := ctl.facts(ctx, t.rec, request)
	facts.Mirroring = t.mcancel != nil
	d := failover.Decide(facts)
	if request != nil {
		ctl.answerRequest(ctx, *request, d)
	}
	if d.Reason != t.last.Reason || d.Action != t.last.Action {
		if d.Action == failover.ActionFailover {
			ctl.ev.Warn(events.KindFailover, "failover decided", "from", d.From, "to", d.To, "trigger", d.Trigger, "forced", d.Forced, "reason", d.Reason)
		} else {
			ctl.log.Info("leader: decision", "action", d.Action, "to", d.To, "trigger", d.Trigger, "reason", d.Reason)
		}
		t.last = d
	}
	ctl.update(func(s *Status) { s.Decision = d })
	return d
}

// execute moves the epoch for a failover or switchover decision. Once the epoch is bumped the failover
// is the convergers' (every controller's, under the convergence lock in the new primary's etcd): the
// primary record this term wrote moves the election away from here at once, and whoever holds the lock
// finishes the failover even if this controller dies now.
func (t *term) execute(ctx context.Context, d failover.Decision) {
	ctl := t.ctl
	xctx := context.WithoutCancel(ctx)
	var err error
	if d.Planned {
		t.enter(ctx, PhaseSwitchingOver, "to", d.To, "epoch", d.NewEpoch)
		drain := func(ctx context.Context) error {
			defer t.stopMirror()
			return ctl.drain(ctx, t.m, t.rec.DC)
		}
		_, err = ctl.executor().Switchover(xctx, d, t.seen, drain, t.et.Fence())
	} else {
		t.stopMirror()
		t.enter(ctx, PhaseFailingOver, "to", d.To, "epoch", d.NewEpoch)
		_, err = ctl.executor().Execute(xctx, d, t.seen, t.et.Fence())
	}
	if err != nil {
		ctl.log.Error("leader: the failover did not start cleanly", "err", err)
	}
	ctl.learnFrom(xctx, d.To, t.rec)
}

// mayMirrorFrom says whether the primary's own etcd holds rec's epoch (or a newer one), so that its data is
// the primary's. It does not wait out a timeout on an etcd its probe sees down.
func (ctl *Controller) mayMirrorFrom(ctx context.Context, rec primary.Record) bool {
	if rec.Epoch == 0 {
		return true
	}
	if ctl.probers[rec.DC].Snapshot().State == health.Down {
		return false
	}
	got := ctl.readPrimaryIn(ctx, rec.DC)
	return got.Record != nil && got.Record.Epoch >= rec.Epoch
}

// learnFrom reads the primary record from dc's etcd and hands it to the control loop if it is newer than
// rec: after a failover, so that the election moves with the record this term just wrote.
func (ctl *Controller) learnFrom(ctx context.Context, dc string, rec primary.Record) {
	if got := ctl.readPrimaryIn(ctx, dc); got.Record != nil && got.Record.Epoch > rec.Epoch {
		ctl.learn(*got.Record)
	}
}

// readPrimaryIn reads the primary record in dc's etcd alone, within the turn's timeout.
func (ctl *Controller) readPrimaryIn(ctx context.Context, dc string) primary.Observed {
	ctx, cancel := context.WithTimeout(ctx, ctl.turnTimeout())
	defer cancel()
	return primary.Read(ctx, ctl.cfg.Clients[dc], ctl.config().Keys().Primary())
}

// executor starts failovers with the configuration in force. NewExecutor cannot fail here: New
// checked the config and the clients it needs.
func (ctl *Controller) executor() *failover.Executor {
	x, _ := failover.NewExecutor(failover.ExecutorConfig{Config: ctl.config(), Clients: ctl.cfg.Clients,
		Logger: ctl.log, Events: ctl.ev, Metrics: ctl.cfg.Metrics})
	return x
}

// drain waits until the mirror has applied every revision the old primary's etcd holds now.
func (ctl *Controller) drain(ctx context.Context, m *replication.Mirror, source string) error {
	rctx, cancel := context.WithTimeout(ctx, ctl.config().RequestTimeout)
	resp, err := ctl.cfg.Clients[source].Get(rctx, ctl.config().Keys().Probe())
	cancel()
	if err != nil {
		return fmt.Errorf("read %s's current revision: %w", source, err)
	}
	want := resp.Header.Revision
	dctx, cancel := context.WithTimeout(ctx, ctl.config().Failover.PromoteTimeout)
	defer cancel()
	for {
		got := m.Status().AppliedRevision
		if got >= want {
			return nil
		}
		select {
		case <-dctx.Done():
			return fmt.Errorf("the mirror applied %s's revision %d of %d within %s", source, got, want, ctl.config().Failover.PromoteTimeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// facts gathers what Decide looks at.
func (ctl *Controller) facts(ctx context.Context, rec primary.Record, request *failover.Request) failover.Facts {
	c := ctl.config()
	flag, paused := ctl.pause(ctx)
	f := failover.Facts{
		Now: time.Now(), Mode: c.Failover.Mode, Primary: rec,
		Health: map[string]health.Snapshot{},
		After:  c.Failover.After, Cooldown: c.Failover.Cooldown,
		Request: request,
		Paused:  paused,
	}
	if !paused && flag.Generation > 0 {
		f.ResumedAt = flag.At
	}
	if rec.Epoch > 0 {
		f.LastFailover = rec.ChangedAt
	}
	for dc, p := range ctl.probers {
		f.Health[dc] = p.Snapshot()
	}
	f.Witnesses = ctl.askWitnesses(ctx, rec.DC, f.Health[rec.DC].State == health.Down)
	return f
}

// askWitnesses asks the configured witnesses about the primary DC when its etcd looks down from here,
// the only time Decide needs them; a witness that does not answer counts as not seeing it down.
func (ctl *Controller) askWitnesses(ctx context.Context, primaryDC string, primaryDown bool) failover.Witnesses {
	c := ctl.config()
	w := failover.Witnesses{Configured: len(c.Failover.Witnesses)}
	if w.Configured == 0 || !primaryDown {
		ctl.update(func(s *Status) { s.Witnesses = nil })
		return w
	}
	answers := witness.Ask(ctx, c.Failover.Witnesses, c.Health.Timeout)
	w.SeeDown = witness.CountSeeingDown(answers, primaryDC)
	ctl.update(func(s *Status) { s.Witnesses = answers })
	return w
}
