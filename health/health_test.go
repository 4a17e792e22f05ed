package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/topoha/topoha/internal/testenv"
)

// newProber probes the cluster c (as testenv's user, when authentication is on).
func newProber(t *testing.T, c *testenv.Cluster, failures, successes int, timeout time.Duration) *Prober {
	t.Helper()
	cc := c.ClientConfig()
	cc.DialTimeout = time.Second
	return newProberOf(t, cc, failures, successes, timeout)
}

func newProberOf(t *testing.T, cc clientv3.Config, failures, successes int, timeout time.Duration) *Prober {
	t.Helper()
	p, err := New(Config{DC: "dc1", Etcd: cc,
		Key: "/topoha/test/health", Interval: 50 * time.Millisecond, Timeout: timeout,
		FailureThreshold: failures, SuccessThreshold: successes})
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
	return waitSnapshot(t, p, fmt.Sprintf("state %s", want), func(s Snapshot) bool { return s.State == want })
}

func waitSnapshot(t *testing.T, p *Prober, what string, ok func(Snapshot) bool) Snapshot {
	t.Helper()
	var s Snapshot
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		s = p.Snapshot()
		return ok(s), fmt.Sprintf("waiting for %s: state %s after %d probes, %d of %d members serving, last error %q",
			what, s.State, s.Probes, s.Serving(), len(s.Members), s.LastError)
	})
	return s
}

// holdsUp probes for n more probes and fails the test if any of them failed: a fault of one member must
// not cost the DC a single probe.
func holdsUp(t *testing.T, p *Prober, n uint64) Snapshot {
	t.Helper()
	start := p.Snapshot()
	end := waitSnapshot(t, p, fmt.Sprintf("%d more probes", n), func(s Snapshot) bool {
		if s.ConsecutiveFailures > 0 || !s.State.Serving() {
			t.Fatalf("a probe failed: state %s, %d failures in a row, error %q", s.State, s.ConsecutiveFailures, s.LastError)
		}
		return s.Probes >= start.Probes+n
	})
	return end
}

// proberOnCluster starts a 3-member cluster and a prober of it (thresholds 1) and waits until it sees
// every member serve. The timeout is longer than a raft election with room to spare: losing the raft
// leader is one of the faults, and until the others elect one no member serves a linearizable read.
// The members' election takes 200-400 ms (testenv), but on a loaded 2-core machine running etcd
// processes 500 ms was once not enough.
func proberOnCluster(t *testing.T) (*testenv.Cluster, *Prober) {
	t.Helper()
	c := testenv.StartCluster(t, "dc1", testenv.Members)
	p := newProber(t, c, 1, 1, 1500*time.Millisecond)
	run(t, p)
	allServing(t, p)
	return c, p
}

func allServing(t *testing.T, p *Prober) {
	t.Helper()
	waitSnapshot(t, p, "every member serving", func(s Snapshot) bool { return s.Serving() == testenv.Members })
}

func TestDownWhenStoppedUpWhenBack(t *testing.T) {
	c := testenv.StartCluster(t, "dc1", testenv.Members)
	p := newProber(t, c, 3, 2, 500*time.Millisecond)
	run(t, p)
	up := waitSnapshot(t, p, "every member serving", func(s Snapshot) bool { return s.State == Up && s.Serving() == testenv.Members })
	if up.Revision == 0 || up.LastError != "" || up.RaftLeader() == "" {
		t.Errorf("up snapshot: %+v", up)
	}

	stopped := time.Now()
	c.Stop()
	down := waitState(t, p, Down)
	if down.ConsecutiveFailures < 3 || !strings.Contains(down.LastError, "no member serves") {
		t.Errorf("down snapshot: %+v", down)
	}
	// Down since the first failed probe, not since the third.
	if down.Since.Before(stopped) || down.Since.After(down.LastProbe) || down.Since.Equal(down.LastProbe) {
		t.Errorf("down since %s; stopped at %s, last probe %s", down.Since, stopped, down.LastProbe)
	}
	if d := down.DownFor(time.Now()); d <= 0 {
		t.Errorf("DownFor = %s", d)
	}

	c.Start()
	back := waitState(t, p, Up)
	if back.DownFor(time.Now()) != 0 || back.ConsecutiveSuccesses < 2 {
		t.Errorf("after the restart: %+v", back)
	}
}

