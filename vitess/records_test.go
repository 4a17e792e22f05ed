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

// More records Vitess v0.22.1 wrote (vtctld, and Vitess' own topo code in the e2e suite's fake tablet:
// topo.CreateTablet, topotools.ChangeType): see e2e/vitess/README.md.
const (
	realSemiSyncKeyspace  = "420973656d695f73796e6352035f7674"             // CreateKeyspace --durability-policy semi_sync
	realCrossCellKeyspace = "420a63726f73735f63656c6c52035f7674"           // --durability-policy cross_cell
	realNewShard          = "3801"                                         // CreateShard: {is_primary_serving: true}
	realTwoNodes          = "0a090a070a0364633210650a090a070a036463321066" // ShardReplication {dc2-101, dc2-102}
	// Tablet dc2-0000000101, REPLICA of commerce/0, as tablet init registers it (port_map grpc, vt; tags;
	// mysql host and port).
	realReplica = "0a070a03646332106512093132372e302e302e31220a0a0467727063108dc40122080a027674108dc4012a08636f6d6d65726365" +
		"320130400252120a0466616b65120a746f706f68612d65326562093132372e302e302e3168ea19"
	// Tablet dc1-0000000100 after PlannedReparentShard made it PRIMARY (with primary_term_start_time).
	realPrimary = "0a070a03646331106412093132372e302e302e31220a0a0467727063108cc40122080a027674108cc4012a08636f6d6d65726365" +
		"320130400152120a0466616b65120a746f706f68612d65326562093132372e302e302e3168ea19720c08faadb3d80610f387e48503"
)

func TestDecodeRealTablets(t *testing.T) {
	replica, err := DecodeTablet(realBytes(t, realReplica))
	want := Tablet{Alias: TabletAlias{"dc2", 101}, Hostname: "127.0.0.1", Keyspace: "commerce", Shard: "0", Type: TypeReplica}
	if err != nil || replica != want {
		t.Errorf("REPLICA tablet = %+v, %v; want %+v", replica, err, want)
	}
	primary, err := DecodeTablet(realBytes(t, realPrimary))
	if err != nil || primary.Type != TypePrimary || primary.Alias != (TabletAlias{"dc1", 100}) {
		t.Errorf("PRIMARY tablet = %+v, %v", primary, err)
	}
	if ok, err := TabletIsPrimary(realBytes(t, realPrimary)); !ok || err != nil {
		t.Errorf("TabletIsPrimary(primary) = %v, %v", ok, err)
	}
	// ChangeTabletType rewrites only the type's byte: 4002 → 4003 (RDONLY), 4008 (DRAINED), 4006 (BACKUP).
	for typ, b := range map[TabletType]string{TypeRdonly: "03", TypeDrained: "08", TypeBackup: "06"} {
		changed := strings.Replace(realReplica, "320130400252", "32013040"+b+"52", 1)
		if got, err := DecodeTablet(realBytes(t, changed)); err != nil || got.Type != typ {
			t.Errorf("%s tablet decoded as %v, %v", typ, got.Type, err)
		}
	}
	if _, err := DecodeTablet(realBytes(t, realReplica)[:40]); err == nil {
		t.Error("a truncated Tablet record decoded without error")
	}
}

// TestEncodersWriteWhatVitessWrites: the records the demo and the benchmark write are byte for byte
// those Vitess wrote, where Vitess' encoding is deterministic (maps are not: a Tablet is compared
// decoded).
func TestEncodersWriteWhatVitessWrites(t *testing.T) {
	for name, c := range map[string]struct {
		got  []byte
		want string
	}{
		"CellInfo":          {EncodeCellInfo(CellInfo{ServerAddress: "127.0.0.1:23791", Root: "/vt/dc1"}), realCellInfo},
		"Keyspace none":     {EncodeKeyspace("none"), realKeyspace},
		"Keyspace semi":     {EncodeKeyspace("semi_sync"), realSemiSyncKeyspace},
		"Keyspace cross":    {EncodeKeyspace("cross_cell"), realCrossCellKeyspace},
		"Shard, no primary": {EncodeShard(TabletAlias{}), realNewShard},
		"ShardReplication":  {EncodeShardReplication([]TabletAlias{{"dc2", 101}, {"dc2", 102}}), realTwoNodes},
		"ShardReplication1": {EncodeShardReplication([]TabletAlias{{"dc2", 101}}), realShardReplication},
	} {
		if want := realBytes(t, c.want); !bytes.Equal(c.got, want) {
			t.Errorf("%s: encoded\n% x\nVitess wrote\n% x", name, c.got, want)
		}
	}
	// A Shard with a primary: Vitess adds primary_term_start_time (field 8) after is_primary_serving.
	real := realBytes(t, realShard)
	if got := EncodeShard(TabletAlias{"dc1", 100}); !bytes.HasPrefix(real, got) {
		t.Errorf("Shard with primary: encoded % x, Vitess wrote % x", got, real)
	}
	want, _ := DecodeTablet(realBytes(t, realReplica))
	enc := EncodeTablet(want, 25101)
	if got, err := DecodeTablet(enc); err != nil || got != want {
		t.Errorf("encoded tablet decodes as %+v, %v; want %+v", got, err, want)
	}
	// The fields Vitess reads to route to the tablet are where Vitess put them.
	if !bytes.HasPrefix(realBytes(t, realReplica), enc[:20]) {
		t.Errorf("encoded tablet starts % x; Vitess' starts % x", enc[:20], realBytes(t, realReplica)[:20])
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

func TestSetTabletType(t *testing.T) {
	replica := realBytes(t, realReplica)
	out, err := setTabletType(replica, TypePrimary)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeTablet(out)
	want, _ := DecodeTablet(replica)
	want.Type = TypePrimary
	if err != nil || got != want || len(out) != len(replica) {
		t.Errorf("retyped tablet = %+v (%d bytes), %v; want %+v (%d bytes)", got, len(out), err, want, len(replica))
	}
}
