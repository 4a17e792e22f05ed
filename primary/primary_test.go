package primary

import (
	"context"
	"fmt"
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
		got := heldByAny("dc1", tc.obs...)
		if got.DC != tc.want.DC || got.Epoch != tc.want.Epoch {
			t.Errorf("%s: HeldByAny = %s@%d, want %s@%d", name, got.DC, got.Epoch, tc.want.DC, tc.want.Epoch)
		}
	}
}

// heldByAny is HeldByAny over observations in the order given, named d0, d1, ...
func heldByAny(initial string, obs ...Observed) Record {
	dcs, m := named(obs)
	return HeldByAny(initial, dcs, m)
}

func named(obs []Observed) ([]string, map[string]Observed) {
	var dcs []string
	m := map[string]Observed{}
	for i, o := range obs {
		dc := fmt.Sprintf("d%d", i)
		dcs = append(dcs, dc)
		m[dc] = o
	}
	return dcs, m
}

// TestHeldByEveryNeedsEveryDC is the rule for acting on the direction: a DC that did not answer, or holds
// garbage, may hold a newer epoch, so no record holds; a DC with no record at all is an answer.
func TestHeldByEveryNeedsEveryDC(t *testing.T) {
	dc2 := Observed{Record: &Record{DC: "d1", Epoch: 2}}
	for name, tc := range map[string]struct {
		obs     []Observed
		want    Record
		wantErr string
	}{
		"both answered":        {[]Observed{{Record: &Record{DC: "d0", Epoch: 1}}, dc2}, Record{DC: "d1", Epoch: 2}, ""},
		"no record anywhere":   {[]Observed{{}, {}}, Record{DC: "d0", Epoch: 0}, ""},
		"one side unreachable": {[]Observed{{Err: context.DeadlineExceeded}, dc2}, Record{}, "d0's primary record"},
		"garbage on one side":  {[]Observed{dc2, {Err: context.Canceled, ModRevision: 5}}, Record{}, "d1's primary record"},
		"a DC not read":        {[]Observed{dc2}, Record{}, "d9's primary record was not read"},
	} {
		dcs, m := named(tc.obs)
		if name == "a DC not read" {
			dcs = append(dcs, "d9")
		}
		got, err := HeldByEvery("d0", dcs, m)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: err = %v, want one naming %q", name, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || got.DC != tc.want.DC || got.Epoch != tc.want.Epoch):
			t.Errorf("%s: HeldByEvery = %s@%d, %v; want %s@%d", name, got.DC, got.Epoch, err, tc.want.DC, tc.want.Epoch)
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
