package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/topoha/topoha/config"
)

// runbookURL is where every alert's runbook_url points, followed by the anchor of its section.
const runbookURL = "https://github.com/topoha/topoha/blob/main/docs/runbook.md#"

// runFlags are the flags of `topoha run`, all of which take a value. A unit or manifest passing anything
// else makes the controller exit 2 at start, in production.
var runFlags = map[string]bool{
	"--config": true, "--dc": true, "--id": true, "--force-primary": true,
	"--listen": true, "--log-format": true, "--log-level": true,
}

// repoFile reads a file given by its path from the repository root.
func repoFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// runArgs checks that args are `run` followed by known flags, each with a value, and returns the values.
func runArgs(t *testing.T, where string, args []string) map[string]string {
	t.Helper()
	if len(args) == 0 || args[0] != "run" {
		t.Fatalf("%s: want `topoha run ...`, got %q", where, args)
	}
	flags := map[string]string{}
	for i := 1; i < len(args); i += 2 {
		if !runFlags[args[i]] || i+1 == len(args) {
			t.Fatalf("%s: %q is not a flag of topoha run followed by its value (flags: %v)", where, args[i], slices.Sorted(maps.Keys(runFlags)))
		}
		flags[args[i]] = args[i+1]
	}
	for _, required := range []string{"--config", "--dc"} {
		if flags[required] == "" {
			t.Errorf("%s: %s is required by topoha run", where, required)
		}
	}
	return flags
}

// stopWindow is how long a stop may take when it comes during a failover: the epoch bump, or a
// switchover's drain of the mirror (promote_timeout at most), plus a margin for the bump's requests.
// Promotions are not waited for: another controller of the new primary DC takes them over.
func stopWindow(f config.Failover) time.Duration {
	return f.PromoteTimeout + 30*time.Second
}

// --- Metrics, dashboard, alerts and runbook

var (
	metricsTableRow = regexp.MustCompile("(?m)^\\| `(topoha_[a-z0-9_]+)`")
	promqlString    = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	topohaMetric    = regexp.MustCompile(`\btopoha_[a-z0-9_]+`)
	histogramSuffix = regexp.MustCompile(`_(bucket|sum|count)$`)
	dollarVariable  = regexp.MustCompile(`\$\{?(\w+)\}?`)
	labelValues     = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	dashboardRecord = regexp.MustCompile(`dashboard:query_\d+`)
)

// documentedMetrics returns the metric names of the table in docs/metrics.md.
func documentedMetrics(t *testing.T) map[string]bool {
	names := map[string]bool{}
	for _, m := range metricsTableRow.FindAllStringSubmatch(string(repoFile(t, "docs/metrics.md")), -1) {
		names[m[1]] = true
	}
	if len(names) < 20 {
		t.Fatalf("found only %d metrics in docs/metrics.md's table; has its format changed?", len(names))
	}
	return names
}

// metricNames returns the topoha metrics that a PromQL expression or series selector reads, histogram
// series under their histogram's name. Label values (job=~"topoha.*") are not names.
func metricNames(expr string) []string {
	var names []string
	for _, n := range topohaMetric.FindAllString(promqlString.ReplaceAllString(expr, `""`), -1) {
		names = append(names, histogramSuffix.ReplaceAllString(n, ""))
	}
	return names
}

// alertRule is one rule of deploy/prometheus/topoha-alerts.yml.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func alertRules(t *testing.T) []alertRule {
	var file struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(repoFile(t, "deploy/prometheus/topoha-alerts.yml"), &file); err != nil {
		t.Fatal(err)
	}
	var rules []alertRule
	for _, g := range file.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// alertTests returns the series and the alert names of the promtool unit tests.
