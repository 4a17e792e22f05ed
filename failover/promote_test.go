package failover

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/vitess"
)

// tabletRecord is a topodata.Tablet of commerce with only its alias and type set.
func tabletRecord(alias string, typ vitess.TabletType) string {
	a, _ := vitess.ParseTabletAlias(alias)
	return string(vitess.EncodeTablet(vitess.Tablet{Alias: a, Keyspace: "commerce", Type: typ}, 0))
}

// A promotion counts only when the promoted tablet's own record agrees with the Shard record: one whose
// Tablet write went to the other DC's etcd is run again.
func TestPromotionNeedsTheTabletRecord(t *testing.T) {
	// -80's tablet writes its new type elsewhere (a topo VIP that had not moved): its record here stays REPLICA.
	r := newRig(t, `{{if eq .Shard "-80"}}elsewhere{{else}}ok{{end}}`, 10*time.Second)
	dc2 := r.clients["dc2"]
	put(t, dc2, "/vt/cells/dc2/CellInfo", string(vitess.EncodeCellInfo(vitess.CellInfo{ServerAddress: "127.0.0.1:2379", Root: "/vt/dc2"})))
	put(t, dc2, "/vt/dc2/tablets/dc2-0000000101/Tablet", tabletRecord("dc2-0000000101", vitess.TypeReplica)) // still a REPLICA here
	put(t, dc2, "/vt/dc2/tablets/dc2-0000000201/Tablet", tabletRecord("dc2-0000000201", vitess.TypeReplica))
	res, err := r.failover(t, decision, primary.Read(ctxT(t), dc2, r.cfg.Keys().Primary()))
	if err == nil || res.Outcome != ResultPartial {
		t.Fatalf("Execute: %v, outcome %s", err, res.Outcome)
	}
	for _, s := range res.Shards {
		switch s.Shard {
		case "-80":
			if s.Confirmed || s.Attempts != 3 || !strings.Contains(s.Error, "/vt/dc2/tablets/dc2-0000000101/Tablet does not say PRIMARY") {
				t.Errorf("-80, whose tablet record says REPLICA: %+v", s)
			}
		case "80-":
			if !s.Confirmed || s.Attempts != 1 {
				t.Errorf("80-, whose tablet record says PRIMARY: %+v", s)
			}
		}
	}
}

// With vitess.topo_vip, promotions wait until the VIP leads to the new primary's etcd; a VIP that keeps
// leading elsewhere delays them by promote_timeout at most and is a warning of the result.
func TestPromotionsWaitForTheTopoVIP(t *testing.T) {
	for name, toNewPrimary := range map[string]bool{"VIP on the new primary": true, "VIP stuck on the old primary": false} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, "ok", 2*time.Second)
			upstream := r.cfg.DCs["dc1"].Etcd.Endpoints[0]
			if toNewPrimary {
				upstream = r.cfg.DCs["dc2"].Etcd.Endpoints[0]
			}
			vip := testenv.StartLink(t, "topo-vip", strings.TrimPrefix(upstream, "http://"))
			cfg := *r.cfg
			cfg.Vitess.TopoVIP = "http://" + vip.Addr()
			r.cfg = &cfg
			start := time.Now()
			res, err := r.failover(t, decision, primary.Read(ctxT(t), r.clients["dc2"], r.cfg.Keys().Primary()))
			if err != nil || res.Outcome != ResultSuccess {
				t.Fatalf("Execute: %v, outcome %s", err, res.Outcome)
			}
			warned := strings.Contains(strings.Join(res.Warnings, "\n"), "topo VIP may not lead to the new primary")
			if warned == toNewPrimary {
				t.Errorf("warnings %q", res.Warnings)
			}
			if took := time.Since(start); !toNewPrimary && took < 2*time.Second {
				t.Errorf("took %s: the promotions did not wait for the VIP (promote_timeout 2s)", took)
			}
		})
	}
}

// The last look before a command reads etcd itself: a view of the Shard records that has not caught up
// (here: not read at all) says "unknown", while a primary made a moment ago by a person is seen at once,
// so that it is confirmed instead of reparented again.
func TestLastLookBeforeACommandReadsEtcd(t *testing.T) {
	e := testenv.StartEtcd(t, "dc2")
	cli := e.Client()
	topo := vitess.NewTopo("/vt")
	topo.Shard("commerce", "0", vitess.TabletAlias{Cell: "dc2", UID: 105}) // promoted by hand, not the candidate
	if err := topo.Put(ctxT(t), cli); err != nil {
		t.Fatal(err)
	}
	p := &Promoter{Topo: cli, GlobalRoot: "/vt", Cells: []string{"dc2"}, view: newShardView(cli, "/vt", time.Second, time.Second, nil)}
	if err := p.HasPrimary(ctxT(t), "commerce", "0", []string{"dc2-0000000101"}); !errors.Is(err, errUnread) {
		t.Fatalf("from a view not read yet: %v, want unknown", err)
	}
	if err := p.HasPrimaryNow(ctxT(t), "commerce", "0", []string{"dc2-0000000101"}); err != nil {
		t.Errorf("from etcd: %v, want dc2-0000000105, a tablet of dc2's cells, accepted as the primary", err)
	}
}
