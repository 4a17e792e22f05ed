package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/metrics"
	"github.com/topoha/topoha/primary"
)

// ConvergerConfig configures a Converger.
type ConvergerConfig struct {
	// Config returns the configuration in force; it may be reloaded.
	Config func() *config.Config
	// Clients has a client for each DC's etcd.
	Clients map[string]*clientv3.Client
	// DC and ID name this controller, in the convergence lock, the progress records and the hooks.
	DC, ID string
	// Primary returns the primary record the controller follows, and whether an etcd answered with it.
	Primary func() (primary.Record, bool)
	// Paused says whether automatic failover is paused: then no shard is retried after its first
	// attempts.
	Paused func(context.Context) bool
	// Fenced says whether this controller's DC has fenced itself (failover.self_fence): cut off from the
	// other DC, it may follow an epoch the other side has moved past, and must promote nothing. Optional.
	Fenced func() bool
	// Attempts is how many attempts every shard gets before the failover's result is first recorded
	// (default 3). Backoff is the wait after a shard's first failed attempt (default 1s), doubled after
	// each next one up to failover.retry_max_backoff.
	Attempts int
	Backoff  time.Duration
	// ConfirmTimeout is how long the Shard record may take to name the new primary after a promote
	// command returned; ConfirmPoll how often it is read. Defaults 5s and 100ms.
	ConfirmTimeout, ConfirmPoll time.Duration
	Logger                      *slog.Logger
	Events                      *events.Recorder
	Metrics                     *metrics.Metrics
}

// Converger drives the last failover to its desired state: the primary record names DC X at epoch E, and
// every shard's Shard record in X's etcd names a tablet of X whose own record says PRIMARY.
//
// Every controller runs one. While the failover at the followed epoch is unfinished, each of X's
// controllers campaigns for the convergence lock, an election in X's etcd (the DR DC's etcd, where the
// leader's election lives, may be the one that was lost). The holder works from the progress record in X's etcd: it re-confirms
// before it promotes, promotes what is not confirmed, retries failures with capped back-off, and
// records every step under two fences: its lock and X's primary record as it read it. A holder that dies
// leaves its lock to expire (election.ttl) and the next one resumes; one that sees a newer epoch stops.
type Converger struct {
	cfg  ConvergerConfig
	log  *slog.Logger
	ev   *events.Recorder
	kick chan struct{}

	mu     sync.Mutex
	status ConvergeStatus
}

// ConvergeStatus is what a Converger last saw.
type ConvergeStatus struct {
	// Holding says this controller holds the convergence lock.
	Holding bool `json:"holding"`
	// Unfinished is the followed epoch's failover as last read, while some shard lacks its primary.
	Unfinished *Unfinished `json:"unfinished,omitempty"`
}

