// Package httpapi serves a controller's HTTP endpoints: GET /healthz, /readyz, /leader, /primary, /status
// and /metrics for load balancers (LVS, keepalived, HAProxy), Prometheus and people, and POST /failover,
// /pause and /resume for operators' tools, which are off unless a token file is configured.
package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/topoha/topoha/clusterstatus"
	"github.com/topoha/topoha/controller"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/internal/httpserve"
)

// Config configures a Server.
type Config struct {
	// Addr is the host:port to listen on.
	Addr       string
	Controller *controller.Controller
	// Registry holds the event metrics (package metrics); the server adds the controller's state, Go
	// runtime and process collectors to it.
	Registry *prometheus.Registry
	// TokenFile holds the bearer token the POST endpoints require; empty turns them off. It is read at
	// each request, so a rotated token takes effect without a restart.
	TokenFile string
	Logger    *slog.Logger
}

// Server serves one controller's endpoints.
type Server struct {
	cfg Config
	ctl *controller.Controller
	srv *http.Server
	ln  net.Listener
}

// Listen binds cfg.Addr; Serve then serves the endpoints.
func Listen(cfg Config) (*Server, error) {
	if cfg.Controller == nil || cfg.Registry == nil {
		return nil, errors.New("httpapi: Controller and Registry are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Registry.Register(newCollector(cfg.Controller)); err != nil {
		return nil, fmt.Errorf("register the controller's metrics: %w", err)
	}
	if err := cfg.Registry.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := cfg.Registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w; pick a free address with --listen or the listen key", cfg.Addr, err)
	}
	s := &Server{cfg: cfg, ctl: cfg.Controller, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /leader", s.leader)
	mux.HandleFunc("GET /primary", s.primary)
	mux.HandleFunc("GET /status", s.status)
	mux.HandleFunc("GET /plan", s.plan)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("POST /failover", s.authorized(s.failover))
	mux.HandleFunc("POST /pause", s.authorized(s.pause(true)))
	mux.HandleFunc("POST /resume", s.authorized(s.pause(false)))
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx is done, then shuts down gracefully: requests under way get 5 seconds to finish.
func (s *Server) Serve(ctx context.Context) error {
	return httpserve.Serve(ctx, s.srv, s.ln, 5*time.Second)
}

// answer writes a JSON body with 200 when ok, 503 otherwise.
func answer(w http.ResponseWriter, ok bool, body any) {
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	reply(w, code, body)
}

func reply(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func replyError(w http.ResponseWriter, code int, err error) {
	reply(w, code, map[string]string{"error": err.Error()})
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

// primary answers 200 only when this controller's DC is the primary DC and has not fenced itself: what a
// VIP's health check uses. A fenced side's primaries are read-only; traffic sent there would fail.
func (s *Server) primary(w http.ResponseWriter, _ *http.Request) {
	st := s.ctl.Status()
	answer(w, st.Primary.DC != "" && st.Primary.DC == st.DC && !st.Fence.Fenced(),
		map[string]any{"dc": st.DC, "primary": st.Primary, "fenced": st.Fence.Fenced()})
}

// status is the same JSON as `topoha status --json`.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	answer(w, true, clusterstatus.Read(ctx, s.ctl.Config(), s.ctl.Clients()))
}

// plan answers the leader's latest plan; a controller that does not lead (or whose plan is older than
// two discovery intervals) computes one, as `topoha plan` does, at most once per discovery interval
// (Controller.PlanOnRequest). It answers 503 when the plan cannot
// be read; the plan's readiness is in its body, not its status code.
func (s *Server) plan(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p, err := s.ctl.PlanOnRequest(ctx)
	if err != nil {
		replyError(w, http.StatusServiceUnavailable, err)
		return
	}
	answer(w, true, p)
}

// authorized lets a request through to next only with the bearer token of the token file.
func (s *Server) authorized(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.TokenFile == "" {
			replyError(w, http.StatusForbidden, errors.New("POST endpoints are off: set http.token_file in the config to a file holding a token, and send it as 'Authorization: Bearer <token>'"))
			return
		}
		raw, err := os.ReadFile(s.cfg.TokenFile)
		token := strings.TrimSpace(string(raw))
		if err != nil || token == "" {
			s.cfg.Logger.Error("http: the token file cannot be used; refusing POST requests", "file", s.cfg.TokenFile, "err", err)
			replyError(w, http.StatusInternalServerError, errors.New("the token file cannot be read or is empty; see the controller's log"))
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			s.cfg.Logger.Warn("http: POST refused: missing or wrong bearer token", "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="topoha"`)
			replyError(w, http.StatusUnauthorized, errors.New("missing or wrong token: send 'Authorization: Bearer <token>' with the content of http.token_file"))
			return
		}
		next(w, r)
	}
}

// failover asks the leader to fail over: POST /failover?to=DC[&force=true]. It answers 202 once the
// request is in etcd; the leader acts on it within a health interval (see /status or `topoha status`).
func (s *Server) failover(w http.ResponseWriter, r *http.Request) {
	to := r.URL.Query().Get("to")
	if _, ok := s.ctl.Config().DCs[to]; !ok {
		replyError(w, http.StatusBadRequest, fmt.Errorf("to=%q: name the DC to fail over to, one of %v", to, s.ctl.Config().DCNames()))
		return
	}
	force := false
	switch v := r.URL.Query().Get("force"); v {
	case "", "false":
	case "true":
		force = true
	default:
		replyError(w, http.StatusBadRequest, fmt.Errorf("force=%q: use true or false", v))
		return
	}
	req := failover.Request{To: to, Force: force, Trigger: failover.TriggerHTTP, At: time.Now().UTC()}
	if err := s.ctl.RequestFailover(r.Context(), req); err != nil {
		replyError(w, http.StatusServiceUnavailable, err)
		return
	}
	reply(w, http.StatusAccepted, map[string]any{"requested": req})
}

// pause sets or clears the pause flag: POST /pause, POST /resume.
func (s *Server) pause(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.ctl.SetPaused(r.Context(), on, "http "+r.RemoteAddr); err != nil {
			replyError(w, http.StatusServiceUnavailable, err)
			return
		}
		reply(w, http.StatusOK, map[string]bool{"paused": on})
	}
}
