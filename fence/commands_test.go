package fence

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/vitess"
)

// With discovered shards, the tablets to fence are the primaries the DC's own etcd names in its cells,
// within discovery.keyspaces: not a list kept by hand.
func TestDiscoveredFenceTargets(t *testing.T) {
	e := testenv.StartEtcd(t, "dc1")
	topo := vitess.NewTopo("/vt")
	for _, cell := range []string{"dc1", "dc1b", "dc2"} {
		topo.Cell(cell, "127.0.0.1:1", "/vt/"+cell)
	}
	for shard, primary := range map[string]vitess.TabletAlias{"-40": {Cell: "dc1", UID: 100}, "40-80": {Cell: "dc1b", UID: 110},
		"80-c0": {Cell: "dc2", UID: 120}, "c0-": {}} {
		topo.Shard("commerce", shard, primary)
	}
	topo.Shard("other", "0", vitess.TabletAlias{Cell: "dc1", UID: 130})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := topo.Put(ctx, e.Client()); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse([]byte(testenv.DCsYAML(map[string][]string{"dc1": {e.Endpoint()}, "dc2": {"http://127.0.0.1:1"}}, time.Second,
		map[string]string{"dc1": "cells: [dc1, dc1b]", "dc2": "cells: [dc2]"}, "failover:\n  shards: auto\n  discovery: {keyspaces: [commerce]}\n")))
	if err != nil {
		t.Fatal(err)
	}
	found, _, err := discoveredTargets(ctx, c, e.Client(), "dc1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tab := range found {
		got = append(got, tab.Keyspace+"/"+tab.Shard+" "+tab.Tablet)
	}
	slices.Sort(got)
	if want := []string{"commerce/-40 dc1-0000000100", "commerce/40-80 dc1b-0000000110"}; !slices.Equal(got, want) {
		t.Errorf("fence targets = %q, want %q (dc2's primary, a shard without one, and keyspace other left alone)", got, want)
	}
}
