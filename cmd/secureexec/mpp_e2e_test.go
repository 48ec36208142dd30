package main

// The MPP rail end to end: the real serve() (in this process) with Postgres and Redis, the
// x402 rail on the dev chain beside it, and a fake Stripe on 127.0.0.1 that keeps the books a
// real one would (Shared Payment Tokens minted, spent once, bounded by their usage limits;
// PaymentIntents; refunds). Payers are this test (hand-built credentials) and mppx 0.11.0,
// the reference TypeScript client and conformance checker, unmodified.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
	"github.com/secureexec/secureexec/payments/mpp"
)

const (
	mppE2ENetworkID = "profile_e2e_secureexec"
	mppE2EGateKey   = "sk_test_e2eGateway0123456789"
	mppE2EPayerKey  = "sk_test_e2ePayer0123456789"
	mppE2EWhsec     = "whsec_e2e_0123456789abcdef0123"
	mppE2ECall      = `{"agentId":"mpp_e2e","tool":{"name":"hash_generate","args":{"input":"mpp"}},"dryRun":true}`
	mppSPTPath      = "/v1/test_helpers/shared_payment/granted_tokens"
)

// sptGrant is a Shared Payment Token as the fake Stripe minted it.
type sptGrant struct {
	currency  string
	maxAmount int64
	expiresAt int64
	networkID string
	spent     bool
}

// mppCharge is one PaymentIntent the fake Stripe confirmed.
type mppCharge struct {
	pi, spt, currency string
	amount            int64
}

// fakeStripeE2E is Stripe as the rail and mppx use it. down drops every connection; lose
// makes every charge, then drops its answer (and the answer to every retry of it).
type fakeStripeE2E struct {
	srv *httptest.Server

	mu      sync.Mutex
	grants  map[string]*sptGrant
	pis     map[string]map[string]any
	byKey   map[string][]byte
	charges []mppCharge
	refunds []string
	down    bool
	lose    bool
}

func newFakeStripeE2E(t *testing.T) *fakeStripeE2E {
	t.Helper()
	f := &fakeStripeE2E{grants: map[string]*sptGrant{}, pis: map[string]map[string]any{}, byKey: map[string][]byte{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeStripeE2E) setDown(v bool) { f.mu.Lock(); f.down = v; f.mu.Unlock() }
func (f *fakeStripeE2E) setLose(v bool) { f.mu.Lock(); f.lose = v; f.mu.Unlock() }

// drop closes the connection of w without an answer.
func drop(w http.ResponseWriter) {
	if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
		_ = c.Close()
	}
}

func (f *fakeStripeE2E) snapshot() (charges []mppCharge, refunds []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mppCharge(nil), f.charges...), append([]string(nil), f.refunds...)
}

func stripeAnswer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_e2e")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func stripeRefusal(w http.ResponseWriter, status int, typ, code, msg string) {
	stripeAnswer(w, status, map[string]any{"error": map[string]any{"type": typ, "code": code, "message": msg}})
}

// testKey accepts a test secret key as stripe-go sends it (Bearer) and as mppx does (Basic).
func testKey(r *http.Request) bool {
	a := r.Header.Get("Authorization")
	if k, ok := strings.CutPrefix(a, "Bearer "); ok {
		return strings.HasPrefix(k, "sk_test_")
	}
	if b, ok := strings.CutPrefix(a, "Basic "); ok {
		raw, err := base64.StdEncoding.DecodeString(b)
		return err == nil && strings.HasPrefix(string(raw), "sk_test_")
	}
	return false
}

