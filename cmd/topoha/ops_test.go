package main

// Tests of the operator commands against controllers running as processes: status, failover, pause,
// resume, SIGUSR1.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/topoha/topoha/clusterstatus"
	"github.com/topoha/topoha/internal/clitest"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/keys"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/vitess"
)

// opsConfig is runConfig with a shard whose promotion the fake promote program performs.
func opsConfig(t *testing.T, d *dcs) string {
	t.Helper()
	path := runConfig(t, d)
	logDir := t.TempDir()
	d.commandLogs = logDir
	extra := fmt.Sprintf(`  promote_timeout: 5s
  promote_command: %s
  switchover_command: %s
  shards: [{keyspace: commerce, shard: "0", tablets: {dc1: dc1-0000000100, dc2: dc2-0000000101}}]
`, d.FakePromote(logDir+"/promote.log"), d.FakePromote(logDir+"/switchover.log"))
	editConfig(t, path, "failover: {mode: manual}\n", "failover:\n  mode: manual\n"+extra)
	d.SetShardPrimary("dc1", "commerce", "0", vitess.TabletAlias{Cell: "dc1", UID: 100})
	return path
}

// autoConfig is opsConfig in auto mode (two sites allowed) with failover.after 1s.
func autoConfig(t *testing.T, d *dcs) string {
	t.Helper()
	config := opsConfig(t, d)
	editConfig(t, config, "  mode: manual\n", "  mode: auto\n  allow_two_site_auto: true\n  after: 1s\n")
	return config
}

// editConfig replaces the first old with new in the config file at path.
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(data), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func status(t *testing.T, config string) clusterstatus.Status {
	t.Helper()
	return clitest.Status(t, config, waitLong)
}

func TestStatusWithoutControllers(t *testing.T) {
	d := startDCs(t)
	config := opsConfig(t, d)
	st := status(t, config)
	if st.Cluster != "t" || st.Primary.DC != "dc1" || st.Primary.Epoch != 0 || st.Leader != nil || st.Paused ||
		!st.DCs["dc1"].EtcdHealthy || !st.DCs["dc2"].EtcdHealthy || st.Mirror.Source != "dc1" || st.Mirror.Destination != "dc2" {
		t.Errorf("status = %+v", st)
	}
	d.dc2.Stop()
	code, out, _ := testenv.RunProcess(t, waitLong, testenv.Binary(t), "status", "--config", config)
	if code != exitStatusAttention || !strings.HasPrefix(out, "PRIMARY  dc1 (epoch 0)") || !strings.Contains(out, "dc2 DOWN") || !strings.Contains(out, "LEADER   none") ||
		!strings.Contains(out, "CHECK    dc2's etcd is down; no controller leads") {
		t.Errorf("status with dc2 down: exit %d, want %d\n%s", code, exitStatusAttention, out)
	}
	// Nothing answers: nothing can be said, and the pause flag is unknown, not "YES".
	d.dc1.Stop()
	code, out, _ = testenv.RunProcess(t, waitLong, testenv.Binary(t), "status", "--config", config)
	if code != exitStatusUnread || !strings.Contains(out, "PAUSED   UNKNOWN: the pause flag cannot be read (no DC's etcd answers)") ||
		!strings.Contains(out, "automatic failover is OFF: failover.mode is manual") {
		t.Errorf("status with every etcd down: exit %d, want %d\n%s", code, exitStatusUnread, out)
	}
}

func TestFailoverCommandPauseAndSignal(t *testing.T) {
	d := startDCs(t)
	config := opsConfig(t, d)
	procs := startControllers(t, d, config)
	d.leaderID(t, "")
	d.waitEqual(t)

	// pause and resume are visible in status.
	if code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "pause", "--config", config); code != 0 {
		t.Fatalf("pause: %d %s %s", code, out, errOut)
	}
	if st := status(t, config); !st.Paused {
		t.Error("status does not show paused")
	}
	if code, _, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "resume", "--config", config); code != 0 {
		t.Fatalf("resume: %d %s", code, errOut)
	}
	if st := status(t, config); st.Paused {
		t.Error("status still shows paused after resume")
	}

	// A manual failover through the leader.
	start := time.Now()
	code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "failover", "--config", config, "--to", "dc2")
	if code != 0 || !strings.Contains(out, "commerce/0: dc2-0000000101 is primary") {
		t.Fatalf("failover --to dc2: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("topoha failover --to dc2 returned after %s", time.Since(start).Round(time.Millisecond))
	st := status(t, config)
	if st.Primary.DC != "dc2" || st.Primary.Epoch != 1 || st.LastFailover == nil || st.LastFailover.Decision.Trigger != "cli" ||
		len(st.LastFailover.Shards) != 1 || !st.LastFailover.Shards[0].Confirmed {
		t.Fatalf("status after the failover: %+v", st)
	}
	// The mirror now runs dc2 -> dc1.
	mustPut(t, d.c2, prefix+"written-in-dc2", "x")
	testenv.Eventually(t, waitLong, func() (bool, string) {
		resp, err := d.c1.Get(ctxT(t), prefix+"written-in-dc2")
		return err == nil && len(resp.Kvs) == 1, "dc2's write has not reached dc1"
	})

	// SIGUSR1 to any controller fails back over to the other DC.
	procs["ctl-a"].Signal(syscall.SIGUSR1)
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st := status(t, config)
		return st.Primary.DC == "dc1" && st.Primary.Epoch == 2 && st.LastFailover != nil && st.LastFailover.Epoch == 2,
			fmt.Sprintf("primary %s@%d", st.Primary.DC, st.Primary.Epoch)
	})
	if st := status(t, config); st.LastFailover.Decision.Trigger != "signal" {
		t.Errorf("trigger of the SIGUSR1 failover = %s", st.LastFailover.Decision.Trigger)
	}
	for _, p := range procs {
		stopWithSIGTERM(t, p)
	}
}

