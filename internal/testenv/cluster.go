package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/internal/embedetcd"
)

// Members is the size of a DC's etcd cluster in tests of health, election, mirror and failover: the
// smallest that survives the loss of a member, as production runs.
const Members = 3

// Cluster is one DC's etcd as production runs it: several members, all listed as endpoints. Clients reach
// each member through a link of its own (a TCP proxy, as the network between hosts), so that a member
// stopped drops its clients' connections at once, as a killed process does, and a member can be
// blackholed. Stop and Start act on the whole cluster (a DC loss); StopMember, StartMember, Blackhole
// and Isolate on one member. The members run in the test process, or as processes of the etcd binary
// named by $TOPOHA_ETCD_BIN.
type Cluster struct {
	t       testing.TB
	members []Member
	links   []*Link
	// embedded is the in-process cluster; nil when the members are processes.
	embedded *embedetcd.Cluster
	// auth says that authentication is on (AuthEnv, WithAuth): clients log in as User, or as RootUser.
	auth bool
}

// StartCluster starts a cluster of n members with fresh data directories; it is stopped when the test
// ends.
func StartCluster(t testing.TB, name string, n int, opts ...EtcdOption) *Cluster {
	t.Helper()
	return startClusters(t, []string{name}, n, opts, authFromEnv(t))[0]
}

// startClusters starts a cluster of n members per name. In-process clusters boot at the same time: a
// bootstrap is mostly waiting for the first election, and a test of two DCs would wait for two in turn.
// With auth, each cluster turns authentication on once it serves (turnOnAuth).
func startClusters(t testing.TB, names []string, n int, opts []EtcdOption, auth bool) []*Cluster {
	t.Helper()
	cs := make([]*Cluster, len(names))
	if bin := os.Getenv(EtcdBinEnv); bin != "" {
		for i, name := range names {
			cs[i] = &Cluster{t: t, members: startProcCluster(t, bin, name, n, opts)}
		}
	} else {
		for i, name := range names {
			ec, err := embedetcd.NewCluster(name, t.TempDir(), n, cheapPasswords(opts, auth)...)
			if err != nil {
				t.Fatal(err)
			}
			cs[i] = &Cluster{t: t, embedded: ec}
			for j, m := range ec.Members() {
				cs[i].members = append(cs[i].members, embeddedMember{Server: m, cluster: ec, i: j})
			}
		}
		// Clusters that pick a port the other took meanwhile start again on others (embedetcd.Cluster.Start).
		errs := make([]error, len(names))
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Go(func() { errs[i] = c.embedded.Start() })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			for _, c := range cs {
				c.embedded.Stop()
			}
			t.Fatal(err)
		}
	}
	for _, c := range cs {
		for _, m := range c.members {
			c.links = append(c.links, StartLink(t, m.Name(), strings.TrimPrefix(m.Endpoint(), "http://")))
		}
		t.Cleanup(func() {
			c.Stop()
			for _, m := range c.members {
				m.Wait()
			}
		})
		if auth {
			turnOnAuth(t, c.Endpoints())
			c.auth = true
		}
	}
	return cs
}

// Auth says whether the cluster has authentication on.
func (c *Cluster) Auth() bool { return c.auth }

// Members are the cluster's members, in the order of Endpoints.
func (c *Cluster) Members() []Member { return c.members }

