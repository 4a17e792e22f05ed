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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/topoha/topoha/clusterstatus"
	"github.com/topoha/topoha/discovery"
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

// initialShards are created before topoha starts; orders/0 is created while it runs.
func initialShards() []shard {
	return []shard{
		{"commerce", "0", map[string]string{"dc1": "dc1-0000000100", "dc2": "dc2-0000000101"}},
		{"customer", "-80", map[string]string{"dc1": "dc1-0000000200", "dc2": "dc2-0000000201"}},
		{"customer", "80-", map[string]string{"dc1": "dc1-0000000300", "dc2": "dc2-0000000301"}},
	}
}

// rdonly is a second tablet of commerce/0 in dc2, of type RDONLY: never a candidate.
const rdonly = "dc2-0000000102"

// vitess is the Vitess side of the two DCs.
type vitess struct {
	t       *testing.T
	bin     string
	etcd    map[string]*testenv.Cluster // each DC's etcd: 3 members, as in production
	vtctld  map[string]string           // dc -> gRPC address
	tablets map[string]*testenv.Process
	ports   map[string]int // tablet alias -> gRPC port
	shards  []shard
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

// hostPorts lists c's members as Vitess takes an etcd cluster's address: host:port, comma-separated.
func hostPorts(c *testenv.Cluster) string { return strings.Join(c.Addrs(), ",") }

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

// startVtctld runs vtctld for dc against dc's own etcd cluster, serving the old vtctl service too
// (vtctlclient).
func (v *vitess) startVtctld(dc string) {
	v.t.Helper()
	grpc := freePort(v.t)
	args := []string{filepath.Join(v.bin, "vtctld"), "--topo_implementation", "etcd2",
		"--topo_global_server_address", hostPorts(v.etcd[dc]), "--topo_global_root", "/vt", "--cell", dc,
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
	for _, s := range v.shards {
		testenv.Eventually(v.t, waitLong, func() (bool, string) {
			rec, tab, err := v.primary(dc, s)
			return err == nil && rec == s.tablets[want] && tab == s.tablets[want],
				fmt.Sprintf("%s via %s's vtctld: Shard record %q, GetTablets primary %q, want %s (%v)", s.name(), dc, rec, tab, s.tablets[want], err)
		})
	}
}

// setup starts both DCs' etcd clusters and vtctlds, creates cells, keyspaces and shards in dc1 (the primary),
// registers a tablet per shard in each DC, and elects dc1's tablets with PlannedReparentShard.
func setup(t *testing.T) *vitess {
	// vtctldclient and vtctlclient leave glog files in $TMPDIR at every run, --logtostderr or not.
	t.Setenv("TMPDIR", t.TempDir())
	v := &vitess{t: t, bin: vitessBin(t), etcd: map[string]*testenv.Cluster{}, vtctld: map[string]string{},
		tablets: map[string]*testenv.Process{}, ports: map[string]int{}, shards: initialShards()}
	for _, dc := range []string{"dc1", "dc2"} {
		v.etcd[dc] = testenv.StartCluster(t, dc, testenv.Members)
	}
	v.topo = startVIP(t, v.etcd["dc1"].Addrs())
	for _, dc := range []string{"dc1", "dc2"} {
		v.startVtctld(dc)
	}
	// Every cell's records start in the primary DC's etcd, inside the mirrored /vt.
	for _, dc := range []string{"dc1", "dc2"} {
		v.mustCtl("dc1", "AddCellInfo", "--root", "/vt/"+dc, "--server-address", hostPorts(v.etcd["dc1"]), dc)
	}
	for _, ks := range []string{"commerce", "customer"} {
		v.mustCtl("dc1", "CreateKeyspace", "--durability-policy", "none", ks)
	}
	for _, s := range v.shards {
		v.createShard(s)
	}
	v.register(rdonly, v.shards[0])
	return v
}

// createShard creates s in dc1's topo and registers its tablets.
func (v *vitess) createShard(s shard) {
	v.mustCtl("dc1", "CreateShard", s.name())
	for _, alias := range s.tablets {
		v.register(alias, s)
	}
}

// register records a REPLICA tablet of s in the topo, as a starting vttablet does.
func (v *vitess) register(alias string, s shard) {
	v.t.Helper()
	v.ports[alias] = freePort(v.t)
	out, err := v.run("faketablet", "register", "--topo-global-server-address", v.topo.addr(),
		"--alias", alias, "--keyspace", s.keyspace, "--shard", s.shard, "--port", fmt.Sprint(v.ports[alias]))
	if err != nil {
		v.t.Fatalf("register %s: %v\n%s", alias, err, out)
	}
}

// topohaConfig writes the controllers' config: the whole /vt mirrored with CellInfo rewritten,
// vtctldclient ERS as the promote command and PRS as the switchover command, and no shard listed: they
// are discovered.
func (v *vitess) topohaConfig(dir string) string {
	vtctldclient := filepath.Join(v.bin, "vtctldclient")
	cfg := fmt.Sprintf(`cluster: e2e
initial_primary: dc1
dcs:
  dc1: {etcd: {endpoints: [%[1]s], dial_timeout: 1s}, vtctld: %[3]s, topo_address: %[5]q, cells: [dc1]}
  dc2: {etcd: {endpoints: [%[2]s], dial_timeout: 1s}, vtctld: %[4]s, topo_address: %[6]q, cells: [dc2]}
mirror: {prefix: /vt, cell_info_rewrite: true}
vitess: {topo_vip: "http://%[8]s"}
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
  shards: auto
  discovery: {interval: 1s}
`, strings.Join(v.etcd["dc1"].Endpoints(), ", "), strings.Join(v.etcd["dc2"].Endpoints(), ", "), v.vtctld["dc1"], v.vtctld["dc2"],
		hostPorts(v.etcd["dc1"]), hostPorts(v.etcd["dc2"]), vtctldclient, v.topo.addr())
	path := filepath.Join(dir, "topoha.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		v.t.Fatal(err)
	}
	return path
}

// plan runs `topoha plan --json` and returns its exit code and plan.
func plan(t *testing.T, config string) (int, discovery.Plan) {
	t.Helper()
	code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "plan", "--config", config, "--json")
	var p discovery.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan --json: exit %d: %v\n%s%s", code, err, out, errOut)
	}
	return code, p
}

