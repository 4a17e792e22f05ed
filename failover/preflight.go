package failover

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/vitess"
)

// Preflight reads the Vitess records in the etcd of DC to (the side a failover would promote) and
// returns what would make EmergencyReparentShard there fail or misbehave, one warning per problem:
//
//   - a keyspace whose durability policy the shard's tablets in to cannot satisfy (with semi_sync and a
//     single tablet there, ERS refuses: "will not be able to make forward progress");
//   - a tablet of from named in --ignore-replicas (the shard's tablets in from, {{.IgnoreTablets}}) that
//     is not in the shard's replication graph (Vitess 22 then fails with "no valid candidates"), and a
//     tablet of from in the graph that is not named (ERS exits 1 with "SetReplicationSource failed" after
//     it promoted);
//   - a cell whose CellInfo points at an address that does not answer (ERS fails with "partial result"
//     until the cell's topo answers; mirror.cell_info_rewrite points every cell at the DR etcd).
//
// It never blocks a failover: a failover is what is needed when things are broken. Every read is bounded
// by timeout; what cannot be read is itself a warning.
func Preflight(ctx context.Context, c *config.Config, cli *clientv3.Client, from, to string, timeout time.Duration) []string {
	p := preflight{c: c, cli: cli, dc: to, timeout: timeout}
	cells := p.cells(ctx)
	for _, s := range c.Failover.Shards {
		p.shard(ctx, s, from, to, cells)
	}
	p.reachable(cells, c.DCs[from].TopoAddress)
	return p.warnings
}

type preflight struct {
	c        *config.Config
	cli      *clientv3.Client
	dc       string // whose etcd cli reads
	timeout  time.Duration
	warnings []string
}

func (p *preflight) warnf(format string, args ...any) {
	p.warnings = append(p.warnings, fmt.Sprintf(format, args...))
}

func (p *preflight) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	return p.cli.Get(ctx, key, opts...)
}

// cells reads every CellInfo record below the global root.
func (p *preflight) cells(ctx context.Context) map[string]vitess.CellInfo {
	root := p.c.Vitess.GlobalRoot
	resp, err := p.get(ctx, vitess.CellsDir(root), clientv3.WithPrefix())
	if err != nil {
		p.warnf("cannot list the cells below %s: %v", vitess.CellsDir(root), err)
		return nil
	}
	cells := map[string]vitess.CellInfo{}
	for _, kv := range resp.Kvs {
		cell, ok := vitess.CellOfCellInfoKey(root, string(kv.Key))
		if !ok {
			continue
		}
		ci, err := vitess.DecodeCellInfo(kv.Value)
		if err != nil {
			p.warnf("cell %s: %s: %v", cell, kv.Key, err)
			continue
		}
		cells[cell] = ci
	}
	if len(cells) == 0 {
		p.warnf("no CellInfo records below %s: Vitess cannot find any cell's topo", vitess.CellsDir(root))
	}
	return cells
}

// shard checks one configured shard's durability and --ignore-replicas against the topo.
func (p *preflight) shard(ctx context.Context, s config.Shard, from, to string, cells map[string]vitess.CellInfo) {
	name := s.Keyspace + "/" + s.Shard
	var candidates, ignored []vitess.TabletAlias
	for _, a := range s.Tablets[to] {
		if alias, err := vitess.ParseTabletAlias(a); err == nil {
			candidates = append(candidates, alias)
		}
	}
	for _, a := range s.Tablets[from] {
		if alias, err := vitess.ParseTabletAlias(a); err == nil {
			ignored = append(ignored, alias)
		}
	}
	if len(candidates) == 0 {
		return // config validation requires one; nothing to check against
	}
	graph := map[string][]vitess.TabletAlias{} // cell -> tablets of the shard there
	for _, cell := range cellsOf(candidates, ignored) {
		ci, ok := cells[cell]
		if !ok {
			p.warnf("%s: cell %s has no CellInfo record: ERS cannot read its tablets", name, cell)
			continue
		}
		key := vitess.ShardReplicationKey(ci.Root, s.Keyspace, s.Shard)
		resp, err := p.get(ctx, key)
		switch {
		case err != nil:
			p.warnf("%s: cannot read %s: %v", name, key, err)
			continue
		case len(resp.Kvs) == 0:
			p.warnf("%s: no replication graph for cell %s (%s is missing in %s's etcd)", name, cell, key, p.dc)
			continue
		}
		tablets, err := vitess.ShardReplicationTablets(resp.Kvs[0].Value)
		if err != nil {
			p.warnf("%s: %s: %v", name, key, err)
			continue
		}
		graph[cell] = tablets
	}
	inGraph := func(a vitess.TabletAlias) bool { return slices.Contains(graph[a.Cell], a) }
	for _, a := range ignored {
		if _, known := graph[a.Cell]; known && !inGraph(a) {
			p.warnf("%s: --ignore-replicas names %s, which is not in the shard's replication graph: Vitess 22 refuses ERS with \"no valid candidates\"; remove it from failover.shards", name, a)
		}
	}
	for _, cell := range cellsOf(ignored) {
		for _, a := range graph[cell] {
			if !slices.Contains(ignored, a) {
				p.warnf("%s: tablet %s of %s is not in --ignore-replicas: ERS will exit 1 with \"SetReplicationSource failed\" after promoting (topoha confirms from the Shard record); add it to failover.shards' %s list", name, a, from, from)
			}
		}
	}
	for _, a := range candidates {
		if _, known := graph[a.Cell]; known && !inGraph(a) {
			p.warnf("%s: candidate %s is not in the shard's replication graph: ERS cannot promote it", name, a)
		}
	}
	p.durability(ctx, s, name, candidates[0], graph, cellsOf(candidates))
}

