//go:build chaos

package chaos

// The invariant checker that every scenario ends with.
//
//	(a) the DR copy equals the primary's prefix (and `topoha verify` agrees);
//	(b) at most one DC is primary per epoch: in both etcds' records and in the whole event history;
//	(c) exactly the expected failovers happened (none while paused or in cooldown, none twice);
//	(d) nothing written by a stale epoch: what the writer put into the old primary after the epoch moved
//	    never appears in the new primary, not even for a moment (its whole history is read back);
//	(e) without a failover, the DR copy's history of every key is an ordered subsequence of the source's:
//	    nothing applied out of order, nothing resurrected (skipped where the source was compacted);
//	(f) a key put with a lease (a Vitess lock) in one DC never appears in the other, not even for a moment.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/primary"
)

// check ends a scenario: it stops the writer, waits for the cluster to converge, and checks every
// invariant, reporting each violation (the test fails) and the numbers in the scenario's row.
func (c *cluster) check(wantFailovers int) {
	c.t.Helper()
	c.row.step("checking the invariants")
	c.w.setTarget("")
	var broken []string
	violate := func(inv, format string, args ...any) {
		c.t.Helper()
		msg := fmt.Sprintf(format, args...)
		c.t.Errorf("invariant (%s) violated: %s", inv, msg)
		broken = append(broken, inv)
	}

	// (a) Both etcds must be back for the comparison; the records must agree once the leader has told the
	// returning side.
	converged := time.Now()
	keys := 0
	logged := false
	testenv.Eventually(c.t, waitLong, func() (bool, string) {
		ok, why, n := c.equal()
		keys = n
		if !ok && !logged && time.Since(converged) > 3*time.Second {
			c.t.Logf("the DR copy still differs after 3s: %s", why)
			logged = true
		}
		return ok, "the DR copy does not converge: " + why
	})
	c.row.converge = time.Since(converged)
	c.row.keys = keys
	if code, out, errOut := c.cli("verify"); code != 0 {
		violate("a", "topoha verify: exit %d\n%s%s", code, out, errOut)
	}

	// (b) and (c) from the records.
	final := c.primary()
	recs := c.records()
	for _, dc := range dcNames {
		o := recs[dc]
		if o.Err != nil {
			violate("b", "the record in %s cannot be read: %v", dc, o.Err)
			continue
		}
		if final.Epoch > 0 && (o.Record == nil || o.Record.Epoch != final.Epoch || o.Record.DC != final.DC) {
			violate("b", "%s's etcd holds %+v, the other %s at epoch %d", dc, o.Record, final.DC, final.Epoch)
		}
	}
	if a, b := recs["dc1"].Record, recs["dc2"].Record; a != nil && b != nil && a.Epoch == b.Epoch && a.DC != b.DC {
		violate("b", "epoch %d names %s in dc1's etcd and %s in dc2's", a.Epoch, a.DC, b.DC)
	}

	// (b) and (c) from the history.
	hist := c.history()
	byEpoch := map[int64]map[string]bool{0: {"dc1": true}}
	bumps := map[int64][]events.Event{}
	for _, ev := range hist {
		e, dc, ok := epochClaim(ev)
		if !ok {
			continue
		}
		if byEpoch[e] == nil {
			byEpoch[e] = map[string]bool{}
		}
		byEpoch[e][dc] = true
		if strings.HasPrefix(ev.Message, "failover: epoch bumped") {
			bumps[e] = append(bumps[e], ev)
		}
	}
	for e, dcs := range byEpoch {
		if len(dcs) > 1 {
			violate("b", "epoch %d has more than one primary in the history: %v", e, slices.Sorted(maps.Keys(dcs)))
		}
	}
	for e, evs := range bumps {
		if len(evs) > 1 {
			violate("c", "epoch %d was bumped %d times", e, len(evs))
		}
	}
	if final.Epoch != int64(wantFailovers) || len(bumps) != wantFailovers {
		violate("c", "%d failovers expected; the primary record is at epoch %d and the history has %d epoch bumps", wantFailovers, final.Epoch, len(bumps))
	}
	if wantFailovers > 0 {
		if res := c.lastFailover(final.DC); res == nil || res.Epoch != final.Epoch {
			violate("c", "no stored failover result for epoch %d in %s: %+v", final.Epoch, final.DC, res)
		}
	}
	c.row.failovers = len(bumps)

	// (d) Writes into an old primary after its epoch ended.
	everCache := map[string]map[string]bool{}
	completeCache := map[string]bool{}
	valuesEver := func(dc string) (map[string]bool, bool) {
		if _, ok := everCache[dc]; !ok {
			everCache[dc], completeCache[dc] = c.valuesEver(dc)
		}
		return everCache[dc], completeCache[dc]
	}
	ops := c.w.snapshot()
	bySeq := map[int]op{}
	for _, o := range ops {
		bySeq[o.seq] = o
	}
	stale := 0
	changes := map[int64]epochChange{}
	for e := int64(1); e <= final.Epoch; e++ {
		from, to, at, ok := c.epochChange(e, final, bumps[e])
		if !ok {
			violate("d", "epoch %d: no record of its bump to check stale writes against", e)
			continue
		}
		changes[e] = epochChange{from, to, at}
	}
	for e, ch := range changes {
		from, to, at := ch.from, ch.to, ch.at
		// A deposed primary's writes are stale until a later epoch makes it primary again; from then on
		// they are the primary's, and reach the other DC through the mirror as they should.
		var until time.Time
		for later := e + 1; later <= final.Epoch; later++ {
			if next, ok := changes[later]; ok && next.to == from {
				until = next.at
				break
			}
		}
		staleAt := func(t time.Time) bool { return t.After(at) && (until.IsZero() || t.Before(until)) }
		seen, complete := valuesEver(to)
		for _, o := range ops {
			if o.dc == from && staleAt(o.start) && o.err == nil && len(o.values) > 0 {
				stale++
			}
		}
		for v := range seen {
			dc, seq, ok := origin(v)
			if !ok || dc != from {
				continue
			}
			if o, known := bySeq[seq]; known && staleAt(o.start) {
				violate("d", "%s was written into %s after epoch %d moved the primary to %s (at %s), and reached %s", v, from, e,
					to, at.Format(time.RFC3339Nano), to)
			}
		}
		if !complete {
			c.row.note("(d) read from the final snapshot: " + to + "'s history was compacted")
		}
	}
	c.row.staleWrites = stale

	// (e) Order, where there was no failover and the source's history is whole.
	if final.Epoch == 0 {
		src, okSrc := c.keyHistory("dc1")
		dst, okDst := c.keyHistory("dc2")
		if !okSrc || !okDst {
			c.row.note("(e) skipped: history compacted")
		} else {
			bad := 0
			for k, d := range dst {
				if !isSubsequence(dedupe(d), dedupe(src[k])) {
					if bad < 3 {
						violate("e", "%s: the DR copy went %v, the source %v", k, d, src[k])
					}
					bad++
				}
			}
			c.row.ordered = len(dst)
		}
	}

	// (f) Leased keys.
	leased := 0
	for _, dc := range dcNames {
		seen, _ := valuesEver(dc)
		for _, o := range ops {
			if o.kind != "leased" || o.dc != other(dc) {
				continue
			}
			leased++
			if seen[o.values[0]] {
				violate("f", "%s=%s was put with a lease into %s and appeared in %s", o.keys[0], o.values[0], o.dc, dc)
			}
		}
	}
	c.row.leased = leased

	slices.Sort(broken)
	broken = slices.Compact(broken)
	if len(broken) == 0 {
		c.row.invariants = "yes"
	} else {
		c.row.invariants = "NO: " + strings.Join(broken, ",")
	}
	c.row.sessionLosses = c.countLogs("leadership lost: session ended")
	n, failed := c.w.stats("", time.Time{})
	c.row.writes, c.row.writesFailed = n, failed
}