// checkPlan compares `topoha plan` with what dc2's vtctld lists: every shard planned, its candidates
// the shard's REPLICAs in dc2 (never the RDONLY), its ignored tablets dc1's, and exit 0.
func (v *vitess) checkPlan(config string) {
	t := v.t
	t.Helper()
	code, p := plan(t, config)
	if code != 0 || p.To != "dc2" || len(p.Shards) != len(v.shards) || len(p.Problems) > 0 {
		t.Fatalf("plan: exit %d, %+v", code, p)
	}
	for _, want := range v.shards {
		out := v.mustCtl("dc2", "GetTablets", "--keyspace", want.keyspace, "--shard", want.shard)
		var replicas, dc1 []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line) // alias keyspace shard type ...
			switch {
			case len(f) < 4:
			case strings.HasPrefix(f[0], "dc2-") && f[3] == "replica":
				replicas = append(replicas, f[0])
			case strings.HasPrefix(f[0], "dc1-"):
				dc1 = append(dc1, f[0])
			}
		}
		i := slices.IndexFunc(p.Shards, func(s discovery.ShardPlan) bool { return s.Keyspace == want.keyspace && s.Shard == want.shard })
		if i < 0 {
			t.Errorf("plan has no %s; GetTablets:\n%s", want.name(), out)
			continue
		}
		got := p.Shards[i]
		slices.Sort(dc1)
		if got.Tablet != want.tablets["dc2"] || !slices.Equal(got.Candidates, replicas) || !slices.Equal(got.IgnoreTablets, dc1) || !got.Ready() {
			t.Errorf("plan for %s: %+v; GetTablets on dc2's vtctld:\n%s", want.name(), got, out)
		}
	}
}

