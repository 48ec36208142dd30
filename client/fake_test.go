package client

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/x402"
	"github.com/secureexec/secureexec/proof"
)

// Public anvil/hardhat test keys (chain-tooling.md §8): #2 pays, #1 is paid. Never use on a
// real network.
const (
	payerKeyHex = "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
	payerHex    = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
	payToHex    = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
	testPrice   = 10_000 // 0.01 USDC
)

// localToken is the dev chain's EIP-3009 test token: the first contract anvil key #0 deploys.
var localToken = x402.CustomNetwork(31337, common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3"), "USD Coin", "2")

var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func payerKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := crypto.HexToECDSA(payerKeyHex)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fakeGateway answers like the SecureExec gateway, with a real x402 offer and a real check of
// the payment: it decodes PAYMENT-SIGNATURE / X-PAYMENT with the x402 package's decoder and
// verifies it with x402.VerifyLocal against the offer it made.
type fakeGateway struct {
	t              testing.TB
	srv            *httptest.Server
	accepts        []x402.PaymentRequirements // the offer; one entry on localToken by default
	v1             bool                       // offer in a v1 body instead of PAYMENT-REQUIRED
	declareID      bool                       // declare the payment-identifier extension
	refuseAfterPay string                     // refuse even a valid payment with this reason
	settle         string                     // SettlementSettled (default), SettlementPending or SettlementFailed
	internalKey    string
	now            func() time.Time
	tamper         string                      // "record": serve a record that no longer matches its hash; "other": another job's record
	redirectTo     string                      // where the "redirect" tool sends the client
	afterPay       func(w http.ResponseWriter) // answers instead of the result once a payment verified
	chargeSimulate bool                        // /exec/simulate asks for payment too
	// dropPaidAnswers: with declareID, this many paid answers are kept for replay and then
	// lost: the connection is closed instead of answering.
	dropPaidAnswers int

	answers map[string]keptAnswer // payment id -> the answer a resend of that id replays

	mu       sync.Mutex
	requests []seenRequest
	verified []*x402.Verified
	payloads []*x402.PaymentPayload
	jobs     map[string]fakeJob
}

// keptAnswer is a 2xx answer kept for a resend of the same payment, as the gateway keeps one
// per payment identifier (x402.md §9).
type keptAnswer struct {
	fingerprint [32]byte
	status      int
	header      http.Header
	body        []byte
}

type seenRequest struct {
	method, path string
	header       http.Header
	body         []byte
}

type fakeJob struct {
	hash   string
	record json.RawMessage
}

func newFake(t testing.TB, configure func(*fakeGateway)) *fakeGateway {
	t.Helper()
	f := &fakeGateway{
		t:       t,
		accepts: []x402.PaymentRequirements{x402.Requirements(localToken, payments.Price{Amount: testPrice}, common.HexToAddress(payToHex), time.Minute)},
		now:     func() time.Time { return fixedNow },
		jobs:    map[string]fakeJob{},
		answers: map[string]keptAnswer{},
	}
	if configure != nil {
		configure(f)
	}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

// newTestClient is a client of f paying with anvil key #2, allowed the local test token.
func newTestClient(t testing.TB, f *fakeGateway, opts ...Option) *Client {
	t.Helper()
	base := []Option{WithHTTPClient(f.srv.Client()), WithX402Signer(payerKey(t)), WithAllowedAssets(localToken), WithClock(func() time.Time { return fixedNow })}
	c, err := New(f.srv.URL, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func (f *fakeGateway) seen() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenRequest(nil), f.requests...)
}

// paid returns the payments the fake verified so far, and their payloads.
func (f *fakeGateway) paid() ([]*x402.Verified, []*x402.PaymentPayload) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*x402.Verified(nil), f.verified...), append([]*x402.PaymentPayload(nil), f.payloads...)
}

