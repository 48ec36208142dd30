package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/stripe/stripe-go/v76/webhook"
	"go.uber.org/goleak"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
	"github.com/secureexec/secureexec/payments/mpp"
	"github.com/secureexec/secureexec/proof"
	"github.com/secureexec/secureexec/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// --- test tools -------------------------------------------------------------------------

type echoTool struct{}

func (echoTool) Name() string        { return "echo" }
func (echoTool) Description() string { return "returns its args" }
func (echoTool) Schema() json.RawMessage {
	return json.RawMessage(`{"type":"object","properties":{"text":{"type":"string","maxLength":100000}},"required":["text"],"additionalProperties":false}`)
}
func (echoTool) Simulate(_ context.Context, a json.RawMessage) (any, error) {
	return map[string]any{"would": json.RawMessage(a)}, nil
}
func (echoTool) Run(_ context.Context, a json.RawMessage) (any, error) {
	var v struct{ Text string }
	_ = json.Unmarshal(a, &v)
	return map[string]string{"text": v.Text}, nil
}

type panicTool struct{}

func (panicTool) Name() string                                           { return "boom" }
func (panicTool) Description() string                                    { return "panics" }
func (panicTool) Schema() json.RawMessage                                { return json.RawMessage(`{"type":"object"}`) }
func (panicTool) Simulate(context.Context, json.RawMessage) (any, error) { panic("kaboom") }
func (panicTool) Run(context.Context, json.RawMessage) (any, error)      { panic("kaboom") }

type hangTool struct{}

func (hangTool) Name() string            { return "hang" }
func (hangTool) Description() string     { return "waits for its deadline" }
func (hangTool) Schema() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (hangTool) Simulate(ctx context.Context, _ json.RawMessage) (any, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (h hangTool) Run(ctx context.Context, a json.RawMessage) (any, error) { return h.Simulate(ctx, a) }

// gateTool signals each call's start on started and returns when open is closed.
type gateTool struct{ started, open chan struct{} }

func (gateTool) Name() string            { return "gate" }
func (gateTool) Description() string     { return "waits for its gate to open" }
func (gateTool) Schema() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (g gateTool) Simulate(ctx context.Context, _ json.RawMessage) (any, error) {
	g.started <- struct{}{}
	select {
	case <-g.open:
		return "opened", nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (g gateTool) Run(ctx context.Context, a json.RawMessage) (any, error) { return g.Simulate(ctx, a) }

// --- fakes ------------------------------------------------------------------------------

type fakeIAM struct {
	mu   sync.Mutex
	deny map[string]bool
	seen []identity.Request
}

func (f *fakeIAM) Decide(_ context.Context, r identity.Request) identity.Outcome {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, r)
	if f.deny[r.AgentID] {
		return identity.Outcome{Decision: identity.DecisionDenied, Source: identity.SourcePolicy, Reason: "agent_denied", Violations: []string{"agent is deny-listed"}}
	}
	return identity.Outcome{Approved: true, Decision: identity.DecisionApproved, Source: identity.SourcePolicy, Reason: "policy_allows"}
}

type memAudit struct {
	mu      sync.Mutex
	entries map[string]store.Entry
}

func (m *memAudit) Submit(e store.Entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[e.JobID] = e
}

func (m *memAudit) Get(_ context.Context, id string) (store.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[id]
	if !ok {
		return store.Entry{}, store.ErrNotFound
	}
	return e, nil
}

// fakeRail accepts "Authorization: Fake <token>"; token "good" pays, "bad" is refused,
// "down" finds its backend unavailable.
type fakeRail struct {
	verified []string
	settled  []string // job ids settled
	voided   []string // reasons
	refused  []string // the reasons of the refusals its offers answered
	settleAs func() (*payments.Settlement, error)
	onSettle func(ctx context.Context) // called first by Settle, with its context
}

func (f *fakeRail) Name() string { return "fake" }
func (f *fakeRail) Offer(_ context.Context, p payments.Price, refused *payments.PaymentError) (payments.Challenge, error) {
	if refused != nil {
		f.refused = append(f.refused, refused.Reason)
	}
	h := http.Header{}
	h.Set("X-Fake-Offer", p.Decimal())
	return payments.Challenge{Header: h, Body: map[string]json.RawMessage{"fakeAccepts": json.RawMessage(`["fake"]`), "amount": json.RawMessage(`"999"`)}}, nil
}
func (f *fakeRail) Accepts(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Authorization"), "Fake ")
}
func (f *fakeRail) Verify(_ context.Context, r *http.Request, p payments.Price) (*payments.Authorization, error) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Fake ")
	switch tok {
	case "good":
		f.verified = append(f.verified, tok)
		return &payments.Authorization{Rail: "fake", Payer: "0xPayer", Amount: p.Amount, Reference: "ref-1"}, nil
	case "down":
		return nil, payments.ErrUnavailable
	default:
		return nil, &payments.PaymentError{Rail: "fake", Reason: "invalid_fake_token", Detail: "token refused"}
	}
}
func (f *fakeRail) Settle(ctx context.Context, a *payments.Authorization) (*payments.Settlement, error) {
	if f.onSettle != nil {
		f.onSettle(ctx)
	}
	f.settled = append(f.settled, a.JobID)
	if f.settleAs != nil {
		return f.settleAs()
	}
	h := http.Header{}
	h.Set("X-Fake-Receipt", "tx-1")
	return &payments.Settlement{Status: payments.SettlementSettled, ID: "pay-1", TxHash: "0xtx", Header: h}, nil
}
func (f *fakeRail) Void(_ context.Context, _ *payments.Authorization, reason string) error {
	f.voided = append(f.voided, reason)
	return nil
}

type harness struct {
	srv   *Server
	iam   *fakeIAM
	audit *memAudit
	rail  *fakeRail
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	lim := exec.DefaultLimits
	lim.MaxTimeout = 200 * time.Millisecond
	return newHarnessWith(t, lim)
}

// newHarnessWith is newHarness with other sandbox limits and more tools.
func newHarnessWith(t *testing.T, lim exec.Limits, more ...exec.Tool) *harness {
	t.Helper()
	reg, err := exec.NewRegistry(append([]exec.Tool{echoTool{}, panicTool{}, hangTool{}}, more...)...)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{iam: &fakeIAM{deny: map[string]bool{"mallory": true}}, audit: &memAudit{entries: map[string]store.Entry{}}, rail: &fakeRail{}}
	cfg := DefaultConfig
	cfg.MaxBodyBytes = 4096
	cfg.MaxJSONDepth = 8
	cfg.Payment.InternalAPIKey = "internal-key-0123456789"
	cfg.Payment.PayTo = "0x000000000000000000000000000000000000dEaD"
	h.srv, err = New(cfg, Deps{
		Runner: exec.NewRunner(reg, lim, slog.New(slog.NewTextHandler(io.Discard, nil))),
		IAM:    h.iam, Audit: h.audit, Rails: []payments.Rail{h.rail},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) do(method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(w, req)
	return w
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("body %q: %v", w.Body.String(), err)
	}
	return v
}

// --- tests ------------------------------------------------------------------------------

// TestFreeCallsLeaveRoomForPaidOnes: free calls filling their share of the sandbox get 503;
// a paid call and an internal one still run.
func TestFreeCallsLeaveRoomForPaidOnes(t *testing.T) {
	gate := gateTool{started: make(chan struct{}, 1), open: make(chan struct{})}
	var once sync.Once
	release := func() { once.Do(func() { close(gate.open) }) }
	t.Cleanup(release)
	h := newHarnessWith(t, exec.Limits{MaxConcurrent: 2, MaxFreeConcurrent: 1, QueueWait: 20 * time.Millisecond, MaxTimeout: 5 * time.Second}, gate)
	held := make(chan *httptest.ResponseRecorder, 1)
	go func() { held <- h.do("POST", "/exec/simulate", `{"tool":{"name":"gate","args":{}}}`) }()
	<-gate.started
	if w := h.do("POST", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"x"}}}`); w.Code != 503 || decode[problem](t, w).Code != "sandbox_busy" {
		t.Fatalf("a free call beyond the free share: %d %s", w.Code, w.Body)
	}
	if w := h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"x"}}}`, "Authorization", "Fake good"); w.Code != 200 {
		t.Fatalf("a paid call while the free share is full: %d %s", w.Code, w.Body)
	}
	if w := h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"x"}}}`, "X-Internal-Key", "internal-key-0123456789"); w.Code != 200 {
		t.Fatalf("an internal call while the free share is full: %d %s", w.Code, w.Body)
	}
	release()
	if w := <-held; w.Code != 200 {
		t.Fatalf("the free call holding the share: %d %s", w.Code, w.Body)
	}
}

func TestSimulateSealsAVerifiableRecord(t *testing.T) {
	h := newHarness(t)
	w := h.do("POST", "/exec/simulate", `{"agentId":"a1","tool":{"name":"echo","args":{"text":"hi"}},"dryRun":false,"context":{"purpose":"test"}}`)
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	resp := decode[execResponse](t, w)
	if !resp.DryRun || !resp.Result.Simulated || resp.Status != exec.StatusCompleted || resp.PaymentProtocol != "none" || resp.SchemaVersion != "v1" {
		t.Fatalf("simulate must be a free dry run: %+v", resp)
	}
	if w.Header().Get(headerProofHash) != resp.ProofHash || !strings.HasPrefix(resp.ProofHash, "0x") {
		t.Fatalf("proof hash header %q vs body %q", w.Header().Get(headerProofHash), resp.ProofHash)
	}
	e, err := h.audit.Get(context.Background(), resp.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.Verify(e.Record, resp.ProofHash); err != nil {
		t.Fatalf("stored record does not verify: %v", err)
	}
	var rec Record
	if err := json.Unmarshal(e.Record, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.AgentID != "a1" || rec.Tool.Name != "echo" || string(rec.Context) != `{"purpose":"test"}` || rec.Payment.Protocol != "none" || !rec.IAM.Approved {
		t.Fatalf("record misses inputs: %+v", rec)
	}
	// The job endpoint returns the same record.
	jw := h.do("GET", "/exec/jobs/"+resp.JobID, "")
	if jw.Code != 200 {
		t.Fatalf("job: %d %s", jw.Code, jw.Body)
	}
	job := decode[store.Entry](t, jw)
	if err := proof.Verify(job.Record, job.ProofHash); err != nil || job.ProofHash != resp.ProofHash {
		t.Fatalf("job document does not verify: %v", err)
	}
	// Tampering with any value breaks verification.
	tampered := bytes.Replace(job.Record, []byte(`"a1"`), []byte(`"a2"`), 1)
	if err := proof.Verify(tampered, job.ProofHash); !errors.Is(err, proof.ErrMismatch) {
		t.Fatalf("tampered record verified: %v", err)
	}
}

// Job ids are version 7 UUIDs, in the order the calls were made: the job_id index grows at
// its right edge.
func TestJobIDsAreTimeOrdered(t *testing.T) {
	h := newHarness(t)
	var last string
	for i := range 20 {
		w := h.do("POST", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"hi"}}}`)
		if w.Code != 200 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		id := decode[execResponse](t, w).JobID
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 7 {
			t.Fatalf("job id %q: version %d, %v; want a version 7 UUID", id, u.Version(), err)
		}
		if i > 0 && id <= last {
			t.Fatalf("job id %s came after %s but sorts before it", id, last)
		}
		last = id
	}
}