// Start starts every stopped member at once (a new cluster's members wait for each other's votes), waits
// until all serve, and opens their links.
func (c *Cluster) Start() {
	c.t.Helper()
	// Every link mended before any member starts: a member is not to be touched while it starts.
	for i, m := range c.members {
		if _, ok := m.(embeddedMember); ok && !m.Running() {
			c.embedded.Isolate(i, false)
		}
	}
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		if m.Running() {
			continue
		}
		start := m.Start
		if em, ok := m.(embeddedMember); ok {
			start = em.Server.Start
		}
		wg.Go(func() { errs[i] = start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.t.Fatal(err)
	}
	for _, l := range c.links {
		l.Heal()
	}
}

// Stop stops every member and cuts their links: the DC's etcd is lost.
func (c *Cluster) Stop() {
	for i := range c.members {
		c.StopMember(i)
	}
}

// Endpoints are the URLs clients use: each member's link.
func (c *Cluster) Endpoints() []string {
	eps := c.Addrs()
	for i, a := range eps {
		eps[i] = "http://" + a
	}
	return eps
}

// Addrs are the members' links as host:port, the form Vitess and TCP forwarders take.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.links))
	for i, l := range c.links {
		addrs[i] = l.Addr()
	}
	return addrs
}

// Client returns a client of every member, closed when the test ends. With authentication on it logs in
// as User.
func (c *Cluster) Client() *clientv3.Client {
	c.t.Helper()
	return newClient(c.t, c.ClientConfig())
}

// RootClient is Client logging in as RootUser, for what a test sets up beyond topoha's grants; without
// authentication it is Client.
func (c *Cluster) RootClient() *clientv3.Client {
	c.t.Helper()
	return newClient(c.t, loginConfig(c.Endpoints(), c.auth, RootUser, RootPassword))
}

// ClientConfig is the configuration of Client, for a component that opens its own client.
func (c *Cluster) ClientConfig() clientv3.Config {
	return loginConfig(c.Endpoints(), c.auth, User, UserPassword)
}

// newClient opens a client that is closed when the test ends.
func newClient(t testing.TB, cc clientv3.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(cc)
	if err != nil {
		t.Fatalf("client of %v: %v", cc.Endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// clientConfig is a test's client of endpoints, logged in as user (or nobody: ""), configured as topoha's
// own clients are (config.Etcd.ClientConfig): without their keepalives and reconnection back-off a
// request that the balancer sends to a hung member, or a cleanup on client.Ctx() inside the concurrency
// package, can wait for minutes, and without their authentication interceptor a client whose token etcd
// refuses authenticates again with the refused token for ever.
func clientConfig(endpoints []string, user, password string) clientv3.Config {
	// Without password or TLS files to read it cannot fail.
	cc, _ := config.Etcd{Endpoints: endpoints, DialTimeout: 2 * time.Second, Username: user}.ClientConfig("testenv")
	cc.Password = password
	return cc
}

// StopMember stops member i as a kill would: its clients' connections drop, it leaves raft; the others
// go on.
func (c *Cluster) StopMember(i int) {
	c.links[i].Cut()
	c.members[i].Stop()
}

// StartMember starts member i again and waits until it serves, which needs a quorum.
func (c *Cluster) StartMember(i int) {
	c.t.Helper()
	if err := c.members[i].Start(); err != nil {
		c.t.Fatal(err)
	}
	c.links[i].Heal()
}

// Blackhole makes member i's link swallow everything without an answer, as a hung host or a firewall
// that drops packets; the member itself goes on with its peers. Unblackhole ends it.
func (c *Cluster) Blackhole(i int) { c.links[i].Blackhole() }

// Unblackhole ends Blackhole.
func (c *Cluster) Unblackhole(i int) { c.links[i].Heal() }

// Leader is the index of the member that leads raft, as the running members answer; -1 if none does.
func (c *Cluster) Leader() int {
	for i, m := range c.members {
		if !m.Running() {
			continue
		}
		cc := loginConfig([]string{m.Endpoint()}, c.auth, RootUser, RootPassword)
		cc.DialTimeout = time.Second
		cli, err := clientv3.New(cc)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, m.Endpoint())
		cancel()
		cli.Close()
		if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
			return i
		}
	}
	return -1
}

// WaitLeader waits until a running member leads raft and returns its index.
func (c *Cluster) WaitLeader() int {
	c.t.Helper()
	leader := -1
	Eventually(c.t, time.Minute, func() (bool, string) {
		leader = c.Leader()
		return leader >= 0, "no member of the cluster leads raft"
	})
	return leader
}

// CanIsolate says whether Isolate works: it needs embedded members (etcd's CutPeer), not processes.
func (c *Cluster) CanIsolate() bool { return c.embedded != nil }

// Isolate cuts member i off from its peers both ways, as a partition of its host would, while it still
// accepts clients: it loses its leader and cannot serve linearizable reads or writes. Rejoin undoes it.
// With etcd processes (see CanIsolate) the test is skipped.
func (c *Cluster) Isolate(i int) { c.peerLinks(i, true) }

// Rejoin undoes Isolate.
func (c *Cluster) Rejoin(i int) { c.peerLinks(i, false) }

func (c *Cluster) peerLinks(i int, cut bool) {
	c.t.Helper()
	if c.embedded == nil {
		c.t.Skip("isolating one member from its peers needs embedded etcd members (CutPeer); " + EtcdBinEnv + " is set")
	}
	if !c.members[i].Running() {
		c.t.Fatalf("member %d of %s is not running", i, c.Endpoints())
	}
	c.embedded.Isolate(i, cut)
}

// embeddedMember is a member of an embedded cluster: the cluster kills and restarts it, so that its peers
// lose it at once and take it back.
type embeddedMember struct {
	*embedetcd.Server
	cluster *embedetcd.Cluster
	i       int
}

func (m embeddedMember) Stop()        { m.cluster.Kill(m.i) }
func (m embeddedMember) Start() error { return m.cluster.StartMember(m.i) }

// FillUntilNoSpace writes values through cli until the cluster refuses them with NOSPACE, as an etcd
// whose compaction does not keep up does. The cluster must have been started WithQuota.
func FillUntilNoSpace(t testing.TB, cli *clientv3.Client, prefix string) {
	t.Helper()
	val := strings.Repeat("x", 64<<10)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cli.Put(ctx, fmt.Sprintf("%s%06d", prefix, i), val)
		cancel()
		if err != nil {
			if strings.Contains(err.Error(), "database space exceeded") {
				return
			}
			t.Fatalf("fill %s: put %d: %v", prefix, i, err)
		}
		if i > 100000 {
			t.Fatalf("fill %s: %d puts and no NOSPACE: start the cluster WithQuota", prefix, i)
		}
	}
}

