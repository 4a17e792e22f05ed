package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/Shopify/toxiproxy/v2/toxics"
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

// Heal undoes Cut, Blackhole and Slow: the toxics are removed (connections that a blackhole swallowed
// data from are closed) and the link opens again on the same address if it was cut.
func (l *Link) Heal() {
	l.t.Helper()
	l.proxy.Toxics.ResetToxics(context.Background())
	if err := l.proxy.Start(); err != nil && !errors.Is(err, toxiproxy.ErrProxyAlreadyStarted) {
		l.t.Fatalf("heal link %s: %v", l.proxy.Name, err)
	}
}

// Blackhole makes the link accept connections and never answer: whatever is sent either way is dropped
// and no connection is closed (toxiproxy's timeout toxic with timeout 0), like a VIP whose backend hangs
// or a firewall that drops packets. Clients see timeouts, not refusals. Heal ends it.
func (l *Link) Blackhole() {
	l.t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		l.addToxic("blackhole_"+stream, "timeout", stream, &toxics.TimeoutToxic{Timeout: 0})
	}
}

// Slow delays the data through the link by latency each way (toxiproxy's latency toxic). Heal ends it.
func (l *Link) Slow(latency time.Duration) {
	l.t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		l.addToxic("slow_"+stream, "latency", stream, &toxics.LatencyToxic{Latency: latency.Milliseconds()})
	}
}

// addToxic adds a toxic to the link through toxiproxy's own (JSON) interface.
func (l *Link) addToxic(name, typ, stream string, attrs toxics.Toxic) {
	l.t.Helper()
	body, err := json.Marshal(struct {
		Name       string       `json:"name"`
		Type       string       `json:"type"`
		Stream     string       `json:"stream"`
		Toxicity   float32      `json:"toxicity"`
		Attributes toxics.Toxic `json:"attributes"`
	}{name, typ, stream, 1, attrs})
	if err != nil {
		l.t.Fatal(err)
	}
	if _, err := l.proxy.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
		l.t.Fatalf("link %s: add %s toxic %s: %v", l.proxy.Name, typ, name, err)
	}
}

// Path is the network from one site to one DC's etcd cluster: a link to each member, in front of the
// member's own link, so that a member stopped drops the connections through here too. Cut, Heal,
// Blackhole and Slow act on every member: the whole DC as that site sees it.
type Path struct{ links []*Link }

// StartPath starts a link to each member of c; they are closed when the test ends.
func StartPath(t testing.TB, name string, c *Cluster) *Path {
	t.Helper()
	p := &Path{}
	for i, ep := range c.Endpoints() {
		p.links = append(p.links, StartLink(t, fmt.Sprintf("%s-%d", name, i), strings.TrimPrefix(ep, "http://")))
	}
	return p
}

func (p *Path) each(f func(*Link)) {
	for _, l := range p.links {
		f(l)
	}
}

// Cut cuts the link to every member.
func (p *Path) Cut() { p.each((*Link).Cut) }

// Heal heals the link to every member.
func (p *Path) Heal() { p.each((*Link).Heal) }

// Blackhole blackholes the link to every member.
func (p *Path) Blackhole() { p.each((*Link).Blackhole) }

// Slow delays the link to every member by latency each way.
func (p *Path) Slow(latency time.Duration) { p.each(func(l *Link) { l.Slow(latency) }) }

// Endpoints are the URLs a client at the path's site uses for the DC's etcd.
func (p *Path) Endpoints() []string {
	var eps []string
	for _, l := range p.links {
		eps = append(eps, "http://"+l.Addr())
	}
	return eps
}
