// Package events records what a controller saw and did — leadership changes, health transitions,
// failover steps, operator overrides, hook runs, reloads — twice: as a structured log/slog record at once,
// and as an entry of a bounded history kept in every DC's etcd under /topoha/<cluster>/history/, which
// `topoha history` reads back. The history is an audit trail, not a control input: nothing decides from it.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/metrics"
)

// Kind groups events.
type Kind string

// Kinds of event.
const (
	KindLeadership Kind = "leadership" // this controller became or stopped being the leader
	KindHealth     Kind = "health"     // a DC's etcd changed state
	KindPrimary    Kind = "primary"    // the primary record this controller follows changed
	KindRole       Kind = "role"       // the role of this controller's DC changed
	KindFailover   Kind = "failover"   // a failover or switchover step
	KindOverride   Kind = "override"   // an operator's action: failover request, pause, resume, forced primary
	KindHook       Kind = "hook"       // a hook ran
	KindConfig     Kind = "config"     // a config reload
	KindLifecycle  Kind = "lifecycle"  // the controller started or stopped
	KindFence      Kind = "fence"      // self-fencing: a fence put up, retried, lifted or kept
	KindPhase      Kind = "phase"      // this controller's phase changed (following, mirroring, failing_over, ...)
)

// Event is one entry of the history.
type Event struct {
	// ID is unique per event and sorts by time; it names the event's key in every etcd.
	ID         string            `json:"id"`
	Time       time.Time         `json:"time"`
	Level      string            `json:"level"`
	Kind       Kind              `json:"kind"`
	Controller string            `json:"controller"`
	DC         string            `json:"dc"`
	Message    string            `json:"message"`
	Attrs      map[string]string `json:"attrs,omitempty"`
}

// Config configures a Recorder.
type Config struct {
	// Clients has a client of each DC's etcd; every event is written to each. With none, events are
	// only logged.
	Clients map[string]*clientv3.Client
	// Prefix is where the history lives (keys.Layout.History).
	Prefix string
	// Controller and DC name who records.
	Controller, DC string
	// MaxEvents bounds the history kept in each etcd; the oldest entries are deleted. Default 1000.
	MaxEvents int
	// Timeout bounds each etcd request (request_timeout); required with Clients.
	Timeout time.Duration
	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

// historyAttempts is how many times an event is written before it is given up.
const historyAttempts = 3

// queueLen is how many events may wait for one DC's etcd; more are dropped (and counted), so a lost DC
// never holds the controller up.
const queueLen = 256

// Recorder logs events and writes them to the history. Create it with New; Run writes the history.
type Recorder struct {
	cfg    Config
	seq    atomic.Uint64
	queues map[string]chan Event
}

// New returns a Recorder for cfg.
func New(cfg Config) (*Recorder, error) {
	if len(cfg.Clients) > 0 && (cfg.Prefix == "" || cfg.Timeout <= 0) {
		return nil, errors.New("events: Prefix and a positive Timeout (request_timeout) are required with Clients")
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{cfg: cfg, queues: map[string]chan Event{}}
	for dc := range cfg.Clients {
		r.queues[dc] = make(chan Event, queueLen)
	}
	return r, nil
}

// LogOnly returns a Recorder that only logs to log, for a part that runs without a history.
func LogOnly(log *slog.Logger) *Recorder {
	r, _ := New(Config{Logger: log}) // without Clients, New cannot fail
	return r
}

// Info records an event at level info; args are slog key-value pairs or Attrs.
func (r *Recorder) Info(kind Kind, msg string, args ...any) {
	r.Record(slog.LevelInfo, kind, msg, args...)
}

// Warn records an event at level warn.
func (r *Recorder) Warn(kind Kind, msg string, args ...any) {
	r.Record(slog.LevelWarn, kind, msg, args...)
}

// Error records an event at level error.
func (r *Recorder) Error(kind Kind, msg string, args ...any) {
	r.Record(slog.LevelError, kind, msg, args...)
}

// Record logs an event and queues it for the history without waiting for etcd.
func (r *Recorder) Record(level slog.Level, kind Kind, msg string, args ...any) {
	now := time.Now()
	r.cfg.Logger.Log(context.Background(), level, msg, append([]any{"event", kind}, args...)...)
	if len(r.queues) == 0 {
		return
	}
	// The time leads the ID so that keys sort in time order; controller and sequence keep them unique.
	id := fmt.Sprintf("%020d-%s-%d", now.UnixNano(), r.cfg.Controller, r.seq.Add(1))
	ev := Event{ID: id, Time: now.UTC(), Level: level.String(), Kind: kind, Controller: r.cfg.Controller, DC: r.cfg.DC, Message: msg}
	rec := slog.NewRecord(now, level, msg, 0)
	rec.Add(args...)
	rec.Attrs(func(a slog.Attr) bool {
		if ev.Attrs == nil {
			ev.Attrs = map[string]string{}
		}
		ev.Attrs[a.Key] = a.Value.Resolve().String()
		return true
	})
	for _, q := range r.queues {
		select {
		case q <- ev:
		default:
			r.cfg.Metrics.HistoryDropped()
		}
	}
}

// Run writes queued events to each DC's etcd until ctx ends, then writes what is still queued for up to
// one Timeout per DC, so that the last events of a stopping controller are kept.
func (r *Recorder) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for dc, q := range r.queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.write(ctx, dc, q)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

func (r *Recorder) write(ctx context.Context, dc string, q chan Event) {
	cli := r.cfg.Clients[dc]
	put := func(ctx context.Context, ev Event) {
		// A raft leader election in that etcd fails a write or two: the history is what a postmortem reads,
		// so an event is tried again before it is given up (the put is idempotent: same key, same value).
		var err error
		for attempt := range historyAttempts {
			if attempt > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(r.cfg.Timeout / 10):
				}
			}
			if err = r.put(ctx, cli, ev); err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			r.cfg.Metrics.HistoryWriteFailed(dc)
			r.cfg.Logger.Debug("history event not written", "dc", dc, "err", err)
		}
	}
	for {
		select {
		case ev := <-q:
			put(ctx, ev)
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Timeout)
			defer cancel()
			for dctx.Err() == nil {
				select {
				case ev := <-q:
					put(dctx, ev)
				default:
					return
				}
			}
			return
		}
	}
}

