// Package health probes one DC's etcd (its VIP) and turns the probes into an up/down state with
// hysteresis: failure_threshold failures in a row mark it down, success_threshold successes in a row mark
// it up again, so a flap does not move it. Every controller and witness runs one Prober per DC.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/metrics"
)

// Config configures a Prober.
type Config struct {
	DC     string
	Client *clientv3.Client
	// Endpoints are asked for their Status; the first that answers is enough.
	Endpoints []string
	// Key is read with a linearizable Get, which needs the cluster's quorum.
	Key string

	Interval, Timeout                  time.Duration
	FailureThreshold, SuccessThreshold int

	// OnChange, if set, is called from Run's goroutine after every change of State.
	OnChange func(Snapshot)
	Logger   *slog.Logger
	Metrics  *metrics.Metrics
}

// State of a DC's etcd.
type State string

// States. A prober starts Unknown and becomes Up or Down once a threshold is met.
const (
	Unknown State = "unknown"
	Up      State = "up"
	Down    State = "down"
)

// Snapshot is a prober's view of its DC.
type Snapshot struct {
	DC    string `json:"dc"`
	State State  `json:"state"`
	// Since is when the streak that led to State began: for Down, the first failed probe of it.
	Since                time.Time     `json:"since"`
	ConsecutiveFailures  int           `json:"consecutive_failures"`
	ConsecutiveSuccesses int           `json:"consecutive_successes"`
	Probes               uint64        `json:"probes"`
	LastProbe            time.Time     `json:"last_probe"`
	LastLatency          time.Duration `json:"last_latency_ns"`
	LastError            string        `json:"last_error,omitempty"`
	// Revision is the etcd revision seen by the last successful probe.
	Revision int64 `json:"revision"`
}

// DownFor is how long the DC has been down continuously at now; 0 unless Down.
func (s Snapshot) DownFor(now time.Time) time.Duration {
	if s.State != Down {
		return 0
	}
	return now.Sub(s.Since)
}

// Prober probes one DC. Create it with New, run it with Run, read it with Snapshot.
type Prober struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	snap   Snapshot
	streak time.Time // when the current streak of equal results began
}

// New validates cfg and returns a Prober.
func New(cfg Config) (*Prober, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("health: Client is required")
	case len(cfg.Endpoints) == 0:
		return nil, errors.New("health: Endpoints must not be empty")
	case cfg.Key == "":
		return nil, errors.New("health: Key is required")
	case cfg.Interval <= 0 || cfg.Timeout <= 0:
		return nil, errors.New("health: Interval and Timeout must be positive")
	case cfg.FailureThreshold < 1 || cfg.SuccessThreshold < 1:
		return nil, errors.New("health: FailureThreshold and SuccessThreshold must be at least 1")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Prober{cfg: cfg, log: cfg.Logger.With("dc", cfg.DC), snap: Snapshot{DC: cfg.DC, State: Unknown}}, nil
}

// Run probes every Interval until ctx is done, then returns ctx.Err(). A probe never takes longer than
// Timeout, so a hung endpoint counts as a failure instead of blocking the loop.
func (p *Prober) Run(ctx context.Context) error {
	t := time.NewTicker(p.timing().Interval)
	defer t.Stop()
	for {
		start := time.Now()
		rev, err := p.probe(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.record(start, time.Since(start), rev, err)
		t.Reset(p.timing().Interval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// SetTiming changes the probe interval, timeout and thresholds of a running prober (config reload).
func (p *Prober) SetTiming(interval, timeout time.Duration, failures, successes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg.Interval, p.cfg.Timeout, p.cfg.FailureThreshold, p.cfg.SuccessThreshold = interval, timeout, failures, successes
}

func (p *Prober) timing() Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// Snapshot returns the prober's current view.
func (p *Prober) Snapshot() Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.snap
}

func (p *Prober) probe(ctx context.Context) (int64, error) {
	c := p.timing()
	return Probe(ctx, c.Client, c.Endpoints, c.Key, c.Timeout)
}

// Probe checks one DC's etcd once, within timeout: the Status of an endpoint (it has a leader and no
// alarm; the first that answers is enough) and a linearizable Get of key, which needs the quorum. It
// returns the revision the Get saw.
func Probe(ctx context.Context, cli *clientv3.Client, endpoints []string, key string, timeout time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var statusErr error
	answered := false
	for _, ep := range endpoints {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			statusErr = fmt.Errorf("status of %s: %w", ep, err)
			continue
		}
		if st.Leader == 0 {
			statusErr = fmt.Errorf("status of %s: the member has no leader", ep)
			continue
		}
		if len(st.Errors) > 0 {
			statusErr = fmt.Errorf("status of %s: %v", ep, st.Errors)
			continue
		}
		answered = true
		break
	}
	if !answered {
		return 0, statusErr
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("linearizable read of %s: %w", key, err)
	}
	return resp.Header.Revision, nil
}

func (p *Prober) record(at time.Time, latency time.Duration, rev int64, err error) {
	p.mu.Lock()
	s := &p.snap
	s.Probes++
	s.LastProbe = at
	s.LastLatency = latency
	before := s.State
	if err == nil {
		if s.ConsecutiveSuccesses == 0 {
			p.streak = at
		}
		s.ConsecutiveSuccesses++
		s.ConsecutiveFailures = 0
		s.LastError = ""
		s.Revision = rev
		if s.State != Up && s.ConsecutiveSuccesses >= p.cfg.SuccessThreshold {
			s.State, s.Since = Up, p.streak
		}
	} else {
		if s.ConsecutiveFailures == 0 {
			p.streak = at
		}
		s.ConsecutiveFailures++
		s.ConsecutiveSuccesses = 0
		s.LastError = err.Error()
		if s.State != Down && s.ConsecutiveFailures >= p.cfg.FailureThreshold {
			s.State, s.Since = Down, p.streak
		}
	}
	snap := *s
	p.mu.Unlock()
	p.cfg.Metrics.Probed(p.cfg.DC, latency, err)
	if snap.State != before {
		p.cfg.Metrics.HealthChanged(p.cfg.DC, string(snap.State))
		p.log.Debug("etcd health changed", "from", before, "to", snap.State, "since", snap.Since, "last_error", snap.LastError)
		if p.cfg.OnChange != nil {
			p.cfg.OnChange(snap)
		}
	}
}
