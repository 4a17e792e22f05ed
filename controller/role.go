package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/primary"
)

// Role is the role of a controller's DC, as on_role_change hooks see it in TOPOHA_ROLE.
type Role string

const (
	RolePrimary Role = "primary"
	RoleDR      Role = "dr"
	roleNone    Role = "none" // TOPOHA_OLD_ROLE before the first run
)

type roleChange struct {
	role Role
	rec  primary.Record
}

func (ctl *Controller) roleOf(rec primary.Record) Role {
	if rec.DC == ctl.cfg.DC {
		return RolePrimary
	}
	return RoleDR
}

func orNone(role Role) Role {
	if role == "" {
		return roleNone
	}
	return role
}

// runRoleHooks runs on_role_change for each role change it receives, in order, until ctx ends. A change
// that is superseded before its hook ran is skipped (the sender keeps only the latest); a hook that fails
// is run again with back-off until it succeeds or the role changes, because a VIP left on the wrong side
// is worse than a hook run twice (hooks must be idempotent).
func (ctl *Controller) runRoleHooks(ctx context.Context, changes <-chan roleChange) {
	var told Role
	toldPrimary := ""
	var retry <-chan time.Time
	var pending *roleChange
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case ch := <-changes:
			pending, backoff = &ch, time.Second
		case <-retry:
		}
		retry = nil
		if pending == nil || pending.role == told {
			pending = nil
			continue
		}
		c := ctl.config()
		argv := c.Failover.Hooks.OnRoleChange
		if len(argv) == 0 {
			told, toldPrimary, pending = pending.role, pending.rec.DC, nil
			continue
		}
		env := map[string]string{
			"TOPOHA_ROLE": string(pending.role), "TOPOHA_OLD_ROLE": string(orNone(told)),
			"TOPOHA_PRIMARY_DC": pending.rec.DC, "TOPOHA_OLD_PRIMARY_DC": toldPrimary, "TOPOHA_EPOCH": fmt.Sprint(pending.rec.Epoch),
		}
		vars := config.CommandVars{DC: pending.rec.DC, Epoch: pending.rec.Epoch, Vtctld: c.DCs[ctl.cfg.DC].Vtctld, Timeout: c.Failover.Hooks.Timeout.String()}
		if err := ctl.hooks().Run(ctx, failover.HookOnRoleChange, argv, vars, env); err != nil {
			retry = time.After(backoff)
			backoff = min(2*backoff, time.Minute)
			continue
		}
		told, toldPrimary, pending = pending.role, pending.rec.DC, nil
	}
}

// hooks runs hooks as this controller.
func (ctl *Controller) hooks() failover.Hooks {
	return failover.Hooks{Config: ctl.config(), DC: ctl.cfg.DC, ID: ctl.cfg.ID, Events: ctl.ev, Metrics: ctl.cfg.Metrics}
}
