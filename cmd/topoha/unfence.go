package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/topoha/topoha/fence"
)

// runUnfence lifts a DC's self-fence by hand (fence.Unfence): exit 0 when done or nothing to do, 1 when
// refused, 2 on error.
func runUnfence(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	fs := newFlagSet("unfence", stderr, &cf)
	var l fence.ManualLift
	fs.StringVar(&l.DC, "dc", "", "the fenced DC (required)")
	fs.BoolVar(&l.Force, "force", false, "lift it although the other DC's primary record cannot be read: only when that DC is really lost")
	fs.BoolVar(&l.Clear, "clear", false, "remove the fence record without running unfence_command: after the DC's tablets were reparented as the old side")
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	cfg, clients, closeAll, err := openAll(cf.config)
	if err != nil {
		return fail(stderr, "unfence", err)
	}
	defer closeAll()
	ev, flush, err := cliEvents(cfg, clients)
	if err != nil {
		return fail(stderr, "unfence", err)
	}
	defer flush()
	l.By = "cli:" + userAtHost()
	done, err := fence.Unfence(ctx, cfg, clients, ev, l)
	switch {
	case errors.Is(err, fence.ErrRefused):
		fmt.Fprintln(stdout, err)
		return exitDiffer
	case err != nil:
		return fail(stderr, "unfence", err)
	}
	fmt.Fprintln(stdout, done)
	return exitOK
}
