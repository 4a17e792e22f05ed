package controller

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/health"
)

// PausedKey is where the pause flag lives, in both DCs' etcds.
func PausedKey(keyRoot string) string { return keyRoot + "paused" }

// Pause is the pause flag. Each change raises Generation, and the highest generation readable in either
// etcd holds, so a DC that was away when the flag changed cannot bring an old value back.
type Pause struct {
	Paused     bool      `json:"paused"`
	Generation int64     `json:"generation"`
	By         string    `json:"by"`
	At         time.Time `json:"at"`
}

// ReadPause reads the flag from the given etcds at once. ok is false when none could be read.
func ReadPause(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client) (p Pause, ok bool) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for dc, cli := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, c.Health.Timeout)
			defer cancel()
			resp, err := cli.Get(rctx, PausedKey(c.KeyRoot()))
			if err != nil {
				return
			}
			var got Pause
			if len(resp.Kvs) > 0 {
				got = decodePause(dc, resp.Kvs[0].Value)
			}
			mu.Lock()
			if !ok || got.Generation > p.Generation || (got.Generation == p.Generation && got.Paused) {
				p = got
			}
			ok = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	return p, ok
}

// decodePause decodes the flag read from dc's etcd. Anything but a flag that topoha wrote (generation 1
// or more) counts as paused: when in doubt, no automatic failover. `null` or `{}` are not a flag.
func decodePause(dc string, b []byte) Pause {
	var p Pause
	if json.Unmarshal(b, &p) != nil || p.Generation < 1 {
		return Pause{Paused: true, Generation: -1, By: "unreadable flag in " + dc}
	}
	return p
}

// paused says whether automatic failover is paused. A flag that cannot be read counts as set.
func (ctl *Controller) paused(ctx context.Context) bool {
	p, ok := ReadPause(ctx, ctl.config(), ctl.reachable())
	return !ok || p.Paused
}

// reachable returns the clients of the DCs whose etcd is not known to be down, so that the leader's loop
// does not wait a timeout on a lost DC at every turn.
func (ctl *Controller) reachable() map[string]*clientv3.Client {
	out := map[string]*clientv3.Client{}
	for dc, p := range ctl.probers {
		if p.Snapshot().State != health.Down {
			out[dc] = ctl.cfg.Clients[dc]
		}
	}
	return out
}

// SetPaused sets or clears the pause flag (see WritePause).
func (ctl *Controller) SetPaused(ctx context.Context, on bool, by string) error {
	err := WritePause(ctx, ctl.config(), ctl.cfg.Clients, on, by)
	if err != nil {
		ctl.ev.Error(events.KindOverride, "pause flag not changed", "paused", on, "by", by, "err", err)
		return err
	}
	ctl.ev.Info(events.KindOverride, "pause flag changed", "paused", on, "by", by)
	return nil
}

// WritePause sets or clears the pause flag in every etcd that answers, one generation above the highest
// it reads; it fails only if no etcd took it.
func WritePause(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, on bool, by string) error {
	cur, _ := ReadPause(ctx, c, clients)
	next := Pause{Paused: on, Generation: max(cur.Generation, 0) + 1, By: by, At: time.Now().UTC()}
	val, err := json.Marshal(next)
	if err != nil {
		return err
	}
	return putEverywhere(ctx, c, clients, PausedKey(c.KeyRoot()), string(val), 0)
}

// TogglePause flips the pause flag (SIGUSR2).
func (ctl *Controller) TogglePause(ctx context.Context) error {
	return ctl.SetPaused(ctx, !ctl.paused(ctx), "signal")
}
