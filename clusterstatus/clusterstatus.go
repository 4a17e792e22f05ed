// Package clusterstatus is the read model of a topoha cluster: its state read from both DCs' etcds
// directly (probes, the primary record, the leader, the pause flag, the mirror's checkpoint, fences, the
// last failover), what `topoha status` and the controllers' status API show. It needs no controller.
package clusterstatus

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/fence"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/internal/etcdrec"
	"github.com/topoha/topoha/override"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/replication"
	"github.com/topoha/topoha/witness"
)

// Status is the state of a topoha cluster as read from the etcds directly: what `topoha status`
// shows, with or without a controller running.
type Status struct {
	Cluster string           `json:"cluster"`
	Primary primary.Record   `json:"primary"`
	Leader  *election.Leader `json:"leader"`
	// Paused is true when the pause flag is set, or cannot be read (controllers then act as if it were
	// set); PauseUnknown says why it could not be read.
	Paused       bool             `json:"paused"`
	PauseUnknown string           `json:"pause_unknown,omitempty"`
	DCs          map[string]DC    `json:"dcs"`
	Mirror       Mirror           `json:"mirror"`
	LastFailover *failover.Result `json:"last_failover"`
	// Unfinished is the current epoch's failover while some shard lacks its primary in the primary DC,
	// as its progress record in the primary DC's etcd says; Converger holds its convergence lock.
	Unfinished *failover.Unfinished `json:"failover_unfinished,omitempty"`
	Converger  *election.Leader     `json:"converger,omitempty"`
	// Fences are the DCs that fenced themselves (failover.self_fence), by DC, as their own etcds say.
	Fences map[string]*fence.Record `json:"fences,omitempty"`
	// Witnesses are the configured witnesses' views, asked just now.
	Witnesses []witness.Answer `json:"witnesses,omitempty"`
	// Plan says whether every shard could fail over to the DR DC now, as read from its etcd (`topoha
	// plan` lists every shard).
	Plan     *discovery.Summary `json:"plan,omitempty"`
	Warnings []string           `json:"warnings,omitempty"`
	// Unread are the reads of an etcd that answered its probe that failed anyway (each also a warning):
	// what could not be read may be what is wrong, so status does not call the cluster healthy.
	Unread []string `json:"unread,omitempty"`
}

// unread records a read that failed.
func (st *Status) unread(msg string) {
	st.Warnings = append(st.Warnings, msg)
	st.Unread = append(st.Unread, msg)
}

// DC is one DC's etcd as probed just now.
type DC struct {
	// EtcdHealthy says the cluster serves linearizable reads: State up or degraded.
	EtcdHealthy bool `json:"etcd_healthy"`
	// State is up, degraded (an alarm: writes refused; or etcd refused topoha's user) or down.
	State health.State `json:"state"`
	Error string       `json:"error,omitempty"`
	// Refused says why etcd answered but refused topoha's user (credentials or permissions); the DC then
	// counts as degraded, never as down (docs/operations.md#etcd-permissions).
	Refused  string `json:"refused,omitempty"`
	Revision int64  `json:"revision,omitempty"`
	// Members are the configured endpoints, each as it answered.
	Members []health.Member `json:"members"`
	Alarms  []health.Alarm  `json:"alarms,omitempty"`
}

// Mirror is the mirror's progress according to its checkpoint in the DR etcd.
type Mirror struct {
	Source          string    `json:"source"`
	Destination     string    `json:"destination"`
	AppliedRevision int64     `json:"applied_revision"`
	SourceRevision  int64     `json:"source_revision"`
	LagRevisions    int64     `json:"lag_revisions"`
	Syncing         bool      `json:"syncing"`
	UpdatedAt       time.Time `json:"updated_at,omitzero"`
}

// Read probes both DCs' etcds and reads topoha's records from them. Nothing in it needs a controller;
// what cannot be read is reported as such.
func Read(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client) *Status {
	st := &Status{Cluster: c.Cluster, DCs: map[string]DC{}}
	reads := readDCs(ctx, c, clients)
	observed := map[string]primary.Observed{}
	serving := map[string]*clientv3.Client{}
	for _, dc := range c.DCNames() {
		r := reads[dc]
		st.DCs[dc], observed[dc] = r.dc, r.primary
		if r.dc.EtcdHealthy {
			serving[dc] = clients[dc]
		}
		if last := r.last.Record; last != nil && (st.LastFailover == nil || last.Epoch > st.LastFailover.Epoch) {
			st.LastFailover = last
		}
		if r.fence.Record != nil {
			if st.Fences == nil {
				st.Fences = map[string]*fence.Record{}
			}
			st.Fences[dc] = r.fence.Record
		}
		for _, err := range []error{r.primary.Err, r.fence.Err, r.last.Err} {
			if err != nil {
				st.unread(err.Error())
			}
		}
	}
	st.Primary = primary.HeldByAny(c.InitialPrimary, c.DCNames(), observed)
	dr := c.OtherDC(st.Primary.DC)
	st.Mirror = Mirror{Source: st.Primary.DC, Destination: dr, SourceRevision: st.DCs[st.Primary.DC].Revision}
	// Only from the etcds that answered the probe: a lost DC would cost a request timeout.
	p, ok := override.ReadPause(ctx, c, serving)
	st.Paused = !ok || p.Paused
	switch {
	case ok:
	case len(serving) == 0:
		st.PauseUnknown = "no DC's etcd answers"
	default:
		st.PauseUnknown = "no etcd that answers returned the flag"
	}
	if len(c.Failover.Witnesses) > 0 {
		st.Witnesses = witness.Ask(ctx, c.Failover.Witnesses, c.Health.Timeout)
	}
	if c.Failover.Mode == config.ModeAuto && len(c.Failover.Witnesses) == 0 {
		st.Warnings = append(st.Warnings, "automatic failover with two sites and no witnesses: a partition between the DCs can make both primary")
	}
	// The progress first: it is one key, and what a person must know of first; the plan after it reads
	// the whole topology.
	if st.DCs[st.Primary.DC].EtcdHealthy && st.Primary.Epoch > 0 {
		readProgress(ctx, c, clients[st.Primary.DC], st)
	}
	if st.DCs[dr].EtcdHealthy {
		readDR(ctx, c, clients[dr], dr, st)
	}
	return st
}

