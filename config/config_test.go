package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// baseYAML is a small valid config in block style. Each test case changes it in one place (see edit), so that
// the error it expects can only come from that change.
const baseYAML = `cluster: prod
initial_primary: dc1
dcs:
  dc1:
    etcd:
      endpoints: [http://127.0.0.1:2379]
      dial_timeout: 3s
    vtctld: vtctld.dc1:15999
    topo_address: etcd-dc1:2379
  dc2:
    etcd:
      endpoints: [http://127.0.0.1:2479]
    vtctld: vtctld.dc2:15999
    topo_address: etcd-dc2:2379
mirror:
  prefix: /vt
  exclude: []
  leased_keys: skip
  cell_info_rewrite: false
vitess:
  global_root: /vt
election:
  ttl: 10s
health:
  interval: 1s
  timeout: 1s
  failure_threshold: 3
  success_threshold: 2
failover:
  mode: manual
  after: 30s
  cooldown: 15m
  witnesses: []
  allow_two_site_auto: false
  self_fence: false
  fence_after: 20s
  promote_timeout: 60s
  shards:
    - keyspace: commerce
      shard: "0"
      tablets:
        dc1: [dc1-0000000100, dc1-0000000102]
        dc2: [dc2-0000000101]
  hooks: {before_promote: [], after_failover: [], on_role_change: []}
listen: 127.0.0.1:9464
`

// Blocks of baseYAML that some cases replace whole.
const (
	healthBlock = "health:\n  interval: 1s\n  timeout: 1s\n  failure_threshold: 3\n  success_threshold: 2\n"
	shardsBlock = "  shards:\n    - keyspace: commerce\n      shard: \"0\"\n      tablets:\n" +
		"        dc1: [dc1-0000000100, dc1-0000000102]\n        dc2: [dc2-0000000101]\n"
)

// edit returns doc with each old string replaced by its new string; edits holds old, new pairs. Each old
// string must occur exactly once, so that a typo in a test fails loudly instead of testing the base.
func edit(t testing.TB, doc string, edits ...string) string {
	t.Helper()
	if len(edits)%2 != 0 {
		t.Fatalf("edit: odd number of arguments %q", edits)
	}
	for i := 0; i < len(edits); i += 2 {
		old, repl := edits[i], edits[i+1]
		if n := strings.Count(doc, old); n != 1 {
			t.Fatalf("edit: %q occurs %d times in the document, want once", old, n)
		}
		doc = strings.Replace(doc, old, repl, 1)
	}
	return doc
}

// fieldLine is the shape of every line of a config error: a dotted field path, ": ", then the message.
var fieldLine = regexp.MustCompile(`^[A-Za-z0-9_.\[\]-]+: \S`)

// errLines checks that err lists problems one per line, each starting with a field path, and returns them.
func errLines(t testing.TB, err error) []string {
	t.Helper()
	if err == nil {
		t.Fatal("got no error")
	}
	lines := strings.Split(err.Error(), "\n")
	for _, l := range lines {
		if !fieldLine.MatchString(l) {
			t.Errorf("error line %q does not start with a field path; whole error:\n%v", l, err)
		}
	}
	return lines
}

// wantLine checks that one line of err starts with prefix and contains each of the extra strings.
func wantLine(t testing.TB, err error, prefix string, contains ...string) {
	t.Helper()
	for _, l := range errLines(t, err) {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		for _, c := range contains {
			if !strings.Contains(l, c) {
				t.Errorf("error line %q does not mention %q", l, c)
			}
		}
		return
	}
	t.Errorf("no error line starts with %q; got:\n%v", prefix, err)
}

func mustParse(t testing.TB, doc string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v\ndocument:\n%s", err, doc)
	}
	return cfg
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBaseYAMLIsValid(t *testing.T) {
	mustParse(t, baseYAML)
}

func TestLoadExampleConfig(t *testing.T) {
	cfg, err := Load("../config.yaml")
	if err != nil {
		t.Fatalf("Load(../config.yaml): %v", err)
	}
	def := Default()

	if cfg.Cluster != "prod" || cfg.InitialPrimary != "dc1" {
		t.Errorf("cluster, initial_primary = %q, %q; want prod, dc1", cfg.Cluster, cfg.InitialPrimary)
	}
	if got := cfg.DCNames(); !reflect.DeepEqual(got, []string{"dc1", "dc2"}) {
		t.Errorf("DCNames() = %q", got)
	}
	if got := cfg.OtherDC("dc1"); got != "dc2" {
		t.Errorf("OtherDC(dc1) = %q, want dc2", got)
	}
	dc1, dc2 := cfg.DCs["dc1"], cfg.DCs["dc2"]
	if !reflect.DeepEqual(dc1.Etcd.Endpoints, []string{"http://127.0.0.1:2379"}) || dc1.Vtctld != "vtctld.dc1:15999" || dc1.TopoAddress != "etcd-dc1:2379" {
		t.Errorf("dcs.dc1 = %+v", dc1)
	}
	if dc2.Etcd.DialTimeout != DefaultDialTimeout || DefaultDialTimeout != 2*time.Second {
		t.Errorf("dcs.dc2.etcd.dial_timeout = %s (absent in the file), want the default 2s", dc2.Etcd.DialTimeout)
	}
	if cfg.Mirror.Prefix != "/vt" || cfg.Mirror.DestPrefix != "/vt" || cfg.Mirror.LeasedKeys != LeasedKeysSkip {
		t.Errorf("mirror = %+v", cfg.Mirror)
	}
	if cfg.Mirror.SourceKeyPrefix() != "/vt/" || cfg.Mirror.DestKeyPrefix() != "/vt/" {
		t.Errorf("key prefixes = %q, %q; want /vt/, /vt/", cfg.Mirror.SourceKeyPrefix(), cfg.Mirror.DestKeyPrefix())
	}
	if cfg.Keys().Primary() != "/topoha/prod/primary" || cfg.Keys().MirrorCheckpoint() != "/topoha/prod/mirror/checkpoint" {
		t.Errorf("Keys: primary, checkpoint = %q, %q", cfg.Keys().Primary(), cfg.Keys().MirrorCheckpoint())
	}
	if cfg.Election.TTL != 10*time.Second || cfg.Failover.Mode != ModeManual || cfg.Failover.After != 30*time.Second {
		t.Errorf("election, failover = %+v, %+v", cfg.Election, cfg.Failover)
	}
	wantPromote := []string{"vtctldclient", "--server", "{{.Vtctld}}", "--action_timeout", "{{.Timeout}}",
		"EmergencyReparentShard", "--new-primary", "{{.Tablet}}", "--ignore-replicas", "{{.IgnoreTablets}}",
		"{{.Keyspace}}/{{.Shard}}"}
	if !reflect.DeepEqual(cfg.Failover.PromoteCommand, wantPromote) {
		t.Errorf("failover.promote_command = %q, want the default %q", cfg.Failover.PromoteCommand, wantPromote)
	}
	if !reflect.DeepEqual(cfg.Failover.SwitchoverCommand, def.Failover.SwitchoverCommand) ||
		!reflect.DeepEqual(cfg.Failover.FenceCommand, def.Failover.FenceCommand) {
		t.Errorf("switchover_command, fence_command = %q, %q; want the defaults", cfg.Failover.SwitchoverCommand, cfg.Failover.FenceCommand)
	}
	if !cfg.Failover.Shards.Auto || cfg.Failover.Discovery.Interval != 15*time.Second || cfg.Failover.Parallel() != DefaultMaxParallel ||
		!reflect.DeepEqual(dc1.Cells, []string{"dc1"}) || !reflect.DeepEqual(dc2.Cells, []string{"dc2"}) {
		t.Errorf("failover.shards = %+v, discovery %+v, cells %q %q; want auto, 15s, [dc1] [dc2]", cfg.Failover.Shards, cfg.Failover.Discovery, dc1.Cells, dc2.Cells)
	}
	if cfg.Listen != "127.0.0.1:9464" || cfg.HTTP.TokenFile != "" {
		t.Errorf("listen, http = %q, %+v", cfg.Listen, cfg.HTTP)
	}
}

