package mpp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// testSecret is the mpp.md §2 vector's secret.
const testSecret = "test-secret-do-not-use-0123456789abcdef"

// testNow is the fixed clock of the table tests.
var testNow = time.Date(2026, 3, 23, 12, 0, 0, 0, time.UTC)

// dryRun costs 0.50 USDC here: 50 cents, Stripe's minimum.
var dryRun = payments.Price{Tool: "json_parse", Mode: payments.ModeDryRun, Amount: 500_000, Currency: "USDC", Resource: "/exec/tool"}

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// seen is one request the fake Stripe received.
type seen struct {
	Method, Path string
	Form         url.Values
	Query        url.Values
	Header       http.Header
}

// fakeStripe answers the few Stripe endpoints the rail calls, as Stripe does, and records
// what it was sent. Hooks replace the default answers to produce each outcome.
type fakeStripe struct {
	srv *httptest.Server

	mu       sync.Mutex
	creates  []seen
	gets     []seen
	refunds  []seen
	cancels  []seen
	pis      map[string]map[string]any // what GET /v1/payment_intents/{id} returns
	searches []seen
	// indexed is what GET /v1/payment_intents/search finds: the PaymentIntents the default
	// create made, and those a test adds (index). Later entries of one id replace earlier ones.
	indexed []map[string]any
	// onCreate answers a create instead of the default (n counts creates, from 1).
	onCreate func(w http.ResponseWriter, r *http.Request, form url.Values, n int)
	// onRefund answers a refund instead of the default.
	onRefund func(w http.ResponseWriter, r *http.Request, form url.Values, n int)
	// cancelFails makes every cancel answer 500.
	cancelFails bool
	// createdPIs are the PaymentIntents the default create made, by id.
	createdPIs map[string]bool
}

