package failover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/command"
	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/vitess"
)

// ShardResult is the outcome of promoting one shard.
type ShardResult struct {
	Keyspace  string        `json:"keyspace"`
	Shard     string        `json:"shard"`
	Tablet    string        `json:"tablet"`
	Attempts  int           `json:"attempts"`
	Confirmed bool          `json:"confirmed"` // the Shard record names Tablet (or another candidate) as primary
	Duration  time.Duration `json:"duration_ns"`
	Error     string        `json:"error,omitempty"`
	// Output is the last attempt's combined output, truncated.
	Output string `json:"output,omitempty"`
}

// Promoter runs a promote (or switchover) command for a shard and reads from the topo whether it worked.
type Promoter struct {
	// Command is the argument vector; each argument is a template over config.CommandVars.
	Command []string
	// Timeout bounds one attempt; the command is killed (its whole process group) when it passes.
	Timeout time.Duration
	// Topo is the etcd the Shard records are read from (the new primary DC's); GlobalRoot its root.
	Topo       *clientv3.Client
	GlobalRoot string
	// Cells are the new primary DC's cells: a tablet of any of them as a shard's primary counts, as well
	// as its candidates (a person may have promoted another by hand).
	Cells []string
	// ConfirmTimeout is how long the Shard record may take to name the new primary after the command
	// returned; ConfirmPoll how often it is checked meanwhile when no change wakes the check earlier.
	ConfirmTimeout, ConfirmPoll time.Duration

	// view holds the Shard records, kept current by a watch (the driver runs it).
	view    *shardView
	rootsMu sync.Mutex
	roots   map[string]string // cell -> its root, from its CellInfo
}

// Run runs the command once to make vars.Tablet the primary of vars.Keyspace/vars.Shard, killed with its
// process group at Timeout, and returns its output and exit. The exit is not the outcome (Confirm reads
// that): Vitess can exit non-zero after it promoted, and zero without having done it.
func (p *Promoter) Run(ctx context.Context, vars config.CommandVars) (string, error) {
	argv, err := command.Render(p.Command, vars)
	if err != nil {
		return "", err
	}
	actx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	return command.Run(actx, argv)
}

// Confirm returns nil once, within ConfirmTimeout, the Shard record of vars.Keyspace/vars.Shard names one
// of candidates (with that tablet's own record agreeing); otherwise what is wrong, joined with runErr,
// the exit of the command Run ran.
func (p *Promoter) Confirm(ctx context.Context, vars config.CommandVars, candidates []string, runErr error) error {
	cctx, cancel := context.WithTimeout(ctx, p.ConfirmTimeout)
	defer cancel()
	if err := p.waitPrimary(cctx, vars.Keyspace, vars.Shard, candidates); err != nil {
		return fmt.Errorf("%s/%s: %s is not primary: %w", vars.Keyspace, vars.Shard, vars.Tablet, errors.Join(runErr, err))
	}
	return nil
}

// HasPrimary returns nil if keyspace/shard's Shard record names one of candidates (or a tablet of Cells)
// as its primary, and that tablet's own record agrees, or says what does not.
func (p *Promoter) HasPrimary(ctx context.Context, keyspace, shard string, candidates []string) error {
	_, err := p.hasPrimary(ctx, keyspace, shard, candidates)
	return err
}

// HasPrimaryNow is HasPrimary from a linearizable read of the Shard record instead of the watched view,
// which can lag (a watch reconnecting neither errs nor closes): the last look before a command, so that a
// primary made a moment ago, by a person or by a dead holder's reparent, is not reparented again.
func (p *Promoter) HasPrimaryNow(ctx context.Context, keyspace, shard string, candidates []string) error {
	key := vitess.ShardKey(p.GlobalRoot, keyspace, shard)
	resp, err := p.Topo.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w: %w", key, errUnread, err)
	}
	var val []byte
	if len(resp.Kvs) > 0 {
		val = resp.Kvs[0].Value
	}
	return p.judge(ctx, key, val, len(resp.Kvs) > 0, candidates)
}

