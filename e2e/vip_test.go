//go:build e2evitess

package e2e

import (
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/topoha/topoha/internal/testenv"
)

// vip is the global topo VIP of docs/design.md: one address that every tablet uses for the topo, forwarded to
// one DC's etcd cluster, each connection to the first of its members that accepts it, as a load balancer in
// front of the cluster does. Moving it to the other DC drops the connections through it, as an LVS or
// keepalived move does.
type vip struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []string
	conns    map[net.Conn]struct{}
}

func startVIP(t *testing.T, backends []string) *vip {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	v := &vip{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() {
		ln.Close()
		v.set(nil)
	})
	go v.serve()
	return v
}

func (v *vip) addr() string { return v.ln.Addr().String() }

func (v *vip) current() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.backends
}

// set points the VIP at backends and drops every connection to the old ones.
func (v *vip) set(backends []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if slices.Equal(backends, v.backends) {
		return
	}
	v.backends = backends
	for c := range v.conns {
		c.Close()
		delete(v.conns, c)
	}
}

func (v *vip) serve() {
	for {
		client, err := v.ln.Accept()
		if err != nil {
			return
		}
		go v.forward(client)
	}
}

func (v *vip) forward(client net.Conn) {
	backends := v.current()
	var server net.Conn
	for _, b := range backends {
		var err error
		if server, err = net.DialTimeout("tcp", b, time.Second); err == nil {
			break
		}
	}
	if server == nil {
		client.Close()
		return
	}
	v.mu.Lock()
	if !slices.Equal(v.backends, backends) { // moved while dialing
		v.mu.Unlock()
		client.Close()
		server.Close()
		return
	}
	v.conns[client], v.conns[server] = struct{}{}, struct{}{}
	v.mu.Unlock()
	go func() {
		_, _ = io.Copy(server, client)
		server.Close()
	}()
	_, _ = io.Copy(client, server)
	client.Close()
}

var httpAddr = regexp.MustCompile(`http=(127\.0\.0\.1:\d+)`)

// keepalived moves the VIP to the etcd of the DC whose controller answers 200 on /primary, checking
// every 200 ms, as the keepalived example in deploy/hooks does; it runs until the test ends.
func keepalived(t *testing.T, v *vip, ctls map[string]*testenv.Process, etcdOf map[string][]string) {
	addrs := map[string]string{}
	for dc, p := range ctls {
		testenv.Eventually(t, waitLong, func() (bool, string) {
			m := httpAddr.FindStringSubmatch(p.Stderr())
			if m != nil {
				addrs[dc] = m[1]
			}
			return m != nil, "no http address logged by the controller in " + dc
		})
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		<-stopped
	})
	client := &http.Client{Timeout: 500 * time.Millisecond}
	go func() {
		defer close(stopped)
		for {
			for dc, addr := range addrs {
				resp, err := client.Get("http://" + addr + "/primary")
				if err != nil {
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && !slices.Equal(v.current(), etcdOf[dc]) {
					t.Logf("keepalived: the topo VIP moves to %s's etcd", dc)
					v.set(etcdOf[dc])
				}
			}
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
}
