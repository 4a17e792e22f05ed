package events_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/internal/testenv"
)

const history = "/topoha/t/history/"

// run starts r.Run and returns a function that stops it and waits until what was queued is written.
func run(t *testing.T, r *events.Recorder) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	stop := func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

// Every event reaches both DCs' etcds; the history is read back merged, oldest first, with its
// attributes, and bounded to MaxEvents per etcd.
func TestHistoryIsWrittenToBothDCsAndBounded(t *testing.T) {
	e1, e2 := testenv.StartEtcd(t, "dc1"), testenv.StartEtcd(t, "dc2")
	clients := map[string]*clientv3.Client{"dc1": e1.Client(), "dc2": e2.Client()}
	r, err := events.New(events.Config{Clients: clients, Prefix: history, Controller: "ctl-a", DC: "dc1", MaxEvents: 10, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, r)
	for i := range 25 {
		r.Info(events.KindFailover, "step", "n", i, "took", 1500*time.Millisecond)
	}
	stop() // writes what is still queued

	for dc, cli := range clients {
		resp, err := cli.Get(context.Background(), history, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != 10 {
			t.Errorf("%s's etcd keeps %d events, want the bound of 10", dc, resp.Count)
		}
	}
	evs, err := events.Read(context.Background(), clients, history, 5*time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 10 {
		t.Fatalf("read %d events, want 10 (the same events from both etcds counted once)", len(evs))
	}
	for i, ev := range evs {
		if want := fmt.Sprint(15 + i); ev.Attrs["n"] != want {
			t.Fatalf("event %d has n=%s, want %s: the newest must be kept, oldest first", i, ev.Attrs["n"], want)
		}
	}
	last := evs[9]
	if last.Kind != events.KindFailover || last.Controller != "ctl-a" || last.DC != "dc1" || last.Level != "INFO" ||
		last.Message != "step" || last.Attrs["took"] != "1.5s" || last.Time.IsZero() {
		t.Errorf("event read back as %+v", last)
	}
	if evs, _ := events.Read(context.Background(), clients, history, 5*time.Second, 3); len(evs) != 3 || evs[2].Attrs["n"] != "24" {
		t.Errorf("limit 3 read %d events ending with %v, want the newest 3", len(evs), evs)
	}
}

// A lost DC neither blocks recording nor the history in the other DC; reading reports it and garbage.
func TestHistoryWithALostDCAndGarbage(t *testing.T) {
	e1, e2 := testenv.StartEtcd(t, "dc1"), testenv.StartEtcd(t, "dc2")
	clients := map[string]*clientv3.Client{"dc1": e1.Client(), "dc2": e2.Client()}
	e1.Stop()
	r, err := events.New(events.Config{Clients: clients, Prefix: history, Controller: "ctl-b", DC: "dc2", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)
	start := time.Now()
	for range 500 { // more than a queue holds: the lost DC's queue drops instead of blocking
		r.Warn(events.KindHealth, "etcd health changed", "of_dc", "dc1", "to", "down")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("recording 500 events with a DC lost took %s; Record must not wait for etcd", took)
	}
	if _, err := clients["dc2"].Put(context.Background(), history+"0-garbage", "{not json"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() (bool, string) {
		evs, err := events.Read(context.Background(), clients, history, 300*time.Millisecond, 0)
		ok := len(evs) >= 256 && err != nil && strings.Contains(err.Error(), "dc1's etcd") && strings.Contains(err.Error(), "0-garbage is not an event")
		return ok, fmt.Sprintf("%d events, err %v", len(evs), err)
	})
}
