// Package controller is the loop of one `topoha run` process: it probes both DCs' etcds, follows the
// primary record, campaigns for leadership in the DR DC's etcd, and — while leading — mirrors the primary's
// topo into the DR etcd under the leader's fence, decides failovers from the facts and carries them out.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/fence"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/metrics"
	"github.com/topoha/topoha/override"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/replication"
	"github.com/topoha/topoha/witness"
)

// Config configures a Controller.
type Config struct {
	Config *config.Config
	// DC is the datacenter this controller runs in; ID names it among controllers.
	DC, ID string
	// Clients has a client of each DC's etcd.
	Clients map[string]*clientv3.Client
	Logger  *slog.Logger
	// Events records what the controller sees and does; without it, that is only logged.
	Events  *events.Recorder
	Metrics *metrics.Metrics
}

// Controller runs the control loop of one process. Create it with New and run it with Run.
type Controller struct {
	cfg     Config
	conf    atomic.Pointer[config.Config] // replaced by Reload
	log     *slog.Logger
	ev      *events.Recorder
	probers map[string]*health.Prober
	fencer  *fence.Fencer
	// converger drives an unfinished failover's shards, when this controller holds the convergence lock.
	converger *failover.Converger
	// primaryRead is set once an etcd answered with the primary record: before, Status.Primary is a guess.
	primaryRead atomic.Bool
	// pauses is the newest pause flag this controller has read from any etcd.
	pauses override.Memory
	// learned is a newer primary record a leadership term read or wrote, for the control loop to adopt at
	// once (woken by relearn) rather than after its next read of both etcds: until it does, the election
	// stays where the old record put it, and this controller and the others win terms there for nothing.
	learnedMu sync.Mutex
	learned   primary.Record
	relearn   chan struct{}

	// plan is the last plan computed while leading; replan asks for a new one now.
	planMu sync.Mutex
	plan   *discovery.Plan
	replan chan struct{}
	// asked is the last plan computed on request while not leading (PlanOnRequest).
	askedMu sync.Mutex
	asked   *discovery.Plan

	mu     sync.Mutex
	status Status
}

// Status is what this controller knows, for the status API.
type Status struct {
	DC      string         `json:"dc"`
	ID      string         `json:"id"`
	Primary primary.Record `json:"primary"`
	Leading bool           `json:"leading"`
	// Phase is what this controller is doing, since PhaseSince.
	Phase      Phase                      `json:"phase"`
	PhaseSince time.Time                  `json:"phase_since"`
	Paused     bool                       `json:"paused"`
	Health     map[string]health.Snapshot `json:"health"`
	Mirror     *replication.Status        `json:"mirror,omitempty"`
	Decision   failover.Decision          `json:"last_decision"`
	// Convergence is this controller's view of the last failover's convergence.
	Convergence failover.ConvergeStatus `json:"convergence"`
	// Witnesses are the witnesses' last answers, asked while the primary's etcd looks down from here.
	Witnesses []witness.Answer `json:"witnesses,omitempty"`
	// Fence is this DC's self-fencing state.
	Fence fence.Status `json:"fence"`
	// Problem is what keeps the leader from acting, if anything.
	Problem string `json:"problem,omitempty"`
	// LoopAt is when the control loop last ran: a liveness signal.
	LoopAt time.Time `json:"loop_at"`
}

