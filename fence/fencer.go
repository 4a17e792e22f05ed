package fence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/metrics"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/witness"
)

// Config configures a Fencer.
type Config struct {
	// Config returns the configuration in force; it changes on reload.
	Config func() *config.Config
	// DC is the controller's own DC, the one it may fence; ID names the controller.
	DC, ID  string
	Clients map[string]*clientv3.Client
	// Primary returns the primary record the controller follows and whether an etcd answered with it: a
	// guess from initial_primary fences nothing.
	Primary func() (primary.Record, bool)
	// Health returns the controller's view of a DC's etcd.
	Health  func(dc string) health.Snapshot
	Logger  *slog.Logger
	Events  *events.Recorder
	Metrics *metrics.Metrics
}

// Status is what a Fencer knows, for the controller's status.
type Status struct {
	// Record is the fence record of this DC, if there is one.
	Record *Record `json:"record,omitempty"`
	// Unrecorded is true while this controller's fence could not be written to its DC's etcd yet.
	Unrecorded bool `json:"unrecorded,omitempty"`
	// IsolatedSince is when this controller lost both the DR etcd and the witnesses' majority, while its
	// DC is primary.
	IsolatedSince time.Time `json:"isolated_since,omitzero"`
	// Armed is true while this DC is primary, self-fencing is on, and the DR etcd was seen up at this epoch.
	Armed   bool   `json:"armed"`
	Problem string `json:"problem,omitempty"`
}

// Fenced says whether this DC's primaries are (being) made read-only.
func (s Status) Fenced() bool { return s.Record != nil && s.Record.State == StateFenced }

// Fencer watches, from one controller of a DC, whether that DC must fence itself or may lift its fence.
type Fencer struct {
	cfg Config
	log *slog.Logger
	ev  *events.Recorder

	// Owned by Run's goroutine.
	witnessLost time.Time // when the witnesses' majority was first seen unreachable, in the current streak
	sawFence    time.Time // when a fence record of this DC was last seen
	armedEpoch  int64     // the current epoch, once this DC was seen primary at it with the DR etcd up; -1 before
	unrecorded  *Record   // a fence put up while this DC's etcd did not answer
	retryAt     time.Time // next retry of tablets whose fence command failed
	retries     int
	toldStale   int64 // the epoch for which "stays fenced" was recorded
	// primaries are, with failover.shards: auto, the tablets to fence as last read while armed (every
	// failover.discovery.interval): what the fence uses when this DC's etcd does not answer at that moment.
	primaries   []Tablet
	primariesAt time.Time

	mu     sync.Mutex
	status Status
}

// New returns a Fencer for cfg.
func New(cfg Config) (*Fencer, error) {
	if cfg.Config == nil || cfg.Primary == nil || cfg.Health == nil || cfg.Clients[cfg.DC] == nil || cfg.ID == "" {
		return nil, errors.New("fence: Config, Primary, Health, ID and a client of the controller's own DC are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Events == nil {
		cfg.Events = events.LogOnly(cfg.Logger)
	}
	return &Fencer{cfg: cfg, log: cfg.Logger, ev: cfg.Events, toldStale: -1, armedEpoch: -1}, nil
}

// Status returns what the Fencer knows.
func (f *Fencer) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

// Run checks every health interval until ctx ends. Fence and unfence commands run in it, each with its
// own timeout.
func (f *Fencer) Run(ctx context.Context) error {
	for {
		f.step(ctx, time.Now())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(f.cfg.Config().Health.Interval):
		}
	}
}

