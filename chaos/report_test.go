//go:build chaos

package chaos

// The table the suite prints at the end: one row per scenario.

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// row is one scenario's line of the table. The scenario fills in the outcome and its own numbers, the
// checker the invariants and the common numbers.
type row struct {
	mu       sync.Mutex
	name     string
	fault    string
	outcome  string
	lastStep string
	// invariants is "yes", "NO: <which>", or empty when the checker did not run.
	invariants string
	failed     bool

	failovers    int
	keys         int
	converge     time.Duration
	staleWrites  int
	ordered      int
	writes       int
	writesFailed int
	// sessionLosses counts leaders whose election session ended under them (frozen, starved of CPU).
	sessionLosses int
	// leased counts the leased puts checked never to leave their DC.
	leased  int
	numbers []string
	notes   []string
}

var report struct {
	sync.Mutex
	rows  []*row
	start time.Time
}

// scenario runs one scenario as a subtest and records its row, also when it fails.
func scenario(t *testing.T, name, fault string, body func(t *testing.T, r *row)) {
	t.Run(name, func(t *testing.T) {
		r := &row{name: name, fault: fault}
		report.Lock()
		report.rows = append(report.rows, r)
		report.Unlock()
		start := time.Now()
		t.Cleanup(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.failed = t.Failed()
			r.numbers = append(r.numbers, "took "+round(time.Since(start)))
			if r.failed {
				r.outcome = "FAILED during: " + r.lastStep + " (see the log)"
			}
		})
		body(t, r)
	})
}

func (r *row) step(s string) {
	r.mu.Lock()
	r.lastStep = s
	r.mu.Unlock()
}

// set records the scenario's outcome.
func (r *row) set(outcome string) {
	r.mu.Lock()
	r.outcome = outcome
	r.mu.Unlock()
}

// add records a number of the scenario.
func (r *row) add(format string, args ...any) {
	r.mu.Lock()
	r.numbers = append(r.numbers, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *row) note(s string) {
	r.mu.Lock()
	r.notes = append(r.notes, s)
	r.mu.Unlock()
}

func round(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Millisecond).String()
	}
}

// table renders the rows as a Markdown table.
func table() string {
	report.Lock()
	defer report.Unlock()
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	var b strings.Builder
	mode := "full"
	if testing.Short() {
		mode = "short"
	}
	fmt.Fprintf(&b, "\n## topoha chaos suite (%s form), %s, %s in all\n\n", mode, report.start.UTC().Format(time.RFC3339), round(time.Since(report.start)))
	b.WriteString("| scenario | injected fault | outcome | invariants held | numbers |\n|---|---|---|---|---|\n")
	for _, r := range report.rows {
		r.mu.Lock()
		inv := r.invariants
		switch {
		case inv == "" && r.failed:
			inv = "not checked (failed before)"
		case inv == "":
			inv = "not checked"
		}
		var nums []string
		if r.invariants != "" {
			nums = append(nums, fmt.Sprintf("failovers %d", r.failovers), fmt.Sprintf("keys compared %d", r.keys),
				"converged in "+round(r.converge), fmt.Sprintf("writes %d (%d failed)", r.writes, r.writesFailed))
			if r.staleWrites > 0 {
				nums = append(nums, fmt.Sprintf("writes into the deposed primary after the bump %d", r.staleWrites))
			}
			if r.sessionLosses > 0 {
				nums = append(nums, fmt.Sprintf("leader session losses %d", r.sessionLosses))
			}
			if r.leased > 0 {
				nums = append(nums, fmt.Sprintf("leased puts kept out of the other DC %d", r.leased))
			}
			if r.ordered > 0 {
				nums = append(nums, fmt.Sprintf("key histories in order %d", r.ordered))
			}
		}
		nums = append(nums, r.numbers...)
		nums = append(nums, r.notes...)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", esc(r.name), esc(r.fault), esc(r.outcome), esc(inv), esc(strings.Join(nums, "; ")))
		r.mu.Unlock()
	}
	return b.String()
}

func TestMain(m *testing.M) {
	report.start = time.Now()
	code := m.Run()
	if len(report.rows) > 0 {
		out := table()
		fmt.Print(out)
		if path := os.Getenv("CHAOS_REPORT"); path != "" {
			if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
				fmt.Fprintf(os.Stderr, "CHAOS_REPORT: %v\n", err)
			}
		}
	}
	os.Exit(code)
}
