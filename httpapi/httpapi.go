// Package httpapi serves a controller's HTTP endpoints: /healthz, /readyz, /leader, /primary, /status and
// /metrics, for load balancers (LVS, keepalived, HAProxy), Prometheus and people.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/topoha/topoha/controller"
	"github.com/topoha/topoha/health"
)

// Server serves one controller's endpoints.
type Server struct {
	ctl *controller.Controller
	log *slog.Logger
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr (host:port) for ctl's endpoints; Serve then serves them.
func Listen(addr string, ctl *controller.Controller, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w; pick a free address with --listen or the listen key", addr, err)
	}
	s := &Server{ctl: ctl, log: log, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /leader", s.leader)
	mux.HandleFunc("GET /primary", s.primary)
	mux.HandleFunc("GET /status", s.status)
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(ctl), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(sctx); err != nil {
			return err
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// answer writes a JSON body with 200 when ok, 503 otherwise.
func answer(w http.ResponseWriter, ok bool, body any) {
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}

// healthz is liveness: the control loop ran within three intervals (Patroni's loop-staleness rule).
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	st := s.ctl.Status()
	age := time.Since(st.LoopAt)
	limit := 3 * s.ctl.Config().Health.Interval
	answer(w, !st.LoopAt.IsZero() && age <= max(limit, 3*time.Second), map[string]any{"loop_age_seconds": age.Seconds()})
}

// readyz: both DCs have been probed to a state.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	st := s.ctl.Status()
	ready := len(st.Health) > 0
	for _, h := range st.Health {
		ready = ready && h.State != health.Unknown
	}
	answer(w, ready, map[string]any{"health": st.Health})
}

// leader answers 200 on the leader only.
func (s *Server) leader(w http.ResponseWriter, _ *http.Request) {
	st := s.ctl.Status()
	answer(w, st.Leading, map[string]any{"id": st.ID, "dc": st.DC, "leading": st.Leading})
}

// primary answers 200 only when this controller's DC is the primary DC: what a VIP's health check uses.
func (s *Server) primary(w http.ResponseWriter, _ *http.Request) {
	st := s.ctl.Status()
	answer(w, st.Primary.DC != "" && st.Primary.DC == st.DC, map[string]any{"dc": st.DC, "primary": st.Primary})
}

// status is the same JSON as `topoha status --json`.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	answer(w, true, controller.ReadClusterStatus(ctx, s.ctl.Config(), s.ctl.Clients()))
}
