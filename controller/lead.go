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

// lead is one leadership term: mirror the primary's topo into the DR etcd under the term's fence and the
// epoch seen there, decide every interval, and fail over when the decision says so. It returns when the
// term ends, the mirror is fenced, or a failover ran (the primary record then moved the election).
func (ctl *Controller) lead(ctx context.Context, term election.Term, rec primary.Record) {
	c := ctl.config()
	dr := c.OtherDC(rec.DC)
	key := c.Keys().Primary()
	seen := ctl.readPrimaryIn(ctx, dr)
	// The terms given up here are not leadership: nothing is done in them, and they are neither counted
	// nor announced.
	switch {
	case ctx.Err() != nil:
		return
	case seen.Err != nil && seen.ModRevision == 0:
		// Not read (a timeout under load): give the term up and campaign again rather than idle in it.
		ctl.log.Warn("won the election but cannot read the primary record in the DR etcd; campaigning again", "dc", dr, "err", seen.Err)
		return
	case seen.Record != nil && seen.Record.Epoch > rec.Epoch:
		// Won where the election was before a failover this controller has not read yet: hand the record to
		// the control loop, which moves the campaign and so ends this term. Giving the term up at once
		// would only win it again on the same stale record until the loop gets round to it.
		ctl.log.Info("won the election with a stale primary record; adopting the DR etcd's and campaigning where it says",
			"epoch", rec.Epoch, "newer_epoch", seen.Record.Epoch, "primary", seen.Record.DC)
		ctl.learn(*seen.Record)
		select {
		case <-ctx.Done():
		case <-time.After(c.Election.TTL):
		}
		return
	}

	ctl.update(func(s *Status) { s.Leading = true })
	ctl.cfg.Metrics.LeaderChanged()
	ctl.ev.Info(events.KindLeadership, "became the leader", "election_in", dr, "primary", rec.DC, "epoch", rec.Epoch)
	defer func() {
		ctl.update(func(s *Status) { s.Leading = false; s.Mirror = nil })
		ctl.cfg.Metrics.LeaderChanged()
		ctl.ev.Info(events.KindLeadership, "no longer the leader")
	}()
	switch {
	case seen.Err != nil:
		ctl.ev.Error(events.KindLeadership, "the primary record in the DR etcd is not a record; doing nothing until it is fixed", "dc", dr, "err", seen.Err)
		ctl.update(func(s *Status) { s.Problem = seen.Err.Error() })
		defer ctl.update(func(s *Status) { s.Problem = "" })
		ctl.waitRecordFixed(ctx, dr)
		return
	case rec.Epoch > 0 && (seen.Record == nil || seen.Record.Epoch < rec.Epoch):
		// The DR side is the old primary, back from a loss: tell it it is not primary any more before
		// anything is mirrored into it.
		if err := ctl.recordDemotion(ctx, dr, key, rec, seen, term); err != nil {
			ctl.log.Error("leader: cannot record the current primary in the returning DC's etcd", "dc", dr, "err", err)
			return
		}
		if seen = ctl.readPrimaryIn(ctx, dr); seen.Err != nil {
			return
		}
	}
	// Every mirror write compares the term and the DR etcd's primary record: a deposed leader, or one whose
	// view of the epoch is stale, cannot write.
	fence := []clientv3.Cmp{term.Fence(), primary.Unchanged(key, seen)}
	mc := replication.ConfigFor(c, ctl.cfg.Clients, rec.DC, dr, ctl.log)
	mc.Fence, mc.Metrics = fence, ctl.cfg.Metrics
	m, err := replication.New(mc)
	if err != nil {
		ctl.log.Error("leader: cannot start the mirror", "err", err)
		<-ctx.Done()
		return
	}
	var mcancel context.CancelFunc // nil while the mirror does not run
	mdone := make(chan error, 1)
	startMirror := func() {
		mctx, cancel := context.WithCancel(ctx)
		mcancel = cancel
		go func() { mdone <- m.Run(mctx) }()
	}
	stopMirror := func() {
		if mcancel != nil {
			mcancel()
			<-mdone
			mcancel = nil
		}
	}
	defer stopMirror()
	defer ctl.update(func(s *Status) { s.Problem = "" })

	tick := time.NewTicker(c.Health.Interval)
	defer tick.Stop()
	var last failover.Decision
	waiting := false
	for {
		// A switchover tells the old primary first: until the new primary's own record carries the epoch,
		// nothing may be mirrored out of it. The decisions do not wait for that: with the primary's etcd
		// down it never will, and that is when a failover is needed.
		switch {
		case mcancel != nil:
		case ctl.mayMirrorFrom(ctx, rec):
			startMirror()
			ctl.update(func(s *Status) { s.Problem = "" })
			ctl.log.Info("leader: mirroring", "from", rec.DC, "to", dr, "epoch", rec.Epoch)
		case !waiting:
			waiting = true
			problem := fmt.Sprintf("not mirroring until %s's own etcd carries epoch %d", rec.DC, rec.Epoch)
			ctl.update(func(s *Status) { s.Problem = problem })
			ctl.log.Warn("leader: " + problem)
		}
		select {
		case <-ctx.Done():
			return
		case err := <-mdone:
			mcancel = nil
			if errors.Is(err, replication.ErrFenced) {
				ctl.ev.Warn(events.KindLeadership, "the mirror was fenced (leadership or epoch is stale); stepping down", "err", err)
			}
			return
		case <-tick.C:
		}
		if mcancel != nil {
			ms := m.Status()
			ctl.update(func(s *Status) { s.Mirror = &ms })
		}
		request := ctl.takeRequest(ctx)
		facts := ctl.facts(ctx, rec, request)
		facts.Mirroring = mcancel != nil
		d := failover.Decide(facts)
		if request != nil {
			ctl.answerRequest(ctx, *request, d)
		}
		if d.Reason != last.Reason || d.Action != last.Action {
			if d.Action == failover.ActionFailover {
				ctl.ev.Warn(events.KindFailover, "failover decided", "from", d.From, "to", d.To, "trigger", d.Trigger, "forced", d.Forced, "reason", d.Reason)
			} else {
				ctl.log.Info("leader: decision", "action", d.Action, "to", d.To, "trigger", d.Trigger, "reason", d.Reason)
			}
			last = d
		}
		ctl.update(func(s *Status) { s.Decision = d })
		if d.Action != failover.ActionFailover {
			continue
		}
		// Once the epoch is bumped the failover must finish even if the term ends meanwhile (the primary
		// record moves the election away from here at once): every step has its own timeout.
		xctx := context.WithoutCancel(ctx)
		ctl.changing.Store(true)
		defer ctl.changing.Store(false)
		var res *failover.Result
		if d.Planned {
			drain := func(ctx context.Context) error {
				defer stopMirror()
				return ctl.drain(ctx, m, rec.DC)
			}
			res, err = ctl.executor().Switchover(xctx, d, seen, drain, term.Fence())
		} else {
			stopMirror()
			res, err = ctl.executor().Execute(xctx, d, seen, term.Fence())
		}
		if err != nil {
			ctl.log.Error("leader: failover finished with errors", "err", err)
		}
		if res != nil {
			ctl.update(func(s *Status) { s.Failover = res })
		}
		ctl.learnFrom(xctx, d.To, rec)
		return
	}
}

