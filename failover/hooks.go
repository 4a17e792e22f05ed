package failover

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/topoha/topoha/command"
	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/metrics"
)

// Hook names, as in the config and in TOPOHA_HOOK.
const (
	HookBeforePromote = "before_promote"
	HookAfterFailover = "after_failover"
	HookOnRoleChange  = "on_role_change"
)

// Hooks runs the configured hooks of one controller: each with the TOPOHA_* environment, killed at
// failover.hooks.timeout, its outcome and output recorded as an event and counted in metrics.
type Hooks struct {
	Config *config.Config
	// DC and ID name the controller that runs the hooks (TOPOHA_DC, TOPOHA_CONTROLLER_ID).
	DC, ID  string
	Events  *events.Recorder
	Metrics *metrics.Metrics
}

// Run runs hook's argument vector, if one is configured, with vars for its templates and env added to the
// common TOPOHA_* variables. The error says why it failed; a hook that is not configured succeeds.
func (h Hooks) Run(ctx context.Context, hook string, argv []string, vars config.CommandVars, env map[string]string) error {
	if len(argv) == 0 {
		return nil
	}
	args, err := command.Render(argv, vars)
	if err != nil {
		err = fmt.Errorf("hook %s: %w", hook, err)
		h.Events.Error(events.KindHook, "hook not run", "hook", hook, "err", err)
		h.Metrics.HookRan(hook, "failure")
		return err
	}
	all := map[string]string{
		"TOPOHA_HOOK": hook, "TOPOHA_CLUSTER": h.Config.Cluster, "TOPOHA_DC": h.DC, "TOPOHA_CONTROLLER_ID": h.ID,
	}
	for k, v := range env {
		all[k] = v
	}
	environ := make([]string, 0, len(all))
	for k, v := range all {
		environ = append(environ, k+"="+v)
	}
	sort.Strings(environ)
	start := time.Now()
	hctx, cancel := context.WithTimeout(ctx, h.Config.Failover.Hooks.Timeout)
	out, err := command.Run(hctx, args, environ...)
	cancel()
	result := "success"
	switch {
	case errors.Is(err, command.ErrTimeout):
		result = "timeout"
	case err != nil:
		result = "failure"
	}
	h.Metrics.HookRan(hook, result)
	attrs := []any{"hook", hook, "result", result, "took", time.Since(start).Round(time.Millisecond), "argv", strings.Join(args, " "), "output", strings.TrimSpace(out)}
	if err != nil {
		h.Events.Error(events.KindHook, "hook failed", append(attrs, "err", err)...)
		return fmt.Errorf("hook %s: %w", hook, err)
	}
	h.Events.Info(events.KindHook, "hook ran", attrs...)
	return nil
}
