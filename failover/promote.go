package failover

import (
	"context"
	"errors"
	"fmt"
	"path"
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

// Promoter runs one attempt of a promote (or switchover) command for a shard and reads from the topo
// whether it worked. Its reads of the Shard records are shared: however many shards wait, the records
// are read with one range read per ConfirmPoll.
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
	// returned; ConfirmPoll how often it is read meanwhile. ReadTimeout bounds each read.
	ConfirmTimeout, ConfirmPoll, ReadTimeout time.Duration

	mu     sync.Mutex
	readAt time.Time
	shards map[string][]byte // Shard record key -> value, as last read
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
	if err := p.waitPrimary(cctx, vars.Keyspace, vars.Shard, candidates, time.Now()); err != nil {
		return out, fmt.Errorf("%s/%s: %s is not primary: %w", vars.Keyspace, vars.Shard, vars.Tablet, errors.Join(runErr, err))
	}
	return out, nil
}

// HasPrimary returns nil if keyspace/shard's Shard record names one of candidates (or a tablet of Cells)
// as its primary, and that tablet's own record agrees, or says what does not. The Shard record is read
// at most ConfirmPoll ago.
func (p *Promoter) HasPrimary(ctx context.Context, keyspace, shard string, candidates []string) error {
	return p.hasPrimary(ctx, keyspace, shard, candidates, time.Time{})
}

// hasPrimary is HasPrimary from Shard records read after since.
func (p *Promoter) hasPrimary(ctx context.Context, keyspace, shard string, candidates []string, since time.Time) error {
	key := vitess.ShardKey(p.GlobalRoot, keyspace, shard)
	val, found, err := p.shardRecord(ctx, key, since)
	switch {
	case err != nil:
		return fmt.Errorf("read %s: %w", key, err)
	case !found:
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

// shardRecord returns the Shard record at key from one range read of every Shard record, made after
// since and at most ConfirmPoll ago: the attempts waiting at once share it.
func (p *Promoter) shardRecord(ctx context.Context, key string, since time.Time) ([]byte, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shards == nil || !p.readAt.After(since) || time.Since(p.readAt) >= p.ConfirmPoll {
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, p.ReadTimeout)
		resp, err := p.Topo.Get(rctx, path.Join(p.GlobalRoot, "keyspaces")+"/", clientv3.WithPrefix())
		cancel()
		if err != nil {
			return nil, false, err
		}
		p.shards = make(map[string][]byte, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			if strings.HasSuffix(string(kv.Key), "/Shard") {
				p.shards[string(kv.Key)] = kv.Value
			}
		}
		p.readAt = start
	}
	val, ok := p.shards[key]
	return val, ok, nil
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

// waitPrimary polls until the Shard records read after since say HasPrimary holds, or ctx ends.
func (p *Promoter) waitPrimary(ctx context.Context, keyspace, shard string, candidates []string, since time.Time) error {
	var last error
	for {
		err := p.hasPrimary(ctx, keyspace, shard, candidates, since)
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
