package failover

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/topoha/topoha/primary"
)

// tabletRecord is a topodata.Tablet with only its type set (8: 1 PRIMARY, 2 REPLICA).
func tabletRecord(typ uint64) string {
	return string(protowire.AppendVarint(protowire.AppendTag(nil, 8, protowire.VarintType), typ))
}

// A promotion counts only when the promoted tablet's own record agrees with the Shard record: one whose
// Tablet write went to the other DC's etcd is run again.
func TestPromotionNeedsTheTabletRecord(t *testing.T) {
	r := newRig(t, "ok", 10*time.Second)
	dc2 := r.clients["dc2"]
	put(t, dc2, "/vt/cells/dc2/CellInfo", cellInfo("127.0.0.1:2379", "/vt/dc2"))
	put(t, dc2, "/vt/dc2/tablets/dc2-0000000101/Tablet", tabletRecord(2)) // still a REPLICA here
	put(t, dc2, "/vt/dc2/tablets/dc2-0000000201/Tablet", tabletRecord(1))
	res, err := r.executor(t).Execute(ctxT(t), decision, primary.Read(ctxT(t), dc2, primary.Key(r.cfg.KeyRoot())))
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
