package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Fakes of ip and arping that log their arguments and keep the interface's addresses in a file, and fail
// as the real ones do: adding an address twice, deleting one that is not there, an unknown device.
const (
	fakeIP = `#!/bin/sh
echo "ip $*" >>"$FAKE_LOG"
case "$*" in
"-o addr show dev eth0 to "*) [ -f "$FAKE_ADDRS" ] && echo "2: eth0    inet $(cat "$FAKE_ADDRS") scope global eth0"; exit 0 ;;
"-o addr show dev "*) echo "Device \"$5\" does not exist." >&2; exit 1 ;;
"addr add "*) [ -f "$FAKE_ADDRS" ] && { echo "RTNETLINK answers: File exists" >&2; exit 2; }; echo "$3" >"$FAKE_ADDRS" ;;
"addr del "*) [ -f "$FAKE_ADDRS" ] || { echo "RTNETLINK answers: Cannot assign requested address" >&2; exit 2; }; rm "$FAKE_ADDRS" ;;
*) echo "fake ip: unexpected arguments: $*" >&2; exit 1 ;;
esac
`
	fakeArping = `#!/bin/sh
echo "arping $*" >>"$FAKE_LOG"
`
)

const vipHook = "hooks/vip.sh"

// vipHost is a host with a fake network: run runs the hook there with the given environment.
type vipHost struct {
	t                      *testing.T
	bin, log, addrs, shell string
}

func newVIPHost(t *testing.T) *vipHost {
	shell, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h := &vipHost{t: t, bin: filepath.Join(dir, "bin"), log: filepath.Join(dir, "log"), addrs: filepath.Join(dir, "addrs"), shell: shell}
	if err := os.Mkdir(h.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, script := range map[string]string{"ip": fakeIP, "arping": fakeArping} {
		if err := os.WriteFile(filepath.Join(h.bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// run runs the hook as topoha would, with only env and the fakes first on PATH, and returns its combined
// output, its exit code, and the commands it ran.
func (h *vipHost) run(env ...string) (out string, code int, commands []string) {
	h.t.Helper()
	if err := os.Remove(h.log); err != nil && !os.IsNotExist(err) {
		h.t.Fatal(err)
	}
	cmd := exec.Command(h.shell, vipHook)
	cmd.Env = append([]string{"PATH=" + h.bin + ":/usr/bin:/bin", "FAKE_LOG=" + h.log, "FAKE_ADDRS=" + h.addrs}, env...)
	b, err := cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		h.t.Fatal(err)
	}
	if logged, err := os.ReadFile(h.log); err == nil {
		commands = strings.Split(strings.TrimSpace(string(logged)), "\n")
	}
	return string(b), code, commands
}

func TestVIPHookSyntax(t *testing.T) {
	if out, err := exec.Command("sh", "-n", vipHook).CombinedOutput(); err != nil {
		t.Fatalf("sh -n %s: %v\n%s", vipHook, err, out)
	}
}

func TestVIPHookMovesTheVIP(t *testing.T) {
	h := newVIPHost(t)
	vip := []string{"VIP_ADDRESS=10.0.0.50/32", "VIP_INTERFACE=eth0", "TOPOHA_HOOK=on_role_change", "TOPOHA_EPOCH=4"}
	const (
		show   = "ip -o addr show dev eth0 to 10.0.0.50"
		add    = "ip addr add 10.0.0.50/32 dev eth0"
		del    = "ip addr del 10.0.0.50/32 dev eth0"
		arping = "arping -q -U -c 3 -I eth0 10.0.0.50"
	)
	// topoha runs the hook again with the same role at every start, so each role is run twice: the second
	// run must succeed without adding or deleting again, and still announce the VIP.
	for _, step := range []struct {
		role string
		want []string
		held bool
	}{
		{"primary", []string{show, add, arping}, true},
		{"primary", []string{show, arping}, true},
		{"dr", []string{show, del}, false},
		{"dr", []string{show}, false},
	} {
		out, code, commands := h.run(append(vip, "TOPOHA_ROLE="+step.role)...)
		if code != 0 || !reflect.DeepEqual(commands, step.want) {
			t.Fatalf("TOPOHA_ROLE=%s: exit %d, ran %q, want exit 0 and %q\n%s", step.role, code, commands, step.want, out)
		}
		if _, err := os.Stat(h.addrs); (err == nil) != step.held {
			t.Fatalf("TOPOHA_ROLE=%s: VIP held %v, want %v", step.role, err == nil, step.held)
		}
		if !strings.Contains(out, "10.0.0.50/32") {
			t.Errorf("TOPOHA_ROLE=%s: the output (kept in topoha's history) does not name the VIP:\n%s", step.role, out)
		}
	}
}

func TestVIPHookRefusesBadSettings(t *testing.T) {
	ok := map[string]string{"TOPOHA_ROLE": "primary", "VIP_ADDRESS": "10.0.0.50/32", "VIP_INTERFACE": "eth0"}
	for _, tc := range []struct {
		name, key, value, says string
		code                   int
	}{
		{"no role: not run as on_role_change", "TOPOHA_ROLE", "", "TOPOHA_ROLE is not set", 2},
		{"unknown role", "TOPOHA_ROLE", "leader", "expected primary or dr", 2},
		{"no VIP", "VIP_ADDRESS", "", "VIP_ADDRESS is not set", 2},
		{"VIP without prefix length", "VIP_ADDRESS", "10.0.0.50", "10.0.0.50/32", 2},
		{"no interface", "VIP_INTERFACE", "", "VIP_INTERFACE is not set", 2},
		{"unknown interface", "VIP_INTERFACE", "eth9", `Device "eth9" does not exist`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newVIPHost(t)
			var env []string
			for k, v := range ok {
				if k == tc.key {
					v = tc.value
				}
				if v != "" {
					env = append(env, k+"="+v)
				}
			}
			out, code, commands := h.run(env...)
			if code != tc.code || !strings.Contains(out, tc.says) {
				t.Errorf("exit %d, output %q; want exit %d saying %q", code, out, tc.code, tc.says)
			}
			for _, c := range commands {
				if strings.HasPrefix(c, "ip addr") || strings.HasPrefix(c, "arping") {
					t.Errorf("changed the network before failing: %q", c)
				}
			}
		})
	}
}