// ClearNoSpace does what the runbook tells an operator after NOSPACE: delete what filled the cluster,
// compact, defragment every member, and disarm the alarm. Those are the root role's, so it acts as
// RootUser when authentication is on.
func ClearNoSpace(t testing.TB, c *Cluster, prefix string) {
	t.Helper()
	cli := c.RootClient()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := cli.Delete(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("delete %s: %v", prefix, err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact at %d: %v", resp.Header.Revision, err)
	}
	for _, m := range c.Members() {
		if !m.Running() {
			continue
		}
		if _, err := cli.Defragment(ctx, m.Endpoint()); err != nil {
			t.Fatalf("defragment %s: %v", m.Endpoint(), err)
		}
	}
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{}); err != nil {
		t.Fatalf("disarm: %v", err)
	}
}

// RaiseAlarm raises an alarm in the cluster through the maintenance API, as etcd itself does when it
// finds corruption (CORRUPT) or runs out of space (NOSPACE).
func RaiseAlarm(t testing.TB, cli *clientv3.Client, alarm etcdserverpb.AlarmType) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, cli.Endpoints()[0])
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	// clientv3 lists and disarms alarms but has no call to raise one; the gRPC service does.
	req := &etcdserverpb.AlarmRequest{Action: etcdserverpb.AlarmRequest_ACTIVATE, MemberID: st.Header.MemberId, Alarm: alarm}
	if _, err := etcdserverpb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx, req); err != nil {
		t.Fatalf("raise %s: %v", alarm, err)
	}
}