func TestDefaults(t *testing.T) {
	minimal := `cluster: prod
initial_primary: dc2
dcs:
  dc1: {etcd: {endpoints: [http://10.0.0.1:2379]}}
  dc2: {etcd: {endpoints: [http://10.0.0.2:2379]}}
`
	cfg := mustParse(t, minimal)
	def := Default()
	for name, dc := range cfg.DCs {
		if dc.Etcd.DialTimeout != DefaultDialTimeout {
			t.Errorf("dcs.%s.etcd.dial_timeout = %s, want %s", name, dc.Etcd.DialTimeout, DefaultDialTimeout)
		}
	}
	if cfg.Mirror.Prefix != "/vt" || cfg.Mirror.DestPrefix != "/vt" || cfg.Mirror.LeasedKeys != LeasedKeysSkip {
		t.Errorf("mirror = %+v, want prefix and dest_prefix /vt, leased_keys skip", cfg.Mirror)
	}
	if cfg.Vitess.GlobalRoot != "/vt" {
		t.Errorf("vitess.global_root = %q, want the default /vt (mirror.prefix)", cfg.Vitess.GlobalRoot)
	}
	if !reflect.DeepEqual(cfg.Election, def.Election) ||
		!reflect.DeepEqual(cfg.Health, def.Health) || !reflect.DeepEqual(cfg.Failover, def.Failover) ||
		cfg.Listen != def.Listen || cfg.History != def.History || cfg.Failover.Hooks.Timeout != 30*time.Second {
		t.Errorf("defaults not kept:\n got %+v\nwant %+v", cfg, def)
	}

	tests := []struct {
		name       string
		edits      []string
		prefix     string
		destPrefix string
	}{
		{"dest_prefix defaults to prefix", []string{"prefix: /vt", "prefix: /vitess", "global_root: /vt", "global_root: /vitess"}, "/vitess", "/vitess"},
		{"explicit dest_prefix is kept", []string{"prefix: /vt", "prefix: /vt\n  dest_prefix: /dr"}, "/vt", "/dr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, edit(t, baseYAML, tt.edits...))
			if cfg.Mirror.Prefix != tt.prefix || cfg.Mirror.DestPrefix != tt.destPrefix {
				t.Errorf("prefix, dest_prefix = %q, %q; want %q, %q", cfg.Mirror.Prefix, cfg.Mirror.DestPrefix, tt.prefix, tt.destPrefix)
			}
		})
	}

	t.Run("explicit dial_timeout is kept", func(t *testing.T) {
		cfg := mustParse(t, baseYAML)
		if got := cfg.DCs["dc1"].Etcd.DialTimeout; got != 3*time.Second {
			t.Errorf("dcs.dc1.etcd.dial_timeout = %s, want 3s", got)
		}
		if got := cfg.DCs["dc2"].Etcd.DialTimeout; got != DefaultDialTimeout {
			t.Errorf("dcs.dc2.etcd.dial_timeout = %s, want %s", got, DefaultDialTimeout)
		}
	})
}

// TestDecodeErrors covers what the YAML decoder rejects: unknown keys and values of the wrong type, in block
// and flow style. Each error must name the dotted field path.
func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name     string
		edits    []string
		want     string   // prefix of one error line
		contains []string // also in that line
	}{
		{
			name:  "unknown key, block style",
			edits: []string{"dial_timeout: 3s", "dial_timout: 3s"},
			want:  "dcs.dc1.etcd.dial_timout: unknown key", contains: []string{"line 7"},
		},
		{
			name:  "unknown key, flow style",
			edits: []string{"    etcd:\n      endpoints: [http://127.0.0.1:2379]\n      dial_timeout: 3s", "    etcd: {endpoints: [http://127.0.0.1:2379], dial_timout: 2s}"},
			want:  "dcs.dc1.etcd.dial_timout: unknown key",
		},
		{
			name:  "unknown key, everything on one line",
			edits: []string{healthBlock, "health: {interval: 1s, timeout: 1s, intervall: 2s}\n"},
			want:  "health.intervall: unknown key",
		},
		{
			name:  "unknown top-level key",
			edits: []string{"listen: 127.0.0.1:9464", "listen: 127.0.0.1:9464\nlisten_addr: :9464"},
			want:  "listen_addr: unknown key",
		},
		{
			name:  "unknown key in a list element",
			edits: []string{`      shard: "0"`, "      shard: \"0\"\n      tablet: dc1-1"},
			want:  "failover.shards[0].tablet: unknown key",
		},
		{
			name:  "unknown key in flow hooks",
			edits: []string{"after_failover: []", "after_failover: [], on_failover: []"},
			want:  "failover.hooks.on_failover: unknown key",
		},
		{
			name:  "bare integer duration",
			edits: []string{"ttl: 10s", "ttl: 10"},
			want:  "election.ttl: not a duration", contains: []string{"10s"},
		},
		{
			name:  "duration without unit in flow style",
			edits: []string{healthBlock, "health: {timeout: 1s, interval: 5, failure_threshold: 3}\n"},
			want:  "health.interval: not a duration", contains: []string{"500ms", "10s"},
		},
		{
			name:  "misspelt unit",
			edits: []string{"ttl: 10s", "ttl: 10sec"},
			want:  "election.ttl: not a duration",
		},
		{
			name:  "long bad duration in flow style",
			edits: []string{healthBlock, "health: {timeout: 1s, interval: one second please}\n"},
			want:  "health.interval: not a duration",
		},
		{
			name:  "list where a duration belongs",
			edits: []string{"cooldown: 15m", "cooldown: [15m]"},
			want:  "failover.cooldown: not a duration",
		},
		{
			name:  "word where a number belongs",
			edits: []string{"failure_threshold: 3", "failure_threshold: three"},
			want:  "health.failure_threshold: ", contains: []string{"three"},
		},
		{
			name:  "word where a bool belongs",
			edits: []string{"self_fence: false", "self_fence: nope"},
			want:  "failover.self_fence: ",
		},
		{
			name:  "dcs as a list",
			edits: []string{"dcs:\n  dc1:", "dcs: [dc1, dc2]\nold_dcs:\n  dc1:"},
			want:  "dcs: ", contains: []string{"!!seq"},
		},
		{
			name:  "tablets of a DC as a mapping",
			edits: []string{"dc2: [dc2-0000000101]", "dc2: {alias: dc2-0000000101}"},
			want:  "failover.shards[0].tablets.dc2: want a tablet alias or a list of them",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(edit(t, baseYAML, tt.edits...)))
			if cfg != nil {
				t.Errorf("Parse returned a config along with error %v", err)
			}
			wantLine(t, err, tt.want, tt.contains...)
		})
	}
}

