package failover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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

// Promoter runs one attempt of a promote (or switchover) command for a shard and reads from the topo
// whether it worked.
type Promoter struct {
	// Command is the argument vector; each argument is a template over config.CommandVars.
	Command []string
	// Timeout bounds one attempt; the command is killed (its whole process group) when it passes.
	Timeout time.Duration
	// Topo is the etcd the Shard records are read from (the new primary DC's); GlobalRoot its root.
	Topo       *clientv3.Client
	GlobalRoot string
	// ConfirmTimeout is how long the Shard record may take to name the new primary after the command
	// returned; ConfirmPoll how often it is read meanwhile.
	ConfirmTimeout, ConfirmPoll time.Duration
}

// Attempt runs the command once to make vars.Tablet the primary of vars.Keyspace/vars.Shard, and
// returns nil once the Shard record names one of candidates (with that tablet's own record agreeing).
// The outcome is read from the records, not the exit code: Vitess can exit non-zero after it promoted,
// and zero without having done it. It also returns the command's output.
func (p *Promoter) Attempt(ctx context.Context, vars config.CommandVars, candidates []string) (string, error) {
	argv, err := command.Render(p.Command, vars)
	if err != nil {
		return "", err
	}
	actx, cancel := context.WithTimeout(ctx, p.Timeout)
	out, runErr := command.Run(actx, argv)
	cancel()
	// Whatever the exit, the Shard record says what happened.
	cctx, cancel := context.WithTimeout(ctx, p.ConfirmTimeout)
	defer cancel()
	if err := p.waitPrimary(cctx, vars.Keyspace, vars.Shard, candidates); err != nil {
		return out, fmt.Errorf("%s/%s: %s is not primary: %w", vars.Keyspace, vars.Shard, vars.Tablet, errors.Join(runErr, err))
	}
	return out, nil
}

// HasPrimary returns nil if keyspace/shard's Shard record names one of candidates as its primary, and
// that tablet's own record agrees, or says what does not.
func (p *Promoter) HasPrimary(ctx context.Context, keyspace, shard string, candidates []string) error {
	key := vitess.ShardKey(p.GlobalRoot, keyspace, shard)
	resp, err := p.Topo.Get(ctx, key)
	switch {
	case err != nil:
		return fmt.Errorf("read %s: %w", key, err)
	case len(resp.Kvs) == 0:
		return fmt.Errorf("%s does not exist", key)
	}
	got, ok, err := vitess.ShardPrimary(resp.Kvs[0].Value)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", key, err)
	case !ok:
		return fmt.Errorf("%s has no primary", key)
	case !slices.ContainsFunc(candidates, func(c string) bool { a, err := vitess.ParseTabletAlias(c); return err == nil && a == got }):
		return fmt.Errorf("%s names %s as primary, not one of %s", key, got, strings.Join(candidates, ", "))
	}
	if agrees, err := p.tabletAgrees(ctx, got); !agrees {
		return fmt.Errorf("%s names %s as primary, but %w", key, got, err)
	}
	return nil
}

// tabletAgrees checks the promoted tablet's own record where the promoted side's Vitess reads it (the cell
// root its CellInfo names): a promotion whose Tablet record write went elsewhere (through a topo VIP that
// had not moved yet) leaves a primary that vtctld shows as a replica, and the next attempt writes it
// again. Without a CellInfo or a Tablet record there is nothing to check.
func (p *Promoter) tabletAgrees(ctx context.Context, tablet vitess.TabletAlias) (bool, error) {
	resp, err := p.Topo.Get(ctx, vitess.CellInfoKey(p.GlobalRoot, tablet.Cell))
	if err != nil {
		return false, fmt.Errorf("its cell's CellInfo cannot be read: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return true, nil
	}
	ci, err := vitess.DecodeCellInfo(resp.Kvs[0].Value)
	if err != nil {
		return true, nil // the pre-flight check reports it; the Shard record is the answer
	}
	key := vitess.TabletKey(ci.Root, tablet)
	if resp, err = p.Topo.Get(ctx, key); err != nil {
		return false, fmt.Errorf("%s cannot be read: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return true, nil
	}
	if primary, err := vitess.TabletIsPrimary(resp.Kvs[0].Value); err != nil || !primary {
		return false, fmt.Errorf("its own record %s does not say PRIMARY (%v)", key, err)
	}
	return true, nil
}

// waitPrimary polls until HasPrimary holds, or ctx ends.
func (p *Promoter) waitPrimary(ctx context.Context, keyspace, shard string, candidates []string) error {
	var last error
	for {
		err := p.HasPrimary(ctx, keyspace, shard, candidates)
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
		case <-time.After(p.ConfirmPoll):
		}
	}
}
