package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/internal/testenv"
)

const prefix = "/topoha/test/election/"

// candidate is an Elector run by a test, recording its terms.
type candidate struct {
	id     string
	cancel context.CancelFunc
	done   chan error

	mu      sync.Mutex
	terms   []Term
	leading bool
	ended   int // terms whose context ended
}

// etcdUnderTest is a testenv.Etcd or Cluster: the client a candidate campaigns with, and its configuration.
type etcdUnderTest interface {
	Client() *clientv3.Client
	ClientConfig() clientv3.Config
}

func startCandidate(t *testing.T, e etcdUnderTest, id string, ttl time.Duration) *candidate {
	t.Helper()
	return startCandidateOn(t, e.Client(), e.ClientConfig(), id, ttl)
}

func startCandidateOn(t *testing.T, cli *clientv3.Client, member clientv3.Config, id string, ttl time.Duration) *candidate {
	t.Helper()
	c := &candidate{id: id, done: make(chan error, 1)}
	e, err := New(Config{
		Client: cli, Member: member, Prefix: prefix, ID: id, DC: "dc2", TTL: ttl, RetryInterval: 50 * time.Millisecond, RequestTimeout: 5 * time.Second,
		OnStartedLeading: func(ctx context.Context, term Term) {
			c.mu.Lock()
			c.terms = append(c.terms, term)
			c.leading = true
			c.mu.Unlock()
			<-ctx.Done()
			c.mu.Lock()
			c.leading = false
			c.ended++
			c.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { c.done <- e.Run(ctx) }()
	t.Cleanup(func() { c.stop(t) })
	return c
}

func (c *candidate) stop(t *testing.T) {
	c.cancel()
	select {
	case err := <-c.done:
		c.done <- err
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: Run returned %v, want context.Canceled", c.id, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: Run did not return after cancel", c.id)
	}
}

func (c *candidate) state() (leading bool, terms []Term, ended int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading, append([]Term(nil), c.terms...), c.ended
}

func waitLeader(t *testing.T, cands ...*candidate) *candidate {
	t.Helper()
	var leader *candidate
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		leader = nil
		n := 0
		for _, c := range cands {
			if l, _, _ := c.state(); l {
				leader = c
				n++
			}
		}
		return n == 1, fmt.Sprintf("%d candidates leading", n)
	})
	return leader
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestOneLeaderAndResignHandsOverAtOnce(t *testing.T) {
	e := testenv.StartEtcd(t, "dr")
	cli := e.Client()
	const ttl = 10 * time.Second
	a := startCandidateOn(t, cli, e.ClientConfig(), "a", ttl)
	b := startCandidateOn(t, cli, e.ClientConfig(), "b", ttl)
	first := waitLeader(t, a, b)
	other := map[*candidate]*candidate{a: b, b: a}[first]

	l, err := CurrentLeader(ctxT(t), cli, prefix)
	if err != nil || l == nil || l.ID != first.id || l.DC != "dc2" {
		t.Fatalf("CurrentLeader = %+v, %v; want %s", l, err, first.id)
	}

	start := time.Now()
	first.stop(t)
	waitLeader(t, other)
	// Without the resignation the other candidate would wait for the 10 s lease to expire.
	if took := time.Since(start); took > ttl/2 {
		t.Errorf("handover after resign took %s; the TTL is %s", took, ttl)
	}
	if _, _, ended := first.state(); ended != 1 {
		t.Errorf("the resigned leader's term context ended %d times, want 1", ended)
	}
	other.stop(t)
	if l, err := CurrentLeader(ctxT(t), cli, prefix); err != nil || l != nil {
		t.Errorf("after both resigned, CurrentLeader = %+v, %v; want none", l, err)
	}
}

// A leader whose lease ends (as when it was frozen past its TTL) stops acting, and a write under its old
// fence is refused by etcd.
func TestLostLeaseEndsTheTermAndFencesOldWrites(t *testing.T) {
	e := testenv.StartEtcd(t, "dr")
	cli := e.Client()
	a := startCandidateOn(t, cli, e.ClientConfig(), "a", time.Second)
	waitLeader(t, a)
	_, terms, _ := a.state()
	term := terms[0]
	// The leader announces what it does; CurrentLeader shows it.
	since := time.Now()
	if err := term.Announce(ctxT(t), "mirroring", since); err != nil {
		t.Fatal(err)
	}
	if l, err := CurrentLeader(ctxT(t), cli, prefix); err != nil || l.ID != "a" || l.Phase != "mirroring" || !l.PhaseSince.Equal(since.UTC()) {
		t.Fatalf("leader after Announce: %+v %v", l, err)
	}

	if _, err := cli.Revoke(ctxT(t), term.Lease); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		_, _, ended := a.state()
		return ended >= 1, "the term's context has not ended"
	})
	resp, err := cli.Txn(ctxT(t)).If(term.Fence()).Then(clientv3.OpPut("/vt/stale", "x")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Succeeded {
		t.Fatal("a write under a lost term's fence succeeded")
	}
	if err := term.Announce(ctxT(t), "failing_over", time.Now()); err == nil {
		t.Fatal("a lost term announced a phase")
	}
	// The candidate campaigns again with a new session and leads a new term with a new fence.
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		leading, terms, _ := a.state()
		return leading && len(terms) == 2, fmt.Sprintf("leading=%v after %d terms", leading, len(terms))
	})
	_, terms, _ = a.state()
	if terms[1].Revision == term.Revision {
		t.Error("the new term has the old term's revision")
	}
	resp, err = cli.Txn(ctxT(t)).If(terms[1].Fence()).Then(clientv3.OpPut("/vt/fresh", "x")).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("a write under the current term's fence failed: %v %v", resp, err)
	}
}