func TestUnpaidCallGetsTheSeed402WithEveryOffer(t *testing.T) {
	h := newHarness(t)
	for _, hdr := range [][]string{
		nil,
		{"X-Agent-Id", "achilles"}, // an agent id alone never skips payment
	} {
		w := h.do("POST", "/exec/tool", `{"agentId":"achilles","tool":{"name":"echo","args":{"text":"x"}}}`, hdr...)
		if w.Code != 402 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		var body map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		want := map[string]any{
			"type": "https://paymentauth.org/problems/payment-required", "title": "Payment Required", "status": 402.0,
			"amount": "0.01", "currency": "USDC", "network": "base", "payTo": "0x000000000000000000000000000000000000dEaD",
			"instructions": "Pay 0.01 USDC on Base network then retry with payment credential in Authorization header",
			"erc7710":      "Pre-approve spend limit via ERC-7710 scoped delegation for high-frequency calls",
			"acp":          "https://app.virtuals.io/acp", "fakeAccepts": []any{"fake"},
		}
		for k, v := range want {
			if got, _ := json.Marshal(body[k]); string(got) != mustJSON(v) {
				t.Errorf("%s = %s, want %s", k, got, mustJSON(v))
			}
		}
		if id := w.Header().Get("X-Request-ID"); id == "" || body["requestId"] != id {
			t.Errorf("requestId = %v, want the exchange's X-Request-ID %q", body["requestId"], id)
		}
		if w.Header().Get("Cache-Control") != "no-store" || w.Header().Get("X-Fake-Offer") != "0.01" || w.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("402 headers: %v", w.Header())
		}
	}
	if len(h.audit.entries) != 0 || len(h.iam.seen) != 0 {
		t.Fatal("an unpaid call must not reach IAM or the audit log")
	}
	// A real run costs the seed's standard price.
	w := h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"x"}},"dryRun":false}`)
	if b := decode[map[string]any](t, w); b["amount"] != "0.05" || b["amountAtomic"] != "50000" {
		t.Fatalf("real-run price: %v", b)
	}
}

// TestInternalKeyIsOneHeader: two X-Internal-Key fields are refused even when one is right:
// proxies and servers disagree on which of two counts.
func TestInternalKeyIsOneHeader(t *testing.T) {
	h := newHarness(t)
	req := httptest.NewRequest("POST", "/exec/tool", strings.NewReader(`{"tool":{"name":"echo","args":{"text":"x"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add("X-Internal-Key", "internal-key-0123456789")
	req.Header.Add("X-Internal-Key", "something-else-0123456789")
	w := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(w, req)
	if w.Code != 402 || decode[map[string]any](t, w)["code"] != "invalid_internal_key" {
		t.Fatalf("two internal keys: %d %s", w.Code, w.Body)
	}
}

// TestUnsupportedCredentialNamesNoRail: an Authorization scheme no enabled rail accepts is the
// gateway's refusal, whatever its text: a scheme spelled as a rail's name ("mpp" with the MPP
// rail off, "fake" where the fake rail wants "Fake") must not pass for that rail's refusal, in
// the problem type or in the offer that rail is told its credential was refused.
func TestUnsupportedCredentialNamesNoRail(t *testing.T) {
	h := newHarness(t)
	for _, scheme := range []string{"mpp", "fake", "Bearer"} {
		w := h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"x"}}}`, "Authorization", scheme+" abc")
		b := decode[map[string]any](t, w)
		if w.Code != 402 || b["code"] != "unsupported_credential" || b["type"] != "https://paymentauth.org/problems/payment-required" {
			t.Errorf("scheme %q: %d %v", scheme, w.Code, b)
		}
	}
	if len(h.rail.refused) != 0 {
		t.Fatalf("the fake rail's offer was told its credential was refused: %v", h.rail.refused)
	}
}

// TestPathsAreNotCleaned: a path mux would clean is an unknown path, answered with a problem,
// not a bare redirect.
func TestPathsAreNotCleaned(t *testing.T) {
	h := newHarness(t)
	for _, path := range []string{"//exec/simulate", "/exec/./simulate", "/exec/jobs/../../health"} {
		w := h.do("POST", path, `{"tool":{"name":"echo"}}`)
		if w.Code != 404 || decode[problem](t, w).Code != "not_found" {
			t.Fatalf("%s: %d %v %s", path, w.Code, w.Header(), w.Body)
		}
	}
}

func TestPaymentCredentials(t *testing.T) {
	h := newHarness(t)
	call := `{"tool":{"name":"echo","args":{"text":"x"}}}`
	for _, tc := range []struct {
		name     string
		hdr      []string
		status   int
		code     string
		protocol string
	}{
		{"internal key skips payment", []string{"X-Internal-Key", "internal-key-0123456789"}, 200, "", "internal"},
		{"wrong internal key", []string{"X-Internal-Key", "internal-key-0123456788"}, 402, "invalid_internal_key", ""},
		{"rail pays", []string{"Authorization", "Fake good"}, 200, "", "fake"},
		{"rail refuses with its reason", []string{"Authorization", "Fake bad"}, 402, "invalid_fake_token", ""},
		{"rail backend down", []string{"Authorization", "Fake down"}, 503, "payment_backend_unavailable", ""},
		{"credential of an unknown scheme", []string{"Authorization", "x402 abc"}, 402, "unsupported_credential", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := h.do("POST", "/exec/tool", call, tc.hdr...)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			b := decode[map[string]any](t, w)
			if tc.status == 200 {
				if b["paymentProtocol"] != tc.protocol {
					t.Fatalf("paymentProtocol %v", b["paymentProtocol"])
				}
				return
			}
			if b["code"] != tc.code {
				t.Fatalf("code %v, want %s", b["code"], tc.code)
			}
			if tc.status == 503 && w.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		})
	}
	// The internal agent is recorded when the internal caller names none.
	for _, e := range h.audit.entries {
		if e.PaymentProtocol == "internal" && e.CallerAgentID != "achilles" {
			t.Fatalf("internal call recorded as %q", e.CallerAgentID)
		}
	}
}

func TestRefusals(t *testing.T) {
	h := newHarness(t)
	deep := strings.Repeat(`{"a":`, 9) + "1" + strings.Repeat("}", 9)
	for _, tc := range []struct {
		name, path, body, ctype string
		status                  int
		code, field             string
	}{
		{"missing tool.name", "/exec/simulate", `{"tool":{}}`, "", 400, "missing_tool_name", "tool.name"},
		{"missing tool", "/exec/simulate", `{"agentId":"x"}`, "", 400, "missing_tool_name", "tool.name"},
		{"empty body", "/exec/simulate", ``, "", 400, "missing_body", ""},
		{"malformed JSON", "/exec/simulate", `{"tool":`, "", 400, "invalid_json", ""},
		{"duplicate member names", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"a","text":"b"}}}`, "", 400, "invalid_json", ""},
		{"lone surrogate", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"\ud800"}}}`, "", 400, "invalid_json", ""},
		{"wrong type", "/exec/simulate", `{"tool":{"name":7}}`, "", 400, "invalid_field_type", "tool.name"},
		{"dryRun not a boolean", "/exec/simulate", `{"tool":{"name":"echo"},"dryRun":"yes"}`, "", 400, "invalid_field_type", "dryRun"},
		{"unknown tool", "/exec/simulate", `{"tool":{"name":"teleport"}}`, "", 400, "unknown_tool", "tool.name"},
		{"blocked tool", "/exec/tool", `{"tool":{"name":"shell_exec","args":{"cmd":"rm -rf /"}}}`, "", 403, "tool_blocked", "tool.name"},
		{"invalid args name the field", "/exec/simulate", `{"tool":{"name":"echo","args":{}}}`, "", 400, "invalid_args", "tool.args.text"},
		{"extra arg", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"a","x":1}}}`, "", 400, "invalid_args", ""},
		{"too deep", "/exec/simulate", `{"tool":{"name":"echo","args":` + deep + `}}`, "", 400, "json_too_deep", ""},
		{"NUL in a string", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"a\u0000b"}}}`, "", 400, "nul_character", ""},
		{"escaped backslash is not NUL", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"a\\u0000b"}}}`, "", 200, "", ""},
		{"negative timeout", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"a"},"timeout_s":-1}}`, "", 400, "invalid_timeout", "tool.timeout_s"},
		{"context not an object", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"a"}},"context":"x"}`, "", 400, "invalid_field_type", "context"},
		{"oversized body", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"` + strings.Repeat("a", 5000) + `"}}}`, "", 413, "body_too_large", ""},
		{"XML body", "/exec/simulate", `<a/>`, "application/xml", 415, "unsupported_media_type", ""},
		{"curl's default type with a JSON body", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"a"}}}`, "application/x-www-form-urlencoded", 200, "", ""},
		{"curl's default type with a form body", "/exec/simulate", `a=b`, "application/x-www-form-urlencoded", 400, "invalid_json", ""},
		{"unknown route", "/exec/nothing", ``, "", 404, "not_found", ""},
		{"wrong method", "/exec/tools", ``, "", 405, "method_not_allowed", ""},
		{"job id not a uuid", "/exec/jobs/123", ``, "", 400, "invalid_job_id", "jobId"},
		{"unknown job", "/exec/jobs/6f1c1f44-8b0e-4b8e-9c53-2a3c1e0b5d7a", ``, "", 404, "job_not_found", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			if strings.HasPrefix(tc.path, "/exec/jobs") {
				method = "GET"
			}
			var hdr []string
			if tc.ctype != "" {
				hdr = []string{"Content-Type", tc.ctype}
			}
			w := h.do(method, tc.path, tc.body, hdr...)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status == 200 {
				return
			}
			p := decode[problem](t, w)
			if p.Code != tc.code || p.Status != tc.status || p.Error == "" || (tc.field != "" && p.Field != tc.field) {
				t.Fatalf("problem %+v, want code %s field %s", p, tc.code, tc.field)
			}
			if w.Header().Get("Content-Type") != "application/problem+json" || w.Header().Get(headerRequestID) == "" {
				t.Fatalf("headers %v", w.Header())
			}
		})
	}
}

