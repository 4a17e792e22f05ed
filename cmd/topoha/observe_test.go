package main

// What an operator watches, tested on real controller processes: /metrics scraped through a failover,
// the hooks' environment, the history, the POST endpoints and their token, and docs/metrics.md.

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/topoha/topoha/internal/testenv"
)

// scrape returns the metric families a controller serves, or nil if it does not answer.
func scrape(addr string) map[string]*dto.MetricFamily {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil
	}
	return fams
}

// value is the value of the series of family name whose labels include labels ("k=v"), and whether it
// exists. Histograms give their sample count.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			match = match && have[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// scraper scrapes controllers every 50 ms, as Prometheus would, and keeps per controller and series the
// distinct values seen in order, the last scrape, and the names of every family ever served.
type scraper struct {
	mu     sync.Mutex
	seen   map[string][]float64 // "ctl-b topoha_primary_epoch" -> values in the order they changed
	last   map[string]map[string]*dto.MetricFamily
	served map[string]bool
	stop   chan struct{}
	done   chan struct{}
}

func startScraper(addrs map[string]string, series map[string][]string) *scraper {
	s := &scraper{seen: map[string][]float64{}, last: map[string]map[string]*dto.MetricFamily{}, served: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			for id, addr := range addrs {
				fams := scrape(addr)
				if fams == nil {
					continue
				}
				s.mu.Lock()
				s.last[id] = fams
				for name := range fams {
					s.served[name] = true
				}
				for name, labels := range series {
					if v, ok := value(fams, name, labels...); ok {
						key := id + " " + name
						if vs := s.seen[key]; len(vs) == 0 || vs[len(vs)-1] != v {
							s.seen[key] = append(vs, v)
						}
					}
				}
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return s
}

// lastScrape returns each controller's latest scrape.
func (s *scraper) lastScrape() map[string]map[string]*dto.MetricFamily {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.last)
}

func (s *scraper) finish() {
	close(s.stop)
	<-s.done
}

// envFiles reads the TOPOHA_* environments the hooks of observeConfig wrote, keyed by file name.
func envFiles(t *testing.T, dir string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.env"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			k, v, _ := strings.Cut(line, "=")
			env[k] = v
		}
		out[filepath.Base(f)] = env
	}
	return out
}

// observeConfig is autoConfig with every hook writing its TOPOHA_* environment to hookDir, named by hook,
// DC and role or epoch, and a token file for the POST endpoints.
func observeConfig(t *testing.T, d *dcs) (config, hookDir, token string) {
	config = autoConfig(t, d)
	hookDir = t.TempDir()
	token = "s3cret-token"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dump := func(name string) string {
		return fmt.Sprintf(`[sh, -c, 'env | grep ^TOPOHA_ | sort > %s/%s.env']`, hookDir, name)
	}
	editConfig(t, config, "  mode: auto\n", fmt.Sprintf("  mode: auto\n  hooks:\n    before_promote: %s\n    after_failover: %s\n    on_role_change: %s\n    timeout: 5s\n",
		dump("$TOPOHA_HOOK-$TOPOHA_EPOCH"), dump("$TOPOHA_HOOK-$TOPOHA_EPOCH"), dump("$TOPOHA_HOOK-$TOPOHA_DC-$TOPOHA_ROLE")))
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "http: {token_file: %s}\n", tokenFile); err != nil {
		t.Fatal(err)
	}
	return config, hookDir, token
}