// slowest is the longest of the times.
func slowest(took map[string]time.Duration) time.Duration {
	var m time.Duration
	for _, d := range took {
		m = max(m, d)
	}
	return m
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
	keepalived(t, v.topo, ctls, map[string][]string{"dc1": v.etcd["dc1"].Addrs(), "dc2": v.etcd["dc2"].Addrs()})
	verifyEqual(t, config)
	for _, s := range v.shards {
		for _, alias := range s.tablets {
			v.startTablet(alias)
		}
	}
	v.startTablet(rdonly)
	for _, s := range v.shards {
		v.mustCtl("dc1", "PlannedReparentShard", "--new-primary", s.tablets["dc1"], s.name())
	}
	v.mustCtl("dc1", "ChangeTabletType", rdonly, "rdonly")
	v.waitPrimaries("dc1", "dc1")
	verifyEqual(t, config)
	// dc2's vtctld reads everything from dc2's own etcd: the mirrored copy, CellInfo rewritten.
	v.waitPrimaries("dc2", "dc1")
	if st := status(t, config); len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "two sites and no witnesses") {
		t.Errorf("status warnings before the failover (the plan must find nothing wrong): %q", st.Warnings)
	}
	v.checkPlan(config)

	// A keyspace created while topoha runs is planned with no change to the config.
	orders := shard{"orders", "0", map[string]string{"dc1": "dc1-0000000400", "dc2": "dc2-0000000401"}}
	v.mustCtl("dc1", "CreateKeyspace", "--durability-policy", "none", orders.keyspace)
	v.createShard(orders)
	for _, alias := range orders.tablets {
		v.startTablet(alias)
	}
	v.mustCtl("dc1", "PlannedReparentShard", "--new-primary", orders.tablets["dc1"], orders.name())
	v.shards = append(v.shards, orders)
	testenv.Eventually(t, waitLong, func() (bool, string) {
		_, p := plan(t, config)
		for _, s := range p.Shards {
			if s.Keyspace == "orders" && s.Tablet == orders.tablets["dc2"] && s.Primary == orders.tablets["dc1"] {
				return true, ""
			}
		}
		return false, fmt.Sprintf("orders/0 not planned yet: %d shards", len(p.Shards))
	})
	v.checkPlan(config)

	// One member of each DC's etcd is lost: that is no DC loss. Nobody fails over, Vitess goes on writing
	// through the VIP and both vtctlds, and the mirror goes on. dc2's member stays down through dc1's loss,
	// so the failover below runs on two of dc2's three members.
	// Each DC loses its raft leader, the worst member to lose: until the other two elect one, writes time out
	// in Vitess itself ("deadline exceeded"), as they would in production, so the write waits for that.
	v.etcd["dc1"].StopMember(v.etcd["dc1"].WaitLeader())
	v.etcd["dc2"].StopMember(v.etcd["dc2"].WaitLeader())
	v.etcd["dc1"].WaitLeader()
	v.etcd["dc2"].WaitLeader()
	v.mustCtl("dc1", "ApplyRoutingRules", "--rules", `{"rules":[{"from_table":"t","to_tables":["commerce.t"]}]}`)
	verifyEqual(t, config)
	v.waitPrimaries("dc2", "dc1")
	time.Sleep(3 * 2 * time.Second) // three times failover.after: long enough for a failover that must not come
	if st := status(t, config); st.Primary.DC != "dc1" || st.LastFailover != nil {
		t.Fatalf("one etcd member lost in each DC: primary %+v, last failover %+v; want dc1 and none", st.Primary, st.LastFailover)
	}
	v.checkPlan(config)

	// dc1 is lost: its etcd and its tablets.
	lost := time.Now()
	for _, s := range v.shards {
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
		for _, s := range v.shards {
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
	if st.Primary.DC != "dc2" || st.LastFailover == nil || st.LastFailover.Outcome != "success" || len(st.LastFailover.Shards) != len(v.shards) {
		t.Fatalf("after dc1's loss: primary %+v, last failover %+v", st.Primary, st.LastFailover)
	}
	for _, s := range st.LastFailover.Shards {
		if s.Tablet == rdonly {
			t.Errorf("the failover promoted the RDONLY tablet %s", rdonly)
		}
	}
	t.Logf("dc1 lost -> every one of %d discovered shards primary in dc2 (GetShard on dc2's vtctld): %s", len(v.shards), slowest(took).Round(time.Millisecond))
	for _, s := range st.LastFailover.Shards {
		t.Logf("failover: %s/%s: %s primary in %s (ERS %s, %d attempt(s)); GetShard showed it %s after dc1's etcd died\nERS printed:\n%s",
			s.Keyspace, s.Shard, s.Tablet, s.Duration.Round(time.Millisecond), s.Duration.Round(time.Millisecond), s.Attempts,
			took[s.Keyspace+"/"+s.Shard].Round(time.Millisecond), s.Output)
	}
	if len(st.LastFailover.Warnings) > 0 {
		t.Errorf("pre-flight warnings in the failover: %q", st.LastFailover.Warnings)
	}

	// dc1 returns, every member: topoha tells it it is not primary and resyncs it from dc2; then its
	// tablets return. So does dc2's lost member.
	<-stopped
	v.etcd["dc1"].Start()
	v.etcd["dc2"].Start()
	verifyEqual(t, config)
	v.waitPrimaries("dc1", "dc2")
	for _, s := range v.shards {
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