func TestForcedFailoverWithoutControllers(t *testing.T) {
	d := startDCs(t)
	config := opsConfig(t, d)
	code, _, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "failover", "--config", config, "--to", "dc2")
	if code != 2 || !strings.Contains(errOut, "use --force") {
		t.Errorf("failover without a leader and without --force: exit %d, %s", code, errOut)
	}
	d.dc1.Stop()
	code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "failover", "--config", config, "--to", "dc2", "--force")
	if code != 0 || !strings.Contains(out, "dc2-0000000101 is primary") {
		t.Fatalf("forced failover: exit %d\n%s\n%s", code, out, errOut)
	}
	if st := status(t, config); st.Primary.DC != "dc2" || st.Primary.Epoch != 1 {
		t.Errorf("primary after the forced failover: %+v", st.Primary)
	}
}

// `topoha mirror` follows the primary record, and stops when a failover is recorded in its destination.
func TestMirrorFollowsThePrimaryRecord(t *testing.T) {
	d := startDCs(t)
	key := keys.For("t").Primary()
	if ok, err := primary.Write(ctxT(t), d.c2, key, primary.Record{DC: "dc2", Epoch: 1}, primary.Observed{}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	mustPut(t, d.c2, prefix+"from-dc2", "x")
	p := testenv.StartProcess(t, testenv.Binary(t), "mirror", "--config", d.config)
	testenv.Eventually(t, waitLong, func() (bool, string) {
		resp, err := d.c1.Get(ctxT(t), prefix+"from-dc2")
		return err == nil && len(resp.Kvs) == 1, "dc2's key has not reached dc1: the mirror does not run dc2 -> dc1"
	})
	// A failover back to dc1 is recorded in the mirror's destination.
	if ok, err := primary.Write(ctxT(t), d.c1, key, primary.Record{DC: "dc1", Epoch: 2}, primary.Read(ctxT(t), d.c1, key)); err != nil || !ok {
		t.Fatal(ok, err)
	}
	mustPut(t, d.c2, prefix+"after-failover", "must not reach dc1")
	if code := p.Wait(waitLong); code != 2 || !strings.Contains(p.Stderr(), "a failover?") {
		t.Fatalf("mirror exit %d after a failover was recorded in its destination:\n%s", code, p.Stderr())
	}
	if resp, err := d.c1.Get(ctxT(t), prefix+"after-failover"); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("the fenced mirror wrote into the new primary: %v %v", resp.Kvs, err)
	}
}

// A planned switchover: the mirror is drained before the epoch moves, so every write the old primary took
// before the switchover is in the new one, and switchover_command (not promote_command) runs.
func TestSwitchover(t *testing.T) {
	d := startDCs(t)
	config := opsConfig(t, d)
	procs := startControllers(t, d, config)
	d.leaderID(t, "")
	// Written just before the switchover, without waiting for the mirror.
	for i := 0; i < 300; i++ {
		mustPut(t, d.c1, fmt.Sprintf("%sbefore/%03d", prefix, i), "x")
	}
	code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "switchover", "--config", config, "--to", "dc2")
	if code != 0 || !strings.Contains(out, "commerce/0: dc2-0000000101 is primary") {
		t.Fatalf("switchover: exit %d\n%s\n%s", code, out, errOut)
	}
	if got := count(t, d.c2, prefix+"before/"); got != 300 {
		t.Errorf("the new primary has %d of the 300 keys written before the switchover", got)
	}
	st := status(t, config)
	if st.Primary.DC != "dc2" || st.Primary.Epoch != 1 || st.LastFailover.Decision.Trigger != "switchover" {
		t.Errorf("status after the switchover: %+v", st)
	}
	data, err := os.ReadFile(filepath.Join(d.commandLogs, "switchover.log"))
	if err != nil || !strings.Contains(string(data), "commerce/0 dc2-0000000101") {
		t.Errorf("switchover_command did not run: %q %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(d.commandLogs, "promote.log")); err == nil {
		t.Error("promote_command ran in a switchover")
	}
	for _, p := range procs {
		stopWithSIGTERM(t, p)
	}
}