// New validates cfg and returns a Controller.
func New(cfg Config) (*Controller, error) {
	c := cfg.Config
	if c == nil {
		return nil, errors.New("controller: Config is required")
	}
	if _, ok := c.DCs[cfg.DC]; !ok {
		return nil, fmt.Errorf("--dc %q is not a DC of the config; use one of %v", cfg.DC, c.DCNames())
	}
	if cfg.ID == "" {
		return nil, errors.New("controller: ID is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Events == nil {
		cfg.Events = events.LogOnly(cfg.Logger)
	}
	ctl := &Controller{cfg: cfg, log: cfg.Logger, ev: cfg.Events, probers: map[string]*health.Prober{}, relearn: make(chan struct{}, 1),
		replan: make(chan struct{}, 1)}
	ctl.conf.Store(c)
	for _, dc := range c.DCNames() {
		hc, err := health.ConfigFor(c, dc)
		if err != nil {
			return nil, err
		}
		hc.Logger, hc.Metrics = cfg.Logger, cfg.Metrics
		hc.OnChange = func(s health.Snapshot) {
			level := slog.LevelInfo
			if s.State != health.Up {
				level = slog.LevelWarn
			}
			ctl.ev.Record(level, events.KindHealth, "etcd health changed", "of_dc", s.DC, "to", s.State,
				"since", s.Since.UTC().Format(time.RFC3339Nano), "last_error", s.LastError, "alarms", s.AlarmText())
		}
		p, err := health.New(hc)
		if err != nil {
			return nil, err
		}
		ctl.probers[dc] = p
	}
	ctl.status = Status{DC: cfg.DC, ID: cfg.ID, Phase: PhaseFollowing, PhaseSince: time.Now()}
	var err error
	ctl.fencer, err = fence.New(fence.Config{Config: ctl.config, DC: cfg.DC, ID: cfg.ID, Clients: cfg.Clients,
		Primary: ctl.followed,
		Health:  func(dc string) health.Snapshot { return ctl.probers[dc].Snapshot() },
		Logger:  cfg.Logger, Events: ctl.ev, Metrics: cfg.Metrics})
	if err != nil {
		return nil, err
	}
	ctl.converger, err = failover.NewConverger(failover.ConvergerConfig{Config: ctl.config, Clients: cfg.Clients, DC: cfg.DC, ID: cfg.ID,
		Primary: ctl.followed,
		Paused: func(ctx context.Context) bool {
			_, paused := ctl.pause(ctx)
			return paused
		},
		Fenced: func() bool { return ctl.fencer.Status().Fenced() },
		Logger: cfg.Logger, Events: ctl.ev, Metrics: cfg.Metrics})
	if err != nil {
		return nil, err
	}
	return ctl, nil
}

// followed is the primary record the control loop follows, and whether an etcd answered with it yet.
func (ctl *Controller) followed() (primary.Record, bool) {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	return ctl.status.Primary, ctl.primaryRead.Load()
}

// Clients returns the etcd clients the controller uses, for the status API.
func (ctl *Controller) Clients() map[string]*clientv3.Client { return ctl.cfg.Clients }

// Config returns the configuration in force.
func (ctl *Controller) Config() *config.Config { return ctl.config() }

// config returns the configuration in force.
func (ctl *Controller) config() *config.Config { return ctl.conf.Load() }

// Reload puts the configuration load returns in force (SIGHUP). Health, failover (mode, timings, shards,
// commands, hooks) change at once; a change anywhere else needs a restart and is refused, keeping the old
// config, as is a config that does not load. Either way the outcome is an event and a metric.
func (ctl *Controller) Reload(load func() (*config.Config, error)) error {
	next, err := load()
	if err == nil {
		err = ctl.reload(next)
	}
	ctl.cfg.Metrics.Reloaded(err == nil)
	if err != nil {
		ctl.ev.Error(events.KindConfig, "config not reloaded; the old one stays in force", "err", err)
		return err
	}
	ctl.ev.Info(events.KindConfig, "config reloaded", "mode", next.Failover.Mode, "after", next.Failover.After, "shards", len(next.Failover.Shards.List))
	return nil
}

func (ctl *Controller) reload(next *config.Config) error {
	cur := ctl.config()
	type fixed struct {
		Cluster, InitialPrimary string
		DCs                     map[string]config.DC
		Mirror                  config.Mirror
		Vitess                  config.Vitess
		Election                config.Election
		Listen                  string
		HTTP                    config.HTTP
		History                 config.History
		RequestTimeout          time.Duration
	}
	pin := func(c *config.Config) fixed {
		return fixed{c.Cluster, c.InitialPrimary, c.DCs, c.Mirror, c.Vitess, c.Election, c.Listen, c.HTTP, c.History, c.RequestTimeout}
	}
	if !reflect.DeepEqual(pin(cur), pin(next)) {
		return errors.New("config not reloaded: only health and failover settings change on reload; cluster, initial_primary, dcs, mirror, vitess, election, listen, http, history and request_timeout need a restart")
	}
	ctl.conf.Store(next)
	for _, p := range ctl.probers {
		p.SetTiming(next.Health.Interval, next.Health.Timeout, next.Health.FailureThreshold, next.Health.SuccessThreshold)
	}
	return nil
}

// Status returns a snapshot of what this controller knows.
func (ctl *Controller) Status() Status {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	s := ctl.status
	s.Health = map[string]health.Snapshot{}
	for dc, p := range ctl.probers {
		s.Health[dc] = p.Snapshot()
	}
	s.Fence = ctl.fencer.Status()
	s.Convergence = ctl.converger.Status()
	return s
}

func (ctl *Controller) update(f func(*Status)) {
	ctl.mu.Lock()
	f(&ctl.status)
	ctl.mu.Unlock()
}

// Run runs the probes, the self-fence, the role hooks and the control loop until ctx is done; a leader
// resigns before Run returns.
func (ctl *Controller) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	roles := make(chan roleChange, 1)
	ctl.startWorkers(ctx, &wg, roles)
	f := follower{roles: roles}
	var camp campaign
	defer camp.stop()
	tick := time.NewTicker(ctl.config().Health.Interval)
	defer tick.Stop()
	for {
		before := f.known.Epoch
		rec := ctl.follow(ctx, &f)
		if rec.Epoch != before {
			ctl.converger.Kick()
		}
		if err := ctl.campaignUnder(ctx, &camp, rec); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-ctl.relearn:
		}
	}
}

// startWorkers starts the goroutines that run beside the control loop until ctx ends: one prober per DC,
// the self-fence, and the role hooks, which take role changes from roles.
func (ctl *Controller) startWorkers(ctx context.Context, wg *sync.WaitGroup, roles <-chan roleChange) {
	for _, p := range ctl.probers {
		wg.Go(func() { _ = p.Run(ctx) })
	}
	wg.Go(func() { _ = ctl.fencer.Run(ctx) })
	wg.Go(func() { _ = ctl.converger.Run(ctx) })
	wg.Go(func() { ctl.refreshPlans(ctx) })
	wg.Go(func() { ctl.runRoleHooks(ctx, roles) })
}

// learn hands the control loop a primary record newer than the one a term was started with.
func (ctl *Controller) learn(rec primary.Record) {
	ctl.learnedMu.Lock()
	if rec.Epoch > ctl.learned.Epoch || ctl.learned.DC == "" {
		ctl.learned = rec
	}
	ctl.learnedMu.Unlock()
	select {
	case ctl.relearn <- struct{}{}:
	default:
	}
}

func (ctl *Controller) takeLearned() primary.Record {
	ctl.learnedMu.Lock()
	defer ctl.learnedMu.Unlock()
	l := ctl.learned
	ctl.learned = primary.Record{}
	return l
}
