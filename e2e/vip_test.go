//go:build e2evitess

package e2e

import (
	"io"
	"net"
	"net/http"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/topoha/topoha/internal/testenv"
)

// vip is the global topo VIP of docs/design.md: one address that every tablet uses for the topo, forwarded to
// one DC's etcd. Moving it drops the connections through it, as an LVS or keepalived move does.
type vip struct {
	ln      net.Listener
	mu      sync.Mutex
	backend string
	conns   map[net.Conn]struct{}
}

func startVIP(t *testing.T, backend string) *vip {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	v := &vip{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() {
		ln.Close()
		v.set("")
	})
	go v.serve()
	return v
}

func (v *vip) addr() string { return v.ln.Addr().String() }

func (v *vip) current() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.backend
}

// set points the VIP at backend and drops every connection to the old one.
func (v *vip) set(backend string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if backend == v.backend {
		return
	}
	v.backend = backend
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
	backend := v.current()
	server, err := net.DialTimeout("tcp", backend, time.Second)
	if err != nil || backend == "" {
		client.Close()
		return
	}
	v.mu.Lock()
	if v.backend != backend { // moved while dialing
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
func keepalived(t *testing.T, v *vip, ctls map[string]*testenv.Process, etcdOf map[string]string) {
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
				if resp.StatusCode == http.StatusOK && v.current() != etcdOf[dc] {
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
