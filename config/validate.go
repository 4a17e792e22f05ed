package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/topoha/topoha/keys"
)

// FieldError is a problem with one field of the config.
type FieldError struct {
	Field string // dotted path, e.g. dcs.dc2.etcd.endpoints
	Msg   string // what is wrong and how to fix it
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (c *Config) applyDefaults() {
	if c.Mirror.DestPrefix == "" {
		c.Mirror.DestPrefix = c.Mirror.Prefix
	}
	if c.Vitess.GlobalRoot == "" {
		c.Vitess.GlobalRoot = c.Mirror.Prefix
	}
	for name, dc := range c.DCs {
		if dc.Etcd.DialTimeout == 0 {
			dc.Etcd.DialTimeout = DefaultDialTimeout
			c.DCs[name] = dc
		}
	}
}

var (
	namePattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	aliasPattern = regexp.MustCompile(`^[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*-[0-9]+$`)
)

// Validate checks the whole config and returns every problem found, each naming its field.
func (c *Config) Validate() error {
	var all []error
	add := func(err error) {
		if err != nil {
			all = append(all, err)
		}
	}

	if c.Cluster == "" {
		add(fieldErr("cluster", "must be set: a name for this Vitess cluster, e.g. prod; topoha keeps its keys under /topoha/<cluster>/"))
	} else if !namePattern.MatchString(c.Cluster) {
		add(fieldErr("cluster", "%q: use letters, digits, '.', '_' and '-' only", c.Cluster))
	}

	c.validateDCs(add)
	c.validateMirror(add)

	if !strings.HasPrefix(c.Vitess.GlobalRoot, "/") {
		add(fieldErr("vitess.global_root", "%q must start with '/': the -topo_global_root of Vitess, e.g. /vt", c.Vitess.GlobalRoot))
	} else if c.Vitess.GlobalRoot != c.Mirror.Prefix && !strings.HasPrefix(c.Vitess.GlobalRoot, c.Mirror.SourceKeyPrefix()) {
		add(fieldErr("vitess.global_root", "%q is not mirror.prefix (%q) or below it: the Shard records would not be mirrored to the DR DC; make mirror.prefix cover the global root", c.Vitess.GlobalRoot, c.Mirror.Prefix))
	}
	if v := c.Vitess.TopoVIP; v != "" {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(fieldErr("vitess.topo_vip", "%q is not an etcd endpoint URL, e.g. http://topo-vip:2379", v))
		}
	}
	if c.Election.TTL < time.Second || c.Election.TTL%time.Second != 0 {
		add(fieldErr("election.ttl", "%s: must be a whole number of seconds, at least 1s (etcd leases count in seconds)", c.Election.TTL))
	}
	c.validateHealth(add)
	c.validateFailover(add)

	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		add(fieldErr("listen", "%q is not host:port, e.g. 127.0.0.1:9464", c.Listen))
	}
	if c.HTTP.TokenFile != "" {
		add(checkReadable("http.token_file", c.HTTP.TokenFile))
	}
	if c.RequestTimeout <= 0 {
		add(fieldErr("request_timeout", "%s: must be positive, e.g. 5s (the default); it bounds each etcd request that is not a health probe", c.RequestTimeout))
	}
	if c.History.MaxEvents < 10 {
		add(fieldErr("history.max_events", "%d: keep at least 10 events (default 1000); the history is bounded per DC's etcd", c.History.MaxEvents))
	}
	return errors.Join(all...)
}

func (c *Config) validateDCs(add func(error)) {
	if len(c.DCs) != 2 {
		add(fieldErr("dcs", "has %d datacenters; configure exactly two (the primary and the DR side)", len(c.DCs)))
	}
	for _, name := range c.DCNames() {
		dc := c.DCs[name]
		base := "dcs." + name
		if !namePattern.MatchString(name) {
			add(fieldErr(base, "%q is not a usable DC name: use letters, digits, '.', '_' and '-' only", name))
		}
		add(dc.Etcd.validate(base + ".etcd"))
	}
	if c.InitialPrimary == "" {
		add(fieldErr("initial_primary", "must be set to the DC that is primary before any failover, one of %s", c.dcList()))
	} else if _, ok := c.DCs[c.InitialPrimary]; !ok {
		add(fieldErr("initial_primary", "%q is not a DC under dcs; use one of %s", c.InitialPrimary, c.dcList()))
	}
}

