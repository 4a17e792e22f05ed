package replication

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// The mirror whose checkpoints the fuzz targets decode: its source cluster and scope.
const fuzzClusterID = 0x8e9e05c52164694d

var fuzzScope = scope{prefix: "/vt/", destPrefix: "/vt/", exclude: []string{"/vt/local/"}}

// addCheckpointSeeds seeds f with checkpoints as commit writes them, cut short, and other things the
// checkpoint key may hold after a bad hand edit. args turns one value into the target's arguments.
func addCheckpointSeeds(f *testing.F, args func(v []byte) []any) {
	at := time.Date(2026, 11, 24, 3, 12, 14, 5, time.UTC)
	id, sc := clusterIDString(fuzzClusterID), fuzzScope.fingerprint()
	var seeds [][]byte
	for _, cp := range []Checkpoint{
		{Revision: 1234, ClusterID: id, Scope: sc, UpdatedAt: at},
		{ClusterID: id, Scope: sc, Sync: &SyncProgress{Revision: 99, NextKey: []byte("/vt/keyspaces/commerce/shards/-80/Shard")}, UpdatedAt: at},
		{ClusterID: id, Scope: sc, Sync: &SyncProgress{Revision: 5, NextKey: []byte("/vt/\x00\xff")}},
		{Revision: 1<<63 - 1, ClusterID: "1", Scope: `"/a/"->"/b/" exclude=[] rewrite="cellinfo"`},
	} {
		v, err := json.Marshal(cp)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, v, v[:len(v)/2], v[:len(v)-1])
	}
	scJSON, _ := json.Marshal(sc)
	for _, s := range []string{
		"", "null", "{}", "[]", "0", "not json",
		`{"revision": "not a number"`, // TestGarbageCheckpointMeansFullSync's
		// Parses, but resuming from it would skip changes: an operator "resetting" the checkpoint.
		`{"revision":0,"cluster_id":"` + id + `","scope":` + string(scJSON) + `}`,
		`{"revision":-5,"cluster_id":"` + id + `","scope":` + string(scJSON) + `}`,
		`{"revision":10,"cluster_id":"","scope":` + string(scJSON) + `}`,
		`{"revision":10,"cluster_id":"` + id + `"}`,
		`{"cluster_id":"` + id + `","scope":` + string(scJSON) + `,"sync":{"revision":0,"next_key":"L3Z0Lw=="}}`,
		`{"revision":7,"cluster_id":"` + id + `","scope":` + string(scJSON) + `,"sync":{"revision":7,"next_key":null}}`,
		`{"revision":10,"cluster_id":"` + id + `","scope":` + string(scJSON) + `,"sync":null}`,
		`{"revision":10,"cluster_id":"x","scope":"y","sync":{"revision":3,"next_key":"not base64!"}}`,
		`{"revision":10,"cluster_id":"x","scope":"y","updated_at":"` + strings.Repeat("9", 3000) + `"}`,
		`{"revision":1` + strings.Repeat("0", 3000) + `,"cluster_id":"x","scope":"y"}`,
	} {
		seeds = append(seeds, []byte(s))
	}
	for _, s := range seeds {
		f.Add(args(s)...)
	}
}

// checkCheckpoint asserts what the mirror, Verify and status rely on for one decoded value.
func checkCheckpoint(t *testing.T, value []byte, cp *Checkpoint, err error) {
	t.Helper()
	if (cp == nil) == (err == nil) {
		t.Fatalf("decodeCheckpoint(%q) = %+v, %v: want exactly one of a checkpoint and an error", value, cp, err)
	}
	if err != nil {
		// runOnce tells a bad checkpoint (full sync) from a failed read (retry) by errBadCheckpoint; the
		// message lands in logs and status warnings, so a huge value must not make it huge.
		if !errors.Is(err, errBadCheckpoint) || !strings.Contains(err.Error(), cpKey) || len(err.Error()) > 1024 {
			t.Fatalf("decodeCheckpoint(%q) error is not a bounded errBadCheckpoint naming the key: %q", value, err)
		}
		return
	}
	if !json.Valid(value) {
		t.Fatalf("decodeCheckpoint(%q) accepted a value that is not JSON: %+v", value, cp)
	}
	if cp.ClusterID == "" || cp.Scope == "" {
		t.Fatalf("decodeCheckpoint(%q) accepted %+v without a source cluster or scope", value, cp)
	}
	if cp.Sync == nil && cp.Revision <= 0 {
		t.Fatalf("decodeCheckpoint(%q) accepted %+v: nothing to resume from", value, cp)
	}
	if cp.Sync != nil && (cp.Sync.Revision <= 0 || cp.Revision != 0) {
		t.Fatalf("decodeCheckpoint(%q) accepted a full sync %+v at revision %d with applied revision %d", value, cp, cp.Sync.Revision, cp.Revision)
	}
	// An accepted checkpoint is one commit could have written: it encodes and reads back the same.
	enc, err := json.Marshal(cp)
	if err != nil {
		t.Fatalf("accepted checkpoint %+v does not encode: %v", cp, err)
	}
	back, err := decodeCheckpoint(cpKey, enc)
	if err != nil {
		t.Fatalf("re-encoded checkpoint %s does not decode: %v", enc, err)
	}
	if !sameCheckpoint(cp, back) {
		t.Fatalf("round trip changed the checkpoint: %+v -> %s -> %+v", cp, enc, back)
	}
}

