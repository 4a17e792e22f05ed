// Package vitess knows the Vitess topo records topoha reads or writes: where each record lives (Keyspace,
// Shard, CellInfo, ShardReplication, Tablet), the fields topoha needs of them, tablet aliases, and which
// keys are locks. It decodes and encodes them with protowire instead of importing Vitess; the encoders
// write what Vitess writes, for the demo, the benchmark and tests.
package vitess

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protowire"
)

// TabletAlias names a tablet: its cell and uid, written cell-0000000100.
type TabletAlias struct {
	Cell string
	UID  uint32
}

func (a TabletAlias) String() string { return fmt.Sprintf("%s-%010d", a.Cell, a.UID) }

var aliasPattern = regexp.MustCompile(`^(.+)-([0-9]+)$`)

// ParseTabletAlias parses "cell-uid".
func ParseTabletAlias(s string) (TabletAlias, error) {
	m := aliasPattern.FindStringSubmatch(s)
	if m == nil {
		return TabletAlias{}, fmt.Errorf("tablet alias %q is not <cell>-<uid>", s)
	}
	uid, err := strconv.ParseUint(m[2], 10, 32)
	if err != nil {
		return TabletAlias{}, fmt.Errorf("tablet alias %q: uid: %w", s, err)
	}
	return TabletAlias{Cell: m[1], UID: uint32(uid)}, nil
}

// ShardKey is the etcd key of a shard's record below the global root.
func ShardKey(globalRoot, keyspace, shard string) string {
	return path.Join(globalRoot, "keyspaces", keyspace, "shards", shard, "Shard")
}

// Field numbers in Vitess' topodata.proto.
const (
	shardPrimaryAlias = 1 // Shard.primary_alias
	aliasCell         = 1 // TabletAlias.cell
	aliasUID          = 2 // TabletAlias.uid
)

// ShardPrimary returns the primary_alias of an encoded topodata.Shard, and false if it has none.
func ShardPrimary(shard []byte) (TabletAlias, bool, error) {
	var alias TabletAlias
	found := false
	err := eachField(shard, func(num protowire.Number, typ protowire.Type, val []byte) error {
		if num != shardPrimaryAlias || typ != protowire.BytesType {
			return nil
		}
		found = true
		var err error
		alias, err = decodeAlias(val)
		return err
	})
	if err != nil {
		return TabletAlias{}, false, fmt.Errorf("decode Shard record: %w", err)
	}
	return alias, found, nil
}

