package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/vitess"
)

// DCs is the two-DC fixture of the tests of health, election, mirror, failover, the controller and the
// commands: dc1 (the initial primary) and dc2, each an etcd cluster (StartCluster, Members members: the
// production topology), the config that names them, and a client of each. A test adds its own settings
// with options instead of writing a two-DC config of its own.
type DCs struct {
	t testing.TB
	// Cluster and Client are by DC name.
	Cluster map[string]*Cluster
	Client  map[string]*clientv3.Client
	// YAML is the config's text; Config is it parsed.
	YAML   string
	Config *config.Config
}

// DCsOption adds to the fixture.
type DCsOption func(*dcsSpec)

type dcsSpec struct {
	members   int
	etcd      []EtcdOption
	endpoints func(dc string, c *Cluster) []string
	dcFields  func(dc string) string
	extra     []func(*DCs) string
}

// WithConfig adds top-level settings to the config, as YAML: health, election, failover, ...
func WithConfig(yaml string) DCsOption {
	return WithConfigFor(func(*DCs) string { return yaml })
}

// WithConfigFor is WithConfig for settings that name the started clusters (FakePromote's endpoints).
func WithConfigFor(yaml func(d *DCs) string) DCsOption {
	return func(s *dcsSpec) { s.extra = append(s.extra, yaml) }
}

// WithDCFields adds settings to each DC's mapping, as flow YAML: fields(dc), e.g. "vtctld: vtctld-dc1:15999".
func WithDCFields(fields func(dc string) string) DCsOption {
	return func(s *dcsSpec) { s.dcFields = fields }
}

// WithEndpoints sets the endpoints the config lists for each DC (a VIP in front of its members, say);
// by default every member, each through its link.
func WithEndpoints(endpoints func(dc string, c *Cluster) []string) DCsOption {
	return func(s *dcsSpec) { s.endpoints = endpoints }
}

// WithEtcd tunes every member of both clusters (a quota, say).
func WithEtcd(opts ...EtcdOption) DCsOption {
	return func(s *dcsSpec) { s.etcd = append(s.etcd, opts...) }
}

// WithMembers sets the size of each DC's cluster: 1 only for a unit test of one component.
func WithMembers(n int) DCsOption {
	return func(s *dcsSpec) { s.members = n }
}

// StartDCs starts both DCs' clusters and parses the config; all of it is stopped when the test ends.
func StartDCs(t testing.TB, opts ...DCsOption) *DCs {
	t.Helper()
	spec := dcsSpec{members: Members, endpoints: func(_ string, c *Cluster) []string { return c.Endpoints() }}
	for _, o := range opts {
		o(&spec)
	}
	d := &DCs{t: t, Cluster: map[string]*Cluster{}, Client: map[string]*clientv3.Client{}}
	endpoints := map[string][]string{}
	fields := map[string]string{}
	names := []string{"dc1", "dc2"}
	for i, c := range startClusters(t, names, spec.members, spec.etcd) {
		dc := names[i]
		d.Cluster[dc], d.Client[dc], endpoints[dc] = c, c.Client(), spec.endpoints(dc, c)
		if spec.dcFields != nil {
			fields[dc] = spec.dcFields(dc)
		}
	}
	var extra []string
	for _, f := range spec.extra {
		extra = append(extra, strings.TrimRight(f(d), "\n"))
	}
	// Both clusters start shutting down at once when the test ends (a member's shutdown waits up to a
	// second for its peers' connections), after the fixture's clients are gone (it also waits for open
	// streams).
	t.Cleanup(func() {
		for _, cli := range d.Client {
			cli.Close()
		}
		for _, c := range d.Cluster {
			c.Stop()
		}
	})
	d.YAML = DCsYAML(endpoints, time.Second, fields, strings.Join(extra, "\n"))
	cfg, err := config.Parse([]byte(d.YAML))
	if err != nil {
		t.Fatalf("the fixture's config does not parse: %v\n%s", err, d.YAML)
	}
	d.Config = cfg
	return d
}

// DCsYAML is the two-DC config every test starts from: cluster t, dc1 the initial primary, each DC's etcd
// at its endpoints with dialTimeout, plus fields in each DC's mapping and extra top-level YAML. Tests
// that need endpoints no cluster has (a closed port) use it directly.
func DCsYAML(endpoints map[string][]string, dialTimeout time.Duration, fields map[string]string, extra string) string {
	var b strings.Builder
	b.WriteString("cluster: t\ninitial_primary: dc1\ndcs:\n")
	for _, dc := range []string{"dc1", "dc2"} {
		f := ""
		if fields[dc] != "" {
			f = ", " + fields[dc]
		}
		fmt.Fprintf(&b, "  %s: {etcd: {endpoints: [%s], dial_timeout: %s}%s}\n", dc, strings.Join(endpoints[dc], ","), dialTimeout, f)
	}
	if extra != "" {
		b.WriteString(strings.TrimRight(extra, "\n") + "\n")
	}
	return b.String()
}

// WriteConfig writes the config to a file of the test's own, for processes, and returns its path.
func (d *DCs) WriteConfig() string {
	d.t.Helper()
	path := filepath.Join(d.t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(d.YAML), 0o600); err != nil {
		d.t.Fatal(err)
	}
	return path
}

// Put puts key into dc's etcd.
func (d *DCs) Put(dc, key, val string) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d.Client[dc].Put(ctx, key, val); err != nil {
		d.t.Fatalf("put %s into %s's etcd: %v", key, dc, err)
	}
}

// FakePromote is the fake promote program (internal/fakepromote) as an argument vector in flow YAML, for
// promote_command or switchover_command: it makes {{.Tablet}} the primary of {{.Keyspace}}/{{.Shard}} in
// the etcd of the DC it promotes in, as Vitess would, and appends its run to the file log (a template).
// flags are more of its flags, e.g. "-delay", "2s".
func (d *DCs) FakePromote(log string, flags ...string) string {
	d.t.Helper()
	fake := Build(d.t, "./internal/fakepromote")
	var more strings.Builder
	for _, f := range flags {
		fmt.Fprintf(&more, "%q, ", f)
	}
	return fmt.Sprintf(`[%s, -etcd, "{{if eq .DC \"dc1\"}}%s{{else}}%s{{end}}", -log, %q, %s"{{.Keyspace}}/{{.Shard}}", "{{.Tablet}}"]`,
		fake, strings.Join(d.Cluster["dc1"].Endpoints(), ","), strings.Join(d.Cluster["dc2"].Endpoints(), ","), log, more.String())
}

// SetShardPrimary writes keyspace/shard's Shard record into dc's etcd, naming alias its primary, as
// Vitess does.
func (d *DCs) SetShardPrimary(dc, keyspace, shard string, alias vitess.TabletAlias) {
	d.t.Helper()
	rec, err := vitess.SetShardPrimary(nil, alias)
	if err != nil {
		d.t.Fatal(err)
	}
	d.Put(dc, vitess.ShardKey("/vt", keyspace, shard), string(rec))
}
