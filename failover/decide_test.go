package failover

import (
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/primary"
)

var t0 = time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)

func snap(state health.State, since time.Duration) health.Snapshot {
	return health.Snapshot{State: state, Since: t0.Add(-since), LastError: "probe error"}
}

// noSpace is a DC's etcd that filled its quota an hour ago: it serves reads and refuses writes.
func noSpace() health.Snapshot {
	return health.Snapshot{State: health.Degraded, Since: t0.Add(-time.Hour), Alarms: []health.Alarm{{Type: "NOSPACE", Member: "8e9e05c52164694d"}}}
}

// base is the textbook automatic failover: dc1 (primary, epoch 4) down for 31s, dc2 up, auto mode.
func base() Facts {
	return Facts{
		Now:     t0,
		Mode:    "auto",
		Primary: primary.Record{DC: "dc1", Epoch: 4},
		Health:  map[string]health.Snapshot{"dc1": snap(health.Down, 31*time.Second), "dc2": snap(health.Up, time.Hour)},
		After:   30 * time.Second, Cooldown: 15 * time.Minute,
	}
}

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(*Facts)
		action  Action
		to      string
		trigger Trigger
		reason  string // a part of the reason
	}{
		{"primary down longer than after", func(*Facts) {}, ActionFailover, "dc2", TriggerAuto, "down for 31s"},
		{"primary down exactly after", func(f *Facts) { f.Health["dc1"] = snap(health.Down, 30*time.Second) }, ActionFailover, "dc2", TriggerAuto, ""},
		{"primary down shorter than after", func(f *Facts) { f.Health["dc1"] = snap(health.Down, 29*time.Second) }, ActionNone, "", "", "failover after 30s"},
		{"primary flapping: failing but not yet marked down", func(f *Facts) { f.Health["dc1"] = snap(health.Up, time.Hour) }, ActionNone, "", "", "dc1 etcd is up"},
		{"primary never seen", func(f *Facts) { f.Health["dc1"] = snap(health.Unknown, 0) }, ActionNone, "", "", "is unknown"},
		{"manual mode", func(f *Facts) { f.Mode = "manual" }, ActionNone, "", "", "mode is manual"},
		{"paused", func(f *Facts) { f.Paused = true }, ActionNone, "", "", "paused"},
		{"DR etcd down", func(f *Facts) { f.Health["dc2"] = snap(health.Down, time.Minute) }, ActionNone, "", "", "nowhere to fail over to"},
		{"DR etcd unknown", func(f *Facts) { f.Health["dc2"] = snap(health.Unknown, 0) }, ActionNone, "", "", "dc2 etcd is unknown"},
		{"within cooldown", func(f *Facts) { f.LastFailover = t0.Add(-10 * time.Minute) }, ActionNone, "", "", "cooldown"},
		{"after cooldown", func(f *Facts) { f.LastFailover = t0.Add(-16 * time.Minute) }, ActionFailover, "dc2", TriggerAuto, ""},
		{"cooldown 0: no hold-down", func(f *Facts) { f.Cooldown, f.LastFailover = 0, t0.Add(-time.Second) }, ActionFailover, "dc2", TriggerAuto, ""},
		{"witnesses: majority sees down", func(f *Facts) { f.Witnesses = Witnesses{Configured: 3, SeeDown: 2} }, ActionFailover, "dc2", TriggerAuto, ""},
		{"witnesses: minority sees down", func(f *Facts) { f.Witnesses = Witnesses{Configured: 3, SeeDown: 1} }, ActionNone, "", "", "1 of 3 witnesses"},
		{"witnesses: half is not a majority", func(f *Facts) { f.Witnesses = Witnesses{Configured: 2, SeeDown: 1} }, ActionNone, "", "", "1 of 2"},
		{"witnesses: none answer", func(f *Facts) { f.Witnesses = Witnesses{Configured: 1} }, ActionNone, "", "", "0 of 1"},
		{"after a failover the new primary is dc2", func(f *Facts) {
			f.Primary = primary.Record{DC: "dc2", Epoch: 5}
			f.Health["dc2"] = snap(health.Down, time.Minute)
			f.Health["dc1"] = snap(health.Up, time.Minute)
		}, ActionFailover, "dc1", TriggerAuto, "dc2 etcd down"},

		{"signal while paused", func(f *Facts) {
			f.Paused = true
			f.Request = &Request{To: "dc2", Trigger: TriggerSignal}
		}, ActionFailover, "dc2", TriggerSignal, "requested by signal"},
		{"cli in manual mode, primary healthy", func(f *Facts) {
			f.Mode = "manual"
			f.Health["dc1"] = snap(health.Up, time.Hour)
			f.Request = &Request{To: "dc2", Trigger: TriggerCLI}
		}, ActionFailover, "dc2", TriggerCLI, ""},
		{"cli within cooldown", func(f *Facts) {
			f.LastFailover = t0.Add(-time.Minute)
			f.Request = &Request{To: "dc2", Trigger: TriggerCLI}
		}, ActionFailover, "dc2", TriggerCLI, ""},
		{"request to a down DC", func(f *Facts) {
			f.Health["dc2"] = snap(health.Down, time.Minute)
			f.Request = &Request{To: "dc2", Trigger: TriggerCLI}
		}, ActionNone, "dc2", TriggerCLI, "refused: dc2 etcd is down"},
		{"forced request to a down DC", func(f *Facts) {
			f.Health["dc2"] = snap(health.Down, time.Minute)
			f.Request = &Request{To: "dc2", Force: true, Trigger: TriggerFlag}
		}, ActionFailover, "dc2", TriggerFlag, "forced"},
		{"request to the current primary", func(f *Facts) { f.Request = &Request{To: "dc1", Trigger: TriggerCLI} }, ActionNone, "dc1", TriggerCLI, "already primary"},
		{"resumed during the outage, less than after ago", func(f *Facts) { f.ResumedAt = t0.Add(-10 * time.Second) },
			ActionNone, "", "", "resumed 10s ago: failover after 30s from the resume"},
		{"resumed during the outage, after ago", func(f *Facts) {
			f.Health["dc1"] = snap(health.Down, time.Minute)
			f.ResumedAt = t0.Add(-30 * time.Second)
		}, ActionFailover, "dc2", TriggerAuto, "down for 1m0s"},
		{"resumed before the outage", func(f *Facts) { f.ResumedAt = t0.Add(-40 * time.Second) }, ActionFailover, "dc2", TriggerAuto, "down for 31s"},
		{"switchover, both healthy", func(f *Facts) {
			f.Health["dc1"] = snap(health.Up, time.Hour)
			f.Request = &Request{To: "dc2", Trigger: TriggerSwitchover}
			f.Mirroring = true
		}, ActionFailover, "dc2", TriggerSwitchover, "requested by switchover"},
		{"switchover before the mirror runs", func(f *Facts) {
			f.Health["dc1"] = snap(health.Up, time.Hour)
			f.Request = &Request{To: "dc2", Trigger: TriggerSwitchover}
		}, ActionNone, "dc2", TriggerSwitchover, "mirror out of dc1 is not running yet"},
		{"switchover with the primary down", func(f *Facts) { f.Request = &Request{To: "dc2", Trigger: TriggerSwitchover} }, ActionNone, "dc2", TriggerSwitchover, "needs both DCs healthy"},
		{"primary degraded by NOSPACE for an hour", func(f *Facts) { f.Health["dc1"] = noSpace() }, ActionNone, "", "",
			"dc1 etcd is degraded: NOSPACE (writes refused; reads served); an alarm is no DC loss"},
		{"primary degraded, paused: the pause is the reason", func(f *Facts) {
			f.Health["dc1"] = noSpace()
			f.Paused = true
		}, ActionNone, "", "", "paused"},
		{"primary down, DR degraded: it cannot take the epoch", func(f *Facts) { f.Health["dc2"] = noSpace() }, ActionNone, "", "",
			"dc2 etcd is degraded: NOSPACE (writes refused; reads served): nowhere to fail over to"},
		{"manual failover away from a degraded primary", func(f *Facts) {
			f.Health["dc1"] = noSpace()
			f.Request = &Request{To: "dc2", Trigger: TriggerSignal}
		}, ActionFailover, "dc2", TriggerSignal, "requested by signal"},
		{"request to a degraded DC", func(f *Facts) {
			f.Health["dc2"] = noSpace()
			f.Request = &Request{To: "dc2", Trigger: TriggerHTTP}
		}, ActionNone, "dc2", TriggerHTTP, "refused: dc2 etcd is degraded: NOSPACE"},
		{"switchover away from a degraded primary", func(f *Facts) {
			f.Health["dc1"] = noSpace()
			f.Request = &Request{To: "dc2", Trigger: TriggerSwitchover}
			f.Mirroring = true
		}, ActionNone, "dc2", TriggerSwitchover, "needs both DCs healthy and dc1 etcd is degraded: NOSPACE"},
		{"request to an unknown DC", func(f *Facts) { f.Request = &Request{To: "dc9", Trigger: TriggerCLI} }, ActionNone, "dc9", TriggerCLI, "not a configured DC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := base()
			tc.change(&f)
			d := Decide(f)
			if d.Action != tc.action || d.Trigger != tc.trigger || (tc.to != "" && d.To != tc.to) || !strings.Contains(d.Reason, tc.reason) {
				t.Fatalf("Decide = %+v; want action %s to %q trigger %q, reason containing %q", d, tc.action, tc.to, tc.trigger, tc.reason)
			}
			if d.Action == ActionFailover && d.NewEpoch != f.Primary.Epoch+1 {
				t.Errorf("new epoch %d, want %d", d.NewEpoch, f.Primary.Epoch+1)
			}
			if d.Planned != (d.Action == ActionFailover && d.Trigger == TriggerSwitchover) {
				t.Errorf("planned = %v for %+v", d.Planned, d)
			}
			if d.Action == ActionNone && d.NewEpoch != 0 {
				t.Errorf("no failover but a new epoch %d", d.NewEpoch)
			}
			if (d.Action == ActionNone && f.Request != nil) != d.Refusal {
				t.Errorf("refusal = %v for %+v", d.Refusal, d)
			}
		})
	}
}

// Decide depends on nothing but its facts: the same facts give the same decision.
func TestDecideIsDeterministic(t *testing.T) {
	f := base()
	first := Decide(f)
	for i := 0; i < 100; i++ {
		if d := Decide(f); d != first {
			t.Fatalf("run %d: %+v != %+v", i, d, first)
		}
	}
}
