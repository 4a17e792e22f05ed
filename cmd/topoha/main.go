// Command topoha keeps a two-datacenter Vitess topo alive: it mirrors the topo between the DCs' etcd
// clusters and (with `run`) fails over when the primary DC is lost. See README.md and docs/design.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/topoha/topoha/internal/demo"
	"github.com/topoha/topoha/vitess"
)

// Exit codes shared by every subcommand.
const (
	exitOK        = 0
	exitDiffer    = 1 // verify: the prefixes differ
	exitBadConfig = 2 // bad flags, bad config, unreachable endpoint at start, or any other error
)

type command struct {
	name, args, help string
	run              func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "--config FILE --dc NAME [--id ID] [--force-primary DC] [--listen ADDR] [--log-format text|json]", "the controller: election, probes, mirror, automatic failover", runRun},
		{"status", "--config FILE [--json]", "primary, leader, pause, etcd health, mirror progress, last failover; reads etcd directly", runStatus},
		{"plan", "--config FILE [--to DC] [--json]", "what a failover would do for every shard now: exit 0 all ready, 1 some cannot fail over, 2 error", runPlan},
		{"failover", "--config FILE --to DC [--force] [--wait 3m]", "ask the leader to fail over now (or, forced with no leader, do it from here)", runFailover},
		{"switchover", "--config FILE --to DC [--wait 3m]", "planned: drain the mirror, move the epoch, PlannedReparentShard every shard; nothing lost", runSwitchover},
		{"pause", "--config FILE", "no automatic failover until resume (mirroring and manual failover go on)", runPause},
		{"resume", "--config FILE", "allow automatic failover again", runResume},
		{"unfence", "--config FILE --dc DC [--force] [--clear]", "lift a DC's self-fence by hand (unfence_command), or --clear its record after reparenting", runUnfence},
		{"mirror", "--config FILE", "mirror the topo prefix from the primary DC's etcd to the DR DC's etcd (no election, no failover)", runMirror},
		{"witness", "--config FILE --listen ADDR [--id ID]", "at a third site: probe every DC's etcd and serve the view that automatic failover needs a majority of", runWitness},
		{"history", "--config FILE [--json] [--limit N]", "the event history kept in etcd: leadership, health, failovers, overrides, hooks", runHistory},
		{"verify", "--config FILE [--json]", "compare the two prefixes key by key: exit 0 equal, 1 different, 2 error", runVerify},
		{"demo", "", "two DCs on embedded etcd servers: mirror, DC loss, failover, return; narrated, needs nothing but this binary", runDemo},
		{"version", "", "print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal starts a clean stop, a second one kills the process at once.
		<-ctx.Done()
		stop()
	}()
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return exitBadConfig
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	if args[0] == demoPromote {
		return runDemoPromote(ctx, args[1:], stderr)
	}
	fmt.Fprintf(stderr, "topoha: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitBadConfig
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: topoha COMMAND [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n  %8s %s\n", c.name, c.args, "", c.help)
	}
	fmt.Fprintln(w, "\n`topoha COMMAND -h` lists a command's flags.")
}

// commonFlags are the flags every config-reading command takes.
type commonFlags struct {
	config    string
	logFormat string
	logLevel  string
}

func newFlagSet(name string, stderr io.Writer, cf *commonFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("topoha "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cf.config, "config", "", "config file (see config.yaml)")
	fs.StringVar(&cf.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&cf.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return fs
}

// parse parses args and checks the common flags. A non-nil error has been printed; exitCodeFor says how
// to exit.
func (cf *commonFlags) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q; every option is a flag", fs.Arg(0))
		fmt.Fprintf(fs.Output(), "%s: %v\n", fs.Name(), err)
		return err
	}
	if cf.config == "" {
		err := errors.New("--config is required: the path of the config file (see config.yaml)")
		fmt.Fprintf(fs.Output(), "%s: %v\n", fs.Name(), err)
		return err
	}
	return nil
}

// exitCodeFor is the exit code after a flag error: -h asked for help, anything else was a mistake.
func exitCodeFor(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitBadConfig
}

func (cf *commonFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cf.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", cf.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cf.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", cf.logFormat)
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("topoha demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return exitCodeFor(err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fail(stderr, "demo", err)
	}
	if err := demo.Run(ctx, stdout, []string{exe, demoPromote}); err != nil {
		return fail(stderr, "demo", err)
	}
	return exitOK
}

// demoPromote is the demo's stand-in for vtctldclient EmergencyReparentShard: it writes the new primary
// into the Shard record as Vitess does. It is not listed in the usage: only the demo runs it.
const demoPromote = "demo-promote"

func runDemoPromote(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("topoha "+demoPromote, flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("etcd", "", "etcd endpoint holding the topo")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 || *endpoint == "" {
		fmt.Fprintln(stderr, "usage: topoha demo-promote -etcd URL KEYSPACE/SHARD TABLET")
		return exitBadConfig
	}
	if err := vitess.PromoteAt(ctx, *endpoint, "", "/vt", fs.Arg(0), fs.Arg(1), true); err != nil {
		return fail(stderr, demoPromote, err)
	}
	return exitOK
}