func randomID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func (f *fakeStripeE2E) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		drop(w)
		return
	}
	if !testKey(r) {
		stripeRefusal(w, http.StatusUnauthorized, "invalid_request_error", "", "Invalid API Key provided")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, err := url.ParseQuery(string(body))
	if err != nil {
		stripeRefusal(w, http.StatusBadRequest, "invalid_request_error", "", "unreadable form")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == mppSPTPath:
		max, err1 := strconv.ParseInt(form.Get("usage_limits[max_amount]"), 10, 64)
		exp, err2 := strconv.ParseInt(form.Get("usage_limits[expires_at]"), 10, 64)
		if form.Get("payment_method") == "" || form.Get("usage_limits[currency]") == "" || err1 != nil || err2 != nil {
			stripeRefusal(w, http.StatusBadRequest, "invalid_request_error", "parameter_missing", "payment_method and usage_limits are required")
			return
		}
		g := &sptGrant{currency: form.Get("usage_limits[currency]"), maxAmount: max, expiresAt: exp, networkID: form.Get("seller_details[network_id]")}
		id := randomID("spt_")
		f.grants[id] = g
		stripeAnswer(w, http.StatusOK, map[string]any{"id": id, "object": "shared_payment.granted_token", "livemode": false,
			"usage_limits": map[string]any{"currency": g.currency, "max_amount": g.maxAmount, "expires_at": g.expiresAt}})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/payment_intents":
		key := r.Header.Get("Idempotency-Key")
		if prev, ok := f.byKey[key]; ok && key != "" {
			if f.lose {
				drop(w)
				return
			}
			w.Header().Set("Idempotent-Replayed", "true")
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(prev)
			return
		}
		spt := form.Get("shared_payment_granted_token")
		g := f.grants[spt]
		amount, _ := strconv.ParseInt(form.Get("amount"), 10, 64)
		switch {
		case r.Header.Get("Stripe-Version") != mpp.DefaultPreviewVersion:
			stripeRefusal(w, http.StatusBadRequest, "invalid_request_error", "", "shared payment tokens need a preview Stripe-Version")
		case form.Get("confirm") != "true" || form.Get("automatic_payment_methods[allow_redirects]") != "never":
			stripeRefusal(w, http.StatusBadRequest, "invalid_request_error", "", "an SPT is confirmed at creation, without redirects")
		case g == nil:
			stripeRefusal(w, http.StatusBadRequest, "invalid_request_error", "resource_missing", "No such shared payment token")
		case g.spent:
			stripeRefusal(w, http.StatusBadRequest, "invalid_request_error", "shared_payment_token_used", "This shared payment token was already used")
		case g.networkID != mppE2ENetworkID:
			stripeRefusal(w, http.StatusBadRequest, "invalid_request_error", "", "the token was not granted to this business")
		case g.currency != form.Get("currency") || amount <= 0 || amount > g.maxAmount || time.Now().Unix() > g.expiresAt:
			stripeRefusal(w, http.StatusBadRequest, "invalid_request_error", "shared_payment_token_usage_limit", "the charge exceeds the token's usage limits")
		default:
			g.spent = true
			md := map[string]string{}
			for k, vs := range form {
				if strings.HasPrefix(k, "metadata[") && strings.HasSuffix(k, "]") {
					md[k[len("metadata["):len(k)-1]] = vs[0]
				}
			}
			id := randomID("pi_")
			pi := map[string]any{"id": id, "object": "payment_intent", "amount": amount, "amount_received": amount,
				"currency": form.Get("currency"), "status": "succeeded", "livemode": false, "created": time.Now().Unix(), "metadata": md}
			raw, _ := json.Marshal(pi)
			f.pis[id], f.byKey[key] = pi, raw
			f.charges = append(f.charges, mppCharge{pi: id, spt: spt, currency: form.Get("currency"), amount: amount})
			if f.lose {
				drop(w)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(raw)
		}
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/payment_intents/"):
		pi, ok := f.pis[strings.TrimPrefix(r.URL.Path, "/v1/payment_intents/")]
		if !ok {
			stripeRefusal(w, http.StatusNotFound, "invalid_request_error", "resource_missing", "No such payment_intent")
			return
		}
		stripeAnswer(w, http.StatusOK, pi)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/cancel"):
		stripeAnswer(w, http.StatusOK, map[string]any{"object": "payment_intent", "status": "canceled",
			"id": strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/payment_intents/"), "/cancel")})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/refunds":
		pi := form.Get("payment_intent")
		f.refunds = append(f.refunds, pi)
		stripeAnswer(w, http.StatusOK, map[string]any{"id": "re_" + pi, "object": "refund", "status": "succeeded", "payment_intent": pi})
	default:
		stripeRefusal(w, http.StatusNotFound, "invalid_request_error", "", "Unrecognized request URL "+r.Method+" "+r.URL.Path)
	}
}

// mintSPT is what a payer does with its own Stripe key: grant a token to the gateway's
// business profile, for this challenge's amount, until it expires.
func (f *fakeStripeE2E) mintSPT(t *testing.T, c mpp.Challenge) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(c.Request)
	if err != nil {
		t.Fatal(err)
	}
	var req struct {
		Amount, Currency string
		MethodDetails    struct {
			NetworkID string `json:"networkId"`
		} `json:"methodDetails"`
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		t.Fatal(err)
	}
	exp, err := time.Parse(time.RFC3339, c.Expires)
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"payment_method": {"pm_card_visa"}, "usage_limits[currency]": {req.Currency}, "usage_limits[max_amount]": {req.Amount},
		"usage_limits[expires_at]": {strconv.FormatInt(exp.Unix(), 10)}, "seller_details[network_id]": {req.MethodDetails.NetworkID}}
	hreq, _ := http.NewRequest(http.MethodPost, f.srv.URL+mppSPTPath, strings.NewReader(form.Encode()))
	hreq.Header.Set("Authorization", "Bearer "+mppE2EPayerKey)
	hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("minting an SPT: %d %v", resp.StatusCode, err)
	}
	return out.ID
}

