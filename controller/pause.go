package controller

import (
	"context"
	"encoding/json"
	"strings"
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

// pauseCopy is the flag as one etcd holds it.
type pauseCopy struct {
	Pause
	modRevision int64 // 0: no flag there
}

// readPauses reads the flag from the given etcds at once; an etcd that does not answer is left out.
func readPauses(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client) map[string]pauseCopy {
	out := map[string]pauseCopy{}
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
			var got pauseCopy
			if len(resp.Kvs) > 0 {
				got = pauseCopy{decodePause(dc, resp.Kvs[0].Value), resp.Kvs[0].ModRevision}
			}
			mu.Lock()
			out[dc] = got
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// newer says whether a holds over b: a higher generation, or the same one paused.
func (a Pause) newer(b Pause) bool {
	return a.Generation > b.Generation || (a.Generation == b.Generation && a.Paused && !b.Paused)
}

// ReadPause reads the flag from the given etcds at once and returns the one that holds. ok is false when
// none could be read.
func ReadPause(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client) (p Pause, ok bool) {
	return highest(readPauses(ctx, c, clients))
}

func highest(copies map[string]pauseCopy) (p Pause, ok bool) {
	for _, cp := range copies {
		if !ok || cp.newer(p) {
			p = cp.Pause
		}
		ok = true
	}
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

// pause returns the pause flag that holds, and whether automatic failover is paused. A flag that cannot be
// read counts as set.
//
// The flag that holds is the newest this controller has seen, not only what the etcds it reaches hold
// now: a pause written while one DC was away exists only in the other DC's etcd, and losing that DC
// must not lose the pause. The flag that holds is also copied into every etcd that answers with an
// older one (a compare-and-swap: a newer flag written meanwhile wins), so that a controller started
// later, or `topoha status`, reads it from either side.
func (ctl *Controller) pause(ctx context.Context) (Pause, bool) {
	c := ctl.config()
	clients := ctl.reachable()
	copies := readPauses(ctx, c, clients)
	p, ok := highest(copies)
	ctl.pauseMu.Lock()
	if ok && p.newer(ctl.pauseSeen) {
		ctl.pauseSeen = p
	}
	// A flag that is not a flag, alone, still counts as paused.
	if p.Generation >= 0 && ctl.pauseSeen.newer(p) {
		p = ctl.pauseSeen
	}
	ctl.pauseMu.Unlock()
	if p.Generation > 0 {
		ctl.spreadPause(ctx, c, clients, copies, p)
	}
	return p, !ok || p.Paused
}

// spreadPause writes p into every etcd of copies that holds a valid older flag or none. A flag that is
// not a flag (generation -1) is left for an operator to see.
func (ctl *Controller) spreadPause(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, copies map[string]pauseCopy, p Pause) {
	val, err := json.Marshal(p)
	if err != nil {
		return
	}
	key := PausedKey(c.KeyRoot())
	for dc, cp := range copies {
		if cp.Generation < 0 || !p.newer(cp.Pause) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, c.Health.Timeout)
		resp, err := clients[dc].Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", cp.modRevision)).
			Then(clientv3.OpPut(key, string(val))).Commit()
		cancel()
		if err == nil && resp.Succeeded {
			ctl.ev.Info(events.KindOverride, "pause flag copied into an etcd that held an older one", "to_dc", dc,
				"paused", p.Paused, "generation", p.Generation, "by", p.By)
		}
	}
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
	written, missed, err := WritePause(ctx, ctl.config(), ctl.cfg.Clients, on, by)
	if err != nil {
		ctl.ev.Error(events.KindOverride, "pause flag not changed", "paused", on, "by", by, "err", err)
		return err
	}
	// Seen at once: the next decision must not wait for a read that a lost DC could make stale.
	ctl.pauseMu.Lock()
	if written.newer(ctl.pauseSeen) {
		ctl.pauseSeen = written
	}
	ctl.pauseMu.Unlock()
	ctl.ev.Info(events.KindOverride, "pause flag changed", "paused", on, "by", by, "not_written_to", strings.Join(missed, ","))
	return nil
}

// WritePause sets or clears the pause flag in every etcd that answers, one generation above the highest
// it reads, and returns the flag written. It fails only if no etcd took it; missed names the DCs that did
// not (the controllers copy the flag there once they answer).
func WritePause(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, on bool, by string) (written Pause, missed []string, err error) {
	cur, _ := ReadPause(ctx, c, clients)
	next := Pause{Paused: on, Generation: max(cur.Generation, 0) + 1, By: by, At: time.Now().UTC()}
	val, err := json.Marshal(next)
	if err != nil {
		return Pause{}, nil, err
	}
	missed, err = putEverywhere(ctx, c, clients, PausedKey(c.KeyRoot()), string(val), 0)
	return next, missed, err
}

// TogglePause flips the pause flag (SIGUSR2).
func (ctl *Controller) TogglePause(ctx context.Context) error {
	_, paused := ctl.pause(ctx)
	return ctl.SetPaused(ctx, !paused, "signal")
}
