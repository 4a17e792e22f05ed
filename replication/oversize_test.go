package replication

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/topoha/topoha/internal/testenv"
)

// withMaxRequestBytes sets the server's --max-request-bytes. testenv has no option for it; the pointer
// lets a test raise the limit across a restart, as an operator would.
func withMaxRequestBytes(n *uint) testenv.EtcdOption {
	return func(c *embed.Config) { c.MaxRequestBytes = *n }
}

// newPairWithDest is newPair with options for the destination instead of the source.
func newPairWithDest(t testing.TB, dstOpts ...testenv.EtcdOption) *pair {
	t.Helper()
	p := &pair{src: testenv.StartEtcd(t, "src"), dst: testenv.StartEtcd(t, "dst", dstOpts...), destPrefix: srcPrefix}
	p.sc, p.dc = p.src.Client(), p.dst.Client()
	return p
}

// retryLog records the mirror's "retrying" warnings: what an operator sees in the log, and how often.
type retryLog struct {
	mu    sync.Mutex
	at    []time.Time
	errs  []string
	waits []time.Duration
}

func (h *retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *retryLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *retryLog) WithGroup(string) slog.Handler            { return h }

func (h *retryLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "mirror error; retrying from the checkpoint" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.at = append(h.at, r.Time)
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "err":
			h.errs = append(h.errs, a.Value.String())
		case "retry_in":
			h.waits = append(h.waits, a.Value.Duration())
		}
		return true
	})
	return nil
}

// since returns how many retries were logged after t, and the last error and wait logged.
func (h *retryLog) since(t time.Time) (n int, lastErr string, lastWait time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, at := range h.at {
		if at.After(t) {
			n++
		}
	}
	if len(h.errs) > 0 {
		lastErr = h.errs[len(h.errs)-1]
	}
	if len(h.waits) > 0 {
		lastWait = h.waits[len(h.waits)-1]
	}
	return n, lastErr, lastWait
}

// Keys of several hundred KiB (etcd bounds a key only by the request size) are copied by the full sync
// and streamed, and deleted both ways.
func TestHugeKeysAreMirrored(t *testing.T) {
	p := newPair(t)
	huge := func(c byte) string { return srcPrefix + "huge/" + strings.Repeat(string(c), 700*1024) }
	mustPut(t, p.sc, huge('a'), "a")
	mustPut(t, p.sc, srcPrefix+"small", "s")
	mustPut(t, p.dc, huge('z'), "stale") // only in the destination: the full sync deletes it
	r := p.start(t)
	p.waitEqual(t)
	p.waitApplied(t, r)

	mustPut(t, p.sc, huge('b'), "b")
	mustDelete(t, p.sc, huge('a'))
	mustPut(t, p.sc, huge('b'), strings.Repeat("v", 100*1024))
	p.waitEqual(t)
	p.waitApplied(t, r)
	if s := r.Status(); s.Resyncs[ResyncNoCheckpoint] != 1 || len(s.Resyncs) != 1 {
		t.Errorf("full syncs %v, want the first one only: the huge keys were streamed", s.Resyncs)
	}
	rep, err := Verify(ctxT(t), p.config(), 10)
	if err != nil || !rep.Equal || !rep.AtCheckpoint {
		t.Errorf("Verify = %+v, %v; want equal at the checkpoint", rep, err)
	}
}

