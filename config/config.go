// Package config is topoha's configuration: the YAML schema of docs/design.md, its defaults, and its validation.
//
// Load reads a file, rejects unknown keys, fills in defaults and validates everything at once. Every error
// names the field it is about (for example `dcs.dc2.etcd.endpoints: must not be empty`) and says how to fix
// it, so that a controller refuses to start on a bad file instead of half-starting.
package config

import (
	"strings"
	"time"

	"github.com/topoha/topoha/keys"
)

// Config is the whole of config.yaml.
type Config struct {
	Cluster        string        `yaml:"cluster"`
	InitialPrimary string        `yaml:"initial_primary"`
	DCs            map[string]DC `yaml:"dcs"`
	Mirror         Mirror        `yaml:"mirror"`
	Vitess         Vitess        `yaml:"vitess"`
	Election       Election      `yaml:"election"`
	Health         Health        `yaml:"health"`
	Failover       Failover      `yaml:"failover"`
	Listen         string        `yaml:"listen"`
	HTTP           HTTP          `yaml:"http"`
	History        History       `yaml:"history"`
	// RequestTimeout bounds every etcd request that is not a health probe: topoha's records, the mirror's
	// reads and writes, the election's grants, a failover's epoch bump and reads.
	RequestTimeout time.Duration `yaml:"request_timeout"`
}

// History bounds the event history kept in each DC's etcd.
type History struct {
	MaxEvents int `yaml:"max_events"`
}

// DC is one datacenter: its etcd cluster (behind a VIP) and how Vitess reaches it.
type DC struct {
	Etcd        Etcd   `yaml:"etcd"`
	Vtctld      string `yaml:"vtctld"`
	TopoAddress string `yaml:"topo_address"`
	// CellRoots are the roots (CellInfo.root) of the Vitess cells whose local topo lives in this DC's
	// etcd, below mirror.prefix. The mirror never writes or deletes below them in this DC's etcd, and
	// copies them out of it when this DC is the primary, so that the DR side holds the lost cells' records.
	CellRoots []string `yaml:"cell_roots"`
	// Cells are the Vitess cells whose tablets run in this DC. Shard discovery (failover.shards: auto)
	// takes a shard's candidates in this DC from them, and ignores them when this DC is lost.
	Cells []string `yaml:"cells"`
}

// Etcd holds the connection settings for one DC's etcd cluster.
type Etcd struct {
	Endpoints    []string      `yaml:"endpoints"`
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	Username     string        `yaml:"username"`
	PasswordFile string        `yaml:"password_file"`
	TLS          TLS           `yaml:"tls"`
}

// TLS names the PEM files for a TLS connection to etcd. CAFile alone verifies the server; CertFile and KeyFile
// together add a client certificate.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Mirror says what is copied from the primary DC's etcd to the DR DC's etcd.
//
// Prefix and DestPrefix name directories: the mirror covers the keys below Prefix + "/" and writes them below
// DestPrefix + "/", so "/vt" never matches "/vt2/...". Exclude entries are key prefixes below Prefix; excluded
// keys are neither written nor deleted in the destination.
type Mirror struct {
	Prefix          string   `yaml:"prefix"`
	DestPrefix      string   `yaml:"dest_prefix"`
	Exclude         []string `yaml:"exclude"`
	LeasedKeys      string   `yaml:"leased_keys"`
	CellInfoRewrite bool     `yaml:"cell_info_rewrite"`
}

// LeasedKeysSkip is the only leased_keys mode: a key bound to a lease in the source is never written to the
// destination, and a destination copy of it is deleted.
const LeasedKeysSkip = "skip"

// Vitess locates the Vitess topo records that topoha reads.
type Vitess struct {
	GlobalRoot string `yaml:"global_root"`
	// TopoVIP, if set, is the etcd endpoint URL of the global topo VIP that Vitess processes use. Before
	// promoting, a failover waits until it leads to the new primary's etcd, so that what the promoted and
	// demoted tablets write lands there and not in the copy.
	TopoVIP string `yaml:"topo_vip"`
}

// Election configures the leader election among controllers.
type Election struct {
	TTL time.Duration `yaml:"ttl"`
}

