// Package embedetcd runs etcd clusters inside the process, on free loopback ports: one member (Server) or
// several (Cluster), the production layout of a DC's etcd. The demo uses it to stand in for each DC's
// etcd, and the tests through internal/testenv.
package embedetcd

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is an embedded etcd that keeps its data directory and ports across Stop and Start, like a server
// process restarted on the same host.
type Server struct {
	name      string
	dir       string
	clientURL url.URL
	peerURL   url.URL
	tune      []func(*embed.Config)
	// cluster is the --initial-cluster and token of a member of a Cluster; empty for a lone server.
	cluster, token string
	e              *embed.Etcd
	started        bool          // once it has served, its ports are in clients' configs and must not change
	closing        chan struct{} // closed when the last Stop's shutdown has finished
	id             types.ID      // the member ID, known once it has started
}

// New prepares a server with its data in dir on two free loopback ports. tune changes its configuration
// before each start.
func New(name, dir string, tune ...func(*embed.Config)) (*Server, error) {
	s := &Server{name: name, dir: dir, tune: tune}
	return s, s.pickPorts()
}

func (s *Server) pickPorts() error {
	addrs, err := FreeAddrs(2)
	if err != nil {
		return err
	}
	s.setPorts(addrs[0], addrs[1])
	return nil
}

func (s *Server) setPorts(client, peer string) {
	s.clientURL = url.URL{Scheme: "http", Host: client}
	s.peerURL = url.URL{Scheme: "http", Host: peer}
}

// Start starts the server (again, after Stop) and waits until it serves. On the first start, a port taken
// between New and Start is replaced by another.
func (s *Server) Start() error {
	if s.e != nil {
		return nil
	}
	for attempt := 1; ; attempt++ {
		err := s.start()
		if err == nil || s.started || attempt == 5 || !addrInUse(err) {
			return err
		}
		if err := s.pickPorts(); err != nil {
			return err
		}
	}
}

func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

func (s *Server) start() error {
	s.Wait()
	cfg := embed.NewConfig()
	cfg.Name = s.name
	cfg.Dir = s.dir
	// Short ticks make elections and lease expiry fast on one machine; not shorter, since a leader sends
	// its followers a heartbeat every tick, and many clusters share two cores in the tests.
	cfg.TickMs = 20
	cfg.ElectionMs = 200
	cfg.UnsafeNoFsync = true
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.ListenClientUrls = []url.URL{s.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{s.clientURL}
	cfg.ListenPeerUrls = []url.URL{s.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{s.peerURL}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", s.name, s.peerURL.String())
	cfg.InitialClusterToken = "topoha-" + s.name
	if s.cluster != "" {
		cfg.InitialCluster, cfg.InitialClusterToken = s.cluster, s.token
	}
	for _, f := range s.tune {
		f(cfg)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd %s: %w", s.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("etcd %s not ready after 30s", s.name)
	}
	s.e, s.started, s.id = e, true, e.Server.MemberID()
	return nil
}

// Running says whether the server has been started and not stopped since.
func (s *Server) Running() bool { return s.e != nil }

// Name is the member's name.
func (s *Server) Name() string { return s.name }

// Stop stops the server and waits for its shutdown (embed drains clients' open streams for up to 5 s
// meanwhile). Its data stays for Start.
func (s *Server) Stop() {
	s.stopAsync(false)
	s.Wait()
}

// stopAsync starts the server's shutdown and returns; Wait waits for it. cutOff says its peers no longer
// hear it (Cluster.Kill).
func (s *Server) stopAsync(cutOff bool) {
	if s.e == nil {
		return
	}
	e := s.e
	s.e = nil
	done := make(chan struct{})
	s.closing = done
	go func() {
		defer close(done)
		if cutOff {
			awaitStepDown(e)
		}
		e.Close()
	}()
}

// awaitStepDown waits, for at most ten election timeouts, until e, cut off from its peers, is no longer
// their leader: CheckQuorum makes an isolated leader step down within an election timeout. Closed as
// their leader, etcd would try to hand the leadership to peers it cannot reach, and wait its request
// timeout (5.4 s) for that; a killed process does neither. (Stopping raft first with HardStop would skip
// the transfer too, but it closes the backend while the gRPC server still serves, and a Status request
// in that moment crashes the process.)
func awaitStepDown(e *embed.Etcd) {
	election := time.Duration(e.Config().ElectionMs) * time.Millisecond
	for deadline := time.Now().Add(10 * election); e.Server.Leader() == e.Server.MemberID() && time.Now().Before(deadline); {
		time.Sleep(election / 10)
	}
}

// Wait waits until the server's last Stop has finished its shutdown.
func (s *Server) Wait() {
	if s.closing != nil {
		<-s.closing
	}
}

// Endpoint is the client URL, e.g. http://127.0.0.1:40123.
func (s *Server) Endpoint() string { return s.clientURL.String() }

// Client returns a new client of this server; the caller closes it.
func (s *Server) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{s.Endpoint()},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// FreeAddrs returns n distinct loopback host:ports that nothing listens on (see FreeAddr): two calls of
// FreeAddr may well return the same port, since nothing holds it in between.
func FreeAddrs(n int) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for attempts := 0; len(out) < n; attempts++ {
		if attempts > 100*n {
			return nil, fmt.Errorf("find %d distinct free loopback ports: only %d after %d attempts", n, len(out), attempts)
		}
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	return out, nil
}

// FreeAddr returns a loopback host:port that nothing listens on, below the kernel's ephemeral port range:
// a port from that range, once released, can become the local port of any outgoing connection before the
// server meant for it binds it.
func FreeAddr() (string, error) {
	low := ephemeralLow()
	if low > 12000 {
		for range 100 {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(low-10000)))
			if l, err := net.Listen("tcp", addr); err == nil {
				l.Close()
				return addr, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ephemeralLow is the lowest port the kernel hands out to outgoing connections.
func ephemeralLow() int {
	low := 32768 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	return low
}