func (f *Fencer) step(ctx context.Context, now time.Time) {
	c := f.cfg.Config()
	key := c.Keys().Fence()
	local := f.cfg.Clients[f.cfg.DC]
	rec, known := f.cfg.Primary()
	since := f.isolatedSince(ctx, c, rec, now)

	rctx, cancel := context.WithTimeout(ctx, fencingTimeout(c))
	obs := Read(rctx, local, key)
	cancel()
	switch {
	case obs.Err != nil && obs.ModRevision != 0:
		// Garbage: neither fence nor lift on it.
		f.setStatus(nil, since, obs.Err.Error())
		return
	case obs.Err != nil:
		// This DC's etcd does not answer: what this controller put up itself is all it knows.
		f.setStatus(f.unrecorded, since, "")
		if f.unrecorded == nil && f.due(c, rec, known, since, now) {
			f.fence(ctx, c, rec, since, now)
		}
		return
	case f.unrecorded != nil:
		f.record(ctx, c, obs)
		return
	}
	f.setStatus(obs.Record, since, "")
	f.learnPrimaries(ctx, c, rec, now)
	r := obs.Record
	if r != nil {
		f.sawFence = now
	}
	switch {
	case r == nil:
		if f.due(c, rec, known, since, now) {
			f.fence(ctx, c, rec, since, now)
		}
	case r.State == StateLifted:
		if f.linkBack(ctx, c) != nil {
			f.removeRecord(ctx, c, obs, "the link is back: self-fencing is armed again after the operator's lift")
		}
	case known && rec.DC == f.cfg.DC && rec.Epoch > r.Epoch:
		f.removeRecord(ctx, c, obs, fmt.Sprintf("the fence of epoch %d is obsolete: %s is primary again at epoch %d", r.Epoch, f.cfg.DC, rec.Epoch))
	default:
		f.whileFenced(ctx, c, obs, since, now)
	}
}

// whileFenced retries tablets whose fence command failed while the DC is still cut off, and lifts the
// fence once the link is back and the epoch is still the fenced one.
func (f *Fencer) whileFenced(ctx context.Context, c *config.Config, obs Observed, since, now time.Time) {
	r := obs.Record
	if !since.IsZero() {
		if f.retryDue(c, r, now) {
			f.retries++
			f.retryAt = now.Add(min(c.Health.Interval<<min(f.retries, 10), 30*time.Second))
			if len(r.Tablets) == 0 {
				// Put up while nothing said which tablets: this DC's etcd answers now (its fence record
				// was just read), so they are read again.
				rctx, cancel := context.WithTimeout(ctx, fencingTimeout(c))
				found := f.targets(rctx, c)
				cancel()
				if len(found) == 0 {
					return
				}
				withTablets := *r
				withTablets.Tablets = found
				obs = Observed{Record: &withTablets, ModRevision: obs.ModRevision}
			}
			f.runFence(ctx, c, obs, "retry")
		}
		return
	}
	held := f.linkBack(ctx, c)
	switch {
	case held == nil:
		return // the other DC's record is not readable yet: nothing proves the epoch is still ours
	case r.StillPrimary(*held):
		// One controller of the DC lifts it: the one that marks the record first. A mark older than one
		// lift can take belongs to a controller that died meanwhile.
		if r.LiftedBy != "" && r.LiftedBy != f.cfg.ID && now.Sub(r.LiftedAt) < c.Failover.PromoteTimeout+2*c.Health.Interval {
			return
		}
		mark := *r
		mark.LiftedBy, mark.LiftedAt = f.cfg.ID, now.UTC()
		wctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
		rev, err := write(wctx, f.cfg.Clients[f.cfg.DC], c.Keys().Fence(), &mark, obs.ModRevision)
		cancel()
		if err != nil || rev == 0 {
			return
		}
		err = Lift(ctx, c, r)
		f.cfg.Metrics.FenceCommandsRan("unfence", err == nil)
		if err != nil {
			f.ev.Error(events.KindFence, "fence not lifted; tried again next interval", "dc", r.DC, "err", err)
			return
		}
		dctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
		ok, err := Delete(dctx, f.cfg.Clients[f.cfg.DC], c.Keys().Fence(), rev)
		cancel()
		if ok {
			f.ev.Info(events.KindFence, "fence lifted: the link is back and this DC is still primary at the fenced epoch",
				"dc", r.DC, "epoch", r.Epoch, "fenced_for", time.Since(r.At).Round(time.Millisecond), "tablets", len(r.Tablets))
		} else if err != nil {
			f.log.Warn("fence: tablets unfenced but the record not deleted; tried again next interval", "err", err)
		}
	case f.toldStale != held.Epoch:
		f.toldStale = held.Epoch
		f.ev.Error(events.KindFence, "stays fenced: the other DC became primary meanwhile, so this DC's tablets are the old side; "+
			"reparent them as replicas, then run `topoha unfence --clear`", "dc", r.DC, "fenced_epoch", r.Epoch, "primary", held.DC, "epoch", held.Epoch)
	}
}

