package vitess

import (
	"fmt"
	"path"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// More field numbers of topodata.proto.
const (
	cellInfoServerAddress   = 1  // CellInfo.server_address
	cellInfoRoot            = 2  // CellInfo.root
	keyspaceDurability      = 8  // Keyspace.durability_policy
	shardReplicationNodes   = 1  // ShardReplication.nodes
	shardReplicationNodeTab = 1  // ShardReplication.Node.tablet_alias
	maxCellNameLen          = 64 // sanity bound on a cell name read from a key
)

// CellInfo is topodata.CellInfo: where a cell's local topo lives.
type CellInfo struct {
	ServerAddress string // etcd2topo: comma-separated host:port
	Root          string
}

// CellsDir is the directory of the CellInfo records below the global root.
func CellsDir(globalRoot string) string { return path.Join(globalRoot, "cells") + "/" }

// CellInfoKey is the key of cell's CellInfo record below the global root.
func CellInfoKey(globalRoot, cell string) string { return CellsDir(globalRoot) + cell + "/CellInfo" }

// CellOfCellInfoKey returns the cell whose CellInfo record key is, and false if key is not one.
func CellOfCellInfoKey(globalRoot, key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, CellsDir(globalRoot))
	if !ok {
		return "", false
	}
	cell, name, ok := strings.Cut(rest, "/")
	if !ok || name != "CellInfo" || cell == "" || len(cell) > maxCellNameLen {
		return "", false
	}
	return cell, true
}

// DecodeCellInfo decodes an encoded topodata.CellInfo.
func DecodeCellInfo(b []byte) (CellInfo, error) {
	var ci CellInfo
	err := eachField(b, func(num protowire.Number, typ protowire.Type, val []byte) error {
		switch {
		case num == cellInfoServerAddress && typ == protowire.BytesType:
			ci.ServerAddress = string(val)
		case num == cellInfoRoot && typ == protowire.BytesType:
			ci.Root = string(val)
		}
		return nil
	})
	if err != nil {
		return CellInfo{}, fmt.Errorf("decode CellInfo record: %w", err)
	}
	return ci, nil
}

// RewriteCellInfo returns the encoded CellInfo b with server_address set to address and root replaced by
// mapRoot(root). Every other field is kept byte for byte, in its place.
func RewriteCellInfo(b []byte, address string, mapRoot func(string) string) ([]byte, error) {
	out := make([]byte, 0, len(b)+len(address))
	sawAddress := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, val []byte) error {
		switch {
		case num == cellInfoServerAddress && typ == protowire.BytesType:
			sawAddress = true
			val = []byte(address)
		case num == cellInfoRoot && typ == protowire.BytesType:
			val = []byte(mapRoot(string(val)))
		}
		out = appendField(out, num, typ, val)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode CellInfo record: %w", err)
	}
	if !sawAddress && address != "" {
		// proto3 leaves an empty string out: the field goes first, where Vitess would have put it.
		head := protowire.AppendTag(nil, cellInfoServerAddress, protowire.BytesType)
		out = append(protowire.AppendString(head, address), out...)
	}
	return out, nil
}

// KeyspaceKey is the key of a keyspace's record below the global root.
func KeyspaceKey(globalRoot, keyspace string) string {
	return path.Join(globalRoot, "keyspaces", keyspace, "Keyspace")
}

