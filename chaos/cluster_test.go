//go:build chaos

package chaos

// The harness: two DCs, each an etcd server behind toxiproxy links, controllers and witnesses as
// processes, the fake promote program, and the operator's view (status, history, metrics).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/topoha/topoha/clusterstatus"
	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/internal/clitest"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/keys"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/vitess"
)

// topohaKeys are the test cluster's keys.
var topohaKeys = keys.For(clusterName)

const (
	clusterName = "t"
	// vtPrefix is the raw key prefix of mirror.prefix /vt in both DCs.
	vtPrefix   = "/vt/"
	globalRoot = "/vt"
	waitLong   = 60 * time.Second
	// ttl is election.ttl; after is the default failover.after.
	ttl   = time.Second
	after = time.Second
)

// dcNames are the two DCs; sites are where processes run: in a DC, or at a third site (witnesses, the
// writer's clients, the operator).
var (
	dcNames = []string{"dc1", "dc2"}
	sites   = []string{"dc1", "dc2", "ext"}
)

func other(dc string) string {
	if dc == "dc1" {
		return "dc2"
	}
	return "dc1"
}

// shardSpec is a Vitess shard that a failover promotes, with its candidate tablet in each DC.
type shardSpec struct {
	keyspace, shard string
	tablets         map[string]string
}

var shards = []shardSpec{
	{"commerce", "-80", map[string]string{"dc1": "dc1-0000000100", "dc2": "dc2-0000000101"}},
	{"commerce", "80-", map[string]string{"dc1": "dc1-0000000200", "dc2": "dc2-0000000201"}},
}

// options shape a cluster.
type options struct {
	// controllers maps controller IDs to the DC they run in.
	controllers map[string]string
	witnesses   int
	// twoSite sets failover.allow_two_site_auto (auto mode without witnesses).
	twoSite  bool
	after    time.Duration
	cooldown time.Duration
	// promoteTimeout is failover.promote_timeout; promoteDelay a sleep before each promote attempt;
	// promoteModes the fake promote program's -modes per shard (default ok).
	promoteTimeout time.Duration
	promoteDelay   time.Duration
	promoteModes   map[string]string
	// promoteSleep, if set, replaces promoteDelay: a template for the seconds each attempt sleeps, e.g.
	// by {{.Keyspace}}.
	promoteSleep string
	// quota is each etcd member's --quota-backend-bytes; 0 is etcd's default.
	quota int64
	// selfFence turns failover.self_fence on with fence_after = after/3; the fence and unfence commands
	// append to fence.log in the promote directory.
	selfFence bool
	// shards replaces the two default shards (shardsOf makes many).
	shards []shardSpec
	// afterFailover is failover.hooks.after_failover.
	afterFailover []string
}

// shardsOf is n shards, spread over the keyspaces ks0, ks1 and ks2.
func shardsOf(n int) []shardSpec {
	var out []shardSpec
	for i := range n {
		out = append(out, shardSpec{fmt.Sprintf("ks%d", i%3), fmt.Sprintf("s%02d", i),
			map[string]string{"dc1": fmt.Sprintf("dc1-%010d", 1000+i), "dc2": fmt.Sprintf("dc2-%010d", 2000+i)}})
	}
	return out
}

func defaults() options {
	return options{
		controllers:    map[string]string{"ctl-a": "dc1", "ctl-b": "dc2"},
		twoSite:        true,
		after:          after,
		cooldown:       time.Minute,
		promoteTimeout: 5 * time.Second,
	}
}

// ctlProc is one controller: its current process and the ones before it (restarts), for their logs.
type ctlProc struct {
	id, site string
	proc     *testenv.Process
	addr     string
	past     []*testenv.Process
}

// logs returns what every incarnation of the controller wrote to stderr.
func (p *ctlProc) logs() string {
	var b strings.Builder
	for _, q := range append(slices.Clone(p.past), p.proc) {
		b.WriteString(q.Stderr())
	}
	return b.String()
}

func (p *ctlProc) alive() bool { return p.proc != nil && !p.proc.Exited() }

