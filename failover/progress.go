package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/keys"
)

// Progress is a failover's record in the new primary DC's etcd: what it set out to do (written with the
// epoch bump) and where each shard stands (written as it goes). Whoever converges the failover works
// from it, so that a controller that dies takes nothing with it.
type Progress struct {
	Epoch     int64     `json:"epoch"`
	Decision  Decision  `json:"decision"`
	StartedAt time.Time `json:"started_at"`
	// Targets are the shards to promote, as the plan had them when the epoch moved.
	Targets []Target `json:"targets"`
	// BeforePromote is "" until the before_promote hook ran (or none is configured), then "ok" or
	// "vetoed: <why>". After a veto no promote command runs: shards promoted by hand are only confirmed.
	BeforePromote string `json:"before_promote,omitempty"`
	// Reported is set once every shard had its first attempts: after_failover ran and the result was
	// recorded at last_failover.
	Reported bool `json:"reported,omitempty"`
	// ConvergedAt is when every shard was confirmed; zero while the failover is unfinished.
	ConvergedAt time.Time `json:"converged_at,omitzero"`
	// OldSide is what became of the primary record in the old primary's etcd.
	OldSide string `json:"old_side_record,omitempty"`

	// Shards has a ShardProgress for each target, in the targets' order; not stored in this record.
	Shards []ShardProgress `json:"-"`
	// modRevision is the header's, for compare-and-swap.
	modRevision int64
}

// Target is one shard a failover promotes, and the tablets it promotes there.
type Target struct {
	Keyspace string `json:"keyspace"`
	Shard    string `json:"shard"`
	// Tablet is promoted; Candidates are the shard's tablets in the new primary DC: any of them as the
	// Shard record's primary counts as converged (a person may have promoted another by hand).
	Tablet     string   `json:"tablet"`
	Candidates []string `json:"candidates"`
	// Ignore are the shard's tablets in the old primary DC ({{.IgnoreTablets}}).
	Ignore []string `json:"ignore_tablets,omitempty"`
	// Problems are what the plan found in the way of this shard's failover when the epoch moved. A
	// shard with no Tablet is never promoted by topoha: only confirmed once a person promoted it.
	Problems []string `json:"problems,omitempty"`
}

// ID is keyspace/shard.
func (t Target) ID() string { return t.Keyspace + "/" + t.Shard }

// ShardState is where one shard stands in a failover.
type ShardState string

const (
	// ShardPending: not attempted yet, or an attempt is under way.
	ShardPending ShardState = "pending"
	// ShardConfirmed: the Shard record names a candidate and its own record says PRIMARY. Never
	// promoted again.
	ShardConfirmed ShardState = "confirmed"
	// ShardFailed: the attempts so far did not make it primary; the next one is at NextAttemptAt.
	ShardFailed ShardState = "failed"
	// ShardHeld: a person took it over (topoha pause --shard); not attempted until resumed.
	ShardHeld ShardState = "held"
)

// ShardProgress is one shard's state, stored at keys.Layout.ProgressShards()+<keyspace>/<shard> once it
// has been worked on; a shard without a key is pending with no attempt.
type ShardProgress struct {
	Target
	State     ShardState `json:"state"`
	Attempts  int        `json:"attempts"`
	LastError string     `json:"last_error,omitempty"`
	Output    string     `json:"output,omitempty"`
	// Took is how long the last attempt took, its confirmation included.
	Took          time.Duration `json:"took_ns,omitempty"`
	NextAttemptAt time.Time     `json:"next_attempt_at,omitzero"`
	ConfirmedAt   time.Time     `json:"confirmed_at,omitzero"`
	// By is the controller that last wrote this record, or the person who held or resumed the shard.
	By        string    `json:"by,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`

	modRevision int64
}

// Open says whether the failover is still to be driven: some shard is not confirmed yet.
func (p *Progress) Open() bool { return p.ConvergedAt.IsZero() }

