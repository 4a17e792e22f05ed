package override

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/internal/etcdrec"
)

// Pause is the pause flag. Each change raises Generation, and the highest generation readable in either
// etcd holds, so a DC that was away when the flag changed cannot bring an old value back.
type Pause struct {
	Paused     bool      `json:"paused"`
	Generation int64     `json:"generation"`
	By         string    `json:"by"`
	At         time.Time `json:"at"`
}

// Newer says whether p holds over q: a higher generation, or the same one paused.
func (p Pause) Newer(q Pause) bool {
	return p.Generation > q.Generation || (p.Generation == q.Generation && p.Paused && !q.Paused)
}

// unreadable is what a flag that is not a flag counts as: paused (when in doubt, no automatic failover),
// at generation -1 so that any flag topoha writes replaces it.
func unreadable(dc string) Pause {
	return Pause{Paused: true, Generation: -1, By: "unreadable flag in " + dc}
}

// decodePause accepts only a flag topoha wrote (generation 1 or more): `null` or `{}` are not a flag.
var decodePause = etcdrec.JSON("pause flag", func(p *Pause) bool { return p.Generation >= 1 })

// pauseCopy is the flag as one etcd holds it.
type pauseCopy struct {
	Pause
	modRevision int64 // 0: no flag there
}

// readPauses reads the flag from the given etcds at once, each read within timeout; an etcd that does not
// answer is left out, and one that holds garbage counts as paused.
func readPauses(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, timeout time.Duration) map[string]pauseCopy {
	out := map[string]pauseCopy{}
	for dc, o := range etcdrec.ReadAll(ctx, clients, timeout, "pause flag", c.Keys().Paused(), decodePause) {
		switch {
		case o.Unreachable():
		case o.Garbage():
			out[dc] = pauseCopy{unreadable(dc), o.ModRevision}
		case o.Absent():
			out[dc] = pauseCopy{}
		default:
			out[dc] = pauseCopy{*o.Record, o.ModRevision}
		}
	}
	return out
}

// ReadPause reads the flag from the given etcds at once, each within request_timeout, and returns the
// one that holds. ok is false when none could be read.
func ReadPause(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client) (p Pause, ok bool) {
	return highest(readPauses(ctx, c, clients, c.RequestTimeout))
}

func highest(copies map[string]pauseCopy) (p Pause, ok bool) {
	for _, cp := range copies {
		if !ok || cp.Newer(p) {
			p = cp.Pause
		}
		ok = true
	}
	return p, ok
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
	missed, err = putEverywhere(ctx, c, clients, c.Keys().Paused(), string(val), 0)
	return next, missed, err
}

// Memory is one controller's memory of the pause flag: the newest flag it has seen in any etcd. A pause
// written while one DC was away exists only in the other DC's etcd, and losing that DC must not lose the
// pause. The zero Memory is ready to use.
type Memory struct {
	mu   sync.Mutex
	seen Pause
}

// Saw remembers p if it is newer than what was seen (a flag this controller wrote itself).
func (m *Memory) Saw(p Pause) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.Newer(m.seen) {
		m.seen = p
	}
}

// Spread is a copy of the flag written into an etcd that held an older one, for the caller to record.
type Spread struct {
	DC    string
	Pause Pause
}

// Read returns the flag that holds, and whether automatic failover is paused: a flag that cannot be read
// anywhere counts as set. The flag that holds is the newest seen, not only what the etcds of clients hold
// now; it is also copied into every etcd that answers with an older flag or none (a compare-and-swap: a
// newer flag written meanwhile wins), so that a controller started later, or `topoha status`, reads it
// from either side. A flag that is not a flag is left for an operator to see. Each etcd call is bounded
// by timeout.
func (m *Memory) Read(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, timeout time.Duration) (Pause, bool, []Spread) {
	copies := readPauses(ctx, c, clients, timeout)
	p, ok := highest(copies)
	m.mu.Lock()
	if ok && p.Newer(m.seen) {
		m.seen = p
	}
	// A flag that is not a flag, alone, still counts as paused.
	if p.Generation >= 0 && m.seen.Newer(p) {
		p = m.seen
	}
	m.mu.Unlock()
	var spread []Spread
	if p.Generation > 0 {
		spread = spreadPause(ctx, c, clients, copies, p, timeout)
	}
	return p, !ok || p.Paused, spread
}

// spreadPause writes p into every etcd of copies that holds a valid older flag or none.
func spreadPause(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, copies map[string]pauseCopy, p Pause, timeout time.Duration) []Spread {
	val, err := json.Marshal(p)
	if err != nil {
		return nil
	}
	key := c.Keys().Paused()
	var out []Spread
	for dc, cp := range copies {
		if cp.Generation < 0 || !p.Newer(cp.Pause) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := clients[dc].Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", cp.modRevision)).
			Then(clientv3.OpPut(key, string(val))).Commit()
		cancel()
		if err == nil && resp.Succeeded {
			out = append(out, Spread{DC: dc, Pause: p})
		}
	}
	return out
}
