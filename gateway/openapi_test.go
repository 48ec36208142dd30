package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
	"github.com/secureexec/secureexec/payments/mpp"
	"github.com/secureexec/secureexec/proof"
	"github.com/secureexec/secureexec/store"
)

// The OpenAPI tests hold openapi.json to the router and to real handler responses, so that
// the document cannot drift from the code: a route it omits, a path it invents, a field or
// status it misdescribes, or a header it promises and the handler does not send all fail.

const (
	oaDocURL       = "doc.json"
	oaInternalKey  = "oa-internal-key"
	oaPayTo        = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
	oaDeniedAgent  = "oa_denied_agent"
	oaNoEPAgent    = "oa_no_ep_agent" // EP out of reach, failing closed
	oaPanicAgent   = "oa_panic_agent"
	oaBrokenJobID  = "00000000-0000-4000-8000-00000000dead" // the audit store fails to read this one
	oaMissingJobID = "8d3e1f52-7c4a-4b8e-9f0d-2a6b5c4d3e21"
)

// oaEchoTool echoes its text; the text "fail" makes it fail like a refused tool would.
type oaEchoTool struct{}

type oaEchoArgs struct {
	Text string `json:"text"`
}

type oaEchoOutput struct {
	Echo      string `json:"echo"`
	Simulated bool   `json:"simulated"`
}

func (oaEchoTool) Name() string        { return "oa_echo" }
func (oaEchoTool) Description() string { return "Echo the text back (OpenAPI test tool)" }
func (oaEchoTool) Schema() json.RawMessage {
	return json.RawMessage(`{"type":"object","required":["text"],"additionalProperties":false,
		"properties":{"text":{"type":"string","maxLength":64}}}`)
}
func (t oaEchoTool) Simulate(ctx context.Context, args json.RawMessage) (any, error) {
	return t.echo(args, true)
}
func (t oaEchoTool) Run(ctx context.Context, args json.RawMessage) (any, error) {
	return t.echo(args, false)
}

func (oaEchoTool) echo(args json.RawMessage, simulated bool) (any, error) {
	var a oaEchoArgs
	if err := json.Unmarshal(args, &a); err != nil {
		return nil, exec.Failf("invalid_args", "%v", err)
	}
	if a.Text == "fail" {
		return nil, exec.Failf("oa_refused", "the echo tool refuses to echo %q", a.Text)
	}
	return oaEchoOutput{Echo: a.Text, Simulated: simulated}, nil
}

// oaMockTool can only be simulated, like the seed's mock_api_call.
type oaMockTool struct{}

func (oaMockTool) Name() string { return "oa_mock" }
func (oaMockTool) Description() string {
	return "Simulate an API call (dry-run only; OpenAPI test tool)"
}
func (oaMockTool) Schema() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (oaMockTool) DryRunOnly() bool        { return true }
func (oaMockTool) Simulate(ctx context.Context, args json.RawMessage) (any, error) {
	return map[string]int{"status": 200}, nil
}
func (oaMockTool) Run(ctx context.Context, args json.RawMessage) (any, error) {
	return nil, errors.New("oa_mock never runs for real")
}

// oaSleepTool waits for its deadline, to produce a timeout result.
type oaSleepTool struct{}