// DCNames returns the configured DC names in sorted order.
func (c *Config) DCNames() []string {
	names := make([]string, 0, len(c.DCs))
	for name := range c.DCs {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func (c *Config) dcList() string {
	if len(c.DCs) == 0 {
		return "the DCs (none are configured under dcs)"
	}
	return strings.Join(c.DCNames(), ", ")
}

func (e Etcd) validate(base string) error {
	var all []error
	if len(e.Endpoints) == 0 {
		all = append(all, fieldErr(base+".endpoints", "must not be empty: list every member of this DC's etcd cluster, e.g. [http://etcd-dc1-a:2379, http://etcd-dc1-b:2379, http://etcd-dc1-c:2379], or its VIP"))
	}
	for i, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			all = append(all, fieldErr(fmt.Sprintf("%s.endpoints[%d]", base, i),
				"%q is not an http:// or https:// URL with a host, e.g. http://10.0.0.1:2379", ep))
		}
	}
	if e.DialTimeout < 0 {
		all = append(all, fieldErr(base+".dial_timeout", "must be positive, e.g. 2s"))
	}
	if e.PasswordFile != "" {
		if e.Username == "" {
			all = append(all, fieldErr(base+".username", "must be set when password_file is"))
		}
		if err := checkReadable(base+".password_file", e.PasswordFile); err != nil {
			all = append(all, err)
		}
	} else if e.Username != "" {
		all = append(all, fieldErr(base+".password_file", "must name a file holding the password of user %q", e.Username))
	}
	if (e.TLS.CertFile == "") != (e.TLS.KeyFile == "") {
		all = append(all, fieldErr(base+".tls", "cert_file and key_file go together; set both or neither"))
	}
	for field, path := range map[string]string{"ca_file": e.TLS.CAFile, "cert_file": e.TLS.CertFile, "key_file": e.TLS.KeyFile} {
		if path != "" {
			if err := checkReadable(base+".tls."+field, path); err != nil {
				all = append(all, err)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Error() < all[j].Error() })
	return errors.Join(all...)
}

func checkReadable(field, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fieldErr(field, "cannot read %q: %v", path, errors.Unwrap(err))
	}
	f.Close()
	return nil
}

func (c *Config) validateMirror(add func(error)) {
	m := c.Mirror
	checkDir := func(field, p string) bool {
		switch {
		case !strings.HasPrefix(p, "/"):
			add(fieldErr(field, "%q must start with '/', e.g. /vt", p))
		case p == "/" || strings.HasSuffix(p, "/"):
			add(fieldErr(field, "%q: name the directory without a trailing '/', e.g. /vt", p))
		case strings.HasPrefix(keys.Dir, p+"/") || strings.HasPrefix(p+"/", keys.Dir):
			add(fieldErr(field, "%q contains topoha's own keys (%s); name the Vitess global root instead, e.g. /vt", p, keys.Dir))
		default:
			return true
		}
		return false
	}
	srcOK := checkDir("mirror.prefix", m.Prefix)
	checkDir("mirror.dest_prefix", m.DestPrefix)
	for i, ex := range m.Exclude {
		if srcOK && !strings.HasPrefix(ex, m.SourceKeyPrefix()) {
			add(fieldErr(fmt.Sprintf("mirror.exclude[%d]", i), "%q is not below mirror.prefix %q; write it as a full key prefix such as %s/some/dir/", ex, m.Prefix, m.Prefix))
		}
	}
	if m.LeasedKeys != LeasedKeysSkip {
		add(fieldErr("mirror.leased_keys", "%q: the only mode is %q (a leased key copied as a permanent key would never expire)", m.LeasedKeys, LeasedKeysSkip))
	}
	var roots []string
	for _, name := range c.DCNames() {
		for i, root := range c.DCs[name].CellRoots {
			field := fmt.Sprintf("dcs.%s.cell_roots[%d]", name, i)
			switch {
			case !checkDir(field, root):
			case !strings.HasPrefix(root+"/", m.DestKeyPrefix()) || root == m.DestPrefix:
				add(fieldErr(field, "%q is not below mirror.dest_prefix %q: only a cell root inside the mirrored directory needs protecting; remove it", root, m.DestPrefix))
			case strings.HasPrefix(c.Vitess.GlobalRoot+"/", root+"/") && c.Vitess.GlobalRoot != "":
				add(fieldErr(field, "%q contains vitess.global_root %q: the global topo must be mirrored; give the cell its own root, e.g. %s/%s", root, c.Vitess.GlobalRoot, m.Prefix, name))
			default:
				for _, other := range roots {
					if strings.HasPrefix(root+"/", other+"/") || strings.HasPrefix(other+"/", root+"/") {
						add(fieldErr(field, "%q overlaps cell root %q: every cell root belongs to one DC", root, other))
					}
				}
				roots = append(roots, root)
			}
		}
	}
	if m.CellInfoRewrite {
		for _, name := range c.DCNames() {
			if c.DCs[name].TopoAddress == "" {
				add(fieldErr("dcs."+name+".topo_address", "must be set when mirror.cell_info_rewrite is true: the address Vitess uses for this DC's etcd"))
			}
		}
	}
}

