package fence

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/keys"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/vitess"
)

const wait = 30 * time.Second

// rig is one controller's fencer in dc1, the primary, with its view of both DCs' etcds through links.
type rig struct {
	fencer     *Fencer
	own, toDC2 *testenv.Link
	direct     *clientv3.Client // dc1's etcd, not through a link: the test's view
	log        string
}

func startRig(t *testing.T) *rig {
	t.Helper()
	return startRigWith(t, `shards: [{keyspace: ks, shard: "0", tablets: {dc1: dc1-0000000100, dc2: dc2-0000000200}}]`, nil, nil)
}

// startRigWith starts the rig with failover.shards set to shards, dcs.<dc> extras, and before(r) run
// before the fencer starts.
func startRigWith(t *testing.T, shards string, dcExtra map[string]string, before func(*rig)) *rig {
	t.Helper()
	dc1, dc2 := testenv.StartEtcd(t, "dc1"), testenv.StartEtcd(t, "dc2")
	r := &rig{
		own:    testenv.StartLink(t, "own", strings.TrimPrefix(dc1.Endpoint(), "http://")),
		toDC2:  testenv.StartLink(t, "to-dc2", strings.TrimPrefix(dc2.Endpoint(), "http://")),
		direct: dc1.Client(),
		log:    filepath.Join(t.TempDir(), "commands.log"),
	}
	endpoints := map[string][]string{"dc1": {"http://" + r.own.Addr()}, "dc2": {"http://" + r.toDC2.Addr()}}
	c, err := config.Parse([]byte(testenv.DCsYAML(endpoints, time.Second, dcExtra, fmt.Sprintf(`health: {interval: 50ms, timeout: 300ms, failure_threshold: 2, success_threshold: 1}
failover:
  mode: manual
  after: 5s
  self_fence: true
  fence_after: 500ms
  fence_command: [sh, -c, "echo fence {{.Tablet}} >> %[1]s"]
  unfence_command: [sh, -c, "echo unfence {{.Tablet}} >> %[1]s"]
  %[2]s`, r.log, shards))))
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*clientv3.Client{}
	for dc, link := range map[string]*testenv.Link{"dc1": r.own, "dc2": r.toDC2} {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + link.Addr()}, DialTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		clients[dc] = cli
	}
	if before != nil {
		before(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	hc, err := health.ConfigFor(c, "dc2")
	if err != nil {
		t.Fatal(err)
	}
	probe, err := health.New(hc)
	if err != nil {
		t.Fatal(err)
	}
	r.fencer, err = New(Config{Config: func() *config.Config { return c }, DC: "dc1", ID: "ctl-a", Clients: clients,
		Primary: func() (primary.Record, bool) { return primary.Record{DC: "dc1"}, true },
		Health:  func(string) health.Snapshot { return probe.Snapshot() }})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(2)
	go func() { defer wg.Done(); _ = probe.Run(ctx) }()
	go func() { defer wg.Done(); _ = r.fencer.Run(ctx) }()
	testenv.Eventually(t, wait, func() (bool, string) { return r.fencer.Status().Armed, "self-fencing not armed" })
	return r
}

func (r *rig) commands(t *testing.T) string {
	b, err := os.ReadFile(r.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// When the DC's own etcd does not answer either, the fence still goes up, and it is recorded once that
// etcd answers again.
func TestFenceWithOwnEtcdUnreachableIsRecordedLater(t *testing.T) {
	r := startRig(t)
	r.own.Cut()
	r.toDC2.Cut()
	testenv.Eventually(t, wait, func() (bool, string) {
		st := r.fencer.Status()
		return st.Unrecorded && st.Fenced() && strings.Count(r.commands(t), "fence dc1-0000000100") == 1, fmt.Sprintf("%+v; commands %q", st, r.commands(t))
	})
	r.own.Heal()
	testenv.Eventually(t, wait, func() (bool, string) {
		o := Read(context.Background(), r.direct, keys.For("t").Fence())
		return o.Record != nil && o.Record.FencedCount() == 1 && !r.fencer.Status().Unrecorded, fmt.Sprintf("record %+v, %v", o.Record, o.Err)
	})
	if got := r.commands(t); got != "fence dc1-0000000100\n" {
		t.Errorf("commands run: %q; want one fence command", got)
	}
}

// A fence record that is not a record is reported and acted on in neither direction.
func TestGarbageFenceRecordIsReportedNotActedOn(t *testing.T) {
	r := startRig(t)
	if _, err := r.direct.Put(context.Background(), keys.For("t").Fence(), `{"dc":"dc1","state":"half"}`); err != nil {
		t.Fatal(err)
	}
	r.toDC2.Cut()
	testenv.Eventually(t, wait, func() (bool, string) {
		st := r.fencer.Status()
		return strings.Contains(st.Problem, "not a fence record") && strings.Contains(st.Problem, "fix or delete it by hand") && !st.IsolatedSince.IsZero(),
			fmt.Sprintf("%+v", st)
	})
	time.Sleep(time.Second) // twice fence_after, cut off: long enough for a fence that must not come
	if got := r.commands(t); got != "" {
		t.Fatalf("commands ran on a garbage record: %q", got)
	}
	if _, err := r.direct.Delete(context.Background(), keys.For("t").Fence()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() (bool, string) {
		return r.commands(t) == "fence dc1-0000000100\n", fmt.Sprintf("commands %q after the garbage was deleted", r.commands(t))
	})
}

// With discovered shards, a fence put up while the DC's own etcd has never answered (so no primaries
// were read while armed) fences no tablet at first, and says so; once that etcd answers, the primaries
// it names are read and fenced, the link to the other DC still cut.
func TestDiscoveredFenceWithNoPrimariesKnownFencesThemLater(t *testing.T) {
	r := startRigWith(t, "shards: auto", map[string]string{"dc1": "cells: [dc1]", "dc2": "cells: [dc2]"}, func(r *rig) {
		topo := vitess.NewTopo("/vt")
		topo.Cell("dc1", "127.0.0.1:1", "/vt/dc1")
		topo.Shard("ks", "0", vitess.TabletAlias{Cell: "dc1", UID: 100})
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := topo.Put(ctx, r.direct); err != nil {
			t.Fatal(err)
		}
		r.own.Cut()
	})
	r.toDC2.Cut()
	testenv.Eventually(t, wait, func() (bool, string) {
		st := r.fencer.Status()
		return st.Unrecorded && st.Fenced(), fmt.Sprintf("not fenced: %+v", st)
	})
	if got := r.commands(t); got != "" {
		t.Fatalf("fence commands with no primary known: %q", got)
	}
	r.own.Heal()
	testenv.Eventually(t, wait, func() (bool, string) {
		o := Read(context.Background(), r.direct, keys.For("t").Fence())
		return o.Record != nil && o.Record.FencedCount() == 1 && r.commands(t) == "fence dc1-0000000100\n",
			fmt.Sprintf("record %+v (%v), commands %q", o.Record, o.Err, r.commands(t))
	})
}
