package httpapi

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/topoha/topoha/controller"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/replication"
)

// collector reads the gauges of current state from the controller's status at scrape time, so that they
// can never disagree with /status. Counters and histograms of events live in package metrics.
type collector struct {
	ctl *controller.Controller

	isLeader, loopAt, primaryEpoch, primaryInfo, paused *prometheus.Desc
	phase, phaseSince                                   *prometheus.Desc
	fenced                                              *prometheus.Desc
	converging, unconfirmed, heldShards, unfinishedAt   *prometheus.Desc
	etcdUp, etcdFailures                                *prometheus.Desc
	etcdState, etcdAlarm                                *prometheus.Desc
	etcdMembersServing, etcdMembersConfigured           *prometheus.Desc
	mirrorApplied, mirrorSource                         *prometheus.Desc
	mirrorLag, mirrorLagSeconds, mirrorSyncing          *prometheus.Desc
	planShards, planReady, planRefreshed                *prometheus.Desc
}

func newCollector(ctl *controller.Controller) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("topoha_"+name, help, labels, nil)
	}
	return &collector{
		ctl:          ctl,
		isLeader:     d("is_leader", "1 when this controller is the leader."),
		loopAt:       d("loop_last_run_timestamp_seconds", "Unix time the control loop last ran."),
		phase:        d("phase", "1 for the phase this controller is in (following, blocked, demoting, awaiting_epoch, mirroring, failing_over, switching_over), 0 for the others.", "phase"),
		phaseSince:   d("phase_since_timestamp_seconds", "Unix time this controller entered its current phase."),
		primaryEpoch: d("primary_epoch", "The epoch of the primary record this controller follows."),
		primaryInfo:  d("primary_info", "1 for the DC this controller takes as primary.", "dc"),
		paused:       d("paused", "1 while automatic failover is paused."),
		fenced:       d("fenced", "1 while this controller's DC has fenced itself (failover.self_fence)."),
		converging:   d("converging", "1 while this controller holds the convergence lock of an unfinished failover and drives its shards."),
		unconfirmed: d("failover_unconfirmed_shards",
			"Shards of the current epoch's failover whose Shard record does not name a tablet of the primary DC yet (0 when none); held ones included."),
		heldShards:   d("failover_held_shards", "Shards of the current epoch's failover that a person holds (topoha pause --shard)."),
		unfinishedAt: d("failover_unfinished_since_timestamp_seconds", "Unix time the current epoch's failover started, while some shard lacks its primary; 0 otherwise."),
		etcdUp:       d("etcd_up", "1 when the DC's etcd serves linearizable reads (up or degraded), 0 when down, -1 while unknown.", "dc"),
		etcdState:    d("etcd_state", "1 for the state the DC's etcd is in (up, degraded, down, unknown), 0 for the others.", "dc", "state"),
		etcdAlarm:    d("etcd_alarm", "1 while the alarm is raised in the DC's etcd cluster, 0 while not (NOSPACE, CORRUPT).", "dc", "alarm"),
		etcdMembersServing: d("etcd_members_serving",
			"Members of the DC's etcd that served the last probe's linearizable read.", "dc"),
		etcdMembersConfigured: d("etcd_members_configured", "Endpoints configured for the DC's etcd (dcs.<dc>.etcd.endpoints).", "dc"),
		etcdFailures:          d("etcd_probe_consecutive_failures", "Failed probes in a row.", "dc"),
		mirrorApplied:         d("mirror_applied_revision", "Source revision the destination is complete up to (leader only)."),
		mirrorSource:          d("mirror_source_revision", "Highest source revision seen (leader only)."),
		mirrorLag:             d("mirror_lag_revisions", "Source revisions not yet known to be applied (leader only)."),
		mirrorLagSeconds:      d("mirror_lag_seconds", "Seconds since the destination was last known to hold everything the source had (leader only)."),
		mirrorSyncing:         d("mirror_syncing", "1 while a full sync runs (leader only)."),
		planShards:            d("plan_shards", "Shards of the latest plan for a failover to the DR DC, by whether they can fail over now (leader only).", "state"),
		planReady:             d("plan_ready", "1 when the leader's latest plan would promote every shard: there are shards, none has a problem, and the plan has none of its own (leader only)."),
		planRefreshed:         d("plan_refreshed_timestamp_seconds", "Unix time the leader last computed the plan (leader only)."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.ctl.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.isLeader, boolFloat(st.Leading))
	if p := c.ctl.Plan(); p != nil {
		ready, notReady := p.Counts()
		gauge(c.planShards, float64(ready), "ready")
		gauge(c.planShards, float64(notReady), "not_ready")
		gauge(c.planReady, boolFloat(p.Ready()))
		gauge(c.planRefreshed, float64(p.ComputedAt.UnixNano())/1e9)
	}
	for _, p := range controller.Phases() {
		gauge(c.phase, boolFloat(st.Phase == p), string(p))
	}
	gauge(c.phaseSince, float64(st.PhaseSince.UnixNano())/1e9)
	if !st.LoopAt.IsZero() {
		gauge(c.loopAt, float64(st.LoopAt.UnixNano())/1e9)
	}
	gauge(c.primaryEpoch, float64(st.Primary.Epoch))
	if st.Primary.DC != "" {
		gauge(c.primaryInfo, 1, st.Primary.DC)
	}
	gauge(c.paused, boolFloat(st.Paused))
	gauge(c.fenced, boolFloat(st.Fence.Fenced()))
	gauge(c.converging, boolFloat(st.Convergence.Holding))
	unconfirmed, held, unfinishedAt := 0, 0, 0.0
	if u := st.Convergence.Unfinished; u != nil {
		unconfirmed, unfinishedAt = len(u.Unconfirmed), float64(u.StartedAt.UnixNano())/1e9
		for _, s := range u.Unconfirmed {
			if s.State == failover.ShardHeld {
				held++
			}
		}
	}
	gauge(c.unfinishedAt, unfinishedAt)
	gauge(c.unconfirmed, float64(unconfirmed))
	gauge(c.heldShards, float64(held))
	for dc, h := range st.Health {
		up := map[health.State]float64{health.Up: 1, health.Degraded: 1, health.Down: 0, health.Unknown: -1}[h.State]
		gauge(c.etcdUp, up, dc)
		for _, state := range []health.State{health.Up, health.Degraded, health.Down, health.Unknown} {
			gauge(c.etcdState, boolFloat(h.State == state), dc, string(state))
		}
		// The alarms etcd knows are always there, 0 or 1, so that an alert can tell "none" from "not scraped".
		alarms := map[string]bool{"NOSPACE": false, "CORRUPT": false}
		for _, a := range h.Alarms {
			alarms[a.Type] = true
		}
		for alarm, on := range alarms {
			gauge(c.etcdAlarm, boolFloat(on), dc, alarm)
		}
		gauge(c.etcdFailures, float64(h.ConsecutiveFailures), dc)
		gauge(c.etcdMembersServing, float64(h.Serving()), dc)
		gauge(c.etcdMembersConfigured, float64(len(c.ctl.Config().DCs[dc].Etcd.Endpoints)), dc)
	}
	if m := st.Mirror; m != nil {
		gauge(c.mirrorApplied, float64(m.AppliedRevision))
		gauge(c.mirrorSource, float64(m.SourceRevision))
		gauge(c.mirrorLag, float64(m.LagRevisions()))
		gauge(c.mirrorLagSeconds, m.LagSeconds(time.Now()))
		gauge(c.mirrorSyncing, boolFloat(m.Phase == replication.PhaseSyncing))
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
