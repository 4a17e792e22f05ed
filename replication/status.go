package replication

import (
	"maps"
	"time"
)

// Phase is what the mirror is doing.
type Phase string

// Phases of a Mirror.
const (
	PhaseStarting  Phase = "starting"
	PhaseSyncing   Phase = "syncing"   // full sync: the destination mixes old and new keys until it ends
	PhaseStreaming Phase = "streaming" // applying watch events; the destination equals the source at AppliedRevision
	PhaseRetrying  Phase = "retrying"  // an error; backing off before resuming from the checkpoint
	PhaseFenced    Phase = "fenced"    // a fence condition failed; Run has returned ErrFenced
	PhaseStopped   Phase = "stopped"
)

// Status is a snapshot of a Mirror's progress, for metrics and status output.
type Status struct {
	Phase           Phase
	SourceClusterID string
	// SourceRevision is the highest source revision seen in any response header.
	SourceRevision int64
	// AppliedRevision is the source revision the destination is complete up to (0 during a full sync).
	AppliedRevision int64
	// CaughtUpAt is the last time AppliedRevision reached SourceRevision; now minus it is the lag in time.
	CaughtUpAt time.Time
	// StartedAt is when the mirror started: until it first catches up, the lag is at least now minus it.
	StartedAt     time.Time
	KeysApplied   uint64  // puts and deletes written to the destination
	Transactions  uint64  // destination transactions committed
	KeysPerSecond float64 // over the last rateWindowSpan
	// Resyncs counts full syncs by reason (Resync* constants).
	Resyncs map[string]uint64
	// Conflicts counts writes refused because another writer changed the checkpoint.
	Conflicts   uint64
	LastError   string
	LastErrorAt time.Time
}

// LagSeconds is how long ago the destination was last known to hold everything the source had; before
// the mirror first caught up, how long it has run.
func (s Status) LagSeconds(now time.Time) float64 {
	since := s.CaughtUpAt
	if since.IsZero() {
		since = s.StartedAt
	}
	return now.Sub(since).Seconds()
}

// LagRevisions is how many source revisions are not yet known to be applied.
func (s Status) LagRevisions() int64 { return max(0, s.SourceRevision-s.AppliedRevision) }

// Status returns a snapshot of the mirror's progress. It is safe to call from any goroutine.
func (m *Mirror) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.status
	s.Resyncs = maps.Clone(m.status.Resyncs)
	s.KeysPerSecond = m.rate.perSecond(time.Now())
	return s
}

func (m *Mirror) update(f func(*Status)) {
	m.mu.Lock()
	f(&m.status)
	m.mu.Unlock()
}

func (m *Mirror) setPhase(p Phase) { m.update(func(s *Status) { s.Phase = p }) }

func (m *Mirror) recordError(err error) {
	if err == nil {
		return
	}
	m.update(func(s *Status) {
		s.LastError = err.Error()
		s.LastErrorAt = time.Now()
	})
}

func (m *Mirror) noteSourceRevision(rev int64) {
	m.update(func(s *Status) {
		s.SourceClusterID = clusterIDString(m.clusterID)
		s.SourceRevision = max(s.SourceRevision, rev)
		if s.AppliedRevision >= s.SourceRevision {
			s.CaughtUpAt = time.Now()
		}
	})
}

// setApplied moves the applied revision, in memory and in Status.
func (m *Mirror) setApplied(rev int64) {
	m.applied = rev
	m.update(func(s *Status) {
		s.AppliedRevision = rev
		if rev >= s.SourceRevision && rev > 0 {
			s.CaughtUpAt = time.Now()
		}
	})
}

func (m *Mirror) noteCommit(keys int) {
	now := time.Now()
	m.mu.Lock()
	m.status.KeysApplied += uint64(keys)
	m.status.Transactions++
	m.rate.add(now, keys)
	m.mu.Unlock()
}

const rateWindowSpan = 10 * time.Second

// rateWindow turns commits into a rate over the last rateWindowSpan.
type rateWindow struct {
	samples []rateSample
}

type rateSample struct {
	at time.Time
	n  int
}

func (w *rateWindow) add(now time.Time, n int) {
	w.trim(now)
	w.samples = append(w.samples, rateSample{now, n})
}

func (w *rateWindow) trim(now time.Time) {
	i := 0
	for i < len(w.samples) && now.Sub(w.samples[i].at) > rateWindowSpan {
		i++
	}
	w.samples = w.samples[i:]
}

func (w *rateWindow) perSecond(now time.Time) float64 {
	w.trim(now)
	total := 0
	for _, s := range w.samples {
		total += s.n
	}
	return float64(total) / rateWindowSpan.Seconds()
}
