package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/metrics"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/vitess"
)

// rig is two DCs' etcds, a config with two shards, and the fake promote program as promote_command.
type rig struct {
	d       *testenv.DCs
	cfg     *config.Config
	clients map[string]*clientv3.Client
	logDir  string
	metrics *metrics.Metrics
}

// newRig is a rig whose fake promote program runs with -modes modes (a template: it may depend on
// {{.Shard}}), and with extra arguments (flow YAML items, e.g. `-delay, 1s`).
func newRig(t *testing.T, modes string, timeout time.Duration, extra ...string) *rig {
	t.Helper()
	fake := testenv.Build(t, "./internal/fakepromote")
	logDir := t.TempDir()
	d := testenv.StartDCs(t, testenv.WithDCFields(func(dc string) string { return "vtctld: vtctld-" + dc + ":15999" }),
		testenv.WithConfigFor(func(d *testenv.DCs) string {
			return fmt.Sprintf(`failover:
  promote_timeout: %s
  promote_command: [%s, -etcd, %q, -root, /vt, -log, "%s/{{.Keyspace}}.{{.Shard}}.log", -modes, %q, %s"{{.Keyspace}}/{{.Shard}}", "{{.Tablet}}"]
  shards:
    - {keyspace: commerce, shard: "-80", tablets: {dc1: [dc1-0000000100, dc1-0000000102], dc2: [dc2-0000000101]}}
    - {keyspace: commerce, shard: "80-", tablets: {dc1: dc1-0000000200, dc2: dc2-0000000201}}`,
				timeout, fake, strings.Join(d.Cluster["dc2"].Endpoints(), ","), logDir, modes, flowItems(append(d.FakePromoteAuth(), extra...)))
		}))
	r := &rig{d: d, cfg: d.Config, clients: d.Client, logDir: logDir}
	// The DR copy of the topo: both shards' records still name their dc1 primaries.
	for shard, uid := range map[string]uint32{"-80": 100, "80-": 200} {
		rec, err := vitess.SetShardPrimary(nil, vitess.TabletAlias{Cell: "dc1", UID: uid})
		if err != nil {
			t.Fatal(err)
		}
		put(t, r.clients["dc2"], vitess.ShardKey("/vt", "commerce", shard), string(rec))
	}
	return r
}

