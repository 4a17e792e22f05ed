package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/config"
)

// installedBinary is where the unit expects topoha; systemd-analyze wants an executable there.
const installedBinary = "/usr/local/bin/topoha"

// unitFile is a systemd unit or drop-in: section, then key, then every value assigned, in order.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	for i, line := range strings.Split(string(repoFile(t, path)), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not `Key=value` inside a section: %q", path, i+1, line)
			}
			u[section][key] = append(u[section][key], value)
		}
	}
	return u
}

// last is the value in force for key: the last one assigned.
func (u unitFile) last(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func TestSystemdUnit(t *testing.T) {
	const path = "deploy/systemd/topoha.service"
	u := parseUnit(t, path)

	want := map[string]map[string]string{
		"Service": {
			"Type": "exec", "EnvironmentFile": "/etc/topoha/topoha.env", "ExecReload": "/bin/kill -HUP $MAINPID", "KillSignal": "SIGTERM", "KillMode": "mixed",
			"User": "topoha", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadOnlyPaths": "/etc/topoha",
			"ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
			"ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
			"LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "SystemCallFilter": "@system-service",
			"CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		},
		"Install": {"WantedBy": "multi-user.target"},
	}
	for section, keys := range want {
		for key, value := range keys {
			if got := u.last(section, key); got != value || len(u[section][key]) == 0 {
				t.Errorf("%s: [%s] %s=%q, want %q", path, section, key, got, value)
			}
		}
	}
	if r := u.last("Service", "Restart"); r != "always" && r != "on-failure" {
		t.Errorf("%s: Restart=%q; a controller must come back", path, r)
	}

	// TimeoutStopSec must cover what a stop waits for during a failover with the default config.
	stop, err := time.ParseDuration(u.last("Service", "TimeoutStopSec") + "s")
	if need := stopWindow(config.Default().Failover); err != nil || stop < need {
		t.Errorf("%s: TimeoutStopSec=%s must be at least %s (an epoch bump or a switchover's drain with the default config)", path, u.last("Service", "TimeoutStopSec"), need)
	}

	argv := strings.Fields(u.last("Service", "ExecStart"))
	if len(argv) == 0 || argv[0] != installedBinary {
		t.Fatalf("%s: ExecStart must run %s, got %q", path, installedBinary, argv)
	}
	runArgs(t, path+" ExecStart", argv[1:])

	// Every variable ExecStart uses must be set by the example environment file.
	env := string(repoFile(t, "deploy/systemd/topoha.env.example"))
	for _, m := range dollarVariable.FindAllStringSubmatch(u.last("Service", "ExecStart"), -1) {
		if !strings.Contains(env, "\n"+m[1]+"=") {
			t.Errorf("%s: ExecStart uses $%s, which deploy/systemd/topoha.env.example does not set", path, m[1])
		}
	}

	dropIn := parseUnit(t, "deploy/systemd/topoha.service.d/vip-hook.conf")
	if len(dropIn) != 1 || !strings.Contains(dropIn.last("Service", "AmbientCapabilities"), "CAP_NET_ADMIN") ||
		!strings.Contains(dropIn.last("Service", "RestrictAddressFamilies"), "AF_PACKET") {
		t.Errorf("vip-hook.conf: want only [Service] granting CAP_NET_ADMIN and AF_PACKET, got %v", dropIn)
	}
}

// TestSystemdAnalyzeVerify has systemd check the unit and its drop-in: unknown keys, bad values, unknown
// specifiers. systemd only warns about those, so any output fails the test.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; TestSystemdUnit still checks the unit's keys and flags")
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "topoha")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(repoFile(t, "deploy/systemd/topoha.service")), installedBinary, stub)
	if err := os.WriteFile(filepath.Join(dir, "topoha.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "topoha.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	dropIn := repoFile(t, "deploy/systemd/topoha.service.d/vip-hook.conf")
	if err := os.WriteFile(filepath.Join(dir, "topoha.service.d", "vip-hook.conf"), dropIn, 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(analyze, "verify", "--man=no", filepath.Join(dir, "topoha.service"))
	cmd.Dir = dir
	// The trailing colon keeps systemd's own unit directories, where the unit's dependencies live.
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify topoha.service (with vip-hook.conf) must pass silently; exit %v, said:\n%s", err, out)
	}
}
