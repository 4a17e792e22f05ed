// Package election elects one leader among topoha controllers through etcd
// (go.etcd.io/etcd/client/v3/concurrency), and gives the leader the fence that every one of its writes
// carries.
//
// It handles the known pitfalls of the concurrency package: Campaign does not return when the session's
// lease expires (it is run under a context that ends with the session); Observe reports puts but not
// deletes (Leader reads the current leader instead); a leader stops acting the moment its lease is lost
// (the term's context is canceled); the lease is refreshed one deadline-bound request at a time, so one
// hung etcd member cannot let it expire (keepLease); and Run resigns when its context ends, so the next
// leader starts at once instead of after the TTL.
package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Config configures an Elector.
type Config struct {
	Client *clientv3.Client
	// Member is the configuration Client was made from (config.Config.EtcdClientConfig): the lease is
	// refreshed through a client of each of Client's endpoints made from it (keepLease). Its Endpoints are
	// not used.
	Member clientv3.Config
	// Prefix is the election's key prefix, e.g. /topoha/prod/election/.
	Prefix string
	// ID and DC identify this candidate in the leader key's value.
	ID, DC string
	// TTL is the session lease's time to live, in whole seconds: a leader that stops refreshing it loses
	// leadership within TTL.
	TTL time.Duration
	// RequestTimeout bounds every request that is not a wait (grant, resign): request_timeout. Required.
	RequestTimeout time.Duration
	// RetryInterval is the wait after a failed session or campaign. Default TTL/4.
	RetryInterval time.Duration

	// OnStartedLeading runs when this candidate becomes leader. ctx ends when leadership ends (session
	// lost, or Run's context done); the leader must stop acting then. Run waits for it to return before
	// campaigning again.
	OnStartedLeading func(ctx context.Context, term Term)

	Logger *slog.Logger
}

// Term is one leadership term.
type Term struct {
	Leader
	// Key is the leader key; Revision its create revision. Together they identify the term.
	Key      string
	Revision int64
	Lease    clientv3.LeaseID

	election *concurrency.Election
}

// Announce puts what the leader is doing (phase, since when) into the leader key's value, under the
// term's fence (concurrency.Election.Proclaim): what `topoha status` shows of the leader. It fails once
// the term is over.
func (t Term) Announce(ctx context.Context, phase string, since time.Time) error {
	l := t.Leader
	l.Phase, l.PhaseSince = phase, since.UTC()
	val, err := json.Marshal(l)
	if err == nil {
		err = t.election.Proclaim(ctx, string(val))
	}
	if err != nil {
		return fmt.Errorf("announce the leader's phase %s: %w", phase, err)
	}
	return nil
}

// Fence is the condition every write of this term carries: the leader key still exists with the create
// revision it had when the term began. A deposed leader's write fails it.
func (t Term) Fence() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(t.Key), "=", t.Revision)
}

// Leader is what the leader key holds.
type Leader struct {
	ID    string    `json:"id"`
	DC    string    `json:"dc"`
	Since time.Time `json:"since"`
	// Phase is what the leader last announced it is doing (Term.Announce), and since when.
	Phase      string    `json:"phase,omitempty"`
	PhaseSince time.Time `json:"phase_since,omitzero"`
}

// Elector campaigns for leadership. Create it with New and run it with Run.
type Elector struct {
	cfg Config
	log *slog.Logger
}

// New validates cfg and returns an Elector.
func New(cfg Config) (*Elector, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("election: Client is required")
	case len(cfg.Client.Endpoints()) == 0:
		return nil, errors.New("election: Client has no endpoints")
	case cfg.Member.Username != cfg.Client.Username:
		return nil, fmt.Errorf("election: Member logs in as %q, Client as %q: Member must be the configuration Client was made from", cfg.Member.Username, cfg.Client.Username)
	case cfg.Prefix == "" || cfg.Prefix[len(cfg.Prefix)-1] != '/':
		return nil, fmt.Errorf("election: Prefix %q must end with '/'", cfg.Prefix)
	case cfg.ID == "":
		return nil, errors.New("election: ID is required")
	case cfg.TTL < time.Second || cfg.TTL%time.Second != 0:
		return nil, fmt.Errorf("election: TTL %s must be a whole number of seconds, at least 1s", cfg.TTL)
	case cfg.OnStartedLeading == nil:
		return nil, errors.New("election: OnStartedLeading is required")
	case cfg.RequestTimeout <= 0:
		return nil, fmt.Errorf("election: RequestTimeout %s must be positive (request_timeout)", cfg.RequestTimeout)
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = cfg.TTL / 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Elector{cfg: cfg, log: cfg.Logger.With("election", cfg.Prefix)}, nil
}

