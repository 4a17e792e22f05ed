package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/topoha/topoha/internal/testenv"
)

func newProber(t *testing.T, endpoint string, failures, successes int, timeout time.Duration) *Prober {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	p, err := New(Config{DC: "dc1", Client: cli, Endpoints: []string{endpoint}, Key: "/topoha/test/health",
		Interval: 50 * time.Millisecond, Timeout: timeout, FailureThreshold: failures, SuccessThreshold: successes})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, p *Prober) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func waitState(t *testing.T, p *Prober, want State) Snapshot {
	t.Helper()
	var s Snapshot
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		s = p.Snapshot()
		return s.State == want, fmt.Sprintf("state %s after %d probes, last error %q", s.State, s.Probes, s.LastError)
	})
	return s
}

func TestDownWhenStoppedUpWhenBack(t *testing.T) {
	srv := testenv.StartEtcd(t, "dc1")
	p := newProber(t, srv.Endpoint(), 3, 2, 500*time.Millisecond)
	run(t, p)
	up := waitState(t, p, Up)
	if up.Revision == 0 || up.LastError != "" {
		t.Errorf("up snapshot: %+v", up)
	}

	stopped := time.Now()
	srv.Stop()
	down := waitState(t, p, Down)
	if down.ConsecutiveFailures < 3 || down.LastError == "" {
		t.Errorf("down snapshot: %+v", down)
	}
	// Down since the first failed probe, not since the third.
	if down.Since.Before(stopped) || down.Since.After(down.LastProbe) || down.Since.Equal(down.LastProbe) {
		t.Errorf("down since %s; stopped at %s, last probe %s", down.Since, stopped, down.LastProbe)
	}
	if d := down.DownFor(time.Now()); d <= 0 {
		t.Errorf("DownFor = %s", d)
	}

	srv.Start()
	back := waitState(t, p, Up)
	if back.DownFor(time.Now()) != 0 || back.ConsecutiveSuccesses < 2 {
		t.Errorf("after the restart: %+v", back)
	}
}

// An endpoint that accepts connections and never answers (a blackholed VIP) counts as down within the
// timeout, and the loop keeps probing instead of hanging.
func TestHungEndpointIsDownWithinTheTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	const timeout = 200 * time.Millisecond
	p := newProber(t, "http://"+l.Addr().String(), 2, 1, timeout)
	run(t, p)
	s := waitState(t, p, Down)
	probes := s.Probes
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		s = p.Snapshot()
		return s.Probes >= probes+3, fmt.Sprintf("%d probes", s.Probes)
	})
	if s.LastLatency > timeout+500*time.Millisecond {
		t.Errorf("a probe of a hung endpoint took %s with a %s timeout", s.LastLatency, timeout)
	}
}

// The thresholds give hysteresis: failures or successes must come in a row to change the state.
func TestThresholds(t *testing.T) {
	fail := errors.New("probe failed")
	for _, tc := range []struct {
		results string // s = success, f = failure
		want    State
	}{
		{"", Unknown},
		{"s", Unknown},
		{"ss", Up},
		{"ssff", Up},
		{"ssfff", Down},
		{"ssffsff", Up},     // a success in between resets the failure streak
		{"ssfffs", Down},    // one success is not enough to come back
		{"ssfffss", Up},     // two are
		{"ssfffsfss", Up},   // and must be in a row
		{"ssfffsfsf", Down}, // they were not
		{"fff", Down},
	} {
		p, err := New(Config{DC: "dc1", Client: &clientv3.Client{}, Endpoints: []string{"x"}, Key: "k",
			Interval: time.Second, Timeout: time.Second, FailureThreshold: 3, SuccessThreshold: 2})
		if err != nil {
			t.Fatal(err)
		}
		at := time.Unix(1000, 0)
		for _, r := range tc.results {
			var err error
			if r == 'f' {
				err = fail
			}
			p.record(at, time.Millisecond, 1, err)
			at = at.Add(time.Second)
		}
		if got := p.Snapshot().State; got != tc.want {
			t.Errorf("%q: state %s, want %s", tc.results, got, tc.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ok := Config{Client: &clientv3.Client{}, Endpoints: []string{"x"}, Key: "k", Interval: time.Second, Timeout: time.Second, FailureThreshold: 1, SuccessThreshold: 1}
	for name, mutate := range map[string]func(*Config){
		"no client":    func(c *Config) { c.Client = nil },
		"no endpoints": func(c *Config) { c.Endpoints = nil },
		"no key":       func(c *Config) { c.Key = "" },
		"no interval":  func(c *Config) { c.Interval = 0 },
		"no threshold": func(c *Config) { c.FailureThreshold = 0 },
	} {
		cfg := ok
		mutate(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