// Vetoed says before_promote vetoed the promotions.
func (p *Progress) Vetoed() bool { return strings.HasPrefix(p.BeforePromote, "vetoed") }

// Unconfirmed lists the shards that do not have their new primary yet.
func (p *Progress) Unconfirmed() []ShardProgress {
	var out []ShardProgress
	for _, s := range p.Shards {
		if s.State != ShardConfirmed {
			out = append(out, s)
		}
	}
	return out
}

// Unfinished is a failover that has not converged: what status, metrics and alerts show of it.
type Unfinished struct {
	Epoch     int64     `json:"epoch"`
	To        string    `json:"to"`
	StartedAt time.Time `json:"started_at"`
	Shards    int       `json:"shards"`
	// Vetoed: before_promote vetoed the promotions; shards promoted by hand are confirmed, no more.
	Vetoed        bool   `json:"vetoed"`
	BeforePromote string `json:"before_promote,omitempty"`
	// Confirmed, Failed, Held and Pending count the shards by state: how far the failover got.
	Confirmed   int             `json:"confirmed"`
	Failed      int             `json:"failed"`
	Held        int             `json:"held"`
	Pending     int             `json:"pending"`
	Unconfirmed []ShardProgress `json:"unconfirmed"`
}

// Progress is the failover's progress in a few words, e.g. "412 of 1000 confirmed, 3 failed, 585
// pending".
func (u *Unfinished) Progress() string {
	out := fmt.Sprintf("%d of %d confirmed", u.Confirmed, u.Shards)
	for _, c := range []struct {
		n    int
		what string
	}{{u.Failed, "failed"}, {u.Held, "held"}, {u.Pending, "pending"}} {
		if c.n > 0 {
			out += fmt.Sprintf(", %d %s", c.n, c.what)
		}
	}
	return out
}

// Unfinished summarizes p when some shard lacks its primary; nil when every shard has it (or p is nil).
func (p *Progress) Unfinished() *Unfinished {
	if p == nil {
		return nil
	}
	left := p.Unconfirmed()
	if len(left) == 0 && !p.ConvergedAt.IsZero() {
		return nil
	}
	u := &Unfinished{Epoch: p.Epoch, To: p.Decision.To, StartedAt: p.StartedAt, Shards: len(p.Shards), Vetoed: p.Vetoed(),
		BeforePromote: p.BeforePromote, Confirmed: len(p.Shards) - len(left), Unconfirmed: left}
	for _, s := range left {
		switch s.State {
		case ShardFailed:
			u.Failed++
		case ShardHeld:
			u.Held++
		default:
			u.Pending++
		}
	}
	return u
}

// Shard returns the progress of keyspace/shard id, if the failover covers it.
func (p *Progress) Shard(id string) (ShardProgress, bool) {
	i := slices.IndexFunc(p.Shards, func(s ShardProgress) bool { return s.ID() == id })
	if i < 0 {
		return ShardProgress{}, false
	}
	return p.Shards[i], true
}

// NewProgress is the record a failover for d starts with: every shard of plan pending.
func NewProgress(c *config.Config, d Decision, at time.Time, plan *discovery.Plan) Progress {
	p := Progress{Epoch: d.NewEpoch, Decision: d, StartedAt: at}
	for _, s := range plan.Shards {
		t := Target{Keyspace: s.Keyspace, Shard: s.Shard, Tablet: s.Tablet, Candidates: s.Candidates, Ignore: s.IgnoreTablets}
		if len(s.Problems) > 0 {
			// One problem, bounded: the header holds every target in one etcd value (etcd refuses a request
			// over 1.5 MiB by default), and `topoha plan` has the rest.
			t.Problems = []string{truncate(s.Problems[0], maxProblemBytes)}
		}
		p.Targets = append(p.Targets, t)
	}
	if len(c.Failover.Hooks.BeforePromote) == 0 {
		p.BeforePromote = "ok"
	}
	return p
}