func TestIAMDenialIsSealedAndAudited(t *testing.T) {
	h := newHarness(t)
	w := h.do("POST", "/exec/simulate", `{"agentId":"mallory","tool":{"name":"echo","args":{"text":"x"}}}`)
	if w.Code != 403 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	p := decode[problem](t, w)
	if p.Code != "iam_denied" || p.JobID == "" || !strings.Contains(p.Detail, "agent is deny-listed") {
		t.Fatalf("problem %+v", p)
	}
	e, err := h.audit.Get(context.Background(), p.JobID)
	if err != nil || e.Status != "denied" || e.IAMApproved {
		t.Fatalf("denial not audited: %+v %v", e, err)
	}
	if err := proof.Verify(e.Record, p.ProofHash); err != nil {
		t.Fatal(err)
	}
}

func TestFailingToolsStillAnswerWithAProof(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		tool, status, code string
		exit               int
	}{
		{"boom", exec.StatusFailed, "tool_panic", exec.ExitFailed},
		{"hang", exec.StatusTimeout, "timeout", exec.ExitTimeout},
	} {
		w := h.do("POST", "/exec/tool", `{"tool":{"name":"`+tc.tool+`","timeout_s":0.05}}`, "X-Internal-Key", "internal-key-0123456789")
		if w.Code != 200 {
			t.Fatalf("%s: status %d: %s", tc.tool, w.Code, w.Body)
		}
		r := decode[execResponse](t, w)
		if r.Status != tc.status || r.Result.ExitCode != tc.exit || r.Result.Error == nil || r.Result.Error.Code != tc.code {
			t.Fatalf("%s: %+v", tc.tool, r)
		}
		e, _ := h.audit.Get(context.Background(), r.JobID)
		if err := proof.Verify(e.Record, r.ProofHash); err != nil {
			t.Fatalf("%s: %v", tc.tool, err)
		}
	}
}

func TestTimeoutIsClampedAndRecorded(t *testing.T) {
	h := newHarness(t)
	w := h.do("POST", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"x"},"timeout_s":3600}}`)
	r := decode[execResponse](t, w)
	e, _ := h.audit.Get(context.Background(), r.JobID)
	var rec Record
	_ = json.Unmarshal(e.Record, &rec)
	if rec.Tool.TimeoutMs != 200 {
		t.Fatalf("timeout recorded as %d ms, want the 200 ms maximum", rec.Tool.TimeoutMs)
	}
}

func TestHandlerPanicIsAJSON503(t *testing.T) {
	h := newHarness(t)
	h.srv.audit = panickingAudit{}
	w := h.do("POST", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"x"}}}`)
	if w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if p := decode[problem](t, w); p.Code != "internal_error" || strings.Contains(p.Detail, "audit exploded") {
		t.Fatalf("problem %+v (internal details must not leak)", p)
	}
}

type panickingAudit struct{}

func (panickingAudit) Submit(store.Entry) { panic("audit exploded") }
func (panickingAudit) Get(context.Context, string) (store.Entry, error) {
	return store.Entry{}, store.ErrNotFound
}

