package vitess

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// Records as Vitess v22 wrote them (vtctldclient AddCellInfo, CreateKeyspace --durability-policy none,
// a tablet's ShardReplication node), read back from etcd.
func realBytes(t *testing.T, h string) []byte {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	realCellInfo         = "0a0f3132372e302e302e313a323337393112072f76742f646331" // {server_address: "127.0.0.1:23791", root: "/vt/dc1"}
	realKeyspace         = "42046e6f6e6552035f7674"                               // {durability_policy: "none", sidecar_db_name: "_vt"}
	realShardReplication = "0a090a070a036463321065"                               // {nodes: [{tablet_alias: dc2-101}]}
	realShard            = "0a070a0364633110643801420c08cccd94d80610c4b8da9c02"   // {primary_alias: dc1-100, is_primary_serving, primary_term_start_time}
)

func TestDecodeRealRecords(t *testing.T) {
	ci, err := DecodeCellInfo(realBytes(t, realCellInfo))
	if err != nil || ci != (CellInfo{ServerAddress: "127.0.0.1:23791", Root: "/vt/dc1"}) {
		t.Errorf("CellInfo = %+v, %v", ci, err)
	}
	if p, err := KeyspaceDurability(realBytes(t, realKeyspace)); err != nil || p != "none" {
		t.Errorf("durability = %q, %v", p, err)
	}
	if tablets, err := ShardReplicationTablets(realBytes(t, realShardReplication)); err != nil || len(tablets) != 1 || tablets[0] != (TabletAlias{"dc2", 101}) {
		t.Errorf("ShardReplication tablets = %v, %v", tablets, err)
	}
	if a, ok, err := ShardPrimary(realBytes(t, realShard)); err != nil || !ok || a != (TabletAlias{"dc1", 100}) {
		t.Errorf("Shard primary = %v %v %v", a, ok, err)
	}
}

func TestRewriteCellInfo(t *testing.T) {
	orig := realBytes(t, realCellInfo)
	keep := func(root string) string { return root }
	out, err := RewriteCellInfo(orig, "etcd-dc2:2379", keep)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0x0a, 13}, "etcd-dc2:2379"...)
	want = append(want, orig[17:]...) // the root field, byte for byte
	if !bytes.Equal(out, want) {
		t.Fatalf("rewritten =\n% x\nwant\n% x", out, want)
	}
	// Idempotent: the mirror may rewrite a record it rewrote before.
	if again, _ := RewriteCellInfo(out, "etcd-dc2:2379", keep); !bytes.Equal(again, out) {
		t.Errorf("a second rewrite changed the record: % x", again)
	}
	// The root moves with the destination prefix; unknown fields stay where they were.
	withUnknown := append(append([]byte{}, orig...), 0x18, 0x07) // field 3 (reserved region), varint 7
	out, err = RewriteCellInfo(withUnknown, "a:1", func(r string) string { return strings.Replace(r, "/vt", "/dr", 1) })
	if err != nil {
		t.Fatal(err)
	}
	if ci, _ := DecodeCellInfo(out); ci != (CellInfo{"a:1", "/dr/dc1"}) || !bytes.HasSuffix(out, []byte{0x18, 0x07}) {
		t.Errorf("rewritten %+v, % x", ci, out)
	}
	// proto3 omits an empty server_address: the rewrite adds it.
	out, err = RewriteCellInfo(orig[17:], "b:2", keep)
	if ci, _ := DecodeCellInfo(out); err != nil || ci != (CellInfo{"b:2", "/vt/dc1"}) {
		t.Errorf("record without server_address: %+v %v", ci, err)
	}
	if _, err := RewriteCellInfo([]byte{0x0a, 0x20, 'x'}, "b:2", keep); err == nil {
		t.Error("a truncated record was rewritten")
	}
}

func TestCellOfCellInfoKey(t *testing.T) {
	for key, want := range map[string]string{
		"/vt/cells/dc1/CellInfo":      "dc1",
		"/vt/cells/dc1/CellInfo/x":    "",
		"/vt/cells/dc1/Other":         "",
		"/vt/cells//CellInfo":         "",
		"/vt/dc1/cells/dc1/CellInfo":  "",
		"/vt2/cells/dc1/CellInfo":     "",
		"/vt/keyspaces/ks/cells/x/ab": "",
	} {
		got, ok := CellOfCellInfoKey("/vt", key)
		if got != want || ok != (want != "") {
			t.Errorf("CellOfCellInfoKey(%q) = %q, %v; want %q", key, got, ok, want)
		}
	}
}