// A failover seen from outside: Prometheus scrapes show the transitions, the hooks get their environment,
// the history tells the story, and every metric served is documented (and every documented one served).
func TestMetricsHooksAndHistoryThroughAFailover(t *testing.T) {
	d := startDCs(t)
	config, hookDir, _ := observeConfig(t, d)
	procs := startControllers(t, d, config)
	leader := d.leaderID(t, "")
	addrs := map[string]string{"ctl-a": apiAddr(t, procs["ctl-a"]), "ctl-b": apiAddr(t, procs["ctl-b"])}
	mustPut(t, d.c1, prefix+"topo", "v1")
	d.waitEqual(t)
	// Both controllers told their hooks their DC's role at start.
	testenv.Eventually(t, waitLong, func() (bool, string) {
		envs := envFiles(t, hookDir)
		a, b := envs["on_role_change-dc1-primary.env"], envs["on_role_change-dc2-dr.env"]
		return a["TOPOHA_OLD_ROLE"] == "none" && b["TOPOHA_OLD_ROLE"] == "none", fmt.Sprintf("hook runs so far: %v", envs)
	})
	procs[leader].Signal(syscall.SIGHUP) // an unchanged config reloads fine

	sc := startScraper(addrs, map[string][]string{
		"topoha_primary_epoch":        nil,
		"topoha_etcd_up":              {"dc=dc1"},
		"topoha_failovers_total":      {"trigger=auto", "result=success"},
		"topoha_config_reloads_total": {"result=success"},
	})
	d.dc1.Stop()
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st := status(t, config)
		return st.LastFailover != nil && st.LastFailover.Epoch == 1 && !st.LastFailover.FinishedAt.IsZero(), "no finished failover yet"
	})
	// Both controllers follow dc2 now, and ctl-a's DC turned DR.
	testenv.Eventually(t, waitLong, func() (bool, string) {
		last := sc.lastScrape()
		for id := range addrs {
			if v, _ := value(last[id], "topoha_primary_info", "dc=dc2"); v != 1 {
				return false, id + " does not follow dc2 yet"
			}
		}
		// The hook writes its file before it exits, and topoha counts the run after that.
		if v, _ := value(last["ctl-a"], "topoha_hook_runs_total", "hook=on_role_change", "result=success"); v < 2 {
			return false, "ctl-a has not counted on_role_change for role dr"
		}
		_, ok := envFiles(t, hookDir)["on_role_change-dc1-dr.env"]
		return ok, "ctl-a's on_role_change has not run for role dr"
	})
	sc.finish()
	seen, last := sc.seen, sc.last

	// The transitions, as Prometheus saw them.
	for _, id := range []string{"ctl-a", "ctl-b"} {
		if got := seen[id+" topoha_primary_epoch"]; !slices.Equal(got, []float64{0, 1}) {
			t.Errorf("%s topoha_primary_epoch went %v, want [0 1]", id, got)
		}
		if got := seen[id+" topoha_etcd_up"]; !slices.Equal(got, []float64{1, 0}) {
			t.Errorf("%s topoha_etcd_up{dc=dc1} went %v, want [1 0]", id, got)
		}
	}
	// The failover to dc2 is carried out (promotions, hooks, result) by dc2's controller, which holds the
	// convergence lock there, whichever controller led and bumped the epoch.
	if b, a := seen["ctl-b topoha_failovers_total"], seen["ctl-a topoha_failovers_total"]; !slices.Equal(b, []float64{0, 1}) || !slices.Equal(a, []float64{0}) {
		t.Errorf("topoha_failovers_total{auto,success}: ctl-b went %v, ctl-a %v; want 0 then 1 on ctl-b (dc2's, the converger) only", b, a)
	}
	if v, _ := value(last["ctl-b"], "topoha_converging"); v != 0 {
		t.Errorf("ctl-b still converging after the failover converged: %v", v)
	}
	// One term before the failover, one after: a leader that keeps winning terms with a stale record and
	// giving them up again would show here as churn.
	changes := 0.0
	for id := range addrs {
		v, _ := value(last[id], "topoha_leader_changes_total")
		changes += v
	}
	if changes < 2 || changes > 4 {
		t.Errorf("topoha_leader_changes_total summed over controllers = %v, want 2 to 4 (gained, lost, gained, maybe lost)", changes)
	}
	if got := seen[leader+" topoha_config_reloads_total"]; len(got) == 0 || got[len(got)-1] != 1 {
		t.Errorf("the leader's topoha_config_reloads_total{success} went %v after SIGHUP", got)
	}
	if v, _ := value(last["ctl-b"], "topoha_shard_promotion_duration_seconds", "keyspace=commerce", "shard=0", "result=confirmed"); v != 1 {
		t.Errorf("promotion histogram count %v, want 1", v)
	}
	for _, hook := range []string{"before_promote", "after_failover"} {
		if v, _ := value(last["ctl-b"], "topoha_hook_runs_total", "hook="+hook, "result=success"); v != 1 {
			t.Errorf("topoha_hook_runs_total{%s,success} = %v on ctl-b, want 1", hook, v)
		}
	}
	if v, _ := value(last["ctl-a"], "topoha_hook_runs_total", "hook=on_role_change", "result=success"); v != 2 {
		t.Errorf("ctl-a ran on_role_change %v times, want 2 (primary at start, dr after the failover)", v)
	}

	// The hooks' environment.
	envs := envFiles(t, hookDir)
	after := envs["after_failover-1.env"]
	for k, want := range map[string]string{"TOPOHA_HOOK": "after_failover", "TOPOHA_CLUSTER": "t", "TOPOHA_PRIMARY_DC": "dc2",
		"TOPOHA_OLD_PRIMARY_DC": "dc1", "TOPOHA_EPOCH": "1", "TOPOHA_TRIGGER": "auto", "TOPOHA_RESULT": "success",
		"TOPOHA_FAILED_SHARDS": "", "TOPOHA_CONTROLLER_ID": "ctl-b", "TOPOHA_DC": "dc2"} {
		if after[k] != want {
			t.Errorf("after_failover got %s=%q, want %q (all: %v)", k, after[k], want, after)
		}
	}
	if envs["before_promote-1.env"]["TOPOHA_TRIGGER"] != "auto" {
		t.Errorf("before_promote env: %v", envs["before_promote-1.env"])
	}
	for name, want := range map[string]map[string]string{
		"on_role_change-dc1-dr.env":      {"TOPOHA_OLD_ROLE": "primary", "TOPOHA_PRIMARY_DC": "dc2", "TOPOHA_OLD_PRIMARY_DC": "dc1", "TOPOHA_EPOCH": "1", "TOPOHA_CONTROLLER_ID": "ctl-a"},
		"on_role_change-dc2-primary.env": {"TOPOHA_OLD_ROLE": "dr", "TOPOHA_PRIMARY_DC": "dc2", "TOPOHA_DC": "dc2"},
	} {
		for k, v := range want {
			if envs[name][k] != v {
				t.Errorf("%s: %s=%q, want %q (all: %v)", name, k, envs[name][k], v, envs[name])
			}
		}
	}

	// The history, from dc2's etcd (dc1's is down: reported, and the command still answers).
	code, out, errOut := testenv.RunProcess(t, waitLong, testenv.Binary(t), "history", "--config", config, "--limit", "0")
	if code != 0 || !strings.Contains(errOut, "dc1's etcd") {
		t.Errorf("history: exit %d, stderr %s", code, errOut)
	}
	for _, want := range []string{"controller started", "became the leader", "etcd health changed", "config reloaded", "failover decided",
		"epoch bumped", "shard promoted", "hook=before_promote", "hook=after_failover", "failover done", "result=success",
		"role of this DC changed", "primary changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("history lacks %q:\n%s", want, out)
		}
	}
	// After the failover the election is in dc1's etcd, which is down, so nobody leads. A term won in dc2's
	// with a record from before the failover would be churn, and a leader acting on a stale view.
	if _, after, ok := strings.Cut(out, "failover done"); ok && strings.Contains(after, "became the leader") {
		t.Errorf("a controller became the leader after the failover, where the election was before it:\n%s", out)
	}

	// The test binary is built by go build, not make: topoha_build_info says so as `topoha version` does.
	for id, fams := range sc.lastScrape() {
		labels := map[string]string{}
		if f := fams["topoha_build_info"]; f != nil && len(f.GetMetric()) == 1 {
			for _, l := range f.GetMetric()[0].GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
		}
		if labels["version"] != unstamped || labels["branch"] != "unknown" || labels["build_date"] != "unknown" || labels["goversion"] == "" {
			t.Errorf("%s: topoha_build_info %v, want version %q, branch and build_date unknown, and the Go version", id, labels, unstamped)
		}
	}

	// Every metric family served is in docs/metrics.md, and every documented one was served.
	documented := documentedMetrics(t)
	for name := range sc.served {
		if strings.HasPrefix(name, "topoha_") && !documented[name] {
			t.Errorf("%s is served but not documented in docs/metrics.md", name)
		}
	}
	for name := range documented {
		if !sc.served[name] {
			t.Errorf("docs/metrics.md documents %s, which no controller serves", name)
		}
	}
	for _, p := range procs {
		stopWithSIGTERM(t, p)
	}
}