// SetShardPrimary returns the encoded topodata.Shard with primary_alias replaced, keeping every other
// field as it was. It is what a reparent does to the record.
func SetShardPrimary(shard []byte, primary TabletAlias) ([]byte, error) {
	var out []byte
	err := eachField(shard, func(num protowire.Number, typ protowire.Type, val []byte) error {
		if num != shardPrimaryAlias {
			out = appendField(out, num, typ, val)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode Shard record: %w", err)
	}
	head := protowire.AppendTag(nil, shardPrimaryAlias, protowire.BytesType)
	head = protowire.AppendBytes(head, encodeAlias(primary))
	return append(head, out...), nil
}

// appendField appends a field as eachField gives it: the payload of a length-delimited field, the raw
// encoded value of any other. Rewriting one field of a record this way keeps every other field, those
// topoha does not know included, byte for byte.
func appendField(out []byte, num protowire.Number, typ protowire.Type, val []byte) []byte {
	out = protowire.AppendTag(out, num, typ)
	if typ == protowire.BytesType {
		return protowire.AppendBytes(out, val)
	}
	return append(out, val...)
}

// eachField calls f for every top-level field of a protobuf message. For length-delimited fields val is
// the payload; for the others it is the raw encoded value.
func eachField(b []byte, f func(protowire.Number, protowire.Type, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var val []byte
		switch typ {
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			val, n = v, m
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			val, n = b[:m], m
		}
		if err := f(num, typ, val); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// IsLockKey says whether key is a Vitess topo lock: <dir>/locks/<lease ID in decimal>, as etcd2topo
// writes keyspace and shard locks and its leader elections. Vitess holds them under a lease; a lock key
// without one is an orphan that blocks every reparent until it is deleted.
func IsLockKey(key string) bool {
	dir, name := path.Split(key)
	if !strings.HasSuffix(dir, "/locks/") || name == "" {
		return false
	}
	_, err := strconv.ParseInt(name, 10, 64)
	return err == nil
}

// PromoteInTopo writes tablet as the primary of keyspace/shard into the Shard record in cli's etcd,
// keeping the record's other fields, and turns the tablet's own record (where its cell's CellInfo says it
// is, if there is one) into a PRIMARY: what a reparent leaves in the topo. Tests and the demo stand in
// for vtctldclient with it.
// With tabletRecord false the tablet's own record is left as it is: a promotion whose tablet wrote its
// new type elsewhere (through a topo VIP that had not moved yet).
func PromoteInTopo(ctx context.Context, cli *clientv3.Client, globalRoot, keyspace, shard string, tablet TabletAlias, tabletRecord bool) error {
	key := ShardKey(globalRoot, keyspace, shard)
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return err
	}
	var old []byte
	if len(resp.Kvs) == 1 {
		old = resp.Kvs[0].Value
	}
	updated, err := SetShardPrimary(old, tablet)
	if err != nil {
		return err
	}
	ops := []clientv3.Op{clientv3.OpPut(key, string(updated))}
	if resp, err = cli.Get(ctx, CellInfoKey(globalRoot, tablet.Cell)); err != nil {
		return err
	}
	// Without a decodable CellInfo or Tablet record there is no tablet record to turn into a PRIMARY, as
	// for Vitess.
	if ci, err := DecodeCellInfo(firstValue(resp)); err == nil && len(resp.Kvs) == 1 && tabletRecord {
		tkey := TabletKey(ci.Root, tablet)
		if resp, err = cli.Get(ctx, tkey); err != nil {
			return err
		}
		if rec, err := setTabletType(firstValue(resp), TypePrimary); err == nil && len(resp.Kvs) == 1 {
			ops = append(ops, clientv3.OpPut(tkey, string(rec)))
		}
	}
	_, err = cli.Txn(ctx).Then(ops...).Commit()
	return err
}

func firstValue(resp *clientv3.GetResponse) []byte {
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0].Value
}

// setTabletType returns the encoded topodata.Tablet with its type replaced, every other field kept.
func setTabletType(b []byte, typ TabletType) ([]byte, error) {
	var out []byte
	err := eachField(b, func(num protowire.Number, wt protowire.Type, val []byte) error {
		if num == tabletType && wt == protowire.VarintType {
			val = protowire.AppendVarint(nil, uint64(typ))
		}
		out = appendField(out, num, wt, val)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode Tablet record: %w", err)
	}
	return out, nil
}

// PromoteAt is PromoteInTopo for command lines: it connects to the etcd at endpoints (comma-separated), as
// user ("name:password", or "" without authentication), and takes "keyspace/shard" and a tablet alias as
// text.
func PromoteAt(ctx context.Context, endpoints, user, globalRoot, keyspaceShard, tablet string, tabletRecord bool) error {
	ks, shard, ok := strings.Cut(keyspaceShard, "/")
	if !ok {
		return fmt.Errorf("%q is not KEYSPACE/SHARD", keyspaceShard)
	}
	alias, err := ParseTabletAlias(tablet)
	if err != nil {
		return err
	}
	cc := clientv3.Config{Endpoints: strings.Split(endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if user != "" {
		var ok bool
		if cc.Username, cc.Password, ok = strings.Cut(user, ":"); !ok {
			return fmt.Errorf("etcd user %q is not NAME:PASSWORD", cc.Username)
		}
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return err
	}
	defer cli.Close()
	return PromoteInTopo(ctx, cli, globalRoot, ks, shard, alias, tabletRecord)
}
