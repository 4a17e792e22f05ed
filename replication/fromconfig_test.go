package replication

import (
	"context"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/vitess"
)

// The mirror as the config describes it (ConfigFor): the primary's cells are copied, the destination's own cell is
// left alone, and every CellInfo in the destination names the destination's etcd. Then the other way.
func TestConfigForCellRootsAndCellInfo(t *testing.T) {
	d := testenv.StartDCs(t)
	cfg := d.Config
	c1, c2 := d.Client["dc1"], d.Client["dc2"]
	cfg.Mirror.CellInfoRewrite = true
	dcs := cfg.DCs
	for dc, addr := range map[string]string{"dc1": "etcd-dc1:2379", "dc2": "etcd-dc2:2379"} {
		d := dcs[dc]
		d.TopoAddress, d.CellRoots = addr, []string{"/vt/" + dc}
		dcs[dc] = d
	}
	clients := map[string]*clientv3.Client{"dc1": c1, "dc2": c2}
	// CellInfo records as vtctldclient AddCellInfo writes them in the primary's global topo.
	cellInfo := func(addr, root string) string {
		b, err := vitess.RewriteCellInfo(nil, addr, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		// {server_address, root} as Vitess encodes it: root is field 2, a string.
		return string(append(b, append([]byte{0x12, byte(len(root))}, root...)...))
	}
	for cell := range dcs {
		mustPut(t, c1, vitess.CellInfoKey("/vt", cell), cellInfo("etcd-"+cell+":2379", "/vt/"+cell))
	}
	mustPut(t, c1, "/vt/dc1/tablets/dc1-0000000100/Tablet", "dc1 tablet")
	mustPut(t, c2, "/vt/dc2/tablets/dc2-0000000101/Tablet", "dc2 tablet, written by dc2's tablet")

	mirror := func(from, to string) {
		t.Helper()
		m, err := New(ConfigFor(cfg, clients, from, to, nil))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		defer func() { cancel(); <-done }()
		testenv.Eventually(t, time.Minute, func() (bool, string) {
			rep, err := Verify(ctx, ConfigFor(cfg, clients, from, to, nil), 10)
			return err == nil && rep.Equal, fmt.Sprintf("%+v %v", rep, err)
		})
	}
	mirror("dc1", "dc2")
	got := testenv.Snapshot(t, c2, "/vt/")
	if got["dc2/tablets/dc2-0000000101/Tablet"] != "dc2 tablet, written by dc2's tablet" || got["dc1/tablets/dc1-0000000100/Tablet"] != "dc1 tablet" {
		t.Errorf("dc2's etcd after the mirror: %v", got)
	}
	for cell := range dcs {
		ci, err := vitess.DecodeCellInfo([]byte(got["cells/"+cell+"/CellInfo"]))
		if err != nil || ci != (vitess.CellInfo{ServerAddress: "etcd-dc2:2379", Root: "/vt/" + cell}) {
			t.Errorf("cell %s's CellInfo in dc2's etcd: %+v %v (% s)", cell, ci, err, hex.EncodeToString([]byte(got["cells/"+cell+"/CellInfo"])))
		}
	}

	// After a failover the mirror runs dc2 -> dc1: dc1's own cell stays as dc1's tablets left it.
	mustPut(t, c1, "/vt/dc1/tablets/dc1-0000000100/Tablet", "dc1 tablet, back as a replica")
	mirror("dc2", "dc1")
	got = testenv.Snapshot(t, c1, "/vt/")
	if got["dc1/tablets/dc1-0000000100/Tablet"] != "dc1 tablet, back as a replica" || got["dc2/tablets/dc2-0000000101/Tablet"] != "dc2 tablet, written by dc2's tablet" {
		t.Errorf("dc1's etcd after the mirror back: %v", got)
	}
	if ci, _ := vitess.DecodeCellInfo([]byte(got["cells/dc2/CellInfo"])); ci.ServerAddress != "etcd-dc1:2379" {
		t.Errorf("cell dc2's CellInfo in dc1's etcd names %q, want dc1's etcd", ci.ServerAddress)
	}
}