var docMetric = regexp.MustCompile("^\\| `(topoha_[a-z_]+)` \\|")

// documentedMetrics lists the metric names of docs/metrics.md's table.
func documentedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := docMetric.FindStringSubmatch(sc.Text()); m != nil {
			out[m[1]] = true
		}
	}
	if len(out) < 20 {
		names := make([]string, 0, len(out))
		for n := range out {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Fatalf("docs/metrics.md lists only %v", names)
	}
	return out
}

// post sends a POST with token (none if empty) and returns the status code and body.
func post(t *testing.T, addr, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// The POST endpoints act only with the token of http.token_file; bad requests are refused by name.
func TestPOSTEndpointsWithToken(t *testing.T) {
	d := startDCs(t)
	config, _, token := observeConfig(t, d)
	editConfig(t, config, "  mode: auto\n", "  mode: manual\n")
	procs := startControllers(t, d, config)
	d.leaderID(t, "")
	addr := apiAddr(t, procs["ctl-a"])

	for _, bad := range []string{"", "wrong", token + "x"} {
		if code, body := post(t, addr, "/pause", bad); code != http.StatusUnauthorized || !strings.Contains(body, "Bearer") {
			t.Errorf("POST /pause with token %q: %d %s", bad, code, body)
		}
	}
	if st := status(t, config); st.Paused {
		t.Fatal("a refused POST /pause paused failover")
	}
	if code, body := post(t, addr, "/pause", token); code != http.StatusOK {
		t.Fatalf("POST /pause: %d %s", code, body)
	}
	testenv.Eventually(t, waitLong, func() (bool, string) {
		v, _ := value(scrape(addr), "topoha_paused")
		return status(t, config).Paused && v == 1, "not paused in status and metrics"
	})
	if code, body := post(t, addr, "/resume", token); code != http.StatusOK || status(t, config).Paused {
		t.Fatalf("POST /resume: %d %s", code, body)
	}
	for path, want := range map[string]string{"/failover?to=dc9": `to=\"dc9\"`, "/failover": `to=\"\"`, "/failover?to=dc2&force=yes": `force=\"yes\"`} {
		if code, body := post(t, addr, path, token); code != http.StatusBadRequest || !strings.Contains(body, want) {
			t.Errorf("POST %s: %d %s, want 400 naming %s", path, code, body, want)
		}
	}
	if code := get(t, addr, "/failover"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /failover: %d, want 405", code)
	}
	if code, body := post(t, addr, "/failover?to=dc2", token); code != http.StatusAccepted {
		t.Fatalf("POST /failover?to=dc2: %d %s", code, body)
	}
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st := status(t, config)
		return st.LastFailover != nil && st.LastFailover.Decision.Trigger == "http" && st.Primary.DC == "dc2", fmt.Sprintf("primary %s@%d", st.Primary.DC, st.Primary.Epoch)
	})
	for _, p := range procs {
		stopWithSIGTERM(t, p)
	}
}
