package main

// End-to-end tests of `topoha mirror` and `topoha verify`: the built binary runs as a real
// process against two embedded etcd servers, one per DC, and the tests read both etcds directly.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/replication"
)

const (
	waitLong = 60 * time.Second
	// prefix is the raw key prefix of mirror.prefix /vt in both DCs.
	prefix        = "/vt/"
	checkpointKey = "/topoha/t/mirror/checkpoint"
)

// writeConfig writes the two-DC config (testenv.DCsYAML) with each DC's etcd at its endpoints, manual
// mode and extra, into a temporary file and returns its path.
func writeConfig(t *testing.T, dc1, dc2 []string, dialTimeout time.Duration, extra string) string {
	t.Helper()
	return writeYAML(t, testenv.DCsYAML(map[string][]string{"dc1": dc1, "dc2": dc2}, dialTimeout, nil, "failover: {mode: manual}\n"+extra))
}

// writeYAML writes a config into a temporary file and returns its path.
func writeYAML(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// dcs is the two DCs' etcd servers, a client of each, and a config naming them.
type dcs struct {
	*testenv.DCs
	dc1, dc2 *testenv.Cluster
	c1, c2   *clientv3.Client
	config   string
	// commandLogs is where the fake promote program records its runs (opsConfig).
	commandLogs string
}

// csv is endpoints as one comma-separated string: how the fake promote program takes them, and how a
// config's flow list holds them.
func csv(endpoints []string) string { return strings.Join(endpoints, ",") }

// startDCs starts each DC's etcd as a 3-member cluster, every member listed in the config.
func startDCs(t *testing.T, opts ...testenv.DCsOption) *dcs {
	t.Helper()
	f := testenv.StartDCs(t, opts...)
	d := &dcs{DCs: f, dc1: f.Cluster["dc1"], dc2: f.Cluster["dc2"], c1: f.Client["dc1"], c2: f.Client["dc2"]}
	d.config = d.writeConfig(t, 2*time.Second, "")
	return d
}

// writeConfig is writeConfig of the DCs' etcds, with their credentials when authentication is on.
func (d *dcs) writeConfig(t *testing.T, dialTimeout time.Duration, extra string) string {
	t.Helper()
	return writeYAML(t, d.YAMLWith(dialTimeout, nil, "failover: {mode: manual}\n"+extra))
}

// equal compares the mirrored prefix of both DCs, read directly (leased keys left out on both sides).
func (d *dcs) equal(t *testing.T) (bool, string) {
	src := testenv.Snapshot(t, d.c1, prefix)
	dst := testenv.Snapshot(t, d.c2, prefix)
	if diff := testenv.DescribeDiff(src, dst); diff != "" {
		return false, "dc1 vs dc2: " + diff
	}
	return true, ""
}

func (d *dcs) waitEqual(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, waitLong, func() (bool, string) { return d.equal(t) })
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, c *clientv3.Client, key, val string, opts ...clientv3.OpOption) int64 {
	t.Helper()
	resp, err := c.Put(ctxT(t), key, val, opts...)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp.Header.Revision
}

func mustDelete(t *testing.T, c *clientv3.Client, key string, opts ...clientv3.OpOption) int64 {
	t.Helper()
	resp, err := c.Delete(ctxT(t), key, opts...)
	if err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	return resp.Header.Revision
}

// mustPutLeased puts key bound to a fresh lease that outlives the test, like a Vitess lock held by a live
// process.
func mustPutLeased(t *testing.T, c *clientv3.Client, key, val string) {
	t.Helper()
	lease, err := c.Grant(ctxT(t), 600)
	if err != nil {
		t.Fatalf("grant lease: %v", err)
	}
	mustPut(t, c, key, val, clientv3.WithLease(lease.ID))
}

// count returns how many keys start with p in c's etcd, leased ones included.
func count(t *testing.T, c *clientv3.Client, p string) int64 {
	t.Helper()
	resp, err := c.Get(ctxT(t), p, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("count %s: %v", p, err)
	}
	return resp.Count
}

func readCheckpoint(t *testing.T, c *clientv3.Client) *replication.Checkpoint {
	t.Helper()
	cp, err := replication.ReadCheckpoint(ctxT(t), c, checkpointKey, 5*time.Second)
	if err != nil {
		t.Fatalf("read checkpoint: %v", err)
	}
	return cp
}

