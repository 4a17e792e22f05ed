package primary

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/internal/testenv"
)

const key = "/topoha/test/primary"

func TestResolveHighestEpochWins(t *testing.T) {
	dc1 := Observed{Record: &Record{DC: "dc1", Epoch: 1}}
	dc2 := Observed{Record: &Record{DC: "dc2", Epoch: 2}}
	for name, tc := range map[string]struct {
		obs  []Observed
		want Record
	}{
		"no record anywhere":        {[]Observed{{}, {}}, Record{DC: "dc1", Epoch: 0}},
		"one side unreachable":      {[]Observed{{Err: context.DeadlineExceeded}, dc2}, Record{DC: "dc2", Epoch: 2}},
		"stale side returns":        {[]Observed{dc1, dc2}, Record{DC: "dc2", Epoch: 2}},
		"order does not matter":     {[]Observed{dc2, dc1}, Record{DC: "dc2", Epoch: 2}},
		"garbage is not a record":   {[]Observed{{Err: context.Canceled, ModRevision: 5}, {}}, Record{DC: "dc1", Epoch: 0}},
		"epoch 0 record is initial": {[]Observed{{Record: &Record{DC: "dc2", Epoch: 0}}}, Record{DC: "dc1", Epoch: 0}},
	} {
		got := Resolve("dc1", tc.obs...)
		if got.DC != tc.want.DC || got.Epoch != tc.want.Epoch {
			t.Errorf("%s: Resolve = %s@%d, want %s@%d", name, got.DC, got.Epoch, tc.want.DC, tc.want.Epoch)
		}
	}
}

func TestWriteIsCompareAndSwap(t *testing.T) {
	cli := testenv.StartEtcd(t, "dc").Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	none := Read(ctx, cli, key)
	if none.Err != nil || none.Record != nil {
		t.Fatalf("empty etcd: %+v", none)
	}
	ok, err := Write(ctx, cli, key, Record{DC: "dc2", Epoch: 1, Reason: "failover"}, none)
	if err != nil || !ok {
		t.Fatalf("first write: %v %v", ok, err)
	}
	// A second writer that read the same empty state must not overwrite epoch 1.
	ok, err = Write(ctx, cli, key, Record{DC: "dc1", Epoch: 1, Reason: "stale"}, none)
	if err != nil || ok {
		t.Fatalf("a stale writer succeeded: %v %v", ok, err)
	}
	got := Read(ctx, cli, key)
	if got.Record == nil || got.Record.DC != "dc2" || got.Record.Epoch != 1 || got.ModRevision == 0 {
		t.Fatalf("record = %+v", got)
	}
	if _, err := cli.Put(ctx, key, "not json"); err != nil {
		t.Fatal(err)
	}
	bad := Read(ctx, cli, key)
	if bad.Err == nil || bad.Record != nil || !strings.Contains(bad.Err.Error(), "fix or delete it") {
		t.Errorf("garbage record read as %+v", bad)
	}
}
