package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/replication"
)

// progressLogInterval is how often `topoha mirror` logs its progress, like make-mirror's key count but with
// the lag.
const progressLogInterval = 30 * time.Second

func runMirror(ctx context.Context, args []string, _, stderr io.Writer) int {
	var cf commonFlags
	fs := newFlagSet("mirror", stderr, &cf)
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	log, err := cf.logger(stderr)
	if err != nil {
		return fail(stderr, "mirror", err)
	}
	cfg, src, dst, destRecord, err := setupMirror(ctx, cf.config)
	if err != nil {
		if ctx.Err() != nil {
			// SIGTERM while connecting is a stop, not an unreachable endpoint.
			log.Info("stopped by signal before mirroring started")
			return exitOK
		}
		return fail(stderr, "mirror", err)
	}
	defer src.client.Close()
	defer dst.client.Close()
	// A failover recorded in the destination while this runs fences it: the direction would be wrong.
	mc := mirrorConfig(cfg, src, dst, log)
	mc.Fence = []clientv3.Cmp{primary.Unchanged(cfg.Keys().Primary(), destRecord)}
	m, err := replication.New(mc)
	if err != nil {
		return fail(stderr, "mirror", err)
	}
	log.Info("mirroring", "from", src.dc, "to", dst.dc, "prefix", cfg.Mirror.SourceKeyPrefix(),
		"dest_prefix", cfg.Mirror.DestKeyPrefix(), "checkpoint", cfg.Keys().MirrorCheckpoint())
	go logProgress(ctx, m, log)
	err = m.Run(ctx)
	if errors.Is(err, context.Canceled) {
		log.Info("stopped by signal", "applied_revision", m.Status().AppliedRevision)
		return exitOK
	}
	if errors.Is(err, replication.ErrFenced) {
		err = fmt.Errorf("the primary record in %s's etcd changed (a failover?), so %s -> %s is no longer the mirror's direction; stopped: %w", dst.dc, src.dc, dst.dc, err)
	}
	return fail(stderr, "mirror", err)
}

func logProgress(ctx context.Context, m *replication.Mirror, log *slog.Logger) {
	t := time.NewTicker(progressLogInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s := m.Status()
			log.Info("mirror progress", "phase", s.Phase, "applied_revision", s.AppliedRevision,
				"source_revision", s.SourceRevision, "lag_revisions", s.LagRevisions(),
				"keys_applied", s.KeysApplied, "keys_per_second", fmt.Sprintf("%.0f", s.KeysPerSecond), "last_error", s.LastError)
		}
	}
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	fs := newFlagSet("verify", stderr, &cf)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	maxDiffs := fs.Int("max-differences", 100, "list at most this many differences (all are counted)")
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	cfg, src, dst, _, err := setupMirror(ctx, cf.config)
	if err != nil {
		return fail(stderr, "verify", err)
	}
	defer src.client.Close()
	defer dst.client.Close()
	rep, err := replication.Verify(ctx, mirrorConfig(cfg, src, dst, nil), *maxDiffs)
	if err != nil {
		return fail(stderr, "verify", err)
	}
	if *asJSON {
		out := struct {
			Source      string `json:"source_dc"`
			Destination string `json:"destination_dc"`
			*replication.Report
		}{src.dc, dst.dc, rep}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return fail(stderr, "verify", err)
		}
	} else {
		printReport(stdout, cfg, src.dc, dst.dc, rep)
	}
	if !rep.Equal {
		return exitDiffer
	}
	return exitOK
}