// NewConverger returns a Converger for cfg.
func NewConverger(cfg ConvergerConfig) (*Converger, error) {
	switch {
	case cfg.Config == nil || cfg.Config() == nil:
		return nil, errors.New("failover: a Converger needs the config")
	case len(cfg.Clients) != 2:
		return nil, errors.New("failover: a Converger needs a client for each of the two DCs")
	case cfg.Primary == nil || cfg.Paused == nil:
		return nil, errors.New("failover: a Converger needs Primary and Paused")
	case cfg.ID == "":
		return nil, errors.New("failover: a Converger needs the controller's ID")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.Backoff, time.Second)
	def(&cfg.ConfirmTimeout, 5*time.Second)
	def(&cfg.ConfirmPoll, 100*time.Millisecond)
	if cfg.Attempts == 0 {
		cfg.Attempts = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Events == nil {
		cfg.Events = events.LogOnly(cfg.Logger)
	}
	return &Converger{cfg: cfg, log: cfg.Logger, ev: cfg.Events, kick: make(chan struct{}, 1)}, nil
}

func (c *Converger) fenced() bool { return c.cfg.Fenced != nil && c.cfg.Fenced() }

// Kick makes Run look at the primary record and the progress now rather than at its next interval: the
// epoch just moved.
func (c *Converger) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Status returns what the Converger last saw.
func (c *Converger) Status() ConvergeStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Run looks every health.interval at the followed primary record and its failover's progress, and
// campaigns for the convergence lock while that failover is unfinished, until ctx ends.
func (c *Converger) Run(ctx context.Context) error {
	var lock lockCampaign
	defer lock.stop()
	tick := time.NewTicker(c.cfg.Config().Health.Interval)
	defer tick.Stop()
	for {
		// Only the new primary DC's controllers converge: they run next to its vtctld and tablets, which a
		// controller of the lost DC that still reaches the new primary's etcd may not.
		if rec, open, known := c.look(ctx); open && rec.DC == c.cfg.DC && !c.fenced() {
			lock.start(ctx, c, rec)
		} else if known {
			lock.stop()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-c.kick:
		}
	}
}

// look reads the progress of the followed record's failover and says whether it is open; known is false
// when it could not be read (a campaign under way is then left alone).
func (c *Converger) look(ctx context.Context) (rec primary.Record, open, known bool) {
	cfg := c.cfg.Config()
	rec, read := c.cfg.Primary()
	var p *Progress
	if read && rec.Epoch > 0 {
		var err error
		if p, err = ReadUnfinished(ctx, c.cfg.Clients[rec.DC], cfg.Keys(), cfg.Health.Timeout); err != nil {
			c.log.Debug("converger: the failover's progress cannot be read", "dc", rec.DC, "err", err)
			return rec, false, false
		}
		if p != nil && p.Epoch != rec.Epoch {
			p = nil
		}
	}
	c.mu.Lock()
	c.status.Unfinished = p.Unfinished()
	c.mu.Unlock()
	return rec, p != nil, read
}

// lockCampaign is a Converger's candidacy for the convergence lock of one failover.
type lockCampaign struct {
	dc    string
	epoch int64
	end   func() // nil while not campaigning
}

func (l *lockCampaign) start(ctx context.Context, c *Converger, rec primary.Record) {
	if l.end != nil && l.dc == rec.DC && l.epoch == rec.Epoch {
		return
	}
	l.stop()
	el, err := c.elector(rec, func(lctx context.Context, term election.Term) { c.hold(lctx, term, rec) })
	if err != nil {
		c.log.Error("converger: cannot campaign for the convergence lock", "err", err)
		return
	}
	*l = lockCampaign{dc: rec.DC, epoch: rec.Epoch, end: el.Start(ctx)}
	c.log.Info("converger: the failover is unfinished; campaigning for the convergence lock", "lock_in", rec.DC, "epoch", rec.Epoch)
}

func (l *lockCampaign) stop() {
	if l.end != nil {
		l.end()
		l.end = nil
	}
}

// elector campaigns for the convergence lock of the failover to rec in rec.DC's etcd.
func (c *Converger) elector(rec primary.Record, hold func(context.Context, election.Term)) (*election.Elector, error) {
	cfg := c.cfg.Config()
	member, err := cfg.EtcdClientConfig(rec.DC)
	if err != nil {
		return nil, err
	}
	return election.New(election.Config{
		Client: c.cfg.Clients[rec.DC], Member: member, Prefix: cfg.Keys().Converger(), ID: c.cfg.ID, DC: c.cfg.DC,
		TTL: cfg.Election.TTL, RetryInterval: cfg.Health.Interval, RequestTimeout: cfg.RequestTimeout, Logger: c.log,
		OnStartedLeading: hold,
	})
}

// hold drives the failover while this controller holds the lock, then keeps the lock until Run sees the
// failover finished (or the epoch moved) and stops campaigning: a lock let go at once would be taken
// again.
func (c *Converger) hold(ctx context.Context, term election.Term, rec primary.Record) {
	c.setHolding(true)
	defer c.setHolding(false)
	c.ev.Info(events.KindFailover, "converging the failover: this controller holds the convergence lock", "to", rec.DC, "epoch", rec.Epoch)
	for {
		err := c.drive(ctx, term.Fence(), rec, false)
		if err == nil || errors.Is(err, errEpochMoved) || ctx.Err() != nil {
			break
		}
		// An etcd that did not answer, or a write refused: start over from the record, still holding.
		c.ev.Warn(events.KindFailover, "converger: driving the failover failed; starting over from its progress record", "epoch", rec.Epoch, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(c.cfg.Config().Health.Interval):
		}
	}
	<-ctx.Done()
}

func (c *Converger) setHolding(h bool) {
	c.mu.Lock()
	c.status.Holding = h
	c.mu.Unlock()
}

// Finish drives the failover to rec under the convergence lock until its result is recorded (every
// shard had its first attempts), and lets the lock go; controllers go on with what is left. It is for a
// failover carried out with no controller running (topoha failover --force). While it waits for the lock,
// it gives up when ctx ends, when a controller holds the lock, or when the result is recorded; once it
// holds the lock, only the lock's end stops it.
func (c *Converger) Finish(ctx context.Context, rec primary.Record) error {
	cfg := c.cfg.Config()
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	var holding atomic.Bool
	go func() {
		tick := time.NewTicker(cfg.Health.Interval)
		defer tick.Stop()
		for {
			select {
			case <-fctx.Done():
				return
			case <-ctx.Done():
			case <-tick.C:
			}
			if holding.Load() {
				return
			}
			if ctx.Err() != nil || c.leftToOthers(fctx, rec) {
				stop()
				return
			}
		}
	}()
	var derr error
	el, err := c.elector(rec, func(lctx context.Context, term election.Term) {
		holding.Store(true)
		derr = c.drive(lctx, term.Fence(), rec, true)
		stop()
	})
	if err != nil {
		return err
	}
	_ = el.Run(fctx)
	if !holding.Load() && ctx.Err() != nil {
		return ctx.Err()
	}
	return derr
}

// leftToOthers says whether another holds the convergence lock of the failover to rec, or its result is
// recorded already.
func (c *Converger) leftToOthers(ctx context.Context, rec primary.Record) bool {
	cfg := c.cfg.Config()
	rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	if l, err := election.CurrentLeader(rctx, c.cfg.Clients[rec.DC], cfg.Keys().Converger()); err == nil && l != nil && l.ID != c.cfg.ID {
		c.ev.Info(events.KindFailover, "the failover is converged by a controller", "controller", l.ID, "dc", l.DC)
		return true
	}
	p, err := ReadProgress(rctx, c.cfg.Clients[rec.DC], cfg.Keys(), cfg.RequestTimeout)
	return err == nil && (p == nil || p.Epoch != rec.Epoch || p.Reported)
}

// progressEvery is how often a failover under way records its progress as an event: a thousand shards
// take minutes, and the history should say how far they got.
const progressEvery = 10 * time.Second

// errEpochMoved means the primary record in the new primary's etcd is no longer the one being converged.
var errEpochMoved = errors.New("the primary record moved on: this failover is no longer the one to converge")

// drive works the failover to rec from its progress record until it converged (or, with untilReported,
// until its result is recorded), the epoch moves, or ctx ends (the lock was lost).
func (c *Converger) drive(ctx context.Context, lock clientv3.Cmp, rec primary.Record, untilReported bool) error {
	cfg := c.cfg.Config()
	cli := c.cfg.Clients[rec.DC]
	rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	seen := primary.Read(rctx, cli, cfg.Keys().Primary())
	cancel()
	if seen.Err != nil {
		return fmt.Errorf("read the primary record in %s's etcd: %w", rec.DC, seen.Err)
	}
	if seen.Record == nil || seen.Record.Epoch != rec.Epoch || seen.Record.DC != rec.DC {
		return errEpochMoved
	}
	d := &driver{
		c: c, cfg: cfg, cli: cli, rec: rec,
		fence:    []clientv3.Cmp{lock, primary.Unchanged(cfg.Keys().Primary(), seen)},
		inflight: map[string]bool{}, done: make(chan attempted), nextCheck: map[string]time.Time{}, slots: make(chan struct{}, cfg.Failover.Parallel()),
		hooks: Hooks{Config: cfg, DC: c.cfg.DC, ID: c.cfg.ID, Events: c.ev, Metrics: c.cfg.Metrics},
		promoter: &Promoter{Timeout: cfg.Failover.PromoteTimeout, Topo: cli, GlobalRoot: cfg.Vitess.GlobalRoot, Cells: cfg.DCs[rec.DC].Cells,
			ConfirmTimeout: c.cfg.ConfirmTimeout, ConfirmPoll: c.cfg.ConfirmPoll,
			view: newShardView(cli, cfg.Vitess.GlobalRoot, cfg.RequestTimeout, cfg.Health.Interval, c.log)},
	}
	vctx, stopView := context.WithCancel(ctx)
	viewDone := make(chan struct{})
	go func() {
		defer close(viewDone)
		d.promoter.view.Run(vctx)
	}()
	// The view outlives the attempts still under way: they confirm against it.
	defer func() {
		d.wait()
		stopView()
		<-viewDone
	}()
	return d.run(ctx, untilReported)
}

// driver is one holder's work on one failover, owned by drive's goroutine; attempts run in goroutines of
// their own and report on done.
type driver struct {
	c        *Converger
	cfg      *config.Config
	cli      *clientv3.Client
	rec      primary.Record
	fence    []clientv3.Cmp
	hooks    Hooks
	promoter *Promoter

	inflight map[string]bool
	done     chan attempted
	// slots bounds the promote commands running at once (failover.max_parallel).
	slots chan struct{}
	// nextCheck is when a shard that is only checked, not promoted, is read next.
	nextCheck map[string]time.Time
	wg        sync.WaitGroup

	locks    []string
	warnings []string
	errs     []string
	oldSide  chan string
	// preflight holds the pre-flight's warnings once it is done; like oldSide, the result waits for it,
	// the promotions do not.
	preflight chan []string
}

// attempted is a finished attempt: the shard's progress as its attempt left it, and whether that is
// what etcd holds (its write went through).
type attempted struct {
	shard    ShardProgress
	recorded bool
}

func (d *driver) wait() {
	for len(d.inflight) > 0 {
		delete(d.inflight, (<-d.done).shard.ID())
	}
	d.wg.Wait()
}

func (d *driver) run(ctx context.Context, untilReported bool) error {
	p, err := d.read(ctx)
	if err != nil {
		return err
	}
	d.promoter.Command = d.cfg.Failover.PromoteCommand
	if p.Decision.Planned {
		d.promoter.Command = d.cfg.Failover.SwitchoverCommand
	}
	if !p.Reported {
		d.prepare(ctx, p)
	}
	if p.BeforePromote == "" {
		if err := d.beforePromote(ctx, p); err != nil {
			return err
		}
	}
	if err := d.promoter.view.wait(ctx); err != nil {
		return err
	}
	tick := time.NewTicker(d.cfg.Health.Interval)
	defer tick.Stop()
	lastProgress := time.Now()
	for {
		if len(d.inflight) == 0 {
			if err := d.record(ctx, p); err != nil {
				return err
			}
		}
		if len(d.inflight) > 0 && time.Since(lastProgress) >= progressEvery {
			lastProgress = time.Now()
			if u := p.Unfinished(); u != nil {
				d.c.ev.Info(events.KindFailover, fmt.Sprintf("failover progress: %s, %d running", u.Progress(), len(d.inflight)), "epoch", p.Epoch)
			}
		}
		switch followed, _ := d.c.cfg.Primary(); {
		case !p.Open():
			return nil
		case untilReported && p.Reported:
			return nil
		case followed.Epoch > d.rec.Epoch:
			return errEpochMoved
		}
		d.startDue(ctx, p)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case a := <-d.done:
			delete(d.inflight, a.shard.ID())
			if i := slices.IndexFunc(p.Shards, func(s ShardProgress) bool { return s.Keyspace == a.shard.Keyspace && s.Shard == a.shard.Shard }); a.recorded && i >= 0 {
				// What the attempt wrote is what etcd holds: no need to read every shard's record again
				// for it (with a thousand shards that would be a thousand range reads). The tick re-reads
				// for what others changed.
				p.Shards[i] = a.shard
				continue
			}
		case <-tick.C:
		}
		if p, err = d.read(ctx); err != nil {
			return err
		}
	}
}

