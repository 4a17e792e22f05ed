package primary

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// fuzzKey is where the fuzzed values pretend to be stored; errors must name it.
const fuzzKey = "/topoha/fuzz/primary"

// addRecordSeeds seeds f with records as WriteWith stores them, cut short, and other things an etcd key
// may hold after a bad hand edit or a bug elsewhere. args turns one value into the target's arguments.
func addRecordSeeds(f *testing.F, args func(v []byte) []any) {
	var seeds [][]byte
	for _, r := range []Record{
		{DC: "dc2", Epoch: 1, ChangedAt: time.Date(2026, 11, 24, 3, 12, 14, 123456789, time.UTC), Reason: "failover: dc1 lost"},
		{DC: "dc1", Epoch: 0, Reason: "initial_primary"},
		{DC: "dc1", Epoch: 1<<63 - 1, ChangedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", -7*3600))},
		{DC: "dc-é\u2028\"", Epoch: 42, Reason: "<switchover>\n"},
	} {
		v, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, v, v[:len(v)/2], v[:len(v)-1])
	}
	for _, s := range []string{
		"", "null", "{}", "[]", "0", `"dc1"`, "not json", "\xff\xfe",
		`{"dc":"","epoch":1}`,
		`{"dc":"dc1","epoch":-1}`,
		`{"dc":"dc1","epoch":"1"}`,
		`{"dc":"dc1","epoch":1.5}`,
		`{"dc":"dc1","epoch":9223372036854775808}`,
		`{"dc":"dc1","epoch":1,"dc":""}`,
		`{"DC":"dc2","EPOCH":3}`,
		`{"dc":"dc2","epoch":3,"changed_at":"yesterday"}`,
		`{"dc":"dc2","epoch":3,"changed_at":"9999-12-31T23:59:59.999999999-23:59"}`,
		`{"dc":"dc2","epoch":3} trailing`,
		"\ufeff" + `{"dc":"dc2","epoch":3}`,
		`{"dc":"d\xffc","epoch":2}`,
		`{"dc":null,"epoch":null}`,
	} {
		seeds = append(seeds, []byte(s))
	}
	for _, s := range seeds {
		f.Add(args(s)...)
	}
}

// checkDecoded asserts what every caller of Read relies on for one decoded value.
func checkDecoded(t *testing.T, value []byte, r *Record, err error) {
	t.Helper()
	if (r == nil) == (err == nil) {
		t.Fatalf("decode(%q) = %+v, %v: want exactly one of a record and an error", value, r, err)
	}
	if err != nil {
		// The error is what an operator reads in status warnings: it names the key and says what to do,
		// and a huge value does not make it huge.
		msg := err.Error()
		if !strings.Contains(msg, fuzzKey) || !strings.Contains(msg, "fix or delete it by hand") || len(msg) > 600 {
			t.Fatalf("decode(%q) error is not a bounded one naming the key: %q", value, msg)
		}
		return
	}
	if r.DC == "" || r.Epoch < 0 {
		t.Fatalf("decode(%q) accepted %+v: a record needs a dc and an epoch >= 0", value, r)
	}
	if !json.Valid(value) {
		t.Fatalf("decode(%q) accepted a value that is not JSON: %+v", value, r)
	}
	// What was accepted is a record WriteWith could have written: it encodes, and reads back the same.
	enc, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("accepted record %+v does not encode: %v", r, err)
	}
	back, err := decode(fuzzKey, enc)
	if err != nil {
		t.Fatalf("re-encoded record %s does not decode: %v", enc, err)
	}
	if back.DC != r.DC || back.Epoch != r.Epoch || back.Reason != r.Reason || !back.ChangedAt.Equal(r.ChangedAt) {
		t.Fatalf("round trip changed the record: %+v -> %s -> %+v", r, enc, back)
	}
}

// observe is what Read returns for a key holding value.
func observe(value []byte) Observed {
	r, err := decode(fuzzKey, value)
	return Observed{Record: r, ModRevision: 7, Err: err}
}

// FuzzDecode feeds decode whatever the primary record key might hold.
func FuzzDecode(f *testing.F) {
	addRecordSeeds(f, func(v []byte) []any { return []any{v} })
	f.Fuzz(func(t *testing.T, value []byte) {
		r, err := decode(fuzzKey, value)
		checkDecoded(t, value, r, err)
	})
}

// FuzzResolve resolves, by HeldByAny, the records two etcds hold, whatever they hold: the highest readable epoch wins,
// an unreadable record never wins, and without a record above epoch 0 the initial primary holds.
func FuzzResolve(f *testing.F) {
	good, _ := json.Marshal(Record{DC: "dc2", Epoch: 4, Reason: "failover"})
	addRecordSeeds(f, func(v []byte) []any { return []any{v, good, "dc1"} })
	addRecordSeeds(f, func(v []byte) []any { return []any{good, v, "dc2"} })
	f.Add([]byte(`{"dc":"dc1","epoch":4}`), good, "dc1") // the same epoch on both sides: split brain
	f.Add([]byte(`{"dc":"dc1","epoch":0}`), []byte("garbage"), "")
	f.Fuzz(func(t *testing.T, a, b []byte, initial string) {
		oa, ob := observe(a), observe(b)
		checkDecoded(t, a, oa.Record, oa.Err)
		checkDecoded(t, b, ob.Record, ob.Err)
		got := heldByAny(initial, oa, ob)

		var want int64
		for _, o := range []Observed{oa, ob} {
			if o.Record != nil {
				want = max(want, o.Record.Epoch)
			}
		}
		if got.Epoch != want {
			t.Fatalf("HeldByAny(%q, %+v, %+v) = %+v: want the highest readable epoch %d", initial, oa.Record, ob.Record, got, want)
		}
		if want == 0 {
			if got.DC != initial || got.Reason != "initial_primary" {
				t.Fatalf("HeldByAny(%q, %+v, %+v) = %+v: with no epoch above 0 the initial primary holds", initial, oa.Record, ob.Record, got)
			}
			return
		}
		// The winner is one of the records read, never made up; on a tie (split brain: both sides wrote
		// the same epoch) the first argument wins, and every caller passes the DCs in config order, so
		// all controllers agree on it.
		var winner *Record
		for _, o := range []Observed{oa, ob} {
			if o.Record != nil && o.Record.Epoch == want {
				winner = o.Record
				break
			}
		}
		if got != *winner {
			t.Fatalf("HeldByAny(%q, %+v, %+v) = %+v, want %+v", initial, oa.Record, ob.Record, got, *winner)
		}
		if oa.Record == nil || ob.Record == nil || oa.Record.Epoch != ob.Record.Epoch {
			if rev := heldByAny(initial, ob, oa); rev != got {
				t.Fatalf("HeldByAny depends on the order of its arguments: %+v vs %+v", got, rev)
			}
		}
	})
}