// One member stopped, whether a follower or the raft leader, costs the DC no probe: the others serve.
func TestOneMemberLostIsNotADCLoss(t *testing.T) {
	c, p := proberOnCluster(t)
	for _, victim := range []string{"the first listed member", "the raft leader"} {
		i := 0
		if victim == "the raft leader" {
			i = c.WaitLeader()
		}
		c.StopMember(i)
		s := holdsUp(t, p, 6)
		if s.Serving() != testenv.Members-1 || s.Members[i].Serving || s.Members[i].Error == "" {
			t.Errorf("%s stopped: members %+v", victim, s.Members)
		}
		c.StartMember(i)
		allServing(t, p)
	}
}

// A member that accepts connections and never answers (blackholed) must not use up the probe of the
// others.
func TestHungMemberIsNotADCLoss(t *testing.T) {
	c, p := proberOnCluster(t)
	c.Blackhole(0)
	s := holdsUp(t, p, 6)
	if s.Members[0].Serving || !strings.Contains(s.Members[0].Error, "deadline") {
		t.Errorf("blackholed member: %+v", s.Members[0])
	}
	c.Unblackhole(0)
	allServing(t, p)
}

// A member cut off from its peers still accepts clients but has no leader: it is not serving, and the
// DC is up.
func TestIsolatedMemberIsNotADCLoss(t *testing.T) {
	c, p := proberOnCluster(t)
	c.Isolate(1)
	waitSnapshot(t, p, "the isolated member not serving", func(s Snapshot) bool { return !s.Members[1].Serving })
	s := holdsUp(t, p, 6)
	if s.Serving() != testenv.Members-1 {
		t.Errorf("one member isolated: members %+v", s.Members)
	}
	c.Rejoin(1)
	allServing(t, p)
}

// Two of three members stopped: the last one accepts connections but the cluster has no quorum, so the
// DC's etcd is down.
func TestQuorumLossIsDown(t *testing.T) {
	c := testenv.StartCluster(t, "dc1", testenv.Members)
	p := newProber(t, c, 2, 1, 500*time.Millisecond)
	run(t, p)
	waitState(t, p, Up)
	c.StopMember(0)
	c.StopMember(1)
	s := waitState(t, p, Down)
	if !strings.Contains(s.Members[2].Error, "") || s.Serving() != 0 {
		t.Errorf("quorum lost: %+v", s.Members)
	}
	c.StartMember(1)
	waitState(t, p, Up)
}

// A cluster that filled its quota raises NOSPACE: it serves reads and refuses writes. That is degraded,
// not down; after compact, defrag and disarm it is up again.
func TestNoSpaceIsDegraded(t *testing.T) {
	c := testenv.StartCluster(t, "dc1", testenv.Members, testenv.WithQuota(4<<20))
	cli := c.Client()
	p := newProber(t, c, 1, 1, 500*time.Millisecond)
	run(t, p)
	waitState(t, p, Up)
	testenv.FillUntilNoSpace(t, cli, "/fill/")
	s := waitState(t, p, Degraded)
	if s.AlarmText() != "NOSPACE (writes refused; reads served)" || s.Alarms[0].Member == "" || s.Serving() != testenv.Members {
		t.Errorf("degraded snapshot: %+v", s)
	}
	holdsUp(t, p, 5)

	testenv.ClearNoSpace(t, c, "/fill/")
	s = waitState(t, p, Up)
	if len(s.Alarms) != 0 {
		t.Errorf("after disarm: alarms %+v", s.Alarms)
	}
}