// waitCheckpoint waits until dc2's checkpoint says every source change up to rev is applied.
func (d *dcs) waitCheckpoint(t *testing.T, rev int64) {
	t.Helper()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		cp := readCheckpoint(t, d.c2)
		if cp == nil {
			return false, "no checkpoint at " + checkpointKey
		}
		return cp.Sync == nil && cp.Revision >= rev, fmt.Sprintf("checkpoint %+v, want revision >= %d after a finished sync", cp, rev)
	})
}

// stopWithSIGTERM sends SIGTERM, which must make the process exit 0.
func stopWithSIGTERM(t *testing.T, p *testenv.Process) {
	t.Helper()
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(waitLong); code != exitOK {
		t.Fatalf("after SIGTERM: exit code %d, want %d\nstderr:\n%s", code, exitOK, p.Stderr())
	}
}

func TestMirrorCopiesChangesAndStopsOnSIGTERM(t *testing.T) {
	bin := testenv.Binary(t)
	d := startDCs(t)

	// Present before the start: copied by the initial full sync, except the leased key and the keys outside
	// the /vt directory.
	mustPut(t, d.c1, "/vt/keyspaces/commerce/Keyspace", "ks")
	mustPut(t, d.c1, "/vt/keyspaces/commerce/shards/0/Shard", "shard-v1")
	mustPut(t, d.c1, "/vt/cells/zone1/CellInfo", "cell")
	mustPutLeased(t, d.c1, "/vt/keyspaces/commerce/shards/0/locks/1", "lock before the start")
	mustPut(t, d.Root["dc1"], "/vt2/not-mirrored", "x")
	mustPut(t, d.Root["dc1"], "/other/not-mirrored", "x")
	// Every write the mirror makes to dc2, in order, to check that no leased key ever appears there.
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start, err := d.c2.Get(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	dc2Writes := d.c2.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))

	p := testenv.StartProcess(t, bin, "mirror", "--config", d.config)
	d.waitEqual(t)
	if n := count(t, d.c2, prefix); n != 3 {
		t.Fatalf("dc2 holds %d keys below %s after the initial sync, want the 3 permanent ones", n, prefix)
	}

	// While it runs: puts, an overwrite, a delete and a deleted subtree, a new leased key.
	mustPut(t, d.c1, "/vt/keyspaces/customer/Keyspace", "ks2")
	mustPut(t, d.c1, "/vt/keyspaces/customer/shards/-80/Shard", "s")
	mustPut(t, d.c1, "/vt/keyspaces/customer/shards/80-/Shard", "s")
	mustPut(t, d.c1, "/vt/keyspaces/commerce/shards/0/Shard", "shard-v2")
	d.waitEqual(t)
	mustDelete(t, d.c1, "/vt/cells/zone1/CellInfo")
	mustDelete(t, d.c1, "/vt/keyspaces/customer/", clientv3.WithPrefix())
	mustPutLeased(t, d.c1, "/vt/keyspaces/commerce/shards/0/locks/2", "lock while running")
	// The mirror applies source revisions in order: once this later key is in dc2, the leased put was seen.
	mustPut(t, d.c1, "/vt/sentinel", "last")
	d.waitEqual(t)
	want := map[string]string{
		"keyspaces/commerce/Keyspace":       "ks",
		"keyspaces/commerce/shards/0/Shard": "shard-v2",
		"sentinel":                          "last",
	}
	if got := testenv.Snapshot(t, d.c2, prefix); !maps.Equal(got, want) {
		t.Fatalf("dc2 holds %v, want %v", got, want)
	}

	// Leased keys exist only in dc1; no copy of any kind (permanent or leased) is or ever was in dc2.
	for sentinelSeen := false; !sentinelSeen; {
		select {
		case resp := <-dc2Writes:
			if err := resp.Err(); err != nil {
				t.Fatalf("watch dc2: %v", err)
			}
			for _, ev := range resp.Events {
				key := string(ev.Kv.Key)
				if strings.Contains(key, "/locks/") {
					t.Errorf("the mirror wrote %s %s to dc2, a copy of a leased key", ev.Type, key)
				}
				sentinelSeen = sentinelSeen || key == "/vt/sentinel"
			}
		case <-time.After(waitLong):
			t.Fatal("the watch of dc2 did not report the sentinel's put")
		}
	}
	if n := count(t, d.c1, "/vt/keyspaces/commerce/shards/0/locks/"); n != 2 {
		t.Fatalf("dc1 holds %d leased lock keys, want 2", n)
	}
	if n := count(t, d.c2, "/vt/keyspaces/commerce/shards/0/locks/"); n != 0 {
		t.Fatalf("dc2 holds %d copies of leased keys, want none", n)
	}
	for _, k := range []string{"/vt2/", "/other/"} {
		if n := count(t, d.Root["dc2"], k); n != 0 {
			t.Fatalf("dc2 holds %d keys below %s, which is outside mirror.prefix /vt", n, k)
		}
	}

	stopWithSIGTERM(t, p)
	for _, want := range []string{"mirroring", "stopped by signal"} {
		if !strings.Contains(p.Stderr(), want) {
			t.Errorf("the mirror's log does not mention %q:\n%s", want, p.Stderr())
		}
	}
}

