package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/controller"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/httpapi"
	"github.com/topoha/topoha/metrics"
)

// runFlags are `topoha run`'s flags.
type runFlags struct {
	commonFlags
	dc, id, forcePrimary, listen string
}

func parseRunFlags(args []string, stderr io.Writer) (runFlags, error) {
	var f runFlags
	fs := newFlagSet("run", stderr, &f.commonFlags)
	fs.StringVar(&f.dc, "dc", "", "the DC this controller runs in (required)")
	host, _ := os.Hostname()
	fs.StringVar(&f.id, "id", fmt.Sprintf("%s-%d", host, os.Getpid()), "this controller's name among controllers")
	fs.StringVar(&f.forcePrimary, "force-primary", "", "fail over to this DC at start, even if its etcd looks unhealthy")
	fs.StringVar(&f.listen, "listen", "", "HTTP address for /healthz, /readyz, /leader, /primary, /status (default: the config's listen)")
	return f, f.parse(fs, args)
}

// check validates the flags that name DCs against the config.
func (f runFlags) check(cfg *config.Config) error {
	if _, ok := cfg.DCs[f.dc]; !ok {
		return fmt.Errorf("--dc %q: name the DC this controller runs in, one of %v", f.dc, cfg.DCNames())
	}
	if _, ok := cfg.DCs[f.forcePrimary]; f.forcePrimary != "" && !ok {
		return fmt.Errorf("--force-primary %q: not a DC of the config; use one of %v", f.forcePrimary, cfg.DCNames())
	}
	return nil
}

// runRun is `topoha run`: the controller, its history writer, its HTTP endpoints and its signals.
func runRun(ctx context.Context, args []string, _, stderr io.Writer) int {
	// Caught from the start: their default action would kill a controller that is still starting.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	defer signal.Stop(sigs)
	f, err := parseRunFlags(args, stderr)
	if err != nil {
		return exitCodeFor(err)
	}
	log, err := f.logger(stderr)
	if err != nil {
		return fail(stderr, "run", err)
	}
	cfg, err := config.Load(f.config)
	if err == nil {
		err = f.check(cfg)
	}
	if err != nil {
		return fail(stderr, "run", err)
	}
	clients, closeAll, err := connectAll(ctx, cfg, log.Warn)
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		return fail(stderr, "run", err)
	}
	defer closeAll()
	if err := runController(ctx, f, cfg, clients, log.With("id", f.id, "dc", f.dc), sigs); err != nil {
		return fail(stderr, "run", err)
	}
	return exitOK
}