// TestValidationRules checks that every rule of validate.go reports an error starting with its field.
func TestValidationRules(t *testing.T) {
	dir := t.TempDir()
	pwFile := writeFile(t, dir, "password", "secret\n")
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name     string
		edits    []string
		want     string
		contains []string
	}{
		// cluster and DCs
		{name: "cluster missing", edits: []string{"cluster: prod", `cluster: ""`}, want: "cluster: must be set"},
		{name: "cluster with a slash", edits: []string{"cluster: prod", "cluster: prod/eu"}, want: `cluster: "prod/eu"`},
		{name: "dc2 without endpoints", edits: []string{"endpoints: [http://127.0.0.1:2479]", "endpoints: []"},
			want: "dcs.dc2.etcd.endpoints: must not be empty"},
		{name: "dc2 without etcd", edits: []string{"    etcd:\n      endpoints: [http://127.0.0.1:2479]\n", ""},
			want: "dcs.dc2.etcd.endpoints: must not be empty"},
		{name: "endpoint without scheme", edits: []string{"endpoints: [http://127.0.0.1:2379]", "endpoints: [127.0.0.1:2379]"},
			want: "dcs.dc1.etcd.endpoints[0]: ", contains: []string{"127.0.0.1:2379", "http://"}},
		{name: "endpoint host:port only", edits: []string{"endpoints: [http://127.0.0.1:2379]", "endpoints: [http://a:1, 'etcd:2379']"},
			want: "dcs.dc1.etcd.endpoints[1]: "},
		{name: "endpoint of another scheme", edits: []string{"endpoints: [http://127.0.0.1:2479]", "endpoints: [unix:///run/etcd.sock]"},
			want: "dcs.dc2.etcd.endpoints[0]: "},
		{name: "endpoint without host", edits: []string{"endpoints: [http://127.0.0.1:2479]", "endpoints: [\"https://\"]"},
			want: "dcs.dc2.etcd.endpoints[0]: "},
		{name: "negative dial_timeout", edits: []string{"dial_timeout: 3s", "dial_timeout: -1s"}, want: "dcs.dc1.etcd.dial_timeout: must be positive"},
		{name: "one DC", edits: []string{"  dc2:\n    etcd:\n      endpoints: [http://127.0.0.1:2479]\n    vtctld: vtctld.dc2:15999\n    topo_address: etcd-dc2:2379\n", ""},
			want: "dcs: has 1 datacenters", contains: []string{"exactly two"}},
		{name: "three DCs", edits: []string{"  dc2:\n", "  dc3: {etcd: {endpoints: [http://127.0.0.1:2579]}}\n  dc2:\n"},
			want: "dcs: has 3 datacenters", contains: []string{"exactly two"}},
		{name: "bad DC name", edits: []string{"  dc2:\n", "  _dc2:\n"}, want: `dcs._dc2: "_dc2" is not a usable DC name`},
		{name: "initial_primary unknown", edits: []string{"initial_primary: dc1", "initial_primary: dc3"},
			want: `initial_primary: "dc3" is not a DC`, contains: []string{"dc1, dc2"}},
		{name: "initial_primary missing", edits: []string{"initial_primary: dc1\n", ""}, want: "initial_primary: must be set", contains: []string{"dc1, dc2"}},

		// mirror and vitess
		{name: "prefix with trailing slash", edits: []string{"prefix: /vt", "prefix: /vt/"}, want: "mirror.prefix: ", contains: []string{"trailing"}},
		{name: "prefix without leading slash", edits: []string{"prefix: /vt", "prefix: vt"}, want: "mirror.prefix: ", contains: []string{"start with '/'"}},
		{name: "prefix is the root", edits: []string{"prefix: /vt", "prefix: /"}, want: "mirror.prefix: "},
		{name: "prefix holds topoha's keys", edits: []string{"prefix: /vt", "prefix: /topoha"}, want: "mirror.prefix: ", contains: []string{"/topoha/"}},
		{name: "prefix inside topoha's keys", edits: []string{"prefix: /vt", "prefix: /topoha/prod"}, want: "mirror.prefix: ", contains: []string{"/topoha/"}},
		{name: "dest_prefix inside topoha's keys", edits: []string{"prefix: /vt", "prefix: /vt\n  dest_prefix: /topoha/prod/vt"},
			want: "mirror.dest_prefix: ", contains: []string{"/topoha/"}},
		{name: "dest_prefix with trailing slash", edits: []string{"prefix: /vt", "prefix: /vt\n  dest_prefix: /vt/"}, want: "mirror.dest_prefix: "},
		{name: "exclude not below prefix", edits: []string{"exclude: []", "exclude: [/vt/local/, /vt2/x/]"},
			want: "mirror.exclude[1]: ", contains: []string{"/vt2/x/", "not below mirror.prefix"}},
		{name: "exclude equal to the prefix without slash", edits: []string{"exclude: []", "exclude: [/vt]"}, want: "mirror.exclude[0]: "},
		{name: "leased_keys copy", edits: []string{"leased_keys: skip", "leased_keys: copy"}, want: "mirror.leased_keys: ", contains: []string{`"skip"`}},
		{name: "cell_info_rewrite without topo_address", edits: []string{"cell_info_rewrite: false", "cell_info_rewrite: true", "    topo_address: etcd-dc2:2379\n", ""},
			want: "dcs.dc2.topo_address: must be set when mirror.cell_info_rewrite is true"},
		{name: "global_root without slash", edits: []string{"global_root: /vt", "global_root: vt"}, want: "vitess.global_root: "},
		{name: "global_root outside the mirrored prefix", edits: []string{"global_root: /vt", "global_root: /vitess"}, want: "vitess.global_root: "},

		// election and health
		{name: "ttl not whole seconds", edits: []string{"ttl: 10s", "ttl: 1500ms"}, want: "election.ttl: 1.5s", contains: []string{"whole number of seconds"}},
		{name: "ttl below 1s", edits: []string{"ttl: 10s", "ttl: 0s"}, want: "election.ttl: ", contains: []string{"at least 1s"}},
		{name: "ttl negative", edits: []string{"ttl: 10s", "ttl: -5s"}, want: "election.ttl: "},
		{name: "health interval zero", edits: []string{"interval: 1s", "interval: 0s"}, want: "health.interval: must be positive"},
		{name: "health timeout negative", edits: []string{"timeout: 1s", "timeout: -1s"}, want: "health.timeout: must be positive"},
		{name: "failure_threshold zero", edits: []string{"failure_threshold: 3", "failure_threshold: 0"}, want: "health.failure_threshold: must be at least 1"},
		{name: "success_threshold negative", edits: []string{"success_threshold: 2", "success_threshold: -1"}, want: "health.success_threshold: must be at least 1"},

		// failover
		{name: "auto without witnesses", edits: []string{"mode: manual", "mode: auto"}, want: "failover.mode: auto with no failover.witnesses",
			contains: []string{"allow_two_site_auto"}},
		{name: "unknown mode", edits: []string{"mode: manual", "mode: automatic"}, want: `failover.mode: "automatic"`},
		{name: "after zero", edits: []string{"after: 30s", "after: 0s"}, want: "failover.after: must be positive"},
		{name: "cooldown negative", edits: []string{"cooldown: 15m", "cooldown: -1m"}, want: "failover.cooldown: -1m0s: must be 0 (no hold-down) or positive"},
		{name: "promote_timeout zero", edits: []string{"promote_timeout: 60s", "promote_timeout: 0s"}, want: "failover.promote_timeout: must be positive"},
		{name: "self_fence with fence_after equal to after", edits: []string{"self_fence: false", "self_fence: true", "fence_after: 20s", "fence_after: 30s"},
			want: "failover.fence_after: 30s must be shorter than failover.after"},
		{name: "self_fence with fence_after above after", edits: []string{"self_fence: false", "self_fence: true", "fence_after: 20s", "fence_after: 1m"},
			want: "failover.fence_after: 1m0s must be shorter"},
		{name: "self_fence without fence_command", edits: []string{"self_fence: false", "self_fence: true\n  fence_command: []"},
			want: "failover.fence_command: must be set when failover.self_fence is true"},
		{name: "self_fence without unfence_command", edits: []string{"self_fence: false", "self_fence: true\n  unfence_command: []"},
			want: "failover.unfence_command: must be set when failover.self_fence is true"},
		{name: "unfence_command with a misspelt field", edits: []string{"self_fence: false", "self_fence: false\n  unfence_command: [x, '{{.Tablett}}']"},
			want: "failover.unfence_command[1]: bad template"},
		{name: "witness without scheme", edits: []string{"mode: manual", "mode: auto", "witnesses: []", "witnesses: [http://w1:9465, 'w2:9465']"},
			want: "failover.witnesses[1]: ", contains: []string{"w2:9465"}},
		{name: "witness not a URL", edits: []string{"witnesses: []", "witnesses: ['http://bad host:1/%zz']"}, want: "failover.witnesses[0]: "},
		{name: "misspelt template field", edits: []string{"promote_timeout: 60s", "promote_timeout: 60s\n  promote_command: [vtctldclient, --new-primary, '{{.Tablett}}']"},
			want: "failover.promote_command[2]: bad template", contains: []string{"Tablett", ".Tablet .IgnoreTablets"}},
		{name: "unparsable template", edits: []string{"promote_timeout: 60s", "promote_timeout: 60s\n  switchover_command: ['{{.Tablet']"},
			want: "failover.switchover_command[0]: bad template"},
		{name: "bad template in fence_command", edits: []string{"promote_timeout: 60s", "promote_timeout: 60s\n  fence_command: [fence, '{{.Cell}}']"},
			want: "failover.fence_command[1]: bad template"},
		{name: "bad template in a hook", edits: []string{"after_failover: []", "after_failover: [notify, '{{.NewDC}}']"},
			want: "failover.hooks.after_failover[1]: bad template"},
		{name: "empty promote_command", edits: []string{"promote_timeout: 60s", "promote_timeout: 60s\n  promote_command: []"},
			want: "failover.promote_command: must not be empty"},
		{name: "empty switchover_command", edits: []string{"promote_timeout: 60s", "promote_timeout: 60s\n  switchover_command: []"},
			want: "failover.switchover_command: must not be empty"},

		// shards
		{name: "shard without keyspace", edits: []string{"    - keyspace: commerce\n      shard:", "    - shard:"}, want: "failover.shards[0].keyspace: must be set"},
		{name: "shard without shard", edits: []string{`      shard: "0"` + "\n", ""}, want: "failover.shards[0].shard: must be set"},
		{name: "duplicate shard", edits: []string{"  hooks:", "    - {keyspace: commerce, shard: \"0\", tablets: {dc1: dc1-1, dc2: dc2-2}}\n  hooks:"},
			want: "failover.shards[1]: commerce/0 is listed twice", contains: []string{"failover.shards[0]"}},
		{name: "tablets for an unknown DC", edits: []string{"dc2: [dc2-0000000101]", "dc2: [dc2-0000000101]\n        dc3: [dc3-0000000101]"},
			want: `failover.shards[0].tablets.dc3: "dc3" is not a DC`},
		{name: "DC with no tablet", edits: []string{"        dc2: [dc2-0000000101]\n", ""}, want: "failover.shards[0].tablets.dc2: must list at least one tablet"},
		{name: "DC with an empty list", edits: []string{"dc2: [dc2-0000000101]", "dc2: []"}, want: "failover.shards[0].tablets.dc2: must list at least one tablet"},
		{name: "bad alias", edits: []string{"dc1: [dc1-0000000100, dc1-0000000102]", "dc1: [dc1-0000000100, dc1_0000000102]"},
			want: "failover.shards[0].tablets.dc1[1]: ", contains: []string{"dc1_0000000102", "<cell>-<uid>"}},
		{name: "bad scalar alias", edits: []string{"dc2: [dc2-0000000101]", "dc2: 101"}, want: "failover.shards[0].tablets.dc2[0]: "},

		// discovery
		{name: "auto without cells", edits: []string{shardsBlock, "  shards: auto\n"}, want: "dcs.dc1.cells: must list the Vitess cells", contains: []string{"failover.shards is auto"}},
		{name: "auto and a listed shard", edits: []string{"  shards:\n", "  shards:\n    - auto\n"}, want: "failover.shards[0]: auto cannot be mixed with listed shards"},
		{name: "shards neither auto nor a list", edits: []string{shardsBlock, "  shards: all\n"}, want: "failover.shards: want auto or a list of shards"},
		{name: "cell in two DCs", edits: []string{"    topo_address: etcd-dc1:2379\n", "    topo_address: etcd-dc1:2379\n    cells: [dc1, shared]\n",
			"    topo_address: etcd-dc2:2379\n", "    topo_address: etcd-dc2:2379\n    cells: [shared]\n"},
			want: `dcs.dc2.cells[0]: "shared" is also in dcs.dc1.cells`},
		{name: "cell listed twice", edits: []string{"    topo_address: etcd-dc1:2379\n", "    topo_address: etcd-dc1:2379\n    cells: [dc1, dc1]\n"},
			want: `dcs.dc1.cells[1]: "dc1" is listed twice`},
		{name: "discovery interval zero", edits: []string{"promote_timeout: 60s", "promote_timeout: 60s\n  discovery: {interval: 0s}"}, want: "failover.discovery.interval: must be positive"},
		{name: "discovery keyspaces with listed shards", edits: []string{"promote_timeout: 60s", "promote_timeout: 60s\n  discovery: {keyspaces: [commerce]}"},
			want: "failover.discovery.keyspaces: only applies with failover.shards: auto"},
		{name: "never_promote with listed shards", edits: []string{"promote_timeout: 60s", "promote_timeout: 60s\n  never_promote: [dc2-0000000101]"},
			want: "failover.never_promote: only applies with failover.shards: auto"},
		{name: "bad discovery keyspace", edits: []string{shardsBlock, "  shards: auto\n  discovery: {keyspaces: [commerce, customer/, a/b/c]}\n",
			"    topo_address: etcd-dc1:2379\n", "    topo_address: etcd-dc1:2379\n    cells: [dc1]\n", "    topo_address: etcd-dc2:2379\n", "    topo_address: etcd-dc2:2379\n    cells: [dc2]\n"},
			want: `failover.discovery.keyspaces[1]: "customer/": write a keyspace`},
		{name: "bad never_promote alias", edits: []string{shardsBlock, "  shards: auto\n  never_promote: [dc2_101]\n",
			"    topo_address: etcd-dc1:2379\n", "    topo_address: etcd-dc1:2379\n    cells: [dc1]\n", "    topo_address: etcd-dc2:2379\n", "    topo_address: etcd-dc2:2379\n    cells: [dc2]\n"},
			want: `failover.never_promote[0]: "dc2_101" is not a tablet alias`},
		{name: "negative max_parallel", edits: []string{"promote_timeout: 60s", "promote_timeout: 60s\n  max_parallel: -1"}, want: "failover.max_parallel: -1: must be 0"},

		// etcd credentials and TLS
		{name: "password_file without username", edits: []string{"dial_timeout: 3s", "dial_timeout: 3s\n      password_file: " + pwFile},
			want: "dcs.dc1.etcd.username: must be set when password_file is"},
		{name: "username without password_file", edits: []string{"dial_timeout: 3s", "dial_timeout: 3s\n      username: topoha"},
			want: "dcs.dc1.etcd.password_file: ", contains: []string{"topoha"}},
		{name: "unreadable password_file", edits: []string{"dial_timeout: 3s", "dial_timeout: 3s\n      username: topoha\n      password_file: " + missing},
			want: "dcs.dc1.etcd.password_file: cannot read", contains: []string{missing}},
		{name: "TLS cert without key", edits: []string{"dial_timeout: 3s", "dial_timeout: 3s\n      tls: {cert_file: " + pwFile + "}"},
			want: "dcs.dc1.etcd.tls: cert_file and key_file go together"},
		{name: "TLS key without cert", edits: []string{"dial_timeout: 3s", "dial_timeout: 3s\n      tls: {key_file: " + pwFile + "}"},
			want: "dcs.dc1.etcd.tls: cert_file and key_file go together"},
		{name: "unreadable TLS CA", edits: []string{"endpoints: [http://127.0.0.1:2479]", "endpoints: [https://127.0.0.1:2479]\n      tls: {ca_file: " + missing + "}"},
			want: "dcs.dc2.etcd.tls.ca_file: cannot read"},

		// listen and http
		{name: "listen without port", edits: []string{"listen: 127.0.0.1:9464", "listen: 127.0.0.1"}, want: `listen: "127.0.0.1" is not host:port`},
		{name: "listen as a bare port", edits: []string{"listen: 127.0.0.1:9464", "listen: 9464"}, want: `listen: "9464" is not host:port`},
		{name: "cell root outside the mirror", edits: []string{"    topo_address: etcd-dc2:2379\n", "    topo_address: etcd-dc2:2379\n    cell_roots: [/vitess/dc2]\n"},
			want: `dcs.dc2.cell_roots[0]: "/vitess/dc2" is not below mirror.dest_prefix`},
		{name: "cell root is the global root", edits: []string{"global_root: /vt", "global_root: /vt/global", "    topo_address: etcd-dc2:2379\n", "    topo_address: etcd-dc2:2379\n    cell_roots: [/vt/global]\n"},
			want: `dcs.dc2.cell_roots[0]: "/vt/global" contains vitess.global_root`},
		{name: "cell roots overlap", edits: []string{"    topo_address: etcd-dc2:2379\n", "    topo_address: etcd-dc2:2379\n    cell_roots: [/vt/cells-dc2, /vt/cells-dc2/a]\n"},
			want: `dcs.dc2.cell_roots[1]: "/vt/cells-dc2/a" overlaps cell root "/vt/cells-dc2"`},
		{name: "cell root with a trailing slash", edits: []string{"    topo_address: etcd-dc2:2379\n", "    topo_address: etcd-dc2:2379\n    cell_roots: [/vt/dc2/]\n"},
			want: `dcs.dc2.cell_roots[0]: "/vt/dc2/": name the directory without a trailing '/'`},
		{name: "hooks timeout zero", edits: []string{"on_role_change: []}", "on_role_change: [], timeout: 0s}"}, want: "failover.hooks.timeout: must be positive"},
		{name: "history too small", edits: []string{"listen: 127.0.0.1:9464", "listen: 127.0.0.1:9464\nhistory: {max_events: 3}"}, want: "history.max_events: 3: keep at least 10"},
		{name: "history unknown key", edits: []string{"listen: 127.0.0.1:9464", "listen: 127.0.0.1:9464\nhistory: {max: 3}"}, want: "history.max"},
		{name: "unreadable token_file", edits: []string{"listen: 127.0.0.1:9464", "listen: 127.0.0.1:9464\nhttp: {token_file: " + missing + "}"},
			want: "http.token_file: cannot read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(edit(t, baseYAML, tt.edits...)))
			if cfg != nil {
				t.Errorf("Parse returned a config along with error %v", err)
			}
			wantLine(t, err, tt.want, tt.contains...)
		})
	}
}

