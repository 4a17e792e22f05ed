package witness_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/witness"
)

// A witness serves what its own probes see, and Ask counts only answers that see the DC down: an
// unreachable witness is a "no".
func TestWitnessViewAndAsk(t *testing.T) {
	d := testenv.StartDCs(t, testenv.WithConfig("health: {interval: 100ms, timeout: 300ms, failure_threshold: 2, success_threshold: 1}"))
	s, err := witness.NewServer(witness.ServerConfig{Config: d.Config, ID: "w1", Addr: "127.0.0.1:0", Clients: d.Client})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	}()
	urls := []string{"http://" + s.Addr(), "http://" + testenv.ClosedAddr(t)}
	ask := func() []witness.Answer { return witness.Ask(context.Background(), urls, time.Second) }

	testenv.Eventually(t, time.Minute, func() (bool, string) {
		a := ask()
		return a[0].Error == "" && a[0].View.DCs["dc1"].State == health.Up && a[0].View.ID == "w1", fmt.Sprintf("%+v", a[0])
	})
	if a := ask(); witness.CountSeeingDown(a, "dc1") != 0 || !strings.Contains(a[1].Error, "unreachable") {
		t.Errorf("with dc1 up: %+v", a)
	}
	d.Cluster["dc1"].Stop()
	testenv.Eventually(t, time.Minute, func() (bool, string) {
		a := ask()
		return witness.CountSeeingDown(a, "dc1") == 1 && witness.CountSeeingDown(a, "dc2") == 0, fmt.Sprintf("%+v", a)
	})
}