// durability checks that the keyspace's durability policy can be met by the shard's tablets on the
// promoted side alone: the other side is gone when ERS runs.
func (p *preflight) durability(ctx context.Context, s config.Shard, name string, candidate vitess.TabletAlias, graph map[string][]vitess.TabletAlias, sideCells []string) {
	key := vitess.KeyspaceKey(p.c.Vitess.GlobalRoot, s.Keyspace)
	resp, err := p.get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		p.warnf("%s: cannot read the keyspace record %s (err %v): its durability policy is unknown", name, key, err)
		return
	}
	policy, err := vitess.KeyspaceDurability(resp.Kvs[0].Value)
	if err != nil {
		p.warnf("%s: %s: %v", name, key, err)
		return
	}
	var others, otherCells int
	for _, cell := range sideCells {
		for _, a := range graph[cell] {
			if a != candidate {
				others++
				if a.Cell != candidate.Cell {
					otherCells++
				}
			}
		}
	}
	switch policy {
	case "", "none":
	case "semi_sync", "semi_sync_with_rdonly_ack":
		if others == 0 {
			p.warnf("%s: keyspace %s has durability %s, but %s is the shard's only tablet on the promoted side: ERS refuses (\"will not be able to make forward progress\"); add a replica there or use durability none", name, s.Keyspace, policy, candidate)
		}
	case "cross_cell", "cross_cell_with_rdonly_ack":
		if otherCells == 0 {
			p.warnf("%s: keyspace %s has durability %s, but the promoted side has no tablet of the shard in another cell than %s: ERS refuses", name, s.Keyspace, policy, candidate.Cell)
		}
	default:
		p.warnf("%s: keyspace %s has durability policy %q, which topoha does not know: check by hand that the promoted side alone can satisfy it", name, s.Keyspace, policy)
	}
}

// reachable warns about cells whose topo address is the lost side's (fromAddress) or does not answer.
func (p *preflight) reachable(cells map[string]vitess.CellInfo, fromAddress string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var dead []string
	for cell, ci := range cells {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch {
			case fromAddress != "" && strings.Contains(ci.ServerAddress, fromAddress):
				mu.Lock()
				dead = append(dead, fmt.Sprintf("cell %s's CellInfo in %s's etcd points at %q, the other DC's etcd, which its loss takes away: ERS then fails with \"partial result\"; set mirror.cell_info_rewrite: true", cell, p.dc, ci.ServerAddress))
				mu.Unlock()
			case !anyAnswers(ci.ServerAddress, p.timeout):
				mu.Lock()
				dead = append(dead, fmt.Sprintf("cell %s's CellInfo points at %q, which does not answer: ERS fails with \"partial result\" until it does; set mirror.cell_info_rewrite: true so that every cell points at the DR etcd's copy", cell, ci.ServerAddress))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(dead)
	p.warnings = append(p.warnings, dead...)
}

// anyAnswers says whether a TCP connection to any of the comma-separated addresses opens within timeout.
func anyAnswers(addresses string, timeout time.Duration) bool {
	for _, a := range strings.Split(addresses, ",") {
		a = strings.TrimSpace(a)
		if _, rest, ok := strings.Cut(a, "://"); ok {
			a = rest
		}
		if conn, err := net.DialTimeout("tcp", a, timeout); err == nil {
			conn.Close()
			return true
		}
	}
	return false
}

// cellsOf lists the cells of the given tablets, each once, sorted.
func cellsOf(lists ...[]vitess.TabletAlias) []string {
	var cells []string
	for _, l := range lists {
		for _, a := range l {
			if !slices.Contains(cells, a.Cell) {
				cells = append(cells, a.Cell)
			}
		}
	}
	slices.Sort(cells)
	return cells
}
