// Package discovery reads a Vitess cluster's keyspaces, shards and tablets from one DC's etcd, and plans
// for each shard which tablet a failover to a DC would promote and which tablets it would ignore. It only
// reads: `topoha plan`, the leader's periodic refresh and the failover itself use the same plan.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/vitess"
)

// Topology is what one etcd holds of a Vitess cluster, read at one revision.
type Topology struct {
	// Revision is the etcd revision every read was pinned to.
	Revision int64
	// Keyspaces maps a keyspace's name to its record; a keyspace whose record is missing or undecodable
	// has an entry with Err set when it has shards.
	Keyspaces map[string]Keyspace
	// Shards are sorted by keyspace, then shard name.
	Shards []*Shard
	// Cells maps each cell with a decodable CellInfo record to it.
	Cells map[string]vitess.CellInfo
	// Tablets are the decodable Tablet records of every cell.
	Tablets map[vitess.TabletAlias]vitess.Tablet
	// Problems are cells whose records could not be read or decoded: Vitess could not read them
	// either, and a reparent of any shard reads every cell.
	Problems []string
	// Notes are records skipped that stop no reparent by themselves: an undecodable Tablet record, a
	// replication graph of a shard that has no Shard record.
	Notes []string
}

// Keyspace is a keyspace's record.
type Keyspace struct {
	Durability string
	Err        error
}

// Shard is a shard's record and its tablets, by cell, from each cell's replication graph.
type Shard struct {
	Keyspace, Name string
	// Primary is the Shard record's primary_alias; the zero alias when it has none.
	Primary vitess.TabletAlias
	// Err is set when the Shard record cannot be decoded.
	Err error
	// Problems are the shard's replication graphs that cannot be decoded.
	Problems []string
	// Graph maps a cell to the tablets its ShardReplication record lists for this shard.
	Graph map[string][]vitess.TabletAlias
}

// ID is keyspace/shard.
func (s *Shard) ID() string { return s.Keyspace + "/" + s.Name }

// Read reads the topology below globalRoot from cli's etcd: the keyspaces and their Shard records, the
// CellInfo records, and each cell's replication graphs and Tablet records. Each is one range read,
// all pinned to the first one's revision, each bounded by timeout. It fails when any of them fails: a
// topology with one cell's tablets missing would plan no tablet (or no --ignore-replicas) for every shard
// there, and a failover planned from it keeps that plan to the end. What is read but cannot be decoded is
// a problem or a note in the result instead: reading again would not change it.
func Read(ctx context.Context, cli *clientv3.Client, globalRoot string, timeout time.Duration) (*Topology, error) {
	for attempt := 0; ; attempt++ {
		t, err := read(ctx, cli, globalRoot, timeout)
		// A compaction between the first read and the last leaves the revision unreadable: read again.
		if errors.Is(err, rpctypes.ErrCompacted) && attempt < 2 {
			continue
		}
		return t, err
	}
}

func read(ctx context.Context, cli *clientv3.Client, globalRoot string, timeout time.Duration) (*Topology, error) {
	t := &Topology{Keyspaces: map[string]Keyspace{}, Cells: map[string]vitess.CellInfo{}, Tablets: map[vitess.TabletAlias]vitess.Tablet{}}
	get := func(prefix string) (*clientv3.GetResponse, error) {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if t.Revision != 0 {
			opts = append(opts, clientv3.WithRev(t.Revision))
		}
		return cli.Get(rctx, prefix, opts...)
	}

	if err := t.readKeyspaces(globalRoot, get); err != nil {
		return nil, err
	}
	shards := map[string]*Shard{}
	for _, s := range t.Shards {
		shards[s.ID()] = s
	}

	cellsDir := vitess.CellsDir(globalRoot)
	resp, err := get(cellsDir)
	if err != nil {
		return nil, fmt.Errorf("read the cells below %s: %w", cellsDir, err)
	}
	for _, kv := range resp.Kvs {
		cell, ok := vitess.CellOfCellInfoKey(globalRoot, string(kv.Key))
		if !ok {
			continue
		}
		ci, err := vitess.DecodeCellInfo(kv.Value)
		if err != nil {
			t.problemf("cell %s: %s: %v: Vitess cannot find this cell's tablets", cell, kv.Key, err)
			continue
		}
		t.Cells[cell] = ci
	}
	if len(t.Cells) == 0 {
		t.problemf("no CellInfo records below %s: Vitess cannot find any cell's topo", cellsDir)
	}
	for _, cell := range slices.Sorted(maps.Keys(t.Cells)) {
		if err := t.readCell(cell, shards, get); err != nil {
			return nil, fmt.Errorf("cell %s: %w", cell, err)
		}
	}
	return t, nil
}

