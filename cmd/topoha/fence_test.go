package main

// Self-fencing (failover.self_fence) with controllers as processes and a partition made of toxiproxy
// links: dc1's controllers reach dc2's etcd, and dc2's reach dc1's, only through links the test cuts.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/fence"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/keys"
)

// partition is a pair of configs, one per DC's controllers, whose view of the other DC's etcd goes through
// a link; the config the test itself uses (base) reaches both directly.
type partition struct {
	dc1Config, dc2Config string
	toDC1, toDC2         *testenv.Path
	commandLog           string
}

// partitionable adds self-fencing to base (fence_after 1s, fence and unfence commands that append to a
// log) and writes each DC's view of it.
func partitionable(t *testing.T, d *dcs, base string) *partition {
	t.Helper()
	p := &partition{
		toDC1:      testenv.StartPath(t, "to-dc1", d.dc1),
		toDC2:      testenv.StartPath(t, "to-dc2", d.dc2),
		commandLog: filepath.Join(t.TempDir(), "fence.log"),
	}
	record := func(action string) string {
		return fmt.Sprintf(`[sh, -c, "echo %s {{.Keyspace}}/{{.Shard}} {{.Tablet}} {{.Epoch}} >> %s"]`, action, p.commandLog)
	}
	editConfig(t, base, "failover:\n", fmt.Sprintf("failover:\n  self_fence: true\n  fence_after: 1s\n  fence_command: %s\n  unfence_command: %s\n",
		record("fence"), record("unfence")))
	data, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	view := func(name string, dc *testenv.Cluster, link *testenv.Path) string {
		path := filepath.Join(t.TempDir(), name)
		// The first occurrence is the dcs section; the fake promote program keeps its direct addresses.
		if err := os.WriteFile(path, []byte(strings.Replace(string(data), csv(dc.Endpoints()), csv(link.Endpoints()), 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p.dc1Config = view("dc1.yaml", d.dc2, p.toDC2)
	p.dc2Config = view("dc2.yaml", d.dc1, p.toDC1)
	return p
}

func (p *partition) cut()  { p.toDC1.Cut(); p.toDC2.Cut() }
func (p *partition) heal() { p.toDC1.Heal(); p.toDC2.Heal() }

// runs counts the commands of an action ("fence" or "unfence") that ran.
func (p *partition) runs(t *testing.T, action string) int {
	data, err := os.ReadFile(p.commandLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, action+" ") {
			n++
		}
	}
	return n
}

func (d *dcs) fenceRecord(t *testing.T) *fence.Record {
	t.Helper()
	o := fence.Read(ctxT(t), d.c1, keys.For("t").Fence())
	if o.Err != nil {
		t.Fatalf("dc1's fence record: %v", o.Err)
	}
	return o.Record
}

func startControllersIn(t *testing.T, config, dc string, ids ...string) []*testenv.Process {
	var procs []*testenv.Process
	for _, id := range ids {
		procs = append(procs, startController(t, config, dc, id))
	}
	for i, p := range procs {
		testenv.Eventually(t, waitLong, func() (bool, string) {
			return strings.Contains(p.Stderr(), "controller started"), ids[i] + " has not started"
		})
	}
	return procs
}

// waitArmed waits until each controller logged that its self-fencing is armed: before, a cut link fences
// nothing.
func waitArmed(t *testing.T, procs ...*testenv.Process) {
	for _, p := range procs {
		testenv.Eventually(t, waitLong, func() (bool, string) {
			return strings.Contains(p.Stderr(), "self-fencing armed"), "self-fencing not armed"
		})
	}
}

// With a partition and two-site automatic failover, the isolated primary side makes its primaries
// read-only before the other side promotes; as the other side did promote, the fence stays when the link
// returns, and only an operator's --clear removes it.
func TestSelfFenceOnAPartitionBeforeTheOtherSidePromotes(t *testing.T) {
	d := startDCs(t)
	base := autoConfig(t, d)
	// The fence must come first by timing alone (fence_after 1s against failover.after): the margin is wide
	// so that a loaded 2-core machine running the whole suite does not eat it (2s did, once).
	editConfig(t, base, "  after: 1s\n", "  after: 6s\n")
	p := partitionable(t, d, base)
	a := startControllersIn(t, p.dc1Config, "dc1", "ctl-a")[0]
	b := startControllersIn(t, p.dc2Config, "dc2", "ctl-b")[0]
	waitArmed(t, a)
	addr := apiAddr(t, a)
	testenv.Eventually(t, waitLong, func() (bool, string) {
		return get(t, addr, "/primary") == 200, "dc1's controller does not answer /primary with 200"
	})

	p.cut()
	var r *fence.Record
	testenv.Eventually(t, waitLong, func() (bool, string) {
		r = d.fenceRecord(t)
		return r != nil && r.FencedCount() == 1, fmt.Sprintf("dc1 not fenced: %+v", r)
	})
	if r.DC != "dc1" || r.Epoch != 0 || r.By != "ctl-a" || r.Tablets[0].Tablet != "dc1-0000000100" || p.runs(t, "fence") != 1 {
		t.Errorf("fence record %+v after %d fence commands; want dc1's primary fenced once at epoch 0 by ctl-a", r, p.runs(t, "fence"))
	}
	if code := get(t, addr, "/primary"); code != 503 {
		t.Errorf("/primary on the fenced side: %d, want 503", code)
	}
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st := status(t, base)
		return st.Primary.DC == "dc2" && st.Primary.Epoch == 1 && st.LastFailover != nil, fmt.Sprintf("primary %s@%d", st.Primary.DC, st.Primary.Epoch)
	})
	if st := status(t, base); !r.At.Before(st.LastFailover.StartedAt) {
		t.Errorf("fenced at %s, but the other side promoted at %s: the fence must come first", r.At, st.LastFailover.StartedAt)
	}

	if o := fence.Read(ctxT(t), d.c2, keys.For("t").Fence()); o.Record != nil || o.Err != nil {
		t.Errorf("the new primary fenced itself for the loss it replaced: %+v %v", o.Record, o.Err)
	}
	p.heal()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		return strings.Contains(a.Stderr(), "stays fenced"), "ctl-a has not said that dc1 stays fenced"
	})
	if code, out, _ := testenv.RunProcess(t, waitLong, testenv.Binary(t), "status", "--config", base); code != exitStatusAttention ||
		!strings.Contains(out, "FENCE    dc1 FENCED by ctl-a") || !strings.Contains(out, "dc2 is primary now (epoch 1)") {
		t.Errorf("status after the partition: exit %d\n%s", code, out)
	}
	code, out, _ := testenv.RunProcess(t, waitLong, testenv.Binary(t), "unfence", "--config", base, "--dc", "dc1")
	if code != 1 || !strings.Contains(out, "refused: dc1 was fenced at epoch 0, but dc2 is primary now (epoch 1)") {
		t.Errorf("unfence of the old side: exit %d, %s", code, out)
	}
	if d.fenceRecord(t) == nil || p.runs(t, "unfence") != 0 {
		t.Fatalf("the old side was unfenced: record %+v, %d unfence commands", d.fenceRecord(t), p.runs(t, "unfence"))
	}
	if code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "unfence", "--config", base, "--dc", "dc1", "--clear"); code != 0 {
		t.Fatalf("unfence --clear: exit %d, %s%s", code, out, errOut)
	}
	if r := d.fenceRecord(t); r != nil || p.runs(t, "unfence") != 0 {
		t.Errorf("after --clear: record %+v, %d unfence commands; want no record and no command", r, p.runs(t, "unfence"))
	}
	stopWithSIGTERM(t, a)
	stopWithSIGTERM(t, b)
}

