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
	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/replication"
)

// Config configures a Controller.
type Config struct {
	Config *config.Config
	// DC is the datacenter this controller runs in; ID names it among controllers.
	DC, ID string
	// Clients has a client of each DC's etcd.
	Clients map[string]*clientv3.Client
	Logger  *slog.Logger
}

// Controller runs the control loop of one process. Create it with New and run it with Run.
type Controller struct {
	cfg     Config
	conf    atomic.Pointer[config.Config] // replaced by Reload
	log     *slog.Logger
	probers map[string]*health.Prober
	// changing is set while this controller's leader carries out a failover or switchover: its term (and
	// the mirror a switchover drains) must not be ended by the election moving meanwhile.
	changing atomic.Bool

	mu     sync.Mutex
	status Status
}

// Status is what this controller knows, for the status API.
type Status struct {
	DC       string                     `json:"dc"`
	ID       string                     `json:"id"`
	Primary  primary.Record             `json:"primary"`
	Leading  bool                       `json:"leading"`
	Health   map[string]health.Snapshot `json:"health"`
	Mirror   *replication.Status        `json:"mirror,omitempty"`
	Decision failover.Decision          `json:"last_decision"`
	Failover *failover.Result           `json:"last_failover,omitempty"`
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
	ctl := &Controller{cfg: cfg, log: cfg.Logger, probers: map[string]*health.Prober{}}
	ctl.conf.Store(c)
	for _, dc := range c.DCNames() {
		p, err := health.New(health.Config{
			DC: dc, Client: cfg.Clients[dc], Endpoints: c.DCs[dc].Etcd.Endpoints, Key: c.KeyRoot() + "health",
			Interval: c.Health.Interval, Timeout: c.Health.Timeout,
			FailureThreshold: c.Health.FailureThreshold, SuccessThreshold: c.Health.SuccessThreshold,
			Logger: cfg.Logger,
		})
		if err != nil {
			return nil, err
		}
		ctl.probers[dc] = p
	}
	ctl.status = Status{DC: cfg.DC, ID: cfg.ID}
	return ctl, nil
}

// signalRequestTTL is how long a request from a signal or --force-primary waits for a leader to take it.
const signalRequestTTL = time.Minute

// RequestFailover asks the leader, whichever controller it is, to fail over (SIGUSR1, --force-primary):
// the request goes through etcd like `topoha failover`'s.
func (ctl *Controller) RequestFailover(ctx context.Context, r failover.Request) error {
	if err := WriteRequest(ctx, ctl.config(), ctl.cfg.Clients, r, signalRequestTTL); err != nil {
		return fmt.Errorf("failover request to %s not delivered: %w", r.To, err)
	}
	ctl.log.Info("failover requested", "to", r.To, "force", r.Force, "trigger", r.Trigger)
	return nil
}

// Clients returns the etcd clients the controller uses, for the status API.
func (ctl *Controller) Clients() map[string]*clientv3.Client { return ctl.cfg.Clients }

// Config returns the configuration in force.
func (ctl *Controller) Config() *config.Config { return ctl.config() }

// config returns the configuration in force.
func (ctl *Controller) config() *config.Config { return ctl.conf.Load() }

// Reload puts a new configuration in force (SIGHUP). Health, failover (mode, timings, shards, commands,
// hooks) change at once; a change anywhere else needs a restart and is refused, keeping the old config.
func (ctl *Controller) Reload(next *config.Config) error {
	cur := ctl.config()
	type fixed struct {
		Cluster, InitialPrimary string
		DCs                     map[string]config.DC
		Mirror                  config.Mirror
		Vitess                  config.Vitess
		Election                config.Election
		Listen                  string
		HTTP                    config.HTTP
	}
	pin := func(c *config.Config) fixed {
		return fixed{c.Cluster, c.InitialPrimary, c.DCs, c.Mirror, c.Vitess, c.Election, c.Listen, c.HTTP}
	}
	if !reflect.DeepEqual(pin(cur), pin(next)) {
		return errors.New("config not reloaded: only health and failover settings change on reload; cluster, initial_primary, dcs, mirror, vitess, election, listen and http need a restart")
	}
	ctl.conf.Store(next)
	for _, p := range ctl.probers {
		p.SetTiming(next.Health.Interval, next.Health.Timeout, next.Health.FailureThreshold, next.Health.SuccessThreshold)
	}
	ctl.log.Info("config reloaded", "mode", next.Failover.Mode, "after", next.Failover.After, "shards", len(next.Failover.Shards))
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
	return s
}

func (ctl *Controller) update(f func(*Status)) {
	ctl.mu.Lock()
	f(&ctl.status)
	ctl.mu.Unlock()
}

// Run runs the probes and the control loop until ctx is done; a leader resigns before Run returns.
func (ctl *Controller) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, p := range ctl.probers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Run(ctx)
		}()
	}

	var campaign struct {
		dr     string
		cancel context.CancelFunc
		done   chan struct{}
	}
	stopCampaign := func() {
		if campaign.cancel != nil {
			campaign.cancel()
			<-campaign.done
			campaign.cancel = nil
		}
	}
	defer stopCampaign()

	tick := time.NewTicker(ctl.config().Health.Interval)
	defer tick.Stop()
	var known primary.Record
	for {
		// The highest epoch ever seen holds: an etcd that does not answer, or answers from before a
		// failover, cannot take this controller back to an older primary.
		if rec, _ := ctl.readPrimary(ctx); known.DC == "" || rec.Epoch > known.Epoch {
			if known.DC != "" {
				ctl.log.Info("primary changed", "from", known.DC, "to", rec.DC, "epoch", rec.Epoch, "reason", rec.Reason)
			}
			known = rec
		}
		rec := known
		ctl.update(func(s *Status) { s.Primary, s.LoopAt = rec, time.Now() })
		dr := ctl.config().OtherDC(rec.DC)
		if (campaign.dr != dr && !ctl.changing.Load()) || campaign.cancel == nil {
			// The election lives in the DR DC's etcd, where the leader writes: after a failover it moves.
			stopCampaign()
			el, err := election.New(election.Config{
				Client: ctl.cfg.Clients[dr], Prefix: ctl.config().KeyRoot() + "election/", ID: ctl.cfg.ID, DC: ctl.cfg.DC,
				TTL: ctl.config().Election.TTL, RetryInterval: ctl.config().Health.Interval, Logger: ctl.log,
				OnStartedLeading: func(lctx context.Context, term election.Term) { ctl.lead(lctx, term, rec) },
			})
			if err != nil {
				return err
			}
			cctx, ccancel := context.WithCancel(ctx)
			campaign.dr, campaign.cancel, campaign.done = dr, ccancel, make(chan struct{})
			go func() {
				defer close(campaign.done)
				_ = el.Run(cctx)
			}()
			ctl.log.Info("campaigning", "election_in", dr, "primary", rec.DC, "epoch", rec.Epoch)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// readPrimary reads the primary record from both etcds and resolves it.
func (ctl *Controller) readPrimary(ctx context.Context) (primary.Record, map[string]primary.Observed) {
	key := primary.Key(ctl.config().KeyRoot())
	obs := map[string]primary.Observed{}
	var list []primary.Observed
	for _, dc := range ctl.config().DCNames() {
		rctx, cancel := context.WithTimeout(ctx, ctl.config().Health.Timeout)
		obs[dc] = primary.Read(rctx, ctl.cfg.Clients[dc], key)
		cancel()
		list = append(list, obs[dc])
	}
	return primary.Resolve(ctl.config().InitialPrimary, list...), obs
}
