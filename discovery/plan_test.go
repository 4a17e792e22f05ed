package discovery

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/vitess"
)

// A single etcd server: discovery only reads, and what it reads does not depend on the cluster's size.
// The failover and controller tests plan on three-member clusters.

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func alias(s string) vitess.TabletAlias {
	a, err := vitess.ParseTabletAlias(s)
	if err != nil {
		panic(err)
	}
	return a
}

// cluster is a small Vitess topo: dc1's cell dc1, dc2's cells dc2 and dc2b, and a cell of no DC, other.
type cluster struct {
	topo *vitess.Topo
	t    *testing.T
}

func newCluster(t *testing.T, addr string) *cluster {
	c := &cluster{topo: vitess.NewTopo("/vt"), t: t}
	for _, cell := range []string{"dc1", "dc2", "dc2b"} {
		c.topo.Cell(cell, addr, "/vt/"+cell)
	}
	return c
}

func (c *cluster) tablet(a, keyspace, shard string, typ vitess.TabletType) {
	if err := c.topo.Tablet(vitess.Tablet{Alias: alias(a), Hostname: "host", Keyspace: keyspace, Shard: shard, Type: typ}); err != nil {
		c.t.Fatal(err)
	}
}

// shard adds keyspace/shard with a PRIMARY in dc1 and the given tablets of dc2's side.
func (c *cluster) shard(keyspace, shard string, dr map[string]vitess.TabletType) {
	uid := fmt.Sprintf("%d", 100+len(c.topo.Records()))
	c.topo.Shard(keyspace, shard, alias("dc1-"+uid))
	c.tablet("dc1-"+uid, keyspace, shard, vitess.TypePrimary)
	for a, typ := range dr {
		c.tablet(a, keyspace, shard, typ)
	}
}

