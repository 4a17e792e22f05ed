// Package failover decides when the DR side must become primary and carries the failover out.
//
// The decision is a pure function of a snapshot of facts (Decide): health of both DCs' etcds, the
// primary record, mode, pause, cooldown, witnesses, an operator's request. It does no I/O, so every row of
// the failure matrix is a table test, and every failover can be explained afterwards from the facts it
// was decided on.
//
// Carrying it out has two parts. The Executor moves the epoch and writes the failover's progress record
// in the same transaction (Execute, Switchover). A Converger, run by every controller, then drives that
// record to its end under a lock in the new primary's etcd: promotions confirmed from the topo, retried
// until every shard has its primary, whoever dies on the way.
package failover

import (
	"fmt"
	"time"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/primary"
)

// Trigger says what started a failover.
type Trigger string

// Triggers.
const (
	TriggerAuto   Trigger = "auto"   // the primary DC's etcd was down for failover.after
	TriggerSignal Trigger = "signal" // SIGUSR1 to a controller
	TriggerCLI    Trigger = "cli"    // topoha failover --to DC
	TriggerFlag   Trigger = "flag"   // topoha run --force-primary DC
	TriggerHTTP   Trigger = "http"   // POST /failover?to=DC
	// TriggerSwitchover is a planned switchover (topoha switchover --to DC): both DCs healthy, the mirror
	// drained before the epoch moves, switchover_command instead of promote_command.
	TriggerSwitchover Trigger = "switchover"
)

// Request is an operator's failover request.
type Request struct {
	To      string    `json:"to"`
	Force   bool      `json:"force"`
	Trigger Trigger   `json:"trigger"`
	At      time.Time `json:"at"`
}

// Witnesses is what the configured witnesses answered about the primary DC.
type Witnesses struct {
	Configured int // how many are configured; 0 means none
	SeeDown    int // how many answered and see the primary DC's etcd down
}

// Facts is everything Decide looks at.
type Facts struct {
	Now     time.Time
	Mode    config.Mode
	Paused  bool
	Primary primary.Record
	// Health has a snapshot for each of the two DCs.
	Health map[string]health.Snapshot
	// After and Cooldown are failover.after and failover.cooldown.
	After, Cooldown time.Duration
	// LastFailover is when the last failover happened; zero if never.
	LastFailover time.Time
	Witnesses    Witnesses
	// Request is an operator's pending request, if any.
	Request *Request
	// Mirroring says the leader's mirror out of the primary runs: a switchover drains it.
	Mirroring bool
	// ResumedAt is when automatic failover was last resumed (`topoha resume`); zero if never.
	ResumedAt time.Time
}

// Action is what to do.
type Action string

// Actions.
const (
	ActionNone     Action = "none"
	ActionFailover Action = "failover"
)

// Decision is the outcome of Decide.
type Decision struct {
	Action  Action  `json:"action"`
	From    string  `json:"from,omitempty"`
	To      string  `json:"to,omitempty"`
	Trigger Trigger `json:"trigger,omitempty"`
	Forced  bool    `json:"forced,omitempty"`
	Reason  string  `json:"reason"`
	Refusal bool    `json:"refusal,omitempty"` // an operator's request that was refused
	// Planned is a switchover: the old primary is told first, the mirror drained, then the epoch moves.
	Planned  bool  `json:"planned,omitempty"`
	NewEpoch int64 `json:"new_epoch,omitempty"`
}