func (r *rig) executor(t *testing.T) *Executor {
	x, err := NewExecutor(ExecutorConfig{Config: r.cfg, Clients: r.clients, Metrics: r.metrics})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// converger is a Converger of controller id in dc2 that follows rec, paused while paused (if not nil) says
// so, with short waits.
func (r *rig) converger(t *testing.T, id string, rec primary.Record, paused *atomic.Bool) *Converger {
	c, err := NewConverger(ConvergerConfig{Config: func() *config.Config { return r.cfg }, Clients: r.clients, DC: "dc2", ID: id,
		Primary: func() (primary.Record, bool) { return rec, true },
		Paused:  func(context.Context) bool { return paused != nil && paused.Load() },
		Backoff: 50 * time.Millisecond, ConfirmTimeout: time.Second, ConfirmPoll: 20 * time.Millisecond, Metrics: r.metrics})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// failover carries out d as `topoha failover --force` does with no controller: Execute, then Finish.
// It returns the recorded result, and an error that joins the result's errors and its failed shards'.
func (r *rig) failover(t *testing.T, d Decision, seen primary.Observed, fence ...clientv3.Cmp) (*Result, error) {
	t.Helper()
	p, err := r.executor(t).Execute(ctxT(t), d, seen, fence...)
	if err != nil {
		return nil, err
	}
	moved := primary.Record{DC: d.To, Epoch: p.Epoch}
	if err := r.converger(t, "ctl-b", moved, nil).Finish(ctxT(t), moved); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	got := ReadResult(ctxT(t), r.clients[d.To], r.cfg.Keys().LastFailover())
	if got.Record == nil {
		t.Fatalf("no result recorded: %+v", got)
	}
	res := got.Record
	var errs []error
	for _, e := range res.Errors {
		errs = append(errs, errors.New(e))
	}
	for _, s := range res.Shards {
		if !s.Confirmed {
			errs = append(errs, errors.New(s.Error))
		}
	}
	return res, errors.Join(errs...)
}

// flowItems is items as the start of a flow YAML sequence's remaining items.
func flowItems(items []string) string {
	var b strings.Builder
	for _, it := range items {
		b.WriteString(it + ", ")
	}
	return b.String()
}

func (r *rig) runs(t *testing.T, shard string) []string {
	data, err := os.ReadFile(filepath.Join(r.logDir, "commerce."+shard+".log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func put(t *testing.T, c *clientv3.Client, key, val string, opts ...clientv3.OpOption) {
	t.Helper()
	if _, err := c.Put(context.Background(), key, val, opts...); err != nil {
		t.Fatal(err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var decision = Decision{Action: ActionFailover, From: "dc1", To: "dc2", Trigger: TriggerAuto, NewEpoch: 1, Reason: "dc1 etcd down for 31s"}

func TestExecutePromotesEveryShard(t *testing.T) {
	r := newRig(t, "ok", 10*time.Second)
	dc2 := r.clients["dc2"]
	// A shard lock copied without its lease (as make-mirror did), and a live lock of the DR side.
	put(t, dc2, "/vt/keyspaces/commerce/shards/-80/locks/7587890123456789012", "orphan")
	lease, err := dc2.Grant(ctxT(t), 60)
	if err != nil {
		t.Fatal(err)
	}
	put(t, dc2, "/vt/keyspaces/commerce/shards/80-/locks/42", "live", clientv3.WithLease(lease.ID))

	// A checkpoint from when dc2 was the DR side: a mirror into dc2 after a later failback must not
	// resume from it.
	put(t, dc2, r.cfg.Keys().MirrorCheckpoint(), `{"revision": 5}`)

	key := r.cfg.Keys().Primary()
	res, err := r.failover(t, decision, primary.Read(ctxT(t), dc2, key))
	if err != nil {
		t.Fatalf("Execute: %v\n%+v", err, res)
	}
	if resp, err := dc2.Get(ctxT(t), r.cfg.Keys().MirrorCheckpoint()); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("the new primary still holds its old mirror checkpoint: %v %v", resp.Kvs, err)
	}
	if got := primary.Read(ctxT(t), dc2, key); got.Record == nil || got.Record.DC != "dc2" || got.Record.Epoch != 1 {
		t.Errorf("primary record in dc2 = %+v", got)
	}
	// dc1's etcd is up in this test, so it learns of the new epoch too.
	if got := primary.Read(ctxT(t), r.clients["dc1"], key); got.Record == nil || got.Record.Epoch != 1 || res.OldSide != "written" {
		t.Errorf("primary record in dc1 = %+v (%s)", got, res.OldSide)
	}
	if len(res.Locks) != 1 || !strings.HasSuffix(res.Locks[0], "/-80/locks/7587890123456789012") {
		t.Errorf("locks deleted = %v, want only the orphan", res.Locks)
	}
	if resp, err := dc2.Get(ctxT(t), "/vt/keyspaces/commerce/shards/80-/locks/42"); err != nil || len(resp.Kvs) != 1 {
		t.Errorf("the live lock was deleted: %v %v", resp, err)
	}
	for shard, want := range map[string]string{"-80": "dc2-0000000101", "80-": "dc2-0000000201"} {
		resp, err := dc2.Get(ctxT(t), vitess.ShardKey("/vt", "commerce", shard))
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := vitess.ShardPrimary(resp.Kvs[0].Value)
		if err != nil || got.String() != want {
			t.Errorf("commerce/%s primary = %v %v, want %s", shard, got, err, want)
		}
		if runs := r.runs(t, shard); len(runs) != 1 || runs[0] != "ok commerce/"+shard+" "+want {
			t.Errorf("commerce/%s promote runs = %q", shard, runs)
		}
	}
	for _, s := range res.Shards {
		if !s.Confirmed || s.Attempts != 1 || s.Error != "" {
			t.Errorf("shard result %+v", s)
		}
	}
	resp, err := dc2.Get(ctxT(t), r.cfg.Keys().LastFailover())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("no last failover record: %v", err)
	}
	var saved Result
	if err := json.Unmarshal(resp.Kvs[0].Value, &saved); err != nil || saved.Epoch != 1 || len(saved.Shards) != 2 {
		t.Errorf("last failover record = %s (%v)", resp.Kvs[0].Value, err)
	}
}

// Each shard's outcome is read from the topo, whatever its command did; one failover of four shards, each
// with a promote command that behaves differently.
func TestPromoteOutcomeComesFromTheTopo(t *testing.T) {
	cases := []struct {
		shard, why, modes string
		confirmed         bool
		attempts          int
		errPart           string
	}{
		{"-40", "exit 1 after promoting counts as promoted", "exit1", true, 1, ""},
		{"40-80", "a failure is retried", "fail,ok", true, 2, ""},
		{"80-c0", "failing every time", "fail", false, 3, "dc2-0000000301 is not primary"},
		{"c0-", "hanging is killed at the timeout", "hang", false, 3, "killed at its timeout"},
	}
	modes := "ok"
	for _, tc := range cases {
		modes = fmt.Sprintf(`{{if eq .Shard %q}}%s{{else}}%s{{end}}`, tc.shard, tc.modes, modes)
	}
	r := newRig(t, modes, 500*time.Millisecond)
	r.cfg.Failover.Shards.List = nil
	for i, tc := range cases {
		r.cfg.Failover.Shards.List = append(r.cfg.Failover.Shards.List, config.Shard{Keyspace: "commerce", Shard: tc.shard,
			Tablets: map[string]config.Aliases{"dc1": {fmt.Sprintf("dc1-%010d", 100*i+100)}, "dc2": {fmt.Sprintf("dc2-%010d", 100*i+101)}}})
		rec, err := vitess.SetShardPrimary(nil, vitess.TabletAlias{Cell: "dc1", UID: uint32(100*i + 100)})
		if err != nil {
			t.Fatal(err)
		}
		put(t, r.clients["dc2"], vitess.ShardKey("/vt", "commerce", tc.shard), string(rec))
	}
	start := time.Now()
	res, err := r.failover(t, decision, primary.Observed{})
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the first attempts took %s with a 500ms promote timeout: hanging commands are not killed", took)
	}
	if res.Outcome != ResultPartial || !slicesEqual(res.FailedShards(), []string{"commerce/80-c0", "commerce/c0-"}) {
		t.Errorf("result %s, failed shards %v", res.Outcome, res.FailedShards())
	}
	for i, tc := range cases {
		s := res.Shards[i]
		if s.Shard != tc.shard || s.Confirmed != tc.confirmed || s.Attempts != tc.attempts || !strings.Contains(s.Error, tc.errPart) {
			t.Errorf("%s: shard result %+v", tc.why, s)
		}
		if !tc.confirmed && !strings.Contains(err.Error(), "commerce/"+tc.shard) {
			t.Errorf("%s: the error does not name the shard: %v", tc.why, err)
		}
	}
	// Whatever the promotions did, the epoch stays bumped.
	if got := primary.Read(ctxT(t), r.clients["dc2"], r.cfg.Keys().Primary()); got.Record == nil || got.Record.Epoch != 1 {
		t.Errorf("epoch after the promotions: %+v", got)
	}
}

func TestMissingPromoteCommand(t *testing.T) {
	r := newRig(t, "ok", time.Second)
	r.cfg.Failover.PromoteCommand = []string{"/nonexistent/vtctldclient", "{{.Keyspace}}/{{.Shard}}"}
	res, err := r.failover(t, decision, primary.Observed{})
	if err == nil || len(res.FailedShards()) != 2 || !strings.Contains(err.Error(), "/nonexistent/vtctldclient") {
		t.Fatalf("err = %v, failed = %v", err, res.FailedShards())
	}
}

// A failover decided on a stale view, or by a deposed leader, does nothing at all.
func TestStaleViewOrLostFenceDoesNothing(t *testing.T) {
	r := newRig(t, "ok", time.Second)
	dc2 := r.clients["dc2"]
	key := r.cfg.Keys().Primary()
	seen := primary.Read(ctxT(t), dc2, key)
	// Someone else failed over meanwhile.
	if ok, err := primary.Write(ctxT(t), dc2, key, primary.Record{DC: "dc2", Epoch: 1}, seen); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, err := r.executor(t).Execute(ctxT(t), decision, seen); !errors.Is(err, ErrStale) {
		t.Errorf("stale view: err = %v, want ErrStale", err)
	}
	// A view that already shows the epoch the decision would create: the failover happened.
	if _, err := r.executor(t).Execute(ctxT(t), decision, primary.Read(ctxT(t), dc2, key)); !errors.Is(err, ErrStale) {
		t.Errorf("epoch already there: err = %v, want ErrStale", err)
	}
	put(t, dc2, "/topoha/t/election/leader", "someone else")
	lostFence := clientv3.Compare(clientv3.Value("/topoha/t/election/leader"), "=", "me")
	decided := decision
	decided.NewEpoch = 2
	if _, err := r.executor(t).Execute(ctxT(t), decided, primary.Read(ctxT(t), dc2, key), lostFence); !errors.Is(err, ErrStale) {
		t.Errorf("lost fence: err = %v, want ErrStale", err)
	}
	if got := primary.Read(ctxT(t), dc2, key); got.Record.Epoch != 1 {
		t.Errorf("epoch = %d after refused failovers", got.Record.Epoch)
	}
	for _, shard := range []string{"-80", "80-"} {
		if runs := r.runs(t, shard); len(runs) != 0 {
			t.Errorf("commerce/%s promoted by a refused failover: %v", shard, runs)
		}
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }
