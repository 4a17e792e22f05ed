// Package testenv starts the real parts that topoha's tests run against: etcd servers (embedded, on
// loopback ports) and the topoha binary. Tests never mock etcd; a DC loss is a server stopped.
package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/topoha/topoha/internal/embedetcd"
)

// Etcd is a single-member etcd cluster; Stop and Start keep its data and ports. It serves unit tests of
// one component; health, election, mirror and failover behaviour is tested on a Cluster, the production
// layout. It runs in the test process, or as a process of $TOPOHA_ETCD_BIN (see EtcdBinEnv).
type Etcd struct {
	t testing.TB
	m Member
	// auth says that authentication is on (AuthEnv): Client logs in as User, whose role has every key.
	auth bool
}

// EtcdOption changes the embedded server's configuration.
type EtcdOption = func(*embed.Config)

// WithMaxTxnOps sets the server's --max-txn-ops.
func WithMaxTxnOps(n uint) EtcdOption { return func(c *embed.Config) { c.MaxTxnOps = n } }

// WithAuthTokenTTL sets the server's --auth-token-ttl: how long a simple token lives unused.
func WithAuthTokenTTL(ttl time.Duration) EtcdOption {
	return func(c *embed.Config) { c.AuthTokenTTL = uint(ttl / time.Second) }
}

// WithQuota sets the server's --quota-backend-bytes: past it etcd raises the NOSPACE alarm.
func WithQuota(bytes int64) EtcdOption { return func(c *embed.Config) { c.QuotaBackendBytes = bytes } }

// StartEtcd starts an etcd server on free loopback ports with a fresh data directory. It is stopped when
// the test ends. With AuthEnv set it has authentication on, as a Cluster has.
func StartEtcd(t testing.TB, name string, opts ...EtcdOption) *Etcd {
	t.Helper()
	s := &Etcd{t: t}
	auth := authFromEnv(t)
	if bin := os.Getenv(EtcdBinEnv); bin != "" {
		s.m = startProcCluster(t, bin, name, 1, opts)[0]
	} else {
		srv, err := embedetcd.New(name, t.TempDir(), cheapPasswords(opts, auth)...)
		if err != nil {
			t.Fatal(err)
		}
		s.m = srv
		s.Start()
	}
	t.Cleanup(func() {
		s.Stop()
		s.m.Wait()
	})
	if auth {
		turnOnAuth(t, []string{s.Endpoint()})
		s.auth = true
	}
	return s
}

// Endpoint is the server's client URL.
func (s *Etcd) Endpoint() string { return s.m.Endpoint() }

// Stop stops the server as a kill would; its data stays for Start.
func (s *Etcd) Stop() { s.m.Stop() }

// Start starts the server again after Stop and waits until it serves.
func (s *Etcd) Start() {
	s.t.Helper()
	if err := s.m.Start(); err != nil {
		s.t.Fatal(err)
	}
}

// Client returns a client of this server that is closed when the test ends.
func (s *Etcd) Client() *clientv3.Client {
	s.t.Helper()
	return newClient(s.t, s.ClientConfig())
}

// ClientConfig is the configuration of Client, for a component that opens its own client.
func (s *Etcd) ClientConfig() clientv3.Config {
	return loginConfig([]string{s.Endpoint()}, s.auth, User, UserPassword)
}

// RootClient is Client logging in as RootUser, for what is the root role's (compaction); without
// authentication it is Client.
func (s *Etcd) RootClient() *clientv3.Client {
	s.t.Helper()
	return newClient(s.t, loginConfig([]string{s.Endpoint()}, s.auth, RootUser, RootPassword))
}

// Compact compacts the server's history up to the current revision, as RootUser when authentication is
// on (compaction is the root role's), and returns that revision.
func (s *Etcd) Compact(ctx context.Context) int64 { return Compact(ctx, s.t, s.RootClient()) }

// Compact compacts the history of the etcd that c reaches up to its current revision and returns that
// revision.
func Compact(ctx context.Context, t testing.TB, c *clientv3.Client) int64 {
	t.Helper()
	resp, err := c.Get(ctx, "compact-probe")
	if err != nil {
		t.Fatalf("compact etcd %v: %v", c.Endpoints(), err)
	}
	rev := resp.Header.Revision
	if _, err := c.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact etcd %v at %d: %v", c.Endpoints(), rev, err)
	}
	return rev
}