// ReadShards reads only the keyspaces and Shard records below globalRoot, with one range read: what a
// self-fence needs (each shard's primary), when every other read may be too many.
func ReadShards(ctx context.Context, cli *clientv3.Client, globalRoot string, timeout time.Duration) (*Topology, error) {
	t := &Topology{Keyspaces: map[string]Keyspace{}}
	err := t.readKeyspaces(globalRoot, func(prefix string) (*clientv3.GetResponse, error) {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return cli.Get(rctx, prefix, clientv3.WithPrefix())
	})
	return t, err
}

// readKeyspaces reads the Keyspace and Shard records, and sets the revision every later read is pinned to.
func (t *Topology) readKeyspaces(globalRoot string, get func(string) (*clientv3.GetResponse, error)) error {
	ksDir := path.Join(globalRoot, "keyspaces") + "/"
	resp, err := get(ksDir)
	if err != nil {
		return fmt.Errorf("read the keyspaces below %s: %w", ksDir, err)
	}
	t.Revision = resp.Header.Revision
	for _, kv := range resp.Kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), ksDir), "/")
		switch {
		case len(parts) == 2 && parts[1] == "Keyspace":
			policy, err := vitess.KeyspaceDurability(kv.Value)
			t.Keyspaces[parts[0]] = Keyspace{Durability: policy, Err: err}
		case len(parts) == 4 && parts[1] == "shards" && parts[3] == "Shard":
			s := &Shard{Keyspace: parts[0], Name: parts[2], Graph: map[string][]vitess.TabletAlias{}}
			primary, _, err := vitess.ShardPrimary(kv.Value)
			s.Primary, s.Err = primary, err
			t.Shards = append(t.Shards, s)
		}
	}
	for _, s := range t.Shards {
		if _, ok := t.Keyspaces[s.Keyspace]; !ok {
			t.Keyspaces[s.Keyspace] = Keyspace{Err: fmt.Errorf("%s does not exist", vitess.KeyspaceKey(globalRoot, s.Keyspace))}
		}
	}
	sort.Slice(t.Shards, func(i, j int) bool { return t.Shards[i].ID() < t.Shards[j].ID() })
	return nil
}

// readCell reads one cell's replication graphs and Tablet records.
func (t *Topology) readCell(cell string, shards map[string]*Shard, get func(string) (*clientv3.GetResponse, error)) error {
	root := t.Cells[cell].Root
	dir := path.Join(root, "keyspaces") + "/"
	resp, err := get(dir)
	if err != nil {
		return fmt.Errorf("read its replication graphs below %s: %w", dir, err)
	}
	for _, kv := range resp.Kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), dir), "/")
		if len(parts) != 4 || parts[1] != "shards" || parts[3] != "ShardReplication" {
			continue
		}
		s, ok := shards[parts[0]+"/"+parts[2]]
		if !ok {
			t.notef("cell %s lists tablets for %s/%s, which has no Shard record: skipped", cell, parts[0], parts[2])
			continue
		}
		tablets, err := vitess.ShardReplicationTablets(kv.Value)
		if err != nil {
			s.Problems = append(s.Problems, fmt.Sprintf("%s: %v: its tablets in cell %s are unknown, to Vitess too", kv.Key, err, cell))
			continue
		}
		s.Graph[cell] = tablets
	}
	dir = vitess.TabletsDir(root)
	if resp, err = get(dir); err != nil {
		return fmt.Errorf("read its Tablet records below %s: %w", dir, err)
	}
	for _, kv := range resp.Kvs {
		if !strings.HasSuffix(string(kv.Key), "/Tablet") {
			continue
		}
		tab, err := vitess.DecodeTablet(kv.Value)
		if err != nil {
			t.notef("%s: %v: that tablet is skipped", kv.Key, err)
			continue
		}
		t.Tablets[tab.Alias] = tab
	}
	return nil
}

func (t *Topology) problemf(format string, args ...any) {
	t.Problems = append(t.Problems, fmt.Sprintf(format, args...))
}

func (t *Topology) notef(format string, args ...any) {
	t.Notes = append(t.Notes, fmt.Sprintf(format, args...))
}
