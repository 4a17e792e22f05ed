package main

// Golden-file tests of the text that people and scripts read: `topoha status` and `topoha history`.
// Run `go test ./cmd/topoha -run Golden -update` to rewrite the files after an intended change, and
// review the diff.

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/clusterstatus"
	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/discovery"
	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/fence"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/witness"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

var goldenNow = time.Date(2026, 11, 24, 3, 12, 40, 0, time.UTC)

func goldenConfig(t *testing.T) *config.Config {
	cfg, err := config.Parse([]byte(`cluster: prod
initial_primary: dc1
dcs:
  dc1: {etcd: {endpoints: ["http://10.0.1.10:2379"]}}
  dc2: {etcd: {endpoints: ["http://10.0.2.10:2379"]}}
failover: {mode: auto, allow_two_site_auto: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// members are three etcd members of a DC at 10.0.<subnet>.1x; the first down of them do not serve, and
// answered err.
func members(subnet int, down int, err string) []health.Member {
	var ms []health.Member
	for i := range 3 {
		m := health.Member{Endpoint: fmt.Sprintf("http://10.0.%d.1%d:2379", subnet, i), ID: fmt.Sprintf("8e9e05c52164694%d", i)}
		if i < down {
			m.Error = err
		} else {
			m.Serving, m.Leader = true, i == 2
		}
		ms = append(ms, m)
	}
	return ms
}

func TestStatusTextGolden(t *testing.T) {
	cfg := goldenConfig(t)
	up := func(subnet int, rev int64) clusterstatus.DC {
		return clusterstatus.DC{EtcdHealthy: true, State: health.Up, Revision: rev, Members: members(subnet, 0, "")}
	}
	down := func(subnet int, err string) clusterstatus.DC {
		ms := members(subnet, 3, "status: "+err)
		return clusterstatus.DC{State: health.Down, Members: ms, Error: fmt.Sprintf("no member serves a linearizable read within 1s "+
			"(%[1]s: status: %[2]s; %[3]s: status: %[2]s; %[4]s: status: %[2]s)", ms[0].Endpoint, err, ms[1].Endpoint, ms[2].Endpoint)}
	}
	at := func(d time.Duration) time.Time { return goldenNow.Add(-d) }
	healthy := &clusterstatus.Status{
		Cluster: "prod",
		Primary: primary.Record{DC: "dc1"},
		Leader:  &election.Leader{ID: "ctl-b", DC: "dc2", Since: at(2 * time.Hour), Phase: "mirroring", PhaseSince: at(2*time.Hour - time.Second)},
		DCs:     map[string]clusterstatus.DC{"dc1": up(1, 81234), "dc2": up(2, 90211)},
		Mirror: clusterstatus.Mirror{Source: "dc1", Destination: "dc2", AppliedRevision: 81231, SourceRevision: 81234,
			LagRevisions: 3, UpdatedAt: at(2 * time.Second)},
		Plan: &discovery.Summary{To: "dc2", ComputedAt: at(0), Shards: 256, Ready: 255, NotReady: 1,
			Problems: []string{"customer/80-: no REPLICA in dc2's cells (dc2): dc2-0000000131 is RDONLY"}},
	}
	syncing := *healthy
	syncing.Mirror = clusterstatus.Mirror{Source: "dc1", Destination: "dc2", Syncing: true}

	failedOver := &clusterstatus.Status{
		Cluster: "prod",
		Primary: primary.Record{DC: "dc2", Epoch: 4, ChangedAt: at(5 * time.Minute), Reason: "auto: dc1's etcd down for 30s"},
		Paused:  true,
		DCs:     map[string]clusterstatus.DC{"dc1": down(1, "context deadline exceeded"), "dc2": up(2, 90500)},
		Mirror:  clusterstatus.Mirror{Source: "dc2", Destination: "dc1"},
		LastFailover: &failover.Result{
			Decision: failover.Decision{Action: failover.ActionFailover, From: "dc1", To: "dc2", Trigger: failover.TriggerAuto},
			Outcome:  failover.ResultPartial, Epoch: 4, StartedAt: at(5 * time.Minute), FinishedAt: at(5*time.Minute - 2345*time.Millisecond),
			Shards: []failover.ShardResult{
				{Keyspace: "commerce", Shard: "0", Tablet: "dc2-0000000101", Confirmed: true},
				{Keyspace: "customer", Shard: "-80", Tablet: "dc2-0000000201", Error: "customer/-80: dc2-0000000201 is not primary after 3 attempt(s): exit status 1"},
			},
		},
		Unfinished: &failover.Unfinished{Epoch: 4, To: "dc2", StartedAt: at(5 * time.Minute), Shards: 3, BeforePromote: "ok", Confirmed: 1, Failed: 1, Held: 1,
			Unconfirmed: []failover.ShardProgress{
				{Target: failover.Target{Keyspace: "customer", Shard: "-80", Tablet: "dc2-0000000201"}, State: failover.ShardFailed, Attempts: 6,
					NextAttemptAt: goldenNow.Add(41 * time.Second), By: "ctl-c",
					LastError: "customer/-80: dc2-0000000201 is not primary: exit status 1: /vt/global/keyspaces/customer/shards/-80/Shard names dc1-0000000200 as primary, not one of dc2-0000000201"},
				{Target: failover.Target{Keyspace: "customer", Shard: "80-", Tablet: "dc2-0000000301"}, State: failover.ShardHeld, Attempts: 3,
					By: "cli:alice@ops1", UpdatedAt: at(2 * time.Minute), LastError: "promoting dc2-0000000302 by hand"},
			}},
		Converger: &election.Leader{ID: "ctl-c", DC: "dc2", Since: at(5 * time.Minute)},
		Warnings:  []string{"dc1's etcd holds epoch 3 (primary dc1): it is stale until it returns and is told"},
	}
	partition := *healthy
	partition.DCs = map[string]clusterstatus.DC{"dc1": down(1, "context deadline exceeded"), "dc2": up(2, 90211)}
	// A member lost in dc1 and a full etcd in dc2: neither is a DC loss.
	degraded := *healthy
	dc1 := up(1, 81234)
	dc1.Members = members(1, 1, "status: connection refused")
	dc2 := up(2, 90211)
	dc2.State, dc2.Alarms = health.Degraded, []health.Alarm{{Type: "NOSPACE", Member: "8e9e05c521646941"}}
	degraded.DCs = map[string]clusterstatus.DC{"dc1": dc1, "dc2": dc2}
	partition.Witnesses = []witness.Answer{
		{URL: "http://10.0.3.7:9465", View: &witness.View{ID: "w1", DCs: map[string]health.Snapshot{"dc1": {State: health.Up}, "dc2": {State: health.Up}}}},
		{URL: "http://10.0.4.7:9465", View: &witness.View{ID: "w2", DCs: map[string]health.Snapshot{"dc1": {State: health.Down}, "dc2": {State: health.Up}}}},
		{URL: "http://10.0.5.7:9465", Error: "unreachable: dial tcp 10.0.5.7:9465: i/o timeout"},
	}
	for name, st := range map[string]*clusterstatus.Status{"healthy": healthy, "syncing": &syncing, "failed-over": failedOver, "partition": &partition,
		"degraded": &degraded} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			printStatus(&out, cfg, st, goldenNow)
			checkGolden(t, "status-"+name+".golden", out.Bytes())
		})
	}
	// Manual mode, and a pause flag no etcd returned: neither is "PAUSED YES".
	manual := *cfg
	manual.Failover.Mode = config.ModeManual
	unread := *healthy
	unread.Paused, unread.PauseUnknown = true, "no etcd that answers returned the flag"
	for name, st := range map[string]*clusterstatus.Status{"manual": healthy, "manual-pause-unknown": &unread} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			printStatus(&out, &manual, st, goldenNow)
			checkGolden(t, "status-"+name+".golden", out.Bytes())
		})
	}
}

func TestHistoryTextGolden(t *testing.T) {
	at := func(d time.Duration) time.Time { return goldenNow.Add(d) }
	evs := []events.Event{
		{Time: at(0), Level: "INFO", Kind: events.KindLifecycle, Controller: "ctl-b", DC: "dc2", Message: "controller started",
			Attrs: map[string]string{"cluster": "prod", "mode": "auto", "http": "127.0.0.1:9464"}},
		{Time: at(time.Second), Level: "INFO", Kind: events.KindLeadership, Controller: "ctl-b", DC: "dc2", Message: "became the leader",
			Attrs: map[string]string{"election_in": "dc2", "primary": "dc1", "epoch": "0"}},
		{Time: at(95 * time.Second), Level: "WARN", Kind: events.KindHealth, Controller: "ctl-b", DC: "dc2", Message: "etcd health changed",
			Attrs: map[string]string{"of_dc": "dc1", "to": "down", "last_error": `dial tcp 10.0.1.10:2379: connect: connection refused`}},
		{Time: at(125 * time.Second), Level: "WARN", Kind: events.KindFailover, Controller: "ctl-b", DC: "dc2", Message: "failover decided",
			Attrs: map[string]string{"from": "dc1", "to": "dc2", "trigger": "auto", "reason": `dc1's etcd down for 30s`}},
		{Time: at(127 * time.Second), Level: "INFO", Kind: events.KindHook, Controller: "ctl-b", DC: "dc2", Message: "hook ran",
			Attrs: map[string]string{"hook": "after_failover", "result": "success", "output": ""}},
		{Time: at(128 * time.Second), Level: "INFO", Kind: events.KindOverride, Controller: "cli:oncall@bastion", DC: "-", Message: "pause flag changed",
			Attrs: map[string]string{"paused": "true", "by": "cli:oncall@bastion"}},
	}
	var out bytes.Buffer
	events.WriteText(&out, evs)
	checkGolden(t, "history.golden", out.Bytes())
}

// TestStatusExitCodes: `topoha status` exits 0 only when nothing needs a person, 1 when something does
// (each case below), 2 when nothing can be read. Scripts and Nagios-style checks depend on it.
func TestStatusExitCodes(t *testing.T) {
	up := clusterstatus.DC{EtcdHealthy: true, State: health.Up}
	healthy := func() *clusterstatus.Status {
		return &clusterstatus.Status{Primary: primary.Record{DC: "dc1"}, Leader: &election.Leader{ID: "ctl-b", DC: "dc2"},
			DCs:    map[string]clusterstatus.DC{"dc1": up, "dc2": up},
			Mirror: clusterstatus.Mirror{Source: "dc1", Destination: "dc2", AppliedRevision: 10, SourceRevision: 10, UpdatedAt: goldenNow.Add(-5 * time.Second)},
			Plan:   &discovery.Summary{To: "dc2", Shards: 4, Ready: 4}}
	}
	cases := map[string]struct {
		change func(*clusterstatus.Status)
		code   int
		why    string
	}{
		"healthy":               {func(*clusterstatus.Status) {}, exitOK, ""},
		"paused by an operator": {func(s *clusterstatus.Status) { s.Paused = true }, exitOK, ""},
		"a DC's etcd down":      {func(s *clusterstatus.Status) { s.DCs["dc2"] = clusterstatus.DC{State: health.Down} }, 1, "dc2's etcd is down"},
		"a DC's etcd degraded": {func(s *clusterstatus.Status) {
			s.DCs["dc1"] = clusterstatus.DC{EtcdHealthy: true, State: health.Degraded}
		}, 1, "dc1's etcd is degraded"},
		"no leader":         {func(s *clusterstatus.Status) { s.Leader = nil }, 1, "no controller leads"},
		"mirror resyncing":  {func(s *clusterstatus.Status) { s.Mirror.Syncing = true }, 1, "the mirror is resyncing"},
		"mirror never ran":  {func(s *clusterstatus.Status) { s.Mirror.AppliedRevision = 0 }, 1, "the mirror has no checkpoint in dc2's etcd"},
		"mirror far behind": {func(s *clusterstatus.Status) { s.Mirror.UpdatedAt = goldenNow.Add(-3 * time.Minute) }, 1, "the mirror's checkpoint is 3m0s old"},
		"unfinished failover": {func(s *clusterstatus.Status) {
			s.Unfinished = &failover.Unfinished{Shards: 4, Unconfirmed: make([]failover.ShardProgress, 1)}
		}, 1, "a failover is unfinished: 1 of 4"},
		"a shard cannot fail over": {func(s *clusterstatus.Status) { s.Plan.Ready, s.Plan.NotReady = 3, 1 }, 1, "the plan is not ready"},
		"no shard at all": {func(s *clusterstatus.Status) {
			s.Plan = &discovery.Summary{To: "dc2", Problems: []string{"no shard to fail over"}}
		}, 1, "the plan is not ready"},
		"a DC fenced": {func(s *clusterstatus.Status) { s.Fences = map[string]*fence.Record{"dc1": {DC: "dc1"}} }, 1, "dc1 is fenced"},
		"a read failed": {func(s *clusterstatus.Status) {
			s.Unread = []string{"read the failover progress /topoha/t/failover/progress: context deadline exceeded"}
		}, 1, "could not read: read the failover progress"},
		"pause flag unreadable": {func(s *clusterstatus.Status) {
			s.Paused, s.PauseUnknown = true, "no etcd that answers returned the flag"
		}, 1, "the pause flag cannot be read"},
		"no etcd answers": {func(s *clusterstatus.Status) {
			s.DCs = map[string]clusterstatus.DC{"dc1": {State: health.Down}, "dc2": {State: health.Down}}
		}, exitStatusUnread, "no DC's etcd answers"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			st := healthy()
			c.change(st)
			code, why := statusExit(st, goldenNow)
			if code != c.code || !strings.Contains(strings.Join(why, "; "), c.why) {
				t.Errorf("exit %d (%q), want %d naming %q", code, why, c.code, c.why)
			}
		})
	}
}