// TestAccepted lists documents that must load, each one change away from the base.
func TestAccepted(t *testing.T) {
	dir := t.TempDir()
	pwFile := writeFile(t, dir, "password", "secret\n")
	tokenFile := writeFile(t, dir, "token", "t0ken\n")

	tests := []struct {
		name  string
		edits []string
		check func(t *testing.T, cfg *Config)
	}{
		{
			name:  "tablets as a single scalar alias",
			edits: []string{"dc2: [dc2-0000000101]", "dc2: dc2-0000000101"},
			check: func(t *testing.T, cfg *Config) {
				if got := cfg.Failover.Shards.List[0].Tablets["dc2"]; !reflect.DeepEqual(got, Aliases{"dc2-0000000101"}) {
					t.Errorf("tablets.dc2 = %q, want [dc2-0000000101]", got)
				}
			},
		},
		{
			name:  "tablets in block-style lists",
			edits: []string{"dc1: [dc1-0000000100, dc1-0000000102]", "dc1:\n          - dc1-0000000100\n          - zone1-a-0000000102"},
			check: func(t *testing.T, cfg *Config) {
				if got := cfg.Failover.Shards.List[0].Tablets["dc1"]; !reflect.DeepEqual(got, Aliases{"dc1-0000000100", "zone1-a-0000000102"}) {
					t.Errorf("tablets.dc1 = %q", got)
				}
			},
		},
		{
			name: "discovered shards",
			edits: []string{shardsBlock, "  shards: auto\n  discovery: {interval: 5s, keyspaces: [commerce, customer/-80]}\n  never_promote: [dc2-0000000102]\n  max_parallel: 8\n",
				"    topo_address: etcd-dc1:2379\n", "    topo_address: etcd-dc1:2379\n    cells: [dc1, dc1b]\n", "    topo_address: etcd-dc2:2379\n", "    topo_address: etcd-dc2:2379\n    cells: [dc2]\n"},
			check: func(t *testing.T, cfg *Config) {
				f := cfg.Failover
				if !f.Shards.Auto || f.Shards.List != nil || f.Discovery.Interval != 5*time.Second || f.Parallel() != 8 ||
					!reflect.DeepEqual(f.Discovery.Keyspaces, []string{"commerce", "customer/-80"}) || !reflect.DeepEqual(cfg.DCs["dc1"].Cells, []string{"dc1", "dc1b"}) {
					t.Errorf("failover = %+v, dc1 cells %q", f, cfg.DCs["dc1"].Cells)
				}
			},
		},
		{
			name:  "no cooldown",
			edits: []string{"cooldown: 15m", "cooldown: 0s"},
			check: func(t *testing.T, cfg *Config) {
				if cfg.Failover.Cooldown != 0 {
					t.Errorf("cooldown = %s, want 0", cfg.Failover.Cooldown)
				}
			},
		},
		{
			name:  "unquoted numeric shard",
			edits: []string{`shard: "0"`, "shard: 0"},
			check: func(t *testing.T, cfg *Config) {
				if got := cfg.Failover.Shards.List[0].Shard; got != "0" {
					t.Errorf("shard = %q, want 0", got)
				}
			},
		},
		{name: "no shards", edits: []string{shardsBlock, "  shards: []\n"}},
		{name: "exclude below prefix", edits: []string{"exclude: []", "exclude: [/vt/local/, /vt/keyspaces/x]"}},
		{name: "prefix that only looks like topoha", edits: []string{"prefix: /vt", "prefix: /topoha2", "global_root: /vt", "global_root: /topoha2/vt"}},
		{name: "auto with witnesses", edits: []string{"mode: manual", "mode: auto", "witnesses: []", "witnesses: [http://w1:9465, https://w2:9465]"}},
		{name: "auto with allow_two_site_auto", edits: []string{"mode: manual", "mode: auto", "allow_two_site_auto: false", "allow_two_site_auto: true"}},
		{name: "self_fence with fence_after below after", edits: []string{"self_fence: false", "self_fence: true"}},
		{name: "cell_info_rewrite with topo addresses", edits: []string{"cell_info_rewrite: false", "cell_info_rewrite: true"}},
		{name: "https endpoint", edits: []string{"endpoints: [http://127.0.0.1:2479]", "endpoints: [https://etcd-dc2:2379, https://10.0.0.2:2379]"}},
		{
			name:  "username with password_file",
			edits: []string{"dial_timeout: 3s", "dial_timeout: 3s\n      username: topoha\n      password_file: " + pwFile},
			check: func(t *testing.T, cfg *Config) {
				if e := cfg.DCs["dc1"].Etcd; e.Username != "topoha" || e.PasswordFile != pwFile {
					t.Errorf("dcs.dc1.etcd = %+v", e)
				}
			},
		},
		{name: "cell roots of both DCs", edits: []string{"    topo_address: etcd-dc1:2379\n", "    topo_address: etcd-dc1:2379\n    cell_roots: [/vt/dc1]\n", "    topo_address: etcd-dc2:2379\n", "    topo_address: etcd-dc2:2379\n    cell_roots: [/vt/dc2]\n"}},
		{name: "token_file readable", edits: []string{"listen: 127.0.0.1:9464", "listen: 127.0.0.1:9464\nhttp: {token_file: " + tokenFile + "}"}},
		{name: "listen on all interfaces", edits: []string{"listen: 127.0.0.1:9464", "listen: ':9464'"}},
		{
			name:  "custom commands with every template field",
			edits: []string{"promote_timeout: 60s", "promote_timeout: 60s\n  promote_command: [promote, '{{.Keyspace}}/{{.Shard}}', '{{.Tablet}}', '{{.IgnoreTablets}}', '{{.Vtctld}}', '{{.DC}}', '{{.OldDC}}', 'e{{.Epoch}}', '{{.Timeout}}']"},
			check: func(t *testing.T, cfg *Config) {
				if got := cfg.Failover.PromoteCommand; len(got) != 9 || got[0] != "promote" {
					t.Errorf("promote_command = %q", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, edit(t, baseYAML, tt.edits...))
			if tt.check != nil {
				tt.check(t, cfg)
			}
		})
	}
}

// TestFlowStyleDocument loads a whole config written in flow style, as docs/design.md writes most sections.
func TestFlowStyleDocument(t *testing.T) {
	cfg := mustParse(t, `{cluster: prod, initial_primary: dc2,
  dcs: {dc1: {etcd: {endpoints: [http://127.0.0.1:2379], dial_timeout: 2s}}, dc2: {etcd: {endpoints: [http://127.0.0.1:2479]}}},
  mirror: {prefix: /vt, dest_prefix: /vt, exclude: [], leased_keys: skip, cell_info_rewrite: false},
  election: {ttl: 5s}, health: {interval: 1s, timeout: 1s, failure_threshold: 3, success_threshold: 2},
  failover: {mode: manual, shards: [{keyspace: commerce, shard: "0", tablets: {dc1: [dc1-0000000100], dc2: dc2-0000000101}}]}}`)
	if cfg.InitialPrimary != "dc2" || cfg.Election.TTL != 5*time.Second || len(cfg.Failover.Shards.List) != 1 ||
		!reflect.DeepEqual(cfg.Failover.Shards.List[0].Tablets["dc2"], Aliases{"dc2-0000000101"}) {
		t.Errorf("cfg = %+v", cfg)
	}
}

func TestSeveralProblemsReportedTogether(t *testing.T) {
	doc := edit(t, baseYAML,
		"endpoints: [http://127.0.0.1:2479]", "endpoints: []",
		"leased_keys: skip", "leased_keys: copy",
		"ttl: 10s", "ttl: 1500ms",
		"mode: manual", "mode: auto",
		"dc1: [dc1-0000000100, dc1-0000000102]", "dc1: [bad]",
		"listen: 127.0.0.1:9464", "listen: nowhere",
	)
	_, err := Parse([]byte(doc))
	want := []string{
		"dcs.dc2.etcd.endpoints: ",
		"mirror.leased_keys: ",
		"election.ttl: ",
		"failover.mode: ",
		"failover.shards[0].tablets.dc1[0]: ",
		"listen: ",
	}
	lines := errLines(t, err)
	if len(lines) != len(want) {
		t.Errorf("got %d error lines, want %d:\n%v", len(lines), len(want), err)
	}
	for _, w := range want {
		wantLine(t, err, w)
	}

	t.Run("decoding errors", func(t *testing.T) {
		doc := edit(t, baseYAML,
			"dial_timeout: 3s", "dial_timout: 3s",
			"ttl: 10s", "ttl: 10",
			"interval: 1s", "interval: fast",
			"dc2: [dc2-0000000101]", "dc2: {alias: dc2-0000000101}",
		)
		_, err := Parse([]byte(doc))
		want := []string{"dcs.dc1.etcd.dial_timout: unknown key", "election.ttl: not a duration",
			"health.interval: not a duration", "failover.shards[0].tablets.dc2: want a tablet alias"}
		for _, w := range want {
			wantLine(t, err, w)
		}
		if n := len(errLines(t, err)); n != len(want) {
			t.Errorf("got %d error lines, want %d:\n%v", n, len(want), err)
		}
	})

	t.Run("through Load", func(t *testing.T) {
		path := writeFile(t, t.TempDir(), "config.yaml", doc)
		_, err := Load(path)
		if err == nil {
			t.Fatal("Load: no error")
		}
		first, rest, _ := strings.Cut(err.Error(), "\n")
		if first != "config file "+path+":" {
			t.Errorf("first line %q, want it to name the file", first)
		}
		if got := len(strings.Split(rest, "\n")); got != len(want) {
			t.Errorf("Load lists %d problems, want %d:\n%v", got, len(want), err)
		}
	})
}

func TestDocumentErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"empty file", "", "the file is empty"},
		{"only comments", "# nothing here\n\n", "the file is empty"},
		{"two documents", "cluster: a\n---\ncluster: b\n", "more than one YAML document"},
		{"second document after the base", baseYAML + "---\n" + baseYAML, "more than one YAML document"},
		{"not YAML", "cluster: [prod\n", "not valid YAML"},
		{"tab indentation", "dcs:\n\tdc1: {}\n", "not valid YAML"},
		{"duplicate key", baseYAML + "cluster: again\n", `mapping key "cluster" already defined`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.doc))
			if err == nil || cfg != nil {
				t.Fatalf("Parse = %v, %v; want an error", cfg, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
		if err == nil || !strings.Contains(err.Error(), "--config") || !strings.Contains(err.Error(), "nope.yaml") {
			t.Errorf("Load(missing) = %v; want an error naming the file and --config", err)
		}
	})
}

