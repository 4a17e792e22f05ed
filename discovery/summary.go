package discovery

import (
	"fmt"
	"strings"
	"time"
)

// Summary is a plan in a few lines: what `topoha status` shows, the metrics count and the events tell.
type Summary struct {
	To         string    `json:"to"`
	ComputedAt time.Time `json:"computed_at"`
	Shards     int       `json:"shards"`
	Ready      int       `json:"ready"`
	NotReady   int       `json:"not_ready"`
	// Problems are the plan's own (they stop every shard), then the first shards that cannot fail over,
	// each as "keyspace/shard: problem"; Truncated counts those left out.
	Problems  []string `json:"problems,omitempty"`
	Truncated int      `json:"problems_truncated,omitempty"`
}

// Summarize returns p's summary, with at most limit problems.
func (p *Plan) Summarize(limit int) Summary {
	s := Summary{To: p.To, ComputedAt: p.ComputedAt, Shards: len(p.Shards)}
	s.Ready, s.NotReady = p.Counts()
	add := func(problem string) {
		if len(s.Problems) < limit {
			s.Problems = append(s.Problems, problem)
		} else {
			s.Truncated++
		}
	}
	for _, problem := range p.Problems {
		add(problem)
	}
	for _, sh := range p.Shards {
		if !sh.Ready() {
			why := "no tablet to promote"
			if len(sh.Problems) > 0 {
				why = strings.Join(sh.Problems, "; ")
			}
			add(sh.ID() + ": " + why)
		}
	}
	return s
}

// AllReady says whether a failover now would promote every shard (see Plan.Ready).
func (s Summary) AllReady() bool { return s.Shards > 0 && s.NotReady == 0 && len(s.Problems) == 0 }

// Line is the summary as the PLAN line of `topoha status` words it, e.g. "256 shards: 255 ready for dc2,
// 1 not (customer/80-: no REPLICA in dc2's cells (dc2): ...)".
func (s Summary) Line() string {
	line := fmt.Sprintf("%d shards: %d ready for %s", s.Shards, s.Ready, s.To)
	if s.AllReady() {
		return line
	}
	line += fmt.Sprintf(", %d not", s.NotReady)
	if len(s.Problems) > 0 {
		line += " (" + strings.Join(s.Problems, "; ")
		if s.Truncated > 0 {
			line += fmt.Sprintf("; and %d more: topoha plan lists them", s.Truncated)
		}
		line += ")"
	}
	return line
}
