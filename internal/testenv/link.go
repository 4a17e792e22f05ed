package testenv

import (
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Link is the network path to a server: a toxiproxy proxy, in-process, that a test cuts and heals. Point
// a client at Addr instead of the server to put the link between them.
type Link struct {
	t     testing.TB
	proxy *toxiproxy.Proxy
}

// StartLink starts a link to upstream (host:port) on a free loopback port; it is closed when the test ends.
func StartLink(t testing.TB, name, upstream string) *Link {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	srv.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start link %s to %s: %v", name, upstream, err)
	}
	t.Cleanup(p.Stop)
	return &Link{t: t, proxy: p}
}

// Addr is where clients connect: host:port.
func (l *Link) Addr() string { return l.proxy.Listen }

// Cut closes the link: connections through it are dropped and new ones refused.
func (l *Link) Cut() { l.proxy.Stop() }

// Heal opens the link again on the same address.
func (l *Link) Heal() {
	l.t.Helper()
	if err := l.proxy.Start(); err != nil {
		l.t.Fatalf("heal link %s: %v", l.proxy.Name, err)
	}
}
