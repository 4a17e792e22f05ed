package main

// Shard discovery end to end: no shard listed in the config, controllers as processes on 3-member etcd
// clusters, the topo written as Vitess writes it.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/keys"
	"github.com/topoha/topoha/vitess"
)

// discoveredTopo writes, into dc1's etcd, keyspaces commerce (shards -80, 80-) and customer (0), each
// shard with a PRIMARY in dc1, a REPLICA in dc2 and an RDONLY in dc2; and customer/1, which has only an
// RDONLY in dc2.
func discoveredTopo(t *testing.T, d *dcs) {
	t.Helper()
	topo := vitess.NewTopo("/vt")
	for _, cell := range []string{"dc1", "dc2"} {
		topo.Cell(cell, cellAddress(d), "/vt/"+cell)
	}
	uid := uint32(100)
	add := func(keyspace, shard string, drTypes ...vitess.TabletType) {
		primary := vitess.TabletAlias{Cell: "dc1", UID: uid}
		topo.Shard(keyspace, shard, primary)
		tablets := []vitess.Tablet{{Alias: primary, Keyspace: keyspace, Shard: shard, Type: vitess.TypePrimary}}
		for i, typ := range drTypes {
			tablets = append(tablets, vitess.Tablet{Alias: vitess.TabletAlias{Cell: "dc2", UID: uid + 1 + uint32(i)}, Keyspace: keyspace, Shard: shard, Type: typ})
		}
		for _, tab := range tablets {
			if err := topo.Tablet(tab); err != nil {
				t.Fatal(err)
			}
		}
		uid += 10
	}
	topo.Keyspace("commerce", "none")
	topo.Keyspace("customer", "none")
	add("commerce", "-80", vitess.TypeReplica, vitess.TypeRdonly)
	add("commerce", "80-", vitess.TypeRdonly, vitess.TypeReplica)
	add("customer", "0", vitess.TypeReplica, vitess.TypeRdonly)
	add("customer", "1", vitess.TypeRdonly)
	if err := topo.Put(ctxT(t), d.c1); err != nil {
		t.Fatal(err)
	}
}

// cellAddress is where every cell's CellInfo points: dc2's etcd, as mirror.cell_info_rewrite would make
// it, so that the plan's check of each cell's topo finds it answering.
func cellAddress(d *dcs) string { return d.dc2.Addrs()[0] }

// planJSON runs `topoha plan --json` and returns its exit code and plan.
func planJSON(t *testing.T, config string, args ...string) (int, *discovery.Plan) {
	t.Helper()
	code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), append([]string{"plan", "--config", config, "--json"}, args...)...)
	if code == exitBadConfig {
		return code, nil
	}
	var p discovery.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan --json (exit %d): %v\n%s\n%s", code, err, out, errOut)
	}
	return code, &p
}

func planShard(p *discovery.Plan, id string) (discovery.ShardPlan, bool) {
	i := slices.IndexFunc(p.Shards, func(s discovery.ShardPlan) bool { return s.ID() == id })
	if i < 0 {
		return discovery.ShardPlan{}, false
	}
	return p.Shards[i], true
}

