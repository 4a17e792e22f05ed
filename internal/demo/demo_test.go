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
		"the leader's plan, read from dc2's copy of the topo: 2 shards: 2 ready for dc2",
		"commerce/80-: would promote dc2-0000000201 (candidates dc2-0000000201,dc2-0000000202; --ignore-replicas dc1-0000000200)",
		"primary dc2 (epoch 1)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	// The demo's records are Vitess records: nothing it prints may say one cannot be decoded.
	for _, bad := range []string{"decode", "cannot parse", "no CellInfo"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("demo output mentions %q: its own records are not what Vitess writes:\n%s", bad, out.String())
		}
	}
}
