// Package testenv starts the real parts that topoha's tests run against: etcd servers (embedded, on
// loopback ports) and the topoha binary. Tests never mock etcd; a DC loss is a server stopped.
package testenv

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a single-member etcd cluster running in the test process. It keeps its data directory and ports
// across Stop and Start, like a server process restarted on the same host.
type Etcd struct {
	t          testing.TB
	name       string
	dir        string
	clientURL  url.URL
	peerURL    url.URL
	e          *embed.Etcd
	configHook func(*embed.Config)
}

// EtcdOption changes the embedded server's configuration.
type EtcdOption func(*embed.Config)

// WithMaxTxnOps sets the server's --max-txn-ops.
func WithMaxTxnOps(n uint) EtcdOption { return func(c *embed.Config) { c.MaxTxnOps = n } }

// StartEtcd starts an etcd server on free loopback ports with a fresh data directory. It is stopped when
// the test ends.
func StartEtcd(t testing.TB, name string, opts ...EtcdOption) *Etcd {
	t.Helper()
	s := &Etcd{
		t:         t,
		name:      name,
		dir:       t.TempDir(),
		clientURL: url.URL{Scheme: "http", Host: freeAddr(t)},
		peerURL:   url.URL{Scheme: "http", Host: freeAddr(t)},
		configHook: func(c *embed.Config) {
			for _, o := range opts {
				o(c)
			}
		},
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server (again, after Stop) and waits until it serves.
func (s *Etcd) Start() {
	s.t.Helper()
	if s.e != nil {
		return
	}
	cfg := embed.NewConfig()
	cfg.Name = s.name
	cfg.Dir = s.dir
	// Short ticks make elections and lease expiry fast; tests still only poll for conditions.
	cfg.TickMs = 10
	cfg.ElectionMs = 100
	cfg.UnsafeNoFsync = true
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.ListenClientUrls = []url.URL{s.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{s.clientURL}
	cfg.ListenPeerUrls = []url.URL{s.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{s.peerURL}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", s.name, s.peerURL.String())
	cfg.InitialClusterToken = "topoha-test-" + s.name
	s.configHook(cfg)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		s.t.Fatalf("start etcd %s: %v", s.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		s.t.Fatalf("etcd %s not ready after 30s", s.name)
	}
	s.e = e
}

// Stop stops the server; its data stays for Start.
func (s *Etcd) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// Endpoint is the client URL, e.g. http://127.0.0.1:40123.
func (s *Etcd) Endpoint() string { return s.clientURL.String() }

// Client returns a client of this server that is closed when the test ends.
func (s *Etcd) Client() *clientv3.Client {
	s.t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.Endpoint()},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		s.t.Fatalf("client of etcd %s: %v", s.name, err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Compact compacts the server's history up to the current revision and returns that revision.
func (s *Etcd) Compact(ctx context.Context, c *clientv3.Client) int64 {
	s.t.Helper()
	resp, err := c.Get(ctx, "compact-probe")
	if err != nil {
		s.t.Fatalf("compact etcd %s: %v", s.name, err)
	}
	rev := resp.Header.Revision
	if _, err := c.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		s.t.Fatalf("compact etcd %s at %d: %v", s.name, rev, err)
	}
	return rev
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}
