package failover

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/topoha/topoha/metrics"
	"github.com/topoha/topoha/primary"
)

// hookRig is a rig that counts into a fresh registry.
func hookRig(t *testing.T, hooks string) (*rig, *prometheus.Registry) {
	r := newRig(t, "ok", 10*time.Second)
	cfg := *r.cfg
	f := cfg.Failover
	f.Hooks.Timeout = 300 * time.Millisecond
	env := filepath.Join(r.logDir, "$TOPOHA_HOOK.env")
	dump := []string{"sh", "-c", "env | grep ^TOPOHA_ | sort > " + env}
	switch hooks {
	case "before_promote fails":
		f.Hooks.BeforePromote = []string{"sh", "-c", "echo refusing: replicas not caught up; exit 3"}
	case "before_promote hangs":
		// The child sleep must die with the hook: the whole process group is killed at the timeout.
		f.Hooks.BeforePromote = []string{"sh", "-c", "sleep 30 & wait"}
	}
	f.Hooks.AfterFailover = dump
	cfg.Failover = f
	r.cfg = &cfg
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Build{})
	if err != nil {
		t.Fatal(err)
	}
	r.metrics = m
	return r, reg
}

func hookRuns(t *testing.T, reg *prometheus.Registry, hook, result string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "topoha_hook_runs_total" {
			continue
		}
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["hook"] == hook && labels["result"] == result {
				return m.Counter.GetValue()
			}
		}
	}
	return -1
}

// A before_promote that exits non-zero, or hangs past the hook timeout, aborts the promotions (as
// Patroni's pre_promote): no promote command runs, the result is "failed", after_failover still runs and
// is told so.
func TestBeforePromoteVetoesThePromotions(t *testing.T) {
	for name, want := range map[string]string{"before_promote fails": "failure", "before_promote hangs": "timeout"} {
		t.Run(name, func(t *testing.T) {
			r, reg := hookRig(t, name)
			start := time.Now()
			res, err := r.failover(t, decision, primary.Read(ctxT(t), r.clients["dc2"], r.cfg.Keys().Primary()))
			if err == nil || !strings.Contains(err.Error(), "before_promote hook failed, no shard promoted") {
				t.Fatalf("Execute: %v", err)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("the failover took %s: a hanging hook must be killed at its 300ms timeout", took)
			}
			if res.Outcome != ResultFailed || len(res.FailedShards()) != 2 || r.runs(t, "-80") != nil {
				t.Errorf("result %s, shards %v, promote runs %v; want failed with no promotion", res.Outcome, res.Shards, r.runs(t, "-80"))
			}
			if name == "before_promote fails" && !strings.Contains(strings.Join(res.Hooks, "\n"), "exit status 3") {
				t.Errorf("hooks in the result: %v", res.Hooks)
			}
			if got := hookRuns(t, reg, "before_promote", want); got != 1 {
				t.Errorf("topoha_hook_runs_total{before_promote,%s} = %v, want 1", want, got)
			}
			env, err := os.ReadFile(filepath.Join(r.logDir, "after_failover.env"))
			if err != nil {
				t.Fatalf("after_failover did not run: %v", err)
			}
			for _, line := range []string{"TOPOHA_RESULT=failed", "TOPOHA_FAILED_SHARDS=commerce/-80,commerce/80-\n", "TOPOHA_DC=dc2", "TOPOHA_CONTROLLER_ID=ctl-b", "TOPOHA_TRIGGER=auto"} {
				if !strings.Contains(string(env), line) {
					t.Errorf("after_failover env lacks %q:\n%s", line, env)
				}
			}
		})
	}
}