func TestHealthAndTools(t *testing.T) {
	h := newHarness(t)
	w := h.do("GET", "/health", "")
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"ok","service":"secureexec","version":"v1"}` {
		t.Fatalf("health: %d %s", w.Code, w.Body)
	}
	tw := h.do("GET", "/exec/tools", "")
	tools := decode[toolsResponse](t, tw)
	if len(tools.Allowed) != 3 || len(tools.Blocked) != 10 || len(tools.Allowed[0].ArgsSchema) == 0 {
		t.Fatalf("tools: %+v", tools)
	}
	mw := h.do("GET", "/metrics", "")
	if mw.Code != 200 || !strings.Contains(mw.Body.String(), "secureexec_http_requests_total") {
		t.Fatalf("metrics: %d", mw.Code)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestMethodNotAllowedNamesTheAllowedMethods(t *testing.T) {
	h := newHarness(t)
	w := h.do("DELETE", "/exec/tool", "")
	if w.Code != 405 || w.Header().Get("Allow") != "POST" {
		t.Fatalf("status %d Allow %q", w.Code, w.Header().Get("Allow"))
	}
	// HEAD is served wherever GET is (RFC 9110): the headers, no body.
	if w := h.do("HEAD", "/health", ""); w.Code != 200 || w.Header().Get("Content-Type") == "" {
		t.Fatalf("HEAD /health: %d %v", w.Code, w.Header())
	}
	if w := h.do("POST", "/health", ""); w.Code != 405 || w.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /health: %d Allow %q", w.Code, w.Header().Get("Allow"))
	}
}

type dryOnlyTool struct{ echoTool }

func (dryOnlyTool) Name() string     { return "dry_only" }
func (dryOnlyTool) DryRunOnly() bool { return true }

func TestDryRunOnlyToolIsRefusedBeforePayment(t *testing.T) {
	h := newHarness(t)
	reg, _ := exec.NewRegistry(dryOnlyTool{})
	h.srv.runner = exec.NewRunner(reg, exec.DefaultLimits, nil)
	w := h.do("POST", "/exec/tool", `{"tool":{"name":"dry_only","args":{"text":"x"}},"dryRun":false}`, "Authorization", "Fake good")
	if w.Code != 400 || decode[problem](t, w).Code != "dry_run_only" {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if len(h.rail.verified) != 0 {
		t.Fatal("a call that can never run must not claim a payment")
	}
}

func TestSettlementFollowsTheOutcome(t *testing.T) {
	h := newHarness(t)
	pay := []string{"Authorization", "Fake good"}

	// Completed: settled once, with the rail's headers and the settlement in the body.
	w := h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"x"}}}`, pay...)
	r := decode[execResponse](t, w)
	if w.Code != 200 || r.Settlement == nil || r.Settlement.Status != "settled" || r.Settlement.Transaction != "0xtx" || w.Header().Get("X-Fake-Receipt") != "tx-1" {
		t.Fatalf("settled call: %d %s", w.Code, w.Body)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "private" {
		t.Fatalf("a paid answer has Cache-Control %q, want private", cc)
	}
	if len(h.rail.settled) != 1 || h.rail.settled[0] != r.JobID {
		t.Fatalf("settled %v, want exactly the job %s", h.rail.settled, r.JobID)
	}

	// A failed tool and a denied call are voided, never settled.
	h.do("POST", "/exec/tool", `{"tool":{"name":"boom"}}`, pay...)
	h.do("POST", "/exec/tool", `{"agentId":"mallory","tool":{"name":"echo","args":{"text":"x"}}}`, pay...)
	if len(h.rail.settled) != 1 || strings.Join(h.rail.voided, ",") != "tool_failed,iam_denied" {
		t.Fatalf("settled %v voided %v", h.rail.settled, h.rail.voided)
	}

	// Pending is reported as pending, with the id to poll.
	h.rail.settleAs = func() (*payments.Settlement, error) {
		return &payments.Settlement{Status: payments.SettlementPending, ID: "pay-2"}, nil
	}
	r = decode[execResponse](t, h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"x"}}}`, pay...))
	if r.Settlement == nil || r.Settlement.Status != "pending" || r.Settlement.ID != "pay-2" || r.Result.Output == nil {
		t.Fatalf("pending: %+v", r)
	}

	// A payment that could not even be recorded withholds the result: 503, no output.
	h.rail.settleAs = func() (*payments.Settlement, error) {
		return nil, errors.Join(payments.ErrNotRecorded, payments.ErrUnavailable)
	}
	w = h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"secret"}}}`, pay...)
	if w.Code != 503 || strings.Contains(w.Body.String(), "secret") || w.Header().Get("Retry-After") == "" {
		t.Fatalf("unrecorded payment: %d %s", w.Code, w.Body)
	}

	// A settlement the chain refuses withholds the result: 402 with the reason, no output, the
	// refusal's own header, and the rail's offer told what it answers.
	h.rail.settleAs = func() (*payments.Settlement, error) {
		return nil, &payments.PaymentError{Rail: "fake", Reason: "invalid_exact_evm_nonce_already_used", Detail: "spent",
			Header: http.Header{"X-Fake-Response": {"refused"}}}
	}
	w = h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"secret"}}}`, pay...)
	if w.Code != 402 || strings.Contains(w.Body.String(), "secret") || decode[map[string]any](t, w)["code"] != "invalid_exact_evm_nonce_already_used" {
		t.Fatalf("refused settlement: %d %s", w.Code, w.Body)
	}
	if w.Header().Get("X-Fake-Response") != "refused" || w.Header().Get("X-Fake-Offer") == "" || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("refused settlement's headers: %v", w.Header())
	}
	if got := strings.Join(h.rail.refused, ","); got != "invalid_exact_evm_nonce_already_used" {
		t.Fatalf("the offers answered refusals %q, want the settlement's", got)
	}
}

// A client that hangs up once its tool has run must not cancel the settlement: a settlement
// cut halfway may be recorded (and charged) while the gateway reports it not recorded.
func TestSettlementOutlivesTheClient(t *testing.T) {
	h := newHarness(t)
	reqCtx, hangUp := context.WithCancel(context.Background())
	defer hangUp()
	var settleCtxErr error
	h.rail.onSettle = func(ctx context.Context) {
		hangUp()
		settleCtxErr = ctx.Err()
	}
	req := httptest.NewRequestWithContext(reqCtx, "POST", "/exec/tool", strings.NewReader(`{"tool":{"name":"echo","args":{"text":"x"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Fake good")
	h.srv.Handler().ServeHTTP(httptest.NewRecorder(), req)
	if len(h.rail.settled) != 1 {
		t.Fatalf("settled %v, want the one call", h.rail.settled)
	}
	if settleCtxErr != nil {
		t.Fatalf("the client's hang-up reached the settlement: %v", settleCtxErr)
	}
}

// idemRail is fakeRail whose credential may name itself with X-Pay-Id.
type idemRail struct{ *fakeRail }

func (idemRail) IdempotencyKey(r *http.Request) (string, string, bool, error) {
	id := r.Header.Get("X-Pay-Id")
	if id == "" {
		return "", "", false, nil
	}
	if strings.ContainsAny(id, " \t") {
		return "", "", false, &payments.PaymentError{Rail: "fake", Reason: "invalid_payload", Detail: "the payment identifier has a space"}
	}
	return "fake:" + id, r.Header.Get("Authorization"), true, nil
}

func TestPaymentIdentifierReplays(t *testing.T) {
	h := newHarness(t)
	rail := idemRail{h.rail}
	h.srv.pay.rails = []payments.Rail{rail}
	h.srv.idem = ledger.NewMemoryIdempotency()
	call := `{"tool":{"name":"echo","args":{"text":"x"}}}`

	first := h.do("POST", "/exec/tool", call, "Authorization", "Fake good", "X-Pay-Id", "pay_1")
	again := h.do("POST", "/exec/tool", call, "Authorization", "Fake good", "X-Pay-Id", "pay_1")
	if first.Code != 200 || again.Code != 200 || first.Body.String() != again.Body.String() || again.Header().Get("X-Idempotent-Replay") != "true" {
		t.Fatalf("replay: %d %s / %d %s", first.Code, first.Body, again.Code, again.Body)
	}
	if len(h.rail.verified) != 1 || len(h.rail.settled) != 1 {
		t.Fatalf("a replay must not verify or settle again: verified %v settled %v", h.rail.verified, h.rail.settled)
	}

	// A malformed identifier is the credential's refusal: a 402 with the offer to pay again.
	w := h.do("POST", "/exec/tool", call, "Authorization", "Fake good", "X-Pay-Id", "pay 2")
	if w.Code != 402 || decode[map[string]any](t, w)["code"] != "invalid_payload" || w.Header().Get("X-Fake-Offer") == "" {
		t.Fatalf("malformed identifier: %d %v %s", w.Code, w.Header(), w.Body)
	}

	// The same identifier with another payment is a conflict.
	w = h.do("POST", "/exec/tool", call, "Authorization", "Fake other", "X-Pay-Id", "pay_1")
	if w.Code != 409 || decode[problem](t, w).Code != "payment_identifier_conflict" {
		t.Fatalf("conflict: %d %s", w.Code, w.Body)
	}

	// A refused payment frees its identifier: the corrected retry is processed.
	if w := h.do("POST", "/exec/tool", call, "Authorization", "Fake bad", "X-Pay-Id", "pay_2"); w.Code != 402 {
		t.Fatalf("refused: %d", w.Code)
	}
	if w := h.do("POST", "/exec/tool", call, "Authorization", "Fake bad", "X-Pay-Id", "pay_2"); w.Code != 402 || w.Header().Get("X-Idempotent-Replay") != "" {
		t.Fatalf("a refusal must not be replayed: %d %v", w.Code, w.Header())
	}
}

// --- the MPP rail, for real, over a fake Stripe -----------------------------------------

// stripeFake answers the Stripe endpoints the MPP rail calls, the way Stripe does: a
// create+confirm with a Shared Payment Token whose outcome the token names (spt_decline… is
// declined, spt_action… needs an action, spt_cus_<name>… pays as customer cus_<name>), an
// idempotency key answered again with Idempotent-Replayed, refunds and cancels. With down set
// it drops every connection, like a Stripe that cannot be reached.
type stripeFake struct {
	srv *httptest.Server

	mu       sync.Mutex
	byKey    map[string][]byte // create responses by idempotency key
	pis      map[string]map[string]any
	creates  int // create+confirm requests that reached the fake
	refunded []string
	canceled []string
	down     bool
}

func newStripeFake(t *testing.T) *stripeFake {
	t.Helper()
	f := &stripeFake{byKey: map[string][]byte{}, pis: map[string]map[string]any{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *stripeFake) setDown(down bool) { f.mu.Lock(); f.down = down; f.mu.Unlock() }

func (f *stripeFake) counts() (creates, refunds, cancels int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.creates, len(f.refunded), len(f.canceled)
}

func stripeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *stripeFake) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer sk_test_") {
		stripeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]any{"type": "invalid_request_error", "message": "Invalid API Key"}})
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, _ := url.ParseQuery(string(body))
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/payment_intents":
		f.creates++
		key := r.Header.Get("Idempotency-Key")
		if prev, ok := f.byKey[key]; ok && key != "" {
			w.Header().Set("Idempotent-Replayed", "true")
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(prev)
			return
		}
		spt := form.Get("shared_payment_granted_token")
		if strings.HasPrefix(spt, "spt_decline") {
			stripeJSON(w, http.StatusPaymentRequired, map[string]any{"error": map[string]any{"type": "card_error", "code": "card_declined",
				"decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}})
			return
		}
		amount, _ := strconv.ParseInt(form.Get("amount"), 10, 64)
		id := fmt.Sprintf("pi_gw%d", f.creates)
		status := "succeeded"
		if strings.HasPrefix(spt, "spt_action") {
			status = "requires_action"
		}
		pi := map[string]any{"id": id, "object": "payment_intent", "amount": amount, "currency": form.Get("currency"),
			"status": status, "livemode": false, "created": time.Now().Unix(), "metadata": map[string]string{}}
		if status == "succeeded" {
			pi["amount_received"] = amount
		}
		if parts := strings.Split(spt, "_"); len(parts) > 2 && parts[1] == "cus" {
			pi["customer"] = "cus_" + parts[2]
		}
		f.pis[id] = pi
		raw, _ := json.Marshal(pi)
		f.byKey[key] = raw
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(raw)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/cancel"):
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/payment_intents/"), "/cancel")
		f.canceled = append(f.canceled, id)
		stripeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "payment_intent", "status": "canceled"})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/refunds":
		pi := form.Get("payment_intent")
		f.refunded = append(f.refunded, pi)
		stripeJSON(w, http.StatusOK, map[string]any{"id": "re_" + pi, "object": "refund", "status": "succeeded", "payment_intent": pi})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/payment_intents/"):
		pi, ok := f.pis[strings.TrimPrefix(r.URL.Path, "/v1/payment_intents/")]
		if !ok {
			stripeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]any{"type": "invalid_request_error", "code": "resource_missing", "message": "No such payment_intent"}})
			return
		}
		stripeJSON(w, http.StatusOK, pi)
	default:
		stripeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]any{"type": "invalid_request_error", "message": "Unrecognized request URL"}})
	}
}