func (c *Config) validateHealth(add func(error)) {
	h := c.Health
	if h.Interval <= 0 {
		add(fieldErr("health.interval", "must be positive, e.g. 1s"))
	}
	if h.Timeout <= 0 {
		add(fieldErr("health.timeout", "must be positive, e.g. 1s"))
	}
	if h.FailureThreshold < 1 {
		add(fieldErr("health.failure_threshold", "must be at least 1"))
	}
	if h.SuccessThreshold < 1 {
		add(fieldErr("health.success_threshold", "must be at least 1"))
	}
}

func (c *Config) validateFailover(add func(error)) {
	f := c.Failover
	switch f.Mode {
	case ModeManual:
	case ModeAuto:
		if len(f.Witnesses) == 0 && !f.AllowTwoSiteAuto {
			add(fieldErr("failover.mode", "auto with no failover.witnesses can make both DCs primary when the link between them fails; "+
				"add witnesses, or set failover.allow_two_site_auto: true to accept that risk, or use mode: manual"))
		}
	default:
		add(fieldErr("failover.mode", "%q: must be auto or manual", f.Mode))
	}
	for name, d := range map[string]time.Duration{"after": f.After, "promote_timeout": f.PromoteTimeout, "fence_after": f.FenceAfter, "retry_max_backoff": f.RetryMaxBackoff} {
		if d <= 0 {
			add(fieldErr("failover."+name, "must be positive, e.g. 30s"))
		}
	}
	// 0 is allowed: no hold-down between automatic failovers (VTOrc dropped its recovery block in v20, and
	// its users will try it); the controller warns at start. docs/configuration.md says why.
	if f.Cooldown < 0 {
		add(fieldErr("failover.cooldown", "%s: must be 0 (no hold-down) or positive, e.g. 15m", f.Cooldown))
	}
	if f.SelfFence {
		if f.FenceAfter >= f.After {
			add(fieldErr("failover.fence_after", "%s must be shorter than failover.after (%s), so the isolated side fences itself before the other side may promote", f.FenceAfter, f.After))
		}
		if len(f.FenceCommand) == 0 {
			add(fieldErr("failover.fence_command", "must be set when failover.self_fence is true"))
		}
		if len(f.UnfenceCommand) == 0 {
			add(fieldErr("failover.unfence_command", "must be set when failover.self_fence is true: it makes the tablets writable again when the fence is lifted"))
		}
	}
	for i, w := range f.Witnesses {
		if u, err := url.Parse(w); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(fieldErr(fmt.Sprintf("failover.witnesses[%d]", i), "%q is not an http(s) URL of a `topoha witness`, e.g. http://witness:9465", w))
		}
	}
	add(validateCommand("failover.promote_command", f.PromoteCommand, true))
	add(validateCommand("failover.switchover_command", f.SwitchoverCommand, true))
	add(validateCommand("failover.fence_command", f.FenceCommand, false))
	add(validateCommand("failover.unfence_command", f.UnfenceCommand, false))
	add(validateCommand("failover.hooks.before_promote", f.Hooks.BeforePromote, false))
	add(validateCommand("failover.hooks.after_failover", f.Hooks.AfterFailover, false))
	add(validateCommand("failover.hooks.on_role_change", f.Hooks.OnRoleChange, false))
	if f.Hooks.Timeout <= 0 {
		add(fieldErr("failover.hooks.timeout", "must be positive, e.g. 30s: a hook is killed when it passes"))
	}

	c.validateDiscovery(add)
	seen := map[string]int{}
	for i, s := range f.Shards.List {
		base := fmt.Sprintf("failover.shards[%d]", i)
		if s.Keyspace == "" {
			add(fieldErr(base+".keyspace", "must be set"))
		}
		if s.Shard == "" {
			add(fieldErr(base+".shard", "must be set, e.g. \"0\" or \"-80\" (quote it in YAML)"))
		}
		id := s.Keyspace + "/" + s.Shard
		if j, dup := seen[id]; dup {
			add(fieldErr(base, "%s is listed twice (also failover.shards[%d]); keep one entry per shard", id, j))
		}
		seen[id] = i
		for dc := range s.Tablets {
			if _, ok := c.DCs[dc]; !ok {
				add(fieldErr(base+".tablets."+dc, "%q is not a DC under dcs; use one of %s", dc, c.dcList()))
			}
		}
		for _, dc := range c.DCNames() {
			aliases := s.Tablets[dc]
			if len(aliases) == 0 {
				add(fieldErr(base+".tablets."+dc, "must list at least one tablet alias of %s; the first is the candidate promoted there", dc))
			}
			for j, a := range aliases {
				if !aliasPattern.MatchString(a) {
					add(fieldErr(fmt.Sprintf("%s.tablets.%s[%d]", base, dc, j), "%q is not a tablet alias <cell>-<uid>, e.g. %s-0000000101", a, dc))
				}
			}
		}
	}
}