// Decide returns what to do given the facts. It has no side effects.
func Decide(f Facts) Decision {
	from := f.Primary.DC
	to := otherDC(f.Health, from)
	if f.Request != nil {
		return decideRequest(f, from)
	}
	none := func(format string, args ...any) Decision {
		return Decision{Action: ActionNone, From: from, To: to, Reason: fmt.Sprintf(format, args...)}
	}
	if f.Mode != config.ModeAuto {
		return none("failover.mode is %s: no automatic failover", f.Mode)
	}
	if f.Paused {
		return none("paused: no automatic failover")
	}
	src := f.Health[from]
	down := src.DownFor(f.Now)
	switch src.State {
	case health.Down:
	case health.Degraded:
		// An alarm refuses the topo's writes but Vitess serves on; an emergency reparent across DCs,
		// which can lose transactions, is the wrong cure for a full etcd.
		return none("%s etcd is degraded: %s; an alarm is no DC loss: no automatic failover (clear the alarm, or fail over by hand)",
			from, src.AlarmText())
	default:
		return none("%s etcd is %s", from, src.State)
	}
	if down < f.After {
		return none("%s etcd down for %s, failover after %s", from, down.Round(time.Millisecond), f.After)
	}
	// Time down while paused does not count: an operator who resumes after maintenance, before every
	// probe has seen the etcd back, must not get a failover for the outage the pause covered.
	if sinceResume := f.Now.Sub(f.ResumedAt); !f.ResumedAt.IsZero() && sinceResume < f.After && f.ResumedAt.After(src.Since) {
		return none("%s etcd down for %s, but automatic failover was resumed %s ago: failover after %s from the resume", from,
			down.Round(time.Millisecond), max(sinceResume, 0).Round(time.Millisecond), f.After)
	}
	if dst := f.Health[to]; dst.State != health.Up {
		return none("%s etcd down for %s, but %s etcd is %s: nowhere to fail over to", from, down.Round(time.Millisecond), to, dst.Describe())
	}
	if !f.LastFailover.IsZero() && f.Now.Sub(f.LastFailover) < f.Cooldown {
		return none("%s etcd down for %s, but the last failover was %s ago (cooldown %s)", from, down.Round(time.Millisecond),
			f.Now.Sub(f.LastFailover).Round(time.Second), f.Cooldown)
	}
	if w := f.Witnesses; w.Configured > 0 && 2*w.SeeDown <= w.Configured {
		return none("%s etcd down for %s here, but only %d of %d witnesses see it down (a majority must)", from,
			down.Round(time.Millisecond), w.SeeDown, w.Configured)
	}
	return Decision{Action: ActionFailover, From: from, To: to, Trigger: TriggerAuto, NewEpoch: f.Primary.Epoch + 1,
		Reason: fmt.Sprintf("%s etcd down for %s (failover.after %s), %s etcd up", from, down.Round(time.Millisecond), f.After, to)}
}

func decideRequest(f Facts, from string) Decision {
	r := f.Request
	refuse := func(format string, args ...any) Decision {
		return Decision{Action: ActionNone, From: from, To: r.To, Trigger: r.Trigger, Refusal: true, Reason: fmt.Sprintf(format, args...)}
	}
	target, known := f.Health[r.To]
	switch {
	case !known:
		return refuse("refused: %q is not a configured DC", r.To)
	case r.To == from:
		return refuse("refused: %s is already primary (epoch %d)", r.To, f.Primary.Epoch)
	case target.State != health.Up && !r.Force:
		return refuse("refused: %s etcd is %s; fix it, or force the failover", r.To, target.Describe())
	case r.Trigger == TriggerSwitchover && f.Health[from].State != health.Up:
		return refuse("refused: a switchover needs both DCs healthy and %s etcd is %s; use topoha failover", from, f.Health[from].Describe())
	case r.Trigger == TriggerSwitchover && !f.Mirroring:
		return refuse("refused: the leader's mirror out of %s is not running yet (it starts once %s's own etcd carries epoch %d), and a switchover drains it; retry in a moment", from, from, f.Primary.Epoch)
	}
	reason := fmt.Sprintf("requested by %s", r.Trigger)
	if r.Force && target.State != health.Up {
		reason += fmt.Sprintf(", forced although %s etcd is %s", r.To, target.State)
	}
	return Decision{Action: ActionFailover, From: from, To: r.To, Trigger: r.Trigger, Forced: r.Force, NewEpoch: f.Primary.Epoch + 1, Reason: reason,
		Planned: r.Trigger == TriggerSwitchover}
}

func otherDC(h map[string]health.Snapshot, dc string) string {
	for name := range h {
		if name != dc {
			return name
		}
	}
	return ""
}