func (oaSleepTool) Name() string            { return "oa_sleep" }
func (oaSleepTool) Description() string     { return "Wait for the deadline (OpenAPI test tool)" }
func (oaSleepTool) Schema() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (oaSleepTool) Simulate(ctx context.Context, args json.RawMessage) (any, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (t oaSleepTool) Run(ctx context.Context, args json.RawMessage) (any, error) {
	return t.Simulate(ctx, args)
}

// oaApprove approves every call, except the agents the tests use to deny and to panic.
type oaApprove struct{}

func (oaApprove) Decide(ctx context.Context, req identity.Request) identity.Outcome {
	switch req.AgentID {
	case oaDeniedAgent:
		return identity.Outcome{Decision: identity.DecisionDenied, Source: identity.SourceEP, Reason: identity.ReasonEPDenied,
			Violations: []string{"Single trade exceeds $100 policy limit"}, RiskScore: "HIGH"}
	case oaNoEPAgent:
		return identity.Outcome{Decision: identity.DecisionUnavailableFailedClosed, Source: identity.SourceEP, Reason: identity.ReasonEPTimeout}
	case oaPanicAgent:
		panic("oa: the authorizer failed unexpectedly")
	}
	if req.Internal {
		return identity.Outcome{Approved: true, Decision: identity.DecisionSkipped, Source: identity.SourcePolicy, Reason: identity.ReasonInternalAgent}
	}
	return identity.Outcome{Approved: true, Decision: identity.DecisionApproved, Source: identity.SourcePolicy, Reason: identity.ReasonEPDisabled}
}

const oaPaymentID = "3f0e6a52-1c4b-4d8e-9a0f-6b5c4d3e2a10"

// oaPayments knows one settled payment; oaBrokenJobID fails like an unreachable ledger.
type oaPayments struct{}

func (oaPayments) Get(_ context.Context, id uuid.UUID) (ledger.Payment, error) {
	switch id.String() {
	case oaPaymentID:
		t := time.Date(2026, 3, 23, 0, 0, 0, 0, time.UTC)
		return ledger.Payment{ID: id, Rail: "x402", Status: ledger.StatusSettled, Network: "eip155:8453",
			Asset: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", Payer: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
			PayTo: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", Amount: big.NewInt(10000), JobID: uuid.New(),
			TxHash: "0x" + strings.Repeat("ab", 32), CreatedAt: t, UpdatedAt: t, SettledAt: t}, nil
	case oaBrokenJobID:
		return ledger.Payment{}, errors.New("connection refused")
	}
	return ledger.Payment{}, ledger.ErrNotFound
}

// oaAudit keeps entries in memory; reading oaBrokenJobID fails like an unreachable store.
type oaAudit struct {
	mu      sync.Mutex
	entries map[string]store.Entry
}

func (a *oaAudit) Submit(e store.Entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entries[e.JobID] = e
}

func (a *oaAudit) Get(ctx context.Context, jobID string) (store.Entry, error) {
	if jobID == oaBrokenJobID {
		return store.Entry{}, errors.New("oa: connection refused")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.entries[jobID]
	if !ok {
		return store.Entry{}, fmt.Errorf("%w: %s", store.ErrNotFound, jobID)
	}
	return e, nil
}

// oaRail stands in for a payment rail: it accepts "Authorization: <scheme> <token>" and
// offers a challenge. Token "ok" pays, "expired" is refused, "down" finds its backend away.
type oaRail struct {
	name, scheme string
	offer        payments.Challenge
}

func (r oaRail) Name() string { return r.name }

// IdempotencyKey names the request when the test sends X-Test-Payment-Id.
func (r oaRail) IdempotencyKey(req *http.Request) (string, string, bool, error) {
	id := req.Header.Get("X-Test-Payment-Id")
	if id == "" {
		return "", "", false, nil
	}
	return r.name + ":" + id, req.Header.Get("Authorization"), true, nil
}
func (r oaRail) Offer(ctx context.Context, price payments.Price, _ *payments.PaymentError) (payments.Challenge, error) {
	return r.offer, nil
}
func (r oaRail) Accepts(req *http.Request) bool {
	scheme, _, ok := strings.Cut(req.Header.Get("Authorization"), " ")
	return ok && scheme == r.scheme
}
func (r oaRail) Verify(ctx context.Context, req *http.Request, price payments.Price) (*payments.Authorization, error) {
	_, token, _ := strings.Cut(req.Header.Get("Authorization"), " ")
	switch token {
	case "ok":
		return &payments.Authorization{Rail: r.name, Payer: "0x857b06519E91e3A54538791bDbb0E22373e36b66", Amount: price.Amount,
			Reference: "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"}, nil
	case "down":
		return nil, fmt.Errorf("%w: oa: redis is away", payments.ErrUnavailable)
	default:
		return nil, &payments.PaymentError{Rail: r.name, Reason: "invalid_exact_evm_payload_authorization_valid_before",
			Detail: "the authorization expires in 4 s; at least 6 s are required"}
	}
}
func (r oaRail) Settle(ctx context.Context, a *payments.Authorization) (*payments.Settlement, error) {
	return &payments.Settlement{Status: payments.SettlementSettled, Reference: a.Reference}, nil
}

func oaRails(t *testing.T) []payments.Rail {
	t.Helper()
	v2, err := json.Marshal(map[string]any{
		"x402Version": 2, "error": "PAYMENT-SIGNATURE header is required",
		"resource": map[string]string{"url": "http://127.0.0.1/exec/tool"},
		"accepts": []map[string]any{{"scheme": "exact", "network": "eip155:8453", "amount": "10000",
			"asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "payTo": oaPayTo, "maxTimeoutSeconds": 60,
			"extra": map[string]string{"name": "USD Coin", "version": "2"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	x402 := oaRail{name: "x402", scheme: "x402", offer: payments.Challenge{
		Header: http.Header{"Payment-Required": {base64.StdEncoding.EncodeToString(v2)}},
		Body: map[string]json.RawMessage{
			"x402Version": json.RawMessage(`1`),
			"accepts": json.RawMessage(`[{"scheme":"exact","network":"base","maxAmountRequired":"10000",
				"resource":"http://127.0.0.1/exec/tool","payTo":"` + oaPayTo + `","maxTimeoutSeconds":60,
				"asset":"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913","extra":{"name":"USD Coin","version":"2"}}]`),
		},
	}}
	// The MPP rail is the real one, over a fake Stripe: its challenges, refusals and receipts
	// are what the document must describe.
	rail, _ := newMPPRail(t, newStripeFake(t).srv.URL)
	return []payments.Rail{x402, rail}
}

// oaBrokenIntent is a PaymentIntent whose payment the ledger cannot read, like an outage.
const oaBrokenIntent = "pi_oa_broken"

// oaMarkStore is the in-process ledger, failing for oaBrokenIntent.
type oaMarkStore struct{ *ledger.Memory }

func (s oaMarkStore) GetByNonceKey(ctx context.Context, key string) (ledger.Payment, error) {
	if key == mppNonceKey(oaBrokenIntent) {
		return ledger.Payment{}, fmt.Errorf("oa: %w", payments.ErrUnavailable)
	}
	return s.Memory.GetByNonceKey(ctx, key)
}

// oaInFlightEvent is an event whose first delivery is still being processed.
const oaInFlightEvent = "evt_oa_in_flight"

// oaWebhook is the Stripe webhook with a small body cap, an event in flight and a ledger that
// fails for one PaymentIntent, so that every status it documents can be produced.
func oaWebhook(t *testing.T) http.Handler {
	t.Helper()
	events := ledger.NewMemoryIdempotency()
	fp, err := ledger.Fingerprint([]byte(fmt.Sprintf("{\"event\":%q}", oaInFlightEvent)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.Begin(context.Background(), "stripe-event:"+oaInFlightEvent, fp); err != nil {
		t.Fatal(err)
	}
	marks := NewStripeMarks(oaMarkStore{ledger.NewMemory()}, quietLogger())
	h, err := mpp.NewWebhookHandler(mpp.WebhookConfig{Secrets: []string{mppTestWhsec}, MaxBodyBytes: 8 << 10, Logger: quietLogger()}, events, marks, marks)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// oaEvent is a signed Stripe event: a refund of the PaymentIntent pi.
func oaEvent(t *testing.T, id, pi string) (body, signature string) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"id": id, "object": "event", "api_version": "2026-07-29.preview", "created": time.Now().Unix(),
		"livemode": false, "type": "charge.refunded", "data": map[string]any{"object": map[string]any{"id": "ch_oa", "object": "charge",
			"payment_intent": pi, "amount_refunded": 50, "currency": "usd"}}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b), webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: b, Secret: mppTestWhsec, Timestamp: time.Now()}).Header
}

// oaPaymentAuth asks the handler for the 402 of body and answers its stripe challenge.
func oaPaymentAuth(body string) func(t *testing.T, h http.Handler) map[string]string {
	return func(t *testing.T, h http.Handler) map[string]string {
		req := httptest.NewRequest(http.MethodPost, "/exec/tool", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusPaymentRequired {
			t.Fatalf("unpaid call: %d %s", rec.Code, rec.Body)
		}
		return map[string]string{"Authorization": paymentAuth(t, stripeChallenge(t, rec.Header()), "spt_oa_"+uuid.NewString()[:8])}
	}
}

func oaServer(t *testing.T) (*Server, *oaAudit) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := exec.NewRegistry(oaEchoTool{}, oaMockTool{}, oaSleepTool{})
	if err != nil {
		t.Fatal(err)
	}
	audit := &oaAudit{entries: map[string]store.Entry{}}
	cfg := DefaultConfig
	cfg.MaxBodyBytes = 4 << 10
	cfg.Payment.InternalAPIKey = oaInternalKey
	cfg.Payment.PayTo = oaPayTo
	s, err := New(cfg, Deps{Runner: exec.NewRunner(reg, exec.Limits{}, log), IAM: oaApprove{}, Audit: audit,
		Rails: oaRails(t), Logger: log, Payments: oaPayments{}, Idempotent: ledger.NewMemoryIdempotency(), StripeWebhook: oaWebhook(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s, audit
}

// oaSpec is the parsed document and a compiler that holds it as one resource.
type oaSpec struct {
	doc      any
	compiler *jsonschema.Compiler
	schemas  map[string]*jsonschema.Schema
}

func oaLoadSpec(t *testing.T) *oaSpec {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(openAPI))
	if err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(oaRefuseLoader{})
	if err := c.AddResource(oaDocURL, doc); err != nil {
		t.Fatal(err)
	}
	return &oaSpec{doc: doc, compiler: c, schemas: map[string]*jsonschema.Schema{}}
}

// oaRefuseLoader keeps the document self-contained: any external $ref fails to compile.
type oaRefuseLoader struct{}

func (oaRefuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("oa: loading %q is disabled", url)
}

// schema compiles (once) the schema at a JSON pointer in the document.
func (s *oaSpec) schema(t *testing.T, ptr string) *jsonschema.Schema {
	t.Helper()
	if sch, ok := s.schemas[ptr]; ok {
		return sch
	}
	sch, err := s.compiler.Compile(oaDocURL + "#" + ptr)
	if err != nil {
		t.Fatalf("compiling %s: %v", ptr, err)
	}
	s.schemas[ptr] = sch
	return sch
}

// at resolves a JSON pointer in the document.
func (s *oaSpec) at(ptr string) (any, bool) {
	node := s.doc
	if ptr == "" {
		return node, true
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch n := node.(type) {
		case map[string]any:
			v, ok := n[tok]
			if !ok {
				return nil, false
			}
			node = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n) {
				return nil, false
			}
			node = n[i]
		default:
			return nil, false
		}
	}
	return node, true
}

// deref follows a local $ref, returning the node and its pointer.
func (s *oaSpec) deref(t *testing.T, ptr string) (map[string]any, string) {
	t.Helper()
	for range 8 {
		node, ok := s.at(ptr)
		if !ok {
			t.Fatalf("the document has nothing at %s", ptr)
		}
		obj, ok := node.(map[string]any)
		if !ok {
			t.Fatalf("%s is not an object", ptr)
		}
		ref, isRef := obj["$ref"].(string)
		if !isRef {
			return obj, ptr
		}
		if !strings.HasPrefix(ref, "#") {
			t.Fatalf("%s: $ref %q is not local", ptr, ref)
		}
		ptr = strings.TrimPrefix(ref, "#")
	}
	t.Fatalf("%s: $ref chain too long", ptr)
	return nil, ""
}

func oaEsc(tok string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(tok) }

func (s *oaSpec) operations(t *testing.T) map[string]bool {
	t.Helper()
	paths, ok := s.doc.(map[string]any)["paths"].(map[string]any)
	if !ok {
		t.Fatal("the document has no paths object")
	}
	ops := map[string]bool{}
	for p, item := range paths {
		for m := range item.(map[string]any) {
			switch m {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				ops[strings.ToUpper(m)+" "+p] = true
			}
		}
	}
	return ops
}

func oaRoutes(t *testing.T, s *Server) map[string]bool {
	t.Helper()
	routes := map[string]bool{}
	err := s.router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := route.GetMethods()
		if err != nil {
			return fmt.Errorf("route %s has no method matcher: every route must name its methods: %w", tpl, err)
		}
		for _, m := range methods {
			routes[m+" "+oaPlainTemplate(tpl)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return routes
}

// oaPlainTemplate drops mux's variable patterns: {id:[0-9]+} is {id} in OpenAPI.
func oaPlainTemplate(tpl string) string {
	var b strings.Builder
	inVar, skip := 0, false
	for _, r := range tpl {
		switch {
		case r == '{':
			inVar++
			skip = false
		case r == '}':
			inVar--
			skip = false
		case inVar > 0 && r == ':':
			skip = true
		}
		if !skip {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func oaSorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestOpenAPIDocumentMatchesRouter(t *testing.T) {
	spec := oaLoadSpec(t)
	if v, _ := spec.at("/openapi"); v != "3.1.0" {
		t.Fatalf("openapi = %v, want 3.1.0", v)
	}
	onDisk, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, openAPI) {
		t.Fatal("the embedded document differs from openapi.json on disk: rebuild")
	}
	s, _ := oaServer(t)
	routes, documented := oaRoutes(t, s), spec.operations(t)
	for _, r := range oaSorted(routes) {
		if path, ok := strings.CutPrefix(r, "HEAD "); ok && documented["GET "+path] {
			continue // HEAD is served wherever GET is (RFC 9110), and means the same
		}
		if !documented[r] {
			t.Errorf("route %s is served but not documented", r)
		}
	}
	for _, d := range oaSorted(documented) {
		if !routes[d] {
			t.Errorf("operation %s is documented but not routed", d)
		}
	}

	// Every operation has a unique operationId, and every response a description.
	ids := map[string]string{}
	for _, op := range oaSorted(documented) {
		method, path, _ := strings.Cut(op, " ")
		opPtr := "/paths/" + oaEsc(path) + "/" + strings.ToLower(method)
		node, _ := spec.deref(t, opPtr)
		id, _ := node["operationId"].(string)
		if id == "" || ids[id] != "" {
			t.Errorf("%s: operationId %q is missing or shared with %s", op, id, ids[id])
		}
		ids[id] = op
		responses, _ := node["responses"].(map[string]any)
		if len(responses) == 0 {
			t.Errorf("%s documents no responses", op)
		}
		for status := range responses {
			r, _ := spec.deref(t, opPtr+"/responses/"+status)
			if d, _ := r["description"].(string); d == "" {
				t.Errorf("%s %s: response has no description", op, status)
			}
		}
	}

	// Every $ref anywhere in the document resolves.
	var walk func(ptr string, node any)
	walk = func(ptr string, node any) {
		switch n := node.(type) {
		case map[string]any:
			if ref, ok := n["$ref"].(string); ok {
				if _, found := spec.at(strings.TrimPrefix(ref, "#")); !strings.HasPrefix(ref, "#") || !found {
					t.Errorf("%s: $ref %q does not resolve", ptr, ref)
				}
			}
			for k, v := range n {
				walk(ptr+"/"+oaEsc(k), v)
			}
		case []any:
			for i, v := range n {
				walk(ptr+"/"+strconv.Itoa(i), v)
			}
		}
	}
	walk("", spec.doc)
}

func TestOpenAPISchemasCompileAndExamplesConform(t *testing.T) {
	spec := oaLoadSpec(t)
	schemas, _ := spec.at("/components/schemas")
	names := map[string]bool{}
	for name := range schemas.(map[string]any) {
		names[name] = true
	}
	for _, want := range []string{"ExecRequest", "ExecResponse", "Result", "IAMOutcome", "Problem", "PaymentRequired",
		"ToolsResponse", "JobEntry", "Record", "Health"} {
		if !names[want] {
			t.Errorf("components/schemas/%s is missing", want)
		}
	}
	for _, name := range oaSorted(names) {
		ptr := "/components/schemas/" + oaEsc(name)
		sch := spec.schema(t, ptr)
		node, _ := spec.deref(t, ptr)
		examples, _ := node["examples"].([]any)
		for i, ex := range examples {
			if err := sch.Validate(ex); err != nil {
				t.Errorf("%s: examples[%d] does not conform: %v", ptr, i, err)
			}
		}
	}

	// Every example of a request or response body conforms to its schema.
	var walk func(ptr string, node any)
	walk = func(ptr string, node any) {
		switch n := node.(type) {
		case map[string]any:
			if content, ok := n["content"].(map[string]any); ok {
				for mt, media := range content {
					m := media.(map[string]any)
					if _, ok := m["schema"]; !ok {
						t.Errorf("%s/content/%s has no schema", ptr, mt)
						continue
					}
					mtPtr := ptr + "/content/" + oaEsc(mt)
					sch := spec.schema(t, mtPtr+"/schema")
					if ex, ok := m["example"]; ok {
						if err := sch.Validate(ex); err != nil {
							t.Errorf("%s/example does not conform: %v", mtPtr, err)
						}
					}
					exs, _ := m["examples"].(map[string]any)
					for name, ex := range exs {
						if err := sch.Validate(ex.(map[string]any)["value"]); err != nil {
							t.Errorf("%s/examples/%s does not conform: %v", mtPtr, name, err)
						}
					}
				}
			}
			for k, v := range n {
				if k != "content" {
					walk(ptr+"/"+oaEsc(k), v)
				}
			}
		}
	}
	walk("/paths", oaMustAt(t, spec, "/paths"))
	walk("/components/responses", oaMustAt(t, spec, "/components/responses"))
}

func oaMustAt(t *testing.T, spec *oaSpec, ptr string) any {
	t.Helper()
	v, ok := spec.at(ptr)
	if !ok {
		t.Fatalf("the document has nothing at %s", ptr)
	}
	return v
}

// oaCall is one real exchange with the handler, checked against the document.
type oaCall struct {
	name    string
	method  string
	path    func(t *testing.T, h http.Handler) string // nil: use target
	target  string
	header  map[string]string
	headers func(t *testing.T, h http.Handler) map[string]string // added to header, computed first
	body    string
	stalls  bool // the body stops after body, as when the server's read timeout passes
	conform int  // oaReqUnchecked, oaReqConforms or oaReqViolates: the request body against the document
	status  int
	code    string // the problem's code, when the response is a problem
	check   func(t *testing.T, body []byte)
}

const (
	oaReqUnchecked = iota
	oaReqConforms
	oaReqViolates
)

func oaJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// oaExec calls an exec endpoint and returns the decoded 200 body.
func oaExec(t *testing.T, h http.Handler, path, body string, header map[string]string) execResponse {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("POST %s: status %d: %s", path, rec.Code, rec.Body)
	}
	var out execResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOpenAPIDescribesRealResponses(t *testing.T) {
	spec := oaLoadSpec(t)
	s, _ := oaServer(t)
	h := s.Handler()

	echo := func(text string) string {
		return oaJSON(map[string]any{"agentId": "oa_agent", "tool": map[string]any{"name": "oa_echo", "args": map[string]string{"text": text}},
			"context": map[string]string{"purpose": "fetch market data before trade"}})
	}
	internal := map[string]string{"X-Internal-Key": oaInternalKey}
	var deniedJob string
	jobOf := func(body string) func(t *testing.T, h http.Handler) string {
		return func(t *testing.T, h http.Handler) string {
			return "/exec/jobs/" + oaExec(t, h, "/exec/simulate", body, nil).JobID
		}
	}

	refundEvent, refundSig := oaEvent(t, "evt_oa_refund", "pi_oa_unknown")
	inFlightEvent, inFlightSig := oaEvent(t, oaInFlightEvent, "pi_oa_unknown")
	brokenEvent, brokenSig := oaEvent(t, "evt_oa_broken", oaBrokenIntent)

	calls := []oaCall{
		{name: "health", method: "GET", target: "/health", status: 200},
		{name: "tools list", method: "GET", target: "/exec/tools", status: 200, check: func(t *testing.T, b []byte) {
			var tr toolsResponse
			if err := json.Unmarshal(b, &tr); err != nil || len(tr.Allowed) != 3 || len(tr.Blocked) != len(exec.Blocked) {
				t.Errorf("tools list: %d allowed, %d blocked (%v)", len(tr.Allowed), len(tr.Blocked), err)
			}
		}},
		{name: "metrics", method: "GET", target: "/metrics", status: 200, check: func(t *testing.T, b []byte) {
			if !bytes.Contains(b, []byte("secureexec_http_requests_total")) {
				t.Error("metrics: no secureexec_http_requests_total series")
			}
		}},
		{name: "openapi", method: "GET", target: "/openapi.json", status: 200, check: func(t *testing.T, b []byte) {
			if !bytes.Equal(b, openAPI) {
				t.Error("GET /openapi.json does not serve the document")
			}
		}},
		{name: "simulate the seed's call", method: "POST", target: "/exec/simulate", body: echo("hello"), conform: oaReqConforms, status: 200,
			header: map[string]string{"X-Request-ID": "oa-request-1"}},
		{name: "simulate with dryRun false still simulates", method: "POST", target: "/exec/simulate", conform: oaReqConforms, status: 200,
			body: `{"tool":{"name":"oa_echo","args":{"text":"x"},"timeout_s":2.5},"dryRun":false}`, check: func(t *testing.T, b []byte) {
				if !strings.Contains(string(b), `"simulated":true`) {
					t.Error("simulate ran for real")
				}
			}},
		{name: "simulate a failing tool", method: "POST", target: "/exec/simulate", body: echo("fail"), conform: oaReqConforms, status: 200},
		{name: "simulate a timeout", method: "POST", target: "/exec/simulate", conform: oaReqConforms, status: 200,
			body: `{"tool":{"name":"oa_sleep","timeout_s":0.02}}`},
		{name: "simulate as text/plain", method: "POST", target: "/exec/simulate", body: echo("plain"), conform: oaReqConforms, status: 200,
			header: map[string]string{"Content-Type": "text/plain; charset=utf-8"}},
		{name: "simulate as curl's default form type", method: "POST", target: "/exec/simulate", body: echo("form"), conform: oaReqConforms, status: 200,
			header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
		{name: "missing tool.name", method: "POST", target: "/exec/simulate", body: `{"agentId":"oa_agent","tool":{"args":{}}}`,
			conform: oaReqViolates, status: 400, code: "missing_tool_name"},
		{name: "missing tool", method: "POST", target: "/exec/tool", body: `{"agentId":"oa_agent"}`,
			conform: oaReqViolates, status: 400, code: "missing_tool_name"},
		{name: "empty body", method: "POST", target: "/exec/simulate", status: 400, code: "missing_body"},
		{name: "malformed JSON", method: "POST", target: "/exec/tool", body: `{"tool":`, status: 400, code: "invalid_json"},
		{name: "invalid args", method: "POST", target: "/exec/simulate", body: `{"tool":{"name":"oa_echo","args":{"text":7}}}`,
			conform: oaReqConforms, status: 400, code: "invalid_args"},
		{name: "unknown tool", method: "POST", target: "/exec/simulate", body: `{"tool":{"name":"curl"}}`,
			conform: oaReqConforms, status: 400, code: "unknown_tool"},
		{name: "negative timeout", method: "POST", target: "/exec/simulate", body: `{"tool":{"name":"oa_echo","timeout_s":-1}}`,
			conform: oaReqViolates, status: 400, code: "invalid_timeout"},
		{name: "context not an object", method: "POST", target: "/exec/simulate", body: `{"tool":{"name":"oa_echo"},"context":"why"}`,
			conform: oaReqViolates, status: 400, code: "invalid_field_type"},
		{name: "dry-run-only tool for real", method: "POST", target: "/exec/tool", header: internal, conform: oaReqConforms,
			body: `{"tool":{"name":"oa_mock"},"dryRun":false}`, status: 400, code: "dry_run_only"},
		{name: "blocked tool simulated", method: "POST", target: "/exec/simulate", body: `{"tool":{"name":"shell_exec","args":{"cmd":"id"}}}`,
			conform: oaReqConforms, status: 403, code: "tool_blocked"},
		{name: "blocked tool, unpaid", method: "POST", target: "/exec/tool", body: `{"tool":{"name":"bash"}}`,
			conform: oaReqConforms, status: 403, code: "tool_blocked"},
		{name: "IAM denies a simulation", method: "POST", target: "/exec/simulate", conform: oaReqConforms, status: 403, code: "iam_denied",
			body: oaJSON(map[string]any{"agentId": oaDeniedAgent, "tool": map[string]any{"name": "oa_echo", "args": map[string]string{"text": "x"}}}),
			check: func(t *testing.T, b []byte) {
				var p problem
				_ = json.Unmarshal(b, &p)
				deniedJob = p.JobID
			}},
		{name: "IAM denies a paid call", method: "POST", target: "/exec/tool", header: internal, conform: oaReqConforms, status: 403, code: "iam_denied",
			body: oaJSON(map[string]any{"agentId": oaDeniedAgent, "tool": map[string]any{"name": "oa_echo", "args": map[string]string{"text": "x"}}})},
		{name: "EP out of reach, failing closed", method: "POST", target: "/exec/simulate", conform: oaReqConforms, status: 503, code: "iam_unavailable",
			body: oaJSON(map[string]any{"agentId": oaNoEPAgent, "tool": map[string]any{"name": "oa_echo", "args": map[string]string{"text": "x"}}})},
		{name: "unpaid /exec/tool", method: "POST", target: "/exec/tool", body: echo("hello"), conform: oaReqConforms, status: 402, code: "payment_required"},
		{name: "refused x402 credential", method: "POST", target: "/exec/tool", body: echo("hello"), conform: oaReqConforms, status: 402,
			header: map[string]string{"Authorization": "x402 expired"}, code: "invalid_exact_evm_payload_authorization_valid_before"},
		{name: "credential no rail accepts", method: "POST", target: "/exec/tool", body: echo("hello"), conform: oaReqConforms, status: 402,
			header: map[string]string{"Authorization": "Bearer abc"}, code: "unsupported_credential"},
		{name: "wrong internal key", method: "POST", target: "/exec/tool", body: echo("hello"), conform: oaReqConforms, status: 402,
			header: map[string]string{"X-Internal-Key": "guess"}, code: "invalid_internal_key"},
		{name: "paid with x402", method: "POST", target: "/exec/tool", body: echo("paid"), conform: oaReqConforms, status: 200,
			header: map[string]string{"Authorization": "x402 ok"}},
		{name: "paid with a payment identifier", method: "POST", target: "/exec/tool", body: echo("paid"), conform: oaReqConforms, status: 200,
			header: map[string]string{"Authorization": "x402 ok", "X-Test-Payment-Id": "pay_0123456789abcdef"}},
		{name: "replayed payment identifier", method: "POST", target: "/exec/tool", body: echo("paid"), conform: oaReqConforms, status: 200,
			header: map[string]string{"Authorization": "x402 ok", "X-Test-Payment-Id": "pay_0123456789abcdef"}},
		{name: "payment identifier reused with another payment", method: "POST", target: "/exec/tool", body: echo("paid"), conform: oaReqConforms,
			status: 409, code: "payment_identifier_conflict",
			header: map[string]string{"Authorization": "x402 ok-other", "X-Test-Payment-Id": "pay_0123456789abcdef"}},
		{name: "paid with MPP, real execution", method: "POST", target: "/exec/tool", conform: oaReqConforms, status: 200,
			body:    `{"tool":{"name":"oa_echo","args":{"text":"real"}},"dryRun":false}`,
			headers: oaPaymentAuth(`{"tool":{"name":"oa_echo","args":{"text":"real"}},"dryRun":false}`),
			check: func(t *testing.T, b []byte) {
				var r execResponse
				if err := json.Unmarshal(b, &r); err != nil || r.PaymentProtocol != "mpp" || r.Settlement == nil || r.Settlement.Status != "settled" {
					t.Errorf("paid with MPP: %s", b)
				}
			}},
		{name: "malformed MPP credential", method: "POST", target: "/exec/tool", body: echo("hello"), conform: oaReqConforms, status: 402,
			header: map[string]string{"Authorization": "Payment dGhpcyBpcyBnYXJiYWdl"}, code: "malformed_credential"},
		{name: "MPP credential of a method not offered", method: "POST", target: "/exec/tool", body: echo("hello"), conform: oaReqConforms,
			status: 400, code: "method_unsupported", header: map[string]string{"Authorization": paymentAuth(t, mpp.Challenge{ID: "x", Realm: mppTestRealm,
				Method: "tempo", Intent: "charge", Request: "e30", Expires: "2030-01-01T00:00:00Z"}, "spt_oa_tempo")}},
		{name: "signed Stripe event", method: "POST", target: mpp.WebhookPath, conform: oaReqConforms, status: 200,
			body: refundEvent, header: map[string]string{"Stripe-Signature": refundSig}},
		{name: "unsigned Stripe event", method: "POST", target: mpp.WebhookPath, conform: oaReqConforms, status: 400, body: refundEvent},
		{name: "Stripe event in flight", method: "POST", target: mpp.WebhookPath, conform: oaReqConforms, status: 409,
			body: inFlightEvent, header: map[string]string{"Stripe-Signature": inFlightSig}},
		{name: "Stripe event over the cap", method: "POST", target: mpp.WebhookPath, status: 413, body: `{"pad":"` + strings.Repeat("a", 9<<10) + `"}`,
			header: map[string]string{"Stripe-Signature": refundSig}},
		{name: "Stripe event, ledger away", method: "POST", target: mpp.WebhookPath, conform: oaReqConforms, status: 503,
			body: brokenEvent, header: map[string]string{"Stripe-Signature": brokenSig}},
		{name: "wrong method on the webhook", method: "GET", target: mpp.WebhookPath, status: 405, code: "method_not_allowed"},
		{name: "internal agent", method: "POST", target: "/exec/tool", body: `{"tool":{"name":"oa_echo","args":{"text":"x"}}}`,
			conform: oaReqConforms, status: 200, header: internal},
		{name: "payment backend away", method: "POST", target: "/exec/tool", body: echo("hello"), conform: oaReqConforms, status: 503,
			header: map[string]string{"Authorization": "x402 down"}, code: "payment_backend_unavailable"},
		{name: "handler panics", method: "POST", target: "/exec/simulate", conform: oaReqConforms, status: 503, code: "internal_error",
			body: oaJSON(map[string]any{"agentId": oaPanicAgent, "tool": map[string]any{"name": "oa_echo", "args": map[string]string{"text": "x"}}})},
		{name: "body stalls, simulate", method: "POST", target: "/exec/simulate", body: `{"tool":`, stalls: true, status: 408, code: "body_timeout"},
		{name: "body stalls, tool", method: "POST", target: "/exec/tool", body: `{"tool":`, stalls: true, status: 408, code: "body_timeout"},
		{name: "oversized body, simulate", method: "POST", target: "/exec/simulate", status: 413, code: "body_too_large",
			body: `{"tool":{"name":"oa_echo","args":{"text":"` + strings.Repeat("a", 8<<10) + `"}}}`},
		{name: "oversized body, tool", method: "POST", target: "/exec/tool", status: 413, code: "body_too_large",
			body: `{"context":{"pad":"` + strings.Repeat("a", 8<<10) + `"},"tool":{"name":"oa_echo"}}`},
		{name: "XML, simulate", method: "POST", target: "/exec/simulate", body: `<tool/>`, status: 415, code: "unsupported_media_type",
			header: map[string]string{"Content-Type": "application/xml"}},
		{name: "XML, tool", method: "POST", target: "/exec/tool", body: `<tool/>`, status: 415, code: "unsupported_media_type",
			header: map[string]string{"Content-Type": "application/xml"}},
		{name: "job after a simulation", method: "GET", path: jobOf(echo("audited")), status: 200, check: func(t *testing.T, b []byte) {
			var e store.Entry
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatal(err)
			}
			if err := proof.Verify(e.Record, e.ProofHash); err != nil {
				t.Errorf("the record does not hash to the proofHash the document promises: %v", err)
			}
		}},
		{name: "job of a failed simulation", method: "GET", path: jobOf(echo("fail")), status: 200},
		{name: "job of a denied call", method: "GET", path: func(t *testing.T, h http.Handler) string {
			if deniedJob == "" {
				t.Fatal("the denied call returned no jobId")
			}
			return "/exec/jobs/" + deniedJob
		}, status: 200},
		{name: "job not a UUID", method: "GET", target: "/exec/jobs/not-a-uuid", status: 400, code: "invalid_job_id"},
		{name: "unknown job", method: "GET", target: "/exec/jobs/" + oaMissingJobID, status: 404, code: "job_not_found"},
		{name: "audit store away", method: "GET", target: "/exec/jobs/" + oaBrokenJobID, status: 503, code: "audit_store_unavailable"},
		{name: "a payment", method: "GET", target: "/payments/" + oaPaymentID, status: 200},
		{name: "payment id not a UUID", method: "GET", target: "/payments/x", status: 400, code: "invalid_payment_id"},
		{name: "unknown payment", method: "GET", target: "/payments/" + oaMissingJobID, status: 404, code: "payment_not_found"},
		{name: "payment store away", method: "GET", target: "/payments/" + oaBrokenJobID, status: 503, code: "audit_store_unavailable"},
		{name: "unknown path", method: "GET", target: "/exec/run", status: 404, code: "not_found"},
		{name: "wrong method", method: "GET", target: "/exec/tool", status: 405, code: "method_not_allowed"},
		{name: "wrong method on health", method: "POST", target: "/health", body: `{}`, status: 405, code: "method_not_allowed"},
	}

	exercised := map[string]bool{}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			target := c.target
			if c.path != nil {
				target = c.path(t, h)
			}
			var reqBody io.Reader = strings.NewReader(c.body)
			if c.stalls {
				reqBody = io.MultiReader(reqBody, iotest.ErrReader(os.ErrDeadlineExceeded))
			}
			req := httptest.NewRequest(c.method, target, reqBody)
			if c.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			if c.headers != nil {
				for k, v := range c.headers(t, h) {
					req.Header.Set(k, v)
				}
			}

			// The router, not the test, says which part of the document applies.
			var m mux.RouteMatch
			s.router.Match(req, &m)
			var opPtr, respPtr string
			switch {
			case m.MatchErr == nil && m.Route != nil:
				tpl, err := m.Route.GetPathTemplate()
				if err != nil {
					t.Fatal(err)
				}
				opPtr = "/paths/" + oaEsc(oaPlainTemplate(tpl)) + "/" + strings.ToLower(c.method)
				respPtr = opPtr + "/responses/" + strconv.Itoa(c.status)
				exercised[c.method+" "+oaPlainTemplate(tpl)+" "+strconv.Itoa(c.status)] = true
			case errors.Is(m.MatchErr, mux.ErrMethodMismatch):
				respPtr = "/components/responses/MethodNotAllowed"
			default:
				respPtr = "/components/responses/RouteNotFound"
			}
			exercised[respPtr] = true

			if c.conform != oaReqUnchecked {
				oaCheckRequest(t, spec, opPtr, req.Header.Get("Content-Type"), c.body, c.conform == oaReqConforms)
			}

			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			body := rec.Body.Bytes()
			if res.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, c.status, body)
			}
			if _, ok := spec.at(respPtr); !ok {
				t.Fatalf("the document does not describe status %d here (%s)", c.status, respPtr)
			}
			oaCheckResponse(t, spec, respPtr, res, body)
			if c.code != "" {
				var p struct {
					Code string `json:"code"`
				}
				if err := json.Unmarshal(body, &p); err != nil || p.Code != c.code {
					t.Errorf("code %q, want %q (%v)", p.Code, c.code, err)
				}
			}
			if want := c.header["X-Request-ID"]; want != "" && res.Header.Get(headerRequestID) != want {
				t.Errorf("X-Request-ID %q, want the caller's %q echoed", res.Header.Get(headerRequestID), want)
			}
			if c.check != nil {
				c.check(t, body)
			}
		})
	}

	// Every response the document promises is one the test saw, so none of them is fiction.
	for _, op := range oaSorted(spec.operations(t)) {
		method, path, _ := strings.Cut(op, " ")
		responses, _ := spec.at("/paths/" + oaEsc(path) + "/" + strings.ToLower(method) + "/responses")
		for status := range responses.(map[string]any) {
			if !exercised[op+" "+status] {
				t.Errorf("%s %s is documented but no call exercised it", op, status)
			}
		}
	}
	for _, r := range []string{"/components/responses/MethodNotAllowed", "/components/responses/RouteNotFound"} {
		if !exercised[r] {
			t.Errorf("%s was not exercised", r)
		}
	}
}

// oaCheckRequest validates a request body against the operation's requestBody schema.
func oaCheckRequest(t *testing.T, spec *oaSpec, opPtr, contentType, body string, wantValid bool) {
	t.Helper()
	if opPtr == "" {
		t.Fatal("a request body can only be checked on a routed operation")
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		t.Fatal(err)
	}
	rb, rbPtr := spec.deref(t, opPtr+"/requestBody")
	if _, ok := rb["content"].(map[string]any)[mt]; !ok {
		t.Fatalf("the document does not accept %s at %s", mt, opPtr)
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(body))
	if err != nil {
		t.Fatalf("request body is not JSON: %v", err)
	}
	err = spec.schema(t, rbPtr+"/content/"+oaEsc(mt)+"/schema").Validate(inst)
	switch {
	case wantValid && err != nil:
		t.Errorf("the server accepts this body but the document rejects it: %v", err)
	case !wantValid && err == nil:
		t.Error("the server rejects this body but the document accepts it")
	}
}

// oaCheckResponse validates a response's content type, body and headers against the
// document's response object at respPtr.
func oaCheckResponse(t *testing.T, spec *oaSpec, respPtr string, res *http.Response, body []byte) {
	t.Helper()
	resp, respPtr := spec.deref(t, respPtr)
	content, _ := resp["content"].(map[string]any)
	mt, _, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	switch {
	case len(content) == 0:
		if len(body) != 0 {
			t.Errorf("the document describes no body, the handler sent %d bytes", len(body))
		}
	case err != nil:
		t.Errorf("Content-Type %q: %v", res.Header.Get("Content-Type"), err)
	case content[mt] == nil:
		t.Errorf("Content-Type %s is not among the documented %v", mt, oaKeys(content))
	default:
		sch := spec.schema(t, respPtr+"/content/"+oaEsc(mt)+"/schema")
		var inst any = string(body)
		if strings.HasSuffix(mt, "json") {
			if inst, err = jsonschema.UnmarshalJSON(bytes.NewReader(body)); err != nil {
				t.Fatalf("the %s body is not JSON: %v", mt, err)
			}
		}
		if err := sch.Validate(inst); err != nil {
			t.Errorf("the body does not conform to %s: %v\nbody: %s", respPtr, err, body)
		}
	}

	hdrs, _ := resp["headers"].(map[string]any)
	for name := range hdrs {
		hdr, hdrPtr := spec.deref(t, respPtr+"/headers/"+oaEsc(name))
		values := res.Header.Values(name)
		if len(values) == 0 {
			if req, _ := hdr["required"].(bool); req {
				t.Errorf("header %s is documented as required but absent", name)
			}
			continue
		}
		sch := spec.schema(t, hdrPtr+"/schema")
		typ, _ := hdr["schema"].(map[string]any)["type"].(string)
		for _, v := range values {
			var inst any = v
			if typ == "integer" || typ == "number" {
				if _, err := strconv.ParseFloat(v, 64); err != nil {
					t.Errorf("header %s = %q is not a number", name, v)
					continue
				}
				inst = json.Number(v)
			}
			if err := sch.Validate(inst); err != nil {
				t.Errorf("header %s = %q does not conform: %v", name, v, err)
			}
		}
	}
}

func oaKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