// read re-reads the progress, waiting out an etcd that does not answer; it fails once the record is no
// longer this epoch's.
func (d *driver) read(ctx context.Context) (*Progress, error) {
	for {
		p, err := ReadProgress(ctx, d.cli, d.cfg.Keys(), d.cfg.RequestTimeout)
		switch {
		case err == nil && (p == nil || p.Epoch != d.rec.Epoch):
			return nil, errEpochMoved
		case err == nil:
			return p, nil
		}
		d.c.log.Warn("converger: cannot read the failover's progress; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(d.cfg.Health.Interval):
		}
	}
}

// prepare does what comes before the promotions, again for every holder until the result is recorded:
// each step is safe to repeat. It tells the old primary's etcd of the new epoch if it answers, deletes
// lock keys without a lease, and waits for the topo VIP; the pre-flight (a plan again, for the result's
// warnings) runs beside the promotions: it reads the whole topology and dials every cell's topo, and a
// failover must not wait for that.
func (d *driver) prepare(ctx context.Context, p *Progress) {
	d.oldSide = make(chan string, 1)
	if p.OldSide == "" || strings.HasPrefix(p.OldSide, "not written") {
		// The old primary is usually gone: the promotions do not wait for it.
		d.wg.Go(func() {
			_, told := recordOnOldSide(ctx, d.cfg, d.c.cfg.Clients[p.Decision.From], d.rec)
			d.oldSide <- told
		})
	} else {
		d.oldSide <- p.OldSide
	}
	locks, err := purgeLocks(ctx, d.cfg, d.cli, d.c.ev)
	d.locks = locks
	if err != nil {
		d.errs = append(d.errs, err.Error())
	}
	d.preflight = make(chan []string, 1)
	d.wg.Go(func() {
		warnings := d.checkAhead(ctx, p)
		for _, w := range warnings {
			d.c.ev.Warn(events.KindFailover, "failover: pre-flight warning", "warning", w)
		}
		d.preflight <- warnings
	})
	if err := waitTopoVIP(ctx, d.cfg, d.c.ev, d.rec.DC, d.cli); err != nil {
		d.warnings = append(d.warnings, err.Error())
	}
}

