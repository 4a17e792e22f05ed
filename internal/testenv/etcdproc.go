package testenv

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/topoha/topoha/internal/embedetcd"
)

// EtcdBinEnv names an etcd server binary (Debian's 3.4, or 3.5 or 3.6 from e2e/etcd/build.sh). When it is
// set, StartCluster runs each member as a process of that binary instead of in the test process, so that
// the same tests run against the etcd versions production runs; a member stop is a kill -9.
const EtcdBinEnv = "TOPOHA_ETCD_BIN"

// Member is one member of a Cluster: embedded in the test process, or an etcd process.
type Member interface {
	Name() string
	// Endpoint is the member's own client URL; clients use the Cluster's Endpoints, through its links.
	Endpoint() string
	// Start starts the member (again) and returns once it serves; Stop kills it; Wait waits until a
	// stopped member is gone.
	Start() error
	Stop()
	Wait()
	Running() bool
}

// procMember is an etcd process; its data directory and ports are kept across Stop and Start.
type procMember struct {
	t              testing.TB
	bin, name, dir string
	client, peer   string
	cluster, token string
	// tune is applied to an embed config before each start, and the settings that etcd's flags know are
	// passed on: a test may change a limit across a restart.
	tune []EtcdOption
	mu   sync.Mutex
	proc *Process
}

// startProcCluster starts n members of bin as one cluster, with the settings tune makes to an embed
// config that etcd's flags know (quota, max txn ops, max request bytes, auth token TTL).
func startProcCluster(t testing.TB, bin, name string, n int, tune []EtcdOption) []Member {
	t.Helper()
	var ms []*procMember
	var peers []string
	addrs, err := embedetcd.FreeAddrs(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		client, peer := addrs[2*i], addrs[2*i+1]
		m := &procMember{t: t, bin: bin, name: fmt.Sprintf("%s-%d", name, i), dir: filepath.Join(t.TempDir(), "data"),
			client: "http://" + client, peer: "http://" + peer, token: "topoha-" + name, tune: tune}
		ms = append(ms, m)
		peers = append(peers, m.name+"="+m.peer)
	}
	out := make([]Member, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range ms {
		m.cluster = strings.Join(peers, ",")
		out[i] = m
		wg.Go(func() { errs[i] = m.Start() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func (m *procMember) Name() string     { return m.name }
func (m *procMember) Endpoint() string { return m.client }

func (m *procMember) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil && !m.proc.Exited()
}

func (m *procMember) Start() error {
	if m.Running() {
		return nil
	}
	// Short ticks, as the embedded members have: elections and lease expiry fast on one machine.
	args := []string{"--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
		"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
		"--initial-cluster", m.cluster, "--initial-cluster-token", m.token, "--initial-cluster-state", "new",
		"--heartbeat-interval", "20", "--election-timeout", "200", "--log-level", "error"}
	cfg := embed.NewConfig()
	for _, f := range m.tune {
		f(cfg)
	}
	args = append(args, "--max-txn-ops", strconv.FormatUint(uint64(cfg.MaxTxnOps), 10),
		"--max-request-bytes", strconv.FormatUint(uint64(cfg.MaxRequestBytes), 10))
	if cfg.AuthTokenTTL != embed.NewConfig().AuthTokenTTL {
		args = append(args, "--auth-token-ttl", strconv.FormatUint(uint64(cfg.AuthTokenTTL), 10))
	}
	if cfg.QuotaBackendBytes > 0 {
		args = append(args, "--quota-backend-bytes", strconv.FormatInt(cfg.QuotaBackendBytes, 10))
	}
	// A member restarted on its data directory ignores the --initial-cluster flags. The Cluster or Etcd
	// kills it when the test ends, after the clients of the test are done with it (a cleanup per start
	// would run first, and leave them a cluster without quorum to shut down against).
	p := spawn(m.t, m.bin, args...)
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	return m.waitServing(p)
}

// waitServing waits until the member answers a linearizable read, which needs the cluster's quorum.
func (m *procMember) waitServing(p *Process) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.client}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "ready")
		cancel()
		switch {
		// A refusal for want of credentials is an answer too, and etcd gives it only with a quorum.
		case err == nil, refusedForAuth(err):
			return nil
		case p.Exited():
			return fmt.Errorf("etcd %s exited: %s", m.name, p.Stderr())
		case time.Now().After(deadline):
			return fmt.Errorf("etcd %s not serving after a minute: %v", m.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the member with SIGKILL.
func (m *procMember) Stop() {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p != nil && !p.Exited() {
		p.Kill()
	}
}

func (m *procMember) Wait() {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p != nil {
		for !p.Exited() {
			time.Sleep(10 * time.Millisecond)
		}
	}
}