const (
	mppTestSecret = "gateway-test-challenge-secret-0123456789"
	mppTestWhsec  = "whsec_gateway_test_0123456789abcdef"
	mppTestRealm  = "secureexec.example.com"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newMPPRail is the real MPP rail over the fake Stripe at base and an in-process ledger. The
// seed's prices are below Stripe's minimum, so the charges are fixed: 50 cents a dry run, 100
// a real one.
func newMPPRail(t *testing.T, base string) (*mpp.Rail, *ledger.Memory) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	st, err := mpp.NewStripe(mpp.StripeConfig{SecretKey: "sk_test_gateway0123456789", BaseURL: base, Timeout: 2 * time.Second,
		AttemptTimeout: time.Second, MaxAttempts: 2, Transport: tr, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	book := ledger.NewMemory()
	rail, err := mpp.NewRail(mpp.Config{Realm: mppTestRealm, Secret: []byte(mppTestSecret), NetworkID: "profile_test",
		Amounts: map[payments.Mode]uint64{payments.ModeDryRun: 50, payments.ModeReal: 100}, Now: newTickingClock().Now,
		Logger: quietLogger()}, st, book, book)
	if err != nil {
		t.Fatal(err)
	}
	return rail, book
}

// tickingClock moves one second at every reading. The rail's challenge id binds the challenge's
// expiry, written to the second: two 402s within one second carry the same id, so that only
// one of them can be paid (a limit of payments/mpp reported to its owner). The tests that pay
// several times read a clock that never repeats a second.
type tickingClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTickingClock() *tickingClock { return &tickingClock{now: time.Now().UTC()} }

func (c *tickingClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

// newMPPWebhook is the Stripe webhook over book, as cmd/secureexec wires it.
func newMPPWebhook(t *testing.T, book *ledger.Memory, events mpp.EventLog, mutate func(*mpp.WebhookConfig)) http.Handler {
	t.Helper()
	cfg := mpp.WebhookConfig{Secrets: []string{mppTestWhsec}, Logger: quietLogger()}
	if mutate != nil {
		mutate(&cfg)
	}
	marks := NewStripeMarks(book, quietLogger())
	h, err := mpp.NewWebhookHandler(cfg, events, marks, marks)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// wwwAuthRail offers one more Payment challenge, of a method the MPP rail does not serve, to
// show that every rail's WWW-Authenticate reaches the client.
type wwwAuthRail struct{ fakeRail }

func (r *wwwAuthRail) Offer(_ context.Context, p payments.Price, _ *payments.PaymentError) (payments.Challenge, error) {
	h := http.Header{}
	h.Add("WWW-Authenticate", `Payment id="other", realm="`+mppTestRealm+`", method="tempo", intent="charge", request="e30"`)
	return payments.Challenge{Header: h}, nil
}

type mppHarness struct {
	*harness
	stripe *stripeFake
	book   *ledger.Memory
	events *ledger.MemoryIdempotency
}

func newMPPHarness(t *testing.T) *mppHarness {
	t.Helper()
	h := newHarness(t)
	f := newStripeFake(t)
	rail, book := newMPPRail(t, f.srv.URL)
	events := ledger.NewMemoryIdempotency()
	srv, err := New(h.srv.cfg, Deps{
		Runner: h.srv.runner, IAM: DenyFlagged(h.iam, book, quietLogger()), Audit: h.audit,
		Rails:    []payments.Rail{rail, &wwwAuthRail{}},
		Payments: book, Idempotent: ledger.NewMemoryIdempotency(), StripeWebhook: newMPPWebhook(t, book, events, nil),
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	return &mppHarness{harness: h, stripe: f, book: book, events: events}
}

// challenge reads the stripe/charge challenge of a 402 (or of a refusal that carries one).
func stripeChallenge(t *testing.T, hdr http.Header) mpp.Challenge {
	t.Helper()
	for _, v := range hdr.Values("WWW-Authenticate") {
		cs, err := mpp.ParseChallenges(v)
		if err != nil {
			t.Fatalf("WWW-Authenticate %q: %v", v, err)
		}
		for _, c := range cs {
			ch, err := mpp.ChallengeFromParams(c.Params)
			if err == nil && ch.Method == mpp.MethodStripe {
				return ch
			}
		}
	}
	t.Fatalf("no stripe challenge in %v", hdr.Values("WWW-Authenticate"))
	return mpp.Challenge{}
}

// paymentAuth is the Authorization value a payer sends for c with the token spt.
func paymentAuth(t *testing.T, c mpp.Challenge, spt string) string {
	t.Helper()
	cred := mpp.Credential{Challenge: c, Payload: json.RawMessage(fmt.Sprintf(`{"spt":%q}`, spt))}
	tok, err := cred.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return "Payment " + tok
}

const mppCall = `{"agentId":"a1","tool":{"name":"echo","args":{"text":"paid"}}}`

// pay asks for a 402 and answers its stripe challenge with spt.
func (h *mppHarness) pay(t *testing.T, spt string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	w := h.do("POST", "/exec/tool", mppCall)
	if w.Code != 402 {
		t.Fatalf("unpaid call: %d %s", w.Code, w.Body)
	}
	return h.do("POST", "/exec/tool", mppCall, append([]string{"Authorization", paymentAuth(t, stripeChallenge(t, w.Header()), spt)}, hdr...)...)
}

func signedEvent(t *testing.T, typ string, obj map[string]any) (body []byte, signature string) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"id": "evt_" + uuid.NewString()[:8], "object": "event", "api_version": "2026-07-29.preview",
		"created": time.Now().Unix(), "livemode": false, "type": typ, "data": map[string]any{"object": obj}})
	if err != nil {
		t.Fatal(err)
	}
	return body, webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: mppTestWhsec, Timestamp: time.Now()}).Header
}

func (h *mppHarness) postEvent(t *testing.T, body []byte, signature string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, mpp.WebhookPath, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set("Stripe-Signature", signature)
	}
	w := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(w, req)
	return w
}