func (f *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	f.mu.Lock()
	f.requests = append(f.requests, seenRequest{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body})
	f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/health":
		writeTestJSON(w, http.StatusOK, "application/json", Health{Status: "ok", Service: "secureexec", Version: "test"})
	case r.Method == http.MethodGet && r.URL.Path == "/exec/tools":
		writeTestJSON(w, http.StatusOK, "application/json", Tools{
			Allowed:       []ToolInfo{{Name: "json_parse", Description: "parse JSON", ArgsSchema: json.RawMessage(`{"type":"object"}`)}},
			Blocked:       []BlockedTool{{Name: "shell_exec", Reason: "arbitrary code execution"}},
			Prices:        []ToolPrice{{Mode: "dry_run", Endpoint: "/exec/tool", Amount: "0.01", AmountAtomic: "10000", Currency: "USDC"}},
			SchemaVersion: "v1",
		})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/exec/jobs/"):
		f.serveJob(w, strings.TrimPrefix(r.URL.Path, "/exec/jobs/"))
	case r.Method == http.MethodPost && (r.URL.Path == "/exec/tool" || r.URL.Path == "/exec/simulate"):
		f.serveExec(w, r, body)
	default:
		writeProblem(w, http.StatusNotFound, "not_found", "", "no such endpoint")
	}
}

