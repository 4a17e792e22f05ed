package fence

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/primary"
)

// ManualLift is an operator's `topoha unfence`.
type ManualLift struct {
	// DC is the fenced DC.
	DC string
	// Force lifts the fence although the other DC's primary record cannot be read: only when that DC is
	// really lost.
	Force bool
	// Clear removes the record without running unfence_command: after the DC's tablets were reparented
	// as the old side.
	Clear bool
	// By names the operator, for the record and the event.
	By string
}

// ErrRefused is returned when a manual lift would risk two writable primaries; the error says why and
// what to do instead.
var ErrRefused = errors.New("refused")

// Unfence lifts dc's fence by hand: unfence_command for its tablets, then the record marked as lifted, so
// that the DC's controllers do not fence again while it is still cut off. With Clear it only removes the
// record. It returns what it did, for a person; an error wrapping ErrRefused when the other DC may have
// become primary meanwhile, which would make two writable primaries.
func Unfence(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, ev *events.Recorder, l ManualLift) (string, error) {
	if _, ok := c.DCs[l.DC]; !ok {
		return "", fmt.Errorf("--dc %q: name the fenced DC, one of %v", l.DC, c.DCNames())
	}
	key := c.Keys().Fence()
	rctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	obs := Read(rctx, clients[l.DC], key)
	cancel()
	switch {
	case obs.Unreachable() || (obs.Garbage() && !l.Clear):
		return "", fmt.Errorf("%s's fence record: %w", l.DC, obs.Err)
	case obs.Absent():
		return fmt.Sprintf("%s is not fenced; nothing to do", l.DC), nil
	case l.Clear:
		return clearRecord(ctx, c, clients[l.DC], ev, l, obs)
	case obs.Record.State == StateLifted:
		r := obs.Record
		return fmt.Sprintf("%s's fence was already lifted by %s at %s", l.DC, r.LiftedBy, r.LiftedAt.Format(time.RFC3339)), nil
	}
	if err := mayLift(ctx, c, clients, l, obs.Record); err != nil {
		return "", err
	}
	r := obs.Record
	if err := Lift(ctx, c, r); err != nil {
		ev.Error(events.KindFence, "fence not lifted by hand: unfence_command failed", "dc", l.DC, "by", l.By, "err", err)
		return "", fmt.Errorf("unfence_command failed; the fence stays recorded: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	ok, err := MarkLifted(wctx, clients[l.DC], key, obs, l.By, time.Now())
	cancel()
	if err == nil && !ok {
		err = errors.New("the record changed meanwhile; look at `topoha status`")
	}
	if err != nil {
		return "", fmt.Errorf("the tablets were made writable, but the record was not marked lifted (the controllers may fence again): %w", err)
	}
	ev.Warn(events.KindFence, "fence lifted by hand", "dc", l.DC, "epoch", r.Epoch, "by", l.By, "tablets", len(r.Tablets))
	return fmt.Sprintf("%s's fence lifted: unfence_command ran for %d tablets; its controllers will not fence again until they reach the other DC's etcd",
		l.DC, len(r.Tablets)), nil
}

// mayLift refuses a lift unless the primary record, read from every etcd, still names the fenced DC at
// the fenced epoch. With Force the other DC's record may be unreadable, never the fenced DC's own.
func mayLift(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, l ManualLift, r *Record) error {
	observed := primary.ReadAll(ctx, clients, c.Keys().Primary(), c.RequestTimeout)
	dcs := c.DCNames()
	if l.Force {
		dcs = []string{l.DC}
	}
	held, err := primary.HeldByEvery(c.InitialPrimary, dcs, observed)
	if err != nil {
		other := c.OtherDC(l.DC)
		if l.Force || observed[other].Err == nil {
			return fmt.Errorf("%w: cannot read %s's primary record: %w", ErrRefused, l.DC, err)
		}
		return fmt.Errorf("%w: cannot read %s's primary record (%v): if %s became primary meanwhile, lifting the fence makes two writable primaries; "+
			"if %s is really lost, run again with --force", ErrRefused, other, observed[other].Err, other, other)
	}
	if l.Force {
		held = primary.HeldByAny(c.InitialPrimary, c.DCNames(), observed)
	}
	if !r.StillPrimary(held) {
		return fmt.Errorf("%w: %s was fenced at epoch %d, but %s is primary now (epoch %d): %s's tablets are the old side. "+
			"Reparent them as replicas, then `topoha unfence --dc %s --clear` removes the record", ErrRefused, r.DC, r.Epoch, held.DC, held.Epoch, r.DC, r.DC)
	}
	return nil
}

// clearRecord removes the fence record without running a command.
func clearRecord(ctx context.Context, c *config.Config, cli *clientv3.Client, ev *events.Recorder, l ManualLift, obs Observed) (string, error) {
	dctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	ok, err := Delete(dctx, cli, c.Keys().Fence(), obs.ModRevision)
	cancel()
	if err == nil && !ok {
		err = errors.New("the record changed meanwhile; look at `topoha status` and run it again")
	}
	if err != nil {
		return "", err
	}
	ev.Info(events.KindFence, "fence record cleared by hand; no command run", "dc", l.DC, "by", l.By)
	return fmt.Sprintf("%s's fence record removed; no tablet was touched", l.DC), nil
}
