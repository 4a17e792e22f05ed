package override

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/internal/testenv"
)

// twoDCs is the two-DC fixture with one member per DC: these are tests of the records alone, not of a
// DC's health.
func twoDCs(t *testing.T) (*config.Config, map[string]*clientv3.Client, map[string]*testenv.Cluster) {
	t.Helper()
	d := testenv.StartDCs(t, testenv.WithMembers(1))
	return d.Config, d.Client, d.Cluster
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A pause written while dc2 was away holds when dc2 returns with its older flag, is copied into dc2, and
// is not lost when dc1, the only etcd that held it, is lost next.
func TestPauseWrittenWhileADCWasAwayHolds(t *testing.T) {
	c, clients, servers := twoDCs(t)
	if _, missed, err := WritePause(ctxT(t), c, clients, false, "test"); err != nil || len(missed) != 0 {
		t.Fatalf("resume everywhere: missed %v, %v", missed, err)
	}
	var m Memory
	servers["dc2"].Stop()
	written, missed, err := WritePause(ctxT(t), c, clients, true, "oncall")
	if err != nil || len(missed) != 1 || missed[0] != "dc2" || written.Generation != 2 {
		t.Fatalf("pause with dc2 away: %+v, missed %v, %v", written, missed, err)
	}
	if _, paused, _ := m.Read(ctxT(t), c, clients, time.Second); !paused {
		t.Fatal("the pause in dc1 does not hold")
	}
	servers["dc2"].Start()
	var copied []Spread
	testenv.Eventually(t, time.Minute, func() (bool, string) {
		p, paused, spread := m.Read(ctxT(t), c, clients, time.Second)
		if !paused || p.Generation != 2 {
			t.Fatalf("dc2 back: %+v paused %v; want generation 2, paused", p, paused)
		}
		copied = append(copied, spread...)
		got, ok := ReadPause(ctxT(t), c, map[string]*clientv3.Client{"dc2": clients["dc2"]})
		return ok && got.Paused && got.Generation == 2, fmt.Sprintf("dc2's own flag: %+v %v", got, ok)
	})
	if len(copied) != 1 || copied[0].DC != "dc2" {
		t.Errorf("copies reported: %+v, want one into dc2", copied)
	}

	// A memory that saw the pause keeps it, even where only an older flag can be read.
	var fresh Memory
	fresh.Saw(written)
	if _, err := clients["dc2"].Put(ctxT(t), c.Keys().Paused(), `{"paused":false,"generation":1}`); err != nil {
		t.Fatal(err)
	}
	if _, paused, _ := fresh.Read(ctxT(t), c, map[string]*clientv3.Client{"dc2": clients["dc2"]}, time.Second); !paused {
		t.Fatal("an older flag took back a pause this controller had seen")
	}
}

// A flag that is not a flag counts as paused where nothing else can be read, and is left for an operator
// to see; a flag topoha wrote elsewhere holds over it (garbage is generation -1). No flag anywhere is not
// paused; no etcd answering counts as paused.
func TestPauseGarbageAndUnreachable(t *testing.T) {
	c, clients, servers := twoDCs(t)
	var m Memory
	if p, paused, _ := m.Read(ctxT(t), c, clients, time.Second); paused || p.Generation != 0 {
		t.Fatalf("no flag anywhere: %+v paused %v", p, paused)
	}
	if _, err := clients["dc1"].Put(ctxT(t), c.Keys().Paused(), "{"); err != nil {
		t.Fatal(err)
	}
	dc1 := map[string]*clientv3.Client{"dc1": clients["dc1"]}
	p, paused, spread := m.Read(ctxT(t), c, dc1, time.Second)
	if !paused || p.Generation != -1 || len(spread) != 0 {
		t.Fatalf("garbage alone: %+v paused %v spread %+v", p, paused, spread)
	}
	if _, err := clients["dc2"].Put(ctxT(t), c.Keys().Paused(), `{"paused":false,"generation":3}`); err != nil {
		t.Fatal(err)
	}
	if p, paused, _ := m.Read(ctxT(t), c, clients, time.Second); paused || p.Generation != 3 {
		t.Fatalf("garbage in dc1, resumed at generation 3 in dc2: %+v paused %v", p, paused)
	}
	if got, _ := clients["dc1"].Get(ctxT(t), c.Keys().Paused()); string(got.Kvs[0].Value) != "{" {
		t.Fatalf("the garbage was overwritten: %q", got.Kvs[0].Value)
	}
	servers["dc1"].Stop()
	servers["dc2"].Stop()
	if _, paused, _ := (&Memory{}).Read(ctxT(t), c, clients, time.Second); !paused {
		t.Fatal("with no etcd answering, automatic failover is not paused")
	}
}

// A request written into both etcds is taken once: the newest, deleted wherever it is, and a copy of a
// request already answered is dropped. A value that is not a request is deleted and ignored.
func TestRequestIsTakenOnce(t *testing.T) {
	c, clients, _ := twoDCs(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := failover.Request{To: "dc2", Trigger: failover.TriggerCLI, At: time.Now().UTC()}
	if err := WriteRequest(ctxT(t), c, clients, r, time.Minute); err != nil {
		t.Fatal(err)
	}
	got := TakeRequest(ctxT(t), c, clients, time.Second, log)
	if got == nil || got.To != "dc2" || !got.At.Equal(r.At) {
		t.Fatalf("taken: %+v", got)
	}
	if again := TakeRequest(ctxT(t), c, clients, time.Second, log); again != nil {
		t.Fatalf("taken twice: %+v", again)
	}
	if err := WriteAnswer(ctxT(t), c, clients, r, failover.Decision{Action: failover.ActionFailover, To: "dc2"}); err != nil {
		t.Fatal(err)
	}
	if ans := ReadAnswer(ctxT(t), c, clients, r); ans == nil || ans.Decision.To != "dc2" {
		t.Fatalf("answer: %+v", ans)
	}
	// The requester's copy into dc2 lands after the leader answered: it is not taken again.
	if err := WriteRequest(ctxT(t), c, map[string]*clientv3.Client{"dc2": clients["dc2"]}, r, time.Minute); err != nil {
		t.Fatal(err)
	}
	if again := TakeRequest(ctxT(t), c, clients, time.Second, log); again != nil {
		t.Fatalf("an answered request was taken again: %+v", again)
	}
	if _, err := clients["dc1"].Put(ctxT(t), c.Keys().Request(), "not a request"); err != nil {
		t.Fatal(err)
	}
	if got := TakeRequest(ctxT(t), c, clients, time.Second, log); got != nil {
		t.Fatalf("garbage taken as a request: %+v", got)
	}
	if resp, _ := clients["dc1"].Get(ctxT(t), c.Keys().Request()); len(resp.Kvs) != 0 {
		t.Fatalf("the garbage request was left: %q", resp.Kvs[0].Value)
	}
}