// checkAhead plans the failover again, now, for what would make a reparent fail or misbehave: each
// problem is a warning of the result (a failover is what is needed when things are broken: it never
// stops one). A cell's topo gets a probe's time to answer: the lost DC's does not.
func (d *driver) checkAhead(ctx context.Context, p *Progress) []string {
	plan, err := discovery.Compute(ctx, discovery.Input{Config: d.cfg, Client: d.cli, From: p.Decision.From, To: p.Decision.To,
		Epoch: p.Epoch, Timeout: d.cfg.Health.Timeout, CheckCells: true})
	if err != nil {
		return []string{"pre-flight: " + err.Error()}
	}
	out := append(plan.Problems, plan.Warnings...)
	for _, s := range plan.Shards {
		for _, problem := range s.Problems {
			out = append(out, s.ID()+": "+problem)
		}
	}
	return out
}

// beforePromote runs the before_promote hook and records its outcome; a veto records the result at once.
func (d *driver) beforePromote(ctx context.Context, p *Progress) error {
	err := d.hooks.Run(ctx, HookBeforePromote, d.cfg.Failover.Hooks.BeforePromote, d.vars(p.Decision), hookEnv(p.Decision))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	p.BeforePromote = "ok"
	if err != nil {
		p.BeforePromote = "vetoed: " + err.Error()
	}
	if err := d.writeHeader(ctx, p); err != nil {
		return err
	}
	if p.Vetoed() {
		return d.report(ctx, p)
	}
	return nil
}