// validateDiscovery checks the DCs' cells and the discovery keys: a cell is in at most one DC, and auto
// needs every DC's cells.
func (c *Config) validateDiscovery(add func(error)) {
	f := c.Failover
	owner := map[string]string{}
	for _, dc := range c.DCNames() {
		cells := c.DCs[dc].Cells
		if f.Shards.Auto && len(cells) == 0 {
			add(fieldErr("dcs."+dc+".cells", "must list the Vitess cells whose tablets run in %s when failover.shards is auto, e.g. [%s]", dc, dc))
		}
		for i, cell := range cells {
			field := fmt.Sprintf("dcs.%s.cells[%d]", dc, i)
			switch other, dup := owner[cell]; {
			case !namePattern.MatchString(cell):
				add(fieldErr(field, "%q is not a Vitess cell name: use letters, digits, '.', '_' and '-' only", cell))
			case dup && other == dc:
				add(fieldErr(field, "%q is listed twice; keep one", cell))
			case dup:
				add(fieldErr(field, "%q is also in dcs.%s.cells: a cell's tablets run in one DC; remove it from one of them", cell, other))
			default:
				owner[cell] = dc
			}
		}
	}
	if f.Discovery.Interval <= 0 {
		add(fieldErr("failover.discovery.interval", "must be positive, e.g. 15s: how often the leader re-reads the topo"))
	}
	if f.MaxParallel < 0 {
		add(fieldErr("failover.max_parallel", "%d: must be 0 (the default, %d at once) or a positive number of promote commands run at once", f.MaxParallel, DefaultMaxParallel))
	}
	if !f.Shards.Auto {
		if len(f.Discovery.Keyspaces) > 0 {
			add(fieldErr("failover.discovery.keyspaces", "only applies with failover.shards: auto; the listed shards are all there is"))
		}
		if len(f.NeverPromote) > 0 {
			add(fieldErr("failover.never_promote", "only applies with failover.shards: auto; with listed shards, leave the tablet out of failover.shards"))
		}
	}
	for i, ks := range f.Discovery.Keyspaces {
		keyspace, shard, hasShard := strings.Cut(ks, "/")
		if !namePattern.MatchString(keyspace) || (hasShard && (shard == "" || strings.Contains(shard, "/"))) {
			add(fieldErr(fmt.Sprintf("failover.discovery.keyspaces[%d]", i), "%q: write a keyspace (commerce) or a keyspace/shard (customer/-80)", ks))
		}
	}
	for i, a := range f.NeverPromote {
		if !aliasPattern.MatchString(a) {
			add(fieldErr(fmt.Sprintf("failover.never_promote[%d]", i), "%q is not a tablet alias <cell>-<uid>, e.g. dc2-0000000101", a))
		}
	}
}

// validateCommand parses each argument as a template and runs it on sample values, so that a misspelt
// field ({{.Tablett}}) fails at load time, not during a failover.
func validateCommand(field string, argv []string, required bool) error {
	if len(argv) == 0 {
		if required {
			return fieldErr(field, "must not be empty: an argument vector such as [vtctldclient, --server, \"{{.Vtctld}}\", ...]")
		}
		return nil
	}
	sample := CommandVars{Keyspace: "ks", Shard: "0", Tablet: "dc-1", IgnoreTablets: "dc-2", Vtctld: "vtctld:15999", DC: "dc", OldDC: "old", Epoch: 1, Timeout: "60s"}
	var all []error
	for i, arg := range argv {
		if _, err := RenderArg(arg, sample); err != nil {
			all = append(all, fieldErr(fmt.Sprintf("%s[%d]", field, i),
				"bad template %q: %v; the fields are .Keyspace .Shard .Tablet .IgnoreTablets .Vtctld .DC .OldDC .Epoch .Timeout", arg, err))
		}
	}
	return errors.Join(all...)
}

// RenderArg executes one argument of a command vector as a template over vars. An unknown field is an
// error, never an empty string.
func RenderArg(arg string, vars CommandVars) (string, error) {
	t, err := template.New("arg").Option("missingkey=error").Parse(arg)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, vars); err != nil {
		return "", err
	}
	return b.String(), nil
}
