package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/mpp"
	"github.com/secureexec/secureexec/store"
)

// Version is reported by GET /health.
const Version = "v1"

// Authorizer is the IAM stage: local policy, identity and EP. It never fails; every
// problem is an Outcome.
type Authorizer interface {
	Decide(ctx context.Context, req identity.Request) identity.Outcome
}

// AuditLog is where sealed records go. Submit must never block.
type AuditLog interface {
	Submit(e store.Entry)
	Get(ctx context.Context, jobID string) (store.Entry, error)
}

// Config is the gateway's own configuration; cmd/secureexec builds it from env and flags.
type Config struct {
	MaxBodyBytes int64         // request bodies past this answer 413
	MaxJSONDepth int           // nesting past this answers 400
	StoreTimeout time.Duration // deadline for reading a job back
	Payment      PaymentConfig
	Prices       payments.PriceTable
}

// DefaultConfig holds the limits used when configuration names none.
var DefaultConfig = Config{
	MaxBodyBytes: 1 << 20,
	MaxJSONDepth: 64,
	StoreTimeout: 3 * time.Second,
	Payment:      PaymentConfig{InternalAgentID: "achilles", Network: "base", ACPURL: "https://app.virtuals.io/acp"},
	Prices:       payments.DefaultPrices,
}

// Deps are the stages the gateway calls, built by cmd/secureexec.
type Deps struct {
	Runner     *exec.Runner
	IAM        Authorizer
	Audit      AuditLog
	Rails      []payments.Rail
	Payments   PaymentReader    // GET /payments/{id}; nil when no rail keeps a ledger
	Idempotent IdempotencyStore // replays for payment identifiers; nil disables them
	// StripeWebhook serves POST /webhooks/stripe (an *mpp.WebhookHandler), outside the payment
	// gate: Stripe signs the raw body. nil leaves the route unmounted.
	StripeWebhook http.Handler
	Logger        *slog.Logger
	Registry      *prometheus.Registry // metrics are registered here and served at /metrics
	Collectors    []prometheus.Collector
	Now           func() time.Time // for tests; time.Now when nil
}

// Server is the HTTP gateway. Build it with New and serve Handler().
type Server struct {
	cfg      Config
	runner   *exec.Runner
	iam      Authorizer
	audit    AuditLog
	payments PaymentReader
	idem     IdempotencyStore
	held     heldResponses // responses the store could not take yet
	webhook  http.Handler
	pay      *paymentGate
	prices   payments.PriceTable
	log      *slog.Logger
	metrics  *metrics
	now      func() time.Time
	router   *mux.Router
}

// New wires the gateway. Zero limits in cfg take DefaultConfig's values.
func New(cfg Config, d Deps) (*Server, error) {
	if d.Runner == nil || d.IAM == nil || d.Audit == nil {
		return nil, errors.New("gateway: Runner, IAM and Audit are required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultConfig.MaxBodyBytes
	}
	if cfg.MaxJSONDepth <= 0 {
		cfg.MaxJSONDepth = DefaultConfig.MaxJSONDepth
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = DefaultConfig.StoreTimeout
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	m, err := newMetrics(d.Registry, d.Collectors...)
	if err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	s := &Server{
		cfg: cfg, runner: d.Runner, iam: d.IAM, audit: d.Audit, payments: d.Payments, idem: d.Idempotent, webhook: d.StripeWebhook, pay: newPaymentGate(cfg.Payment, d.Rails),
		prices: cfg.Prices, log: d.Logger, metrics: m, now: d.Now,
	}
	s.router = s.routes(d.Registry)
	return s, nil
}

// Handler returns the gateway's root handler with its middleware.
func (s *Server) Handler() http.Handler { return s.router }

var (
	errRouteNotFound    = errors.New("no such endpoint")
	errMethodNotAllowed = errors.New("method not allowed on this endpoint")
)

func (s *Server) routes(reg *prometheus.Registry) *mux.Router {
	// No path cleaning: mux would answer //exec/simulate with a bare 301 (which clients follow
	// as a GET), where the API answers an unknown path with a problem.
	r := mux.NewRouter().SkipClean(true)
	r.Use(s.requestID, s.recoverer)
	handle := func(path, method, name string, h http.HandlerFunc) {
		// Recovered inside the instrumentation, so that a panic's 503 is counted and timed.
		r.Handle(path, s.metrics.instrument(name, s.recoverer(h))).Methods(withHead(method)...)
	}
	handle("/exec/tool", http.MethodPost, "exec_tool", s.handleTool)
	handle("/exec/simulate", http.MethodPost, "exec_simulate", s.handleSimulate)
	handle("/exec/tools", http.MethodGet, "exec_tools", s.handleTools)
	handle("/exec/jobs/{jobId}", http.MethodGet, "exec_job", s.handleJob)
	handle("/payments/{id}", http.MethodGet, "payment", s.handlePayment)
	handle("/health", http.MethodGet, "health", s.handleHealth)
	handle("/openapi.json", http.MethodGet, "openapi", s.handleOpenAPI)
	if s.webhook != nil {
		// Not a paid call: the handler checks Stripe's signature over the body as sent.
		handle(mpp.WebhookPath, http.MethodPost, "webhook_stripe", s.webhook.ServeHTTP)
	}
	r.Handle("/metrics", metricsHandler(reg)).Methods(withHead(http.MethodGet)...)
	r.NotFoundHandler = s.requestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, fmt.Errorf("%w: %s", errRouteNotFound, r.URL.Path))
	}))
	r.MethodNotAllowedHandler = s.requestID(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Allow", strings.Join(allowedMethods(r, req), ", "))
		s.writeError(w, req, fmt.Errorf("%w: %s %s", errMethodNotAllowed, req.Method, req.URL.Path))
	}))
	return r
}

