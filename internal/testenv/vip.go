package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// VIP is one address in front of several servers, as LVS or keepalived with a health check put in front
// of a DC's etcd members: each new connection goes to the next server in turn, and a server that refuses
// it is skipped. It only forwards bytes; what happens to a connection whose server dies is what happens
// behind a real VIP: it breaks, and the client dials again.
type VIP struct {
	ln       net.Listener
	backends []string

	mu    sync.Mutex
	next  int
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// StartVIP listens on a free loopback port in front of backends (host:port); it is closed when the test
// ends.
func StartVIP(t testing.TB, backends []string) *VIP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("start VIP: %v", err)
	}
	v := &VIP{ln: ln, backends: backends, conns: map[net.Conn]bool{}}
	v.wg.Go(v.serve)
	t.Cleanup(v.close)
	return v
}

// Addr is where clients connect: host:port.
func (v *VIP) Addr() string { return v.ln.Addr().String() }

func (v *VIP) serve() {
	for {
		c, err := v.ln.Accept()
		if err != nil {
			return
		}
		v.wg.Go(func() { v.forward(c) })
	}
}

// forward connects c to the next backend that accepts, and copies both ways until either side closes.
func (v *VIP) forward(c net.Conn) {
	defer c.Close()
	var b net.Conn
	for range v.backends {
		v.mu.Lock()
		addr := v.backends[v.next%len(v.backends)]
		v.next++
		v.mu.Unlock()
		var err error
		if b, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
	}
	if b == nil {
		return
	}
	defer b.Close()
	if !v.track(c, b) {
		return
	}
	defer v.untrack(c, b)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
	<-done
}

func (v *VIP) track(conns ...net.Conn) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.conns == nil {
		return false
	}
	for _, c := range conns {
		v.conns[c] = true
	}
	return true
}

func (v *VIP) untrack(conns ...net.Conn) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, c := range conns {
		delete(v.conns, c)
	}
}

func (v *VIP) close() {
	v.ln.Close()
	v.mu.Lock()
	for c := range v.conns {
		c.Close()
	}
	v.conns = nil
	v.mu.Unlock()
	v.wg.Wait()
}