// Health configures the probes of each DC's etcd VIP.
type Health struct {
	Interval         time.Duration `yaml:"interval"`
	Timeout          time.Duration `yaml:"timeout"`
	FailureThreshold int           `yaml:"failure_threshold"`
	SuccessThreshold int           `yaml:"success_threshold"`
}

// Mode is failover.mode: whether the leader fails over by itself.
type Mode string

const (
	ModeAuto   Mode = "auto"
	ModeManual Mode = "manual"
)

// Failover configures when and how the DR side is promoted.
type Failover struct {
	Mode             Mode          `yaml:"mode"`
	After            time.Duration `yaml:"after"`
	Cooldown         time.Duration `yaml:"cooldown"`
	Witnesses        []string      `yaml:"witnesses"`
	AllowTwoSiteAuto bool          `yaml:"allow_two_site_auto"`
	SelfFence        bool          `yaml:"self_fence"`
	FenceAfter       time.Duration `yaml:"fence_after"`
	FenceCommand     []string      `yaml:"fence_command"`
	UnfenceCommand   []string      `yaml:"unfence_command"`
	PromoteTimeout   time.Duration `yaml:"promote_timeout"`
	// RetryMaxBackoff caps the wait between a failed shard's promote attempts: after the epoch bump a
	// shard is retried until it has its primary in the new primary DC.
	RetryMaxBackoff   time.Duration `yaml:"retry_max_backoff"`
	PromoteCommand    []string      `yaml:"promote_command"`
	SwitchoverCommand []string      `yaml:"switchover_command"`
	// Shards are the shards a failover promotes: listed by hand, or "auto" to discover them in the topo.
	Shards    ShardList `yaml:"shards"`
	Discovery Discovery `yaml:"discovery"`
	// NeverPromote are tablet aliases that discovery never chooses as candidates.
	NeverPromote []string `yaml:"never_promote"`
	// MaxParallel bounds the promote (or switchover) commands running at once; 0 means
	// DefaultMaxParallel.
	MaxParallel int   `yaml:"max_parallel"`
	Hooks       Hooks `yaml:"hooks"`
}

// DefaultMaxParallel is how many promote commands run at once when failover.max_parallel is 0: each is
// a vtctldclient process (tens of MB) and an EmergencyReparentShard in the new primary's vtctld, so a
// thousand at once would swamp both; 32 promote 1,000 shards whose reparent takes 2 s in about a minute.
const DefaultMaxParallel = 32

// Parallel is the number of promote commands that may run at once.
func (f Failover) Parallel() int {
	if f.MaxParallel == 0 {
		return DefaultMaxParallel
	}
	return f.MaxParallel
}

// ShardList is failover.shards: either the word auto (Auto: discover the shards in the topo) or a list
// of shards with their tablets (List).
type ShardList struct {
	Auto bool
	List []Shard
}

// ShardsAuto is the value of failover.shards that turns on discovery.
const ShardsAuto = "auto"

// Discovery scopes and paces shard discovery (failover.shards: auto).
type Discovery struct {
	// Interval is how often the leader re-reads the topo and refreshes the plan.
	Interval time.Duration `yaml:"interval"`
	// Keyspaces limits discovery to these keyspaces, or keyspace/shard entries; empty means all, like
	// VTOrc's --clusters_to_watch.
	Keyspaces []string `yaml:"keyspaces"`
}

// Shard is one Vitess shard that a failover promotes. Tablets lists, per DC, the tablet aliases of that DC;
// the first is the candidate promoted there.
type Shard struct {
	Keyspace string             `yaml:"keyspace"`
	Shard    string             `yaml:"shard"`
	Tablets  map[string]Aliases `yaml:"tablets"`
}

// Aliases is a list of tablet aliases; in YAML it may also be written as a single alias.
type Aliases []string

// Hooks are argument vectors run around a failover (before_promote, after_failover: on the leader) and when
// the role of a controller's own DC changes (on_role_change: on every controller). Each is killed at
// Timeout.
type Hooks struct {
	BeforePromote []string      `yaml:"before_promote"`
	AfterFailover []string      `yaml:"after_failover"`
	OnRoleChange  []string      `yaml:"on_role_change"`
	Timeout       time.Duration `yaml:"timeout"`
}