// hasPrimary is HasPrimary, with a channel closed when the view of the Shard records next changes.
func (p *Promoter) hasPrimary(ctx context.Context, keyspace, shard string, candidates []string) (<-chan struct{}, error) {
	key := vitess.ShardKey(p.GlobalRoot, keyspace, shard)
	val, found, changed, err := p.view.get(key)
	if err != nil {
		return changed, fmt.Errorf("read %s: %w: %w", key, errUnread, err)
	}
	return changed, p.judge(ctx, key, val, found, candidates)
}

// judge says whether the Shard record val at key (found or not) names one of candidates, or a tablet of
// Cells, as its primary, with that tablet's own record agreeing.
func (p *Promoter) judge(ctx context.Context, key string, val []byte, found bool, candidates []string) error {
	if !found {
		return fmt.Errorf("%s does not exist", key)
	}
	got, ok, err := vitess.ShardPrimary(val)
	accepted := func(c string) bool { a, err := vitess.ParseTabletAlias(c); return err == nil && a == got }
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", key, err)
	case !ok:
		return fmt.Errorf("%s has no primary", key)
	case !slices.ContainsFunc(candidates, accepted) && !slices.Contains(p.Cells, got.Cell):
		return fmt.Errorf("%s names %s as primary, not one of %s", key, got, strings.Join(candidates, ", "))
	}
	if agrees, err := p.tabletAgrees(ctx, got); !agrees {
		return fmt.Errorf("%s names %s as primary, but %w", key, got, err)
	}
	return nil
}

// errUnread means the Shard record could not be read: whether the shard has its primary is unknown.
var errUnread = errors.New("the record is unknown")

// tabletAgrees checks the promoted tablet's own record where the promoted side's Vitess reads it (the cell
// root its CellInfo names): a promotion whose Tablet record write went elsewhere (through a topo VIP that
// had not moved yet) leaves a primary that vtctld shows as a replica, and the next attempt writes it
// again. Without a CellInfo or a Tablet record there is nothing to check.
func (p *Promoter) tabletAgrees(ctx context.Context, tablet vitess.TabletAlias) (bool, error) {
	root, err := p.cellRoot(ctx, tablet.Cell)
	if err != nil {
		return false, fmt.Errorf("its cell's CellInfo cannot be read: %w: %w", errUnread, err)
	}
	if root == "" {
		return true, nil // no CellInfo, or one the plan reports as undecodable: the Shard record is the answer
	}
	key := vitess.TabletKey(root, tablet)
	resp, err := p.Topo.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("%s cannot be read: %w: %w", key, errUnread, err)
	}
	if len(resp.Kvs) == 0 {
		return true, nil
	}
	if primary, err := vitess.TabletIsPrimary(resp.Kvs[0].Value); err != nil || !primary {
		return false, fmt.Errorf("its own record %s does not say PRIMARY (%v)", key, err)
	}
	return true, nil
}

// cellRoot returns cell's root as its CellInfo record says, read once per Promoter (a failover does not
// move cells); "" when the record is missing or undecodable.
func (p *Promoter) cellRoot(ctx context.Context, cell string) (string, error) {
	p.rootsMu.Lock()
	root, ok := p.roots[cell]
	p.rootsMu.Unlock()
	if ok {
		return root, nil
	}
	resp, err := p.Topo.Get(ctx, vitess.CellInfoKey(p.GlobalRoot, cell))
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 1 {
		if ci, err := vitess.DecodeCellInfo(resp.Kvs[0].Value); err == nil {
			root = ci.Root
		}
	}
	if root == "" {
		return "", nil // not cached: the mirror may bring the record
	}
	p.rootsMu.Lock()
	if p.roots == nil {
		p.roots = map[string]string{}
	}
	p.roots[cell] = root
	p.rootsMu.Unlock()
	return root, nil
}

// waitPrimary checks until HasPrimary holds, or ctx ends: at each change of the Shard records, and every
// ConfirmPoll (a tablet record written after its Shard record changes nothing the view sees).
func (p *Promoter) waitPrimary(ctx context.Context, keyspace, shard string, candidates []string) error {
	var last error
	for {
		changed, err := p.hasPrimary(ctx, keyspace, shard, candidates)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil && last != nil {
			// The deadline cut this round short: the round before it says what was wrong.
			return last
		}
		last = err
		select {
		case <-ctx.Done():
			return last
		case <-changed:
		case <-time.After(p.ConfirmPoll):
		}
	}
}