// cluster is one scenario's world.
type cluster struct {
	t    *testing.T
	opts options
	row  *row
	dir  string
	bin  string

	// etcd is each DC's etcd, a 3-member cluster.
	etcd   map[string]*testenv.Cluster
	direct map[string]*clientv3.Client // test-side clients that bypass every site's links
	// links[site][dc] is the path from site to each member of dc's etcd.
	links map[string]map[string]*testenv.Path
	// configs[site] is the config file of the processes at site; "direct" is the operator's, without links.
	configs    map[string]string
	failoverKV map[string]any // the failover section, changed by reloads

	ctls        map[string]*ctlProc
	shards      []shardSpec
	witnessURLs []string
	promoteDir  string
	w           *writer
}

// newCluster starts the etcds, links, witnesses and controllers, seeds the topo, waits for a leader and a
// finished initial sync, and returns with the writer idle.
func newCluster(t *testing.T, r *row, opts options) *cluster {
	t.Helper()
	r.step("starting the cluster")
	c := &cluster{
		t: t, opts: opts, row: r, dir: t.TempDir(), bin: testenv.Binary(t),
		etcd: map[string]*testenv.Cluster{}, direct: map[string]*clientv3.Client{},
		links: map[string]map[string]*testenv.Path{}, configs: map[string]string{}, ctls: map[string]*ctlProc{},
		shards: opts.shards,
	}
	if c.shards == nil {
		c.shards = shards
	}
	for _, dc := range dcNames {
		var tune []testenv.EtcdOption
		if opts.quota > 0 {
			tune = append(tune, testenv.WithQuota(opts.quota))
		}
		c.etcd[dc] = testenv.StartCluster(t, dc, testenv.Members, tune...)
		c.direct[dc] = newClient(t, c.etcd[dc].Endpoints())
	}
	for _, site := range sites {
		c.links[site] = map[string]*testenv.Path{}
		for _, dc := range dcNames {
			c.links[site][dc] = testenv.StartPath(t, site+"->"+dc, c.etcd[dc])
		}
	}
	c.promoteDir = filepath.Join(c.dir, "promote")
	if err := os.MkdirAll(c.promoteDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Witnesses listen on ports chosen now, so that the configs can name them from the start.
	var listen []string
	for range opts.witnesses {
		addr := testenv.ClosedAddr(t)
		listen = append(listen, addr)
		c.witnessURLs = append(c.witnessURLs, "http://"+addr)
	}
	c.failoverKV = c.failoverSection(c.witnessURLs)
	c.writeConfigs()
	c.seed()
	for i, addr := range listen {
		p := testenv.StartProcess(t, c.bin, "witness", "--config", c.configs["ext"], "--listen", addr, "--id", fmt.Sprintf("w%d", i+1))
		waitAddr(t, p)
	}
	ids := slices.Sorted(maps.Keys(opts.controllers))
	for _, id := range ids {
		c.ctls[id] = &ctlProc{id: id, site: opts.controllers[id]}
		c.startController(id)
	}
	c.waitLeader("")
	c.waitEqual("initial sync")
	c.w = newWriter(c)
	// Failed scenarios get every process's output from testenv; CHAOS_LOGS=1 shows the controllers' logs of
	// the scenarios that passed too.
	t.Cleanup(func() {
		if os.Getenv("CHAOS_LOGS") != "" && !t.Failed() {
			for _, id := range slices.Sorted(maps.Keys(c.ctls)) {
				t.Logf("--- %s (%s) ---\n%s", id, c.ctls[id].site, c.ctls[id].logs())
			}
		}
	})
	return c
}

func hostPort(endpoint string) string { return strings.TrimPrefix(endpoint, "http://") }

// failoverSection is the config's failover section: auto mode with the fast timings, the fake promote
// program behind a wrapper that records each attempt's PID and start time.
func (c *cluster) failoverSection(witnesses []string) map[string]any {
	fake := testenv.Build(c.t, "./internal/fakepromote")
	o := c.opts
	script := `echo "$$ $(date +%s.%N)" >> "$0.pids"; `
	switch {
	case o.promoteSleep != "":
		script += "sleep " + o.promoteSleep + "; "
	case o.promoteDelay > 0:
		script += fmt.Sprintf("sleep %.3f; ", o.promoteDelay.Seconds())
	}
	// A run that completes is recorded in .done; a run killed with its process group is not.
	script += fmt.Sprintf(`%q "$@" && echo "$$" >> "$0.done"`, fake)
	modes := "ok"
	for shard, m := range o.promoteModes {
		modes = fmt.Sprintf(`{{if eq .Shard %q}}%s{{else}}%s{{end}}`, shard, m, modes)
	}
	base := c.promoteDir + "/{{.Keyspace}}{{.Shard}}"
	etcd := fmt.Sprintf(`{{if eq .DC "dc1"}}%s{{else}}%s{{end}}`, strings.Join(c.etcd["dc1"].Endpoints(), ","), strings.Join(c.etcd["dc2"].Endpoints(), ","))
	var shardList []any
	for _, s := range c.shards {
		shardList = append(shardList, map[string]any{"keyspace": s.keyspace, "shard": s.shard, "tablets": s.tablets})
	}
	f := map[string]any{
		"mode":            "auto",
		"after":           o.after.String(),
		"cooldown":        o.cooldown.String(),
		"promote_timeout": o.promoteTimeout.String(),
		"promote_command": []string{"sh", "-c", script, base, "-etcd", etcd, "-root", globalRoot, "-log", base + ".log", "-modes", modes,
			"{{.Keyspace}}/{{.Shard}}", "{{.Tablet}}"},
		"shards": shardList,
	}
	if len(o.afterFailover) > 0 {
		f["hooks"] = map[string]any{"after_failover": o.afterFailover, "timeout": "30s"}
	}
	if o.selfFence {
		record := func(action string) []string {
			return []string{"sh", "-c", fmt.Sprintf("echo %s {{.Keyspace}}/{{.Shard}} {{.Tablet}} >> %s/fence.log", action, c.promoteDir)}
		}
		f["self_fence"], f["fence_after"] = true, (o.after / 3).String()
		f["fence_command"], f["unfence_command"] = record("fence"), record("unfence")
	}
	if len(witnesses) > 0 {
		f["witnesses"] = witnesses
	} else if o.twoSite {
		f["allow_two_site_auto"] = true
	}
	return f
}

// writeConfigs writes one config per site (its endpoints are that site's links) and the operator's
// ("direct"). JSON is YAML.
func (c *cluster) writeConfigs() {
	c.t.Helper()
	for _, site := range append(slices.Clone(sites), "direct") {
		dcs := map[string]any{}
		for _, dc := range dcNames {
			eps := c.etcd[dc].Endpoints()
			if site != "direct" {
				eps = c.links[site][dc].Endpoints()
			}
			dcs[dc] = map[string]any{"etcd": map[string]any{"endpoints": eps, "dial_timeout": "1s"}}
		}
		cfg := map[string]any{
			"cluster":         clusterName,
			"initial_primary": "dc1",
			"dcs":             dcs,
			"mirror":          map[string]any{"prefix": globalRoot},
			"vitess":          map[string]any{"global_root": globalRoot},
			"election":        map[string]any{"ttl": ttl.String()},
			"health":          map[string]any{"interval": "100ms", "timeout": "500ms", "failure_threshold": 2, "success_threshold": 1},
			"failover":        c.failoverKV,
		}
		data, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			c.t.Fatal(err)
		}
		path := filepath.Join(c.dir, "config-"+site+".yaml")
		// Written whole and renamed, so that a controller reloading on SIGHUP never reads half a file.
		if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
			c.t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			c.t.Fatal(err)
		}
		c.configs[site] = path
	}
}