// KeyspaceDurability returns the durability_policy of an encoded topodata.Keyspace ("" when unset,
// which Vitess reads as "none").
func KeyspaceDurability(b []byte) (string, error) {
	var policy string
	err := eachField(b, func(num protowire.Number, typ protowire.Type, val []byte) error {
		if num == keyspaceDurability && typ == protowire.BytesType {
			policy = string(val)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("decode Keyspace record: %w", err)
	}
	return policy, nil
}

// ShardReplicationKey is the key of a shard's replication graph in a cell, below the cell's root.
func ShardReplicationKey(cellRoot, keyspace, shard string) string {
	return path.Join(cellRoot, "keyspaces", keyspace, "shards", shard, "ShardReplication")
}

// ShardReplicationTablets returns the tablets of an encoded topodata.ShardReplication.
func ShardReplicationTablets(b []byte) ([]TabletAlias, error) {
	var out []TabletAlias
	err := eachField(b, func(num protowire.Number, typ protowire.Type, node []byte) error {
		if num != shardReplicationNodes || typ != protowire.BytesType {
			return nil
		}
		return eachField(node, func(num protowire.Number, typ protowire.Type, alias []byte) error {
			if num != shardReplicationNodeTab || typ != protowire.BytesType {
				return nil
			}
			a, err := decodeAlias(alias)
			out = append(out, a)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("decode ShardReplication record: %w", err)
	}
	return out, nil
}

func decodeAlias(b []byte) (TabletAlias, error) {
	var a TabletAlias
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch {
		case num == aliasCell && typ == protowire.BytesType:
			a.Cell = string(v)
		case num == aliasUID && typ == protowire.VarintType:
			u, _ := protowire.ConsumeVarint(v)
			a.UID = uint32(u)
		}
		return nil
	})
	return a, err
}

// Tablet fields of topodata.proto.
const (
	tabletAlias    = 1  // Tablet.alias
	tabletHostname = 2  // Tablet.hostname
	tabletPortMap  = 4  // Tablet.port_map
	tabletKeyspace = 5  // Tablet.keyspace
	tabletShard    = 6  // Tablet.shard
	tabletType     = 8  // Tablet.type
	keyspaceSide   = 10 // Keyspace.sidecar_db_name
	shardServing   = 7  // Shard.is_primary_serving
)

// TabletType is topodata.TabletType.
type TabletType int32

// The tablet types of topodata.proto.
const (
	TypeUnknown      TabletType = 0
	TypePrimary      TabletType = 1
	TypeReplica      TabletType = 2
	TypeRdonly       TabletType = 3
	TypeSpare        TabletType = 4
	TypeExperimental TabletType = 5
	TypeBackup       TabletType = 6
	TypeRestore      TabletType = 7
	TypeDrained      TabletType = 8
)

func (t TabletType) String() string {
	names := [...]string{"UNKNOWN", "PRIMARY", "REPLICA", "RDONLY", "SPARE", "EXPERIMENTAL", "BACKUP", "RESTORE", "DRAINED"}
	if t >= 0 && int(t) < len(names) {
		return names[t]
	}
	return fmt.Sprintf("TabletType(%d)", int32(t))
}

// Tablet is what topoha reads of a topodata.Tablet.
type Tablet struct {
	Alias    TabletAlias
	Hostname string
	Keyspace string
	Shard    string
	Type     TabletType
}

// TabletKey is the key of a tablet's record below its cell's root.
func TabletKey(cellRoot string, alias TabletAlias) string {
	return path.Join(cellRoot, "tablets", alias.String(), "Tablet")
}

// TabletsDir is the directory of a cell's Tablet records.
func TabletsDir(cellRoot string) string { return path.Join(cellRoot, "tablets") + "/" }

// DecodeTablet decodes an encoded topodata.Tablet.
func DecodeTablet(b []byte) (Tablet, error) {
	var t Tablet
	err := eachField(b, func(num protowire.Number, typ protowire.Type, val []byte) error {
		switch {
		case num == tabletAlias && typ == protowire.BytesType:
			a, err := decodeAlias(val)
			t.Alias = a
			return err
		case num == tabletHostname && typ == protowire.BytesType:
			t.Hostname = string(val)
		case num == tabletKeyspace && typ == protowire.BytesType:
			t.Keyspace = string(val)
		case num == tabletShard && typ == protowire.BytesType:
			t.Shard = string(val)
		case num == tabletType && typ == protowire.VarintType:
			v, _ := protowire.ConsumeVarint(val)
			t.Type = TabletType(int32(v))
		}
		return nil
	})
	if err != nil {
		return Tablet{}, fmt.Errorf("decode Tablet record: %w", err)
	}
	return t, nil
}

// TabletIsPrimary says whether an encoded topodata.Tablet has type PRIMARY.
func TabletIsPrimary(b []byte) (bool, error) {
	t, err := DecodeTablet(b)
	return t.Type == TypePrimary, err
}

// The encoders below write records as Vitess does (fields in number order, zero values left out), for
// the demo, the benchmark and tests that need a topo without running Vitess. Each is checked against
// bytes Vitess wrote.

// EncodeCellInfo encodes a topodata.CellInfo.
func EncodeCellInfo(ci CellInfo) []byte {
	b := appendString(nil, cellInfoServerAddress, ci.ServerAddress)
	return appendString(b, cellInfoRoot, ci.Root)
}

// EncodeKeyspace encodes a topodata.Keyspace as CreateKeyspace writes it: a durability policy and the
// default sidecar database, _vt.
func EncodeKeyspace(durability string) []byte {
	b := appendString(nil, keyspaceDurability, durability)
	return appendString(b, keyspaceSide, "_vt")
}

// EncodeShard encodes a topodata.Shard that serves, with primary as its primary_alias unless it is the
// zero alias (a shard no tablet was elected in yet).
func EncodeShard(primary TabletAlias) []byte {
	var b []byte
	if primary != (TabletAlias{}) {
		b = protowire.AppendTag(b, shardPrimaryAlias, protowire.BytesType)
		b = protowire.AppendBytes(b, encodeAlias(primary))
	}
	b = protowire.AppendTag(b, shardServing, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

// EncodeShardReplication encodes a topodata.ShardReplication with a node for each tablet.
func EncodeShardReplication(tablets []TabletAlias) []byte {
	var b []byte
	for _, a := range tablets {
		node := protowire.AppendTag(nil, shardReplicationNodeTab, protowire.BytesType)
		node = protowire.AppendBytes(node, encodeAlias(a))
		b = protowire.AppendTag(b, shardReplicationNodes, protowire.BytesType)
		b = protowire.AppendBytes(b, node)
	}
	return b
}

// EncodeTablet encodes a topodata.Tablet with t's fields and a grpc port.
func EncodeTablet(t Tablet, grpcPort int32) []byte {
	b := protowire.AppendTag(nil, tabletAlias, protowire.BytesType)
	b = protowire.AppendBytes(b, encodeAlias(t.Alias))
	b = appendString(b, tabletHostname, t.Hostname)
	if grpcPort != 0 {
		entry := appendString(nil, 1, "grpc")
		entry = protowire.AppendTag(entry, 2, protowire.VarintType)
		entry = protowire.AppendVarint(entry, uint64(grpcPort))
		b = protowire.AppendTag(b, tabletPortMap, protowire.BytesType)
		b = protowire.AppendBytes(b, entry)
	}
	b = appendString(b, tabletKeyspace, t.Keyspace)
	b = appendString(b, tabletShard, t.Shard)
	if t.Type != TypeUnknown {
		b = protowire.AppendTag(b, tabletType, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(t.Type))
	}
	return b
}

// appendString appends a string field, left out when empty as proto3 does.
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func encodeAlias(a TabletAlias) []byte {
	b := appendString(nil, aliasCell, a.Cell)
	b = protowire.AppendTag(b, aliasUID, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(a.UID))
}