// waitRecordFixed returns when the primary record in dc's etcd is readable again (fixed by hand, or deleted
// so that the highest epoch elsewhere holds) or ctx ends; the next term then starts from it.
func (ctl *Controller) waitRecordFixed(ctx context.Context, dc string) {
	tick := time.NewTicker(ctl.config().Health.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if got := ctl.readPrimaryIn(ctx, dc); got.Err == nil {
			ctl.ev.Info(events.KindLeadership, "the primary record in the DR etcd is readable again; starting over", "dc", dc)
			return
		}
	}
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

// readPrimaryIn reads the primary record in dc's etcd alone.
func (ctl *Controller) readPrimaryIn(ctx context.Context, dc string) primary.Observed {
	ctx, cancel := context.WithTimeout(ctx, ctl.config().RequestTimeout)
	defer cancel()
	return primary.Read(ctx, ctl.cfg.Clients[dc], ctl.config().Keys().Primary())
}

// executor carries out failovers with the configuration in force. NewExecutor cannot fail here: New
// checked the config and the clients it needs.
func (ctl *Controller) executor() *failover.Executor {
	x, _ := failover.NewExecutor(failover.ExecutorConfig{Config: ctl.config(), Clients: ctl.cfg.Clients,
		DC: ctl.cfg.DC, ID: ctl.cfg.ID, Logger: ctl.log, Events: ctl.ev, Metrics: ctl.cfg.Metrics})
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

func (ctl *Controller) recordDemotion(ctx context.Context, dr, key string, rec primary.Record, seen primary.Observed, term election.Term) error {
	ctx, cancel := context.WithTimeout(ctx, ctl.config().RequestTimeout)
	defer cancel()
	ok, err := primary.Write(ctx, ctl.cfg.Clients[dr], key, rec, seen, term.Fence())
	if err == nil && !ok {
		err = errors.New("the record or the leadership changed meanwhile")
	}
	if err == nil {
		ctl.ev.Info(events.KindPrimary, "recorded the current primary in the returning DC's etcd; it will be resynced", "returning_dc", dr, "primary", rec.DC, "epoch", rec.Epoch)
	}
	return err
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
