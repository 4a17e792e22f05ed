package failover

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/vitess"
)

// Encoders of the records Preflight reads, field by field as topodata.proto numbers them.
func str(b []byte, num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

func msg(b []byte, num protowire.Number, m []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), m)
}

func cellInfo(address, root string) string { return string(str(str(nil, 1, address), 2, root)) }

func keyspace(durability string) string { return string(str(nil, 8, durability)) }

func shardReplication(aliases ...string) string {
	var b []byte
	for _, a := range aliases {
		alias, _ := vitess.ParseTabletAlias(a)
		enc := protowire.AppendVarint(protowire.AppendTag(str(nil, 1, alias.Cell), 2, protowire.VarintType), uint64(alias.UID))
		b = msg(b, 1, msg(nil, 1, enc))
	}
	return string(b)
}

// Preflight finds what would make ERS fail on the promoted side, from the records in that side's etcd.
func TestPreflight(t *testing.T) {
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
	healthy := map[string]string{
		"/vt/cells/dc1/CellInfo":                               cellInfo(live, "/vt/dc1"),
		"/vt/cells/dc2/CellInfo":                               cellInfo(live, "/vt/dc2"),
		"/vt/keyspaces/commerce/Keyspace":                      keyspace("none"),
		"/vt/dc1/keyspaces/commerce/shards/0/ShardReplication": shardReplication("dc1-0000000100"),
		"/vt/dc2/keyspaces/commerce/shards/0/ShardReplication": shardReplication("dc2-0000000101"),
	}
	tests := []struct {
		name    string
		changes map[string]string
		want    []string // one warning containing each, and no others
	}{
		{"healthy", nil, nil},
		{"semi_sync with one tablet on the promoted side", map[string]string{"/vt/keyspaces/commerce/Keyspace": keyspace("semi_sync")},
			[]string{"durability semi_sync, but dc2-0000000101 is the shard's only tablet"}},
		{"semi_sync with a second tablet there", map[string]string{"/vt/keyspaces/commerce/Keyspace": keyspace("semi_sync"),
			"/vt/dc2/keyspaces/commerce/shards/0/ShardReplication": shardReplication("dc2-0000000101", "dc2-0000000102")}, nil},
		{"cross_cell in a single cell", map[string]string{"/vt/keyspaces/commerce/Keyspace": keyspace("cross_cell"),
			"/vt/dc2/keyspaces/commerce/shards/0/ShardReplication": shardReplication("dc2-0000000101", "dc2-0000000102")},
			[]string{"no tablet of the shard in another cell than dc2"}},
		{"unknown policy", map[string]string{"/vt/keyspaces/commerce/Keyspace": keyspace("quorum")}, []string{`policy "quorum"`}},
		{"ignored tablet not in the graph, and one of the lost side not ignored", map[string]string{
			"/vt/dc1/keyspaces/commerce/shards/0/ShardReplication": shardReplication("dc1-0000000102")},
			[]string{"names dc1-0000000100, which is not in the shard's replication graph", "dc1-0000000102 of dc1 is not in --ignore-replicas"}},
		{"the lost side's CellInfo not rewritten", map[string]string{"/vt/cells/dc1/CellInfo": cellInfo("etcd-dc1:2379", "/vt/dc1")},
			[]string{`cell dc1's CellInfo in dc2's etcd points at "etcd-dc1:2379"`}},
		{"a cell's topo does not answer", map[string]string{"/vt/cells/dc1/CellInfo": cellInfo(dead, "/vt/dc1")},
			[]string{"cell dc1's CellInfo points at \"" + dead + "\", which does not answer"}},
		{"garbage records", map[string]string{"/vt/keyspaces/commerce/Keyspace": "\xff\xff",
			"/vt/dc2/keyspaces/commerce/shards/0/ShardReplication": "\x0a\x05ab"},
			[]string{"Keyspace: decode Keyspace record", "ShardReplication: decode ShardReplication record"}},
		{"no replication graph", map[string]string{"/vt/dc2/keyspaces/commerce/shards/0/ShardReplication": ""},
			[]string{"no replication graph for cell dc2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := cli.Delete(ctxT(t), "/vt/", clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			for k, v := range healthy {
				if nv, ok := tt.changes[k]; ok {
					v = nv
				}
				if v != "" {
					put(t, cli, k, v)
				}
			}
			got := Preflight(ctxT(t), cfg, cli, "dc1", "dc2", 500*time.Millisecond)
			if len(got) != len(tt.want) {
				t.Fatalf("warnings:\n%s\nwant %d containing %q", strings.Join(got, "\n"), len(tt.want), tt.want)
			}
			for _, w := range tt.want {
				found := false
				for _, g := range got {
					found = found || strings.Contains(g, w)
				}
				if !found {
					t.Errorf("no warning contains %q:\n%s", w, strings.Join(got, "\n"))
				}
			}
		})
	}
}
