// Package witness is the third site's vote. `topoha witness` runs a Server at a site that is neither DC: it
// probes every DC's etcd exactly as controllers do and serves its view at GET /view. Controllers Ask the
// configured witnesses before an automatic failover; the primary DC counts as lost only if a majority
// of them answer and see its etcd down, so a cut link between the two DCs alone cannot promote the DR
// side while the primary still serves.
package witness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/internal/httpserve"
)

// View is what a witness sees of every DC's etcd.
type View struct {
	ID   string                     `json:"id"`
	Time time.Time                  `json:"time"`
	DCs  map[string]health.Snapshot `json:"dcs"`
}

// ServerConfig configures a Server.
type ServerConfig struct {
	Config *config.Config
	// Clients has a client of each DC's etcd.
	Clients map[string]*clientv3.Client
	// ID names the witness in its answers; Addr is the host:port it listens on.
	ID, Addr string
	Logger   *slog.Logger
}

// Server probes every DC and serves its view. Create it with NewServer, run it with Run.
type Server struct {
	cfg     ServerConfig
	probers map[string]*health.Prober
	ln      net.Listener
	srv     *http.Server
}

// NewServer validates cfg, creates the probers and binds the listener.
func NewServer(cfg ServerConfig) (*Server, error) {
	c := cfg.Config
	if c == nil || cfg.ID == "" {
		return nil, errors.New("witness: Config and ID are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, probers: map[string]*health.Prober{}}
	for _, dc := range c.DCNames() {
		hc, err := health.ConfigFor(c, dc)
		if err != nil {
			return nil, err
		}
		hc.Logger = cfg.Logger
		hc.OnChange = func(snap health.Snapshot) {
			cfg.Logger.Info("witness: etcd health changed", "of_dc", snap.DC, "to", snap.State, "last_error", snap.LastError,
				"alarms", snap.AlarmText())
		}
		p, err := health.New(hc)
		if err != nil {
			return nil, err
		}
		s.probers[dc] = p
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w; pick a free address", cfg.Addr, err)
	}
	s.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc("GET /view", s.view)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run probes and serves until ctx ends, then shuts the server down gracefully.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, p := range s.probers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Run(ctx)
		}()
	}
	if err := httpserve.Serve(ctx, s.srv, s.ln, 5*time.Second); err != nil {
		return err
	}
	return ctx.Err()
}

// fresh says whether a prober's view can be trusted: it probed within three intervals. A witness whose
// probes are stuck must not vote with an old "down".
func (s *Server) fresh(snap health.Snapshot, now time.Time) bool {
	return !snap.LastProbe.IsZero() && now.Sub(snap.LastProbe) <= 3*s.cfg.Config.Health.Interval+s.cfg.Config.Health.Timeout
}

// view answers 200 with the view when every DC has been probed recently, 503 (with the view) otherwise.
func (s *Server) view(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	v := View{ID: s.cfg.ID, Time: now.UTC(), DCs: map[string]health.Snapshot{}}
	ok := true
	for dc, p := range s.probers {
		snap := p.Snapshot()
		v.DCs[dc] = snap
		ok = ok && s.fresh(snap, now)
	}
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(v)
}

// Answer is one witness's reply to Ask.
type Answer struct {
	URL  string `json:"url"`
	View *View  `json:"view,omitempty"`
	// Error says why the witness's view does not count (unreachable, stale, not a view).
	Error string `json:"error,omitempty"`
}

// SeesDown says whether the witness answered and sees dc's etcd down.
func (a Answer) SeesDown(dc string) bool {
	return a.Error == "" && a.View != nil && a.View.DCs[dc].State == health.Down
}

// Ask asks every witness at urls for its view at once, each within timeout.
func Ask(ctx context.Context, urls []string, timeout time.Duration) []Answer {
	answers := make([]Answer, len(urls))
	client := &http.Client{Timeout: timeout}
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = ask(ctx, client, u)
		}()
	}
	wg.Wait()
	return answers
}

func ask(ctx context.Context, client *http.Client, url string) Answer {
	a := Answer{URL: url}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/view", nil)
	if err != nil {
		a.Error = err.Error()
		return a
	}
	resp, err := client.Do(req)
	if err != nil {
		a.Error = "unreachable: " + err.Error()
		return a
	}
	defer resp.Body.Close()
	var v View
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&v); err != nil {
		a.Error = fmt.Sprintf("HTTP %d, not a witness view: %v", resp.StatusCode, err)
		return a
	}
	a.View = &v
	if resp.StatusCode != http.StatusOK {
		a.Error = fmt.Sprintf("HTTP %d: the witness's probes are not current", resp.StatusCode)
	}
	return a
}

// CountSeeingDown counts the answers that see dc's etcd down.
func CountSeeingDown(answers []Answer, dc string) int {
	n := 0
	for _, a := range answers {
		if a.SeesDown(dc) {
			n++
		}
	}
	return n
}
