package failover

import (
	"fmt"
	"strings"
	"testing"

	"github.com/topoha/topoha/keys"
)

func progressOf(shards int, problem string) *Progress {
	p := &Progress{Epoch: 2}
	for i := range shards {
		t := Target{Keyspace: "commerce", Shard: fmt.Sprintf("%04x-", i), Tablet: fmt.Sprintf("dc2-%010d", i),
			Candidates: []string{fmt.Sprintf("dc2-%010d", i)}, Ignore: []string{fmt.Sprintf("dc1-%010d", i)}}
		if problem != "" {
			t.Problems = []string{problem}
		}
		p.Targets = append(p.Targets, t)
	}
	return p
}

// The epoch bump writes every target in one etcd request. Past the limit the targets' problems go (a
// failover is not refused for its commentary); a record still too large is refused with the reason,
// before etcd refuses it with "request is too large".
func TestProgressHeaderStaysWithinOneRequest(t *testing.T) {
	long := strings.Repeat("x", maxProblemBytes)
	if _, err := progressOf(100, long).startOps(keys.For("t")); err != nil {
		t.Fatalf("100 shards: %v", err)
	}
	p := progressOf(4000, long)
	ops, err := p.startOps(keys.For("t"))
	if err != nil {
		t.Fatalf("4,000 shards with a problem each: %v", err)
	}
	if got := len(ops[0].ValueBytes()); got > maxHeaderBytes || len(p.Targets[0].Problems) != 0 {
		t.Errorf("4,000 shards: header %d bytes, first target's problems %q; want at most %d bytes and none", got, p.Targets[0].Problems, maxHeaderBytes)
	}
	if _, err := progressOf(20000, "").startOps(keys.For("t")); err == nil || !strings.Contains(err.Error(), "for 20000 shards") {
		t.Errorf("20,000 shards: err %v, want the record refused naming the shard count", err)
	}
}
