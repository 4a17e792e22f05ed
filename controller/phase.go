package controller

import (
	"log/slog"
	"time"

	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/primary"
)

// Phase is what a controller is doing. Every controller is in exactly one phase; only the leader is in
// any but PhaseFollowing. docs/design.md ("The controller's phases") draws the transitions.
type Phase string

const (
	// PhaseFollowing: not leading. The controller probes both etcds, follows the primary record, runs
	// on_role_change and its DC's self-fence, and campaigns in the DR DC's etcd.
	PhaseFollowing Phase = "following"
	// PhaseBlocked: leading, but the primary record in the DR etcd is not a record. Nothing is mirrored or
	// decided until an operator fixes or deletes it.
	PhaseBlocked Phase = "blocked"
	// PhaseDemoting: leading; the DR side is the old primary, back from a loss, and is being told it is
	// not primary any more, before anything is mirrored into it.
	PhaseDemoting Phase = "demoting"
	// PhaseAwaitingEpoch: leading; the primary's own etcd does not carry the current epoch (it is down, or
	// a switchover has not reached it), so nothing is mirrored out of it. Decisions go on: with the
	// primary's etcd down, a failover may be due.
	PhaseAwaitingEpoch Phase = "awaiting_epoch"
	// PhaseMirroring: leading; mirroring the primary's topo into the DR etcd and deciding every interval.
	PhaseMirroring Phase = "mirroring"
	// PhaseFailingOver: leading; carrying out a failover: epoch bump, promotions, hooks.
	PhaseFailingOver Phase = "failing_over"
	// PhaseSwitchingOver: leading; carrying out a planned switchover: drain, epoch, reparents.
	PhaseSwitchingOver Phase = "switching_over"
)

// Phases lists every phase, for the phase metric.
func Phases() []Phase {
	return []Phase{PhaseFollowing, PhaseBlocked, PhaseDemoting, PhaseAwaitingEpoch, PhaseMirroring, PhaseFailingOver, PhaseSwitchingOver}
}

// changesPrimary says whether the controller is moving the primary: its term, and the mirror a
// switchover drains, must not be ended by the election moving with the new record meanwhile.
func (p Phase) changesPrimary() bool { return p == PhaseFailingOver || p == PhaseSwitchingOver }

// enter moves the controller to phase p: the only place the phase changes. It logs the change, records
// it as an event and sets the status; it reports false, doing nothing, when the controller is in p already.
func (ctl *Controller) enter(p Phase, attrs ...any) bool {
	now := time.Now()
	ctl.mu.Lock()
	from, since := ctl.status.Phase, ctl.status.PhaseSince
	if from == p {
		ctl.mu.Unlock()
		return false
	}
	ctl.status.Phase, ctl.status.PhaseSince = p, now
	ctl.mu.Unlock()
	level := slog.LevelInfo
	if p == PhaseBlocked || p == PhaseAwaitingEpoch {
		level = slog.LevelWarn
	}
	attrs = append([]any{"from", from, "to", p, "after", now.Sub(since).Round(time.Millisecond)}, attrs...)
	ctl.ev.Record(level, events.KindPhase, "phase changed", attrs...)
	return true
}

// phase is the phase the controller is in.
func (ctl *Controller) phase() Phase {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	return ctl.status.Phase
}

// termStart is what a new leadership term does first.
type termStart string

const (
	// startGiveUp: the DR etcd's primary record could not be read (a timeout under load); the term is
	// given up and the controller campaigns again rather than idle in it.
	startGiveUp termStart = "give_up"
	// startAdopt: the DR etcd holds a newer record than the one the term was won under (the election was
	// won where it was before a failover this controller had not read yet); the record is handed to the
	// control loop, which moves the campaign and so ends the term.
	startAdopt termStart = "adopt"
	// startBlocked: the DR etcd's record is not a record.
	startBlocked termStart = "blocked"
	// startDemote: the DR side holds an older epoch, or none after a failover: it is the old primary back
	// from a loss, and must learn of its demotion before it is mirrored into.
	startDemote termStart = "demote"
	// startLead: the record the term was won under holds in the DR etcd.
	startLead termStart = "lead"
)

// decideTermStart decides what a term won under followed does, from what the DR etcd holds (seen). It is
// pure: the table in phase_test.go is the whole of its behaviour.
func decideTermStart(followed primary.Record, seen primary.Observed) termStart {
	switch {
	case seen.Unreachable():
		return startGiveUp
	case seen.Record != nil && seen.Record.Epoch > followed.Epoch:
		return startAdopt
	case seen.Garbage():
		return startBlocked
	case followed.Epoch > 0 && (seen.Record == nil || seen.Record.Epoch < followed.Epoch):
		return startDemote
	}
	return startLead
}