// withHead adds HEAD to GET: RFC 9110 wants HEAD wherever GET is served (net/http sends the
// headers and drops the body).
func withHead(method string) []string {
	if method == http.MethodGet {
		return []string{http.MethodGet, http.MethodHead}
	}
	return []string{method}
}

// allowedMethods lists the methods the router serves at the request's path, for the Allow
// header that RFC 9110 requires on a 405.
func allowedMethods(router *mux.Router, req *http.Request) []string {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
		probe := req.Clone(req.Context())
		probe.Method = m
		var match mux.RouteMatch
		if router.Match(probe, &match) && match.MatchErr == nil {
			allowed = append(allowed, m)
		}
	}
	return allowed
}

const (
	headerRequestID = "X-Request-ID"
	headerProofHash = "X-Proof-Hash"
)

// requestID echoes a caller's X-Request-ID when it is short and printable, or makes one.
func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(headerRequestID)
		if !printableID(id) {
			id = uuid.NewString()
		}
		w.Header().Set(headerRequestID, id)
		next.ServeHTTP(w, r)
	})
}

func printableID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// recoverer turns a panic in a handler into a JSON 503: never a 500, never a dropped
// connection. (Tool panics never get here: the runner recovers them into results.)
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("handler panicked", "panic", fmt.Sprint(p), "path", r.URL.Path, "stack", string(debug.Stack()))
				s.writeError(w, r, fmt.Errorf("%w: %v", errInternal, p))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

type healthResponse struct {
	Status  string `json:"status"`
	Service string `json:"service"`
	Version string `json:"version"`
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, "application/json", healthResponse{Status: "ok", Service: "secureexec", Version: Version})
}

type toolsResponse struct {
	Allowed       []exec.ToolInfo    `json:"allowed"`
	Blocked       []exec.BlockedInfo `json:"blocked"`
	Prices        []toolPrice        `json:"prices"`
	SchemaVersion string             `json:"schemaVersion"`
}

type toolPrice struct {
	Mode         payments.Mode `json:"mode"`
	Endpoint     string        `json:"endpoint"`
	Amount       string        `json:"amount"`
	AmountAtomic string        `json:"amountAtomic"`
	Currency     string        `json:"currency"`
}

func (s *Server) handleTools(w http.ResponseWriter, r *http.Request) {
	var prices []toolPrice
	for _, m := range []struct {
		mode     payments.Mode
		endpoint string
	}{{payments.ModeSimulate, endpointSimulate}, {payments.ModeDryRun, endpointTool}, {payments.ModeReal, endpointTool}} {
		p := s.prices.Price("", m.mode, m.endpoint)
		prices = append(prices, toolPrice{Mode: m.mode, Endpoint: m.endpoint, Amount: p.Decimal(), AmountAtomic: strconv.FormatUint(p.Amount, 10), Currency: p.Currency})
	}
	writeJSON(w, http.StatusOK, "application/json", toolsResponse{
		Allowed: s.runner.Registry().List(), Blocked: exec.BlockedList(), Prices: prices, SchemaVersion: SchemaVersion,
	})
}

func muxVar(r *http.Request, name string) string { return mux.Vars(r)[name] }
