// Package metrics holds the Prometheus counters and histograms that topoha's parts update as things
// happen: probes, mirror batches and resyncs, fence rejections, failovers, promotions, hooks, reloads.
// Gauges that describe current state (leadership, primary, lag) are read from the controller's status at
// scrape time instead, by the HTTP API's collector.
//
// A nil *Metrics is valid and records nothing, so the parts run the same without an HTTP listener.
// docs/metrics.md documents every metric; a test keeps the two in step.
package metrics

import (
	"errors"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics is one process's set of event metrics. Create it with New.
type Metrics struct {
	leaderChanges        prometheus.Counter
	probeDuration        *prometheus.HistogramVec
	probeFailures        *prometheus.CounterVec
	healthTransitions    *prometheus.CounterVec
	mirrorEvents         prometheus.Counter
	mirrorBatches        prometheus.Counter
	mirrorResyncs        *prometheus.CounterVec
	mirrorConflicts      prometheus.Counter
	fenceRejections      *prometheus.CounterVec
	failovers            *prometheus.CounterVec
	failoverDuration     *prometheus.HistogramVec
	promotionDuration    *prometheus.HistogramVec
	hookRuns             *prometheus.CounterVec
	configReloads        *prometheus.CounterVec
	lastReloadSuccessful prometheus.Gauge
	historyWriteFailures *prometheus.CounterVec
	historyDropped       prometheus.Counter
	fenceCommands        *prometheus.CounterVec
}

// Build says which topoha runs, as `topoha version` prints it: the labels of topoha_build_info.
type Build struct {
	Version, Revision, Branch, Date string
}

// New creates the metrics, and topoha_build_info for build, and registers them with reg.
func New(reg prometheus.Registerer, build Build) (*Metrics, error) {
	f := factory{reg: reg}
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "topoha", Name: "build_info",
		Help: "Always 1; the labels say which topoha runs, as topoha version prints it.",
		ConstLabels: prometheus.Labels{"version": build.Version, "revision": build.Revision, "branch": build.Branch,
			"build_date": build.Date, "goversion": runtime.Version(), "goos": runtime.GOOS, "goarch": runtime.GOARCH}},
		func() float64 { return 1 }))
	m := &Metrics{
		leaderChanges: f.counter("leader_changes_total", "Times this controller became or stopped being the leader."),
		probeDuration: f.histogram("etcd_probe_duration_seconds", "Duration of each etcd probe, failed ones included.",
			prometheus.ExponentialBuckets(0.001, 2.5, 10), "dc"),
		probeFailures:     f.counterVec("etcd_probe_failures_total", "Failed etcd probes.", "dc"),
		healthTransitions: f.counterVec("etcd_health_transitions_total", "Changes of a DC's etcd state, after the thresholds.", "dc", "to"),
		mirrorEvents:      f.counter("mirror_events_applied_total", "Puts and deletes written to the mirror's destination."),
		mirrorBatches:     f.counter("mirror_batches_total", "Destination transactions the mirror committed."),
		mirrorResyncs:     f.counterVec("mirror_resyncs_total", "Full syncs of the mirror, by reason.", "reason"),
		mirrorConflicts:   f.counter("mirror_checkpoint_conflicts_total", "Mirror writes refused because another writer moved the checkpoint."),
		fenceRejections:   f.counterVec("fence_rejections_total", "Writes etcd refused because this controller's leadership or epoch was stale.", "writer"),
		failovers:         f.counterVec("failovers_total", "Failovers carried out by this controller, by trigger and result.", "trigger", "result"),
		failoverDuration: f.histogram("failover_duration_seconds", "Failovers from the epoch bump to the stored result.",
			prometheus.ExponentialBuckets(0.25, 2, 12), "trigger"),
		promotionDuration: f.histogram("shard_promotion_duration_seconds", "One promotion attempt of one shard, its command and confirmation; each retry is its own sample.",
			prometheus.ExponentialBuckets(0.1, 2, 12), "keyspace", "shard", "result"),
		hookRuns:             f.counterVec("hook_runs_total", "Hook runs, by hook and result.", "hook", "result"),
		configReloads:        f.counterVec("config_reloads_total", "Config reloads (SIGHUP), by result.", "result"),
		lastReloadSuccessful: f.gauge("config_last_reload_successful", "0 after a refused reload until the next good one."),
		historyWriteFailures: f.counterVec("history_write_failures_total", "History events that could not be written to a DC's etcd.", "dc"),
		historyDropped:       f.counter("history_events_dropped_total", "Events not written to etcd because the queue was full."),
		fenceCommands:        f.counterVec("fence_commands_total", "Self-fencing commands run: fence_command per tablet, unfence_command per lift.", "action", "result"),
	}
	if f.err != nil {
		return nil, f.err
	}
	m.lastReloadSuccessful.Set(1)
	// Series that exist from the start at 0: increase() and rate() cannot see a counter's first event if
	// its series is born with it, so an alert on "a failover happened" would miss the first one.
	for _, trigger := range []string{"auto", "signal", "cli", "flag", "http", "switchover"} {
		for _, result := range []string{"success", "partial", "failed"} {
			m.failovers.WithLabelValues(trigger, result)
		}
	}
	for _, hook := range []string{"before_promote", "after_failover", "on_role_change"} {
		for _, result := range []string{"success", "failure", "timeout"} {
			m.hookRuns.WithLabelValues(hook, result)
		}
	}
	for _, writer := range []string{"mirror", "failover"} {
		m.fenceRejections.WithLabelValues(writer)
	}
	for _, result := range []string{"success", "failure"} {
		m.configReloads.WithLabelValues(result)
		for _, action := range []string{"fence", "unfence"} {
			m.fenceCommands.WithLabelValues(action, result)
		}
	}
	return m, nil
}