func (f *fakeGateway) serveExec(w http.ResponseWriter, r *http.Request, body []byte) {
	var req wireCall
	if err := json.Unmarshal(body, &req); err != nil || req.Tool.Name == "" {
		writeProblem(w, http.StatusBadRequest, "invalid_json", "", "the body is not a call")
		return
	}
	switch req.Tool.Name {
	case "no_such_tool":
		writeProblem(w, http.StatusBadRequest, "unknown_tool", "tool.name", "unknown tool no_such_tool")
		return
	case "busy":
		w.Header().Set("Retry-After", "2")
		writeProblem(w, http.StatusServiceUnavailable, "sandbox_busy", "", "all sandbox slots are in use")
		return
	case "proxy_error":
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html>502 Bad Gateway\x1b[31m</html>")
		return
	case "slow":
		f.stall(r.Context())
	case "bare_402":
		writeProblem(w, http.StatusPaymentRequired, "payment_required", "", "pay somehow")
		return
	case "garbled_402":
		w.Header().Set(x402.HeaderPaymentRequired, "not base64!")
		writeProblem(w, http.StatusPaymentRequired, "payment_required", "", "")
		return
	case "redirect":
		http.Redirect(w, r, f.redirectTo, http.StatusTemporaryRedirect)
		return
	}
	dryRun := r.URL.Path == "/exec/simulate" || req.DryRun == nil || *req.DryRun

	protocol, payer := "none", ""
	var settlement *x402.SettlementResponse
	settlementHeader := x402.HeaderPaymentResponse
	switch {
	case r.URL.Path == "/exec/simulate" && !f.chargeSimulate:
	case f.internalKey != "" && r.Header.Get(HeaderInternalKey) == f.internalKey:
		protocol = "internal"
	case r.Header.Get(HeaderInternalKey) != "":
		f.write402(w, "invalid_internal_key", "the internal key is not valid")
		return
	case x402.HasCredential(r.Header):
		if id, fp, ok := f.paymentID(r.Header); ok {
			// Looked up before verifying, as the gateway does: a resend of a settled payment
			// would not verify again.
			if f.replayed(w, id, fp) {
				return
			}
			rec := httptest.NewRecorder()
			defer f.keepAnswer(w, rec, id, fp)
			w = rec
		}
		v, p, reason, detail := f.verify(r.Header)
		if reason != "" {
			f.write402(w, reason, detail)
			return
		}
		if f.refuseAfterPay != "" {
			f.write402(w, f.refuseAfterPay, "refused by the test")
			return
		}
		if f.afterPay != nil {
			f.afterPay(w)
			return
		}
		if req.Tool.Name == "slow_after_pay" {
			f.stall(r.Context())
		}
		protocol, payer = "x402", v.Payer.Hex()
		settlement = f.settlement(v, p)
		settlementHeader = x402.ResponseHeader(p.X402Version)
	default:
		f.write402(w, "payment_required", "")
		return
	}

	rec := map[string]any{
		"schemaVersion": "v1", "jobId": uuid.NewString(), "tool": map[string]any{"name": req.Tool.Name, "args": req.Tool.Args},
		"dryRun": dryRun, "status": "completed", "agentId": req.AgentID,
		"result":  map[string]any{"output": json.RawMessage(`{"parsed":true}`), "exitCode": 0, "simulated": dryRun},
		"payment": map[string]any{"protocol": protocol, "payer": payer},
	}
	canonical, hash, err := proof.Seal(rec)
	if err != nil {
		f.t.Errorf("fake: seal: %v", err)
		return
	}
	jobID := rec["jobId"].(string)
	f.mu.Lock()
	f.jobs[jobID] = fakeJob{hash: hash, record: canonical}
	f.mu.Unlock()

	if settlement != nil {
		v, err := x402.EncodeSettlementResponse(*settlement)
		if err != nil {
			f.t.Errorf("fake: encode settlement: %v", err)
		}
		w.Header().Set(settlementHeader, v)
	}
	w.Header().Set(HeaderRequestID, r.Header.Get(HeaderRequestID))
	writeTestJSON(w, http.StatusOK, "application/json", map[string]any{
		"jobId": jobID, "tool": req.Tool.Name, "dryRun": dryRun, "status": "completed",
		"result": rec["result"], "iamApproved": true,
		"iam":       IAMOutcome{Approved: true, Decision: "allow", Source: "policy", Reason: "allowed"},
		"proofHash": hash, "paymentProtocol": protocol, "latencyMs": 3,
		"timestamp": fixedNow.Format(time.RFC3339), "schemaVersion": "v1",
	})
}

// paymentID returns the payment identifier of a request's payment, when the fake declares the
// extension and the payment names one.
func (f *fakeGateway) paymentID(h http.Header) (string, [32]byte, bool) {
	if !f.declareID {
		return "", [32]byte{}, false
	}
	p, _, err := x402.PayloadFromRequest(h)
	if err != nil {
		return "", [32]byte{}, false
	}
	id, ok, err := p.PaymentIdentifier()
	if err != nil || !ok {
		return "", [32]byte{}, false
	}
	return id, p.Fingerprint(), true
}

// replayed answers a resend of a payment identifier: its kept answer, or 409 for another payment
// under the same id. It reports false for an id it has no answer for.
func (f *fakeGateway) replayed(w http.ResponseWriter, id string, fp [32]byte) bool {
	f.mu.Lock()
	a, ok := f.answers[id]
	f.mu.Unlock()
	switch {
	case !ok:
		return false
	case a.fingerprint != fp:
		writeProblem(w, http.StatusConflict, "payment_identifier_conflict", "", "another payment under this id")
	default:
		for k, vs := range a.header {
			w.Header()[k] = vs
		}
		w.Header().Set("X-Idempotent-Replay", "true")
		w.WriteHeader(a.status)
		_, _ = w.Write(a.body)
	}
	return true
}

// keepAnswer keeps a 2xx answer for replay, then sends it, or loses it (dropPaidAnswers).
func (f *fakeGateway) keepAnswer(w http.ResponseWriter, rec *httptest.ResponseRecorder, id string, fp [32]byte) {
	res := rec.Result()
	f.mu.Lock()
	if res.StatusCode/100 == 2 {
		f.answers[id] = keptAnswer{fingerprint: fp, status: res.StatusCode, header: res.Header.Clone(), body: rec.Body.Bytes()}
	}
	drop := f.dropPaidAnswers > 0
	if drop {
		f.dropPaidAnswers--
	}
	f.mu.Unlock()
	if drop {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			f.t.Errorf("fake: hijack: %v", err)
			return
		}
		_ = conn.Close()
		return
	}
	for k, vs := range res.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(res.StatusCode)
	_, _ = w.Write(rec.Body.Bytes())
}

// stall holds a request until the client gives up (or 10 s, so that a broken test ends).
func (f *fakeGateway) stall(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
	}
}