// A change the source accepted but the destination refuses as too large (a destination with a smaller
// --max-request-bytes) is neither skipped nor lost: the checkpoint stays below it, nothing after it is
// applied, the error names its key and revision, the mirror retries with back-off, and once the
// destination takes it, it and what followed arrive without a full sync.
func TestChangeTooLargeForTheDestination(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int // the value's size; the destination takes requests of up to 256 KiB
		// what refuses it: etcd's own check up to the limit plus 512 KiB, gRPC's above
		refusal string
	}{
		{"above the destination's limit", 300 * 1024, "request is too large"},
		{"above the destination's gRPC limit", 1024 * 1024, "larger than max"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit := uint(256 * 1024)
			p := newPairWithDest(t, withMaxRequestBytes(&limit))
			log := &retryLog{}
			mustPut(t, p.sc, srcPrefix+"a", "1")
			r := p.start(t, func(c *Config) { c.Logger = slog.New(log) })
			p.waitEqual(t)
			p.waitApplied(t, r)
			before := checkpointOf(t, p.dc).Revision

			big := mustPut(t, p.sc, srcPrefix+"big", strings.Repeat("x", tc.size)).Header.Revision
			mustPut(t, p.sc, srcPrefix+"after", "2")
			testenv.Eventually(t, 10*time.Second, func() (bool, string) {
				s := r.Status()
				ok := s.Phase == PhaseRetrying && s.LagRevisions() >= 2 &&
					strings.Contains(s.LastError, fmt.Sprintf("source revision %d", big)) &&
					strings.Contains(s.LastError, `source key "/vt/big"`) && strings.Contains(s.LastError, tc.refusal)
				return ok, fmt.Sprintf("phase %s, lag %d revisions, last error %q", s.Phase, s.LagRevisions(), s.LastError)
			})
			// The back-off reaches MaxBackoff (300ms here) and stays there: a stuck change costs a
			// retry per MaxBackoff, not a busy loop against both etcds.
			testenv.Eventually(t, 10*time.Second, func() (bool, string) {
				_, _, wait := log.since(time.Time{})
				return wait == 300*time.Millisecond, fmt.Sprintf("last retry_in %s", wait)
			})
			from := time.Now()
			testenv.Eventually(t, 10*time.Second, func() (bool, string) {
				n, _, _ := log.since(from)
				return n >= 4, fmt.Sprintf("%d retries logged", n)
			})
			if took := time.Since(from); took < 900*time.Millisecond {
				t.Errorf("4 retries took %s; with a 300ms back-off they take at least 900ms", took)
			}
			if _, lastErr, _ := log.since(from); !strings.Contains(lastErr, `source key "/vt/big"`) {
				t.Errorf("the log says %q, which does not name the key", lastErr)
			}
			if cp := checkpointOf(t, p.dc); cp.Revision != before || cp.Sync != nil {
				t.Errorf("checkpoint moved from %d to %+v while revision %d is not applied", before, cp, big)
			}
			dst := testenv.Snapshot(t, p.dc, srcPrefix)
			if _, ok := dst["big"]; ok {
				t.Error("the destination holds a key it refused")
			}
			if _, ok := dst["after"]; ok {
				t.Error("a change after the refused one was applied: the destination shows a state the source never had")
			}

			// The operator raises the destination's limit: the retries pick both changes up from the
			// checkpoint.
			limit = 2 * 1024 * 1024
			p.dst.Stop()
			p.dst.Start()
			p.waitEqual(t)
			p.waitApplied(t, r)
			if s := r.Status(); len(s.Resyncs) != 1 {
				t.Errorf("full syncs %v, want only the first: the checkpoint was good", s.Resyncs)
			}
		})
	}
}

// A key too large for the destination stops a full sync before it claims completion: the checkpoint
// stays a sync checkpoint and the error names the key. Once the destination takes it, the sync ends equal.
func TestFullSyncStopsAtAKeyTooLargeForTheDestination(t *testing.T) {
	limit := uint(256 * 1024)
	p := newPairWithDest(t, withMaxRequestBytes(&limit))
	fill(t, p.sc, "a/", 50, "x")
	mustPut(t, p.sc, srcPrefix+"b/big", strings.Repeat("x", 300*1024))
	fill(t, p.sc, "c/", 50, "x")
	r := p.start(t)
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		s := r.Status()
		ok := s.Phase == PhaseRetrying && strings.Contains(s.LastError, "full sync at source revision") &&
			strings.Contains(s.LastError, `source key "/vt/b/big"`) && strings.Contains(s.LastError, "too large")
		return ok, fmt.Sprintf("phase %s, last error %q", s.Phase, s.LastError)
	})
	if cp := checkpointOf(t, p.dc); cp == nil || cp.Sync == nil || cp.Revision != 0 {
		t.Errorf("checkpoint %+v claims a sync that did not copy b/big", cp)
	}
	if r.Status().AppliedRevision != 0 {
		t.Errorf("applied revision %d during a sync that cannot end", r.Status().AppliedRevision)
	}

	limit = 2 * 1024 * 1024
	p.dst.Stop()
	p.dst.Start()
	p.waitEqual(t)
	p.waitApplied(t, r)
}