// A waiting candidate whose own lease ends does not hang in Campaign: it starts a new session and can
// still lead later.
func TestCampaignEndsWithItsSession(t *testing.T) {
	e := testenv.StartEtcd(t, "dr")
	cli := e.Client()
	a := startCandidateOn(t, cli, e.ClientConfig(), "a", 10*time.Second)
	waitLeader(t, a)
	b := startCandidateOn(t, cli, e.ClientConfig(), "b", 10*time.Second)

	var bLease clientv3.LeaseID
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		resp, err := cli.Get(ctxT(t), prefix, clientv3.WithPrefix())
		if err != nil {
			return false, err.Error()
		}
		for _, kv := range resp.Kvs {
			if string(kv.Value) != "" && kv.Lease != int64(a.mustTerm(t).Lease) {
				bLease = clientv3.LeaseID(kv.Lease)
				return true, ""
			}
		}
		return false, "b has not campaigned"
	})
	if _, err := cli.Revoke(ctxT(t), bLease); err != nil {
		t.Fatal(err)
	}
	// b must campaign again under a new lease.
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		resp, err := cli.Get(ctxT(t), prefix, clientv3.WithPrefix())
		if err != nil {
			return false, err.Error()
		}
		return len(resp.Kvs) == 2, fmt.Sprintf("%d candidate keys", len(resp.Kvs))
	})
	a.stop(t)
	waitLeader(t, b)
}

func (c *candidate) mustTerm(t *testing.T) Term {
	_, terms, _ := c.state()
	if len(terms) == 0 {
		t.Fatalf("%s has no term", c.id)
	}
	return terms[len(terms)-1]
}

func TestNewRejectsBadConfig(t *testing.T) {
	e := testenv.StartEtcd(t, "dr")
	cli := e.Client()
	ok := Config{Client: cli, Member: e.ClientConfig(), Prefix: prefix, ID: "a", TTL: time.Second, RequestTimeout: 5 * time.Second, OnStartedLeading: func(context.Context, Term) {}}
	for name, mutate := range map[string]func(*Config){
		"no client":          func(c *Config) { c.Client = nil },
		"another user":       func(c *Config) { c.Member.Username = "someone-else" },
		"prefix without /":   func(c *Config) { c.Prefix = "/topoha/x" },
		"no id":              func(c *Config) { c.ID = "" },
		"sub-second ttl":     func(c *Config) { c.TTL = 500 * time.Millisecond },
		"fractional ttl":     func(c *Config) { c.TTL = 1500 * time.Millisecond },
		"no leader routine":  func(c *Config) { c.OnStartedLeading = nil },
		"no request timeout": func(c *Config) { c.RequestTimeout = 0 },
	} {
		cfg := ok
		mutate(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(ok); err != nil {
		t.Errorf("a valid config was refused: %v", err)
	}
}

// Any one member of the election's 3-member cluster stopped, isolated from its peers or blackholed (it
// accepts connections and never answers) must not end the leader's term: the other two refresh its lease.
// A blackholed member holds a gRPC stream for at least 10 s, ten times the TTL here.
func TestOneMemberFaultKeepsTheTerm(t *testing.T) {
	c := testenv.StartCluster(t, "dc2", testenv.Members)
	a := startCandidate(t, c, "a", time.Second)
	b := startCandidate(t, c, "b", time.Second)
	leader := waitLeader(t, a, b)
	_, before, _ := leader.state()
	for i := range c.Members() {
		for _, fault := range []string{"blackholed", "isolated", "stopped"} {
			if fault == "isolated" && !c.CanIsolate() {
				continue
			}
			switch fault {
			case "stopped":
				c.StopMember(i)
			case "isolated":
				c.Isolate(i)
			case "blackholed":
				c.Blackhole(i)
			}
			end := time.Now().Add(3 * time.Second)
			for time.Now().Before(end) {
				if leading, terms, _ := leader.state(); !leading || len(terms) != len(before) {
					t.Fatalf("member %d %s: %s's term ended (leading %v, %d terms)", i, fault, leader.id, leading, len(terms))
				}
				time.Sleep(50 * time.Millisecond)
			}
			switch fault {
			case "stopped":
				c.StartMember(i)
			case "isolated":
				c.Rejoin(i)
			case "blackholed":
				c.Unblackhole(i)
			}
		}
	}
}