// retryDue says whether the fence commands of r's unfenced tablets should run again: some failed, the
// controller that claimed the fence did not report within a command's timeout (it may have died), or the
// fence has no tablet because none could be read when it went up (discovered shards).
func (f *Fencer) retryDue(c *config.Config, r *Record, now time.Time) bool {
	if now.Before(f.retryAt) {
		return false
	}
	if len(r.Tablets) == 0 {
		return c.Failover.Shards.Auto
	}
	if r.FencedCount() == len(r.Tablets) {
		return false
	}
	for _, t := range r.Tablets {
		if t.Error != "" {
			return true
		}
	}
	return now.Sub(r.At) > fenceTimeout(c)+2*c.Health.Interval
}

// isolatedSince returns since when this controller has been cut off from both the DR etcd and a majority
// of the witnesses while its DC is primary, or zero if it is not (or self-fencing is off).
//
// Self-fencing arms only once the DR etcd has been seen up while this DC is primary at the current epoch.
// A DC that became primary because the other one was lost must not fence itself for that loss, and a
// controller started during a partition does not know that the other side was ever there to promote.
func (f *Fencer) isolatedSince(ctx context.Context, c *config.Config, rec primary.Record, now time.Time) time.Time {
	if !c.Failover.SelfFence || rec.DC != f.cfg.DC {
		f.witnessLost, f.armedEpoch = time.Time{}, -1
		return time.Time{}
	}
	if f.armedEpoch != rec.Epoch {
		f.armedEpoch = -1
	}
	dr := f.cfg.Health(c.OtherDC(f.cfg.DC))
	if dr.State.Serving() && f.armedEpoch < 0 {
		f.armedEpoch = rec.Epoch
		f.ev.Info(events.KindFence, "self-fencing armed: this DC is primary and the DR etcd is up", "dc", f.cfg.DC, "epoch", rec.Epoch)
	}
	if f.armedEpoch < 0 {
		return time.Time{}
	}
	// The witnesses are asked every interval, not only once the DR etcd looks down: their loss must be
	// dated from when it happened, like the etcd's.
	if n := len(c.Failover.Witnesses); n > 0 {
		reached := 0
		for _, a := range witness.Ask(ctx, c.Failover.Witnesses, c.Health.Timeout) {
			if a.Error == "" {
				reached++
			}
		}
		if reached > n/2 {
			f.witnessLost = time.Time{}
			return time.Time{}
		}
		if f.witnessLost.IsZero() {
			f.witnessLost = now
		}
	}
	if dr.State != health.Down {
		return time.Time{}
	}
	if dr.Since.After(f.witnessLost) {
		return dr.Since
	}
	return f.witnessLost
}

// due says whether this DC must fence itself now. The isolation is counted from no earlier than the last
// time a fence record was seen: when another controller of the DC lifts the fence because it sees the link
// back, this one's probes may not have caught up yet, and must not put the fence straight back up.
func (f *Fencer) due(c *config.Config, rec primary.Record, known bool, since, now time.Time) bool {
	if since.IsZero() || !known || rec.DC != f.cfg.DC {
		return false
	}
	if since.Before(f.sawFence) {
		since = f.sawFence
	}
	return now.Sub(since) >= c.Failover.FenceAfter
}