// CORRUPT, raised through the maintenance API as etcd's corruption check would, is degraded too.
func TestCorruptIsDegraded(t *testing.T) {
	c := testenv.StartCluster(t, "dc1", testenv.Members)
	cli := c.RootClient() // raising and disarming alarms are the root role's
	p := newProber(t, c, 1, 1, 500*time.Millisecond)
	run(t, p)
	waitState(t, p, Up)
	testenv.RaiseAlarm(t, cli, etcdserverpb.AlarmType_CORRUPT)
	s := waitState(t, p, Degraded)
	if !slices.ContainsFunc(s.Alarms, func(a Alarm) bool { return a.Type == "CORRUPT" }) {
		t.Errorf("alarms %+v", s.Alarms)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{}); err != nil {
		t.Fatal(err)
	}
	waitState(t, p, Up)
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
	p := newProberOf(t, clientv3.Config{Endpoints: []string{"http://" + l.Addr().String()}, DialTimeout: time.Second, Logger: zap.NewNop()}, 2, 1, timeout)
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
		results string // s = success, a = success with an alarm, f = failure
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
		{"aa", Degraded},
		{"ssa", Degraded}, // an alarm is a state of the cluster, not a flap: no threshold
		{"ssas", Up},      // nor is its disarm
		{"aafff", Down},   // a degraded cluster that stops answering is down
		{"aafffa", Down},  // and must come back in a row, like any other
		{"aafffsa", Degraded},
	} {
		p, err := New(Config{DC: "dc1", Etcd: clientv3.Config{Endpoints: []string{"x"}}, Key: "k",
			Interval: time.Second, Timeout: time.Second, FailureThreshold: 3, SuccessThreshold: 2})
		if err != nil {
			t.Fatal(err)
		}
		at := time.Unix(1000, 0)
		for _, r := range tc.results {
			res := Result{Revision: 1}
			switch r {
			case 'f':
				res.Err = fail
			case 'a':
				res.Alarms = []Alarm{{Type: "NOSPACE", Member: "1"}}
			}
			p.record(at, time.Millisecond, res)
			at = at.Add(time.Second)
		}
		if got := p.Snapshot().State; got != tc.want {
			t.Errorf("%q: state %s, want %s", tc.results, got, tc.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ok := Config{Etcd: clientv3.Config{Endpoints: []string{"x"}}, Key: "k", Interval: time.Second, Timeout: time.Second, FailureThreshold: 1, SuccessThreshold: 1}
	for name, mutate := range map[string]func(*Config){
		"no endpoints": func(c *Config) { c.Etcd.Endpoints = nil },
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

// etcd that answers but refuses topoha's user its read (a grant missing) is degraded, never down: a
// refusal is an answer, which etcd gives only with a quorum, so it must not start a failover. An alarm
// raised meanwhile is listed all the same, and named before the refusal.
func TestRefusedReadIsDegradedAndKeepsAlarms(t *testing.T) {
	// The fixture's user has the grants of cluster t: /topoha/test/health, the probe's key, is not one.
	d := testenv.StartDCs(t, testenv.WithAuth(), testenv.WithEtcd(testenv.WithQuota(4<<20)))
	c := d.Cluster["dc1"]
	p := newProber(t, c, 1, 1, 500*time.Millisecond)
	run(t, p)
	s := waitState(t, p, Degraded)
	if !strings.Contains(s.Refused, "permission denied") || s.Serving() != testenv.Members || !strings.HasPrefix(s.Describe(), "degraded: ") {
		t.Fatalf("refused read: refused %q, %d serving, %q", s.Refused, s.Serving(), s.Describe())
	}
	holdsUp(t, p, 5)

	testenv.FillUntilNoSpace(t, d.Root["dc1"], "/fill/")
	s = waitSnapshot(t, p, "the NOSPACE alarm", func(s Snapshot) bool { return len(s.Alarms) > 0 })
	if s.State != Degraded || s.AlarmText() != "NOSPACE (writes refused; reads served)" || s.Refused == "" ||
		!strings.HasPrefix(s.Describe(), "degraded: NOSPACE (writes refused; reads served); ") {
		t.Errorf("refused read with NOSPACE: %+v, %q", s, s.Describe())
	}
}