// vars are the command templates' fields for the failover d, without a shard.
func (d *driver) vars(dec Decision) config.CommandVars {
	return config.CommandVars{DC: dec.To, OldDC: dec.From, Epoch: dec.NewEpoch, Vtctld: d.cfg.DCs[dec.To].Vtctld,
		Timeout: d.cfg.Failover.PromoteTimeout.String()}
}

// hookEnv is the failover hooks' environment for d.
func hookEnv(d Decision) map[string]string {
	return map[string]string{
		"TOPOHA_PRIMARY_DC": d.To, "TOPOHA_OLD_PRIMARY_DC": d.From, "TOPOHA_EPOCH": fmt.Sprint(d.NewEpoch),
		"TOPOHA_TRIGGER": string(d.Trigger), "TOPOHA_REASON": d.Reason,
	}
}

// startDue starts an attempt for every shard that is due (its command runs when one of
// failover.max_parallel slots is free): not
// confirmed, not under way, its next attempt time reached, and, once it had its first attempts, not while
// paused. A held shard, a shard the plan had no tablet for, and every shard of a failover whose
// before_promote vetoed the promotions, is only checked (a person may have promoted it by hand), every
// failover.retry_max_backoff.
func (d *driver) startDue(ctx context.Context, p *Progress) {
	now := time.Now()
	var paused *bool
	for _, s := range p.Shards {
		// Twice the slots: while max_parallel commands run, the others' checks, confirmations and records
		// are under way.
		if len(d.inflight) >= 2*d.cfg.Failover.Parallel() {
			return
		}
		if s.State == ShardConfirmed || d.inflight[s.ID()] {
			continue
		}
		promote := !p.Vetoed() && s.State != ShardHeld && s.Tablet != ""
		switch {
		case !promote && now.Before(d.nextCheck[s.ID()]):
			continue
		case !promote:
			d.nextCheck[s.ID()] = now.Add(d.cfg.Failover.RetryMaxBackoff)
		case now.Before(s.NextAttemptAt):
			continue
		case s.State == ShardFailed && s.Attempts >= d.c.cfg.Attempts && !p.Reported:
			// Retries wait until every shard had its first attempts and the result says so. (An attempt
			// cut short by a holder's death left its shard pending: that one is re-confirmed at once.)
			continue
		case s.Attempts >= d.c.cfg.Attempts:
			if paused == nil {
				v := d.c.cfg.Paused(ctx)
				paused = &v
			}
			if *paused {
				continue
			}
		}
		d.inflight[s.ID()] = true
		d.wg.Go(func() {
			recorded := d.attempt(ctx, p.Decision, &s, promote)
			d.done <- attempted{shard: s, recorded: recorded}
		})
	}
}