// fence puts the fence up: it claims the record in this DC's etcd (the first controller of the DC to
// claim it runs the commands) and runs fence_command for every shard. If this DC's etcd does not answer,
// the commands run anyway, and the record is written when it answers again.
// targets are the tablets to fence: with listed shards, as the config and the DC's etcd say; with
// discovered ones, the primaries the DC's etcd names, or the last ones read while armed when it does not
// answer. Discovered targets that cannot be known are said loudly: a fence that makes nothing read-only
// still answers 503 on /primary, and must not pass for a fence of the primaries.
func (f *Fencer) targets(ctx context.Context, c *config.Config) []Tablet {
	if !c.Failover.Shards.Auto {
		return targets(ctx, c, f.cfg.Clients[f.cfg.DC], f.cfg.DC)
	}
	found, unknown, err := discoveredTargets(ctx, c, f.cfg.Clients[f.cfg.DC], f.cfg.DC)
	if len(unknown) > 0 {
		f.ev.Error(events.KindFence, "self-fence: these shards' Shard records cannot be decoded, so their primaries are not fenced; make them read-only by hand if they are in this DC",
			"dc", f.cfg.DC, "shards", strings.Join(unknown, ","))
	}
	switch {
	case err == nil:
		return found
	case f.primariesAt.IsZero():
		f.ev.Error(events.KindFence, "self-fence: NO tablet made read-only: this DC's etcd does not answer and no primaries were read while armed; "+
			"/primary answers 503, but the primaries stay writable: make them read-only by hand. Tried again while the fence holds", "dc", f.cfg.DC, "err", err)
		return nil
	default:
		f.ev.Warn(events.KindFence, "fencing the primaries last read: this DC's etcd does not answer", "read_at", f.primariesAt, "tablets", len(f.primaries), "err", err)
		return slices.Clone(f.primaries)
	}
}

