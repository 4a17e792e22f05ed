package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/internal/etcdrec"
	"github.com/topoha/topoha/metrics"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/vitess"
)

// ErrStale means the epoch bump was refused: the primary record moved since it was read, or a fence (the
// leader's term) no longer holds. Nothing was done; the caller must re-read the facts.
var ErrStale = errors.New("failover refused by etcd: the primary record changed or this controller is no longer the leader")

// ExecutorConfig configures an Executor.
type ExecutorConfig struct {
	Config *config.Config
	// Clients has a client for each DC's etcd.
	Clients map[string]*clientv3.Client
	Logger  *slog.Logger
	// Events records each step; without it steps are only logged.
	Events  *events.Recorder
	Metrics *metrics.Metrics
}

// Executor carries out failover decisions, each step recorded in its Result.
type Executor struct {
	cfg ExecutorConfig
	log *slog.Logger
	ev  *events.Recorder
}

// NewExecutor returns an Executor for cfg.
func NewExecutor(cfg ExecutorConfig) (*Executor, error) {
	if cfg.Config == nil || len(cfg.Clients) != 2 {
		return nil, errors.New("failover: Config and a client for each of the two DCs are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Events == nil {
		cfg.Events = events.LogOnly(cfg.Logger)
	}
	return &Executor{cfg: cfg, log: cfg.Logger, ev: cfg.Events}, nil
}

// Result records what a failover did.
type Result struct {
	Decision Decision `json:"decision"`
	// Outcome is ResultSuccess, ResultPartial or ResultFailed.
	Outcome    Outcome       `json:"result"`
	Epoch      int64         `json:"epoch"`
	StartedAt  time.Time     `json:"started_at"`
	FinishedAt time.Time     `json:"finished_at"`
	OldSide    string        `json:"old_side_record"` // what became of the record in the old primary's etcd
	Locks      []string      `json:"locks_deleted"`
	Shards     []ShardResult `json:"shards"`
	Hooks      []string      `json:"hooks,omitempty"`
	// ConvergedAt is when every shard had its primary in the new primary DC; zero until then. FinishedAt
	// is when every shard had had its first attempts and the result was first recorded.
	ConvergedAt time.Time `json:"converged_at,omitzero"`
	// Warnings are the pre-flight checks' findings (see Preflight), read just before the promotions.
	Warnings []string `json:"warnings,omitempty"`
	Errors   []string `json:"errors,omitempty"`
}

// Outcome is how a failover ended: every shard confirmed, some, or none (or before_promote refused).
type Outcome string

const (
	ResultSuccess Outcome = "success"
	ResultPartial Outcome = "partial"
	ResultFailed  Outcome = "failed"
)

// outcome classifies a finished failover by its promotions.
func (r *Result) outcome(promoted bool) Outcome {
	failed := len(r.FailedShards())
	switch {
	case !promoted || (failed > 0 && failed == len(r.Shards)):
		return ResultFailed
	case failed > 0:
		return ResultPartial
	}
	return ResultSuccess
}

// FailedShards lists the shards whose promotion was not confirmed.
func (r *Result) FailedShards() []string {
	var out []string
	for _, s := range r.Shards {
		if !s.Confirmed {
			out = append(out, s.Keyspace+"/"+s.Shard)
		}
	}
	return out
}

// ResultObserved is what one etcd holds at the last failover's key.
type ResultObserved = etcdrec.Observed[Result]

// decodeResult accepts a result only with the epoch it moved the primary to.
var decodeResult = etcdrec.JSON("failover result", func(r *Result) bool { return r.Epoch > 0 && !r.StartedAt.IsZero() })

// ReadResult reads the Result the last failover saved at key (keys.Layout.LastFailover) in cli's etcd.
func ReadResult(ctx context.Context, cli *clientv3.Client, key string) ResultObserved {
	return etcdrec.Read(ctx, cli, "failover result", key, decodeResult)
}

// Execute starts the failover d: it bumps the epoch in the new primary's etcd, only if the record there
// is still seen and every fence holds, and records the failover's progress in the same transaction. The
// rest (lock purge, before_promote, the promotions, after_failover, the result) is the Converger's, under
// the convergence lock, so that it finishes whoever dies. With ErrStale nothing was done.
func (x *Executor) Execute(ctx context.Context, d Decision, seen primary.Observed, fence ...clientv3.Cmp) (*Progress, error) {
	return x.execute(ctx, d, seen, nil, fence...)
}

// Switchover starts a planned decision: the old primary's etcd is told first (so that its /primary
// stops answering 200 and the topo VIP moves away from it), drain waits until the mirror has applied
// everything the old primary holds, and only then does the epoch move in the new primary's etcd; the
// Converger runs switchover_command (PlannedReparentShard) for every shard. Once the old side is told, the
// switchover is committed: a drain that fails is reported, not undone.
func (x *Executor) Switchover(ctx context.Context, d Decision, seen primary.Observed, drain func(context.Context) error, fence ...clientv3.Cmp) (*Progress, error) {
	return x.execute(ctx, d, seen, drain, fence...)
}

func (x *Executor) execute(ctx context.Context, d Decision, seen primary.Observed, drain func(context.Context) error, fence ...clientv3.Cmp) (*Progress, error) {
	cfg := x.cfg.Config
	target := x.cfg.Clients[d.To]
	startedAt := time.Now().UTC()
	key := cfg.Keys().Primary()
	rec := primary.Record{DC: d.To, Epoch: d.NewEpoch, ChangedAt: startedAt, Reason: string(d.Trigger) + ": " + d.Reason}
	var errs []error
	var oldSide string

	if seen.Record != nil && seen.Record.Epoch >= d.NewEpoch {
		// Someone already moved the primary to this epoch or beyond: doing it again would promote twice.
		return nil, x.stale()
	}
	undo := func() {}
	if drain != nil {
		// The old side is told before the epoch moves where the fence lives: check the fence first.
		if err := x.checkFence(ctx, target, fence); err != nil {
			if errors.Is(err, ErrStale) {
				return nil, x.stale()
			}
			return nil, err
		}
		prev, told := recordOnOldSide(ctx, cfg, x.cfg.Clients[d.From], rec)
		if told != "written" {
			return nil, fmt.Errorf("switchover to %s: the old primary %s could not be told (%s); nothing was changed", d.To, d.From, told)
		}
		oldSide = told
		undo = func() { x.restoreOldSide(ctx, d.From, key, rec, prev) }
		x.ev.Info(events.KindFailover, "switchover: the old primary knows; draining the mirror", "from", d.From, "epoch", d.NewEpoch)
		if err := drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("switchover: the mirror was not drained, writes the old primary took meanwhile may be missing: %w", err))
		}
	}
	// The plan is read afresh from the new primary's etcd (the copy, when the old primary is lost), after
	// a switchover's drain: a shard the old primary created just before is in it.
	plan, err := discovery.Compute(ctx, discovery.Input{Config: cfg, Client: target, From: d.From, To: d.To, Epoch: d.NewEpoch, Timeout: cfg.RequestTimeout})
	if err != nil {
		undo()
		err = fmt.Errorf("plan the failover to %s: %w; nothing was done", d.To, err)
		x.ev.Error(events.KindFailover, "failover: the epoch was not bumped", "to", d.To, "err", err)
		return nil, err
	}
	if len(plan.Shards) == 0 {
		// The epoch still moves (the topo's direction must follow the DC that is up), but nothing will
		// be promoted, and everyone should know.
		x.ev.Error(events.KindFailover, "failover: the plan has no shard: no tablet will be promoted", "to", d.To, "problems", strings.Join(plan.Problems, "; "))
	}
	p := NewProgress(cfg, d, startedAt, plan)
	p.OldSide = oldSide
	if ok, err := x.bump(ctx, target, key, rec, &p, seen, fence); !ok {
		undo()
		if err != nil {
			err = fmt.Errorf("bump the epoch to %d in %s's etcd: %w", d.NewEpoch, d.To, err)
			x.ev.Error(events.KindFailover, "failover: the epoch was not bumped; nothing was done", "to", d.To, "err", err)
			return nil, err
		}
		return nil, x.stale()
	}
	x.ev.Info(events.KindFailover, "failover: epoch bumped; the old direction of the mirror is fenced", "from", d.From, "to", d.To,
		"epoch", d.NewEpoch, "trigger", d.Trigger, "reason", d.Reason, "shards", len(p.Targets))
	return &p, errors.Join(errs...)
}

