package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/fence"
	"github.com/topoha/topoha/primary"
)

// runUnfence lifts a DC's self-fence by hand: unfence_command for its tablets, then the record marked as
// lifted, so that the DC's controllers do not fence again while it is still cut off. It refuses when the
// other DC may have become primary meanwhile, which would make two writable primaries.
func runUnfence(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	fs := newFlagSet("unfence", stderr, &cf)
	dc := fs.String("dc", "", "the fenced DC (required)")
	force := fs.Bool("force", false, "lift it although the other DC's primary record cannot be read: only when that DC is really lost")
	clearOnly := fs.Bool("clear", false, "remove the fence record without running unfence_command: after the DC's tablets were reparented as the old side")
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	cfg, clients, closeAll, err := openAll(cf.config)
	if err != nil {
		return fail(stderr, "unfence", err)
	}
	defer closeAll()
	if _, ok := cfg.DCs[*dc]; !ok {
		return fail(stderr, "unfence", fmt.Errorf("--dc %q: name the fenced DC, one of %v", *dc, cfg.DCNames()))
	}
	key := fence.Key(cfg.KeyRoot())
	rctx, cancel := context.WithTimeout(ctx, cfg.Health.Timeout)
	obs := fence.Read(rctx, clients[*dc], key)
	cancel()
	switch {
	case obs.Err != nil && (obs.ModRevision == 0 || !*clearOnly):
		return fail(stderr, "unfence", fmt.Errorf("%s's fence record: %w", *dc, obs.Err))
	case obs.Record == nil && obs.Err == nil:
		fmt.Fprintf(stdout, "%s is not fenced; nothing to do\n", *dc)
		return exitOK
	}
	ev, flush, err := cliEvents(cfg, clients)
	if err != nil {
		return fail(stderr, "unfence", err)
	}
	defer flush()
	by := "cli:" + userAtHost()
	if *clearOnly {
		dctx, cancel := context.WithTimeout(ctx, cfg.Health.Timeout)
		ok, err := fence.Delete(dctx, clients[*dc], key, obs.ModRevision)
		cancel()
		if err == nil && !ok {
			err = errors.New("the record changed meanwhile; look at `topoha status` and run it again")
		}
		if err != nil {
			return fail(stderr, "unfence", err)
		}
		ev.Info(events.KindFence, "fence record cleared by hand; no command run", "dc", *dc, "by", by)
		fmt.Fprintf(stdout, "%s's fence record removed; no tablet was touched\n", *dc)
		return exitOK
	}
	r := obs.Record
	if r.State == fence.StateLifted {
		fmt.Fprintf(stdout, "%s's fence was already lifted by %s at %s\n", *dc, r.LiftedBy, r.LiftedAt.Format(time.RFC3339))
		return exitOK
	}

	observed := primary.ReadAll(ctx, clients, primary.Key(cfg.KeyRoot()), cfg.Health.Timeout)
	for _, name := range cfg.DCNames() {
		if err := observed[name].Err; err != nil && !(*force && name != *dc) {
			return refuse(stdout, "cannot read %s's primary record (%v): if %s became primary meanwhile, lifting the fence makes two writable primaries; "+
				"if %s is really lost, run again with --force", name, err, name, name)
		}
	}
	held := primary.ResolveAll(cfg.InitialPrimary, cfg.DCNames(), observed)
	if !r.StillPrimary(held) {
		return refuse(stdout, "%s was fenced at epoch %d, but %s is primary now (epoch %d): %s's tablets are the old side. "+
			"Reparent them as replicas, then `topoha unfence --dc %s --clear` removes the record", r.DC, r.Epoch, held.DC, held.Epoch, r.DC, r.DC)
	}
	if err := fence.Lift(ctx, cfg, r); err != nil {
		ev.Error(events.KindFence, "fence not lifted by hand: unfence_command failed", "dc", *dc, "by", by, "err", err)
		return fail(stderr, "unfence", fmt.Errorf("unfence_command failed; the fence stays recorded: %w", err))
	}
	wctx, cancel := context.WithTimeout(ctx, cfg.Health.Timeout)
	ok, err := fence.MarkLifted(wctx, clients[*dc], key, obs, by, time.Now())
	cancel()
	if err == nil && !ok {
		err = errors.New("the record changed meanwhile; look at `topoha status`")
	}
	if err != nil {
		return fail(stderr, "unfence", fmt.Errorf("the tablets were made writable, but the record was not marked lifted (the controllers may fence again): %w", err))
	}
	ev.Warn(events.KindFence, "fence lifted by hand", "dc", *dc, "epoch", r.Epoch, "by", by, "tablets", len(r.Tablets))
	fmt.Fprintf(stdout, "%s's fence lifted: unfence_command ran for %d tablets; its controllers will not fence again until they reach the other DC's etcd\n",
		*dc, len(r.Tablets))
	return exitOK
}

// refuse explains why a command did nothing and returns exit code 1.
func refuse(w io.Writer, format string, args ...any) int {
	fmt.Fprintf(w, "refused: "+format+"\n", args...)
	return exitDiffer
}
