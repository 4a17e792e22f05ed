package controller

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/internal/testenv"
)

// on_role_change runs for the DC's role at start and at each change, in order; a failed run is retried
// until it succeeds, because a VIP left on the wrong side is worse than a hook run twice.
func TestOnRoleChangeIsRetriedAndFollowsFailovers(t *testing.T) {
	r := newRig(t, "auto", time.Second)
	dir := t.TempDir()
	roles, failedOnce := filepath.Join(dir, "roles"), filepath.Join(dir, "failed-once")
	// The first run fails; every later run appends "<role> <old role> <epoch>" to roles.
	script := `if [ -e ` + failedOnce + ` ]; then echo "$TOPOHA_ROLE $TOPOHA_OLD_ROLE $TOPOHA_EPOCH" >> ` + roles + `; else touch ` + failedOnce + `; exit 1; fi`
	cfg := *r.cfg
	cfg.Failover.Hooks.OnRoleChange = []string{"sh", "-c", script}
	r.cfg = &cfg
	ctl, _ := r.start("dc2", "ctl-b")
	read := func() string {
		data, _ := os.ReadFile(roles)
		return strings.TrimSpace(string(data))
	}
	testenv.Eventually(t, wait, func() (bool, string) { return read() == "dr none 0", "roles run: " + read() })

	testenv.Eventually(t, wait, func() (bool, string) { return ctl.Status().Leading, "not leading" })
	r.dc1.Stop()
	testenv.Eventually(t, wait, func() (bool, string) { return read() == "dr none 0\nprimary dr 1", "roles run: " + read() })
}
