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
	// Root are clients as RootUser when authentication is on (WithAuth, AuthEnv), for what a test sets up
	// beyond topoha's grants: tablet records in the cells. Client then logs in as User, with exactly the
	// grants the config asks for, as topoha does. Without authentication Root is Client.
	Root map[string]*clientv3.Client
	// YAML is the config's text; Config is it parsed.
	YAML   string
	Config *config.Config
	// endpoints and etcdFields are what YAMLWith writes into each DC's etcd mapping.
	endpoints  map[string][]string
	etcdFields string
}

// DCsOption adds to the fixture.
type DCsOption func(*dcsSpec)

type dcsSpec struct {
	members   int
	auth      bool
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

// WithAuth turns etcd authentication on in both DCs (as AuthEnv does for every test): the config logs in
// as User, from a password file, and User's role holds the config's Grants and nothing more.
func WithAuth() DCsOption {
	return func(s *dcsSpec) { s.auth = true }
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
	auth := spec.auth || authFromEnv(t)
	d := &DCs{t: t, Cluster: map[string]*Cluster{}, Client: map[string]*clientv3.Client{}, Root: map[string]*clientv3.Client{}}
	endpoints := map[string][]string{}
	fields := map[string]string{}
	names := []string{"dc1", "dc2"}
	for i, c := range startClusters(t, names, spec.members, spec.etcd, auth) {
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
	etcdFields := ""
	if auth {
		pw := filepath.Join(t.TempDir(), "etcd-password")
		if err := os.WriteFile(pw, []byte(UserPassword+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		etcdFields = fmt.Sprintf("username: %s, password_file: %s", User, pw)
	}
	d.endpoints, d.etcdFields = endpoints, etcdFields
	d.YAML = dcsYAML(endpoints, time.Second, etcdFields, fields, strings.Join(extra, "\n"))
	cfg, err := config.Parse([]byte(d.YAML))
	if err != nil {
		t.Fatalf("the fixture's config does not parse: %v\n%s", err, d.YAML)
	}
	d.Config = cfg
	for _, dc := range names {
		d.Root[dc] = d.Client[dc]
		if auth {
			d.Root[dc], d.Client[dc] = d.leastPrivilege(dc)
		}
	}
	return d
}

// leastPrivilege gives User's role in dc's etcd the config's Grants instead of every key, and returns a
// root client and a client of the config (as User).
func (d *DCs) leastPrivilege(dc string) (root, user *clientv3.Client) {
	d.t.Helper()
	root = d.Cluster[dc].RootClient()
	ctx, cancel := context.WithTimeout(context.Background(), authTimeout)
	defer cancel()
	if err := grantOnly(ctx, root, d.Config.Grants()); err != nil {
		d.t.Fatalf("%s: %v", dc, err)
	}
	cc, err := d.Config.EtcdClientConfig(dc)
	if err != nil {
		d.t.Fatal(err)
	}
	return root, newClient(d.t, cc)
}

// DCsYAML is the two-DC config every test starts from: cluster t, dc1 the initial primary, each DC's etcd
// at its endpoints with dialTimeout, plus fields in each DC's mapping and extra top-level YAML. Tests
// that need endpoints no cluster has (a closed port) use it directly.
func DCsYAML(endpoints map[string][]string, dialTimeout time.Duration, fields map[string]string, extra string) string {
	return dcsYAML(endpoints, dialTimeout, "", fields, extra)
}

// dcsYAML is DCsYAML with etcdFields in each DC's etcd mapping (credentials), as flow YAML.
func dcsYAML(endpoints map[string][]string, dialTimeout time.Duration, etcdFields string, fields map[string]string, extra string) string {
	var b strings.Builder
	b.WriteString("cluster: t\ninitial_primary: dc1\ndcs:\n")
	for _, dc := range []string{"dc1", "dc2"} {
		f := ""
		if fields[dc] != "" {
			f = ", " + fields[dc]
		}
		e := ""
		if etcdFields != "" {
			e = ", " + etcdFields
		}
		fmt.Fprintf(&b, "  %s: {etcd: {endpoints: [%s], dial_timeout: %s%s}%s}\n", dc, strings.Join(endpoints[dc], ","), dialTimeout, e, f)
	}
	if extra != "" {
		b.WriteString(strings.TrimRight(extra, "\n") + "\n")
	}
	return b.String()
}

// YAMLWith is a config of the DCs of its own (DCsYAML): their etcds, with the fixture's credentials when
// authentication is on, dialTimeout, fields in each DC's mapping, and extra top-level YAML.
func (d *DCs) YAMLWith(dialTimeout time.Duration, fields map[string]string, extra string) string {
	return dcsYAML(d.endpoints, dialTimeout, d.etcdFields, fields, extra)
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
	for _, f := range append(d.FakePromoteAuth(), flags...) {
		fmt.Fprintf(&more, "%q, ", f)
	}
	return fmt.Sprintf(`[%s, -etcd, "{{if eq .DC \"dc1\"}}%s{{else}}%s{{end}}", -log, %q, %s"{{.Keyspace}}/{{.Shard}}", "{{.Tablet}}"]`,
		fake, strings.Join(d.Cluster["dc1"].Endpoints(), ","), strings.Join(d.Cluster["dc2"].Endpoints(), ","), log, more.String())
}

// FakePromoteAuth are the fake promote program's flags that log it in to etcd when authentication is on:
// Vitess writes the topo with credentials of its own, the root's here.
func (d *DCs) FakePromoteAuth() []string {
	if !d.Cluster["dc1"].Auth() {
		return nil
	}
	return []string{"-user", RootUser + ":" + RootPassword}
}

// Promote makes tablet the primary of keyspace/shard in dc's topo, as a person would by hand with
// vtctldclient.
func (d *DCs) Promote(dc, keyspaceShard, tablet string) {
	d.t.Helper()
	ks, shard, _ := strings.Cut(keyspaceShard, "/")
	alias, err := vitess.ParseTabletAlias(tablet)
	if err != nil {
		d.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := vitess.PromoteInTopo(ctx, d.Root[dc], "/vt", ks, shard, alias, true); err != nil {
		d.t.Fatalf("promote %s in %s/%s: %v", tablet, dc, keyspaceShard, err)
	}
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