func sameCheckpoint(a, b *Checkpoint) bool {
	if a.Revision != b.Revision || a.ClusterID != b.ClusterID || a.Scope != b.Scope || !a.UpdatedAt.Equal(b.UpdatedAt) || (a.Sync == nil) != (b.Sync == nil) {
		return false
	}
	return a.Sync == nil || (a.Sync.Revision == b.Sync.Revision && bytes.Equal(a.Sync.NextKey, b.Sync.NextKey))
}

// FuzzDecodeCheckpoint feeds decodeCheckpoint whatever the checkpoint key might hold, and has the
// mirror decide from it as runOnce does.
func FuzzDecodeCheckpoint(f *testing.F) {
	addCheckpointSeeds(f, func(v []byte) []any { return []any{v, int64(5000)} })
	f.Fuzz(func(t *testing.T, value []byte, sourceRev int64) {
		if sourceRev < 1 {
			return // etcd's revisions start at 1
		}
		cp, err := decodeCheckpoint(cpKey, value)
		checkCheckpoint(t, value, cp, err)

		m := &Mirror{clusterID: fuzzClusterID, scope: fuzzScope}
		reason := m.resyncReason(cp, sourceRev)
		switch {
		case err != nil:
			if reason != ResyncNoCheckpoint {
				t.Fatalf("unreadable checkpoint %q: resync reason %q, want %q", value, reason, ResyncNoCheckpoint)
			}
		case reason != "":
		case cp.Sync != nil:
			// Resuming a sync re-reads the source at the sync's revision, which must still be one the
			// source had.
			if cp.Sync.Revision < 1 || cp.Sync.Revision > sourceRev {
				t.Fatalf("resuming a full sync at revision %d of a source at %d (%q)", cp.Sync.Revision, sourceRev, value)
			}
		default:
			// Streaming from the checkpoint is what skips the full sync: it must name a revision the
			// source had, else the watch starts at the source's current revision and what the
			// destination lacks is never copied.
			if cp.Revision < 1 || cp.Revision > sourceRev {
				t.Fatalf("streaming from revision %d of a source at %d (%q)", cp.Revision, sourceRev, value)
			}
		}
	})
}

// FuzzCheckpointRoundTrip encodes checkpoints the way commit does and decodes them: every checkpoint the
// mirror writes reads back unchanged, so a restart resumes where it stopped.
func FuzzCheckpointRoundTrip(f *testing.F) {
	f.Add(int64(1234), false, int64(0), []byte(nil), uint64(fuzzClusterID), int64(1764000000123456789))
	f.Add(int64(0), true, int64(99), []byte("/vt/keyspaces/commerce/"), uint64(1), int64(0))
	f.Add(int64(0), true, int64(2), []byte("/vt/\x00\xff\xfe"), uint64(1<<64-1), int64(-1))
	f.Fuzz(func(t *testing.T, rev int64, syncing bool, syncRev int64, nextKey []byte, cluster uint64, updatedNanos int64) {
		m := &Mirror{clusterID: cluster, scope: fuzzScope}
		cp := Checkpoint{Revision: rev}
		if syncing {
			cp = Checkpoint{Sync: &SyncProgress{Revision: syncRev, NextKey: nextKey}}
		}
		if (syncing && syncRev < 1) || (!syncing && rev < 1) {
			return // commit is never asked to write these
		}
		// What commit adds; UpdatedAt is time.Now().UTC() there.
		cp.ClusterID, cp.Scope = clusterIDString(m.clusterID), m.scope.fingerprint()
		cp.UpdatedAt = time.Unix(0, updatedNanos).UTC()
		val, err := json.Marshal(cp)
		if err != nil {
			t.Fatalf("encode %+v: %v", cp, err)
		}
		got, err := decodeCheckpoint(cpKey, val)
		if err != nil {
			t.Fatalf("the checkpoint %s commit writes does not decode: %v", val, err)
		}
		if !sameCheckpoint(&cp, got) {
			t.Fatalf("round trip changed the checkpoint: %+v -> %s -> %+v", cp, val, got)
		}
		if reason := m.resyncReason(got, max(rev, syncRev)); reason != "" {
			t.Fatalf("the mirror's own checkpoint %s does not resume: %s", val, reason)
		}
	})
}
