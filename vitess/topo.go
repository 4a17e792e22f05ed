package vitess

import (
	"context"
	"fmt"
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Topo builds the records of a Vitess cluster as Vitess writes them (CellInfo, Keyspace, Shard, Tablet and
// each cell's ShardReplication), for the demo, the benchmark and tests that need a topo without running
// Vitess.
type Topo struct {
	globalRoot string
	cellRoots  map[string]string
	records    map[string][]byte
	graphs     map[string][]TabletAlias // ShardReplication key -> its tablets
}

// NewTopo starts an empty topo below globalRoot.
func NewTopo(globalRoot string) *Topo {
	return &Topo{globalRoot: globalRoot, cellRoots: map[string]string{}, records: map[string][]byte{}, graphs: map[string][]TabletAlias{}}
}

// Cell adds a cell whose local topo is at address, below root.
func (t *Topo) Cell(name, address, root string) {
	t.cellRoots[name] = root
	t.records[CellInfoKey(t.globalRoot, name)] = EncodeCellInfo(CellInfo{ServerAddress: address, Root: root})
}

// Keyspace adds a keyspace with a durability policy.
func (t *Topo) Keyspace(name, durability string) {
	t.records[KeyspaceKey(t.globalRoot, name)] = EncodeKeyspace(durability)
}

// Shard adds a shard with primary as its primary (none when it is the zero alias).
func (t *Topo) Shard(keyspace, shard string, primary TabletAlias) {
	t.records[ShardKey(t.globalRoot, keyspace, shard)] = EncodeShard(primary)
}

// Tablet adds a tablet's record and lists it in its shard's replication graph in its cell, as a
// tablet's start does. Its cell must have been added.
func (t *Topo) Tablet(tab Tablet) error {
	root, ok := t.cellRoots[tab.Alias.Cell]
	if !ok {
		return fmt.Errorf("tablet %s: cell %s was not added", tab.Alias, tab.Alias.Cell)
	}
	t.records[TabletKey(root, tab.Alias)] = EncodeTablet(tab, 15999)
	key := ShardReplicationKey(root, tab.Keyspace, tab.Shard)
	t.graphs[key] = append(t.graphs[key], tab.Alias)
	return nil
}

// Records returns every record, by key.
func (t *Topo) Records() map[string][]byte {
	out := make(map[string][]byte, len(t.records)+len(t.graphs))
	for k, v := range t.records {
		out[k] = v
	}
	for k, tablets := range t.graphs {
		out[k] = EncodeShardReplication(tablets)
	}
	return out
}

// Put writes every record into cli's etcd, in transactions of at most 100 puts (below etcd's default
// limit of 128 operations).
func (t *Topo) Put(ctx context.Context, cli *clientv3.Client) error {
	recs := t.Records()
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for len(keys) > 0 {
		n := min(len(keys), 100)
		ops := make([]clientv3.Op, 0, n)
		for _, k := range keys[:n] {
			ops = append(ops, clientv3.OpPut(k, string(recs[k])))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("write the topo's records: %w", err)
		}
		keys = keys[n:]
	}
	return nil
}