// verify decodes and checks the request's payment with the x402 package: our real verifier.
func (f *fakeGateway) verify(h http.Header) (*x402.Verified, *x402.PaymentPayload, string, string) {
	p, _, err := x402.PayloadFromRequest(h)
	if err != nil {
		return nil, nil, x402.Reason(err), err.Error()
	}
	req := f.accepts[0]
	if p.X402Version == 2 {
		for _, a := range f.accepts {
			if a.Network == p.Accepted.Network && strings.EqualFold(a.Asset, p.Accepted.Asset) &&
				strings.EqualFold(a.PayTo, p.Accepted.PayTo) && a.Amount == p.Accepted.Amount {
				req = a
			}
		}
	}
	if f.declareID {
		if _, ok, err := p.PaymentIdentifier(); err != nil || !ok {
			return nil, nil, "invalid_payload", "payment-identifier id missing"
		}
	}
	v, err := x402.VerifyLocal(p, req, f.now())
	if err != nil {
		return nil, nil, x402.Reason(err), err.Error()
	}
	f.mu.Lock()
	f.verified = append(f.verified, v)
	f.payloads = append(f.payloads, p)
	f.mu.Unlock()
	return v, p, "", ""
}

func (f *fakeGateway) settlement(v *x402.Verified, p *x402.PaymentPayload) *x402.SettlementResponse {
	tx := crypto.Keccak256Hash(v.Nonce[:]).Hex()
	s := &x402.SettlementResponse{Network: v.Network, Payer: v.Payer.Hex(), Transaction: tx}
	switch f.settle {
	case SettlementPending:
		s.ErrorReason = x402.ReasonSettlementPending
	case SettlementFailed:
		s.Transaction, s.ErrorReason = "", "invalid_exact_evm_transaction_failed"
	default:
		s.Success = true
	}
	return s
}

// write402 answers like the gateway: a problem+json body carrying the reason, and the v2 offer
// in PAYMENT-REQUIRED; or, for a v1 server, the v1 offer as the body.
func (f *fakeGateway) write402(w http.ResponseWriter, reason, detail string) {
	res := x402.ResourceInfo{URL: f.srv.URL + "/exec/tool", MimeType: "application/json"}
	w.Header().Set("Cache-Control", "no-store")
	if f.v1 {
		var accepts []x402.PaymentRequirementsV1
		for _, a := range f.accepts {
			v1, ok := x402.RequirementsV1(a, res)
			if !ok {
				f.t.Errorf("fake: %s has no v1 name", a.Network)
				return
			}
			accepts = append(accepts, v1)
		}
		b, err := x402.EncodePaymentRequiredV1(x402.NewPaymentRequiredV1("X-PAYMENT header is required", accepts...))
		if err != nil {
			f.t.Errorf("fake: %v", err)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusPaymentRequired)
		_, _ = w.Write(b)
		return
	}
	msg := "PAYMENT-SIGNATURE header is required"
	if reason != "payment_required" {
		msg = reason
	}
	pr := x402.NewPaymentRequired(res, msg, f.accepts...)
	if f.declareID {
		x402.DeclarePaymentIdentifier(&pr, false)
	}
	v, err := x402.EncodePaymentRequired(pr)
	if err != nil {
		f.t.Errorf("fake: %v", err)
	}
	w.Header().Set(x402.HeaderPaymentRequired, v)
	writeProblem(w, http.StatusPaymentRequired, reason, "", detail)
}

func (f *fakeGateway) serveJob(w http.ResponseWriter, id string) {
	f.mu.Lock()
	j, ok := f.jobs[id]
	var other *fakeJob
	for k, o := range f.jobs {
		if k != id {
			other = &o
			break
		}
	}
	f.mu.Unlock()
	if !ok {
		writeProblem(w, http.StatusNotFound, "job_not_found", "", "no job "+id)
		return
	}
	switch f.tamper {
	case "record":
		j.record = json.RawMessage(strings.Replace(string(j.record), `"completed"`, `"failed"`, 1))
	case "other":
		if other != nil {
			j = *other
		}
	}
	writeTestJSON(w, http.StatusOK, "application/json", Job{
		JobID: id, Timestamp: fixedNow, ToolName: "json_parse", Status: "completed", IAMApproved: true,
		ProofHash: j.hash, PaymentProtocol: "x402", SchemaVersion: "v1", Record: j.record,
	})
}

func writeProblem(w http.ResponseWriter, status int, code, field, detail string) {
	writeTestJSON(w, status, "application/problem+json", problemBody{
		Type: "urn:secureexec:problem:" + code, Title: http.StatusText(status), Status: status,
		Code: code, Error: detail, Detail: detail, Field: field,
	})
}

func writeTestJSON(w http.ResponseWriter, status int, contentType string, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