func TestMPPOffersBesideOtherRails(t *testing.T) {
	h := newMPPHarness(t)
	for _, tc := range []struct {
		name   string
		accept []string
		stripe bool // the stripe/charge challenge is offered
	}{
		{"no Accept-Payment", nil, true},
		{"stripe wanted", []string{"stripe/charge"}, true},
		{"stripe refused with q=0", []string{"tempo/charge, stripe/charge;q=0"}, false},
		{"every method refused", []string{"*/*;q=0"}, false},
		{"no range matches: the normal set", []string{"tempo/session"}, true},
		{"malformed: ignored", []string{"stripe;q=zero"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/exec/tool", strings.NewReader(mppCall))
			req.Header.Set("Content-Type", "application/json")
			for _, v := range tc.accept {
				req.Header.Add("Accept-Payment", v)
			}
			w := httptest.NewRecorder()
			h.srv.Handler().ServeHTTP(w, req)
			if w.Code != 402 || w.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("status %d headers %v", w.Code, w.Header())
			}
			var stripe, tempo int
			for _, v := range w.Header().Values("WWW-Authenticate") {
				switch {
				case strings.Contains(v, `method="stripe"`):
					stripe++
				case strings.Contains(v, `method="tempo"`):
					tempo++
				}
			}
			if tempo != 1 || (stripe == 1) != tc.stripe || stripe > 1 {
				t.Fatalf("challenges %q: stripe %d tempo %d", w.Header().Values("WWW-Authenticate"), stripe, tempo)
			}
			b := decode[map[string]any](t, w)
			if _, has := b["challengeId"]; has != tc.stripe || b["type"] != mpp.ProblemType(mpp.ReasonPaymentRequired) {
				t.Fatalf("body %v", b)
			}
			if tc.stripe {
				c := stripeChallenge(t, w.Header())
				if c.Realm != mppTestRealm || c.Intent != "charge" || c.Expires == "" || b["challengeId"] != c.ID {
					t.Fatalf("challenge %+v, body challengeId %v", c, b["challengeId"])
				}
			}
		})
	}
	if creates, _, _ := h.stripe.counts(); creates != 0 {
		t.Fatal("an offer must not touch Stripe")
	}
}

func TestMPPPaysOnceWithAReceipt(t *testing.T) {
	h := newMPPHarness(t)
	w := h.do("POST", "/exec/tool", mppCall)
	c := stripeChallenge(t, w.Header())
	auth := paymentAuth(t, c, "spt_ok_1")
	paid := h.do("POST", "/exec/tool", mppCall, "Authorization", auth)
	if paid.Code != 200 {
		t.Fatalf("paid call: %d %s", paid.Code, paid.Body)
	}
	r := decode[execResponse](t, paid)
	rcpt, err := mpp.DecodeReceipt(paid.Header().Get("Payment-Receipt"))
	if err != nil || rcpt.Status != "success" || rcpt.Method != "stripe" || rcpt.Reference != "pi_gw1" || paid.Header().Get("Cache-Control") != "private" {
		t.Fatalf("receipt %+v (%v), headers %v", rcpt, err, paid.Header())
	}
	if r.PaymentProtocol != "mpp" || r.Settlement == nil || r.Settlement.Status != "settled" {
		t.Fatalf("body %+v", r)
	}
	pw := h.do("GET", "/payments/"+r.Settlement.ID, "")
	pv := decode[paymentView](t, pw)
	if pw.Code != 200 || pv.Rail != "mpp" || pv.Status != "settled" || pv.Network != "stripe" || pv.Asset != "usd" || pv.Amount != "50" ||
		pv.Transaction != "pi_gw1" || pv.JobID != r.JobID {
		t.Fatalf("GET /payments/%s: %d %+v", r.Settlement.ID, pw.Code, pv)
	}

	// The same credential again is a lost response resent: the stored answer, not a second
	// charge. Another token for the same challenge is refused. Neither reaches Stripe.
	again := h.do("POST", "/exec/tool", mppCall, "Authorization", auth)
	if again.Code != 200 || again.Header().Get("X-Idempotent-Replay") != "true" || again.Body.String() != paid.Body.String() {
		t.Fatalf("resend: %d %v %s", again.Code, again.Header(), again.Body)
	}
	other := h.do("POST", "/exec/tool", mppCall, "Authorization", paymentAuth(t, c, "spt_ok_2"))
	if other.Code != 402 || decode[problem](t, other).Code != "invalid_challenge" || other.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("second token for a used challenge: %d %s", other.Code, other.Body)
	}
	if creates, refunds, _ := h.stripe.counts(); creates != 1 || refunds != 0 {
		t.Fatalf("Stripe saw %d creates and %d refunds, want 1 and 0", creates, refunds)
	}

	// Without the replay store, a used challenge is refused by the rail itself, with a fresh
	// challenge to pay again.
	h.srv.idem = nil
	used := h.do("POST", "/exec/tool", mppCall, "Authorization", auth)
	b := decode[map[string]any](t, used)
	if used.Code != 402 || b["code"] != "invalid_challenge" || b["type"] != mpp.ProblemType(mpp.ReasonInvalidChallenge) ||
		stripeChallenge(t, used.Header()).ID == c.ID {
		t.Fatalf("used challenge: %d %v", used.Code, b)
	}
	if creates, _, _ := h.stripe.counts(); creates != 1 {
		t.Fatalf("a used challenge reached Stripe (%d creates)", creates)
	}
}