func TestMirrorResumesAfterKill9(t *testing.T) {
	bin := testenv.Binary(t)
	d := startDCs(t)
	for i := range 40 {
		mustPut(t, d.c1, fmt.Sprintf("/vt/keyspaces/ks/shards/%02d/Shard", i), "v1")
	}
	for i := range 5 {
		mustPut(t, d.c1, fmt.Sprintf("/vt/keyspaces/gone/shards/%d/Shard", i), "v1")
	}

	first := testenv.StartProcess(t, bin, "mirror", "--config", d.config)
	d.waitEqual(t)
	// Changes applied while streaming, so that the checkpoint names a streamed revision.
	rev := mustPut(t, d.c1, "/vt/keyspaces/ks/shards/00/Shard", "v2")
	d.waitEqual(t)
	d.waitCheckpoint(t, rev)

	first.Kill()

	// While no mirror runs: deletes (single keys and a subtree), overwrites and new keys.
	for i := 0; i < 10; i++ {
		mustDelete(t, d.c1, fmt.Sprintf("/vt/keyspaces/ks/shards/%02d/Shard", i))
	}
	mustDelete(t, d.c1, "/vt/keyspaces/gone/", clientv3.WithPrefix())
	for i := 10; i < 20; i++ {
		mustPut(t, d.c1, fmt.Sprintf("/vt/keyspaces/ks/shards/%02d/Shard", i), "v3")
	}
	for i := range 5 {
		rev = mustPut(t, d.c1, fmt.Sprintf("/vt/keyspaces/new/shards/%d/Shard", i), "new")
	}
	if ok, _ := d.equal(t); ok {
		t.Fatal("dc1 and dc2 are equal before the restart; the test changes nothing")
	}

	second := testenv.StartProcess(t, bin, "mirror", "--config", d.config)
	d.waitEqual(t)
	d.waitCheckpoint(t, rev)
	if got := len(testenv.Snapshot(t, d.c2, prefix)); got != 35 {
		t.Fatalf("dc2 holds %d keys, want 35", got)
	}
	if !strings.Contains(second.Stderr(), "resuming from the checkpoint") {
		t.Errorf("the restarted mirror did not resume from its checkpoint (a full sync instead?):\n%s", second.Stderr())
	}

	// verify agrees while the mirror runs.
	code, stdout, stderr := testenv.RunProcess(t, waitLong, bin, "verify", "--config", d.config)
	if code != exitOK || !strings.HasPrefix(stdout, "EQUAL") {
		t.Errorf("verify: exit %d, want 0 and EQUAL\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	stopWithSIGTERM(t, second)
}

// TestMirrorSIGTERMWhileConnecting stops the mirror while it still waits for an etcd that accepts
// connections but never answers: a stop, not an unreachable endpoint, so exit 0.
func TestMirrorSIGTERMWhileConnecting(t *testing.T) {
	bin := testenv.Binary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for {
			select {
			case c := <-accepted:
				c.Close()
			default:
				return
			}
		}
	})
	config := writeConfig(t, []string{"http://" + l.Addr().String()}, []string{"http://" + testenv.ClosedAddr(t)}, 30*time.Second, "")

	p := testenv.StartProcess(t, bin, "mirror", "--config", config)
	select {
	case c := <-accepted:
		accepted <- c
	case <-time.After(waitLong):
		t.Fatal("the mirror never connected to dc1's etcd")
	}
	// The process is now dialing, past its signal set-up.
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != exitOK {
		t.Fatalf("SIGTERM while connecting: exit %d, want %d\nstderr:\n%s", code, exitOK, p.Stderr())
	}
	if strings.Contains(p.Stderr(), "cannot reach") {
		t.Errorf("a stop is reported as an unreachable etcd:\n%s", p.Stderr())
	}
}