// KnownDCs creates the per-DC series at 0 for dcs, for the same reason.
func (m *Metrics) KnownDCs(dcs ...string) {
	if m == nil {
		return
	}
	for _, dc := range dcs {
		m.probeFailures.WithLabelValues(dc)
		m.historyWriteFailures.WithLabelValues(dc)
		for _, to := range []string{"up", "down"} {
			m.healthTransitions.WithLabelValues(dc, to)
		}
	}
}

// factory registers each metric it creates and keeps the first error.
type factory struct {
	reg prometheus.Registerer
	err error
}

func (f *factory) register(c prometheus.Collector) {
	if err := f.reg.Register(c); err != nil {
		f.err = errors.Join(f.err, err)
	}
}

func (f *factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "topoha", Name: name, Help: help})
	f.register(c)
	return c
}

func (f *factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "topoha", Name: name, Help: help}, labels)
	f.register(c)
	return c
}

func (f *factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "topoha", Name: name, Help: help})
	f.register(g)
	return g
}

func (f *factory) histogram(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "topoha", Name: name, Help: help, Buckets: buckets}, labels)
	f.register(h)
	return h
}

// LeaderChanged counts a gain or loss of leadership.
func (m *Metrics) LeaderChanged() {
	if m != nil {
		m.leaderChanges.Inc()
	}
}

// Probed records one probe of dc's etcd.
func (m *Metrics) Probed(dc string, took time.Duration, err error) {
	if m == nil {
		return
	}
	m.probeDuration.WithLabelValues(dc).Observe(took.Seconds())
	if err != nil {
		m.probeFailures.WithLabelValues(dc).Inc()
	}
}

// HealthChanged counts dc's etcd changing to state to ("up" or "down").
func (m *Metrics) HealthChanged(dc, to string) {
	if m != nil {
		m.healthTransitions.WithLabelValues(dc, to).Inc()
	}
}

// MirrorCommitted counts one destination transaction carrying events puts and deletes.
func (m *Metrics) MirrorCommitted(events int) {
	if m != nil {
		m.mirrorBatches.Inc()
		m.mirrorEvents.Add(float64(events))
	}
}

// MirrorResynced counts a full sync started for reason.
func (m *Metrics) MirrorResynced(reason string) {
	if m != nil {
		m.mirrorResyncs.WithLabelValues(reason).Inc()
	}
}

// MirrorConflict counts a mirror write refused because the checkpoint moved.
func (m *Metrics) MirrorConflict() {
	if m != nil {
		m.mirrorConflicts.Inc()
	}
}

// FenceRejected counts a write refused by the fence; writer is "mirror" or "failover".
func (m *Metrics) FenceRejected(writer string) {
	if m != nil {
		m.fenceRejections.WithLabelValues(writer).Inc()
	}
}

// FailedOver records a failover's trigger, result ("success", "partial" or "failed") and duration.
func (m *Metrics) FailedOver(trigger, result string, took time.Duration) {
	if m != nil {
		m.failovers.WithLabelValues(trigger, result).Inc()
		m.failoverDuration.WithLabelValues(trigger).Observe(took.Seconds())
	}
}

// ShardPromoted records one shard's promotion.
func (m *Metrics) ShardPromoted(keyspace, shard string, confirmed bool, took time.Duration) {
	if m == nil {
		return
	}
	result := "failed"
	if confirmed {
		result = "confirmed"
	}
	m.promotionDuration.WithLabelValues(keyspace, shard, result).Observe(took.Seconds())
}

// HookRan counts a hook run; result is "success", "failure" or "timeout".
func (m *Metrics) HookRan(hook, result string) {
	if m != nil {
		m.hookRuns.WithLabelValues(hook, result).Inc()
	}
}

// Reloaded records a config reload and whether it was taken.
func (m *Metrics) Reloaded(ok bool) {
	if m == nil {
		return
	}
	v := 0.0
	if ok {
		v = 1
	}
	m.configReloads.WithLabelValues(outcome(ok)).Inc()
	m.lastReloadSuccessful.Set(v)
}

// HistoryWriteFailed counts an event not written to dc's etcd.
func (m *Metrics) HistoryWriteFailed(dc string) {
	if m != nil {
		m.historyWriteFailures.WithLabelValues(dc).Inc()
	}
}

// HistoryDropped counts an event dropped before it reached etcd.
func (m *Metrics) HistoryDropped() {
	if m != nil {
		m.historyDropped.Inc()
	}
}

// FenceCommandsRan counts a self-fencing command: action is fence or unfence.
func (m *Metrics) FenceCommandsRan(action string, ok bool) {
	if m == nil {
		return
	}
	m.fenceCommands.WithLabelValues(action, outcome(ok)).Inc()
}

func outcome(ok bool) string {
	if ok {
		return "success"
	}
	return "failure"
}
