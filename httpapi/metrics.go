package httpapi

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/topoha/topoha/controller"
	"github.com/topoha/topoha/health"
)

// collector turns a controller's status into metrics at scrape time, so that no package keeps metric
// state of its own.
type collector struct {
	ctl *controller.Controller

	isLeader, primaryEpoch, primaryInfo             *prometheus.Desc
	etcdUp, etcdFailures, etcdLatency               *prometheus.Desc
	mirrorApplied, mirrorSource, mirrorLag          *prometheus.Desc
	mirrorKeys, mirrorTxns, mirrorResyncs, conflict *prometheus.Desc
}

func newCollector(ctl *controller.Controller) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("topoha_"+name, help, labels, nil)
	}
	return &collector{
		ctl:           ctl,
		isLeader:      d("is_leader", "1 when this controller is the leader."),
		primaryEpoch:  d("primary_epoch", "The epoch of the primary record this controller follows."),
		primaryInfo:   d("primary_info", "1 for the DC this controller takes as primary.", "dc"),
		etcdUp:        d("etcd_up", "1 when the DC's etcd is up, 0 when down, -1 while unknown.", "dc"),
		etcdFailures:  d("etcd_probe_consecutive_failures", "Failed probes in a row.", "dc"),
		etcdLatency:   d("etcd_probe_latency_seconds", "Duration of the last probe.", "dc"),
		mirrorApplied: d("mirror_applied_revision", "Source revision the destination is complete up to (leader only)."),
		mirrorSource:  d("mirror_source_revision", "Highest source revision seen (leader only)."),
		mirrorLag:     d("mirror_lag_revisions", "Source revisions not yet known to be applied (leader only)."),
		mirrorKeys:    d("mirror_keys_applied_total", "Puts and deletes written to the destination by this leader term's mirror."),
		mirrorTxns:    d("mirror_transactions_total", "Destination transactions committed by this leader term's mirror."),
		mirrorResyncs: d("mirror_resyncs_total", "Full syncs by reason, in this leader term's mirror.", "reason"),
		conflict:      d("mirror_checkpoint_conflicts_total", "Writes refused because another writer moved the checkpoint."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.ctl.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(c.isLeader, boolFloat(st.Leading))
	gauge(c.primaryEpoch, float64(st.Primary.Epoch))
	if st.Primary.DC != "" {
		gauge(c.primaryInfo, 1, st.Primary.DC)
	}
	for dc, h := range st.Health {
		up := map[health.State]float64{health.Up: 1, health.Down: 0, health.Unknown: -1}[h.State]
		gauge(c.etcdUp, up, dc)
		gauge(c.etcdFailures, float64(h.ConsecutiveFailures), dc)
		gauge(c.etcdLatency, h.LastLatency.Seconds(), dc)
	}
	if m := st.Mirror; m != nil {
		gauge(c.mirrorApplied, float64(m.AppliedRevision))
		gauge(c.mirrorSource, float64(m.SourceRevision))
		gauge(c.mirrorLag, float64(m.LagRevisions()))
		counter(c.mirrorKeys, float64(m.KeysApplied))
		counter(c.mirrorTxns, float64(m.Transactions))
		counter(c.conflict, float64(m.Conflicts))
		for reason, n := range m.Resyncs {
			counter(c.mirrorResyncs, float64(n), reason)
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
