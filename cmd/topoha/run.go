package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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

func runRun(ctx context.Context, args []string, _, stderr io.Writer) int {
	// Caught from the start: their default action would kill a controller that is still starting.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var cf commonFlags
	fs := newFlagSet("run", stderr, &cf)
	dc := fs.String("dc", "", "the DC this controller runs in (required)")
	host, _ := os.Hostname()
	id := fs.String("id", fmt.Sprintf("%s-%d", host, os.Getpid()), "this controller's name among controllers")
	forcePrimary := fs.String("force-primary", "", "fail over to this DC at start, even if its etcd looks unhealthy")
	listen := fs.String("listen", "", "HTTP address for /healthz, /readyz, /leader, /primary, /status (default: the config's listen)")
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	log, err := cf.logger(stderr)
	if err != nil {
		return fail(stderr, "run", err)
	}
	cfg, err := config.Load(cf.config)
	if err != nil {
		return fail(stderr, "run", err)
	}
	if _, ok := cfg.DCs[*dc]; !ok {
		return fail(stderr, "run", fmt.Errorf("--dc %q: name the DC this controller runs in, one of %v", *dc, cfg.DCNames()))
	}
	if *forcePrimary != "" {
		if _, ok := cfg.DCs[*forcePrimary]; !ok {
			return fail(stderr, "run", fmt.Errorf("--force-primary %q: not a DC of the config; use one of %v", *forcePrimary, cfg.DCNames()))
		}
	}
	clients, err := connectAll(ctx, cfg, log.Warn)
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		return fail(stderr, "run", err)
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	log = log.With("id", *id, "dc", *dc)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, version())
	if err != nil {
		return fail(stderr, "run", err)
	}
	m.KnownDCs(cfg.DCNames()...)
	rec, err := events.New(events.Config{Clients: clients, Prefix: cfg.Keys().History(), Controller: *id, DC: *dc,
		MaxEvents: cfg.History.MaxEvents, Timeout: cfg.RequestTimeout, Logger: log, Metrics: m})
	if err != nil {
		return fail(stderr, "run", err)
	}
	// The history writer outlives the controller so that its last events (stopped, resigned) are kept.
	recCtx, stopRec := context.WithCancel(context.WithoutCancel(ctx))
	recDone := make(chan struct{})
	go func() {
		defer close(recDone)
		_ = rec.Run(recCtx)
	}()
	defer func() {
		stopRec()
		<-recDone
	}()
	ctl, err := controller.New(controller.Config{Config: cfg, DC: *dc, ID: *id, Clients: clients, Logger: log, Events: rec, Metrics: m})
	if err != nil {
		return fail(stderr, "run", err)
	}
	if *forcePrimary != "" {
		if err := ctl.RequestFailover(ctx, failover.Request{To: *forcePrimary, Force: true, Trigger: failover.TriggerFlag, At: time.Now().UTC()}); err != nil {
			return fail(stderr, "run", err)
		}
	}

	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				switch sig {
				case syscall.SIGUSR1:
					current := ctl.Status().Primary.DC
					if current == "" {
						log.Error("SIGUSR1: the primary is not known yet (no etcd read so far); send it again in a moment")
						continue
					}
					to := cfg.OtherDC(current)
					log.Info("SIGUSR1: failover requested", "to", to)
					if err := ctl.RequestFailover(ctx, failover.Request{To: to, Trigger: failover.TriggerSignal, At: time.Now().UTC()}); err != nil {
						log.Error("SIGUSR1: failover not requested", "err", err)
					}
				case syscall.SIGUSR2:
					if err := ctl.TogglePause(ctx); err != nil {
						log.Error("SIGUSR2: pause not toggled", "err", err)
					}
				case syscall.SIGHUP:
					_ = ctl.Reload(func() (*config.Config, error) { return config.Load(cf.config) })
				}
			}
		}
	}()
	if *listen == "" {
		*listen = cfg.Listen
	}
	api, err := httpapi.Listen(httpapi.Config{Addr: *listen, Controller: ctl, Registry: reg, TokenFile: cfg.HTTP.TokenFile, Logger: log})
	if err != nil {
		return fail(stderr, "run", fmt.Errorf("--listen: %w", err))
	}
	apiCtx, stopAPI := context.WithCancel(ctx)
	apiDone := make(chan error, 1)
	go func() { apiDone <- api.Serve(apiCtx) }()
	if cfg.Failover.Mode == config.ModeAuto && len(cfg.Failover.Witnesses) == 0 {
		rec.Warn(events.KindLifecycle, "automatic failover with two sites and no witnesses (failover.allow_two_site_auto): a partition between the DCs can make both of them primary")
	}
	rec.Info(events.KindLifecycle, "controller started", "cluster", cfg.Cluster, "mode", cfg.Failover.Mode, "http", api.Addr(),
		"post_endpoints", cfg.HTTP.TokenFile != "", "version", version())
	err = ctl.Run(ctx)
	stopAPI()
	if apiErr := <-apiDone; apiErr != nil && err == nil {
		err = fmt.Errorf("http: %w", apiErr)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fail(stderr, "run", err)
	}
	rec.Info(events.KindLifecycle, "controller stopped by signal; leadership resigned")
	return exitOK
}

// connectAll opens a client of every DC's etcd. A DC that does not answer at start is reported and
// probed like any other (a controller may start during a DC loss); if none answers, the start fails.
func connectAll(ctx context.Context, cfg *config.Config, warn func(string, ...any)) (map[string]*clientv3.Client, error) {
	clients := map[string]*clientv3.Client{}
	closeAll := func() {
		for _, c := range clients {
			c.Close()
		}
	}
	var errs []error
	for _, dc := range cfg.DCNames() {
		cli, err := newClient(cfg, dc)
		if err != nil {
			closeAll()
			return nil, err
		}
		clients[dc] = cli
		if err := probe(ctx, cfg, dc, cli); err != nil {
			warn("etcd not reachable at start; probing it", "dc", dc, "err", err)
			errs = append(errs, err)
		}
	}
	if len(errs) == len(clients) {
		closeAll()
		return nil, fmt.Errorf("no DC's etcd answers:\n%w", errors.Join(errs...))
	}
	return clients, nil
}