// readProgress reads the current epoch's failover progress and its converger from the primary's etcd.
func readProgress(ctx context.Context, c *config.Config, cli *clientv3.Client, st *Status) {
	p, err := failover.ReadUnfinished(ctx, cli, c.Keys(), c.RequestTimeout)
	if err != nil {
		st.unread(err.Error())
		return
	}
	if p == nil || p.Epoch != st.Primary.Epoch {
		return
	}
	if st.Unfinished = p.Unfinished(); st.Unfinished == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	defer cancel()
	l, err := election.CurrentLeader(rctx, cli, c.Keys().Converger())
	if err != nil {
		st.unread(err.Error())
	}
	st.Converger = l
}

// dcRead is what one DC's etcd answered.
type dcRead struct {
	dc      DC
	primary primary.Observed
	fence   fence.Observed
	last    failover.ResultObserved
}

// readDCs probes every DC's etcd at once and reads topoha's records from those that serve.
func readDCs(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client) map[string]dcRead {
	return etcdrec.EachDC(clients, func(dc string, cli *clientv3.Client) dcRead {
		r := dcRead{dc: probeDC(ctx, c, dc)}
		if r.dc.EtcdHealthy {
			rctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
			defer cancel()
			// The result before the record: a failover bumps the record before it saves its result, so
			// the record read next is at least as new as the result, and status never shows a failover
			// to an epoch beyond the primary it names.
			r.last = failover.ReadResult(rctx, cli, c.Keys().LastFailover())
			r.primary = primary.Read(rctx, cli, c.Keys().Primary())
			r.fence = fence.Read(rctx, cli, c.Keys().Fence())
		}
		return r
	})
}

// readDR reads what lives in the DR DC's etcd: the leader, the mirror's checkpoint, and what a failover
// to the DR side would run into, found now rather than at 3 a.m.
func readDR(ctx context.Context, c *config.Config, cli *clientv3.Client, dr string, st *Status) {
	rctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	l, err := election.CurrentLeader(rctx, cli, c.Keys().Election())
	cancel()
	if err != nil {
		st.unread(err.Error())
	}
	st.Leader = l
	cp, err := replication.ReadCheckpoint(ctx, cli, c.Keys().MirrorCheckpoint(), c.RequestTimeout)
	if err != nil {
		st.unread(err.Error())
	}
	if cp != nil {
		st.Mirror.AppliedRevision, st.Mirror.Syncing, st.Mirror.UpdatedAt = cp.Revision, cp.Sync != nil, cp.UpdatedAt
		if st.Mirror.SourceRevision > 0 && cp.Sync == nil {
			st.Mirror.LagRevisions = max(0, st.Mirror.SourceRevision-cp.Revision)
		}
	}
	plan, err := discovery.Compute(ctx, discovery.Input{Config: c, Client: cli, From: st.Primary.DC, To: dr, Epoch: st.Primary.Epoch + 1,
		Timeout: c.RequestTimeout, CheckCells: true})
	if err != nil {
		st.unread("plan: " + err.Error())
		return
	}
	sum := plan.Summarize(5)
	st.Plan = &sum
	for _, w := range plan.Warnings {
		st.Warnings = append(st.Warnings, "plan for a failover to "+dr+": "+w)
	}
}

// probeDC probes every member of dc's etcd once.
func probeDC(ctx context.Context, c *config.Config, dc string) DC {
	hc, err := health.ConfigFor(c, dc)
	if err != nil {
		return DC{State: health.Down, Error: err.Error()}
	}
	res := health.Probe(ctx, hc.Etcd, hc.Key, hc.Timeout)
	ds := DC{State: res.State(), Revision: res.Revision, Members: res.Members, Alarms: res.Alarms, Refused: res.Refused}
	ds.EtcdHealthy = ds.State.Serving()
	if res.Err != nil {
		ds.Error = res.Err.Error()
	}
	return ds
}