func TestMPPRefusals(t *testing.T) {
	h := newMPPHarness(t)
	w := h.do("POST", "/exec/tool", mppCall)
	c := stripeChallenge(t, w.Header())
	tempo := c
	tempo.Method = "tempo"
	expired := c
	expired.Expires = "2020-01-01T00:00:00Z"
	for _, tc := range []struct {
		name   string
		auth   []string
		status int
		code   string
	}{
		{"malformed credential", []string{"Payment dGhpcyBpcyBnYXJiYWdl"}, 402, "malformed_credential"},
		{"tampered challenge", []string{paymentAuth(t, expired, "spt_ok_3")}, 402, "invalid_challenge"},
		{"unsupported method", []string{paymentAuth(t, tempo, "spt_ok_3")}, 400, "method_unsupported"},
		{"two Authorization fields", []string{paymentAuth(t, c, "spt_ok_3"), "Payment eyJ9"}, 400, "bad_request"},
		{"bad payload", []string{paymentAuth(t, c, "tok_not_an_spt")}, 402, "invalid_payload"},
		{"declined card", []string{paymentAuth(t, c, "spt_decline_1")}, 402, "verification_failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/exec/tool", strings.NewReader(mppCall))
			req.Header.Set("Content-Type", "application/json")
			for _, a := range tc.auth {
				req.Header.Add("Authorization", a)
			}
			w := httptest.NewRecorder()
			h.srv.Handler().ServeHTTP(w, req)
			b := decode[map[string]any](t, w)
			slug := strings.ReplaceAll(tc.code, "_", "-")
			if w.Code != tc.status || b["code"] != tc.code || b["status"] != float64(tc.status) || b["type"] != mpp.ProblemType(slug) ||
				b["title"] != http.StatusText(tc.status) || b["detail"] == "" {
				t.Fatalf("%d %v", w.Code, b)
			}
			// Every refusal carries a fresh challenge, so that the payer can pay again.
			if fresh := stripeChallenge(t, w.Header()); fresh.ID == c.ID || w.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("refusal without a fresh challenge: %v", w.Header())
			}
		})
	}
	if _, _, cancels := h.stripe.counts(); cancels != 0 || len(openPaymentsOf(t, h.book)) != 0 {
		t.Fatal("a refusal left a payment behind")
	}
	if len(h.audit.entries) != 0 {
		t.Fatal("a refused payment reached the audit log")
	}
}

func openPaymentsOf(t *testing.T, m *ledger.Memory) []ledger.Payment {
	t.Helper()
	ps, err := m.ListRecoverable(context.Background(), -time.Hour, 100)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestMPPStripeUnreachable(t *testing.T) {
	h := newMPPHarness(t)
	h.stripe.setDown(true)
	w := h.pay(t, "spt_ok_down")
	if w.Code != 503 || w.Header().Get("Retry-After") == "" || decode[problem](t, w).Code != "payment_backend_unavailable" {
		t.Fatalf("Stripe away: %d %v %s", w.Code, w.Header(), w.Body)
	}
	// The charge was written ahead, and stays open without a PaymentIntent: a resend of the
	// credential resumes it, and reconciliation closes it otherwise.
	open := openPaymentsOf(t, h.book)
	if creates, _, _ := h.stripe.counts(); creates != 0 || len(open) != 1 || open[0].TxHash != "" || open[0].Attempts != 1 || len(h.audit.entries) != 0 {
		t.Fatalf("a call with Stripe away charged or ran something: %d creates, open payments %+v", creates, open)
	}
}

func TestMPPDeniedCallIsRefunded(t *testing.T) {
	h := newMPPHarness(t)
	w := h.do("POST", "/exec/tool", mppCall)
	denied := h.do("POST", "/exec/tool", `{"agentId":"mallory","tool":{"name":"echo","args":{"text":"x"}}}`,
		"Authorization", paymentAuth(t, stripeChallenge(t, w.Header()), "spt_ok_denied"))
	if denied.Code != 403 || decode[problem](t, denied).Code != "iam_denied" || len(denied.Header().Values("WWW-Authenticate")) != 0 ||
		denied.Header().Get("Payment-Receipt") != "" {
		t.Fatalf("paid, then denied by policy: %d %v %s", denied.Code, denied.Header(), denied.Body)
	}
	p, err := h.book.GetByReference(context.Background(), "mpp", "pi_gw1")
	if _, refunds, _ := h.stripe.counts(); err != nil || refunds != 1 || p.Status != ledger.StatusNotCharged {
		t.Fatalf("the charge of a denied call must be refunded: %d refunds, payment %+v (%v)", refunds, p, err)
	}
}

func TestStripeWebhookMarksAndFlags(t *testing.T) {
	h := newMPPHarness(t)
	// An agent paying as Stripe customer cus_agent1 has a call, then disputes the charge.
	first := h.pay(t, "spt_cus_agent1_1")
	if first.Code != 200 {
		t.Fatalf("first call: %d %s", first.Code, first.Body)
	}
	// The payment is keyed by its challenge, recorded before Stripe named the PaymentIntent
	// and the customer, and found by the PaymentIntent the webhook names.
	p, err := h.book.GetByReference(context.Background(), "mpp", "pi_gw1")
	if err != nil || !strings.HasPrefix(p.NonceKey, "mpp:challenge:") || payerOf(p) != "cus_agent1" {
		t.Fatalf("payment %+v, %v", p, err)
	}
	if got := h.do("GET", "/payments/"+p.ID.String(), ""); got.Code != 200 || decode[map[string]any](t, got)["payer"] != "cus_agent1" {
		t.Fatalf("GET /payments/{id} of a token payment: %d %s", got.Code, got.Body)
	}
	body, sig := signedEvent(t, "charge.dispute.created", map[string]any{"id": "dp_1", "object": "dispute", "charge": "ch_1",
		"payment_intent": "pi_gw1", "amount": 50, "currency": "usd", "reason": "fraudulent", "status": "needs_response"})
	for _, tc := range []struct {
		name   string
		sig    string
		status int
		want   string
	}{
		{"unsigned", "", 400, `"invalid_signature"`},
		{"signed with another secret", webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: "whsec_not_ours_0123456789", Timestamp: time.Now()}).Header, 400, `"invalid_signature"`},
		{"signed", sig, 200, `"received":true`},
		{"delivered again", sig, 200, `"duplicate":true`},
	} {
		w := h.postEvent(t, body, tc.sig)
		if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.want) || w.Header().Get(headerRequestID) == "" {
			t.Fatalf("%s: %d %s", tc.name, w.Code, w.Body)
		}
	}
	marks, _ := h.book.Marks(context.Background(), p.ID)
	f, flagged, _ := h.book.Flagged(context.Background(), "cus_agent1")
	if len(marks) != 1 || marks[0].Kind != ledger.MarkDisputed || marks[0].Reason != "fraudulent" || !flagged || f.JobID.String() != p.JobID.String() {
		t.Fatalf("marks %+v, flag %+v %v", marks, f, flagged)
	}

	// The flagged payer's next call is paid, denied by policy and refunded.
	next := h.pay(t, "spt_cus_agent1_2")
	var pr problem
	_ = json.Unmarshal(next.Body.Bytes(), &pr)
	if next.Code != 403 || pr.Code != "iam_denied" || !strings.Contains(pr.Detail, ReasonPayerFlagged) {
		t.Fatalf("flagged payer: %d %s", next.Code, next.Body)
	}
	if _, refunds, _ := h.stripe.counts(); refunds != 1 {
		t.Fatalf("%d refunds, want the denied call's", refunds)
	}
	// Another payer is not affected.
	if w := h.pay(t, "spt_cus_agent2_1"); w.Code != 200 {
		t.Fatalf("another payer: %d %s", w.Code, w.Body)
	}

	// The gateway's own refund (the denied call's) is marked but flags nobody new; a refund
	// event for a PaymentIntent the gateway never took marks nothing.
	for _, pi := range []string{"pi_gw2", "pi_elsewhere"} {
		body, sig := signedEvent(t, "charge.refunded", map[string]any{"id": "ch_2", "object": "charge", "payment_intent": pi,
			"amount_refunded": 50, "currency": "usd"})
		if w := h.postEvent(t, body, sig); w.Code != 200 {
			t.Fatalf("refund of %s: %d %s", pi, w.Code, w.Body)
		}
	}
	denied, _ := h.book.GetByReference(context.Background(), "mpp", "pi_gw2")
	if marks, _ := h.book.Marks(context.Background(), denied.ID); len(marks) != 1 || marks[0].Kind != ledger.MarkRefunded {
		t.Fatalf("marks of the refunded payment: %+v", marks)
	}
	if _, flagged, _ := h.book.Flagged(context.Background(), "cus_agent2"); flagged {
		t.Fatal("a payer was flagged for the gateway's own refund")
	}

	// Only POST is served; the body cap and an event still in flight have their own answers.
	if w := h.do("GET", mpp.WebhookPath, ""); w.Code != 405 || w.Header().Get("Allow") != "POST" {
		t.Fatalf("GET: %d %v", w.Code, w.Header())
	}
}

