package witness_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/internal/testenv"
	"github.com/topoha/topoha/witness"
)

// A witness serves what its own probes see, and Ask counts only answers that see the DC down: an
// unreachable witness is a "no".
func TestWitnessViewAndAsk(t *testing.T) {
	dc1, dc2 := testenv.StartEtcd(t, "dc1"), testenv.StartEtcd(t, "dc2")
	cfg, err := config.Parse([]byte(fmt.Sprintf(`cluster: t
initial_primary: dc1
dcs:
  dc1: {etcd: {endpoints: [%s], dial_timeout: 500ms}}
  dc2: {etcd: {endpoints: [%s], dial_timeout: 500ms}}
health: {interval: 100ms, timeout: 300ms, failure_threshold: 2, success_threshold: 1}
`, dc1.Endpoint(), dc2.Endpoint())))
	if err != nil {
		t.Fatal(err)
	}
	s, err := witness.NewServer(witness.ServerConfig{Config: cfg, ID: "w1", Addr: "127.0.0.1:0",
		Clients: map[string]*clientv3.Client{"dc1": dc1.Client(), "dc2": dc2.Client()}})
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
	dc1.Stop()
	testenv.Eventually(t, time.Minute, func() (bool, string) {
		a := ask()
		return witness.CountSeeingDown(a, "dc1") == 1 && witness.CountSeeingDown(a, "dc2") == 0, fmt.Sprintf("%+v", a)
	})
}