// attempt re-confirms shard s, and if it has no primary in the new primary DC yet and promote is set,
// runs its promote command once and records the outcome in s. It says whether s is what etcd holds.
func (d *driver) attempt(ctx context.Context, dec Decision, s *ShardProgress, promote bool) bool {
	ev := d.c.ev
	err := d.hasPrimary(ctx, s)
	switch {
	case errors.Is(err, errUnread):
		// Unknown is not "not promoted": a shard a dead holder promoted must not be promoted again. The
		// slot is kept for an interval, so that an etcd that does not answer is not asked in a loop.
		d.c.log.Warn("failover: shard not attempted: its Shard record cannot be read", "shard", s.ID(), "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(d.cfg.Health.Interval):
		}
		return true
	case err == nil:
		// Promoted by a holder that died before recording it, or by a person: never promoted again.
		recorded := d.settle(ctx, s, nil, s.Output)
		ev.Info(events.KindFailover, "failover: shard has its primary in the new primary DC; confirmed without promoting it", "shard", s.ID(), "attempts", s.Attempts)
		return recorded
	case s.Tablet == "" && s.State == ShardPending:
		// Nothing to promote: its first attempts are over before they start.
		err = fmt.Errorf("no tablet to promote: %s", strings.Join(s.Problems, "; "))
		recorded := d.settle(ctx, s, err, "")
		ev.Error(events.KindFailover, "failover: shard NOT promoted: the plan has no tablet for it; promote one by hand", "shard", s.ID(), "err", err)
		return recorded
	case !promote:
		return true
	}
	// A slot is one of failover.max_parallel: it is held from the attempt's record until its command exits.
	// The confirmation and the outcome's record come after the slot is given back, so that the next
	// shard's command waits for neither.
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	// The wait for a slot can last a whole reparent: a person, or a dead holder's reparent that vtctld
	// finished, may have given the shard its primary meanwhile. Checked again, this time from etcd itself:
	// it is the last look before the command, and the watched view may lag.
	rctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	err = d.promoter.HasPrimaryNow(rctx, s.Keyspace, s.Shard, s.Candidates)
	cancel()
	if err == nil || errors.Is(err, errUnread) {
		<-d.slots
		if err == nil {
			ev.Info(events.KindFailover, "failover: shard got its primary while it waited for a slot; confirmed without promoting it", "shard", s.ID())
			return d.settle(ctx, s, nil, s.Output)
		}
		return false // unknown: the next look re-reads the shard
	}
	s.Attempts++
	s.State, s.By, s.UpdatedAt = ShardPending, d.c.cfg.ID, time.Now().UTC()
	if err := d.writeShard(ctx, s); err != nil {
		<-d.slots
		ev.Warn(events.KindFailover, "failover: shard not attempted: its progress could not be recorded", "shard", s.ID(), "err", err)
		return false
	}
	vars := d.vars(dec)
	vars.Keyspace, vars.Shard, vars.Tablet, vars.IgnoreTablets = s.Keyspace, s.Shard, s.Tablet, strings.Join(s.Ignore, ",")
	start := time.Now()
	out, runErr := d.promoter.Run(ctx, vars)
	<-d.slots
	if ctx.Err() == nil {
		err = d.promoter.Confirm(ctx, vars, s.Candidates, runErr)
	}
	if ctx.Err() != nil {
		return false // the lock was lost: the next holder re-confirms this shard
	}
	s.Took = time.Since(start)
	attrs := []any{"shard", s.ID(), "tablet", s.Tablet, "attempt", s.Attempts, "took", time.Since(start).Round(time.Millisecond),
		"output", strings.TrimSpace(out)}
	if errors.Is(err, errUnread) {
		// The command ran, but whether it made a primary cannot be read. That is neither confirmed nor
		// failed (a failed shard counts in the result, and reaches after_failover, as not promoted): it stays
		// pending, and the next look, an interval from now, reads it again before anything is run.
		now := time.Now().UTC()
		s.LastError, s.Output, s.UpdatedAt, s.NextAttemptAt = err.Error(), out, now, now.Add(d.cfg.Health.Interval)
		ev.Warn(events.KindFailover, "failover: shard's outcome unknown: its records cannot be read; read again before any new attempt", append(attrs, "err", err)...)
		return d.writeShard(ctx, s) == nil
	}
	d.c.cfg.Metrics.ShardPromoted(s.Keyspace, s.Shard, err == nil, s.Took)
	recorded := d.settle(ctx, s, err, out)
	switch {
	case err == nil:
		ev.Info(events.KindFailover, "failover: shard promoted", attrs...)
	case s.Attempts < d.c.cfg.Attempts:
		ev.Warn(events.KindFailover, "failover: shard not promoted yet; retrying", append(attrs, "err", err, "next_attempt_at", s.NextAttemptAt)...)
	default:
		ev.Error(events.KindFailover, "failover: shard NOT promoted; retrying with back-off until it is", append(attrs, "err", err, "next_attempt_at", s.NextAttemptAt)...)
	}
	return recorded
}