// SIGUSR2 toggles the pause flag; --force-primary fails over at start.
func TestSIGUSR2AndForcePrimary(t *testing.T) {
	d := startDCs(t)
	config := opsConfig(t, d)
	procs := startControllers(t, d, config)
	d.leaderID(t, "")
	procs["ctl-a"].Signal(syscall.SIGUSR2)
	testenv.Eventually(t, waitLong, func() (bool, string) { return status(t, config).Paused, "SIGUSR2 did not pause" })
	procs["ctl-b"].Signal(syscall.SIGUSR2)
	testenv.Eventually(t, waitLong, func() (bool, string) { return !status(t, config).Paused, "a second SIGUSR2 did not resume" })

	extra := startController(t, config, "dc2", "ctl-c", "--force-primary", "dc2")
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st := status(t, config)
		return st.Primary.DC == "dc2" && st.LastFailover != nil && st.LastFailover.Decision.Trigger == "flag",
			fmt.Sprintf("primary %s@%d", st.Primary.DC, st.Primary.Epoch)
	})
	procs["ctl-c"] = extra
	for _, p := range procs {
		stopWithSIGTERM(t, p)
	}
}

// The primary DC lost with controllers as processes: exactly one failover, every shard promoted, and when
// dc1 returns, what is written into its stale copy never reaches the new primary.
func TestAutomaticFailoverWithProcesses(t *testing.T) {
	d := startDCs(t)
	config := autoConfig(t, d)
	procs := startControllers(t, d, config)
	d.leaderID(t, "")
	mustPut(t, d.c1, prefix+"topo", "v1")
	d.waitEqual(t)

	d.dc1.Stop()
	var st clusterstatus.Status
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st = status(t, config)
		return st.LastFailover != nil && st.LastFailover.Epoch == 1, fmt.Sprintf("primary %s@%d", st.Primary.DC, st.Primary.Epoch)
	})
	if st.Primary.DC != "dc2" || st.LastFailover.Decision.Trigger != "auto" || len(st.LastFailover.FailedShards()) != 0 {
		t.Fatalf("after dc1's loss: %+v", st)
	}
	d.dc1.Start()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st = status(t, config)
		return st.DCs["dc1"].EtcdHealthy && st.Leader != nil && st.Leader.DC != "", "no leader in dc1's etcd yet"
	})
	// A write into the old primary's stale copy (a client still on the old VIP) must never reach dc2.
	mustPut(t, d.c1, prefix+"stale-write", "x")
	mustPut(t, d.c2, prefix+"new-primary-write", "y")
	// The new primary's changes reach dc1; a write made directly into the DR copy is not undone while
	// streaming (the next full sync or `topoha verify` shows it) and is never copied back.
	testenv.Eventually(t, waitLong, func() (bool, string) {
		resp, err := d.c1.Get(ctxT(t), prefix+"new-primary-write")
		return err == nil && len(resp.Kvs) == 1, "the new primary's write has not reached dc1"
	})
	if resp, err := d.c2.Get(ctxT(t), prefix+"stale-write"); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("a write into the stale side reached the new primary: %v %v", resp, err)
	}
	if st := status(t, config); st.Primary.Epoch != 1 {
		t.Errorf("more than one failover: epoch %d", st.Primary.Epoch)
	}
	for _, p := range procs {
		stopWithSIGTERM(t, p)
	}
}

// The DR DC lost: no failover, the primary unaffected, the loss reported; the mirror catches up when the DR
// DC returns.
func TestDRDCLost(t *testing.T) {
	d := startDCs(t)
	config := autoConfig(t, d)
	procs := startControllers(t, d, config)
	d.leaderID(t, "")
	d.dc2.Stop()
	mustPut(t, d.c1, prefix+"while-dr-away", "x")
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st := status(t, config)
		return !st.DCs["dc2"].EtcdHealthy && st.Leader == nil, fmt.Sprintf("dc2 healthy %v, leader %+v", st.DCs["dc2"].EtcdHealthy, st.Leader)
	})
	// Well past failover.after with the DR side gone: still dc1, epoch 0.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if st := status(t, config); st.Primary.DC != "dc1" || st.Primary.Epoch != 0 {
			t.Fatalf("the DR DC's loss moved the primary: %+v", st.Primary)
		}
	}
	d.dc2.Start()
	d.waitEqual(t)
	for _, p := range procs {
		stopWithSIGTERM(t, p)
	}
}