func alertTests(t *testing.T) (series []string, tested map[string]bool) {
	var file struct {
		Tests []struct {
			InputSeries []struct {
				Series string `yaml:"series"`
			} `yaml:"input_series"`
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(repoFile(t, "deploy/prometheus/topoha-alerts.test.yml"), &file); err != nil {
		t.Fatal(err)
	}
	tested = map[string]bool{}
	for _, tc := range file.Tests {
		for _, s := range tc.InputSeries {
			series = append(series, s.Series)
		}
		for _, a := range tc.AlertRuleTest {
			tested[a.Alertname] = true
		}
	}
	return series, tested
}

// dashboard is the part of the Grafana dashboard JSON that the tests read.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string      `json:"name"`
			Datasource *datasource `json:"datasource"`
			Expr       string      `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

type datasource struct {
	UID string `json:"uid"`
}

// dashboardDatasource is the dashboard's datasource variable: every query reads from it, so that the
// dashboard imports into any Grafana.
const dashboardDatasource = "${datasource}"

// readsVariable says whether ds is the dashboard's datasource variable.
func (ds *datasource) readsVariable() bool { return ds != nil && ds.UID == dashboardDatasource }

func readDashboard(t *testing.T) dashboard {
	var d dashboard
	if err := json.Unmarshal(repoFile(t, "deploy/grafana/topoha-dashboard.json"), &d); err != nil {
		t.Fatalf("deploy/grafana/topoha-dashboard.json: %v", err)
	}
	return d
}

// allPanels returns the dashboard's panels, those of collapsed rows included.
func (d dashboard) allPanels() []panel {
	var all []panel
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return all
}

func (p panel) String() string { return fmt.Sprintf("panel %d %q", p.ID, p.Title) }

// queries returns the dashboard's PromQL expressions by where they are.
func (d dashboard) queries() map[string]string {
	exprs := map[string]string{}
	for _, p := range d.allPanels() {
		for _, q := range p.Targets {
			exprs[fmt.Sprintf("%s query %s", p, q.RefID)] = q.Expr
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			exprs[fmt.Sprintf("annotation %q", a.Name)] = a.Expr
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			// label_values(selector, label) is Grafana's; the selector inside is PromQL.
			query := fmt.Sprint(q["query"])
			if m := labelValues.FindStringSubmatch(query); m != nil {
				query = m[1]
			}
			exprs[fmt.Sprintf("variable %q", v.Name)] = query
		}
	}
	return exprs
}

// grafanaToPromQL replaces the dashboard's variables with values PromQL accepts, and reports a variable
// that the dashboard does not define (Grafana would leave it in the query, which then fails).
func grafanaToPromQL(expr string, defined map[string]bool) (string, error) {
	var err error
	out := dollarVariable.ReplaceAllStringFunc(expr, func(v string) string {
		name := dollarVariable.FindStringSubmatch(v)[1]
		switch {
		case strings.HasPrefix(name, "__"): // $__rate_interval, $__range, ...
			return "5m"
		case defined[name]:
			return "x"
		}
		err = fmt.Errorf("variable $%s is not defined by the dashboard", name)
		return v
	})
	return out, err
}

// promtool returns the path of promtool. These tests do not skip without it: CI would then pass with the
// dashboard's queries unchecked.
func promtool(t *testing.T) string {
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed; `make check-deploy` installs it (Debian package prometheus)")
	}
	return path
}

// promtoolCheck runs `promtool check rules` over exprs written as recording rules, so that each is parsed
// by Prometheus's own parser.
func promtoolCheck(t *testing.T, exprs map[string]string) {
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	wheres := slices.Sorted(maps.Keys(exprs))
	for i, where := range wheres {
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: exprs[where]})
	}
	data, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool(t), "check", "rules", path).CombinedOutput()
	if err != nil {
		// promtool names the rule; say which query of the dashboard that is.
		msg := dashboardRecord.ReplaceAllStringFunc(string(out), func(record string) string {
			i, _ := strconv.Atoi(strings.TrimPrefix(record, "dashboard:query_"))
			return wheres[i]
		})
		t.Errorf("promtool check rules on the dashboard's queries: %v\n%s", err, msg)
	}
}

func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want a uid, a title and schemaVersion >= 36", d.UID, d.Title, d.SchemaVersion)
	}
	defined := map[string]bool{}
	for _, v := range d.Templating.List {
		defined[v.Name] = true
	}
	if !defined["datasource"] {
		t.Error("the dashboard has no `datasource` variable; panels must not name a datasource of one Grafana")
	}
	ids := map[int]bool{}
	for _, p := range d.allPanels() {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Title == "" || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: want a title and a gridPos within 24 columns, got %+v", p, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if !p.Datasource.readsVariable() || len(p.Targets) == 0 {
			t.Errorf("%s: want queries, and the datasource %s", p, dashboardDatasource)
		}
		for _, q := range p.Targets {
			if !q.Datasource.readsVariable() {
				t.Errorf("%s query %s: datasource is not %s", p, q.RefID, dashboardDatasource)
			}
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" && !a.Datasource.readsVariable() {
			t.Errorf("annotation %q: datasource is not %s", a.Name, dashboardDatasource)
		}
	}

	exprs := d.queries()
	for where, expr := range exprs {
		promql, err := grafanaToPromQL(expr, defined)
		if err != nil {
			t.Errorf("%s: %v", where, err)
		}
		exprs[where] = promql
	}
	promtoolCheck(t, exprs)
}

// TestPrometheusConfigExample checks the scrape config example, and that its rule_files find the rules.
func TestPrometheusConfigExample(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "config", "prometheus/prometheus.example.yml").CombinedOutput()
	if err != nil {
		t.Errorf("promtool check config deploy/prometheus/prometheus.example.yml: %v\n%s", err, out)
	}
}

func TestMetricNamesAreDocumented(t *testing.T) {
	documented := documentedMetrics(t)
	sources := map[string]string{}
	for where, expr := range readDashboard(t).queries() {
		sources["dashboard "+where] = expr
	}
	for _, r := range alertRules(t) {
		sources[fmt.Sprintf("alert %s (severity %s)", r.Alert, r.Labels["severity"])] = r.Expr
	}
	// A misspelt name in both a rule and its test would pass promtool's tests; this catches it.
	series, _ := alertTests(t)
	for i, s := range series {
		sources[fmt.Sprintf("alert test series %d", i)] = s
	}
	used := map[string]bool{}
	for _, where := range slices.Sorted(maps.Keys(sources)) {
		for _, name := range metricNames(sources[where]) {
			used[name] = true
			if !documented[name] {
				t.Errorf("%s reads %s, which is not in docs/metrics.md's table", where, name)
			}
		}
	}
	if len(used) < len(documented)/2 {
		t.Errorf("only %d documented metrics are used; is metricNames still finding them?", len(used))
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

func runbookAnchors(t *testing.T) (anchors map[string]bool, text string) {
	text = string(repoFile(t, "docs/runbook.md"))
	anchors = map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			anchors[githubAnchor(h)] = true
		}
	}
	return anchors, text
}

func TestAlertRules(t *testing.T) {
	anchors, _ := runbookAnchors(t)
	_, tested := alertTests(t)
	rules := alertRules(t)
	if len(rules) < 15 {
		t.Fatalf("found %d alert rules; want the whole set", len(rules))
	}
	for _, r := range rules {
		where := fmt.Sprintf("alert %s (severity %s)", r.Alert, r.Labels["severity"])
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity must be critical (pages) or warning", where)
		}
		for _, key := range []string{"summary", "description", "runbook_url"} {
			if r.Annotations[key] == "" {
				t.Errorf("%s: no %s annotation", where, key)
			}
		}
		anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookURL)
		if !ok || anchor != strings.ToLower(r.Alert) || !anchors[anchor] {
			t.Errorf("%s: runbook_url %q must be %s%s, with a `## %s` section in docs/runbook.md",
				where, r.Annotations["runbook_url"], runbookURL, strings.ToLower(r.Alert), r.Alert)
		}
		if !tested[r.Alert] {
			t.Errorf("%s has no test in deploy/prometheus/topoha-alerts.test.yml", where)
		}
	}
}

func TestRunbookLinks(t *testing.T) {
	anchors, text := runbookAnchors(t)
	for _, m := range regexp.MustCompile(`\]\(#([^)]+)\)`).FindAllStringSubmatch(text, -1) {
		if !anchors[m[1]] {
			t.Errorf("docs/runbook.md links to #%s, which is not a `##` section", m[1])
		}
	}
}
