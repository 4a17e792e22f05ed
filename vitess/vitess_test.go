package vitess

import (
	"bytes"
	"testing"
)

// shardBytes is topodata.Shard{primary_alias: {cell: "dc1", uid: 100}, key_range: {start: 0x80},
// is_primary_serving: true} as protobuf encodes it, written out by hand from topodata.proto.
var shardBytes = []byte{
	0x0a, 0x07, 0x0a, 0x03, 'd', 'c', '1', 0x10, 0x64, // 1: primary_alias {1: "dc1", 2: 100}
	0x1a, 0x03, 0x0a, 0x01, 0x80, // 3: key_range {1: "\x80"}
	0x38, 0x01, // 7: is_primary_serving true
}

func TestShardPrimary(t *testing.T) {
	alias, ok, err := ShardPrimary(shardBytes)
	if err != nil || !ok || alias != (TabletAlias{"dc1", 100}) {
		t.Fatalf("ShardPrimary = %v %v %v, want dc1-0000000100", alias, ok, err)
	}
	if _, ok, err := ShardPrimary(shardBytes[9:]); err != nil || ok {
		t.Errorf("a Shard without primary_alias: ok=%v err=%v", ok, err)
	}
	if _, _, err := ShardPrimary([]byte{0x0a, 0x20, 0x01}); err == nil {
		t.Error("a truncated record decoded without error")
	}
}

func TestSetShardPrimaryKeepsOtherFields(t *testing.T) {
	out, err := SetShardPrimary(shardBytes, TabletAlias{"dc2", 101})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0x0a, 0x07, 0x0a, 0x03, 'd', 'c', '2', 0x10, 0x65}, shardBytes[9:]...)
	if !bytes.Equal(out, want) {
		t.Fatalf("SetShardPrimary =\n% x\nwant\n% x", out, want)
	}
	alias, ok, err := ShardPrimary(out)
	if err != nil || !ok || alias.String() != "dc2-0000000101" {
		t.Errorf("read back %v %v %v", alias, ok, err)
	}
}

func TestParseTabletAlias(t *testing.T) {
	for in, want := range map[string]TabletAlias{"dc1-0000000100": {"dc1", 100}, "us-east-1-7": {"us-east-1", 7}} {
		got, err := ParseTabletAlias(in)
		if err != nil || got != want {
			t.Errorf("ParseTabletAlias(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "dc1", "dc1-", "-100", "dc1-99999999999"} {
		if _, err := ParseTabletAlias(bad); err == nil {
			t.Errorf("ParseTabletAlias(%q) accepted it", bad)
		}
	}
}

func TestKeys(t *testing.T) {
	if got := ShardKey("/vt", "commerce", "-80"); got != "/vt/keyspaces/commerce/shards/-80/Shard" {
		t.Errorf("ShardKey = %s", got)
	}
	for key, want := range map[string]bool{
		"/vt/keyspaces/commerce/shards/-80/locks/7587890123456789012": true,
		"/vt/keyspaces/commerce/locks/7587890123456789012":            true,
		"/vt/keyspaces/commerce/shards/-80/Shard":                     false,
		"/vt/keyspaces/locks/Keyspace":                                false, // a keyspace named "locks"
		"/vt/keyspaces/locks/shards/0/Shard":                          false,
		"/vt/keyspaces/commerce/shards/-80/locks/":                    false,
		"/vt/keyspaces/commerce/shards/-80/locksmith/1":               false,
		"/vt/keyspaces/commerce/shards/-80/locks/deadbeef":            false,
	} {
		if got := IsLockKey(key); got != want {
			t.Errorf("IsLockKey(%q) = %v, want %v", key, got, want)
		}
	}
}