func newFakeStripe(t *testing.T) *fakeStripe {
	t.Helper()
	f := &fakeStripe{pis: map[string]map[string]any{}, createdPIs: map[string]bool{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeStripe) URL() string { return f.srv.URL }

func writeStripeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// stripeErr is a Stripe error body.
func stripeErr(typ, code, decline, msg string) map[string]any {
	e := map[string]any{"type": typ, "message": msg}
	if code != "" {
		e["code"] = code
	}
	if decline != "" {
		e["decline_code"] = decline
	}
	return map[string]any{"error": e}
}

// paymentIntent is a PaymentIntent as Stripe renders it.
func paymentIntent(id string, amount int64, currency, status string, created time.Time, metadata map[string]string) map[string]any {
	received := int64(0)
	if status == "succeeded" {
		received = amount
	}
	return map[string]any{
		"id": id, "object": "payment_intent", "amount": amount, "amount_received": received, "currency": currency,
		"status": status, "livemode": false, "created": created.Unix(), "metadata": metadata,
		"client_secret": id + "_secret_never_logged",
	}
}

func metadataOf(form url.Values) map[string]string {
	md := map[string]string{}
	for k, vs := range form {
		if strings.HasPrefix(k, "metadata[") && strings.HasSuffix(k, "]") && len(vs) > 0 {
			md[k[len("metadata["):len(k)-1]] = vs[0]
		}
	}
	return md
}

func (f *fakeStripe) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, _ := url.ParseQuery(string(body))
	s := seen{Method: r.Method, Path: r.URL.Path, Form: form, Query: r.URL.Query(), Header: r.Header.Clone()}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer sk_test_") {
		writeStripeJSON(w, http.StatusUnauthorized, stripeErr("invalid_request_error", "", "", "Invalid API Key provided"))
		return
	}
	f.mu.Lock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/payment_intents":
		f.creates = append(f.creates, s)
		n, hook := len(f.creates), f.onCreate
		f.mu.Unlock()
		if hook != nil {
			hook(w, r, form, n)
			return
		}
		var amount int64
		fmt.Sscan(form.Get("amount"), &amount)
		id := fmt.Sprintf("pi_fake%d", n)
		pi := paymentIntent(id, amount, form.Get("currency"), "succeeded", time.Now(), metadataOf(form))
		f.mu.Lock()
		f.createdPIs[id] = true
		f.pis[id] = pi
		f.indexed = append(f.indexed, pi)
		f.mu.Unlock()
		writeStripeJSON(w, http.StatusOK, pi)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/payment_intents/search":
		f.searches = append(f.searches, s)
		found := f.search(r.URL.Query().Get("query"))
		f.mu.Unlock()
		writeStripeJSON(w, http.StatusOK, map[string]any{"object": "search_result", "url": "/v1/payment_intents/search",
			"has_more": false, "next_page": nil, "data": found})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/payment_intents/"):
		f.gets = append(f.gets, s)
		pi, ok := f.pis[strings.TrimPrefix(r.URL.Path, "/v1/payment_intents/")]
		f.mu.Unlock()
		if !ok {
			writeStripeJSON(w, http.StatusNotFound, stripeErr("invalid_request_error", "resource_missing", "", "No such payment_intent"))
			return
		}
		writeStripeJSON(w, http.StatusOK, pi)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/cancel"):
		f.cancels = append(f.cancels, s)
		fails := f.cancelFails
		f.mu.Unlock()
		if fails {
			writeStripeJSON(w, http.StatusInternalServerError, stripeErr("api_error", "", "", "cancel failed"))
			return
		}
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/payment_intents/"), "/cancel")
		writeStripeJSON(w, http.StatusOK, paymentIntent(id, 50, "usd", "canceled", time.Now(), nil))
	case r.Method == http.MethodPost && r.URL.Path == "/v1/refunds":
		f.refunds = append(f.refunds, s)
		n, hook := len(f.refunds), f.onRefund
		f.mu.Unlock()
		if hook != nil {
			hook(w, r, form, n)
			return
		}
		writeStripeJSON(w, http.StatusOK, map[string]any{"id": fmt.Sprintf("re_fake%d", n), "object": "refund",
			"status": "succeeded", "payment_intent": form.Get("payment_intent"), "amount": 50, "currency": "usd"})
	default:
		f.mu.Unlock()
		writeStripeJSON(w, http.StatusNotFound, stripeErr("invalid_request_error", "", "", "Unrecognized request URL"))
	}
}

// search answers the one query the rail makes, metadata['mpp_challenge_id']:'<id>', as Stripe
// does; f.mu is held.
func (f *fakeStripe) search(query string) []map[string]any {
	const prefix, suffix = "metadata['mpp_challenge_id']:'", "'"
	if !strings.HasPrefix(query, prefix) || !strings.HasSuffix(query, suffix) {
		return nil
	}
	want := query[len(prefix) : len(query)-len(suffix)]
	latest := map[string]map[string]any{}
	var order []string
	for _, pi := range f.indexed {
		md, _ := pi["metadata"].(map[string]string)
		if md["mpp_challenge_id"] != want {
			continue
		}
		id := pi["id"].(string)
		if latest[id] == nil {
			order = append(order, id)
		}
		latest[id] = pi
	}
	out := []map[string]any{}
	for _, id := range order {
		out = append(out, latest[id])
	}
	return out
}

// index makes pi findable by search, replacing what search found of it before.
func (f *fakeStripe) index(pi map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.indexed = append(f.indexed, pi)
}

func (f *fakeStripe) searchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.searches)
}

func (f *fakeStripe) counts() (creates, refunds, cancels, gets int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.creates), len(f.refunds), len(f.cancels), len(f.gets)
}

func (f *fakeStripe) getRequests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.gets...)
}

// expands reports whether a request's query asks to expand field.
func expands(q url.Values, field string) bool {
	for k, vs := range q {
		if strings.HasPrefix(k, "expand") && slices.Contains(vs, field) {
			return true
		}
	}
	return false
}

func (f *fakeStripe) lastCreate() seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.creates[len(f.creates)-1]
}

