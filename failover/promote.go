package failover

import (
	"context"
	"errors"
	"fmt"
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
	Confirmed bool          `json:"confirmed"` // the Shard record names Tablet as primary
	Duration  time.Duration `json:"duration_ns"`
	Error     string        `json:"error,omitempty"`
	// Output is the last attempt's combined output, truncated.
	Output string `json:"output,omitempty"`
}

// Promoter runs a promote (or switchover) command for a shard until the topo confirms the new primary.
type Promoter struct {
	// Command is the argument vector; each argument is a template over config.CommandVars.
	Command []string
	// Timeout bounds one attempt; the command is killed (its whole process group) when it passes.
	Timeout time.Duration
	// Attempts is how many times the command is run at most; Backoff is the wait before the second
	// attempt, doubled before each next one.
	Attempts int
	Backoff  time.Duration
	// Topo is the etcd the Shard records are read from (the new primary DC's); GlobalRoot its root.
	Topo       *clientv3.Client
	GlobalRoot string
	// ConfirmTimeout is how long the Shard record may take to name the new primary after the command
	// returned; ConfirmPoll how often it is read meanwhile.
	ConfirmTimeout, ConfirmPoll time.Duration
}

// Promote makes vars.Tablet the primary of vars.Keyspace/vars.Shard. The outcome is read from the Shard
// record, not the exit code: Vitess can exit non-zero after it promoted, and zero without having done it.
func (p *Promoter) Promote(ctx context.Context, vars config.CommandVars) ShardResult {
	start := time.Now()
	res := ShardResult{Keyspace: vars.Keyspace, Shard: vars.Shard, Tablet: vars.Tablet}
	want, err := vitess.ParseTabletAlias(vars.Tablet)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	argv, err := command.Render(p.Command, vars)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	backoff := p.Backoff
	var lastErr error
	for res.Attempts < p.Attempts && ctx.Err() == nil {
		if res.Attempts > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff *= 2
		}
		res.Attempts++
		actx, cancel := context.WithTimeout(ctx, p.Timeout)
		out, runErr := command.Run(actx, argv)
		cancel()
		res.Output = out
		// Whatever the exit, the Shard record says what happened.
		cctx, cancel := context.WithTimeout(ctx, p.ConfirmTimeout)
		confirmed, confirmErr := p.waitPrimary(cctx, vitess.ShardKey(p.GlobalRoot, vars.Keyspace, vars.Shard), want)
		cancel()
		if confirmed {
			res.Confirmed = true
			res.Error = ""
			break
		}
		lastErr = errors.Join(runErr, confirmErr)
	}
	if !res.Confirmed {
		if lastErr == nil {
			lastErr = ctx.Err()
		}
		res.Error = fmt.Sprintf("%s/%s: %s is not primary after %d attempt(s): %v", vars.Keyspace, vars.Shard, vars.Tablet, res.Attempts, lastErr)
	}
	res.Duration = time.Since(start)
	return res
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

// waitPrimary polls the Shard record at key until it names want, and want's own Tablet record agrees, or
// ctx ends.
func (p *Promoter) waitPrimary(ctx context.Context, key string, want vitess.TabletAlias) (bool, error) {
	var last error
	for {
		err := p.checkPrimary(ctx, key, want)
		if err == nil {
			return true, nil
		}
		if ctx.Err() != nil && last != nil {
			// The deadline cut this round short: the round before it says what was wrong.
			return false, last
		}
		last = err
		select {
		case <-ctx.Done():
			return false, last
		case <-time.After(p.ConfirmPoll):
		}
	}
}

// checkPrimary returns nil if the Shard record at key names want and want's own record agrees, or what
// does not.
func (p *Promoter) checkPrimary(ctx context.Context, key string, want vitess.TabletAlias) error {
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
	case got != want:
		return fmt.Errorf("%s names %s as primary", key, got)
	}
	if agrees, err := p.tabletAgrees(ctx, want); !agrees {
		return fmt.Errorf("%s names %s as primary, but %s", key, want, err)
	}
	return nil
}