// With nothing failed over, the fence is lifted when the link returns, by one of the DC's controllers.
// An operator may lift it by hand while the other DC is unreachable only with --force, and the
// controllers do not fence again until the link is back.
func TestSelfFenceLiftedWhenTheLinkReturnsOrByHand(t *testing.T) {
	d := startDCs(t)
	base := opsConfig(t, d)
	p := partitionable(t, d, base)
	procs := startControllersIn(t, p.dc1Config, "dc1", "ctl-a", "ctl-c")
	waitArmed(t, procs...)
	addr := apiAddr(t, procs[0])

	p.toDC2.Cut()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		r := d.fenceRecord(t)
		return r != nil && r.FencedCount() == 1, fmt.Sprintf("dc1 not fenced: %+v", r)
	})
	p.toDC2.Heal()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		return d.fenceRecord(t) == nil && get(t, addr, "/primary") == 200, "the fence was not lifted after the link returned"
	})
	if f, u := p.runs(t, "fence"), p.runs(t, "unfence"); f != 1 || u != 1 {
		t.Errorf("two controllers of dc1 ran %d fence and %d unfence commands; want one each", f, u)
	}

	p.toDC2.Cut()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		r := d.fenceRecord(t)
		return r != nil && r.FencedCount() == 1, fmt.Sprintf("dc1 not fenced again: %+v", r)
	})
	// The operator's config reaches dc2 through the cut link too: dc2 may have promoted, for all it knows.
	code, out, _ := testenv.RunProcess(t, waitLong, testenv.Binary(t), "unfence", "--config", p.dc1Config, "--dc", "dc1")
	if code != 1 || !strings.Contains(out, "refused: cannot read dc2's primary record") {
		t.Fatalf("unfence with dc2 unreachable: exit %d, %s", code, out)
	}
	if code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "unfence", "--config", p.dc1Config, "--dc", "dc1", "--force"); code != 0 {
		t.Fatalf("unfence --force: exit %d, %s%s", code, out, errOut)
	}
	if r := d.fenceRecord(t); r == nil || r.State != fence.StateLifted || p.runs(t, "unfence") != 2 {
		t.Fatalf("after unfence --force: record %+v, %d unfence commands", r, p.runs(t, "unfence"))
	}
	time.Sleep(3 * time.Second) // three times fence_after, still cut off: long enough for a fence that must not come
	if r := d.fenceRecord(t); r == nil || r.State != fence.StateLifted || p.runs(t, "fence") != 2 || get(t, addr, "/primary") != 200 {
		t.Fatalf("fenced again after the operator lifted it: record %+v, %d fence commands", r, p.runs(t, "fence"))
	}
	p.toDC2.Heal()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		return d.fenceRecord(t) == nil, "the lifted record was not removed once the link returned"
	})
	for _, proc := range procs {
		stopWithSIGTERM(t, proc)
	}
}
