package override

import (
	"encoding/json"
	"testing"
	"time"
)

// Whatever the pause key holds, only a flag as topoha writes it — a JSON object with "paused": false and a
// positive whole "generation" — lets automatic failover run; anything else counts as paused, so that
// garbage in etcd never enables a failover. A flag that is read keeps its generation, which orders it
// against the other DC's.
func FuzzDecodePause(f *testing.F) {
	good, _ := json.Marshal(Pause{Paused: false, Generation: 3, By: "cli:ops@host", At: time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)})
	f.Add(good)
	f.Add([]byte(`{"paused":true,"generation":1}`))
	f.Add([]byte(`{"paused":false,"generation":-5}`))
	f.Add([]byte(`{"paused":false,"generation":0}`))
	f.Add([]byte(`{"paused":"no"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		got := unreadable("dc1")
		if r, err := decodePause("/topoha/t/paused", b); err == nil {
			got = *r
		}
		var raw struct {
			Paused     *bool        `json:"paused"`
			Generation *json.Number `json:"generation"`
		}
		if got.Paused {
			return
		}
		if err := json.Unmarshal(b, &raw); err != nil || raw.Generation == nil {
			t.Fatalf("%q is not a flag but counts as not paused: %+v", b, got)
		}
		gen, err := raw.Generation.Int64()
		if err != nil || gen < 1 || gen != got.Generation || (raw.Paused != nil && *raw.Paused) {
			t.Fatalf("%q counts as not paused at generation %d", b, got.Generation)
		}
	})
}
