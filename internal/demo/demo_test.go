package demo

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The demo is the README's first command: it must run to the end on a bare machine, and each of its
// steps checks its own claim.
func TestDemoRunsToTheEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	if err := Run(ctx, &out); err != nil {
		t.Fatalf("demo failed: %v\noutput:\n%s", err, out.String())
	}
	for _, want := range []string{"leased shard lock was NOT copied", "resumed from revision", `resync reason "compacted"`, "EQUAL"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