// runController runs the controller until ctx ends, with its history kept in etcd, its HTTP endpoints on
// --listen, and the signals of sigs.
func runController(ctx context.Context, f runFlags, cfg *config.Config, clients map[string]*clientv3.Client, log *slog.Logger, sigs <-chan os.Signal) error {
	reg := prometheus.NewRegistry()
	build := stampedVersion()
	m, err := metrics.New(reg, build)
	if err != nil {
		return err
	}
	m.KnownDCs(cfg.DCNames()...)
	rec, stopHistory, err := startHistory(ctx, cfg, clients, f.id, f.dc, log, m)
	if err != nil {
		return err
	}
	defer stopHistory()
	ctl, err := controller.New(controller.Config{Config: cfg, DC: f.dc, ID: f.id, Clients: clients, Logger: log, Events: rec, Metrics: m})
	if err != nil {
		return err
	}
	if f.forcePrimary != "" {
		req := failover.Request{To: f.forcePrimary, Force: true, Trigger: failover.TriggerFlag, At: time.Now().UTC()}
		if err := ctl.RequestFailover(ctx, req); err != nil {
			return err
		}
	}
	go handleSignals(ctx, sigs, ctl, f.config, log)
	if f.listen == "" {
		f.listen = cfg.Listen
	}
	api, err := httpapi.Listen(httpapi.Config{Addr: f.listen, Controller: ctl, Registry: reg, TokenFile: cfg.HTTP.TokenFile, Logger: log})
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	apiCtx, stopAPI := context.WithCancel(ctx)
	apiDone := make(chan error, 1)
	go func() { apiDone <- api.Serve(apiCtx) }()
	if cfg.Failover.Mode == config.ModeAuto && len(cfg.Failover.Witnesses) == 0 {
		rec.Warn(events.KindLifecycle, "automatic failover with two sites and no witnesses (failover.allow_two_site_auto): a partition between the DCs can make both of them primary")
	}
	if cfg.Failover.Mode == config.ModeAuto && cfg.Failover.Cooldown == 0 {
		rec.Warn(events.KindLifecycle, "failover.cooldown is 0: no hold-down between automatic failovers; a link that flaps can move the primary back and forth, each move a reparent of every shard")
	}
	rec.Info(events.KindLifecycle, "controller started", "cluster", cfg.Cluster, "mode", cfg.Failover.Mode, "http", api.Addr(),
		"post_endpoints", cfg.HTTP.TokenFile != "", "version", build.Version, "revision", build.Revision)
	err = ctl.Run(ctx)
	stopAPI()
	if apiErr := <-apiDone; apiErr != nil && err == nil {
		err = fmt.Errorf("http: %w", apiErr)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	rec.Info(events.KindLifecycle, "controller stopped by signal; leadership resigned")
	return nil
}

// startHistory starts the writer of the events of controller id (in dc) into etcd. It outlives ctx until
// stop is called, so that the last events (stopped, resigned) are kept.
func startHistory(ctx context.Context, cfg *config.Config, clients map[string]*clientv3.Client, id, dc string, log *slog.Logger, m *metrics.Metrics) (*events.Recorder, func(), error) {
	rec, err := events.New(events.Config{Clients: clients, Prefix: cfg.Keys().History(), Controller: id, DC: dc,
		MaxEvents: cfg.History.MaxEvents, Timeout: cfg.RequestTimeout, Logger: log, Metrics: m})
	if err != nil {
		return nil, nil, err
	}
	recCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rec.Run(recCtx)
	}()
	return rec, func() {
		cancel()
		<-done
	}, nil
}

// handleSignals carries out the operator's signals until ctx ends: SIGUSR1 asks for a failover to the
// other DC, SIGUSR2 toggles the pause flag, SIGHUP reloads the config file at path.
func handleSignals(ctx context.Context, sigs <-chan os.Signal, ctl *controller.Controller, path string, log *slog.Logger) {
	for {
		var sig os.Signal
		select {
		case <-ctx.Done():
			return
		case sig = <-sigs:
		}
		switch sig {
		case syscall.SIGUSR1:
			current := ctl.Status().Primary.DC
			if current == "" {
				log.Error("SIGUSR1: the primary is not known yet (no etcd read so far); send it again in a moment")
				continue
			}
			to := ctl.Config().OtherDC(current)
			log.Info("SIGUSR1: failover requested", "to", to)
			if err := ctl.RequestFailover(ctx, failover.Request{To: to, Trigger: failover.TriggerSignal, At: time.Now().UTC()}); err != nil {
				log.Error("SIGUSR1: failover not requested", "err", err)
			}
		case syscall.SIGUSR2:
			if err := ctl.TogglePause(ctx); err != nil {
				log.Error("SIGUSR2: pause not toggled", "err", err)
			}
		case syscall.SIGHUP:
			_ = ctl.Reload(func() (*config.Config, error) { return config.Load(path) })
		}
	}
}

// connectAll opens a client of every DC's etcd. A DC that does not answer at start is reported and
// probed like any other (a controller may start during a DC loss); if none answers, or one refuses
// topoha's user, the start fails.
func connectAll(ctx context.Context, cfg *config.Config, warn func(string, ...any)) (map[string]*clientv3.Client, func(), error) {
	clients, closeAll, err := cfg.OpenClients()
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for _, dc := range cfg.DCNames() {
		err := reach(ctx, cfg, dc)
		if fe := (*config.FieldError)(nil); errors.As(err, &fe) {
			closeAll()
			return nil, nil, err
		}
		if err != nil {
			warn("etcd not reachable at start; probing it", "dc", dc, "err", err)
			errs = append(errs, err)
		}
	}
	if len(errs) == len(clients) {
		closeAll()
		return nil, nil, fmt.Errorf("no DC's etcd answers:\n%w", errors.Join(errs...))
	}
	return clients, closeAll, nil
}