// epochClaim returns the (epoch, DC) pair an event states as primary, for the events that state one.
func epochClaim(ev events.Event) (int64, string, bool) {
	var dcAttr string
	switch {
	case ev.Message == "became the leader", ev.Message == "role of this DC changed",
		strings.HasPrefix(ev.Message, "recorded the current primary in the returning DC's etcd"):
		dcAttr = "primary"
	case ev.Message == "primary changed", strings.HasPrefix(ev.Message, "failover: epoch bumped"), ev.Message == "failover done":
		dcAttr = "to"
	default:
		return 0, "", false
	}
	e, err := strconv.ParseInt(ev.Attrs["epoch"], 10, 64)
	if err != nil || ev.Attrs[dcAttr] == "" {
		return 0, "", false
	}
	return e, ev.Attrs[dcAttr], true
}

// epochChange is one epoch's move of the primary: from which DC to which, and when.
type epochChange struct {
	from, to string
	at       time.Time
}

// epochChange says which DC epoch e moved the primary from and to, and when: the record's changed_at for
// the last epoch (set before the bump), the bump event's time for earlier ones.
func (c *cluster) epochChange(e int64, final primary.Record, bumps []events.Event) (from, to string, at time.Time, ok bool) {
	if e == final.Epoch {
		return other(final.DC), final.DC, final.ChangedAt, true
	}
	if len(bumps) == 0 {
		return "", "", time.Time{}, false
	}
	ev := bumps[0]
	return ev.Attrs["from"], ev.Attrs["to"], ev.Time, true
}