// mppReply is one response of the gateway.
type mppReply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func mppSend(t *testing.T, method, target string, body []byte, hdr map[string]string) mppReply {
	t.Helper()
	req, err := http.NewRequest(method, target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	r := mppReply{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// mppChallenges asks for a 402 and returns it with its stripe/charge challenge. A challenge
// id binds its expiry, written to the second: two 402s within one second carry the same
// challenge, and only one of them can be paid (a limit of payments/mpp). Tests that pay
// several times ask again until the id is new.
func mppChallenges(t *testing.T, base string, seen map[string]bool) (mppReply, mpp.Challenge) {
	t.Helper()
	for range 40 {
		r := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), nil)
		if r.status != http.StatusPaymentRequired {
			t.Fatalf("unpaid call: %d %s", r.status, r.raw)
		}
		c := stripeChallengeOf(t, r.header)
		if !seen[c.ID] {
			seen[c.ID] = true
			return r, c
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the gateway kept offering a challenge already paid")
	return mppReply{}, mpp.Challenge{}
}

func stripeChallengeOf(t *testing.T, h http.Header) mpp.Challenge {
	t.Helper()
	for _, v := range h.Values("WWW-Authenticate") {
		cs, err := mpp.ParseChallenges(v)
		if err != nil {
			t.Fatalf("WWW-Authenticate %q: %v", v, err)
		}
		for _, c := range cs {
			if ch, err := mpp.ChallengeFromParams(c.Params); err == nil && ch.Method == mpp.MethodStripe {
				return ch
			}
		}
	}
	t.Fatalf("no stripe challenge among %q", h.Values("WWW-Authenticate"))
	return mpp.Challenge{}
}

func mppAuthorization(t *testing.T, c mpp.Challenge, spt string) string {
	t.Helper()
	cred := mpp.Credential{Challenge: c, Source: "did:pkh:eip155:8453:0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
		Payload: json.RawMessage(fmt.Sprintf(`{"spt":%q}`, spt))}
	tok, err := cred.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return "Payment " + tok
}

// mppEnvFor is the gateway configuration: x402 on the dev chain, MPP over the fake Stripe,
// Postgres and Redis for the ledger. The challenge secret is fresh: claims live in Redis.
func mppEnvFor(dbURL, stripeURL string) map[string]string {
	return map[string]string{
		"DATABASE_URL": dbURL, "REDIS_URL": "redis://127.0.0.1:6379/0", "X402_NETWORK": "dev",
		"STRIPE_SECRET_KEY": mppE2EGateKey, "STRIPE_API_BASE": stripeURL, "STRIPE_TIMEOUT_S": "5",
		"STRIPE_WEBHOOK_SECRET": mppE2EWhsec, "MPP_CHALLENGE_SECRET": randomID("mpp-e2e-challenge-secret-"), "MPP_STRIPE_NETWORK_ID": mppE2ENetworkID,
		"MPP_AMOUNT_DRY_RUN": "50", "MPP_AMOUNT_REAL": "100",
	}
}

func TestMPPEndToEnd(t *testing.T) {
	dbURL, db := freshSchema(t)
	f := newFakeStripeE2E(t)
	env := mppEnvFor(dbURL, f.srv.URL)
	env["SECUREEXEC_DATA_DIR"] = t.TempDir()
	base, _ := startGateway(t, env)
	seen := map[string]bool{}

	// A 402 offers both rails: x402 (PAYMENT-REQUIRED) and MPP (WWW-Authenticate).
	unpaid, c := mppChallenges(t, base, seen)
	if unpaid.header.Get("Payment-Required") == "" || unpaid.body["challengeId"] != c.ID ||
		c.Realm != "127.0.0.1" || c.Intent != "charge" || unpaid.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("402: %v %s", unpaid.header, unpaid.raw)
	}

	// A credential pays once, with a receipt; GET /payments/{id} has it settled.
	auth := mppAuthorization(t, c, f.mintSPT(t, c))
	paid := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), map[string]string{"Authorization": auth})
	if paid.status != 200 || paid.body["paymentProtocol"] != "mpp" {
		t.Fatalf("paid call: %d %s", paid.status, paid.raw)
	}
	rcpt, err := mpp.DecodeReceipt(paid.header.Get("Payment-Receipt"))
	charges, _ := f.snapshot()
	if err != nil || len(charges) != 1 || rcpt.Reference != charges[0].pi || rcpt.Status != "success" || charges[0].amount != 50 || charges[0].currency != "usd" {
		t.Fatalf("receipt %+v (%v), charges %+v", rcpt, err, charges)
	}
	settlement, _ := paid.body["settlement"].(map[string]any)
	paymentID, _ := settlement["id"].(string)
	pay := mppSend(t, http.MethodGet, base+"/payments/"+paymentID, nil, nil)
	if pay.status != 200 || pay.body["status"] != "settled" || pay.body["rail"] != "mpp" || pay.body["transaction"] != rcpt.Reference {
		t.Fatalf("GET /payments/%s: %d %s", paymentID, pay.status, pay.raw)
	}

	// A reused credential never pays twice: the same credential resent is the lost response
	// (replayed, not run), another token for the used challenge is refused, and the
	// PaymentIntent presented in the seed's form (Authorization: MPP pi_…) is refused as used.
	again := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), map[string]string{"Authorization": auth})
	if again.status != 200 || again.header.Get("X-Idempotent-Replay") != "true" || again.body["jobId"] != paid.body["jobId"] {
		t.Fatalf("resent credential: %d %v %s", again.status, again.header, again.raw)
	}
	other := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), map[string]string{"Authorization": mppAuthorization(t, c, f.mintSPT(t, c))})
	if other.status != http.StatusPaymentRequired || other.body["code"] != "invalid_challenge" ||
		other.body["type"] != mpp.ProblemType(mpp.ReasonInvalidChallenge) || other.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("another token for a used challenge: %d %s", other.status, other.raw)
	}
	asPI := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), map[string]string{"Authorization": "MPP " + rcpt.Reference})
	if asPI.status != 402 || asPI.body["code"] != "verification_failed" || asPI.body["type"] != mpp.ProblemType(mpp.ReasonVerificationFailed) {
		t.Fatalf("a used PaymentIntent: %d %s", asPI.status, asPI.raw)
	}
	if charges, _ := f.snapshot(); len(charges) != 1 {
		t.Fatalf("a reused credential was charged: %+v", charges)
	}

	// Stripe unreachable: 503 with Retry-After, nothing charged; the charge written ahead
	// stays open. The same credential, resent once Stripe is back, pays its call.
	_, c2 := mppChallenges(t, base, seen)
	spt2 := f.mintSPT(t, c2)
	before := mppCount(t, db, "SELECT count(*) FROM payments")
	f.setDown(true)
	away := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), map[string]string{"Authorization": mppAuthorization(t, c2, spt2)})
	f.setDown(false)
	if away.status != 503 || away.header.Get("Retry-After") == "" || away.body["code"] != "payment_backend_unavailable" {
		t.Fatalf("Stripe away: %d %v %s", away.status, away.header, away.raw)
	}
	if charges, _ := f.snapshot(); len(charges) != 1 || mppCount(t, db, "SELECT count(*) FROM payments WHERE status = 'verified' AND attempts = 1") != 1 ||
		mppCount(t, db, "SELECT count(*) FROM payments") != before+1 {
		t.Fatalf("a call with Stripe away charged something, or its charge was not written ahead: %+v", charges)
	}
	back := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), map[string]string{"Authorization": mppAuthorization(t, c2, spt2)})
	if charges, _ := f.snapshot(); back.status != 200 || len(charges) != 2 {
		t.Fatalf("the resend once Stripe is back: %d %s, %d charges", back.status, back.raw, len(charges))
	}

	// Stripe charges but its answer is lost, every attempt: 503. The resent credential gets
	// its call, paid by that charge, and nothing is charged twice or refunded.
	_, c3 := mppChallenges(t, base, seen)
	spt3 := f.mintSPT(t, c3)
	f.setLose(true)
	lost := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), map[string]string{"Authorization": mppAuthorization(t, c3, spt3)})
	f.setLose(false)
	lostCharges, _ := f.snapshot()
	if lost.status != 503 || len(lostCharges) != 3 {
		t.Fatalf("a lost answer: %d %s, %d charges", lost.status, lost.raw, len(lostCharges))
	}
	resent := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), map[string]string{"Authorization": mppAuthorization(t, c3, spt3)})
	if resent.status != 200 {
		t.Fatalf("the resend after a lost answer: %d %s", resent.status, resent.raw)
	}
	lostRcpt, err := mpp.DecodeReceipt(resent.header.Get("Payment-Receipt"))
	if all, refunds := f.snapshot(); err != nil || lostRcpt.Reference != lostCharges[2].pi || len(all) != 3 || len(refunds) != 0 {
		t.Fatalf("the resend's receipt %+v (%v) for charge %s; %d charges, refunds %v", lostRcpt, err, lostCharges[2].pi, len(all), refunds)
	}
	var lostStatus string
	if err := db.QueryRow(context.Background(), "SELECT status FROM payments WHERE tx_hash = $1", lostCharges[2].pi).Scan(&lostStatus); err != nil || lostStatus != "settled" {
		t.Fatalf("the lost answer's payment: %q, %v", lostStatus, err)
	}

	// A signed webhook for a refund marks the payment and flags its payer, once.
	event, err := json.Marshal(map[string]any{"id": randomID("evt_"), "object": "event", "api_version": "2026-07-29.preview",
		"created": time.Now().Unix(), "livemode": false, "type": "charge.refunded", "data": map[string]any{"object": map[string]any{
			"id": "ch_e2e", "object": "charge", "payment_intent": rcpt.Reference, "amount_refunded": 50, "currency": "usd"}}})
	if err != nil {
		t.Fatal(err)
	}
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: event, Secret: mppE2EWhsec, Timestamp: time.Now()}).Header
	for i, want := range []string{`"received":true}`, `"duplicate":true`} {
		r := mppSend(t, http.MethodPost, base+mpp.WebhookPath, event, map[string]string{"Stripe-Signature": sig})
		if r.status != 200 || !strings.Contains(string(r.raw), want) {
			t.Fatalf("webhook delivery %d: %d %s", i+1, r.status, r.raw)
		}
	}
	if r := mppSend(t, http.MethodPost, base+mpp.WebhookPath, event, map[string]string{"Stripe-Signature": "t=1,v1=00"}); r.status != 400 {
		t.Fatalf("badly signed webhook: %d %s", r.status, r.raw)
	}
	var kind, ref string
	if err := db.QueryRow(context.Background(), "SELECT kind, reference FROM payment_marks WHERE payment_id = $1::uuid", paymentID).Scan(&kind, &ref); err != nil ||
		kind != "refunded" || ref != "ch_e2e" || mppCount(t, db, "SELECT count(*) FROM payment_marks") != 1 {
		t.Fatalf("payment mark: %q %q %v", kind, ref, err)
	}
	if n := mppCount(t, db, "SELECT count(*) FROM agent_flags WHERE payer = 'did:pkh:eip155:8453:0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC' AND reason = 'charge_refunded'"); n != 1 {
		t.Fatalf("%d flags, want the payer's one", n)
	}

	t.Run("mppx validate", func(t *testing.T) { mppxValidate(t, base, f) })
	t.Run("mppx pays", func(t *testing.T) { mppxPays(t, base, f) })
}

