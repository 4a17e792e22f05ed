//go:build e2evitess

// Package e2e runs topoha against the real Vitess control plane: vtctld in each DC, vtctldclient and
// vtctlclient as the promote and switchover commands, and fake tablets (e2e/vitess/faketablet) that
// answer vtctld's TabletManager RPCs and keep their topo records as vttablet does. Run it with
// `make e2e-vitess`, which builds the Vitess binaries (cached) and sets TOPOHA_VITESS_BIN.
package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/topoha/topoha/clusterstatus"
	"github.com/topoha/topoha/internal/clitest"
	"github.com/topoha/topoha/internal/testenv"
)

const waitLong = 2 * time.Minute

// shard is a keyspace/shard with its tablet in each DC; dc1's is the first primary.
type shard struct {
	keyspace, shard string
	tablets         map[string]string // dc -> alias
}

func (s shard) name() string { return s.keyspace + "/" + s.shard }

var shards = []shard{
	{"commerce", "0", map[string]string{"dc1": "dc1-0000000100", "dc2": "dc2-0000000101"}},
	{"customer", "-80", map[string]string{"dc1": "dc1-0000000200", "dc2": "dc2-0000000201"}},
	{"customer", "80-", map[string]string{"dc1": "dc1-0000000300", "dc2": "dc2-0000000301"}},
}

// vitess is the Vitess side of the two DCs.
type vitess struct {
	t       *testing.T
	bin     string
	etcd    map[string]*testenv.Etcd
	vtctld  map[string]string // dc -> gRPC address
	tablets map[string]*testenv.Process
	ports   map[string]int // tablet alias -> gRPC port
	// topo is the global topo VIP that every tablet uses; it follows the primary DC.
	topo *vip
}

func vitessBin(t *testing.T) string {
	dir := os.Getenv("TOPOHA_VITESS_BIN")
	if dir == "" {
		t.Fatal("TOPOHA_VITESS_BIN is not set: run `make e2e-vitess`, which builds vtctld, vtctldclient, vtctlclient and faketablet")
	}
	for _, b := range []string{"vtctld", "vtctldclient", "vtctlclient", "faketablet"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("TOPOHA_VITESS_BIN=%s: %v; run e2e/vitess/build.sh", dir, err)
		}
	}
	return dir
}