// waitTopoVIP waits, at most promote_timeout, until a new connection to vitess.topo_vip reaches the etcd
// cluster of DC to: the tablets a reparent promotes and demotes write their records through that VIP,
// and what lands in the other DC's etcd is lost to the copy. Not reaching it is a warning (returned), not
// a stop.
func waitTopoVIP(ctx context.Context, cfg *config.Config, ev *events.Recorder, to string, target *clientv3.Client) error {
	if cfg.Vitess.TopoVIP == "" {
		return nil
	}
	start := time.Now()
	err := func() error {
		rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
		resp, err := target.Get(rctx, cfg.Keys().Probe(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			return fmt.Errorf("read %s's cluster ID: %w", to, err)
		}
		want := resp.Header.ClusterId
		cc, err := cfg.EtcdClientConfig(to)
		if err != nil {
			return err
		}
		cc.Endpoints = []string{cfg.Vitess.TopoVIP}
		wctx, cancel := context.WithTimeout(ctx, cfg.Failover.PromoteTimeout)
		defer cancel()
		for {
			// A fresh connection each time: one opened before the VIP moved may still lead to the old side.
			// Each is a probe of the VIP, bounded like one: the VIP may still lead to the lost DC.
			if got, err := clusterID(wctx, cc, cfg.Keys().Probe(), cfg.Health.Timeout); err == nil && got == want {
				return nil
			}
			select {
			case <-wctx.Done():
				return fmt.Errorf("vitess.topo_vip %s does not lead to %s's etcd after %s", cfg.Vitess.TopoVIP, to, cfg.Failover.PromoteTimeout)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	if err != nil {
		err = fmt.Errorf("promoted although the topo VIP may not lead to the new primary; tablets may have written their new types into the other DC's etcd: %w", err)
		ev.Warn(events.KindFailover, "failover: "+err.Error())
		return err
	}
	ev.Info(events.KindFailover, "failover: the topo VIP leads to the new primary's etcd", "to", to, "waited", time.Since(start).Round(time.Millisecond))
	return nil
}

// clusterID returns the cluster ID of the etcd that a new client of cc reaches.
func clusterID(ctx context.Context, cc clientv3.Config, key string, timeout time.Duration) (uint64, error) {
	cc.DialTimeout = timeout
	cli, err := clientv3.New(cc)
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cli.Get(ctx, key, clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.ClusterId, nil
}

// stale counts and returns ErrStale.
func (x *Executor) stale() error {
	x.cfg.Metrics.FenceRejected("failover")
	x.ev.Warn(events.KindFailover, "failover refused by etcd: the primary record moved or this controller no longer leads")
	return ErrStale
}

// bump writes rec into the new primary's etcd if the record there is still seen and the fence holds. In
// the same transaction it deletes the mirror checkpoint there: it dates from when that etcd was the DR
// side, and a mirror that resumed from it after a later failback would skip what this side wrote as
// primary. The failover's progress record starts in it too: the epoch never moves without the record of
// what is left to do. A write whose outcome is unknown (timeout) is read back: committed is committed.
func (x *Executor) bump(ctx context.Context, target *clientv3.Client, key string, rec primary.Record, p *Progress, seen primary.Observed, fence []clientv3.Cmp) (bool, error) {
	l := x.cfg.Config.Keys()
	start, err := p.startOps(l)
	if err != nil {
		return false, err
	}
	rctx, cancel := context.WithTimeout(ctx, x.cfg.Config.RequestTimeout)
	ok, err := primary.WriteWith(rctx, target, key, rec, seen, fence, append([]clientv3.Op{clientv3.OpDelete(l.MirrorCheckpoint())}, start...))
	cancel()
	if err != nil && primary.Holds(ctx, target, key, rec, x.cfg.Config.RequestTimeout) {
		x.log.Warn("failover: the epoch bump timed out but committed", "err", err)
		return true, nil
	}
	return ok, err
}

// recordOnOldSide also writes the new record into the old primary's etcd when it answers, so that it
// learns of its demotion at once; when it does not (the usual case) it learns on return. It returns
// what the old side held before, and "written" or why not.
func recordOnOldSide(ctx context.Context, cfg *config.Config, cli *clientv3.Client, rec primary.Record) (primary.Observed, string) {
	// The old primary is usually the DC that was lost: it gets a probe's time, not a request's.
	timeout := cfg.Health.Timeout
	key := cfg.Keys().Primary()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	prev := primary.Read(rctx, cli, key)
	if prev.Err != nil && prev.ModRevision == 0 {
		return prev, "not written: " + prev.Err.Error()
	}
	if prev.Record != nil && prev.Record.Epoch >= rec.Epoch {
		return prev, fmt.Sprintf("not written: it holds epoch %d", prev.Record.Epoch)
	}
	ok, err := primary.Write(rctx, cli, key, rec, prev)
	if ok || (err != nil && primary.Holds(ctx, cli, key, rec, timeout)) {
		return prev, "written"
	}
	return prev, fmt.Sprintf("not written: %v", err)
}

// restoreOldSide puts back what the old primary's record held before a switchover told it, when the
// switchover could not move the epoch on the new side: the two records must not disagree.
func (x *Executor) restoreOldSide(ctx context.Context, dc, key string, told primary.Record, prev primary.Observed) {
	ctx, cancel := context.WithTimeout(ctx, x.cfg.Config.RequestTimeout)
	defer cancel()
	cli := x.cfg.Clients[dc]
	now := primary.Read(ctx, cli, key)
	if now.Record == nil || now.Record.Epoch != told.Epoch || now.Record.DC != told.DC {
		return
	}
	var err error
	if prev.Record != nil {
		_, err = primary.Write(ctx, cli, key, *prev.Record, now)
	} else {
		_, err = cli.Txn(ctx).If(primary.Unchanged(key, now)).Then(clientv3.OpDelete(key)).Commit()
	}
	x.ev.Warn(events.KindFailover, "switchover: the epoch could not move on the new side; the old primary's record was restored", "dc", dc, "err", err)
}

// checkFence returns ErrStale unless every fence condition holds in cli's etcd now.
func (x *Executor) checkFence(ctx context.Context, cli *clientv3.Client, fence []clientv3.Cmp) error {
	ctx, cancel := context.WithTimeout(ctx, x.cfg.Config.RequestTimeout)
	defer cancel()
	resp, err := cli.Txn(ctx).If(fence...).Commit()
	if err != nil {
		return fmt.Errorf("check the leader's fence: %w", err)
	}
	if !resp.Succeeded {
		return ErrStale
	}
	return nil
}

// purgeLocks deletes Vitess lock keys without a lease below the global root: copies that lost their
// lease would block EmergencyReparentShard for its whole lock timeout. A lock that has a lease belongs to
// a live process and stays.
func purgeLocks(ctx context.Context, cfg *config.Config, cli *clientv3.Client, ev *events.Recorder) ([]string, error) {
	root := cfg.Vitess.GlobalRoot + "/"
	rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	resp, err := cli.Get(rctx, root, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	cancel()
	if err != nil {
		return nil, fmt.Errorf("list lock keys below %s: %w", root, err)
	}
	var deleted []string
	var errs []error
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		if kv.Lease != 0 || !vitess.IsLockKey(key) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
		tr, err := cli.Txn(rctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision), clientv3.Compare(clientv3.LeaseValue(key), "=", clientv3.NoLease)).
			Then(clientv3.OpDelete(key)).Commit()
		cancel()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("delete lock %s: %w", key, err))
		case tr.Succeeded:
			deleted = append(deleted, key)
			ev.Info(events.KindFailover, "failover: deleted a lock key without a lease", "key", key)
		}
	}
	return deleted, errors.Join(errs...)
}