// verifyJSON is the part of `topoha verify --json` that scripts read.
type verifyJSON struct {
	Equal           bool `json:"equal"`
	DifferenceCount int  `json:"difference_count"`
	Differences     []struct {
		Key  string `json:"key"`
		Kind string `json:"kind"`
	} `json:"differences"`
}

func runVerifyJSON(t *testing.T, bin string, args ...string) (int, verifyJSON) {
	t.Helper()
	code, stdout, stderr := testenv.RunProcess(t, waitLong, bin, append([]string{"verify", "--json"}, args...)...)
	var out verifyJSON
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("verify --json: exit %d, stdout is not JSON: %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout, stderr)
	}
	return code, out
}

func TestVerify(t *testing.T) {
	bin := testenv.Binary(t)
	d := startDCs(t)
	for _, c := range []*clientv3.Client{d.c1, d.c2} {
		mustPut(t, c, "/vt/same", "1")
		mustPut(t, c, "/vt/diff", "a")
	}
	// A leased key is never mirrored, so it is no difference.
	mustPutLeased(t, d.c1, "/vt/lock", "held")
	// Keys outside the prefix are no difference either.
	mustPut(t, d.Root["dc2"], "/vt2/other", "x")

	code, stdout, stderr := testenv.RunProcess(t, waitLong, bin, "verify", "--config", d.config)
	if code != exitOK || !strings.HasPrefix(stdout, "EQUAL") {
		t.Fatalf("equal prefixes: exit %d, want 0 and EQUAL\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if code, out := runVerifyJSON(t, bin, "--config", d.config); code != exitOK || !out.Equal || out.DifferenceCount != 0 || len(out.Differences) != 0 {
		t.Fatalf("equal prefixes, --json: exit %d, %+v", code, out)
	}

	mustPut(t, d.c1, "/vt/missing", "2")
	mustPut(t, d.c2, "/vt/diff", "b")
	mustPut(t, d.c2, "/vt/extra", "3")
	wantDiffs := map[string]string{"/vt/missing": replication.Missing, "/vt/extra": replication.Extra, "/vt/diff": replication.Different}

	code, stdout, stderr = testenv.RunProcess(t, waitLong, bin, "verify", "--config", d.config)
	if code != exitDiffer || !strings.HasPrefix(stdout, "DIFFERENT (3 differences)") {
		t.Fatalf("different prefixes: exit %d, want %d and DIFFERENT (3 differences)\nstdout:\n%s\nstderr:\n%s", code, exitDiffer, stdout, stderr)
	}
	listed := map[string]string{}
	for _, line := range strings.Split(stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && slices.Contains([]string{replication.Missing, replication.Extra, replication.Different}, f[0]) {
			listed[f[1]] = f[0]
		}
	}
	if !maps.Equal(listed, wantDiffs) {
		t.Errorf("verify lists %v, want %v\nstdout:\n%s", listed, wantDiffs, stdout)
	}

	code, out := runVerifyJSON(t, bin, "--config", d.config)
	got := map[string]string{}
	for _, diff := range out.Differences {
		got[diff.Key] = diff.Kind
	}
	if code != exitDiffer || out.Equal || out.DifferenceCount != 3 || !maps.Equal(got, wantDiffs) {
		t.Errorf("different prefixes, --json: exit %d, %+v; want exit %d, equal false, 3 differences %v", code, out, exitDiffer, wantDiffs)
	}
	// --max-differences bounds the list, not the count.
	code, out = runVerifyJSON(t, bin, "--config", d.config, "--max-differences", "1")
	if code != exitDiffer || out.Equal || out.DifferenceCount != 3 || len(out.Differences) != 1 {
		t.Errorf("--max-differences 1: exit %d, %+v; want exit %d, 3 differences counted, 1 listed", code, out, exitDiffer)
	}

	// Errors exit 2, with nothing on stdout that a script could take for a report.
	code, stdout, stderr = testenv.RunProcess(t, waitLong, bin, "verify", "--json", "--config", filepath.Join(t.TempDir(), "absent.yaml"))
	if code != exitBadConfig || stdout != "" || !strings.Contains(stderr, "config file") {
		t.Errorf("missing config file: exit %d, want %d with an error naming the config file\nstdout:\n%s\nstderr:\n%s", code, exitBadConfig, stdout, stderr)
	}
	d.dc2.Stop()
	code, stdout, stderr = testenv.RunProcess(t, waitLong, bin, "verify", "--json", "--config", d.config)
	if code != exitBadConfig || stdout != "" || !strings.Contains(stderr, "dcs.dc2.etcd.endpoints") {
		t.Errorf("dc2's etcd down: exit %d, want %d with an error naming dcs.dc2.etcd.endpoints\nstdout:\n%s\nstderr:\n%s", code, exitBadConfig, stdout, stderr)
	}
}

func TestBadInputExits2(t *testing.T) {
	testenv.SkipWithAuthEnv(t, "its configs have no credentials; TestAuthUserWithoutRoleRefusedAtStart and TestTLSAndAuth check refused ones")
	bin := testenv.Binary(t)
	dc1 := testenv.StartEtcd(t, "dc1")
	good := writeConfig(t, []string{dc1.Endpoint()}, []string{"http://127.0.0.1:2479"}, 2*time.Second, "")
	noEndpoints := writeConfig(t, []string{dc1.Endpoint()}, nil, 2*time.Second, "")
	unreachable := writeConfig(t, []string{dc1.Endpoint()}, []string{"http://" + testenv.ClosedAddr(t)}, 500*time.Millisecond, "")

	for _, tc := range []struct {
		name string
		args []string
		want []string // substrings of stderr
	}{
		{"mirror without --config", []string{"mirror"}, []string{"--config is required"}},
		{"verify without --config", []string{"verify", "--json"}, []string{"--config is required"}},
		{"empty endpoints", []string{"mirror", "--config", noEndpoints}, []string{"dcs.dc2.etcd.endpoints", "must not be empty"}},
		{"empty endpoints, verify", []string{"verify", "--config", noEndpoints}, []string{"dcs.dc2.etcd.endpoints", "must not be empty"}},
		{"unreachable endpoint", []string{"mirror", "--config", unreachable}, []string{"dcs.dc2.etcd.endpoints", "cannot reach etcd"}},
		{"unknown command", []string{"mirrror", "--config", good}, []string{`unknown command "mirrror"`, "usage:"}},
		{"extra argument", []string{"mirror", "--config", good, "dc2"}, []string{`unexpected argument "dc2"`}},
		{"unknown flag", []string{"mirror", "--config", good, "--prefix", "/vt"}, []string{"-prefix"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			code, stdout, stderr := testenv.RunProcess(t, waitLong, bin, tc.args...)
			elapsed := time.Since(start)
			if code != exitBadConfig {
				t.Errorf("exit %d, want %d", code, exitBadConfig)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q", w)
				}
			}
			if stdout != "" {
				t.Errorf("stdout is not empty")
			}
			// Nothing waits on a bad input: the slowest case is one dial_timeout (500ms).
			if elapsed > 10*time.Second {
				t.Errorf("took %s to fail", elapsed)
			}
			if t.Failed() {
				t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
			}
		})
	}
}

// One member of each DC's cluster dead (the first listed in dc1, the last in dc2): status, verify and the
// mirror's start answer as if nothing happened, and status names the dead members.
func TestOneDeadMemberPerDCIsNoOutage(t *testing.T) {
	d := startDCs(t)
	mustPut(t, d.c1, prefix+"k", "v")
	mustPut(t, d.c2, prefix+"k", "v")
	d.dc1.StopMember(0)
	d.dc2.StopMember(testenv.Members - 1)
	bin := testenv.Binary(t)
	code, out, errOut := testenv.RunProcess(t, waitLong, bin, "verify", "--config", d.config)
	if code != 0 {
		t.Errorf("verify with a dead member in each DC: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = testenv.RunProcess(t, waitLong, bin, "status", "--config", d.config)
	for _, want := range []string{"dc1 up (2 of 3 members serve", "dc2 up (2 of 3 members serve",
		"MEMBER   dc1 " + d.dc1.Endpoints()[0] + " not serving", "MEMBER   dc2 " + d.dc2.Endpoints()[testenv.Members-1] + " not serving"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q: exit %d\n%s%s", want, code, out, errOut)
		}
	}
}