// seed writes the Shard records (naming dc1's tablets) and some topo keys into dc1, the initial primary.
func (c *cluster) seed() {
	c.t.Helper()
	ctx := ctxFor(c.t, 30*time.Second)
	for _, s := range c.shards {
		alias, err := vitess.ParseTabletAlias(s.tablets["dc1"])
		if err != nil {
			c.t.Fatal(err)
		}
		rec, err := vitess.SetShardPrimary(nil, alias)
		if err != nil {
			c.t.Fatal(err)
		}
		if _, err := c.direct["dc1"].Put(ctx, vitess.ShardKey(globalRoot, s.keyspace, s.shard), string(rec)); err != nil {
			c.t.Fatal(err)
		}
	}
	for i := range 50 {
		if _, err := c.direct["dc1"].Put(ctx, fmt.Sprintf("%sbase/%02d", vtPrefix, i), "seed"); err != nil {
			c.t.Fatal(err)
		}
	}
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var httpAddr = regexp.MustCompile(`http=(127\.0\.0\.1:\d+)`)

// waitAddr waits for a process to log its HTTP address.
func waitAddr(t *testing.T, p *testenv.Process) string {
	t.Helper()
	var addr string
	testenv.Eventually(t, waitLong, func() (bool, string) {
		if m := httpAddr.FindStringSubmatch(p.Stderr()); m != nil {
			addr = m[1]
			return true, ""
		}
		if p.Exited() {
			t.Fatalf("process exited before it served:\n%s", p.Stderr())
		}
		return false, "no http address logged"
	})
	return addr
}

// startController starts (or restarts) a controller and waits until it runs.
func (c *cluster) startController(id string) {
	c.t.Helper()
	p := c.ctls[id]
	if p.proc != nil {
		p.past = append(p.past, p.proc)
	}
	p.proc = testenv.StartProcess(c.t, c.bin, "run", "--config", c.configs[p.site], "--dc", p.site, "--id", id, "--listen", "127.0.0.1:0")
	p.addr = waitAddr(c.t, p.proc)
	testenv.Eventually(c.t, waitLong, func() (bool, string) {
		return strings.Contains(p.proc.Stderr(), "controller started"), id + " has not started"
	})
}

// kill kills a controller with SIGKILL.
func (c *cluster) kill(id string) {
	c.t.Helper()
	if p := c.ctls[id]; p.alive() {
		p.proc.Kill()
	}
}

// controllersIn lists the IDs of the controllers that run in a DC.
func (c *cluster) controllersIn(dc string) []string {
	var out []string
	for id, p := range c.ctls {
		if p.site == dc {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// killDC loses a whole DC: its controllers are killed, its VIP stops answering (the links to it are cut)
// and its etcd stops. Without open client streams the embedded etcd stops at once instead of draining
// them for its 5 s grace period.
func (c *cluster) killDC(dc string) {
	c.t.Helper()
	for _, id := range c.controllersIn(dc) {
		c.kill(id)
	}
	for _, site := range sites {
		c.links[site][dc].Cut()
	}
	c.etcd[dc].Stop()
}

// reviveDC brings a lost DC back: its etcd and VIP, then its controllers.
func (c *cluster) reviveDC(dc string) {
	c.t.Helper()
	c.etcd[dc].Start()
	for _, site := range sites {
		c.links[site][dc].Heal()
	}
	for _, id := range c.controllersIn(dc) {
		c.startController(id)
	}
}

// writeThenLose has the writer write into dc for d, then loses dc (killDC) and returns when.
func (c *cluster) writeThenLose(dc string, d time.Duration) time.Time {
	c.t.Helper()
	c.w.setTarget(dc)
	time.Sleep(d)
	c.row.step("losing " + dc)
	lost := time.Now()
	c.killDC(dc)
	return lost
}

// partition cuts the links between the DCs; the third site still reaches both.
func (c *cluster) partition() {
	c.links["dc1"]["dc2"].Cut()
	c.links["dc2"]["dc1"].Cut()
}

// blackhole makes dc's VIP accept connections and never answer, from every site.
func (c *cluster) blackhole(dc string) {
	for _, site := range sites {
		c.links[site][dc].Blackhole()
	}
}

// healLinks opens every link and removes every toxic.
func (c *cluster) healLinks() {
	for _, site := range sites {
		for _, dc := range dcNames {
			c.links[site][dc].Heal()
		}
	}
}

// records reads the primary record from each DC's etcd directly.
func (c *cluster) records() map[string]primary.Observed {
	out := map[string]primary.Observed{}
	for _, dc := range dcNames {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		out[dc] = primary.Read(ctx, c.direct[dc], topohaKeys.Primary())
		cancel()
	}
	return out
}

// primary is the record that holds: the highest epoch readable, or dc1 at epoch 0.
func (c *cluster) primary() primary.Record {
	return primary.HeldByAny("dc1", dcNames, c.records())
}

// waitEpoch waits until the primary record reaches epoch and returns it.
func (c *cluster) waitEpoch(epoch int64) primary.Record {
	c.t.Helper()
	var rec primary.Record
	testenv.Eventually(c.t, waitLong, func() (bool, string) {
		rec = c.primary()
		return rec.Epoch >= epoch, fmt.Sprintf("primary %s at epoch %d, waiting for epoch %d", rec.DC, rec.Epoch, epoch)
	})
	return rec
}

// steady asserts that the primary stays (dc, epoch) for d: a failover that must not come.
func (c *cluster) steady(d time.Duration, dc string, epoch int64, why string) {
	c.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if rec := c.primary(); rec.Epoch != epoch || rec.DC != dc {
			c.t.Fatalf("%s: the primary moved to %s at epoch %d (%s); want %s at epoch %d", why, rec.DC, rec.Epoch, rec.Reason, dc, epoch)
		}
	}
}

// leader returns the leader of the election in the DR etcd of the current primary, or nil.
func (c *cluster) leader() *election.Leader {
	dr := other(c.primary().DC)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l, err := election.CurrentLeader(ctx, c.direct[dr], topohaKeys.Election())
	if err != nil {
		return nil
	}
	return l
}

// waitLeader waits for a leader other than not and returns its ID.
func (c *cluster) waitLeader(not string) string {
	c.t.Helper()
	var id string
	testenv.Eventually(c.t, waitLong, func() (bool, string) {
		l := c.leader()
		if l == nil {
			return false, "no leader"
		}
		id = l.ID
		return id != not, "the leader is still " + id
	})
	return id
}

// lastFailover reads the stored result of the last failover from dc's etcd; nil if there is none.
func (c *cluster) lastFailover(dc string) *failover.Result {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return failover.ReadResult(ctx, c.direct[dc], topohaKeys.LastFailover()).Record
}

// waitResult waits until the failover to epoch has stored its result in dc's etcd.
func (c *cluster) waitResult(dc string, epoch int64) *failover.Result {
	c.t.Helper()
	var res *failover.Result
	testenv.Eventually(c.t, waitLong, func() (bool, string) {
		res = c.lastFailover(dc)
		if res == nil {
			return false, "no failover result in " + dc
		}
		return res.Epoch == epoch && !res.FinishedAt.IsZero(), fmt.Sprintf("last failover result is of epoch %d", res.Epoch)
	})
	return res
}

// equal compares the primary's prefix with the DR copy, both read directly.
func (c *cluster) equal() (ok bool, why string, keys int) {
	p := c.primary().DC
	// Short reads: a read the balancer sends to a hung member fails this round, not the test.
	src, err := testenv.TrySnapshot(c.direct[p], vtPrefix, 2*time.Second)
	if err != nil {
		return false, err.Error(), 0
	}
	dst, err := testenv.TrySnapshot(c.direct[other(p)], vtPrefix, 2*time.Second)
	if err != nil {
		return false, err.Error(), 0
	}
	if diff := testenv.DescribeDiff(src, dst); diff != "" {
		return false, fmt.Sprintf("%s (primary) vs %s: %s%s", p, other(p), diff, c.explainDiff(src, dst)), len(src)
	}
	return true, "", len(src)
}

// explainDiff shows the values of up to three keys that differ, and which writer operation wrote each.
func (c *cluster) explainDiff(src, dst map[string]string) string {
	var keys []string
	for k, v := range src {
		if dst[k] != v {
			keys = append(keys, k)
		}
	}
	for k := range dst {
		if _, ok := src[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	ops := map[int]op{}
	if c.w != nil {
		for _, o := range c.w.snapshot() {
			ops[o.seq] = o
		}
	}
	describe := func(v string, ok bool) string {
		if !ok {
			return "(absent)"
		}
		if _, seq, ok := origin(v); ok {
			if o, known := ops[seq]; known {
				return fmt.Sprintf("%q (%s into %s at %s, err %v)", v, o.kind, o.dc, o.start.Format("15:04:05.000"), o.err)
			}
		}
		return strconv.Quote(v)
	}
	for _, k := range keys[:min(3, len(keys))] {
		sv, sok := src[k]
		dv, dok := dst[k]
		fmt.Fprintf(&b, "\n\t%s: primary %s, copy %s", k, describe(sv, sok), describe(dv, dok))
	}
	return b.String()
}

// waitEqual waits until the DR copy equals the primary's prefix and returns how long that took.
func (c *cluster) waitEqual(what string) time.Duration {
	c.t.Helper()
	start := time.Now()
	testenv.Eventually(c.t, waitLong, func() (bool, string) {
		ok, why, _ := c.equal()
		return ok, what + ": " + why
	})
	return time.Since(start)
}

// status runs `topoha status --json` as the operator.
func (c *cluster) status() clusterstatus.Status {
	c.t.Helper()
	return clitest.Status(c.t, c.configs["direct"], waitLong)
}

// cli runs a topoha command as the operator and returns its exit code and output.
func (c *cluster) cli(args ...string) (int, string, string) {
	c.t.Helper()
	return testenv.RunProcess(c.t, waitLong, c.bin, append(args, "--config", c.configs["direct"])...)
}

// mustCLI runs a topoha command that must succeed and returns its standard output.
func (c *cluster) mustCLI(args ...string) string {
	c.t.Helper()
	code, out, errOut := c.cli(args...)
	if code != 0 {
		c.t.Fatalf("topoha %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// history returns the merged event history of both etcds.
func (c *cluster) history() []events.Event {
	c.t.Helper()
	out := c.mustCLI("history", "--json", "--limit", "0")
	var evs []events.Event
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		c.t.Fatalf("history --json: %v\n%s", err, out)
	}
	return evs
}

// metric scrapes a controller's /metrics and returns the sum of the series of name whose labels include
// every given name="value" pair.
func (c *cluster) metric(id, name string, labels ...string) float64 {
	c.t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + c.ctls[id].addr + "/metrics")
	if err != nil {
		c.t.Fatalf("scrape %s: %v", id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return sumSeries(string(body), name, labels...)
}

// sumSeries sums the samples of a metric in Prometheus text format.
func sumSeries(text, name string, labels ...string) float64 {
	sum := 0.0
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		series, val := line[:sp], line[sp+1:]
		metricName, rest, _ := strings.Cut(series, "{")
		if metricName != name {
			continue
		}
		matches := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			matches = matches && strings.Contains(rest, fmt.Sprintf("%s=%q", k, v))
		}
		if f, err := strconv.ParseFloat(val, 64); err == nil && matches {
			sum += f
		}
	}
	return sum
}

// get returns the HTTP status of a controller endpoint.
func (c *cluster) get(id, path string) int {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + c.ctls[id].addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitLog waits until some controller's log contains s and returns that controller's ID.
func (c *cluster) waitLog(s string) string {
	c.t.Helper()
	var who string
	testenv.Eventually(c.t, waitLong, func() (bool, string) {
		for _, id := range slices.Sorted(maps.Keys(c.ctls)) {
			if strings.Contains(c.ctls[id].logs(), s) {
				who = id
				return true, ""
			}
		}
		return false, "no controller logged " + strconv.Quote(s)
	})
	return who
}

// countLogs counts the lines containing s in every controller's logs.
func (c *cluster) countLogs(s string) int {
	n := 0
	for _, p := range c.ctls {
		n += strings.Count(p.logs(), s)
	}
	return n
}

// promoteRuns returns the attempts of the promote command for a shard: one line per run, as the fake
// program recorded it (mode, shard, tablet).
func (c *cluster) promoteRuns(s shardSpec) []string {
	data, err := os.ReadFile(filepath.Join(c.promoteDir, s.keyspace+s.shard+".log"))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// promoteStarts returns the PIDs and start times of the promote attempts for a shard, as the wrapper
// recorded them (before the fake program's own log line, so also for attempts that are still sleeping).
func (c *cluster) promoteStarts(s shardSpec) (pids []int, at []time.Time) {
	data, err := os.ReadFile(filepath.Join(c.promoteDir, s.keyspace+s.shard+".pids"))
	if err != nil {
		return nil, nil
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		pid, _ := strconv.Atoi(f[0])
		sec, _ := strconv.ParseFloat(f[1], 64)
		pids = append(pids, pid)
		at = append(at, time.Unix(0, int64(sec*1e9)))
	}
	return pids, at
}

// promoteDone counts the promote attempts for a shard that ran to completion (not killed).
func (c *cluster) promoteDone(s shardSpec) int {
	data, err := os.ReadFile(filepath.Join(c.promoteDir, s.keyspace+s.shard+".done"))
	if err != nil {
		return 0
	}
	return strings.Count(string(data), "\n")
}

// waitConverged waits until the failover to dc at epoch has every shard confirmed, and returns its result.
func (c *cluster) waitConverged(dc string, epoch int64) *failover.Result {
	c.t.Helper()
	var res *failover.Result
	testenv.Eventually(c.t, 2*waitLong, func() (bool, string) {
		res = c.lastFailover(dc)
		return res != nil && res.Epoch == epoch && !res.ConvergedAt.IsZero(), fmt.Sprintf("not converged: %+v", c.status().Unfinished)
	})
	return res
}

// processGone says whether no process with pid exists any more (killed and reaped).
func processGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// reload rewrites the configs with the failover section changed by edit and sends SIGHUP to every live
// controller.
func (c *cluster) reload(edit func(f map[string]any)) {
	c.t.Helper()
	edit(c.failoverKV)
	c.writeConfigs()
	for _, id := range slices.Sorted(maps.Keys(c.ctls)) {
		if p := c.ctls[id]; p.alive() {
			p.proc.Signal(syscall.SIGHUP)
		}
	}
}

// newClient returns a client of the etcd at endpoint, closed when the test ends. Its reconnection back-off
// is capped at 500ms: a test's client must not wait many seconds for an etcd that came back long ago.
func newClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, DialTimeout: time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// checkpointRev returns the mod revision of the mirror checkpoint in dc's etcd (0 if none).
func (c *cluster) checkpointRev(dc string) int64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.direct[dc].Get(ctx, topohaKeys.MirrorCheckpoint())
	if err != nil {
		c.t.Fatalf("read the checkpoint in %s: %v", dc, err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return resp.Kvs[0].ModRevision
}

// watchHealthz polls the /healthz of every controller process alive now (until it exits) every 200ms until
// the returned function is called, which returns what did not answer 200 (at most ten, and how many in all).
func (c *cluster) watchHealthz() func() (bad []string, n int) {
	type target struct {
		id, addr string
		proc     *testenv.Process
	}
	var targets []target
	for _, id := range slices.Sorted(maps.Keys(c.ctls)) {
		if p := c.ctls[id]; p.alive() {
			targets = append(targets, target{id, p.addr, p.proc})
		}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	var bad []string
	n := 0
	go func() {
		defer close(done)
		client := &http.Client{Timeout: 2 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			for _, tg := range targets {
				if tg.proc.Exited() {
					continue // killed by the scenario
				}
				resp, err := client.Get("http://" + tg.addr + "/healthz")
				code := 0
				if err == nil {
					code = resp.StatusCode
					resp.Body.Close()
				}
				if code != 200 {
					if time.Sleep(200 * time.Millisecond); tg.proc.Exited() {
						continue // killed while it was asked
					}
					n++
					if len(bad) < 10 {
						bad = append(bad, fmt.Sprintf("%s %s: %d %v", time.Now().Format("15:04:05.000"), tg.id, code, err))
					}
				}
			}
		}
	}()
	return func() ([]string, int) {
		close(stop)
		<-done
		return bad, n
	}
}