func TestWebhookRouteOnlyWhenConfigured(t *testing.T) {
	h := newHarness(t)
	if w := h.do("POST", mpp.WebhookPath, `{}`); w.Code != 404 {
		t.Fatalf("webhook without configuration: %d", w.Code)
	}
}

// failingFlags is a flag store that cannot answer.
type failingFlags struct{}

func (failingFlags) Flagged(context.Context, string) (ledger.Flag, bool, error) {
	return ledger.Flag{}, false, errors.New("connection refused")
}

func TestDenyFlagged(t *testing.T) {
	book := ledger.NewMemory()
	if _, err := book.FlagPayer(context.Background(), ledger.Flag{EventID: "evt_1", Payer: "cus_bad", Reason: "charge_refunded"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		flags    FlagChecker
		req      identity.Request
		approved bool
		reason   string
	}{
		{"flagged payer", book, identity.Request{Payer: "cus_bad"}, false, ReasonPayerFlagged},
		{"other payer", book, identity.Request{Payer: "cus_good"}, true, "policy_allows"},
		{"no payer (free call)", book, identity.Request{}, true, "policy_allows"},
		{"internal caller", book, identity.Request{Payer: "cus_bad", Internal: true}, true, "policy_allows"},
		{"flags unavailable: next decides", failingFlags{}, identity.Request{Payer: "cus_bad"}, true, "policy_allows"},
		{"denied by next", book, identity.Request{Payer: "cus_good", AgentID: "mallory"}, false, "agent_denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iam := &fakeIAM{deny: map[string]bool{"mallory": true}}
			o := DenyFlagged(iam, tc.flags, quietLogger()).Decide(context.Background(), tc.req)
			if o.Approved != tc.approved || o.Reason != tc.reason {
				t.Fatalf("outcome %+v", o)
			}
			if tc.reason == ReasonPayerFlagged && (len(iam.seen) != 0 || o.Decision != identity.DecisionDenied || o.Source != identity.SourcePolicy || len(o.Violations) != 1) {
				t.Fatalf("a flagged payer reached the next stage or lacks its violation: %+v", o)
			}
		})
	}
}

func TestPaymentMetricLabelsAreBounded(t *testing.T) {
	h := newHarness(t)
	for i := range 20 {
		h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"x"}}}`, "Authorization", fmt.Sprintf("Scheme%d abc", i))
	}
	body := h.do("GET", "/metrics", "").Body.String()
	if strings.Contains(body, "Scheme1") || !strings.Contains(body, `protocol="other"`) {
		t.Fatal("a caller's Authorization scheme must never become a metric label")
	}
}

// TestReplayEchoesTheRetrysRequestID: a replayed response is the stored one, but X-Request-ID
// belongs to this exchange: the retry's own id is echoed, not the first request's.
func TestReplayEchoesTheRetrysRequestID(t *testing.T) {
	h := newHarness(t)
	h.srv.pay.rails = []payments.Rail{idemRail{h.rail}}
	h.srv.idem = ledger.NewMemoryIdempotency()
	call := `{"tool":{"name":"echo","args":{"text":"x"}}}`

	first := h.do("POST", "/exec/tool", call, "Authorization", "Fake good", "X-Pay-Id", "pay_1", "X-Request-ID", "req-first")
	again := h.do("POST", "/exec/tool", call, "Authorization", "Fake good", "X-Pay-Id", "pay_1", "X-Request-ID", "req-retry")
	if first.Code != 200 || again.Code != 200 || again.Header().Get("X-Idempotent-Replay") != "true" {
		t.Fatalf("replay: %d / %d %v", first.Code, again.Code, again.Header())
	}
	if got := again.Header().Values(headerRequestID); len(got) != 1 || got[0] != "req-retry" {
		t.Fatalf("replay X-Request-ID %q, want the retry's own %q", got, "req-retry")
	}
}

// TestPanickedRequestIsCounted: a request answered 503 by the recoverer is counted under its
// route and status, like every other answer: a 5xx rate that leaves out panics hides them.
func TestPanickedRequestIsCounted(t *testing.T) {
	h := newHarness(t)
	h.srv.audit = panickingAudit{}
	if w := h.do("POST", "/exec/simulate", `{"tool":{"name":"echo","args":{"text":"x"}}}`); w.Code != 503 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	mw := h.do("GET", "/metrics", "")
	if want := `secureexec_http_requests_total{code="503",route="exec_simulate"} 1`; !strings.Contains(mw.Body.String(), want) {
		t.Fatalf("metrics lack %s:\n%s", want, mw.Body)
	}
}

// TestProblemBodiesAreBounded: a refusal that names a field or quotes the request (a long
// member name in tool.args, in a duplicate, under a syntax error) stays small: the field and
// the detail are cut, on a character boundary, instead of echoing the name several times over.
func TestProblemBodiesAreBounded(t *testing.T) {
	h := newHarness(t)
	long := strings.Repeat("é", 600) // 1200 bytes, two per character
	for _, tc := range []struct{ name, body, code string }{
		{"unknown argument", `{"tool":{"name":"echo","args":{"text":"x","` + long + `":1}}}`, "invalid_args"},
		{"duplicate member", `{"context":{"` + long + `":1,"` + long + `":2},"tool":{"name":"echo"}}`, "invalid_json"},
		{"syntax error under a member", `{"tool":{"args":{"` + long + `":tru}}}`, "invalid_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := h.do("POST", "/exec/simulate", tc.body)
			p := decode[problem](t, w)
			if w.Code != 400 || p.Code != tc.code {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			if w.Body.Len() > 3072 || len(p.Field) > 300 || !utf8.ValidString(p.Field) || !utf8.ValidString(p.Detail) {
				t.Fatalf("a %d-byte request got a %d-byte refusal (field %d bytes, detail %d bytes)", len(tc.body), w.Body.Len(), len(p.Field), len(p.Detail))
			}
		})
	}
}

// leakyRail fails as a backend out of reach whose error names its URL (an RPC endpoint with
// its API key in the path) and the address it dialled, as net/http's errors do.
type leakyRail struct{ *fakeRail }

func (leakyRail) Verify(context.Context, *http.Request, payments.Price) (*payments.Authorization, error) {
	return nil, fmt.Errorf("x402: reading the payer's balance: %w: Post \"https://rpc.internal.invalid/v2/sk_live_SECRETKEY\": dial tcp 10.20.30.40:443: i/o timeout; redis://:hunter2@[fd00::7]:6379", payments.ErrUnavailable)
}

// A 503 tells the payer what kind of thing failed, never where it is or the secret in its URL:
// the full cause goes to the gateway's log.
func TestUnavailableDetailHidesEndpoints(t *testing.T) {
	h := newHarness(t)
	h.srv.pay.rails = []payments.Rail{leakyRail{h.rail}}
	w := h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"x"}}}`, "Authorization", "Fake good")
	p := decode[problem](t, w)
	if w.Code != 503 || p.Code != "payment_backend_unavailable" {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	for _, secret := range []string{"SECRETKEY", "rpc.internal.invalid", "10.20.30.40", "hunter2", "fd00::7"} {
		if strings.Contains(w.Body.String(), secret) {
			t.Errorf("the 503 shows %q: %s", secret, w.Body)
		}
	}
	if !strings.Contains(p.Detail, "reading the payer's balance") || !strings.Contains(p.Detail, "i/o timeout") {
		t.Errorf("the 503 lost what failed: %s", p.Detail)
	}
}