func configFor(t *testing.T, endpoint, extra string) *config.Config {
	cfg, err := config.Parse([]byte(testenv.DCsYAML(map[string][]string{"dc1": {"http://127.0.0.1:1"}, "dc2": {endpoint}}, time.Second,
		map[string]string{"dc1": `cells: [dc1], topo_address: "etcd-dc1:2379"`, "dc2": "cells: [dc2, dc2b]"}, "failover:\n  shards: auto\n"+extra)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func compute(t *testing.T, cfg *config.Config, cli *clientv3.Client) *Plan {
	t.Helper()
	p, err := Compute(ctxT(t), Input{Config: cfg, Client: cli, From: "dc1", To: "dc2", Epoch: 2, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func shardOf(t *testing.T, p *Plan, id string) ShardPlan {
	t.Helper()
	i := slices.IndexFunc(p.Shards, func(s ShardPlan) bool { return s.ID() == id })
	if i < 0 {
		t.Fatalf("the plan has no shard %s: %+v", id, p.Shards)
	}
	return p.Shards[i]
}

func wantProblem(t *testing.T, s ShardPlan, want string) {
	t.Helper()
	if s.Ready() || !slices.ContainsFunc(s.Problems, func(p string) bool { return strings.Contains(p, want) }) {
		t.Errorf("%s: problems %q, want one containing %q", s.ID(), s.Problems, want)
	}
}

func contains(list []string, want string) bool {
	return slices.ContainsFunc(list, func(s string) bool { return strings.Contains(s, want) })
}

// TestDiscoveredPlan applies the candidate rule to one shard per case, all in one topo.
func TestDiscoveredPlan(t *testing.T) {
	e := testenv.StartEtcd(t, "dc2")
	cli := e.Client()
	c := newCluster(t, strings.TrimPrefix(e.Endpoint(), "http://"))
	c.topo.Keyspace("commerce", "none")
	c.topo.Keyspace("semi", "semi_sync")
	c.topo.Keyspace("cross", "cross_cell")
	// A REPLICA in each of dc2's cells, an RDONLY and a replica of dc1: the first cell's REPLICA wins.
	c.shard("commerce", "0", map[string]vitess.TabletType{"dc2-201": vitess.TypeReplica, "dc2b-202": vitess.TypeReplica, "dc2-203": vitess.TypeRdonly})
	c.tablet("dc1-299", "commerce", "0", vitess.TypeReplica)
	// Only tablets Vitess does not promote on dc2's side.
	c.shard("commerce", "-80", map[string]vitess.TabletType{"dc2-211": vitess.TypeRdonly, "dc2-212": vitess.TypeDrained, "dc2b-213": vitess.TypeBackup})
	// The lowest uid is never_promote.
	c.shard("commerce", "80-", map[string]vitess.TabletType{"dc2-221": vitess.TypeReplica, "dc2-222": vitess.TypeReplica})
	// semi_sync: one REPLICA alone cannot ack; two can.
	c.shard("semi", "-80", map[string]vitess.TabletType{"dc2-231": vitess.TypeReplica, "dc2-232": vitess.TypeRdonly})
	c.shard("semi", "80-", map[string]vitess.TabletType{"dc2-241": vitess.TypeReplica, "dc2-242": vitess.TypeReplica})
	// cross_cell: two REPLICAs in one cell cannot ack each other; one in each of dc2's cells can.
	c.shard("cross", "-80", map[string]vitess.TabletType{"dc2-251": vitess.TypeReplica, "dc2-252": vitess.TypeReplica})
	c.shard("cross", "80-", map[string]vitess.TabletType{"dc2-261": vitess.TypeReplica, "dc2b-262": vitess.TypeReplica})
	// A tablet of another cell, which no DC claims.
	c.topo.Cell("other", "x:1", "/vt/other")
	c.tablet("other-271", "commerce", "0", vitess.TypeReplica)
	if err := c.topo.Put(ctxT(t), cli); err != nil {
		t.Fatal(err)
	}
	// A tablet in dc2's replication graph of commerce/80- with no Tablet record.
	g := vitess.ShardReplicationKey("/vt/dc2", "commerce", "80-")
	if _, err := cli.Put(ctxT(t), g, string(vitess.EncodeShardReplication([]vitess.TabletAlias{alias("dc2-221"), alias("dc2-222"), alias("dc2-229")}))); err != nil {
		t.Fatal(err)
	}

	// never_promote in the short form Vitess also accepts: the same tablet as dc2-0000000221.
	p := compute(t, configFor(t, e.Endpoint(), "  never_promote: [dc2-221]\n"), cli)
	if !p.Discovered || p.From != "dc1" || p.To != "dc2" || p.ReadFrom != "dc2" || len(p.Shards) != 7 || len(p.Problems) != 0 {
		t.Fatalf("plan = %+v", p)
	}

	s := shardOf(t, p, "commerce/0")
	if !s.Ready() || s.Tablet != "dc2-0000000201" || !slices.Equal(s.Candidates, []string{"dc2-0000000201", "dc2b-0000000202"}) ||
		!slices.Equal(s.IgnoreTablets, []string{s.Primary, "dc1-0000000299"}) {
		t.Errorf("commerce/0 = %+v", s)
	}
	want := []string{"vtctldclient", "--server", "", "--action_timeout", "1m0s", "EmergencyReparentShard", "--new-primary", "dc2-0000000201",
		"--ignore-replicas", s.Primary + ",dc1-0000000299", "commerce/0"}
	if !slices.Equal(s.Command, want) {
		t.Errorf("command = %q, want %q", s.Command, want)
	}
	if !contains(p.Warnings, "cell other is in no DC's cells") {
		t.Errorf("warnings %q say nothing of cell other", p.Warnings)
	}

	wantProblem(t, shardOf(t, p, "commerce/-80"), "no REPLICA in dc2's cells (dc2, dc2b): dc2-0000000211 is RDONLY, dc2-0000000212 is DRAINED, dc2b-0000000213 is BACKUP")
	if s := shardOf(t, p, "commerce/80-"); !s.Ready() || s.Tablet != "dc2-0000000222" || !slices.Equal(s.Candidates, []string{"dc2-0000000222"}) {
		t.Errorf("commerce/80- (never_promote dc2-221) = %+v", s)
	}
	if !contains(p.Warnings, "commerce/80-: dc2-0000000229 is in cell dc2's replication graph but has no Tablet record") {
		t.Errorf("warnings %q do not name the tablet without a record", p.Warnings)
	}
	wantProblem(t, shardOf(t, p, "semi/-80"), "durability semi_sync, but dc2-0000000231 would have no tablet on dc2's side to acknowledge")
	if s := shardOf(t, p, "semi/80-"); !s.Ready() {
		t.Errorf("semi/80- with two REPLICAs = %+v", s)
	}
	wantProblem(t, shardOf(t, p, "cross/-80"), "durability cross_cell")
	if s := shardOf(t, p, "cross/80-"); !s.Ready() || s.Tablet != "dc2-0000000261" {
		t.Errorf("cross/80- with a REPLICA in each cell = %+v", s)
	}
	if ready, notReady := p.Counts(); ready != 4 || notReady != 3 {
		t.Errorf("counts = %d ready, %d not", ready, notReady)
	}

	// Scope: a keyspace, a keyspace/shard, and one the topo does not have.
	p = compute(t, configFor(t, e.Endpoint(), "  discovery: {keyspaces: [semi, commerce/0, nosuch]}\n"), cli)
	var ids []string
	for _, s := range p.Shards {
		ids = append(ids, s.ID())
	}
	if !slices.Equal(ids, []string{"commerce/0", "semi/-80", "semi/80-"}) || !contains(p.Warnings, "names nosuch, which the topo in dc2's etcd does not have") {
		t.Errorf("scoped plan: shards %q, warnings %q", ids, p.Warnings)
	}
}

// TestPlanSurvivesBadRecords: an undecodable record is named and skipped, never silently dropped, and
// never stops the other shards' plan.
func TestPlanSurvivesBadRecords(t *testing.T) {
	e := testenv.StartEtcd(t, "dc2")
	cli := e.Client()
	c := newCluster(t, strings.TrimPrefix(e.Endpoint(), "http://"))
	c.topo.Keyspace("commerce", "none")
	c.shard("commerce", "0", map[string]vitess.TabletType{"dc2-201": vitess.TypeReplica})
	c.shard("commerce", "-80", map[string]vitess.TabletType{"dc2-211": vitess.TypeReplica})
	c.shard("commerce", "80-", map[string]vitess.TabletType{"dc2-221": vitess.TypeReplica, "dc2-222": vitess.TypeReplica})
	if err := c.topo.Put(ctxT(t), cli); err != nil {
		t.Fatal(err)
	}
	garbage := "\x0a\x20ab"
	for _, k := range []string{
		vitess.ShardKey("/vt", "commerce", "-80"),
		vitess.TabletKey("/vt/dc2", alias("dc2-222")),
		vitess.ShardReplicationKey("/vt/dc2", "commerce", "0"),
	} {
		if _, err := cli.Put(ctxT(t), k, garbage); err != nil {
			t.Fatal(err)
		}
	}
	p := compute(t, configFor(t, e.Endpoint(), ""), cli)
	wantProblem(t, shardOf(t, p, "commerce/-80"), "its Shard record cannot be decoded")
	wantProblem(t, shardOf(t, p, "commerce/0"), "ShardReplication: decode ShardReplication record")
	if s := shardOf(t, p, "commerce/80-"); !s.Ready() || s.Tablet != "dc2-0000000221" {
		t.Errorf("commerce/80- = %+v", s)
	}
	if !contains(p.Warnings, "dc2-0000000222/Tablet: decode Tablet record") {
		t.Errorf("warnings %q do not name the undecodable tablet", p.Warnings)
	}

	// A keyspace without its record: ERS reads the durability policy first, and fails.
	if _, err := cli.Delete(ctxT(t), vitess.KeyspaceKey("/vt", "commerce")); err != nil {
		t.Fatal(err)
	}
	p = compute(t, configFor(t, e.Endpoint(), ""), cli)
	wantProblem(t, shardOf(t, p, "commerce/80-"), "keyspace commerce: /vt/keyspaces/commerce/Keyspace does not exist: ERS cannot read its durability policy")

	if _, err := cli.Put(ctxT(t), vitess.CellInfoKey("/vt", "dc2b"), garbage); err != nil {
		t.Fatal(err)
	}
	p = compute(t, configFor(t, e.Endpoint(), ""), cli)
	if !contains(p.Problems, "cell dc2b: /vt/cells/dc2b/CellInfo: decode CellInfo record") {
		t.Errorf("problems %q do not name the undecodable CellInfo", p.Problems)
	}
	if ready, _ := p.Counts(); ready != 0 {
		t.Errorf("%d shards ready while a cell's topo cannot be found", ready)
	}
}

// A plan with no shard is never ready: a failover would promote nothing.
func TestEmptyPlanIsNotReady(t *testing.T) {
	e := testenv.StartEtcd(t, "dc2")
	p := compute(t, configFor(t, e.Endpoint(), ""), e.Client())
	if p.Ready() || len(p.Shards) != 0 || !contains(p.Problems, "no shard to fail over: none in dc2's etcd below /vt/keyspaces/") {
		t.Errorf("empty topo: ready %v, problems %q", p.Ready(), p.Problems)
	}
	if line := p.Summarize(3).Line(); !strings.HasPrefix(line, "0 shards: 0 ready for dc2, 0 not (") || !strings.Contains(line, "no shard to fail over") {
		t.Errorf("summary line %q", line)
	}
}

// TestListedPlan: with failover.shards listed, the tablets are the config's, checked against the topo:
// what would make EmergencyReparentShard fail on the promoted side.
func TestListedPlan(t *testing.T) {
	e := testenv.StartEtcd(t, "dc2")
	cli := e.Client()
	live := strings.TrimPrefix(e.Endpoint(), "http://")
	dead := testenv.ClosedAddr(t)
	cfg, err := config.Parse([]byte(testenv.DCsYAML(map[string][]string{"dc1": {"http://127.0.0.1:1"}, "dc2": {e.Endpoint()}}, time.Second,
		map[string]string{"dc1": `topo_address: "etcd-dc1:2379"`, "dc2": fmt.Sprintf("topo_address: %q", live)}, `failover:
  shards:
    - {keyspace: commerce, shard: "0", tablets: {dc1: [dc1-0000000100], dc2: [dc2-0000000101]}}`)))
	if err != nil {
		t.Fatal(err)
	}
	healthy := func(durability string, dc2Tablets ...string) *vitess.Topo {
		topo := vitess.NewTopo("/vt")
		topo.Cell("dc1", live, "/vt/dc1")
		topo.Cell("dc2", live, "/vt/dc2")
		topo.Keyspace("commerce", durability)
		topo.Shard("commerce", "0", alias("dc1-100"))
		for _, a := range append([]string{"dc1-100"}, dc2Tablets...) {
			typ := vitess.TypeReplica
			if a == "dc1-100" {
				typ = vitess.TypePrimary
			}
			if strings.HasSuffix(a, ":rdonly") {
				a, typ = strings.TrimSuffix(a, ":rdonly"), vitess.TypeRdonly
			}
			if err := topo.Tablet(vitess.Tablet{Alias: alias(a), Keyspace: "commerce", Shard: "0", Type: typ}); err != nil {
				t.Fatal(err)
			}
		}
		return topo
	}
	tests := []struct {
		name    string
		topo    *vitess.Topo
		changes map[string]string
		want    []string // a problem containing each, and no others
	}{
		{"healthy", healthy("none", "dc2-101"), nil, nil},
		{"semi_sync with one tablet on the promoted side", healthy("semi_sync", "dc2-101"), nil,
			[]string{"durability semi_sync, but dc2-0000000101 would have no tablet on dc2's side"}},
		{"semi_sync with a second REPLICA there", healthy("semi_sync", "dc2-101", "dc2-102"), nil, nil},
		{"semi_sync with an RDONLY there", healthy("semi_sync", "dc2-101", "dc2-102:rdonly"), nil, []string{"durability semi_sync"}},
		{"cross_cell in a single cell", healthy("cross_cell", "dc2-101", "dc2-102"), nil, []string{"in a cell other than dc2"}},
		{"the listed candidate is RDONLY", healthy("none", "dc2-101:rdonly"), nil, []string{"dc2-0000000101, the first listed, is RDONLY"}},
		{"ignored tablet not in the graph, and one of the lost side not ignored", healthy("none", "dc2-101"), map[string]string{
			"/vt/dc1/keyspaces/commerce/shards/0/ShardReplication": string(vitess.EncodeShardReplication([]vitess.TabletAlias{alias("dc1-102")}))},
			[]string{"names dc1-0000000100, which is not in the shard's replication graph", "dc1-0000000102 of dc1 is not in --ignore-replicas"}},
		{"the lost side's CellInfo not rewritten", healthy("none", "dc2-101"), map[string]string{
			"/vt/cells/dc1/CellInfo": string(vitess.EncodeCellInfo(vitess.CellInfo{ServerAddress: "etcd-dc1:2379", Root: "/vt/dc1"}))},
			[]string{`cell dc1's CellInfo in dc2's etcd points at "etcd-dc1:2379"`}},
		{"a cell's topo does not answer", healthy("none", "dc2-101"), map[string]string{
			"/vt/cells/dc1/CellInfo": string(vitess.EncodeCellInfo(vitess.CellInfo{ServerAddress: dead, Root: "/vt/dc1"}))},
			[]string{"cell dc1's CellInfo points at \"" + dead + "\", which does not answer"}},
		{"no replication graph", healthy("none", "dc2-101"), map[string]string{"/vt/dc2/keyspaces/commerce/shards/0/ShardReplication": ""},
			[]string{"no replication graph for cell dc2"}},
		{"no Shard record", healthy("none", "dc2-101"), map[string]string{"/vt/keyspaces/commerce/shards/0/Shard": ""},
			[]string{"no Shard record in dc2's etcd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := cli.Delete(ctxT(t), "/vt/", clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			if err := tt.topo.Put(ctxT(t), cli); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.changes {
				var err error
				if v == "" {
					_, err = cli.Delete(ctxT(t), k)
				} else {
					_, err = cli.Put(ctxT(t), k, v)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			p, err := Compute(ctxT(t), Input{Config: cfg, Client: cli, From: "dc1", To: "dc2", Timeout: 500 * time.Millisecond, CheckCells: true})
			if err != nil {
				t.Fatal(err)
			}
			got := append(slices.Clone(p.Problems), p.Shards[0].Problems...)
			if len(got) != len(tt.want) {
				t.Fatalf("problems:\n%s\nwant %d containing %q", strings.Join(got, "\n"), len(tt.want), tt.want)
			}
			for _, w := range tt.want {
				if !contains(got, w) {
					t.Errorf("no problem contains %q:\n%s", w, strings.Join(got, "\n"))
				}
			}
			if ready, _ := p.Counts(); (ready == 1) != (len(tt.want) == 0) {
				t.Errorf("ready = %d with problems %q", ready, got)
			}
		})
	}
}

// A cell whose tablets cannot be read fails the plan, instead of planning every shard there with no
// tablet: a failover keeps the plan its epoch bump recorded, so a partial one would be kept to the end.
// The read fails for real: the client takes responses of at most 16 KiB, and dc2's Tablet records are
// more than that, while the keyspaces and the CellInfo records are not.
func TestUnreadableCellFailsThePlan(t *testing.T) {
	e := testenv.StartEtcd(t, "dc2")
	c := newCluster(t, e.Endpoint())
	c.shard("commerce", "0", map[string]vitess.TabletType{"dc2-0000000101": vitess.TypeReplica})
	for i := range 200 {
		c.tablet(fmt.Sprintf("dc2-%010d", 1000+i), "commerce", "0", vitess.TypeRdonly)
	}
	c.topo.Keyspace("commerce", "none")
	if err := c.topo.Put(ctxT(t), e.Client()); err != nil {
		t.Fatal(err)
	}
	cc := e.ClientConfig()
	cc.MaxCallRecvMsgSize = 16 << 10
	small, err := clientv3.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	_, err = Compute(ctxT(t), Input{Config: configFor(t, e.Endpoint(), ""), Client: small, From: "dc1", To: "dc2", Epoch: 2, Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "cell dc2: read its Tablet records below /vt/dc2/tablets/") {
		t.Fatalf("plan with dc2's tablets unreadable: err %v, want the failed read of cell dc2", err)
	}
	if p := compute(t, configFor(t, e.Endpoint(), ""), e.Client()); shardOf(t, p, "commerce/0").Tablet != "dc2-0000000101" {
		t.Errorf("the same topo read whole: %+v", shardOf(t, p, "commerce/0"))
	}
}