// rawHistory replays every change ever made below /vt/ in dc's etcd, in order: complete is false when the
// etcd's history was compacted (then only the current keys are returned, as puts).
func (c *cluster) rawHistory(dc string) (evs []*clientv3.Event, complete bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := c.direct[dc]
	// The watch covers every key from /vt/ on; a sentinel put beyond /vt/ marks the end of the replay.
	sentinel := "~chaos/sentinel"
	resp, err := cli.Put(ctx, sentinel, time.Now().String())
	if err != nil {
		c.t.Fatalf("put the sentinel into %s: %v", dc, err)
	}
	end := resp.Header.Revision
	wch := cli.Watch(ctx, vtPrefix, clientv3.WithFromKey(), clientv3.WithRev(1))
	for wr := range wch {
		if wr.CompactRevision != 0 {
			cur, err := cli.Get(ctx, vtPrefix, clientv3.WithPrefix())
			if err != nil {
				c.t.Fatal(err)
			}
			evs = evs[:0]
			for _, kv := range cur.Kvs {
				evs = append(evs, &clientv3.Event{Type: clientv3.EventTypePut, Kv: kv})
			}
			return evs, false
		}
		if err := wr.Err(); err != nil {
			c.t.Fatalf("replay %s's history: %v", dc, err)
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision >= end {
				return evs, true
			}
			if strings.HasPrefix(string(ev.Kv.Key), vtPrefix) {
				evs = append(evs, ev)
			}
		}
	}
	c.t.Fatalf("replay %s's history: the watch ended: %v", dc, ctx.Err())
	return nil, false
}

// valuesEver returns every value ever put below /vt/ in dc's etcd.
func (c *cluster) valuesEver(dc string) (map[string]bool, bool) {
	evs, complete := c.rawHistory(dc)
	out := map[string]bool{}
	for _, ev := range evs {
		if ev.Type == clientv3.EventTypePut {
			out[string(ev.Kv.Value)] = true
		}
	}
	return out, complete
}

const deleted = "<deleted>"

// keyHistory returns, per key below /vt/, the values it took in dc's etcd in order (deleted for a
// delete); leased keys are left out. ok is false when the history was compacted.
func (c *cluster) keyHistory(dc string) (map[string][]string, bool) {
	evs, complete := c.rawHistory(dc)
	if !complete {
		return nil, false
	}
	out := map[string][]string{}
	leased := map[string]bool{}
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		switch {
		case ev.Type == clientv3.EventTypePut && ev.Kv.Lease != 0:
			leased[k] = true
		case ev.Type == clientv3.EventTypePut:
			leased[k] = false
			out[k] = append(out[k], string(ev.Kv.Value))
		case !leased[k]:
			out[k] = append(out[k], deleted)
		}
	}
	return out, true
}

// dedupe drops consecutive repeats (a full sync may write a value again).
func dedupe(s []string) []string { return slices.Compact(slices.Clone(s)) }

// isSubsequence says whether sub appears in s in order, not necessarily contiguous.
func isSubsequence(sub, s []string) bool {
	i := 0
	for _, x := range s {
		if i < len(sub) && sub[i] == x {
			i++
		}
	}
	return i == len(sub)
}