func printReport(w io.Writer, cfg *config.Config, srcDC, dstDC string, rep *replication.Report) {
	verdict := "EQUAL"
	if !rep.Equal {
		verdict = fmt.Sprintf("DIFFERENT (%d differences)", rep.DifferenceCount)
	}
	fmt.Fprintf(w, "%s: %s in %s (revision %d) vs %s in %s (revision %d), %d keys compared\n", verdict,
		cfg.Mirror.SourceKeyPrefix(), srcDC, rep.SourceRevision, cfg.Mirror.DestKeyPrefix(), dstDC, rep.DestRevision, rep.KeysCompared)
	if rep.AtCheckpoint {
		fmt.Fprintln(w, "read at the mirror checkpoint: exact even while the mirror runs")
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	where := map[string]string{
		replication.Missing:   "in " + srcDC + ", not in " + dstDC,
		replication.Extra:     "in " + dstDC + ", not in " + srcDC,
		replication.Different: "values differ",
	}
	for _, d := range rep.Differences {
		fmt.Fprintf(w, "  %-9s %s  (%s)\n", d.Kind, d.Key, where[d.Kind])
	}
	if rep.DifferenceCount > len(rep.Differences) {
		fmt.Fprintf(w, "  ... and %d more (raise --max-differences to list them)\n", rep.DifferenceCount-len(rep.Differences))
	}
}

type dcClient struct {
	dc     string
	client *clientv3.Client
}

// setupMirror loads the config, connects to both DCs' etcds and picks the mirror's direction from the
// primary record (primary.HeldByEvery: both must answer). It also returns what the destination's record
// held, for the fence.
func setupMirror(ctx context.Context, path string) (*config.Config, dcClient, dcClient, primary.Observed, error) {
	var none primary.Observed
	cfg, err := config.Load(path)
	if err != nil {
		return nil, dcClient{}, dcClient{}, none, err
	}
	clients, closeAll, err := cfg.OpenClients()
	if err != nil {
		return nil, dcClient{}, dcClient{}, none, err
	}
	for _, dc := range cfg.DCNames() {
		if err := reach(ctx, cfg, dc); err != nil {
			closeAll()
			return nil, dcClient{}, dcClient{}, none, err
		}
	}
	observed := primary.ReadAll(ctx, clients, cfg.Keys().Primary(), cfg.RequestTimeout)
	rec, err := primary.HeldByEvery(cfg.InitialPrimary, cfg.DCNames(), observed)
	if err != nil {
		closeAll()
		return nil, dcClient{}, dcClient{}, none, err
	}
	dst := cfg.OtherDC(rec.DC)
	return cfg, dcClient{rec.DC, clients[rec.DC]}, dcClient{dst, clients[dst]}, observed[dst], nil
}

// reach says whether dc's etcd answers: every member is probed at once (health.Probe), within
// dial_timeout, so one hung member costs nothing. An unreachable endpoint must stop a start, not
// surface later. An etcd that answers but refuses topoha's user is a *config.FieldError: a start must
// stop on it even where a DC that does not answer is only reported.
func reach(ctx context.Context, cfg *config.Config, dc string) error {
	e := cfg.DCs[dc].Etcd
	cc, err := cfg.EtcdClientConfig(dc)
	if err != nil {
		return err
	}
	res := health.Probe(ctx, cc, cfg.Keys().Probe(), e.DialTimeout)
	if res.Refused != "" {
		return &config.FieldError{Field: "dcs." + dc + ".etcd.username", Msg: res.Refused}
	}
	if !res.State().Serving() {
		return fmt.Errorf("dcs.%s.etcd.endpoints: cannot reach etcd at %s within dial_timeout %s: %w; check that etcd runs there and that this host reaches it",
			dc, e, e.DialTimeout, res.Err)
	}
	return nil
}

// mirrorConfig is the mirror from src to dst as the config describes it.
func mirrorConfig(cfg *config.Config, src, dst dcClient, log *slog.Logger) replication.Config {
	clients := map[string]*clientv3.Client{src.dc: src.client, dst.dc: dst.client}
	return replication.ConfigFor(cfg, clients, src.dc, dst.dc, log)
}

// fail prints err for a person and returns the exit code for errors.
func fail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "topoha %s: %v\n", cmd, err)
	return exitBadConfig
}