// A destination that takes less than MaxTxnBytes (1 MiB) in a request refuses transactions of changes
// that each fit. The mirror then writes smaller transactions, in the full sync and for one source
// revision larger than the destination takes, instead of failing on the same one forever.
func TestTransactionsShrinkToWhatTheDestinationTakes(t *testing.T) {
	limit := uint(512 * 1024)
	p := newPairWithDest(t, withMaxRequestBytes(&limit))
	value := strings.Repeat("y", 100*1024)
	for i := range 8 {
		mustPut(t, p.sc, fmt.Sprintf("%ssynced/%d", srcPrefix, i), value)
	}
	r := p.start(t)
	p.waitEqual(t)
	p.waitApplied(t, r)
	if s := r.Status(); !strings.Contains(s.LastError, "retrying in smaller transactions") {
		t.Errorf("last error %q; want the refused transaction of the full sync", s.LastError)
	}

	// One source revision of 800 KiB: applied in parts, each of whole changes.
	var ops []clientv3.Op
	for i := range 8 {
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("%sstreamed/%d", srcPrefix, i), value))
	}
	if _, err := p.sc.Txn(ctxT(t)).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
	p.waitEqual(t)
	p.waitApplied(t, r)
	if s := r.Status(); len(s.Resyncs) != 1 {
		t.Errorf("full syncs %v, want only the first", s.Resyncs)
	}
}

// The other way past a change the destination refuses: the key is made smaller in the source and the
// source compacted past the refused revision. The watch cannot replay it any more, so a full sync copies
// the source as it is now.
func TestTooLargeChangeIsPassedByCompaction(t *testing.T) {
	limit := uint(256 * 1024)
	p := newPairWithDest(t, withMaxRequestBytes(&limit))
	// A batch smaller than the refused change: the smaller value put later never lands in its batch,
	// where it would replace the refused one and let the mirror pass without a compaction.
	r := p.start(t, func(c *Config) { c.MaxTxnBytes = 64 * 1024 })
	p.waitApplied(t, r)
	mustPut(t, p.sc, srcPrefix+"big", strings.Repeat("x", 300*1024))
	mustPut(t, p.sc, srcPrefix+"after", "1")
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		s := r.Status()
		return strings.Contains(s.LastError, "compacted past this revision"), fmt.Sprintf("last error %q", s.LastError)
	})
	mustPut(t, p.sc, srcPrefix+"big", "small now")
	// Changing the key alone is not enough: the refused revision is still in the source's history, and a
	// retry after the change fails on it again.
	changed := time.Now()
	testenv.Eventually(t, 10*time.Second, func() (bool, string) {
		s := r.Status()
		return s.LastErrorAt.After(changed) && strings.Contains(s.LastError, `source key "/vt/big"`), fmt.Sprintf("last error %q at %s", s.LastError, s.LastErrorAt)
	})
	if ok, _ := p.equal(t); ok {
		t.Fatal("equal before the compaction")
	}
	p.src.Compact(ctxT(t))
	p.waitEqual(t)
	p.waitApplied(t, r)
	if n := r.Status().Resyncs[ResyncCompacted]; n != 1 {
		t.Errorf("full syncs %v, want one for the compaction", r.Status().Resyncs)
	}
}