// maxProblemBytes bounds the problem a target keeps.
const maxProblemBytes = 300

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// maxHeaderBytes bounds the progress header, which the epoch bump writes in one request: etcd refuses a
// request over --max-request-bytes, 1.5 MiB by default, and the bump's other operations need room too.
const maxHeaderBytes = 1 << 20

// startOps are the operations that record p in the epoch bump's transaction: the header, and the end of
// the last failover's per-shard records (a prefix delete is one operation, whatever the shard count). A
// header over maxHeaderBytes loses its targets' problems first (`topoha plan` still has them): a
// failover must not be refused for its own commentary. One still too large is an error that says why.
func (p *Progress) startOps(l keys.Layout) ([]clientv3.Op, error) {
	val, err := json.Marshal(p)
	if err == nil && len(val) > maxHeaderBytes {
		for i := range p.Targets {
			p.Targets[i].Problems = nil
		}
		val, err = json.Marshal(p)
	}
	if err != nil {
		return nil, err
	}
	if len(val) > maxHeaderBytes {
		return nil, fmt.Errorf("the failover's progress record is %d bytes for %d shards, over the %d bytes one etcd request may carry here: "+
			"narrow failover.discovery.keyspaces, or split the cluster", len(val), len(p.Targets), maxHeaderBytes)
	}
	return []clientv3.Op{clientv3.OpPut(l.Progress(), string(val)), clientv3.OpDelete(l.ProgressShards(), clientv3.WithPrefix())}, nil
}

// ReadProgress reads the progress of the last failover recorded in cli's etcd, with one range read. It
// returns nil, nil when there is none.
func ReadProgress(ctx context.Context, cli *clientv3.Client, l keys.Layout, timeout time.Duration) (*Progress, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dir := strings.TrimSuffix(l.Progress(), "progress")
	resp, err := cli.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the failover's progress below %s: %w", dir, err)
	}
	var p *Progress
	shards := map[string]ShardProgress{}
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		switch {
		case key == l.Progress():
			p = &Progress{}
			if err := json.Unmarshal(kv.Value, p); err != nil || p.Epoch <= 0 {
				return nil, fmt.Errorf("%s holds %.80q, not a failover's progress record (%v): delete it, and the failover is no longer driven", key, kv.Value, err)
			}
			p.modRevision = kv.ModRevision
		case strings.HasPrefix(key, l.ProgressShards()):
			var s ShardProgress
			if err := json.Unmarshal(kv.Value, &s); err != nil {
				return nil, fmt.Errorf("%s holds %.80q, not a shard's progress (%v): delete it, and the shard starts over as pending", key, kv.Value, err)
			}
			s.modRevision = kv.ModRevision
			shards[strings.TrimPrefix(key, l.ProgressShards())] = s
		}
	}
	if p == nil {
		return nil, nil
	}
	for _, t := range p.Targets {
		s, ok := shards[t.ID()]
		if !ok {
			s = ShardProgress{State: ShardPending}
		}
		s.Target = t
		p.Shards = append(p.Shards, s)
	}
	return p, nil
}