// put writes ev and trims the history to MaxEvents, oldest first.
func (r *Recorder) put(ctx context.Context, cli *clientv3.Client, ev Event) error {
	val, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	prefix := r.cfg.Prefix
	key := prefix + ev.ID
	wctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	if _, err := cli.Put(wctx, key, string(val)); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	resp, err := cli.Get(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count <= int64(r.cfg.MaxEvents) {
		return err
	}
	old, err := cli.Get(wctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(resp.Count-int64(r.cfg.MaxEvents)))
	if err != nil || len(old.Kvs) == 0 {
		return err
	}
	last := string(old.Kvs[len(old.Kvs)-1].Key)
	_, err = cli.Delete(wctx, prefix, clientv3.WithRange(last+"\x00"))
	return err
}

// Read returns the history from every DC's etcd that answers, merged, oldest first, at most limit events
// (the newest; 0 means all) below prefix (keys.Layout.History). Entries that are not events are skipped and reported in the error, as are
// etcds that do not answer; events is still what could be read.
func Read(ctx context.Context, clients map[string]*clientv3.Client, prefix string, timeout time.Duration, limit int) ([]Event, error) {
	byKey := map[string]Event{}
	var errs []error
	for _, dc := range slices.Sorted(maps.Keys(clients)) {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := clients[dc].Get(rctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s's etcd: %w", dc, err))
			continue
		}
		for _, kv := range resp.Kvs {
			ev, err := decode(prefix, kv.Key, kv.Value)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s's etcd: %w", dc, err))
				continue
			}
			byKey[string(kv.Key)] = ev
		}
	}
	keys := slices.Sorted(maps.Keys(byKey))
	if limit > 0 && len(keys) > limit {
		keys = keys[len(keys)-limit:]
	}
	out := make([]Event, 0, len(keys))
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out, errors.Join(errs...)
}

// WriteText writes one line per event, as `topoha history` prints them: time, level, kind, who, message, then the attributes sorted by
// name, quoted where they hold spaces.
func WriteText(w io.Writer, evs []Event) {
	for _, ev := range evs {
		names := make([]string, 0, len(ev.Attrs))
		for k := range ev.Attrs {
			names = append(names, k)
		}
		sort.Strings(names)
		var b strings.Builder
		who := ev.Controller
		if ev.DC != "" && ev.DC != "-" {
			who = ev.DC + "/" + who
		}
		fmt.Fprintf(&b, "%s  %-5s  %-10s  %s  %s", ev.Time.UTC().Format("2006-01-02T15:04:05.000Z"), oneLine(ev.Level), oneLine(string(ev.Kind)), oneLine(who), oneLine(ev.Message))
		for _, k := range names {
			v := ev.Attrs[k]
			if v == "" || strings.ContainsAny(v, " \t\n\"=") || hasControl(v) {
				v = strconv.Quote(v)
			}
			fmt.Fprintf(&b, " %s=%s", oneLine(k), v)
		}
		fmt.Fprintln(w, b.String())
	}
}

// oneLine quotes s if it holds a control character: the history is read from etcd, where anyone may have
// written, and a newline or carriage return in a field must not print as a line of its own.
func oneLine(s string) string {
	if hasControl(s) {
		return strconv.Quote(s)
	}
	return s
}

func hasControl(s string) bool { return strings.ContainsFunc(s, unicode.IsControl) }