// HTTP configures the HTTP API on Listen.
type HTTP struct {
	TokenFile string `yaml:"token_file"`
}

// CommandVars are the fields available to the templates of promote_command, switchover_command,
// fence_command, unfence_command and the hooks.
type CommandVars struct {
	Keyspace      string
	Shard         string
	Tablet        string
	IgnoreTablets string
	Vtctld        string
	DC            string
	OldDC         string
	Epoch         int64
	Timeout       string
}

// Default returns the configuration that Load starts from before it reads a file.
func Default() Config {
	return Config{
		Mirror:   Mirror{Prefix: "/vt", LeasedKeys: LeasedKeysSkip},
		Election: Election{TTL: 10 * time.Second},
		Health: Health{
			Interval:         time.Second,
			Timeout:          time.Second,
			FailureThreshold: 3,
			SuccessThreshold: 2,
		},
		Failover: Failover{
			Mode:            ModeManual,
			After:           30 * time.Second,
			Cooldown:        15 * time.Minute,
			FenceAfter:      20 * time.Second,
			PromoteTimeout:  60 * time.Second,
			RetryMaxBackoff: time.Minute,
			Discovery:       Discovery{Interval: 15 * time.Second},
			Hooks:           Hooks{Timeout: 30 * time.Second},
			FenceCommand: []string{"vtctldclient", "--server", "{{.Vtctld}}", "--action_timeout", "{{.Timeout}}",
				"SetWritable", "{{.Tablet}}", "false"},
			UnfenceCommand: []string{"vtctldclient", "--server", "{{.Vtctld}}", "--action_timeout", "{{.Timeout}}",
				"SetWritable", "{{.Tablet}}", "true"},
			PromoteCommand: []string{"vtctldclient", "--server", "{{.Vtctld}}", "--action_timeout", "{{.Timeout}}",
				"EmergencyReparentShard", "--new-primary", "{{.Tablet}}", "--ignore-replicas", "{{.IgnoreTablets}}",
				"{{.Keyspace}}/{{.Shard}}"},
			SwitchoverCommand: []string{"vtctldclient", "--server", "{{.Vtctld}}", "--action_timeout", "{{.Timeout}}",
				"PlannedReparentShard", "--new-primary", "{{.Tablet}}", "{{.Keyspace}}/{{.Shard}}"},
		},
		Listen:         "127.0.0.1:9464",
		History:        History{MaxEvents: 1000},
		RequestTimeout: DefaultRequestTimeout,
	}
}

// DefaultRequestTimeout is request_timeout's default: etcdctl's --command-timeout.
const DefaultRequestTimeout = 5 * time.Second

// DefaultDialTimeout is used for a DC whose etcd.dial_timeout is not set.
const DefaultDialTimeout = 2 * time.Second

// Keys names topoha's own keys for this cluster, below /topoha/<cluster>/: never inside the mirrored prefix.
func (c *Config) Keys() keys.Layout { return keys.For(c.Cluster) }

// OtherDC returns the name of the DC that is not dc. Validation guarantees there are exactly two.
func (c *Config) OtherDC(dc string) string {
	for name := range c.DCs {
		if name != dc {
			return name
		}
	}
	return ""
}

// SourceKeyPrefix is the raw etcd key prefix the mirror reads: the directory below mirror.prefix.
func (m Mirror) SourceKeyPrefix() string { return m.Prefix + "/" }

// MirrorExclude is what a mirror into DC to leaves alone: mirror.exclude and to's own cell roots, as
// source key prefixes.
func (c *Config) MirrorExclude(to string) []string {
	out := append([]string(nil), c.Mirror.Exclude...)
	for _, root := range c.DCs[to].CellRoots {
		out = append(out, c.Mirror.SourceKeyPrefix()+strings.TrimPrefix(root+"/", c.Mirror.DestKeyPrefix()))
	}
	return out
}

// DestKeyPrefix is the raw etcd key prefix the mirror writes: the directory below mirror.dest_prefix.
func (m Mirror) DestKeyPrefix() string { return m.DestPrefix + "/" }