// selfSigned writes a self-signed CA certificate and its key as PEM files into dir.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, dir, name+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, dir, name+"-key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile, cert
}

func TestClientConfig(t *testing.T) {
	dir := t.TempDir()
	caFile, caKey, caCert := selfSigned(t, dir, "ca")
	clientCert, clientKey, _ := selfSigned(t, dir, "client")
	pwFile := writeFile(t, dir, "password", "s3cret\n")
	pwCRLF := writeFile(t, dir, "password-crlf", "s3cret\r\n")
	notPEM := writeFile(t, dir, "not.pem", "this is not PEM\n")
	missing := filepath.Join(dir, "missing")
	const field = "dcs.dc1.etcd"

	httpEP := []string{"http://127.0.0.1:2379"}
	httpsEP := []string{"https://127.0.0.1:2379"}

	tests := []struct {
		name    string
		etcd    Etcd
		wantErr string // prefix of the error; "" for none
		check   func(t *testing.T, got clientConfigView)
	}{
		{
			name: "plain http",
			etcd: Etcd{Endpoints: httpEP, DialTimeout: 3 * time.Second},
			check: func(t *testing.T, got clientConfigView) {
				if got.hasTLS || got.password != "" {
					t.Errorf("got TLS %v, password %q; want neither", got.hasTLS, got.password)
				}
			},
		},
		{
			name: "password file with trailing newline",
			etcd: Etcd{Endpoints: httpEP, Username: "topoha", PasswordFile: pwFile},
			check: func(t *testing.T, got clientConfigView) {
				if got.username != "topoha" || got.password != "s3cret" {
					t.Errorf("username, password = %q, %q; want topoha, s3cret", got.username, got.password)
				}
			},
		},
		{
			name: "password file with CRLF",
			etcd: Etcd{Endpoints: httpEP, Username: "topoha", PasswordFile: pwCRLF},
			check: func(t *testing.T, got clientConfigView) {
				if got.password != "s3cret" {
					t.Errorf("password = %q, want s3cret", got.password)
				}
			},
		},
		{
			name:    "missing password file",
			etcd:    Etcd{Endpoints: httpEP, Username: "topoha", PasswordFile: missing},
			wantErr: field + ".password_file: cannot read",
		},
		{
			name: "https without TLS files uses the system roots",
			etcd: Etcd{Endpoints: httpsEP},
			check: func(t *testing.T, got clientConfigView) {
				if !got.hasTLS || got.rootCAs || got.certs != 0 {
					t.Errorf("got TLS %v, root CAs %v, %d certificates; want TLS with system roots and no certificate", got.hasTLS, got.rootCAs, got.certs)
				}
			},
		},
		{
			name: "CA and client certificate",
			etcd: Etcd{Endpoints: httpsEP, TLS: TLS{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey}},
			check: func(t *testing.T, got clientConfigView) {
				if !got.hasTLS || !got.rootCAs || got.certs != 1 {
					t.Errorf("got TLS %v, root CAs %v, %d certificates; want TLS, the CA and one certificate", got.hasTLS, got.rootCAs, got.certs)
				}
			},
		},
		{
			name: "TLS files with http endpoints still build TLS",
			etcd: Etcd{Endpoints: httpEP, TLS: TLS{CAFile: caFile}},
			check: func(t *testing.T, got clientConfigView) {
				if !got.hasTLS || !got.rootCAs {
					t.Errorf("got TLS %v, root CAs %v; want TLS with the CA", got.hasTLS, got.rootCAs)
				}
			},
		},
		{
			name:    "CA file with no PEM",
			etcd:    Etcd{Endpoints: httpsEP, TLS: TLS{CAFile: notPEM}},
			wantErr: field + ".tls.ca_file: ",
		},
		{
			name:    "missing CA file",
			etcd:    Etcd{Endpoints: httpsEP, TLS: TLS{CAFile: missing}},
			wantErr: field + ".tls.ca_file: cannot read",
		},
		{
			name:    "certificate with the wrong key",
			etcd:    Etcd{Endpoints: httpsEP, TLS: TLS{CertFile: clientCert, KeyFile: caKey}},
			wantErr: field + ".tls: cannot load cert_file",
		},
		{
			name:    "key file that is not a key",
			etcd:    Etcd{Endpoints: httpsEP, TLS: TLS{CertFile: clientCert, KeyFile: notPEM}},
			wantErr: field + ".tls: cannot load cert_file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, err := tt.etcd.ClientConfig(field)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("ClientConfig error = %v, want one starting with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ClientConfig: %v", err)
			}
			if !reflect.DeepEqual(cc.Endpoints, tt.etcd.Endpoints) || cc.DialTimeout != tt.etcd.DialTimeout {
				t.Errorf("endpoints, dial timeout = %q, %s; want %q, %s", cc.Endpoints, cc.DialTimeout, tt.etcd.Endpoints, tt.etcd.DialTimeout)
			}
			if cc.DialKeepAliveTime <= 0 || cc.DialKeepAliveTimeout <= 0 {
				t.Errorf("keepalive %s/%s; want keepalives on", cc.DialKeepAliveTime, cc.DialKeepAliveTimeout)
			}
			if cc.Logger == nil {
				t.Error("no logger set; the etcd client would log every retry")
			}
			view := clientConfigView{hasTLS: cc.TLS != nil, username: cc.Username, password: cc.Password}
			if cc.TLS != nil {
				view.rootCAs = cc.TLS.RootCAs != nil
				view.certs = len(cc.TLS.Certificates)
				if cc.TLS.MinVersion == 0 {
					t.Error("TLS without a minimum version")
				}
				if cc.TLS.RootCAs != nil {
					// The pool must hold the CA from ca_file: the CA certificate verifies against it.
					if _, err := caCert.Verify(x509.VerifyOptions{Roots: cc.TLS.RootCAs}); err != nil {
						t.Errorf("CA from ca_file not in RootCAs: %v", err)
					}
				}
			}
			tt.check(t, view)
		})
	}

	t.Run("from a parsed config", func(t *testing.T) {
		doc := edit(t, baseYAML, "endpoints: [http://127.0.0.1:2479]",
			"endpoints: [https://127.0.0.1:2479]\n      username: root\n      password_file: "+pwFile+
				"\n      tls: {ca_file: "+caFile+", cert_file: "+clientCert+", key_file: "+clientKey+"}")
		cfg := mustParse(t, doc)
		cc, err := cfg.DCs["dc2"].Etcd.ClientConfig("dcs.dc2.etcd")
		if err != nil {
			t.Fatal(err)
		}
		if cc.DialTimeout != DefaultDialTimeout || cc.Password != "s3cret" || cc.TLS == nil || len(cc.TLS.Certificates) != 1 {
			t.Errorf("client config = timeout %s, password %q, TLS %v", cc.DialTimeout, cc.Password, cc.TLS != nil)
		}
		if got := cfg.DCs["dc2"].Etcd.String(); got != "https://127.0.0.1:2479" {
			t.Errorf("String() = %q", got)
		}
	})
}