// learnPrimaries reads the tablets a fence would fence every failover.discovery.interval while this DC
// is primary and self-fencing is on, with discovered shards.
func (f *Fencer) learnPrimaries(ctx context.Context, c *config.Config, rec primary.Record, now time.Time) {
	if !c.Failover.Shards.Auto || !c.Failover.SelfFence || rec.DC != f.cfg.DC || now.Sub(f.primariesAt) < c.Failover.Discovery.Interval {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	defer cancel()
	if found, _, err := discoveredTargets(rctx, c, f.cfg.Clients[f.cfg.DC], f.cfg.DC); err == nil {
		f.primaries, f.primariesAt = found, now
	}
}

func (f *Fencer) fence(ctx context.Context, c *config.Config, rec primary.Record, since, now time.Time) {
	dr := c.OtherDC(f.cfg.DC)
	reason := fmt.Sprintf("cut off from %s's etcd", dr)
	if len(c.Failover.Witnesses) > 0 {
		reason += " and from a majority of the witnesses"
	}
	reason += fmt.Sprintf(" for %s (failover.fence_after %s)", now.Sub(since).Round(time.Millisecond), c.Failover.FenceAfter)
	// One deadline for every etcd call before the commands: with this DC's etcd down, the fence must not
	// wait a timeout per shard, and the time left before the other side may promote is short.
	rctx, cancel := context.WithTimeout(ctx, fencingTimeout(c))
	r := &Record{DC: f.cfg.DC, State: StateFenced, Epoch: rec.Epoch, By: f.cfg.ID, At: now.UTC(), Reason: reason,
		Tablets: f.targets(rctx, c)}
	rev, err := write(rctx, f.cfg.Clients[f.cfg.DC], c.Keys().Fence(), r, 0)
	cancel()
	switch {
	case err == nil && rev == 0:
		return // another controller of this DC claimed it first; it runs the commands
	case err != nil:
		f.ev.Warn(events.KindFence, "fencing although this DC's etcd does not answer; the fence is recorded when it does", "err", err)
		f.unrecorded = r
	}
	f.ev.Warn(events.KindFence, "self-fencing: making this DC's primaries read-only before the other side may promote",
		"dc", r.DC, "epoch", r.Epoch, "reason", reason, "tablets", len(r.Tablets))
	f.retries, f.retryAt = 0, now.Add(c.Health.Interval)
	f.runFence(ctx, c, Observed{Record: r, ModRevision: rev}, "fence")
}

// runFence runs fence_command for the tablets of o's record not fenced yet and writes the outcome back.
func (f *Fencer) runFence(ctx context.Context, c *config.Config, o Observed, what string) {
	r := *o.Record
	r.Tablets = append([]Tablet(nil), r.Tablets...)
	ran, failed := fenceTablets(ctx, c, &r)
	for range ran - failed {
		f.cfg.Metrics.FenceCommandsRan("fence", true)
	}
	for range failed {
		f.cfg.Metrics.FenceCommandsRan("fence", false)
	}
	var failures []string
	for _, t := range r.Tablets {
		if t.Error != "" {
			failures = append(failures, t.Error+": "+t.Output)
		}
	}
	level := slog.LevelWarn
	if failed > 0 {
		level = slog.LevelError
	}
	f.ev.Record(level, events.KindFence, "self-fence commands ran", "dc", r.DC, "run", what,
		"fenced", fmt.Sprintf("%d of %d", r.FencedCount(), len(r.Tablets)), "failures", strings.Join(failures, "; "))
	// The status says fenced at once, before the record is written back (which can take the health
	// timeout): /primary must stop sending traffic here now, not an interval later.
	f.setStatus(&r, f.Status().IsolatedSince, "")
	recorded := false
	if f.unrecorded == nil {
		wctx, cancel := context.WithTimeout(ctx, fencingTimeout(c))
		_, err := write(wctx, f.cfg.Clients[f.cfg.DC], c.Keys().Fence(), &r, o.ModRevision)
		cancel()
		recorded = err == nil
	}
	if !recorded {
		f.unrecorded = &r
	}
}

// record writes a fence put up while this DC's etcd did not answer; a fence some other controller
// recorded meanwhile is kept, and this one's tablets' outcomes are not lost: they are retried under it.
func (f *Fencer) record(ctx context.Context, c *config.Config, obs Observed) {
	if obs.Record == nil {
		wctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
		rev, err := write(wctx, f.cfg.Clients[f.cfg.DC], c.Keys().Fence(), f.unrecorded, 0)
		cancel()
		if err != nil || rev == 0 {
			return
		}
		f.ev.Info(events.KindFence, "the fence is recorded in this DC's etcd", "dc", f.cfg.DC)
	}
	f.unrecorded = nil
}

// linkBack reads the primary record from both etcds and returns the one that holds, or nil unless both
// answered: only then is it known whether the other side promoted.
func (f *Fencer) linkBack(ctx context.Context, c *config.Config) *primary.Record {
	obs := primary.ReadAll(ctx, f.cfg.Clients, c.Keys().Primary(), c.RequestTimeout)
	rec, err := primary.HeldByEvery(c.InitialPrimary, c.DCNames(), obs)
	if err != nil {
		return nil
	}
	return &rec
}

func (f *Fencer) removeRecord(ctx context.Context, c *config.Config, obs Observed, why string) {
	dctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	ok, err := Delete(dctx, f.cfg.Clients[f.cfg.DC], c.Keys().Fence(), obs.ModRevision)
	cancel()
	if ok {
		f.ev.Info(events.KindFence, "fence record removed: "+why, "dc", obs.Record.DC, "epoch", obs.Record.Epoch)
	} else if err != nil {
		f.log.Warn("fence: record not removed; tried again next interval", "err", err)
	}
}

// fencingTimeout bounds the etcd calls on the way to a fence: the fence races failover.after on the other
// side, so they get a probe's time (health.timeout), not request_timeout.
func fencingTimeout(c *config.Config) time.Duration { return c.Health.Timeout }

func (f *Fencer) setStatus(r *Record, since time.Time, problem string) {
	f.mu.Lock()
	f.status = Status{Record: r, Unrecorded: f.unrecorded != nil, IsolatedSince: since, Armed: f.armedEpoch >= 0, Problem: problem}
	f.mu.Unlock()
}