// hasPrimary checks, within a request's time, whether s has its primary in the new primary DC.
func (d *driver) hasPrimary(ctx context.Context, s *ShardProgress) error {
	rctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	return d.promoter.HasPrimary(rctx, s.Keyspace, s.Shard, s.Candidates)
}

// settle records the outcome of s's attempt: confirmed when err is nil, else failed with the next
// attempt's time. A person who held the shard meanwhile keeps it. It says whether the record was written.
func (d *driver) settle(ctx context.Context, s *ShardProgress, err error, out string) bool {
	now := time.Now().UTC()
	s.By, s.UpdatedAt, s.Output = d.c.cfg.ID, now, out
	if err == nil {
		s.State, s.ConfirmedAt, s.LastError, s.NextAttemptAt = ShardConfirmed, now, "", time.Time{}
	} else {
		s.State, s.LastError, s.NextAttemptAt = ShardFailed, err.Error(), now.Add(d.backoff(s.Attempts))
	}
	if werr := d.writeShard(ctx, s); werr != nil {
		d.c.ev.Warn(events.KindFailover, "failover: a shard's outcome was not recorded (held by a person meanwhile, or the lock lost)",
			"shard", s.ID(), "state", s.State, "err", werr)
		return false
	}
	return true
}

// backoff is the wait after a shard's attempt-th failed attempt.
func (d *driver) backoff(attempt int) time.Duration {
	b := d.c.cfg.Backoff
	for i := 1; i < attempt && b < d.cfg.Failover.RetryMaxBackoff; i++ {
		b *= 2
	}
	return min(b, d.cfg.Failover.RetryMaxBackoff)
}

// record reports the failover once every shard had its first attempts, and marks it converged once every
// shard is confirmed.
func (d *driver) record(ctx context.Context, p *Progress) error {
	if !p.Open() {
		return nil
	}
	firstDone, all := true, true
	for _, s := range p.Shards {
		all = all && s.State == ShardConfirmed
		firstDone = firstDone && (s.State == ShardConfirmed || s.State == ShardHeld ||
			(s.State == ShardFailed && (s.Attempts >= d.c.cfg.Attempts || s.Tablet == "")))
	}
	// A veto ends the first attempts before they start.
	firstDone = firstDone || p.Vetoed()
	switch {
	case !p.Reported && firstDone:
		return d.report(ctx, p)
	case p.Reported && all:
		return d.converged(ctx, p)
	}
	return nil
}

// report runs after_failover and records the result, with the header marked reported (and converged
// when every shard is), in one transaction.
func (d *driver) report(ctx context.Context, p *Progress) error {
	res := d.result(p)
	env := hookEnv(p.Decision)
	env["TOPOHA_RESULT"] = string(res.Outcome)
	env["TOPOHA_FAILED_SHARDS"] = strings.Join(res.FailedShards(), ",")
	herr := d.hooks.Run(ctx, HookAfterFailover, d.cfg.Failover.Hooks.AfterFailover, d.vars(p.Decision), env)
	if len(d.cfg.Failover.Hooks.AfterFailover) > 0 {
		res.Hooks = append(res.Hooks, hookOutcome(HookAfterFailover, herr))
	}
	if herr != nil {
		res.Errors = append(res.Errors, herr.Error())
	}
	p.Reported, p.OldSide = true, res.OldSide
	if res.Outcome == ResultSuccess {
		p.ConvergedAt, res.ConvergedAt = res.FinishedAt, res.FinishedAt
	}
	if err := d.saveResult(ctx, p, res); err != nil {
		return err
	}
	took := res.FinishedAt.Sub(res.StartedAt)
	d.c.cfg.Metrics.FailedOver(string(p.Decision.Trigger), string(res.Outcome), took)
	level := slog.LevelInfo
	if res.Outcome != ResultSuccess {
		level = slog.LevelError
	}
	d.c.ev.Record(level, events.KindFailover, "failover done", "result", res.Outcome, "from", p.Decision.From, "to", p.Decision.To,
		"epoch", p.Epoch, "trigger", p.Decision.Trigger, "took", took.Round(time.Millisecond), "failed_shards", strings.Join(res.FailedShards(), ","),
		"locks_deleted", len(res.Locks), "old_side_record", res.OldSide)
	return nil
}