func mppCount(t *testing.T, db *pgx.Conn, sql string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// mppx runs the mppx 0.11.0 CLI from node_modules with a scratch HOME and working directory,
// the payer's Stripe test key, and its SPT minting pointed at the fake Stripe. It returns
// stdout and stderr and the exit error.
func mppx(t *testing.T, f *fakeStripeE2E, args ...string) (string, string, error) {
	t.Helper()
	root := moduleRoot(t)
	bin := filepath.Join(root, "node_modules", "mppx", "dist", "bin.js")
	if raw, err := os.ReadFile(filepath.Join(root, "node_modules", "mppx", "package.json")); err != nil || !bytes.Contains(raw, []byte(`"version": "0.11.0"`)) {
		t.Fatalf("mppx 0.11.0 is not installed (%v): run `npm ci` in %s", err, root)
	}
	node, err := osexec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH (%v): the mppx interop test needs Node.js 20+", err)
	}
	// A challenge paid within the second mppx asks for its own would be the same challenge.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	scratch := t.TempDir()
	cmd := osexec.CommandContext(ctx, node, append([]string{bin}, args...)...)
	cmd.Dir = scratch
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + scratch, "NO_COLOR=1", "CI=true",
		"MPPX_STRIPE_SECRET_KEY=" + mppE2EPayerKey, "MPPX_STRIPE_SPT_URL=" + f.srv.URL + mppSPTPath}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr procOutput
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	return stdout.String(), stderr.String(), err
}

