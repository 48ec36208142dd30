package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
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
	settleAs func() (*payments.Settlement, error)
}

func (f *fakeRail) Name() string { return "fake" }
func (f *fakeRail) Offer(_ context.Context, p payments.Price) (payments.Challenge, error) {
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
func (f *fakeRail) Settle(_ context.Context, a *payments.Authorization) (*payments.Settlement, error) {
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
	reg, err := exec.NewRegistry(echoTool{}, panicTool{}, hangTool{})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{iam: &fakeIAM{deny: map[string]bool{"mallory": true}}, audit: &memAudit{entries: map[string]store.Entry{}}, rail: &fakeRail{}}
	cfg := DefaultConfig
	cfg.MaxBodyBytes = 4096
	cfg.MaxJSONDepth = 8
	cfg.Payment.InternalAPIKey = "internal-key-0123456789"
	cfg.Payment.PayTo = "0x000000000000000000000000000000000000dEaD"
	lim := exec.DefaultLimits
	lim.MaxTimeout = 200 * time.Millisecond
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

	// A settlement the chain refuses withholds the result: 402 with the reason, no output.
	h.rail.settleAs = func() (*payments.Settlement, error) {
		return nil, &payments.PaymentError{Rail: "fake", Reason: "invalid_exact_evm_nonce_already_used", Detail: "spent"}
	}
	w = h.do("POST", "/exec/tool", `{"tool":{"name":"echo","args":{"text":"secret"}}}`, pay...)
	if w.Code != 402 || strings.Contains(w.Body.String(), "secret") || decode[map[string]any](t, w)["code"] != "invalid_exact_evm_nonce_already_used" {
		t.Fatalf("refused settlement: %d %s", w.Code, w.Body)
	}
}

// idemRail is fakeRail whose credential may name itself with X-Pay-Id.
type idemRail struct{ *fakeRail }

func (idemRail) IdempotencyKey(r *http.Request) (string, string, bool, error) {
	id := r.Header.Get("X-Pay-Id")
	if id == "" {
		return "", "", false, nil
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

	// The same identifier with another payment is a conflict.
	w := h.do("POST", "/exec/tool", call, "Authorization", "Fake other", "X-Pay-Id", "pay_1")
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