// ReadUnfinished reads the progress of the last failover in cli's etcd when it has not converged, and
// returns nil, nil when it has (or there is none). A converged failover costs one Get of its header, not
// a range read of every shard: what the convergers and status read every interval.
func ReadUnfinished(ctx context.Context, cli *clientv3.Client, l keys.Layout, timeout time.Duration) (*Progress, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	resp, err := cli.Get(rctx, l.Progress())
	cancel()
	if err != nil {
		return nil, fmt.Errorf("read the failover's progress %s: %w", l.Progress(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var head Progress
	if err := json.Unmarshal(resp.Kvs[0].Value, &head); err == nil && !head.ConvergedAt.IsZero() {
		return nil, nil
	}
	p, err := ReadProgress(ctx, cli, l, timeout)
	if p == nil || err != nil || !p.Open() {
		return nil, err
	}
	return p, nil
}

// errChanged means a compare-and-swap found the record changed, or a fence no longer holding.
var errChanged = errors.New("the record changed meanwhile, or this controller no longer holds the right to write it")

// writeShard stores s if its key still has the revision s was read at and every fence holds; s's
// revision becomes the written one.
func writeShard(ctx context.Context, cli *clientv3.Client, l keys.Layout, s *ShardProgress, fence []clientv3.Cmp) error {
	if err := casPut(ctx, cli, l.ProgressShards()+s.ID(), s, &s.modRevision, fence); err != nil {
		return fmt.Errorf("record %s's progress: %w", s.ID(), err)
	}
	return nil
}

// writeHeader stores p's header if it is unchanged since read and every fence holds, with also in the
// same transaction.
func writeHeader(ctx context.Context, cli *clientv3.Client, l keys.Layout, p *Progress, fence []clientv3.Cmp, also ...clientv3.Op) error {
	if err := casPut(ctx, cli, l.Progress(), p, &p.modRevision, fence, also...); err != nil {
		return fmt.Errorf("record the failover's progress: %w", err)
	}
	return nil
}

// casPut puts v as JSON at key, with also, if key's mod revision is still *rev and every fence holds;
// *rev becomes the written revision.
func casPut(ctx context.Context, cli *clientv3.Client, key string, v any, rev *int64, fence []clientv3.Cmp, also ...clientv3.Op) error {
	val, err := json.Marshal(v)
	if err != nil {
		return err
	}
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", *rev)}, fence...)
	resp, err := cli.Txn(ctx).If(cmps...).Then(append([]clientv3.Op{clientv3.OpPut(key, string(val))}, also...)...).Commit()
	switch {
	case err != nil:
		return err
	case !resp.Succeeded:
		return errChanged
	}
	*rev = resp.Header.Revision
	return nil
}

// ErrNoSuchShard means a hold or resume named a shard that no unfinished failover covers.
var ErrNoSuchShard = errors.New("no unfinished failover covers that shard")

// HoldShard leaves keyspace/shard id of the unfinished failover in cli's etcd (the primary DC's) to a
// person (hold), or gives it back to the converger (!hold: its next attempt is due at once). by names who
// did it. A confirmed shard cannot be held: it has its primary.
func HoldShard(ctx context.Context, cli *clientv3.Client, l keys.Layout, timeout time.Duration, id string, hold bool, by, why string) (ShardProgress, error) {
	p, err := ReadProgress(ctx, cli, l, timeout)
	switch {
	case err != nil:
		return ShardProgress{}, err
	case p == nil || p.ConvergedAt.After(p.StartedAt):
		return ShardProgress{}, fmt.Errorf("%w: there is none (`topoha status` shows the last failover)", ErrNoSuchShard)
	}
	s, ok := p.Shard(id)
	if !ok {
		var ids []string
		for _, t := range p.Targets {
			ids = append(ids, t.ID())
		}
		return ShardProgress{}, fmt.Errorf("%w: the failover to epoch %d covers %s, not %q", ErrNoSuchShard, p.Epoch, strings.Join(ids, ", "), id)
	}
	now := time.Now().UTC()
	switch {
	case s.State == ShardConfirmed:
		return s, fmt.Errorf("%s already has its primary %s in %s: nothing to hold or resume", id, s.Tablet, p.Decision.To)
	case hold:
		s.State, s.LastError = ShardHeld, why
	case s.State != ShardHeld:
		return s, fmt.Errorf("%s is not held (it is %s): nothing to resume", id, s.State)
	default:
		s.State, s.NextAttemptAt, s.LastError = ShardFailed, now, "resumed by "+by
		if s.Attempts == 0 {
			s.State = ShardPending
		}
	}
	s.By, s.UpdatedAt = by, now
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Fenced on the header too: a failover that started meanwhile must not inherit this hold.
	unchanged := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(l.Progress()), "=", p.modRevision)}
	if err := writeShard(ctx, cli, l, &s, unchanged); err != nil {
		return s, fmt.Errorf("%w; try again", err)
	}
	return s, nil
}