// With no shard in the config: `topoha plan` names every shard and its DR candidate, never an RDONLY; the
// leader finds a shard created at run time; a DC loss promotes every discovered shard that has a
// candidate, confirmed from the Shard records, and reports the one that has none.
func TestDiscoveredShardsFailOver(t *testing.T) {
	t.Parallel()
	d := startDCs(t)
	discoveredTopo(t, d)
	logDir := t.TempDir()
	yaml := d.YAMLWith(2*time.Second, map[string]string{"dc1": "cells: [dc1]", "dc2": "cells: [dc2]"}, fmt.Sprintf(`election: {ttl: 1s}
health: {interval: 100ms, timeout: 1s, failure_threshold: 2, success_threshold: 1}
failover:
  mode: auto
  allow_two_site_auto: true
  after: 1s
  retry_max_backoff: 1s
  max_parallel: 2
  shards: auto
  discovery: {interval: 500ms}
  promote_command: %s
`, d.FakePromote(logDir+"/{{.Keyspace}}.{{.Shard}}.log")))
	config := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	// Before anything is mirrored, dc2's etcd has no topo: a failover now would promote nothing.
	if code, p := planJSON(t, config); code != exitNotReady || len(p.Shards) != 0 || p.To != "dc2" || !strings.Contains(strings.Join(p.Problems, "\n"), "no shard to fail over") {
		t.Errorf("plan before the mirror: exit %d, %+v", code, p)
	}
	procs := map[string]*testenv.Process{"ctl-a": startController(t, config, "dc1", "ctl-a"), "ctl-b": startController(t, config, "dc2", "ctl-b")}
	leader := d.leaderID(t, "")
	d.waitEqual(t)

	code, p := planJSON(t, config, "--to", "dc2")
	if code != exitNotReady || len(p.Shards) != 4 || !p.Discovered {
		t.Fatalf("plan: exit %d (want %d: customer/1 cannot fail over), %d shards: %+v", code, exitNotReady, len(p.Shards), p)
	}
	for id, want := range map[string]string{"commerce/-80": "dc2-0000000101", "commerce/80-": "dc2-0000000112", "customer/0": "dc2-0000000121"} {
		s, _ := planShard(p, id)
		if !s.Ready() || s.Tablet != want || !slices.Equal(s.Candidates, []string{want}) || len(s.IgnoreTablets) != 1 ||
			s.IgnoreTablets[0] != s.Primary || !slices.Contains(s.Command, want) {
			t.Errorf("%s: %+v; want %s promoted, the dc1 primary ignored", id, s, want)
		}
	}
	if s, _ := planShard(p, "customer/1"); s.Ready() || !strings.Contains(strings.Join(s.Problems, ";"), "dc2-0000000131 is RDONLY") {
		t.Errorf("customer/1 (only an RDONLY in dc2): %+v", s)
	}

	// A keyspace created while topoha runs: the leader's plan has it within discovery.interval.
	added := vitess.NewTopo("/vt")
	added.Cell("dc2", cellAddress(d), "/vt/dc2")
	added.Keyspace("orders", "none")
	added.Shard("orders", "0", vitess.TabletAlias{Cell: "dc1", UID: 900})
	if err := added.Tablet(vitess.Tablet{Alias: vitess.TabletAlias{Cell: "dc2", UID: 901}, Keyspace: "orders", Shard: "0", Type: vitess.TypeReplica}); err != nil {
		t.Fatal(err)
	}
	if err := added.Put(ctxT(t), d.c1); err != nil {
		t.Fatal(err)
	}
	addr := apiAddr(t, procs[leader])
	testenv.Eventually(t, waitLong, func() (bool, string) {
		var lp discovery.Plan
		body := getBody(t, addr, "/plan")
		if err := json.Unmarshal([]byte(body), &lp); err != nil {
			return false, body
		}
		s, ok := planShard(&lp, "orders/0")
		return ok && s.Tablet == "dc2-0000000901", fmt.Sprintf("the leader's plan has no orders/0 yet: %d shards", len(lp.Shards))
	})
	if st := status(t, config); st.Plan == nil || st.Plan.Shards != 5 || st.Plan.Ready != 4 || !strings.Contains(st.Plan.Line(), "customer/1: no REPLICA in dc2's cells") {
		t.Errorf("status plan: %+v", st.Plan)
	}

	// dc1 is lost.
	d.dc1.Stop()
	procs["ctl-a"].Kill()
	var res *failover.Result
	testenv.Eventually(t, waitLong, func() (bool, string) {
		got := failover.ReadResult(ctxT(t), d.c2, keys.For("t").LastFailover())
		res = got.Record
		return res != nil, fmt.Sprintf("no failover result yet: %+v", got)
	})
	if res.Outcome != failover.ResultPartial || !slices.Equal(res.FailedShards(), []string{"customer/1"}) {
		t.Errorf("result %s, failed %q; want partial with customer/1 only", res.Outcome, res.FailedShards())
	}
	for _, s := range res.Shards {
		if s.Keyspace+"/"+s.Shard == "customer/1" {
			if s.Attempts != 0 || !strings.Contains(s.Error, "no tablet to promote") {
				t.Errorf("customer/1: %+v", s)
			}
			continue
		}
		resp, err := d.c2.Get(ctxT(t), vitess.ShardKey("/vt", s.Keyspace, s.Shard))
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("Shard record of %s/%s: %v", s.Keyspace, s.Shard, err)
		}
		got, _, _ := vitess.ShardPrimary(resp.Kvs[0].Value)
		if !s.Confirmed || got.String() != s.Tablet || got.Cell != "dc2" {
			t.Errorf("%s/%s: confirmed %v, tablet %s, Shard record names %s", s.Keyspace, s.Shard, s.Confirmed, s.Tablet, got)
		}
	}
	stopWithSIGTERM(t, procs["ctl-b"])
}
