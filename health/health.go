// Package health probes one DC's etcd cluster and turns the probes into a state with hysteresis:
// failure_threshold failed probes in a row mark it down, success_threshold good ones in a row mark it up
// again, so a flap does not move it. Every controller and witness runs one Prober per DC.
//
// A DC's etcd is a cluster of several members, and losing one of them is not losing the DC. A probe asks
// every configured endpoint at once, each through a connection of its own and within the same timeout, so
// a dead or hung member cannot use up the time of the others. The cluster is up when any member serves a
// linearizable read (which needs the cluster's quorum), down when none does, and degraded when it serves
// reads but carries an alarm (NOSPACE, CORRUPT) under which etcd refuses writes. etcd replicates its alarms
// through raft, so an alarm one member raised holds on every member: it is a state of the cluster, and the
// member that raised it is named.
package health

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/metrics"
)

// Config configures a Prober.
type Config struct {
	DC string
	// Etcd is how to reach the DC's etcd. The prober dials each of its endpoints on its own.
	Etcd clientv3.Config
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

// States. A prober starts Unknown and becomes Up, Degraded or Down once a threshold is met.
const (
	Unknown State = "unknown"
	Up      State = "up"
	// Degraded is a cluster that serves linearizable reads but has an alarm raised: it refuses writes
	// (NOSPACE) or more (CORRUPT). It is not a DC loss and never triggers an automatic failover.
	Degraded State = "degraded"
	Down     State = "down"
)

// Serving says whether the cluster serves reads in state s.
func (s State) Serving() bool { return s == Up || s == Degraded }

// Member is one configured endpoint as the last probe found it.
type Member struct {
	Endpoint string `json:"endpoint"`
	// ID is the member's ID in hex, as etcdctl prints it; empty when it did not answer.
	ID string `json:"id,omitempty"`
	// Serving says the member answered a linearizable read within the probe's timeout.
	Serving bool `json:"serving"`
	// Leader says the member leads raft.
	Leader bool   `json:"leader,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Alarm is an alarm raised in the cluster.
type Alarm struct {
	// Type is etcd's name of it: NOSPACE or CORRUPT.
	Type string `json:"type"`
	// Member is the ID (hex) of the member that raised it.
	Member string `json:"member"`
}

// Result is what one probe found.
type Result struct {
	Members []Member
	Alarms  []Alarm
	// Revision is the revision a serving member's read saw.
	Revision int64
	// Refused, when set, says why etcd answered but refused topoha's user (credentials or permissions):
	// the cluster serves, but not topoha.
	Refused string
	// Err is nil when some member served a linearizable read; otherwise it says why none did.
	Err error
}

// State is the state this probe alone indicates, before any threshold.
func (r Result) State() State {
	switch {
	case r.Err != nil:
		return Down
	case len(r.Alarms) > 0, r.Refused != "":
		return Degraded
	}
	return Up
}

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
	// Members are the configured endpoints as the last probe found them.
	Members []Member `json:"members,omitempty"`
	// Alarms are the cluster's alarms as the last successful probe found them.
	Alarms []Alarm `json:"alarms,omitempty"`
	// Refused says why etcd refused topoha's user in the last successful probe: it answered, so its
	// cluster serves (degraded, as for an alarm: never a failover's cause or target), but topoha can
	// neither read nor write there until the user or its role is fixed.
	Refused string `json:"refused,omitempty"`
}

// DownFor is how long the DC has been down continuously at now; 0 unless Down.
func (s Snapshot) DownFor(now time.Time) time.Duration {
	if s.State != Down {
		return 0
	}
	return now.Sub(s.Since)
}

// Serving is how many members served the last probe's read.
func (s Snapshot) Serving() int {
	n := 0
	for _, m := range s.Members {
		if m.Serving {
			n++
		}
	}
	return n
}

// RaftLeader is the endpoint of the member that leads raft, as the last probe found it; empty if none
// answered as leader.
func (s Snapshot) RaftLeader() string {
	for _, m := range s.Members {
		if m.Leader {
			return m.Endpoint
		}
	}
	return ""
}

// AlarmText names the last probe's alarms, as the function AlarmText does.
func (s Snapshot) AlarmText() string { return AlarmText(s.Alarms) }

// AlarmText names alarms and what they mean for writes, e.g. "NOSPACE (writes refused; reads served)";
// empty when there are none.
func AlarmText(alarms []Alarm) string {
	var types []string
	for _, a := range alarms {
		if !slices.Contains(types, a.Type) {
			types = append(types, a.Type)
		}
	}
	if len(types) == 0 {
		return ""
	}
	return strings.Join(types, ", ") + " (writes refused; reads served)"
}

// Describe says in one phrase what state the DC's etcd is in and why, for reasons and status lines.
func (s Snapshot) Describe() string {
	switch s.State {
	case Degraded:
		// An alarm first: a refused user must not hide a NOSPACE.
		why := []string{}
		for _, w := range []string{s.AlarmText(), s.Refused} {
			if w != "" {
				why = append(why, w)
			}
		}
		return "degraded: " + strings.Join(why, "; ")
	case Down:
		return "down: " + s.LastError
	}
	return string(s.State)
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
	case len(cfg.Etcd.Endpoints) == 0:
		return nil, errors.New("health: Etcd.Endpoints must not be empty")
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

// Run probes every Interval until ctx is done, then closes its connections and returns ctx.Err(). A
// probe never takes longer than Timeout, so a hung member counts as a failure of that member instead of
// blocking the loop.
func (p *Prober) Run(ctx context.Context) error {
	members := newMembers(p.cfg.Etcd)
	defer members.close()
	t := time.NewTicker(p.timing().Interval)
	defer t.Stop()
	for {
		start := time.Now()
		c := p.timing()
		res := members.probe(ctx, c.Key, c.Timeout)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.record(start, time.Since(start), res)
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
	s := p.snap
	s.Members, s.Alarms = slices.Clone(s.Members), slices.Clone(s.Alarms)
	return s
}

// Probe checks one DC's etcd once, within timeout, through connections of its own that it closes before
// it returns: what `topoha status` does without a controller.
func Probe(ctx context.Context, cc clientv3.Config, key string, timeout time.Duration) Result {
	m := newMembers(cc)
	defer m.close()
	return m.probe(ctx, key, timeout)
}

func (p *Prober) record(at time.Time, latency time.Duration, res Result) {
	p.mu.Lock()
	s := &p.snap
	s.Probes++
	s.LastProbe = at
	s.LastLatency = latency
	s.Members = res.Members
	before := s.State
	if res.Err == nil {
		if s.ConsecutiveSuccesses == 0 {
			p.streak = at
		}
		s.ConsecutiveSuccesses++
		s.ConsecutiveFailures = 0
		s.LastError = ""
		s.Revision = res.Revision
		s.Alarms = res.Alarms
		s.Refused = res.Refused
		switch now := res.State(); {
		case s.State.Serving() && s.State != now:
			// Between up and degraded there is no flap to damp: an alarm stays until an operator
			// disarms it, and neither state moves a failover.
			s.State, s.Since = now, at
		case !s.State.Serving() && s.ConsecutiveSuccesses >= p.cfg.SuccessThreshold:
			s.State, s.Since = now, p.streak
		}
	} else {
		if s.ConsecutiveFailures == 0 {
			p.streak = at
		}
		s.ConsecutiveFailures++
		s.ConsecutiveSuccesses = 0
		s.LastError = res.Err.Error()
		if s.State != Down && s.ConsecutiveFailures >= p.cfg.FailureThreshold {
			s.State, s.Since = Down, p.streak
		}
	}
	snap := *s
	p.mu.Unlock()
	p.cfg.Metrics.Probed(p.cfg.DC, latency, res.Err)
	if snap.State != before {
		p.cfg.Metrics.HealthChanged(p.cfg.DC, string(snap.State))
		p.log.Debug("etcd health changed", "from", before, "to", snap.State, "since", snap.Since, "last_error", snap.LastError,
			"alarms", snap.AlarmText())
		if p.cfg.OnChange != nil {
			p.cfg.OnChange(snap)
		}
	}
}

// ConfigFor is the configuration of a prober of dc's etcd as c describes it; the caller adds OnChange,
// Logger and Metrics.
func ConfigFor(c *config.Config, dc string) (Config, error) {
	cc, err := c.EtcdClientConfig(dc)
	if err != nil {
		return Config{}, err
	}
	return Config{DC: dc, Etcd: cc, Key: c.Keys().Probe(), Interval: c.Health.Interval, Timeout: c.Health.Timeout,
		FailureThreshold: c.Health.FailureThreshold, SuccessThreshold: c.Health.SuccessThreshold}, nil
}
