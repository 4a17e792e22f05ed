package discovery

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/command"
	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/vitess"
)

// Plan says, for every shard, what a failover from one DC to the other would do now.
type Plan struct {
	From string `json:"from"`
	To   string `json:"to"`
	// ReadFrom is the DC whose etcd was read: To's, the copy a failover works from when From is lost.
	ReadFrom   string        `json:"read_from"`
	Revision   int64         `json:"revision"`
	ComputedAt time.Time     `json:"computed_at"`
	Took       time.Duration `json:"took_ns"`
	// Discovered says the shards come from the topo (failover.shards: auto), not from the config.
	Discovered bool        `json:"discovered"`
	Shards     []ShardPlan `json:"shards"`
	// Problems stop every shard's failover (a cell whose topo Vitess cannot reach, a record it cannot
	// decode); Warnings do not.
	Problems []string `json:"problems,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// ShardPlan is one shard's failover.
type ShardPlan struct {
	Keyspace string `json:"keyspace"`
	Shard    string `json:"shard"`
	// Primary is the current primary, from the Shard record ("" when it names none).
	Primary string `json:"primary"`
	// Tablet is the tablet the failover would promote ("" when there is none).
	Tablet string `json:"tablet"`
	// Candidates are the shard's tablets in To that may be promoted, Tablet first.
	Candidates []string `json:"candidates"`
	// IgnoreTablets are the shard's tablets in From ({{.IgnoreTablets}}): ERS must not wait for them.
	IgnoreTablets []string `json:"ignore_tablets"`
	// Command is promote_command rendered for this shard.
	Command []string `json:"command"`
	// Problems say why this shard cannot fail over; empty when it can.
	Problems []string `json:"problems"`
}

// ID is keyspace/shard.
func (s ShardPlan) ID() string { return s.Keyspace + "/" + s.Shard }

// Ready says whether s can fail over (the plan's own problems aside).
func (s ShardPlan) Ready() bool { return s.Tablet != "" && len(s.Problems) == 0 }

// Ready says whether a failover now would promote every shard: there are shards, none has a problem,
// and the plan has none of its own.
func (p *Plan) Ready() bool {
	_, notReady := p.Counts()
	return notReady == 0 && len(p.Problems) == 0
}

// Counts returns how many shards can fail over and how many cannot. A problem of the plan's own stops
// every shard.
func (p *Plan) Counts() (ready, notReady int) {
	for _, s := range p.Shards {
		if s.Ready() && len(p.Problems) == 0 {
			ready++
		} else {
			notReady++
		}
	}
	return ready, notReady
}

// Input is what a plan is computed from.
type Input struct {
	Config *config.Config
	// Client reads To's etcd.
	Client   *clientv3.Client
	From, To string
	// Epoch is the epoch the failover would move to, for the rendered command.
	Epoch int64
	// Timeout bounds each read, and each connection to a cell's topo.
	Timeout time.Duration
	// CheckCells also checks that every cell's topo address answers (a TCP connection each, at once).
	// The epoch bump's plan leaves it out: the lost DC's address does not answer, and the bump must not
	// wait for that to be found again. The converger's pre-flight, which only warns, includes it.
	CheckCells bool
}

// Compute reads the topology from in.Client's etcd and plans a failover from in.From to in.To. It fails
// only when the etcd cannot be read.
func Compute(ctx context.Context, in Input) (*Plan, error) {
	start := time.Now()
	c := in.Config
	topo, err := Read(ctx, in.Client, c.Vitess.GlobalRoot, in.Timeout)
	if err != nil {
		return nil, fmt.Errorf("read the topo in %s's etcd: %w", in.To, err)
	}
	p := build(c, topo, in)
	if in.CheckCells {
		p.Problems = append(p.Problems, checkCells(ctx, topo, c.DCs[in.From].TopoAddress, in.To, in.Timeout)...)
	}
	p.ComputedAt, p.Took = time.Now().UTC(), time.Since(start)
	return p, nil
}

// build plans from topo without any I/O.
func build(c *config.Config, topo *Topology, in Input) *Plan {
	p := &Plan{From: in.From, To: in.To, ReadFrom: in.To, Revision: topo.Revision, Discovered: c.Failover.Shards.Auto,
		Problems: slices.Clone(topo.Problems), Warnings: slices.Clone(topo.Notes)}
	pl := planner{c: c, topo: topo, from: in.From, to: in.To, plan: p, dcOf: map[string]string{}, warned: map[string]bool{}}
	for _, dc := range c.DCNames() {
		for _, cell := range c.DCs[dc].Cells {
			pl.dcOf[cell] = dc
		}
	}
	// Parsed, so that dc2-101 and dc2-0000000101 are the same tablet, as for Vitess.
	pl.never = map[vitess.TabletAlias]bool{}
	for _, a := range c.Failover.NeverPromote {
		if alias, err := vitess.ParseTabletAlias(a); err == nil {
			pl.never[alias] = true
		}
	}
	if c.Failover.Shards.Auto {
		pl.discovered()
	} else {
		pl.listed()
	}
	if len(p.Shards) == 0 {
		// A failover would promote nothing: a wrong vitess.global_root, a copy the mirror has not made, a
		// scope that matches nothing. Never "all ready".
		where := "failover.shards lists none"
		if c.Failover.Shards.Auto {
			where = fmt.Sprintf("none in %s's etcd below %s/keyspaces/ within failover.discovery.keyspaces: check vitess.global_root and the mirror", in.To, c.Vitess.GlobalRoot)
		}
		p.Problems = append(p.Problems, "no shard to fail over: "+where)
	}
	for i := range p.Shards {
		p.Shards[i].Command = pl.command(p.Shards[i], in.Epoch)
	}
	return p
}

type planner struct {
	c        *config.Config
	topo     *Topology
	from, to string
	plan     *Plan
	dcOf     map[string]string // cell -> DC
	warned   map[string]bool   // keyspaces warned about: once each, not once per shard
	never    map[vitess.TabletAlias]bool
}

func (pl *planner) warnf(format string, args ...any) {
	pl.plan.Warnings = append(pl.plan.Warnings, fmt.Sprintf(format, args...))
}

// warnKeyspace warns about a keyspace once, however many of its shards meet the problem.
func (pl *planner) warnKeyspace(keyspace, format string, args ...any) {
	if !pl.warned[keyspace] {
		pl.warned[keyspace] = true
		pl.warnf(format, args...)
	}
}

// discovered plans every shard of the topo in discovery.keyspaces' scope.
func (pl *planner) discovered() {
	for _, cell := range slices.Sorted(maps.Keys(pl.topo.Cells)) {
		if _, ok := pl.dcOf[cell]; !ok {
			pl.warnf("cell %s is in no DC's cells (dcs.<dc>.cells): its tablets are neither candidates nor ignored; add it to the cells of the DC it runs in", cell)
		}
	}
	scope := pl.c.Failover.Discovery.Keyspaces
	for _, entry := range scope {
		ks, shard, hasShard := strings.Cut(entry, "/")
		if !slices.ContainsFunc(pl.topo.Shards, func(s *Shard) bool { return s.Keyspace == ks && (!hasShard || s.Name == shard) }) {
			pl.warnf("failover.discovery.keyspaces names %s, which the topo in %s's etcd does not have: check its spelling", entry, pl.to)
		}
	}
	for _, s := range pl.topo.Shards {
		if !InScope(scope, s) {
			continue
		}
		pl.plan.Shards = append(pl.plan.Shards, pl.discoveredShard(s))
	}
}

// InScope says whether discovery.keyspaces (scope) covers shard s: an empty scope covers every shard.
func InScope(scope []string, s *Shard) bool {
	return len(scope) == 0 || slices.ContainsFunc(scope, func(e string) bool { return e == s.Keyspace || e == s.ID() })
}

// discoveredShard applies the candidate rule (docs/operations.md, "Shard discovery") to one shard.
func (pl *planner) discoveredShard(s *Shard) ShardPlan {
	sp := ShardPlan{Keyspace: s.Keyspace, Shard: s.Name, Primary: aliasString(s.Primary), Candidates: []string{}, IgnoreTablets: []string{}, Problems: []string{}}
	if s.Err != nil {
		sp.Problems = append(sp.Problems, fmt.Sprintf("its Shard record cannot be decoded (%v): Vitess cannot reparent it either", s.Err))
		return sp
	}
	sp.Problems = append(sp.Problems, s.Problems...)
	var side, passed []string // the shard's tablets on To's side; why some are not candidates
	var candidates []vitess.Tablet
	for _, cell := range slices.Sorted(maps.Keys(s.Graph)) {
		// By uid: the graph's order is the order tablets started in, which says nothing.
		tablets := slices.SortedFunc(slices.Values(s.Graph[cell]), func(a, b vitess.TabletAlias) int { return cmp.Compare(a.UID, b.UID) })
		for _, a := range tablets {
			switch pl.dcOf[cell] {
			case pl.from:
				sp.IgnoreTablets = append(sp.IgnoreTablets, a.String())
			case pl.to:
				t, ok := pl.topo.Tablets[a]
				switch {
				case !ok:
					passed = append(passed, a.String()+" has no Tablet record")
					pl.warnf("%s: %s is in cell %s's replication graph but has no Tablet record: skipped", s.ID(), a, cell)
				case t.Keyspace != s.Keyspace || t.Shard != s.Name:
					passed = append(passed, fmt.Sprintf("%s's record says it serves %s/%s", a, t.Keyspace, t.Shard))
				case pl.never[a]:
					side = append(side, a.String())
					passed = append(passed, a.String()+" is in failover.never_promote")
				case t.Type == vitess.TypeReplica || (t.Type == vitess.TypePrimary && a == s.Primary):
					side = append(side, a.String())
					candidates = append(candidates, t)
				default:
					side = append(side, a.String())
					passed = append(passed, fmt.Sprintf("%s is %s", a, t.Type))
				}
			}
		}
	}
	if len(candidates) == 0 {
		why := "no tablet of the shard there"
		if len(passed) > 0 {
			why = strings.Join(passed, ", ")
		}
		sp.Problems = append(sp.Problems, fmt.Sprintf("no REPLICA in %s's cells (%s): %s", pl.to, strings.Join(pl.c.DCs[pl.to].Cells, ", "), why))
		return sp
	}
	cellRank := func(cell string) int { return slices.Index(pl.c.DCs[pl.to].Cells, cell) }
	sort.SliceStable(candidates, func(i, j int) bool {
		a, b := candidates[i].Alias, candidates[j].Alias
		if (a == s.Primary) != (b == s.Primary) {
			return a == s.Primary // already primary: nothing to move
		}
		if cellRank(a.Cell) != cellRank(b.Cell) {
			return cellRank(a.Cell) < cellRank(b.Cell)
		}
		return a.UID < b.UID
	})
	ks := pl.topo.Keyspaces[s.Keyspace]
	chosen := -1
	var durability string
	for i, c := range candidates {
		if durability = pl.durabilityProblem(s.Keyspace, ks, c.Alias, side); durability == "" {
			chosen = i
			break
		}
	}
	if chosen < 0 {
		chosen = 0
		sp.Problems = append(sp.Problems, pl.durabilityProblem(s.Keyspace, ks, candidates[0].Alias, side))
	}
	candidates[0], candidates[chosen] = candidates[chosen], candidates[0]
	for _, c := range candidates {
		sp.Candidates = append(sp.Candidates, c.Alias.String())
	}
	sp.Tablet = sp.Candidates[0]
	return sp
}

// durabilityProblem says why the keyspace's durability policy cannot be met when candidate is promoted
// with only the other tablets on the promoted side (the other side is gone); "" when it can.
func (pl *planner) durabilityProblem(keyspace string, ks Keyspace, candidate vitess.TabletAlias, side []string) string {
	if ks.Err != nil {
		// ERS reads the keyspace's durability policy first and fails without it.
		return fmt.Sprintf("keyspace %s: %v: ERS cannot read its durability policy and refuses", keyspace, ks.Err)
	}
	acks := func(rdonly, crossCell bool) int {
		n := 0
		for _, s := range side {
			a, err := vitess.ParseTabletAlias(s)
			if err != nil || a == candidate || (crossCell && a.Cell == candidate.Cell) {
				continue
			}
			t := pl.topo.Tablets[a]
			if t.Type == vitess.TypeReplica || t.Type == vitess.TypePrimary || (rdonly && t.Type == vitess.TypeRdonly) {
				n++
			}
		}
		return n
	}
	switch p := ks.Durability; p {
	case "", "none":
	case "semi_sync", "semi_sync_with_rdonly_ack":
		if acks(p == "semi_sync_with_rdonly_ack", false) == 0 {
			return fmt.Sprintf("keyspace %s has durability %s, but %s would have no tablet on %s's side to acknowledge its writes: ERS refuses (\"will not be able to make forward progress\"); add a REPLICA in %s or use durability none", keyspace, p, candidate, pl.to, pl.to)
		}
	case "cross_cell", "cross_cell_with_rdonly_ack":
		if acks(p == "cross_cell_with_rdonly_ack", true) == 0 {
			return fmt.Sprintf("keyspace %s has durability %s, but %s's side has no tablet of the shard in a cell other than %s to acknowledge: ERS refuses", keyspace, p, pl.to, candidate.Cell)
		}
	default:
		pl.warnKeyspace(keyspace, "keyspace %s has durability policy %q, which topoha does not know: check by hand that %s's tablets alone can satisfy it", keyspace, p, pl.to)
	}
	return ""
}

// listed plans the shards of failover.shards: the tablets are the config's; the topo checks them.
func (pl *planner) listed() {
	for _, s := range pl.c.Failover.Shards.List {
		sp := ShardPlan{Keyspace: s.Keyspace, Shard: s.Shard, Candidates: slices.Clone(s.Tablets[pl.to]),
			IgnoreTablets: slices.Clone(s.Tablets[pl.from]), Problems: []string{}}
		if len(sp.Candidates) > 0 {
			sp.Tablet = sp.Candidates[0]
		}
		if sp.IgnoreTablets == nil {
			sp.IgnoreTablets = []string{}
		}
		i := slices.IndexFunc(pl.topo.Shards, func(t *Shard) bool { return t.Keyspace == s.Keyspace && t.Name == s.Shard })
		if i < 0 {
			sp.Problems = append(sp.Problems, fmt.Sprintf("no Shard record in %s's etcd: Vitess does not know this shard; check failover.shards", pl.to))
			pl.plan.Shards = append(pl.plan.Shards, sp)
			continue
		}
		ts := pl.topo.Shards[i]
		sp.Primary = aliasString(ts.Primary)
		if ts.Err != nil {
			sp.Problems = append(sp.Problems, fmt.Sprintf("its Shard record cannot be decoded (%v)", ts.Err))
		}
		sp.Problems = append(sp.Problems, ts.Problems...)
		pl.checkListed(&sp, ts)
		pl.plan.Shards = append(pl.plan.Shards, sp)
	}
}

// checkListed compares a listed shard's tablets with its replication graph: what ERS would refuse.
func (pl *planner) checkListed(sp *ShardPlan, ts *Shard) {
	parse := func(list []string) []vitess.TabletAlias {
		var out []vitess.TabletAlias
		for _, s := range list {
			if a, err := vitess.ParseTabletAlias(s); err == nil {
				out = append(out, a)
			}
		}
		return out
	}
	candidates, ignored := parse(sp.Candidates), parse(sp.IgnoreTablets)
	inGraph := func(a vitess.TabletAlias) (known, in bool) {
		tablets, known := ts.Graph[a.Cell]
		return known, slices.Contains(tablets, a)
	}
	for _, a := range ignored {
		if known, in := inGraph(a); known && !in {
			sp.Problems = append(sp.Problems, fmt.Sprintf("--ignore-replicas names %s, which is not in the shard's replication graph: Vitess 22 refuses ERS with \"no valid candidates\"; remove it from failover.shards", a))
		}
	}
	for _, cell := range cellsOf(ignored) {
		for _, a := range ts.Graph[cell] {
			if !slices.Contains(ignored, a) {
				sp.Problems = append(sp.Problems, fmt.Sprintf("tablet %s of %s is not in --ignore-replicas: ERS exits 1 with \"SetReplicationSource failed\" after promoting; add it to failover.shards' %s list", a, pl.from, pl.from))
			}
		}
	}
	var side []string
	for _, cell := range cellsOf(candidates) {
		if _, ok := ts.Graph[cell]; !ok {
			sp.Problems = append(sp.Problems, fmt.Sprintf("no replication graph for cell %s in %s's etcd: ERS cannot read the shard's tablets there", cell, pl.to))
		}
		for _, a := range ts.Graph[cell] {
			side = append(side, a.String())
		}
	}
	for _, a := range candidates {
		if known, in := inGraph(a); known && !in {
			sp.Problems = append(sp.Problems, fmt.Sprintf("candidate %s is not in the shard's replication graph: ERS cannot promote it", a))
		}
	}
	if len(candidates) > 0 {
		if t, ok := pl.topo.Tablets[candidates[0]]; ok && t.Type != vitess.TypeReplica && t.Type != vitess.TypePrimary {
			sp.Problems = append(sp.Problems, fmt.Sprintf("%s, the first listed, is %s: ERS promotes only a REPLICA; list another first", candidates[0], t.Type))
		}
		if why := pl.durabilityProblem(ts.Keyspace, pl.topo.Keyspaces[ts.Keyspace], candidates[0], side); why != "" {
			sp.Problems = append(sp.Problems, why)
		}
	}
}

// command renders promote_command for s.
func (pl *planner) command(s ShardPlan, epoch int64) []string {
	vars := config.CommandVars{Keyspace: s.Keyspace, Shard: s.Shard, Tablet: s.Tablet, IgnoreTablets: strings.Join(s.IgnoreTablets, ","),
		Vtctld: pl.c.DCs[pl.to].Vtctld, DC: pl.to, OldDC: pl.from, Epoch: epoch, Timeout: pl.c.Failover.PromoteTimeout.String()}
	argv, err := command.Render(pl.c.Failover.PromoteCommand, vars)
	if err != nil {
		return []string{"cannot render failover.promote_command: " + err.Error()}
	}
	return argv
}

// checkCells returns a problem for each cell whose topo address is the lost side's (fromAddress) or does
// not answer: ERS then fails with "partial result".
func checkCells(ctx context.Context, topo *Topology, fromAddress, to string, timeout time.Duration) []string {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var dead []string
	for cell, ci := range topo.Cells {
		wg.Go(func() {
			var why string
			switch {
			case fromAddress != "" && slices.ContainsFunc(addresses(ci.ServerAddress), func(a string) bool { return slices.Contains(addresses(fromAddress), a) }):
				why = fmt.Sprintf("cell %s's CellInfo in %s's etcd points at %q, the other DC's etcd, which its loss takes away: ERS then fails with \"partial result\"; set mirror.cell_info_rewrite: true", cell, to, ci.ServerAddress)
			case !anyAnswers(ctx, ci.ServerAddress, timeout):
				why = fmt.Sprintf("cell %s's CellInfo points at %q, which does not answer: ERS fails with \"partial result\" until it does; set mirror.cell_info_rewrite: true so that every cell points at the DR etcd's copy", cell, ci.ServerAddress)
			default:
				return
			}
			mu.Lock()
			dead = append(dead, why)
			mu.Unlock()
		})
	}
	wg.Wait()
	sort.Strings(dead)
	return dead
}

// addresses splits a comma-separated list of etcd addresses (host:port, or URLs) into host:port.
func addresses(list string) []string {
	var out []string
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if _, rest, ok := strings.Cut(a, "://"); ok {
			a = rest
		}
		if a != "" {
			out = append(out, strings.TrimSuffix(a, "/"))
		}
	}
	return out
}

// anyAnswers says whether a TCP connection to any of the comma-separated addresses opens within timeout
// (and before ctx ends).
func anyAnswers(ctx context.Context, list string, timeout time.Duration) bool {
	d := net.Dialer{Timeout: timeout}
	for _, a := range addresses(list) {
		if conn, err := d.DialContext(ctx, "tcp", a); err == nil {
			conn.Close()
			return true
		}
	}
	return false
}

// cellsOf lists the cells of the given tablets, each once, sorted.
func cellsOf(tablets []vitess.TabletAlias) []string {
	var cells []string
	for _, a := range tablets {
		if !slices.Contains(cells, a.Cell) {
			cells = append(cells, a.Cell)
		}
	}
	sort.Strings(cells)
	return cells
}

func aliasString(a vitess.TabletAlias) string {
	if a == (vitess.TabletAlias{}) {
		return ""
	}
	return a.String()
}
