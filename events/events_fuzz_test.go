package events

import (
	"bytes"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"
)

const fuzzPrefix = "/topoha/fuzz/history/"

// FuzzDecode feeds decode whatever a history key might hold: an event is accepted only as Recorder.put
// writes it, reads back unchanged when encoded again, and prints as one line of `topoha history`.
func FuzzDecode(f *testing.F) {
	at := time.Date(2026, 11, 24, 3, 12, 14, 123456789, time.UTC)
	for _, ev := range []Event{
		{ID: "01764000000123456789-ctl-a-1", Time: at, Level: "INFO", Kind: KindFailover, Controller: "ctl-a", DC: "dc1",
			Message: "failover: promoted", Attrs: map[string]string{"to": "dc2", "took": "1.5s", "shards": "commerce/-80 commerce/80-"}},
		{ID: "01764000000123456790-ctl-b-7", Time: at.In(time.FixedZone("", 5*3600+1800)), Level: "WARN", Kind: KindHealth, Controller: "ctl-b", DC: "-", Message: ""},
		{ID: "x", Time: time.Unix(0, 1).UTC(), Kind: "unknown-kind", Attrs: map[string]string{"": "", "k": "a=\"b\"\n"}},
	} {
		v, err := json.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		for _, s := range [][]byte{v, v[:len(v)/2], v[:len(v)-1]} {
			f.Add(ev.ID, s)
		}
		f.Add("another-id", v) // moved to another key
	}
	for _, s := range []string{
		"", "null", "{}", "[]", "0", "{not json", `"an event"`,
		`{"id":"0-garbage"}`,
		`{"id":"0-garbage","time":"0001-01-01T00:00:00Z"}`,
		`{"id":"0-garbage","time":"2026-11-24T03:12:14Z","attrs":{"a":1}}`,
		`{"id":"0-garbage","time":"2026-11-24T03:12:14Z","attrs":null,"message":"two\nlines"}`,
		`{"id":"0-garbage","time":"2026-11-24T03:12:14Z","controller":"c\r\n2026-01-01T00:00:00.000Z  INFO   failover","attrs":{"a\nb":"c"}}`,
		`{"id":"0-garbage","time":"` + strings.Repeat("9", 3000) + `"}`,
	} {
		f.Add("0-garbage", []byte(s))
	}
	f.Fuzz(func(t *testing.T, name string, value []byte) {
		key := []byte(fuzzPrefix + name)
		ev, err := decode(fuzzPrefix, key, value)
		if err != nil {
			// Read joins one such error per bad key into what `topoha history` prints: it names the
			// key and stays short whatever the value holds.
			msg := err.Error()
			if !strings.Contains(msg, "is not an event") || (len(key) <= 200 && !strings.Contains(msg, string(key))) || len(msg) > 1024 {
				t.Fatalf("decode(%q, %q) error is not a bounded one naming the key: %q", name, value, msg)
			}
			if ev.ID != "" || !ev.Time.IsZero() || ev.Attrs != nil {
				t.Fatalf("decode(%q, %q) returned %+v with its error", name, value, ev)
			}
			return
		}
		if !json.Valid(value) {
			t.Fatalf("decode(%q, %q) accepted a value that is not JSON: %+v", name, value, ev)
		}
		// Read merges the DCs' histories by key, and the key is the ID: an accepted event is the one its
		// key names, at a time.
		if ev.ID != name || ev.Time.IsZero() {
			t.Fatalf("decode(%q, %q) accepted %+v", name, value, ev)
		}
		enc, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("accepted event %+v does not encode: %v", ev, err)
		}
		back, err := decode(fuzzPrefix, key, enc)
		if err != nil {
			t.Fatalf("re-encoded event %s does not decode: %v", enc, err)
		}
		if back.ID != ev.ID || !back.Time.Equal(ev.Time) || back.Level != ev.Level || back.Kind != ev.Kind ||
			back.Controller != ev.Controller || back.DC != ev.DC || back.Message != ev.Message || !maps.Equal(back.Attrs, ev.Attrs) {
			t.Fatalf("round trip changed the event: %+v -> %s -> %+v", ev, enc, back)
		}
		// `topoha history` is read line by line (grep, tail): whatever an event holds, it prints as one.
		var out bytes.Buffer
		WriteText(&out, []Event{ev, ev})
		if lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); len(lines) != 2 || lines[0] != lines[1] || strings.ContainsRune(out.String(), '\r') {
			t.Fatalf("two copies of %+v print as %d lines: %q", ev, len(lines), out.String())
		}
	})
}
