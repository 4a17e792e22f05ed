package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/primary"
)

// exitNotReady is plan's exit code when some shard cannot fail over.
const exitNotReady = 1

// runPlan prints what a failover would do for every shard now, read from the target DC's etcd. It
// writes nothing and needs no controller.
func runPlan(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	fs := newFlagSet("plan", stderr, &cf)
	to := fs.String("to", "", "the DC a failover would promote (default: the DC that is not primary)")
	asJSON := fs.Bool("json", false, "print JSON (the same as the /plan endpoint)")
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	cfg, clients, closeAll, err := openAll(cf.config)
	if err != nil {
		return fail(stderr, "plan", err)
	}
	defer closeAll()
	if *to != "" {
		if _, ok := cfg.DCs[*to]; !ok {
			return fail(stderr, "plan", fmt.Errorf("--to %q: name the DC a failover would promote, one of %v", *to, cfg.DCNames()))
		}
	}
	// The primary record says which side is primary; only etcds that answer a probe are asked, so that a
	// lost DC costs a probe's timeout, not a request's.
	observed := map[string]primary.Observed{}
	for _, dc := range cfg.DCNames() {
		hc, err := health.ConfigFor(cfg, dc)
		if err != nil {
			return fail(stderr, "plan", err)
		}
		if health.Probe(ctx, hc.Etcd, hc.Key, hc.Timeout).State().Serving() {
			rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
			observed[dc] = primary.Read(rctx, clients[dc], cfg.Keys().Primary())
			cancel()
		}
	}
	current := primary.HeldByAny(cfg.InitialPrimary, cfg.DCNames(), observed)
	if *to == "" {
		*to = cfg.OtherDC(current.DC)
	}
	if _, ok := observed[*to]; !ok {
		return fail(stderr, "plan", fmt.Errorf("%s's etcd does not answer: the plan is read from the etcd of the DC a failover promotes; check `topoha status`", *to))
	}
	plan, err := discovery.Compute(ctx, discovery.Input{Config: cfg, Client: clients[*to], From: cfg.OtherDC(*to), To: *to,
		Epoch: current.Epoch + 1, Timeout: cfg.RequestTimeout, CheckCells: true})
	if err != nil {
		return fail(stderr, "plan", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(plan); err != nil {
			return fail(stderr, "plan", err)
		}
	} else {
		printPlan(stdout, plan)
	}
	if !plan.Ready() {
		return exitNotReady
	}
	return exitOK
}

// printPlan writes one line per shard, the ones that cannot fail over first, then the plan's own
// problems and warnings.
func printPlan(w io.Writer, p *discovery.Plan) {
	source := "listed in failover.shards"
	if p.Discovered {
		source = "discovered"
	}
	fmt.Fprintf(w, "PLAN     a failover %s -> %s, read from %s's etcd at revision %d (%s shards)\n", p.From, p.To, p.ReadFrom, p.Revision, source)
	fmt.Fprintf(w, "SUMMARY  %s\n", p.Summarize(0).Line())
	for _, pass := range []bool{false, true} {
		for _, s := range p.Shards {
			if s.Ready() != pass {
				continue
			}
			if pass {
				fmt.Fprintf(w, "READY    %s: promote %s (primary now %s; ignore %s)\n", s.ID(), s.Tablet, orNone(s.Primary), orNone(strings.Join(s.IgnoreTablets, ",")))
			} else {
				fmt.Fprintf(w, "NOT      %s: %s\n", s.ID(), strings.Join(s.Problems, "; "))
			}
		}
	}
	for _, problem := range p.Problems {
		fmt.Fprintf(w, "PROBLEM  %s\n", problem)
	}
	for _, warning := range p.Warnings {
		fmt.Fprintf(w, "WARNING  %s\n", warning)
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