func (f *fakeStripe) refundRequests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.refunds...)
}

func (f *fakeStripe) setCreate(h func(w http.ResponseWriter, r *http.Request, form url.Values, n int)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onCreate = h
}

func (f *fakeStripe) setRefund(h func(w http.ResponseWriter, r *http.Request, form url.Values, n int)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onRefund = h
}

func (f *fakeStripe) setPI(pi map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pis[pi["id"].(string)] = pi
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError + 4}))
}

// newTestStripe is a Stripe client of the fake (or of base), with short deadlines and its own
// transport, closed at cleanup so that no connection outlives the test.
func newTestStripe(t *testing.T, base string, mutate func(*StripeConfig)) *Stripe {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cfg := StripeConfig{SecretKey: "sk_test_fakeKey0123456789", BaseURL: base, Timeout: 3 * time.Second,
		AttemptTimeout: 2 * time.Second, MaxAttempts: 3, Transport: tr, Logger: testLogger(t)}
	if mutate != nil {
		mutate(&cfg)
	}
	st, err := NewStripe(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// testRail is a rail over the fake Stripe and an in-memory ledger, on a settable clock.
type testRail struct {
	*Rail
	fake  *fakeStripe
	book  *ledger.Memory
	clock *clock
}

func newTestRail(t *testing.T, mutate func(*Config)) *testRail {
	t.Helper()
	f := newFakeStripe(t)
	return newTestRailOn(t, f, newTestStripe(t, f.URL(), nil), mutate)
}

func newTestRailOn(t *testing.T, f *fakeStripe, st stripeAPI, mutate func(*Config)) *testRail {
	t.Helper()
	c := &clock{now: testNow}
	book := ledger.NewMemory()
	cfg := Config{Realm: "api.example.com", Secret: []byte(testSecret), NetworkID: "profile_test", Now: c.Now, Logger: testLogger(t)}
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := NewRail(cfg, st, book, book)
	if err != nil {
		t.Fatal(err)
	}
	return &testRail{Rail: r, fake: f, book: book, clock: c}
}

// challenge is what a client reads from the rail's 402: the WWW-Authenticate value parsed back.
func (tr *testRail) challenge(t *testing.T, price payments.Price) Challenge {
	t.Helper()
	offer, err := tr.Offer(context.Background(), price, nil)
	if err != nil {
		t.Fatal(err)
	}
	vals := offer.Header.Values(HeaderWWWAuthenticate)
	if len(vals) != 1 {
		t.Fatalf("offer has %d WWW-Authenticate values", len(vals))
	}
	cs, err := ParseChallenges(vals[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || !strings.EqualFold(cs[0].Scheme, SchemePayment) {
		t.Fatalf("offer %q is not one Payment challenge", vals[0])
	}
	c, err := ChallengeFromParams(cs[0].Params)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// credential is the Authorization value a client sends for c with the token spt.
func credential(t testing.TB, c Challenge, spt string) string {
	t.Helper()
	cred := Credential{Challenge: c, Source: "did:pkh:eip155:8453:0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", Payload: json.RawMessage(fmt.Sprintf(`{"spt":%q}`, spt))}
	tok, err := cred.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return "Payment " + tok
}

func requestWith(auth ...string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/exec/tool", nil)
	for _, a := range auth {
		r.Header.Add("Authorization", a)
	}
	return r
}

// openPayments lists the payments of the memory ledger that are verified, submitted or pending.
func openPayments(t *testing.T, m *ledger.Memory) []ledger.Payment {
	t.Helper()
	ps, err := m.ListRecoverable(context.Background(), -time.Hour, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func paymentByID(t *testing.T, m *ledger.Memory, a *payments.Authorization) ledger.Payment {
	t.Helper()
	p, ok := a.State.(*pendingPayment)
	if !ok {
		t.Fatalf("authorization state %T", a.State)
	}
	got, err := m.Get(context.Background(), p.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return "http://" + addr
}
