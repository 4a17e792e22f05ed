package testenv

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/internal/embedetcd"
)

// Eventually polls cond until it returns true or timeout passes; then the test fails with cond's last
// explanation. Tests wait for conditions this way instead of sleeping.
func Eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %s", timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Snapshot returns the keys and values below prefix, with the prefix cut off the keys, skipping keys bound
// to a lease.
func Snapshot(t testing.TB, c *clientv3.Client, prefix string) map[string]string {
	t.Helper()
	out, err := TrySnapshot(c, prefix, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TrySnapshot is Snapshot within timeout, returning the error: for a poll that must survive a read sent
// to a hung member.
func TrySnapshot(c *clientv3.Client, prefix string, timeout time.Duration) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", prefix, err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if kv.Lease == 0 {
			out[string(kv.Key)[len(prefix):]] = string(kv.Value)
		}
	}
	return out, nil
}

// DescribeDiff says how dst differs from src ("" when equal), listing up to five keys.
func DescribeDiff(src, dst map[string]string) string {
	var diffs []string
	for k, v := range src {
		if dv, ok := dst[k]; !ok {
			diffs = append(diffs, "missing "+k)
		} else if dv != v {
			diffs = append(diffs, "different "+k)
		}
	}
	for k := range dst {
		if _, ok := src[k]; !ok {
			diffs = append(diffs, "extra "+k)
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	sort.Strings(diffs)
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("... %d in all", len(diffs)))
	}
	return fmt.Sprintf("%d keys vs %d keys: %v", len(src), len(dst), diffs)
}

// ClosedAddr returns a loopback host:port that nothing listens on, for a server to bind or a client to
// find refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	addr, err := embedetcd.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