func freePort(t *testing.T) int {
	_, port, _ := net.SplitHostPort(testenv.ClosedAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

func hostPort(e *testenv.Etcd) string { return strings.TrimPrefix(e.Endpoint(), "http://") }

// run runs a Vitess client to completion and returns its combined output and error.
func (v *vitess) run(name string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(v.bin, name), args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ctl runs vtctldclient against dc's vtctld; the action timeout keeps it from retrying for an hour.
func (v *vitess) ctl(dc string, args ...string) (string, error) {
	return v.run("vtctldclient", append([]string{"--server", v.vtctld[dc], "--action_timeout", "60s"}, args...)...)
}

func (v *vitess) mustCtl(dc string, args ...string) string {
	v.t.Helper()
	out, err := v.ctl(dc, args...)
	if err != nil {
		v.t.Fatalf("vtctldclient %s on %s: %v\n%s", strings.Join(args, " "), dc, err, out)
	}
	return out
}

// startVtctld runs vtctld for dc against dc's own etcd, serving the old vtctl service too (vtctlclient).
func (v *vitess) startVtctld(dc string) {
	v.t.Helper()
	grpc := freePort(v.t)
	args := []string{filepath.Join(v.bin, "vtctld"), "--topo_implementation", "etcd2",
		"--topo_global_server_address", hostPort(v.etcd[dc]), "--topo_global_root", "/vt", "--cell", dc,
		"--port", fmt.Sprint(freePort(v.t)), "--grpc_port", fmt.Sprint(grpc),
		"--service_map", "grpc-vtctl,grpc-vtctld", "--logtostderr"}
	path := args[0]
	if os.Geteuid() == 0 {
		// vtctld refuses to run as root.
		path, args = "setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups"}, args...)
	} else {
		args = args[1:]
	}
	testenv.StartProcess(v.t, path, args...)
	v.vtctld[dc] = fmt.Sprintf("127.0.0.1:%d", grpc)
	testenv.Eventually(v.t, waitLong, func() (bool, string) {
		out, err := v.ctl(dc, "GetCellInfoNames")
		return err == nil, fmt.Sprintf("vtctld in %s not serving: %v %s", dc, err, out)
	})
}

// startTablet serves alias's TabletManager; it reaches the topo through the VIP, wherever it points.
func (v *vitess) startTablet(alias string) {
	v.tablets[alias] = testenv.StartProcess(v.t, filepath.Join(v.bin, "faketablet"), "serve",
		"--topo-global-server-address", v.topo.addr(), "--alias", alias, "--port", fmt.Sprint(v.ports[alias]))
}

// primary returns the primary of s according to dc's vtctld: the Shard record, and the tablet GetTablets
// lists as primary (it shows a stale primary of an older term as unknown).
func (v *vitess) primary(dc string, s shard) (shardRecord, tablets string, err error) {
	out, err := v.ctl(dc, "GetShard", s.name())
	if err != nil {
		return "", "", fmt.Errorf("GetShard %s: %w: %s", s.name(), err, out)
	}
	var got struct {
		Shard struct {
			PrimaryAlias struct {
				Cell string `json:"cell"`
				UID  uint32 `json:"uid"`
			} `json:"primary_alias"`
		} `json:"shard"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		return "", "", fmt.Errorf("GetShard %s: %w: %s", s.name(), err, out)
	}
	shardRecord = fmt.Sprintf("%s-%010d", got.Shard.PrimaryAlias.Cell, got.Shard.PrimaryAlias.UID)
	out, err = v.ctl(dc, "GetTablets", "--keyspace", s.keyspace, "--shard", s.shard)
	if err != nil {
		return shardRecord, "", fmt.Errorf("GetTablets %s: %w: %s", s.name(), err, out)
	}
	var primaries []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[3] == "primary" {
			primaries = append(primaries, f[0])
		}
	}
	return shardRecord, strings.Join(primaries, ","), nil
}

// waitPrimaries waits until dc's vtctld shows every shard's tablet in want as its primary.
func (v *vitess) waitPrimaries(dc, want string) {
	v.t.Helper()
	for _, s := range shards {
		testenv.Eventually(v.t, waitLong, func() (bool, string) {
			rec, tab, err := v.primary(dc, s)
			return err == nil && rec == s.tablets[want] && tab == s.tablets[want],
				fmt.Sprintf("%s via %s's vtctld: Shard record %q, GetTablets primary %q, want %s (%v)", s.name(), dc, rec, tab, s.tablets[want], err)
		})
	}
}

// setup starts both DCs' etcds and vtctlds, creates cells, keyspaces and shards in dc1 (the primary),
// registers a tablet per shard in each DC, and elects dc1's tablets with PlannedReparentShard.
func setup(t *testing.T) *vitess {
	// vtctldclient and vtctlclient leave glog files in $TMPDIR at every run, --logtostderr or not.
	t.Setenv("TMPDIR", t.TempDir())
	v := &vitess{t: t, bin: vitessBin(t), etcd: map[string]*testenv.Etcd{}, vtctld: map[string]string{},
		tablets: map[string]*testenv.Process{}, ports: map[string]int{}}
	for _, dc := range []string{"dc1", "dc2"} {
		v.etcd[dc] = testenv.StartEtcd(t, dc)
	}
	v.topo = startVIP(t, hostPort(v.etcd["dc1"]))
	for _, dc := range []string{"dc1", "dc2"} {
		v.startVtctld(dc)
	}
	// Every cell's records start in the primary DC's etcd, inside the mirrored /vt.
	for _, dc := range []string{"dc1", "dc2"} {
		v.mustCtl("dc1", "AddCellInfo", "--root", "/vt/"+dc, "--server-address", hostPort(v.etcd["dc1"]), dc)
	}
	for _, ks := range []string{"commerce", "customer"} {
		v.mustCtl("dc1", "CreateKeyspace", "--durability-policy", "none", ks)
	}
	for _, s := range shards {
		v.mustCtl("dc1", "CreateShard", s.name())
		for _, alias := range s.tablets {
			v.ports[alias] = freePort(t)
			out, err := v.run("faketablet", "register", "--topo-global-server-address", hostPort(v.etcd["dc1"]),
				"--alias", alias, "--keyspace", s.keyspace, "--shard", s.shard, "--port", fmt.Sprint(v.ports[alias]))
			if err != nil {
				t.Fatalf("register %s: %v\n%s", alias, err, out)
			}
		}
	}
	return v
}

// topohaConfig writes the controllers' config: the whole /vt mirrored with CellInfo rewritten,
// vtctldclient ERS as the promote command and PRS as the switchover command.
func (v *vitess) topohaConfig(dir string) string {
	var shardLines []string
	for _, s := range shards {
		shardLines = append(shardLines, fmt.Sprintf(`    - {keyspace: %s, shard: %q, tablets: {dc1: [%s], dc2: [%s]}}`, s.keyspace, s.shard, s.tablets["dc1"], s.tablets["dc2"]))
	}
	vtctldclient := filepath.Join(v.bin, "vtctldclient")
	cfg := fmt.Sprintf(`cluster: e2e
initial_primary: dc1
dcs:
  dc1: {etcd: {endpoints: [%[1]s], dial_timeout: 1s}, vtctld: %[3]s, topo_address: %[5]q}
  dc2: {etcd: {endpoints: [%[2]s], dial_timeout: 1s}, vtctld: %[4]s, topo_address: %[6]q}
mirror: {prefix: /vt, cell_info_rewrite: true}
vitess: {topo_vip: "http://%[9]s"}
election: {ttl: 2s}
health: {interval: 200ms, timeout: 500ms, failure_threshold: 3, success_threshold: 2}
failover:
  mode: auto
  allow_two_site_auto: true
  after: 2s
  promote_timeout: 60s
  promote_command: [%[7]s, --server, "{{.Vtctld}}", --action_timeout, "{{.Timeout}}", EmergencyReparentShard,
                    --new-primary, "{{.Tablet}}", --ignore-replicas, "{{.IgnoreTablets}}", "{{.Keyspace}}/{{.Shard}}"]
  switchover_command: [%[7]s, --server, "{{.Vtctld}}", --action_timeout, "{{.Timeout}}", PlannedReparentShard,
                       --new-primary, "{{.Tablet}}", "{{.Keyspace}}/{{.Shard}}"]
  shards:
%[8]s
`, v.etcd["dc1"].Endpoint(), v.etcd["dc2"].Endpoint(), v.vtctld["dc1"], v.vtctld["dc2"],
		hostPort(v.etcd["dc1"]), hostPort(v.etcd["dc2"]), vtctldclient, strings.Join(shardLines, "\n"), v.topo.addr())
	path := filepath.Join(dir, "topoha.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		v.t.Fatal(err)
	}
	return path
}

func status(t *testing.T, config string) clusterstatus.Status {
	t.Helper()
	return clitest.Status(t, config, waitLong)
}

func verifyEqual(t *testing.T, config string) {
	t.Helper()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "verify", "--config", config)
		return code == 0, out + errOut
	})
}

// The scenario of issue 4: topoha mirrors dc1's topo to dc2; dc1 (its etcd and its tablets) dies; topoha
// fails over on its own, running vtctldclient EmergencyReparentShard through dc2's vtctld; dc1 returns
// and is resynced; a planned switchover (PlannedReparentShard) brings the primaries back; then a manual
// failover with the legacy vtctlclient syntax.
func TestVitessDCFailoverAndBack(t *testing.T) {
	v := setup(t)
	dir := t.TempDir()
	config := v.topohaConfig(dir)
	bin := testenv.Binary(t)
	ctls := map[string]*testenv.Process{}
	for dc, id := range map[string]string{"dc1": "ctl-a", "dc2": "ctl-b"} {
		ctls[dc] = testenv.StartProcess(t, bin, "run", "--config", config, "--dc", dc, "--id", id, "--listen", "127.0.0.1:0")
	}
	keepalived(t, v.topo, ctls, map[string]string{"dc1": hostPort(v.etcd["dc1"]), "dc2": hostPort(v.etcd["dc2"])})
	verifyEqual(t, config)
	for _, s := range shards {
		for _, alias := range s.tablets {
			v.startTablet(alias)
		}
	}
	for _, s := range shards {
		v.mustCtl("dc1", "PlannedReparentShard", "--new-primary", s.tablets["dc1"], s.name())
	}
	v.waitPrimaries("dc1", "dc1")
	verifyEqual(t, config)
	// dc2's vtctld reads everything from dc2's own etcd: the mirrored copy, CellInfo rewritten.
	v.waitPrimaries("dc2", "dc1")
	if st := status(t, config); len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "two sites and no witnesses") {
		t.Errorf("status warnings before the failover (the pre-flight must find nothing): %q", st.Warnings)
	}

	// dc1 is lost: its etcd and its tablets.
	lost := time.Now()
	for _, s := range shards {
		v.tablets[s.tablets["dc1"]].Kill()
	}
	stopped := make(chan struct{})
	go func() { // the clock runs from the moment it stops serving, not when Stop returns
		defer close(stopped)
		v.etcd["dc1"].Stop()
	}()
	// Every shard is polled in each round, so that each time is when that shard was first seen done.
	took := map[string]time.Duration{}
	testenv.Eventually(t, waitLong, func() (bool, string) {
		var pending []string
		for _, s := range shards {
			if _, done := took[s.name()]; done {
				continue
			}
			rec, tab, err := v.primary("dc2", s)
			if err == nil && rec == s.tablets["dc2"] && tab == s.tablets["dc2"] {
				took[s.name()] = time.Since(lost)
				continue
			}
			pending = append(pending, fmt.Sprintf("%s via dc2's vtctld: Shard record %q, GetTablets primary %q (%v)", s.name(), rec, tab, err))
		}
		return len(pending) == 0, strings.Join(pending, "; ")
	})
	st := status(t, config)
	if st.Primary.DC != "dc2" || st.LastFailover == nil || st.LastFailover.Outcome != "success" {
		t.Fatalf("after dc1's loss: primary %+v, last failover %+v", st.Primary, st.LastFailover)
	}
	for _, s := range st.LastFailover.Shards {
		t.Logf("failover: %s/%s: %s primary in %s (ERS %s, %d attempt(s)); GetShard showed it %s after dc1's etcd died\nERS printed:\n%s",
			s.Keyspace, s.Shard, s.Tablet, s.Duration.Round(time.Millisecond), s.Duration.Round(time.Millisecond), s.Attempts,
			took[s.Keyspace+"/"+s.Shard].Round(time.Millisecond), s.Output)
	}
	if len(st.LastFailover.Warnings) > 0 {
		t.Errorf("pre-flight warnings in the failover: %q", st.LastFailover.Warnings)
	}

	// dc1 returns: topoha tells it it is not primary and resyncs it from dc2; then its tablets return.
	<-stopped
	v.etcd["dc1"].Start()
	verifyEqual(t, config)
	v.waitPrimaries("dc1", "dc2")
	for _, s := range shards {
		v.startTablet(s.tablets["dc1"])
	}

	// Planned failback: PlannedReparentShard through dc1's vtctld, nothing lost.
	code, out, errOut := testenv.RunProcess(t, waitLong, bin, "switchover", "--config", config, "--to", "dc1")
	if code != 0 {
		t.Fatalf("switchover to dc1: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("switchover:\n%s", out)
	v.waitPrimaries("dc1", "dc1")
	verifyEqual(t, config)
	v.waitPrimaries("dc2", "dc1")

	// The legacy vtctlclient syntax, against the same vtctld: a manual failover to dc2.
	legacy := fmt.Sprintf(`promote_command: [%s, --server, "{{.Vtctld}}", --action_timeout, "{{.Timeout}}", EmergencyReparentShard, --,
                    "--keyspace_shard={{.Keyspace}}/{{.Shard}}", "--new_primary={{.Tablet}}", "--ignore_replicas={{.IgnoreTablets}}"]`,
		filepath.Join(v.bin, "vtctlclient"))
	data, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(data), "promote_command:")
	j := strings.Index(string(data), "  switchover_command:")
	if err := os.WriteFile(config, []byte(string(data[:i])+legacy+"\n"+string(data[j:])), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range ctls {
		p.Signal(syscall.SIGHUP)
	}
	for _, p := range ctls {
		testenv.Eventually(t, waitLong, func() (bool, string) {
			return strings.Contains(p.Stderr(), "config reloaded"), "SIGHUP not taken"
		})
	}
	code, out, errOut = testenv.RunProcess(t, waitLong, bin, "failover", "--config", config, "--to", "dc2")
	if code != 0 {
		t.Fatalf("failover to dc2 with vtctlclient: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("failover with vtctlclient:\n%s", out)
	v.waitPrimaries("dc2", "dc2")
	if st := status(t, config); st.LastFailover.Decision.Trigger != "cli" || st.LastFailover.Outcome != "success" {
		t.Errorf("last failover: %+v", st.LastFailover)
	}
	for _, p := range ctls {
		p.Signal(syscall.SIGTERM)
		if code := p.Wait(waitLong); code != 0 {
			t.Errorf("controller exit %d after SIGTERM", code)
		}
	}
}
