package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/override"
)

// signalRequestTTL is how long a request from a signal or --force-primary waits for a leader to take it.
const signalRequestTTL = time.Minute

// RequestFailover asks the leader, whichever controller it is, to fail over (SIGUSR1, --force-primary):
// the request goes through etcd like `topoha failover`'s.
func (ctl *Controller) RequestFailover(ctx context.Context, r failover.Request) error {
	if err := override.WriteRequest(ctx, ctl.config(), ctl.cfg.Clients, r, signalRequestTTL); err != nil {
		err = fmt.Errorf("failover request to %s not delivered: %w", r.To, err)
		ctl.ev.Error(events.KindOverride, "failover request not delivered", "to", r.To, "force", r.Force, "trigger", r.Trigger, "err", err)
		return err
	}
	ctl.ev.Info(events.KindOverride, "failover requested", "to", r.To, "force", r.Force, "trigger", r.Trigger)
	return nil
}

// takeRequest takes the newest pending request from the etcds not known to be down, within the turn's
// timeout (turnTimeout).
func (ctl *Controller) takeRequest(ctx context.Context) *failover.Request {
	return override.TakeRequest(ctx, ctl.config(), ctl.reachable(), ctl.turnTimeout(), ctl.log)
}

// answerRequest records the decision taken on a request, for `topoha failover` to report.
func (ctl *Controller) answerRequest(ctx context.Context, r failover.Request, d failover.Decision) {
	if err := override.WriteAnswer(ctx, ctl.config(), ctl.reachable(), r, d); err != nil {
		ctl.log.Warn("cannot record the answer to a request", "err", err)
	}
	if d.Refusal {
		ctl.ev.Warn(events.KindOverride, "failover request refused", "to", r.To, "force", r.Force, "trigger", r.Trigger, "reason", d.Reason)
	} else {
		ctl.ev.Info(events.KindOverride, "failover request taken", "to", r.To, "force", r.Force, "trigger", r.Trigger, "action", d.Action, "reason", d.Reason)
	}
}

// pause returns the pause flag that holds, and whether automatic failover is paused (override.Memory):
// a flag that cannot be read counts as set.
func (ctl *Controller) pause(ctx context.Context) (override.Pause, bool) {
	p, paused, spread := ctl.pauses.Read(ctx, ctl.config(), ctl.reachable(), ctl.turnTimeout())
	for _, s := range spread {
		ctl.ev.Info(events.KindOverride, "pause flag copied into an etcd that held an older one", "to_dc", s.DC,
			"paused", s.Pause.Paused, "generation", s.Pause.Generation, "by", s.Pause.By)
	}
	return p, paused
}

// SetPaused sets or clears the pause flag (override.WritePause).
func (ctl *Controller) SetPaused(ctx context.Context, on bool, by string) error {
	written, missed, err := override.WritePause(ctx, ctl.config(), ctl.cfg.Clients, on, by)
	if err != nil {
		ctl.ev.Error(events.KindOverride, "pause flag not changed", "paused", on, "by", by, "err", err)
		return err
	}
	// Seen at once: the next decision must not wait for a read that a lost DC could make stale.
	ctl.pauses.Saw(written)
	ctl.ev.Info(events.KindOverride, "pause flag changed", "paused", on, "by", by, "not_written_to", strings.Join(missed, ","))
	return nil
}

// TogglePause flips the pause flag (SIGUSR2).
func (ctl *Controller) TogglePause(ctx context.Context) error {
	_, paused := ctl.pause(ctx)
	return ctl.SetPaused(ctx, !paused, "signal")
}

// turnTimeout bounds the reads the control loop and the leader's decisions make every interval (the
// primary record, the pause flag, requests): health.timeout, like a probe, and not request_timeout. An
// etcd that hangs before its probes mark it down must not hold a turn up for long: the loop's /healthz
// and the time to a failover decision both depend on it.
func (ctl *Controller) turnTimeout() time.Duration { return ctl.config().Health.Timeout }

// reachable returns the clients of the DCs whose etcd is not known to be down, so that the leader's loop
// does not wait a timeout on a lost DC at every turn.
func (ctl *Controller) reachable() map[string]*clientv3.Client {
	out := map[string]*clientv3.Client{}
	for dc, p := range ctl.probers {
		if p.Snapshot().State != health.Down {
			out[dc] = ctl.cfg.Clients[dc]
		}
	}
	return out
}
