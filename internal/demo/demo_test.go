package demo

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/internal/testenv"
)

// The demo is the README's first command: it must run to the end on a bare machine, and each of its
// steps checks its own claim.
func TestDemoRunsToTheEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	promoter := []string{testenv.Binary(t), "demo-promote"}
	if err := Run(ctx, &out, promoter); err != nil {
		t.Fatalf("demo failed: %v\noutput:\n%s", err, out.String())
	}
	for _, want := range []string{"leased shard lock was NOT copied", "resumed from revision", `resync reason "compacted"`, "EQUAL",
		"lock keys without a lease deleted: [/vt/keyspaces/commerce/shards/80-/locks/7587890123456789012]",
		"commerce/-80: promote command ran, the Shard record now names dc2-0000000101",
		"primary dc2 (epoch 1)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
