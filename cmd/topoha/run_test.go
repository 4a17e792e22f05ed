package main

// Tests of `topoha run` with controllers as real processes: a leader killed with kill -9, a leader frozen
// with SIGSTOP past its lease and thawed.

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/internal/testenv"
)

const electionPrefix = "/topoha/t/election/"

// runConfig is a config for controllers: a 1 s election TTL and fast probes; manual mode, so that only
// the election and the mirror are at work.
func runConfig(t *testing.T, d *dcs) string {
	t.Helper()
	return d.writeConfig(t, time.Second, `election: {ttl: 1s}
health: {interval: 100ms, timeout: 1s, failure_threshold: 2, success_threshold: 1}`)
}

// startController starts one controller process with its HTTP API on a free loopback port.
func startController(t *testing.T, config, dc, id string, extra ...string) *testenv.Process {
	args := append([]string{"run", "--config", config, "--dc", dc, "--id", id, "--listen", "127.0.0.1:0"}, extra...)
	return testenv.StartProcess(t, testenv.Binary(t), args...)
}

var httpAddr = regexp.MustCompile(`http=(127\.0\.0\.1:\d+)`)

// apiAddr waits for a controller to log its HTTP address.
func apiAddr(t *testing.T, p *testenv.Process) string {
	t.Helper()
	var addr string
	testenv.Eventually(t, waitLong, func() (bool, string) {
		m := httpAddr.FindStringSubmatch(p.Stderr())
		if m != nil {
			addr = m[1]
		}
		return m != nil, "no http address logged"
	})
	return addr
}

// get returns the HTTP status of a controller endpoint.
func get(t *testing.T, addr, path string) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// getBody returns the body of a controller endpoint.
func getBody(t *testing.T, addr, path string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// startControllers starts controller ctl-a in dc1 and ctl-b in dc2 with config, keyed by ID.
func startControllers(t *testing.T, d *dcs, config string) map[string]*testenv.Process {
	procs := map[string]*testenv.Process{}
	for id, dc := range map[string]string{"ctl-a": "dc1", "ctl-b": "dc2"} {
		procs[id] = startController(t, config, dc, id)
	}
	for id, p := range procs {
		testenv.Eventually(t, waitLong, func() (bool, string) {
			return strings.Contains(p.Stderr(), "controller started"), id + " has not started"
		})
	}
	return procs
}

// leaderID waits until the election in dc2's etcd (the DR side) has a leader other than not, and
// returns it.
func (d *dcs) leaderID(t *testing.T, not string) string {
	t.Helper()
	var id string
	testenv.Eventually(t, waitLong, func() (bool, string) {
		l, err := election.CurrentLeader(ctxT(t), d.c2, electionPrefix)
		if err != nil || l == nil {
			return false, fmt.Sprintf("no leader: %v", err)
		}
		id = l.ID
		return id != not, "leader is still " + id
	})
	return id
}

func TestLeaderKilledAnotherTakesOverAndTheMirrorResumes(t *testing.T) {
	d := startDCs(t)
	procs := startControllers(t, d, runConfig(t, d))
	for i := 0; i < 100; i++ {
		mustPut(t, d.c1, fmt.Sprintf("%sk/%03d", prefix, i), "v1")
	}
	d.waitEqual(t)
	leader := d.leaderID(t, "")

	killed := time.Now()
	procs[leader].Kill()
	// Writes while there is no leader are mirrored by the next one: nothing is missed.
	for i := 0; i < 100; i += 2 {
		mustDelete(t, d.c1, fmt.Sprintf("%sk/%03d", prefix, i))
		mustPut(t, d.c1, fmt.Sprintf("%sk/%03d", prefix, i+1), "v2")
	}
	next := d.leaderID(t, leader)
	took := time.Since(killed)
	d.waitEqual(t)
	t.Logf("leader %s killed; %s leads after %s (election TTL 1s)", leader, next, took.Round(time.Millisecond))
	// The new leader resumed from the checkpoint instead of copying everything again.
	if log := procs[next].Stderr(); !strings.Contains(log, "resuming from the checkpoint") {
		t.Errorf("the new leader did not resume from the checkpoint:\n%s", log)
	}
	for _, p := range procs {
		if !p.Exited() {
			stopWithSIGTERM(t, p)
		}
	}
}

func TestFrozenLeaderIsFencedWhenThawed(t *testing.T) {
	d := startDCs(t)
	procs := startControllers(t, d, runConfig(t, d))
	mustPut(t, d.c1, prefix+"before", "1")
	d.waitEqual(t)
	frozen := d.leaderID(t, "")
	procs[frozen].Signal(syscall.SIGSTOP)
	next := d.leaderID(t, frozen)

	mustPut(t, d.c1, prefix+"while-frozen", "1")
	d.waitEqual(t)
	procs[frozen].Signal(syscall.SIGCONT)
	// Source changes that the thawed process's old mirror would apply, if etcd let it.
	for i := 0; i < 20; i++ {
		mustPut(t, d.c1, fmt.Sprintf("%safter-thaw/%02d", prefix, i), "1")
	}
	testenv.Eventually(t, waitLong, func() (bool, string) {
		log := procs[frozen].Stderr()
		return strings.Contains(log, "leadership lost") || strings.Contains(log, "fenced"), "the thawed leader has not noticed it lost leadership"
	})
	d.waitEqual(t)
	if l, err := election.CurrentLeader(ctxT(t), d.c2, electionPrefix); err != nil || l == nil || l.ID != next {
		t.Errorf("leader after the thaw = %+v, %v; want %s", l, err, next)
	}
	for _, p := range procs {
		stopWithSIGTERM(t, p)
	}
}

func TestRunRefusesAnUnknownDC(t *testing.T) {
	d := startDCs(t)
	code, _, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "run", "--config", runConfig(t, d), "--dc", "dc9")
	if code != 2 || !strings.Contains(errOut, `--dc "dc9"`) || !strings.Contains(errOut, "dc1 dc2") {
		t.Errorf("run --dc dc9: exit %d, %s", code, errOut)
	}
}

