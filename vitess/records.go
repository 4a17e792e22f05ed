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
		out = protowire.AppendTag(out, num, typ)
		if typ == protowire.BytesType {
			out = protowire.AppendBytes(out, val)
		} else {
			out = append(out, val...)
		}
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

// Tablet fields and types of topodata.proto.
const (
	tabletType        = 8 // Tablet.type
	tabletTypePrimary = 1 // TabletType.PRIMARY
)

// TabletKey is the key of a tablet's record below its cell's root.
func TabletKey(cellRoot string, alias TabletAlias) string {
	return path.Join(cellRoot, "tablets", alias.String(), "Tablet")
}

// TabletIsPrimary says whether an encoded topodata.Tablet has type PRIMARY.
func TabletIsPrimary(b []byte) (bool, error) {
	primary := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, val []byte) error {
		if num == tabletType && typ == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(val)
			primary = v == tabletTypePrimary
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("decode Tablet record: %w", err)
	}
	return primary, nil
}