// mppxValidate: `mppx validate` finds the paid endpoint from /openapi.json, checks the
// challenge and the refusal of a malformed credential, and pays with a card through the fake
// Stripe, with nothing failed.
func mppxValidate(t *testing.T, base string, f *fakeStripeE2E) {
	before, _ := f.snapshot()
	stdout, stderr, err := mppx(t, f, "validate", base, "--output-json")
	var res struct {
		Discovery struct {
			Found, Valid bool
		}
		Endpoints []struct {
			Method, Path                      string
			Challenge, ErrorHandling, Payment []struct {
				Label, Detail, Severity string
			}
		}
		Summary struct {
			Passed, Failed, Warnings int
		}
	}
	if jerr := json.Unmarshal([]byte(stdout), &res); jerr != nil || err != nil {
		t.Fatalf("mppx validate: %v (%v)\nstdout:\n%s\nstderr:\n%s", err, jerr, stdout, stderr)
	}
	if !res.Discovery.Found || !res.Discovery.Valid || len(res.Endpoints) != 1 || res.Endpoints[0].Path != "/exec/tool" || res.Summary.Failed != 0 {
		t.Fatalf("mppx validate: %+v\n%s", res, stdout)
	}
	labels := map[string]string{}
	ep := res.Endpoints[0]
	for _, list := range [][]struct{ Label, Detail, Severity string }{ep.Challenge, ep.ErrorHandling, ep.Payment} {
		for _, r := range list {
			labels[r.Label] = r.Severity
			if r.Severity != "pass" {
				t.Logf("mppx validate: %s %s (%s)", r.Severity, r.Label, r.Detail)
			}
		}
	}
	for _, want := range []string{"Returns 402 without credentials", "Challenge parseable", "[stripe] Has networkId", "Realm matches server hostname",
		"Malformed credential returns 402", "Error response includes fresh challenge", "Payment [stripe]: submitted", "Payment [stripe]: successful"} {
		if labels[want] != "pass" && labels[strings.TrimPrefix(want, "[stripe] ")] != "pass" {
			t.Errorf("mppx validate: %q is %q, want pass", want, labels[want])
		}
	}
	t.Logf("mppx validate: %d passed, %d failed, %d warnings", res.Summary.Passed, res.Summary.Failed, res.Summary.Warnings)
	after, _ := f.snapshot()
	if len(after) != len(before)+1 {
		t.Fatalf("mppx validate paid %d times, want once", len(after)-len(before))
	}
}

