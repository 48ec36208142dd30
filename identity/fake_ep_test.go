package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// epRequestKeys are the only fields the gateway may send to EP (ep.md §6 item 2).
var epRequestKeys = map[string]bool{
	"agent_id": true, "proposal_id": true, "asset": true, "direction": true, "amount_usd": true, "chain": true,
}

// fakeEP is an httptest EP on 127.0.0.1. Every request it receives is checked against the
// wire contract and recorded.
type fakeEP struct {
	srv     *httptest.Server
	calls   atomic.Int64
	mu      sync.Mutex
	bodies  [][]byte
	release chan struct{} // closed at cleanup so that blocking handlers return
}

func newFakeEP(t *testing.T, h http.HandlerFunc) *fakeEP {
	t.Helper()
	f := &fakeEP{release: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			t.Errorf("fake EP: read request: %v", err)
			return
		}
		checkEPRequest(t, r, body)
		f.mu.Lock()
		f.bodies = append(f.bodies, body)
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		h(w, r)
	}))
	t.Cleanup(func() {
		close(f.release)
		f.srv.Close()
	})
	return f
}

func (f *fakeEP) URL() string { return f.srv.URL + "/ep/validate" }

// lastBody returns the last request body EP received.
func (f *fakeEP) lastBody(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		t.Fatal("fake EP received no request")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(f.bodies[len(f.bodies)-1], &m); err != nil {
		t.Fatalf("request body is not a JSON object: %v", err)
	}
	return m
}

// checkEPRequest asserts what every request to EP must look like.
func checkEPRequest(t *testing.T, r *http.Request, body []byte) {
	if r.Method != http.MethodPost || r.URL.Path != "/ep/validate" {
		t.Errorf("fake EP: got %s %s, want POST /ep/validate", r.Method, r.URL.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("fake EP: Content-Type %q", ct)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("fake EP: body %q is not a JSON object: %v", body, err)
		return
	}
	for k := range m {
		if !epRequestKeys[k] {
			t.Errorf("fake EP: unexpected field %q in %s", k, body)
		}
	}
	if a, ok := m["amount_usd"]; ok {
		var n json.Number
		if len(a) == 0 || a[0] == '"' || json.Unmarshal(a, &n) != nil {
			t.Errorf("fake EP: amount_usd %s is not a JSON number", a)
		}
	}
}

// olympus answers like EP's live /ep/validate with policy olympus-v1 (ep.md §1–2), including
// its 400s. Its proof_hash is a deterministic stand-in (olympusProof) so tests can predict it.
func olympus(w http.ResponseWriter, r *http.Request) {
	var in struct {
		AgentID    string           `json:"agent_id"`
		ProposalID string           `json:"proposal_id"`
		Asset      string           `json:"asset"`
		Direction  string           `json:"direction"`
		AmountUSD  *json.RawMessage `json:"amount_usd"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.AgentID == "" {
		writeJSON(w, http.StatusBadRequest, `{"error":"Missing agent_id"}`)
		return
	}
	var amount float64
	if in.AmountUSD != nil {
		if err := json.Unmarshal(*in.AmountUSD, &amount); err != nil || amount <= 0 {
			writeJSON(w, http.StatusBadRequest, `{"error":"amount_usd must be a positive number"}`)
			return
		}
	}
	violations := []string{}
	if amount > 100 {
		violations = append(violations, "Single trade exceeds $100 policy limit")
	}
	risk := "LOW"
	switch {
	case len(violations) > 0:
		risk = "HIGH"
	case amount > 50:
		risk = "MEDIUM"
	}
	resp := map[string]any{
		"valid":         len(violations) == 0,
		"risk_score":    risk,
		"violations":    violations,
		"proof_hash":    olympusProof(in.ProposalID, in.AgentID),
		"plan_summary":  fmt.Sprintf("AGENT:%s | %s %s $%v", in.AgentID, in.Asset, in.Direction, amount),
		"policy_set_id": "olympus-v1",
		"chain":         "base",
		"timestamp":     time.Now().UTC().Format(time.RFC3339Nano),
		"erc7710_delegation": map[string]any{
			"valid": amount <= 50, "delegation_found": amount > 50, "standard": "ERC-7710", "fail_open": true,
		},
	}
	w.Header().Set("X-Service-Name", "EP-AgentIAM")
	b, _ := json.Marshal(resp)
	writeJSON(w, http.StatusOK, string(b))
}

func olympusProof(jobID, agentID string) string {
	sum := sha256.Sum256([]byte(jobID + "|" + agentID))
	return hex.EncodeToString(sum[:])
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func respond(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, status, body) }
}

// deadURL returns a URL on 127.0.0.1 where nothing listens any more.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr + "/ep/validate"
}

// fakeClock is a settable clock for the breaker.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 3, 23, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingTransport counts the response-body bytes the client actually consumes.
type countingTransport struct {
	base *http.Transport
	read atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if resp != nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.read}
	}
	return resp, err
}

func (c *countingTransport) CloseIdleConnections() { c.base.CloseIdleConnections() }

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// syncBuffer is a log sink safe for the handler goroutines of slog.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newTestIAM builds an IAM whose EP points at url with a short deadline, and closes it at cleanup.
func newTestIAM(t *testing.T, cfg Config, opts ...Option) *IAM {
	t.Helper()
	if cfg.EP.Timeout == 0 {
		cfg.EP.Timeout = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	g, err := New(cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// slowEP never answers before the client gives up; it returns when the client disconnects.
func (f *fakeEP) slow(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-f.release:
	}
}

func slogText(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
