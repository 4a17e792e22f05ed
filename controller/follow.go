package controller

import (
	"context"
	"time"

	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/primary"
)

// follower is what the control loop carries from one turn to the next.
type follower struct {
	// known is the primary record with the highest epoch ever seen: an etcd that does not answer, or
	// answers from before a failover, cannot take this controller back to an older primary.
	known primary.Record
	// role is this DC's role the hooks were last told of; "" before the first record was read.
	role  Role
	roles chan roleChange
}

// follow reads the primary record (or takes the one a term handed over), keeps the highest epoch seen,
// passes a change of this DC's role to the hooks, and returns the record to campaign under.
func (ctl *Controller) follow(ctx context.Context, f *follower) primary.Record {
	// A record a term handed over is used as it is: reading both etcds first would wait out the timeout
	// of the one that is down, while the election stays where it was.
	rec, read := ctl.takeLearned(), true
	if rec.DC == "" {
		rec, read = ctl.readPrimary(ctx)
	}
	if f.known.DC == "" || rec.Epoch > f.known.Epoch {
		if f.known.DC != "" {
			ctl.ev.Info(events.KindPrimary, "primary changed", "from", f.known.DC, "to", rec.DC, "epoch", rec.Epoch, "reason", rec.Reason)
		}
		f.known = rec
	}
	rec = f.known
	if read {
		ctl.primaryRead.Store(true)
	}
	// A role is only taken from a record some etcd answered with: a guess from initial_primary while
	// both are unreachable must not move a VIP.
	if now := ctl.roleOf(rec); now != f.role && read {
		ctl.ev.Info(events.KindRole, "role of this DC changed", "role", now, "old_role", orNone(f.role), "primary", rec.DC, "epoch", rec.Epoch)
		select {
		case <-f.roles: // superseded before its hook ran
		default:
		}
		f.roles <- roleChange{role: now, rec: rec}
		f.role = now
	}
	_, paused := ctl.pause(ctx)
	ctl.update(func(s *Status) { s.Primary, s.Paused, s.LoopAt = rec, paused, time.Now() })
	return rec
}

// readPrimary reads the primary record from the etcds not known to be down (from both when both are),
// and says whether any etcd answered with a record or with none: garbage is no answer to take a role from.
func (ctl *Controller) readPrimary(ctx context.Context) (primary.Record, bool) {
	c := ctl.config()
	clients := ctl.reachable()
	if len(clients) == 0 {
		clients = ctl.cfg.Clients
	}
	obs := primary.ReadAll(ctx, clients, c.Keys().Primary(), ctl.turnTimeout())
	read := false
	for _, o := range obs {
		read = read || o.Err == nil
	}
	return primary.HeldByAny(c.InitialPrimary, c.DCNames(), obs), read
}

// campaign is this controller's candidacy in the election of one DR DC, under one epoch.
type campaign struct {
	dr    string
	epoch int64
	end   func() // nil while not campaigning
}

func (c *campaign) stop() {
	if c.end != nil {
		c.end()
		c.end = nil
	}
}

// campaignUnder campaigns in the DR DC's etcd under rec, where the leader writes: after a failover the
// election moves with the record. It leaves a running campaign alone while it is under rec, or while this
// controller is moving the primary itself (the record its failover wrote must not end its own term).
func (ctl *Controller) campaignUnder(ctx context.Context, camp *campaign, rec primary.Record) error {
	dr := ctl.config().OtherDC(rec.DC)
	moved := camp.dr != dr || camp.epoch != rec.Epoch
	if camp.end != nil && (!moved || ctl.phase().changesPrimary()) {
		return nil
	}
	camp.stop()
	c := ctl.config()
	member, err := c.EtcdClientConfig(dr)
	if err != nil {
		return err
	}
	el, err := election.New(election.Config{
		Client: ctl.cfg.Clients[dr], Member: member, Prefix: c.Keys().Election(), ID: ctl.cfg.ID, DC: ctl.cfg.DC,
		TTL: c.Election.TTL, RetryInterval: c.Health.Interval, RequestTimeout: c.RequestTimeout, Logger: ctl.log,
		OnStartedLeading: func(lctx context.Context, term election.Term) { ctl.lead(lctx, term, rec) },
	})
	if err != nil {
		return err
	}
	*camp = campaign{dr: dr, epoch: rec.Epoch, end: el.Start(ctx)}
	ctl.log.Info("campaigning", "election_in", dr, "primary", rec.DC, "epoch", rec.Epoch)
	return nil
}