// mppxPays: the mppx client answers the 402 of a real call by minting a token and paying;
// the gateway runs the call and returns a receipt that names the PaymentIntent charged. mppx
// also parses the challenge (`sign --dry-run`).
func mppxPays(t *testing.T, base string, f *fakeStripeE2E) {
	before, _ := f.snapshot()
	stdout, stderr, err := mppx(t, f, base+"/exec/tool", "--json-body", `{"agentId":"mppx","tool":{"name":"math_compute","args":{"expression":"6*7"}},"dryRun":false}`,
		"--protocol", "mpp", "--method-opt", "paymentMethod=pm_card_visa", "--include", "--fail")
	if err != nil {
		t.Fatalf("mppx: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	after, _ := f.snapshot()
	if len(after) != len(before)+1 || after[len(after)-1].amount != 100 {
		t.Fatalf("mppx paid %+v, want one charge of 100 cents (a real run)", after[len(before):])
	}
	// --include prints the 402 mppx answered, then the paid response: its headers (names in
	// lower case) and its body.
	pi := after[len(after)-1].pi
	var receipt string
	for _, line := range strings.Split(stdout, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "payment-receipt: "); ok {
			receipt = strings.TrimSpace(v)
		}
	}
	rcpt, rerr := mpp.DecodeReceipt(receipt)
	if rerr != nil || rcpt.Reference != pi || rcpt.Status != "success" || !strings.Contains(stdout, "HTTP/1.1 200 OK") ||
		!strings.Contains(stdout, `"paymentProtocol":"mpp"`) || !strings.Contains(stdout, `"status":"completed"`) || !strings.Contains(stdout, `"result":42`) {
		t.Fatalf("mppx: receipt %+v (%v), want reference %s, and the call's result:\n%s\nstderr:\n%s", rcpt, rerr, pi, stdout, stderr)
	}

	// The CLI's own parser accepts the challenge as served.
	r := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), nil)
	_, stderr, err = mppx(t, f, "sign", "--challenge", r.header.Get("WWW-Authenticate"), "--dry-run")
	if err != nil || !strings.Contains(stderr, "Challenge is valid") {
		t.Fatalf("mppx sign --dry-run: %v\n%s", err, stderr)
	}
}