// Run campaigns, leads, and campaigns again when a term ends, until ctx is done; it then resigns if it
// leads and returns ctx.Err().
func (e *Elector) Run(ctx context.Context) error {
	for {
		err := e.term(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e.log.Warn("not leading; campaigning again", "err", err, "retry_in", e.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(e.cfg.RetryInterval):
		}
	}
}

// Start runs Run in a goroutine of its own, and returns stop, which ends it (a term it holds is resigned)
// and waits until it has returned.
func (e *Elector) Start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

var errSessionLost = errors.New("election session lost: its lease expired or could not be refreshed")

// term runs one session: campaign, then lead until the session or ctx ends.
func (e *Elector) term(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	lease, err := e.cfg.Client.Grant(gctx, int64(e.cfg.TTL/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("grant election lease: %w", err)
	}
	sess, err := concurrency.NewSession(e.cfg.Client, concurrency.WithLease(lease.ID),
		concurrency.WithTTL(int(e.cfg.TTL/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		e.revoke(lease.ID)
		return fmt.Errorf("start election session: %w", err)
	}
	defer e.closeSession(sess)

	// Campaign waits for the earlier candidates' keys to go, but not for its own lease to expire: a
	// candidate partitioned from etcd would wait forever. Tie it to the lease. The lease's life is judged
	// by keepLease, not by sess.Done(): the session's own keepalive stream can sit on a hung member.
	sessCtx, cancelSess := context.WithCancel(ctx)
	defer cancelSess()
	lost := keepLease(sessCtx, e.cfg.Member, e.cfg.Client.Endpoints(), lease.ID, e.cfg.TTL)
	go func() {
		select {
		case <-lost:
			cancelSess()
		case <-sessCtx.Done():
		}
	}()

	el := concurrency.NewElection(sess, e.cfg.Prefix)
	me := Leader{ID: e.cfg.ID, DC: e.cfg.DC, Since: time.Now().UTC()}
	val, _ := json.Marshal(me)
	// WithRequireLeader: the wait for earlier candidates' keys to go is a watch, and one on a member cut off
	// from its peers would never see them go; it ends instead, and the campaign starts again elsewhere.
	if err := el.Campaign(clientv3.WithRequireLeader(sessCtx), string(val)); err != nil {
		if ctx.Err() == nil && sessCtx.Err() != nil {
			return errSessionLost
		}
		return fmt.Errorf("campaign: %w", err)
	}
	me.Since = time.Now().UTC()
	term := Term{Leader: me, Key: el.Key(), Revision: el.Rev(), Lease: sess.Lease(), election: el}
	e.log.Info("leading", "key", term.Key, "revision", term.Revision)

	led := make(chan struct{})
	go func() {
		defer close(led)
		e.cfg.OnStartedLeading(sessCtx, term)
	}()
	select {
	case <-sessCtx.Done():
	case <-led:
	}
	cancelSess()
	<-led
	if ctx.Err() != nil {
		// Resigning deletes the key now, so the next leader need not wait for the lease to expire.
		rctx, cancel := context.WithTimeout(context.Background(), e.cfg.RequestTimeout)
		err := el.Resign(rctx)
		cancel()
		e.log.Info("resigned", "err", err)
		return ctx.Err()
	}
	select {
	case <-lost:
		e.log.Warn("leadership lost: the election lease expired or could not be refreshed")
		return errSessionLost
	default:
		return errors.New("the leader's work returned; leadership given up")
	}
}

func (e *Elector) closeSession(sess *concurrency.Session) {
	sess.Orphan()
	e.revoke(sess.Lease())
}

func (e *Elector) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RequestTimeout)
	defer cancel()
	_, _ = e.cfg.Client.Revoke(ctx, id)
}

// CurrentLeader reads the leader of the election at prefix: the candidate key with the lowest create
// revision. It returns nil when there is none. Unlike concurrency.Election.Observe it sees a leader go.
func CurrentLeader(ctx context.Context, cli *clientv3.Client, prefix string) (*Leader, error) {
	resp, err := cli.Get(ctx, prefix, clientv3.WithFirstCreate()...)
	if err != nil {
		return nil, fmt.Errorf("read leader at %s: %w", prefix, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var l Leader
	if err := json.Unmarshal(resp.Kvs[0].Value, &l); err != nil {
		return nil, fmt.Errorf("leader key %s holds %q, not a topoha leader: %w", resp.Kvs[0].Key, resp.Kvs[0].Value, err)
	}
	return &l, nil
}