// converged records that every shard has its primary, after the result was first recorded without.
func (d *driver) converged(ctx context.Context, p *Progress) error {
	rctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	last := ReadResult(rctx, d.cli, d.cfg.Keys().LastFailover())
	cancel()
	if last.Unreachable() {
		// Rewriting it from scratch would lose what the first report recorded: try again later.
		return fmt.Errorf("read the failover's result before recording its convergence: %w", last.Err)
	}
	res := d.result(p)
	if last.Record != nil && last.Record.Epoch == p.Epoch {
		// What the first report recorded stays (hooks, locks, warnings, times); the shards are as now.
		last.Record.Shards = res.Shards
		res = last.Record
	}
	res.Outcome, res.ConvergedAt = ResultSuccess, time.Now().UTC()
	p.ConvergedAt = res.ConvergedAt
	if err := d.saveResult(ctx, p, res); err != nil {
		return err
	}
	d.c.ev.Info(events.KindFailover, "failover converged: every shard has its primary in the new primary DC", "to", p.Decision.To,
		"epoch", p.Epoch, "took", res.ConvergedAt.Sub(p.StartedAt).Round(time.Millisecond))
	return nil
}

// result is the failover's Result as the progress has it now.
func (d *driver) result(p *Progress) *Result {
	res := &Result{Decision: p.Decision, Epoch: p.Epoch, StartedAt: p.StartedAt,
		Locks: slices.Clone(d.locks), Errors: slices.Clone(d.errs)}
	if d.preflight != nil {
		ahead := <-d.preflight
		d.preflight <- ahead
		res.Warnings = append(slices.Clone(ahead), d.warnings...)
	} else {
		res.Warnings = slices.Clone(d.warnings)
	}
	if d.oldSide != nil {
		// The old primary's etcd gets a probe's time: the result waits for that, not the promotions.
		res.OldSide = <-d.oldSide
		d.oldSide <- res.OldSide
	}
	res.FinishedAt = time.Now().UTC()
	if len(d.cfg.Failover.Hooks.BeforePromote) > 0 {
		res.Hooks = append(res.Hooks, HookBeforePromote+": "+p.BeforePromote)
	}
	promoted := p.BeforePromote == "ok"
	for _, s := range p.Shards {
		r := ShardResult{Keyspace: s.Keyspace, Shard: s.Shard, Tablet: s.Tablet, Attempts: s.Attempts, Confirmed: s.State == ShardConfirmed,
			Error: s.LastError, Output: s.Output, Duration: s.Took}
		if !promoted {
			r.Error = "not promoted: before_promote " + p.BeforePromote
		}
		if s.State == ShardHeld {
			r.Error = "held by " + s.By + ": " + s.LastError
		}
		res.Shards = append(res.Shards, r)
	}
	res.Outcome = res.outcome(promoted)
	if !promoted {
		res.Errors = append(res.Errors, "before_promote hook failed, no shard promoted: "+strings.TrimPrefix(p.BeforePromote, "vetoed: "))
	}
	return res
}

func hookOutcome(name string, err error) string {
	if err != nil {
		return name + ": " + err.Error()
	}
	return name + ": ok"
}

func (d *driver) saveResult(ctx context.Context, p *Progress, res *Result) error {
	val, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return d.writeHeader(ctx, p, clientv3.OpPut(d.cfg.Keys().LastFailover(), string(val)))
}

func (d *driver) writeHeader(ctx context.Context, p *Progress, also ...clientv3.Op) error {
	rctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	return writeHeader(rctx, d.cli, d.cfg.Keys(), p, d.fence, also...)
}

func (d *driver) writeShard(ctx context.Context, s *ShardProgress) error {
	rctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	return writeShard(rctx, d.cli, d.cfg.Keys(), s, d.fence)
}