// The embedded default with the MPP rail alone: no x402 offer, the in-process ledger, and no
// webhook without its secret.
func TestMPPAloneOnTheEmbeddedDefault(t *testing.T) {
	f := newFakeStripeE2E(t)
	env := mppEnvFor("", f.srv.URL)
	delete(env, "DATABASE_URL")
	delete(env, "REDIS_URL")
	delete(env, "STRIPE_WEBHOOK_SECRET")
	env["X402_NETWORK"] = "off"
	env["SECUREEXEC_DATA_DIR"] = t.TempDir()
	base, _ := startGateway(t, env)

	unpaid, c := mppChallenges(t, base, map[string]bool{})
	if unpaid.header.Get("Payment-Required") != "" || len(unpaid.header.Values("WWW-Authenticate")) != 1 {
		t.Fatalf("402 with MPP alone: %v", unpaid.header)
	}
	paid := mppSend(t, http.MethodPost, base+"/exec/tool", []byte(mppE2ECall), map[string]string{"Authorization": mppAuthorization(t, c, f.mintSPT(t, c))})
	settlement, _ := paid.body["settlement"].(map[string]any)
	if paid.status != 200 || paid.header.Get("Payment-Receipt") == "" || settlement["status"] != "settled" {
		t.Fatalf("paid call: %d %v %s", paid.status, paid.header, paid.raw)
	}
	if p := mppSend(t, http.MethodGet, fmt.Sprint(base, "/payments/", settlement["id"]), nil, nil); p.status != 200 || p.body["rail"] != "mpp" {
		t.Fatalf("payment: %d %s", p.status, p.raw)
	}
	if r := mppSend(t, http.MethodPost, base+mpp.WebhookPath, []byte(`{}`), nil); r.status != 404 {
		t.Fatalf("webhook without STRIPE_WEBHOOK_SECRET: %d", r.status)
	}
}

// The reconciler refunds a charge whose call never completed, and stops when told.
func TestMPPReconcilerRefundsAbandonedCharges(t *testing.T) {
	f := newFakeStripeE2E(t)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client, err := mpp.NewStripe(mpp.StripeConfig{SecretKey: mppE2EGateKey, BaseURL: f.srv.URL, Timeout: 5 * time.Second, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	book := ledger.NewMemory()
	rail, err := mpp.NewRail(mpp.Config{Realm: "127.0.0.1", Secret: []byte(randomID("mpp-reconcile-secret-")), NetworkID: mppE2ENetworkID,
		Amounts: map[payments.Mode]uint64{payments.ModeDryRun: 50}}, client, book, book)
	if err != nil {
		t.Fatal(err)
	}
	price := payments.DefaultPrices.Price("json_parse", payments.ModeDryRun, "/exec/tool")
	c, err := rail.NewChallenge(price)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/exec/tool", nil)
	req.Header.Set("Authorization", mppAuthorization(t, c, f.mintSPT(t, c)))
	auth, err := rail.Verify(context.Background(), req, price) // charged; the call then "crashes"
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runMPPReconciler(ctx, rail, book, 10*time.Millisecond, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := book.Get(context.Background(), uuid.MustParse(auth.Reference))
		if err != nil {
			t.Fatal(err)
		}
		if p.Status == ledger.StatusNotCharged {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the abandoned charge is still %s", p.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	charges, refunds := f.snapshot()
	if len(charges) != 1 || len(refunds) != 1 || refunds[0] != charges[0].pi {
		t.Fatalf("charges %+v, refunds %v", charges, refunds)
	}
}