// /leader answers 200 on exactly one controller, /primary on the primary DC's only; /healthz and /readyz
// on both; /status is the same JSON as `topoha status --json`.
func TestHTTPEndpoints(t *testing.T) {
	d := startDCs(t)
	procs := startControllers(t, d, runConfig(t, d))
	leader := d.leaderID(t, "")
	addrs := map[string]string{"ctl-a": apiAddr(t, procs["ctl-a"]), "ctl-b": apiAddr(t, procs["ctl-b"])}
	testenv.Eventually(t, waitLong, func() (bool, string) {
		leaders := 0
		for _, addr := range addrs {
			if get(t, addr, "/leader") == 200 {
				leaders++
			}
		}
		return leaders == 1 && get(t, addrs[leader], "/leader") == 200, fmt.Sprintf("%d controllers answer 200 on /leader", leaders)
	})
	for id, addr := range addrs {
		testenv.Eventually(t, waitLong, func() (bool, string) {
			return get(t, addr, "/readyz") == 200, id + " not ready"
		})
		if code := get(t, addr, "/healthz"); code != 200 {
			t.Errorf("%s /healthz = %d", id, code)
		}
		if code := get(t, addr, "/status"); code != 200 {
			t.Errorf("%s /status = %d", id, code)
		}
	}
	// Metrics: the leader says so and mirrors; both see both etcds up.
	testenv.Eventually(t, waitLong, func() (bool, string) {
		body := getBody(t, addrs[leader], "/metrics")
		for _, want := range []string{"topoha_is_leader 1", `topoha_etcd_up{dc="dc1"} 1`, `topoha_etcd_up{dc="dc2"} 1`,
			"topoha_primary_epoch 0", `topoha_primary_info{dc="dc1"} 1`, "topoha_mirror_applied_revision", "go_goroutines", "process_resident_memory_bytes"} {
			if !strings.Contains(body, want) {
				return false, "/metrics lacks " + want
			}
		}
		return true, ""
	})
	if code, body := post(t, addrs["ctl-a"], "/pause", "any"); code != http.StatusForbidden || !strings.Contains(body, "http.token_file") {
		t.Errorf("POST /pause without http.token_file: %d %s, want 403 naming the setting", code, body)
	}
	// ctl-a runs in dc1, the primary.
	if a, b := get(t, addrs["ctl-a"], "/primary"), get(t, addrs["ctl-b"], "/primary"); a != 200 || b != 503 {
		t.Errorf("/primary: dc1's controller %d, dc2's %d; want 200 and 503", a, b)
	}
	for _, p := range procs {
		stopWithSIGTERM(t, p)
	}
}