// clientConfigView is what the ClientConfig cases check.
type clientConfigView struct {
	hasTLS, rootCAs    bool
	certs              int
	username, password string
}

func TestFieldError(t *testing.T) {
	err := fieldErr("dcs.dc2.etcd.endpoints", "must not be empty: %s", "list one")
	if got, want := err.Error(), "dcs.dc2.etcd.endpoints: must not be empty: list one"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func FuzzParse(f *testing.F) {
	if example, err := os.ReadFile("../config.yaml"); err == nil {
		f.Add(example)
	}
	f.Add([]byte(baseYAML))
	for _, seed := range []string{
		"",
		"---\n",
		"~\n",
		"cluster: a\n---\ncluster: b\n",
		"dcs: {dc1: {etcd: {endpoints: [http://a:1], dial_timout: 2s}}, dc2: {etcd: {endpoints: []}}}\n",
		"election: {ttl: 10}\nhealth: {interval: one second please}\n",
		"failover: {shards: [{keyspace: a, tablets: {dc1: {x: y}, dc2: [a-1, 1]}}], promote_command: ['{{.Tablett}}', '{{']}\n",
		"a: &a [*a, *a]\nb: *a\n",
		"mirror: {prefix: /topoha/x, exclude: [/vt2/], leased_keys: copy}\n",
		"hello\n",
		"[1, 2]\n",
		"dcs: {dc1: !!binary aGVsbG8=}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if cfg != nil {
				t.Errorf("Parse returned both a config and error %v", err)
			}
			if strings.TrimSpace(err.Error()) == "" {
				t.Errorf("Parse returned an error with no text (%T)", err)
			}
			return
		}
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("accepted config does not validate again: %v", err)
		}
		if len(cfg.DCs) != 2 || cfg.Mirror.DestPrefix == "" || cfg.OtherDC(cfg.InitialPrimary) == "" {
			t.Errorf("accepted config breaks an invariant: %+v", cfg)
		}
		for name, dc := range cfg.DCs {
			if dc.Etcd.DialTimeout <= 0 {
				t.Errorf("dcs.%s.etcd.dial_timeout = %s after defaults", name, dc.Etcd.DialTimeout)
			}
		}
	})
}
