package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
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
// primary record (the highest epoch in either etcd; initial_primary before any failover). It also
// returns what the destination's record held, for the fence.
func setupMirror(ctx context.Context, path string) (*config.Config, dcClient, dcClient, primary.Observed, error) {
	var none primary.Observed
	cfg, err := config.Load(path)
	if err != nil {
		return nil, dcClient{}, dcClient{}, none, err
	}
	clients := map[string]*clientv3.Client{}
	closeAll := func() {
		for _, c := range clients {
			c.Close()
		}
	}
	for _, dc := range cfg.DCNames() {
		cli, err := connect(ctx, cfg, dc)
		if err != nil {
			closeAll()
			return nil, dcClient{}, dcClient{}, none, err
		}
		clients[dc] = cli
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

// connect opens a client of one DC's etcd and proves with one read that it answers: clientv3.New alone
// does not dial, and an unreachable endpoint must stop the start, not surface later.
func connect(ctx context.Context, cfg *config.Config, dc string) (*clientv3.Client, error) {
	cli, err := newClient(cfg, dc)
	if err != nil {
		return nil, err
	}
	if err := probe(ctx, cfg, dc, cli); err != nil {
		cli.Close()
		return nil, err
	}
	return cli, nil
}

func newClient(cfg *config.Config, dc string) (*clientv3.Client, error) {
	field := "dcs." + dc + ".etcd"
	cc, err := cfg.DCs[dc].Etcd.ClientConfig(field)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cc)
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return nil, fmt.Errorf("%s.username/password_file: etcd refused the credentials of user %q: check the user and the password file's content", field, cc.Username)
	case err != nil:
		return nil, fmt.Errorf("%s.endpoints: %w", field, err)
	}
	return cli, nil
}

// probe reads from a DC's etcd, each attempt within its dial_timeout. The client's balancer sends each
// attempt to the next member, so one hung member costs an attempt, not the start: as many attempts as
// there are endpoints.
func probe(ctx context.Context, cfg *config.Config, dc string, cli *clientv3.Client) error {
	e := cfg.DCs[dc].Etcd
	var err error
	for range len(e.Endpoints) {
		pctx, cancel := context.WithTimeout(ctx, e.DialTimeout)
		_, err = cli.Get(pctx, cfg.Keys().Probe())
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("dcs.%s.etcd.endpoints: cannot reach etcd at %s within dial_timeout %s: %w; check that etcd runs there and that this host reaches it",
			dc, e, e.DialTimeout, err)
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
