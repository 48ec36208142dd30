package mpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

const testSPT = "spt_1QxYzTestToken"

// outcome is what one Verify must produce.
type outcome struct {
	reason      string // refusal reason, "" when not refused
	unavailable bool   // payments.ErrUnavailable
}

func checkOutcome(t *testing.T, err error, want outcome) {
	t.Helper()
	switch {
	case want.unavailable:
		if !errors.Is(err, payments.ErrUnavailable) || Reason(err) != "" {
			t.Fatalf("err = %v, want payments.ErrUnavailable", err)
		}
	case Reason(err) != want.reason:
		t.Fatalf("reason %q (err %v), want %q", Reason(err), err, want.reason)
	case want.reason == "" && err != nil:
		t.Fatalf("err = %v", err)
	}
	if want.reason != "" {
		var pe *payments.PaymentError
		if !errors.As(err, &pe) || pe.Rail != RailName {
			t.Fatalf("refusal %v is not a PaymentError of rail mpp", err)
		}
	}
}

func replayed(w http.ResponseWriter, form url.Values, id string) {
	w.Header().Set("Idempotent-Replayed", "true")
	var amount int64
	fmt.Sscan(form.Get("amount"), &amount)
	writeStripeJSON(w, http.StatusOK, paymentIntent(id, amount, form.Get("currency"), "succeeded", time.Now(), metadataOf(form)))
}

// TestVerifyStripeOutcomes runs the SPT charge against a fake Stripe for each outcome Stripe
// can give, and checks the answer, what reached Stripe, and what the ledger holds.
func TestVerifyStripeOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		create   func(w http.ResponseWriter, r *http.Request, form url.Values, n int)
		base     func(t *testing.T) string // Stripe's URL instead of the fake's
		stripe   func(*StripeConfig)
		want     outcome
		creates  int  // create requests Stripe received
		refunded bool // the charge was refunded
		cancels  int
		recorded bool   // the charge is taken: an authorization, its payment verified with its PaymentIntent
		inDoubt  bool   // no answer: the payment stays verified, resumable, with no PaymentIntent
		ref      string // the PaymentIntent a closed payment records
	}{
		{name: "succeeded", want: outcome{}, creates: 1, recorded: true},
		{name: "declined", create: func(w http.ResponseWriter, _ *http.Request, form url.Values, n int) {
			body := stripeErr("card_error", "card_declined", "insufficient_funds", "Your card has insufficient funds.")
			body["error"].(map[string]any)["payment_intent"] = paymentIntent("pi_declined", 50, "usd", "requires_payment_method", time.Now(), nil)
			writeStripeJSON(w, http.StatusPaymentRequired, body)
		}, want: outcome{reason: ReasonVerificationFailed}, creates: 1, ref: "pi_declined"},
		{name: "token refused", create: func(w http.ResponseWriter, _ *http.Request, _ url.Values, _ int) {
			writeStripeJSON(w, http.StatusBadRequest, stripeErr("invalid_request_error", "shared_payment_granted_token_expired", "", "expired"))
		}, want: outcome{reason: ReasonVerificationFailed}, creates: 1},
		{name: "replayed response refused", create: func(w http.ResponseWriter, _ *http.Request, form url.Values, _ int) {
			replayed(w, form, "pi_replayed")
		}, want: outcome{reason: ReasonVerificationFailed}, creates: 1},
		{name: "wrong amount is refunded", create: func(w http.ResponseWriter, _ *http.Request, form url.Values, _ int) {
			writeStripeJSON(w, http.StatusOK, paymentIntent("pi_wrongamount", 60, "usd", "succeeded", time.Now(), metadataOf(form)))
		}, want: outcome{reason: ReasonVerificationFailed}, creates: 1, refunded: true, ref: "pi_wrongamount"},
		{name: "wrong currency is refunded", create: func(w http.ResponseWriter, _ *http.Request, form url.Values, _ int) {
			writeStripeJSON(w, http.StatusOK, paymentIntent("pi_wrongcurrency", 50, "eur", "succeeded", time.Now(), metadataOf(form)))
		}, want: outcome{reason: ReasonVerificationFailed}, creates: 1, refunded: true, ref: "pi_wrongcurrency"},
		{name: "requires action is canceled", create: func(w http.ResponseWriter, _ *http.Request, form url.Values, _ int) {
			writeStripeJSON(w, http.StatusOK, paymentIntent("pi_action", 50, "usd", "requires_action", time.Now(), metadataOf(form)))
		}, want: outcome{reason: ReasonPaymentActionRequired}, creates: 1, cancels: 1, ref: "pi_action"},
		{name: "not succeeded is canceled", create: func(w http.ResponseWriter, _ *http.Request, form url.Values, _ int) {
			writeStripeJSON(w, http.StatusOK, paymentIntent("pi_rpm", 50, "usd", "requires_payment_method", time.Now(), metadataOf(form)))
		}, want: outcome{reason: ReasonVerificationFailed}, creates: 1, cancels: 1, ref: "pi_rpm"},
		{name: "processing stays open for reconciliation", create: func(w http.ResponseWriter, _ *http.Request, form url.Values, _ int) {
			writeStripeJSON(w, http.StatusOK, paymentIntent("pi_processing", 50, "usd", "processing", time.Now(), metadataOf(form)))
		}, want: outcome{reason: ReasonVerificationFailed}, creates: 1},
		{name: "5xx then success is retried with the same key", create: func(w http.ResponseWriter, _ *http.Request, form url.Values, n int) {
			if n == 1 {
				writeStripeJSON(w, http.StatusInternalServerError, stripeErr("api_error", "", "", "boom"))
				return
			}
			writeStripeJSON(w, http.StatusOK, paymentIntent("pi_retried", 50, "usd", "succeeded", time.Now(), metadataOf(form)))
		}, want: outcome{}, creates: 2, recorded: true},
		{name: "replay after our own failed attempt is ours", create: func(w http.ResponseWriter, _ *http.Request, form url.Values, n int) {
			if n == 1 {
				writeStripeJSON(w, http.StatusServiceUnavailable, stripeErr("api_error", "", "", "unavailable"))
				return
			}
			replayed(w, form, "pi_ours")
		}, want: outcome{}, creates: 2, recorded: true},
		{name: "5xx every time", create: func(w http.ResponseWriter, _ *http.Request, _ url.Values, _ int) {
			writeStripeJSON(w, http.StatusBadGateway, stripeErr("api_error", "", "", "bad gateway"))
		}, want: outcome{unavailable: true}, creates: 3, inDoubt: true},
		{name: "bad api key", create: func(w http.ResponseWriter, _ *http.Request, _ url.Values, _ int) {
			writeStripeJSON(w, http.StatusUnauthorized, stripeErr("invalid_request_error", "", "", "Invalid API Key"))
		}, want: outcome{unavailable: true}, creates: 1, inDoubt: true},
		{name: "response over the size cap", create: func(w http.ResponseWriter, _ *http.Request, form url.Values, _ int) {
			pi := paymentIntent("pi_big", 50, "usd", "succeeded", time.Now(), metadataOf(form))
			pi["description"] = strings.Repeat("x", 4096)
			writeStripeJSON(w, http.StatusOK, pi)
		}, stripe: func(c *StripeConfig) { c.MaxResponseBytes = 1024; c.MaxAttempts = 1 }, want: outcome{unavailable: true}, creates: 1, inDoubt: true},
		{name: "network error", base: closedPort, want: outcome{unavailable: true}, inDoubt: true},
		{name: "timeout", create: func(w http.ResponseWriter, r *http.Request, _ url.Values, _ int) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, stripe: func(c *StripeConfig) { c.Timeout, c.AttemptTimeout = 400*time.Millisecond, 150*time.Millisecond },
			want: outcome{unavailable: true}, inDoubt: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeStripe(t)
			f.setCreate(tc.create)
			base := f.URL()
			if tc.base != nil {
				base = tc.base(t)
			}
			tr := newTestRailOn(t, f, newTestStripe(t, base, tc.stripe), nil)
			c := tr.challenge(t, dryRun)
			a, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun)
			checkOutcome(t, err, tc.want)
			creates, refunds, cancels, _ := f.counts()
			if tc.creates > 0 && creates != tc.creates && tc.name != "timeout" {
				t.Errorf("Stripe got %d creates, want %d", creates, tc.creates)
			}
			if got := refunds == 1; got != tc.refunded || refunds > 1 {
				t.Errorf("Stripe got %d refunds, want refunded=%v", refunds, tc.refunded)
			}
			if cancels != tc.cancels {
				t.Errorf("Stripe got %d cancels, want %d", cancels, tc.cancels)
			}
			p, err := tr.book.GetByNonceKey(context.Background(), "mpp:challenge:"+c.ID)
			if err != nil {
				t.Fatalf("the charge was not written ahead: %v", err)
			}
			if strings.Contains(string(p.Payload), testSPT) {
				t.Fatal("the token was stored")
			}
			if p.Rail != "mpp" || p.Network != "stripe" || p.Asset != "usd" || p.Amount.Cmp(big.NewInt(50)) != 0 || p.PayTo != "profile_test" ||
				p.Payer != "did:pkh:eip155:8453:0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC" {
				t.Fatalf("recorded %+v", p)
			}
			processing := strings.HasPrefix(tc.name, "processing")
			switch {
			case tc.recorded:
				if p.Status != ledger.StatusVerified || !strings.HasPrefix(p.TxHash, "pi_") {
					t.Fatalf("a taken charge: %s, reference %q", p.Status, p.TxHash)
				}
				if a == nil || a.Rail != RailName || a.Amount != dryRun.Amount || a.Reference != p.ID.String() || a.Payer != "" {
					t.Fatalf("authorization %+v", a)
				}
				return
			case tc.inDoubt:
				if p.Status != ledger.StatusVerified || p.TxHash != "" || p.Attempts != 1 {
					t.Fatalf("a charge without an answer: %s, reference %q, %d attempts", p.Status, p.TxHash, p.Attempts)
				}
			case processing:
				if p.Status != ledger.StatusVerified || p.TxHash != "pi_processing" || p.Attempts != 0 {
					t.Fatalf("a processing charge: %s, reference %q, %d attempts", p.Status, p.TxHash, p.Attempts)
				}
			default:
				if p.Status != ledger.StatusNotCharged || p.TxHash != tc.ref || p.ErrorReason == "" {
					t.Fatalf("a refused charge: %s, reference %q (want %q), reason %q", p.Status, p.TxHash, tc.ref, p.ErrorReason)
				}
			}
			if a != nil {
				t.Fatal("an authorization came with a refusal")
			}
		})
	}
}

// TestChargeRequestShape pins the create+confirm to mpp.md §4.
func TestChargeRequestShape(t *testing.T) {
	tr := newTestRail(t, nil)
	c := tr.challenge(t, dryRun)
	if _, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun); err != nil {
		t.Fatal(err)
	}
	req := tr.fake.lastCreate()
	for k, want := range map[string]string{
		"amount": "50", "currency": "usd", "confirm": "true",
		"automatic_payment_methods[enabled]": "true", "automatic_payment_methods[allow_redirects]": "never",
		"shared_payment_granted_token": testSPT,
		"metadata[machine_payment]":    "true", "metadata[mpp_intent]": "charge", "metadata[mpp_challenge_id]": c.ID,
		"metadata[mpp_sdk]": "secureexec", "metadata[secureexec_gateway]": "api.example.com",
	} {
		if got := req.Form.Get(k); got != want {
			t.Errorf("form %s = %q, want %q", k, got, want)
		}
	}
	if got, want := req.Header.Get("Idempotency-Key"), "mpp_"+c.ID+"_"+testSPT; got != want {
		t.Errorf("Idempotency-Key %q, want %q", got, want)
	}
	if got := req.Header.Get("Stripe-Version"); got != DefaultPreviewVersion {
		t.Errorf("Stripe-Version %q, want %q", got, DefaultPreviewVersion)
	}
	if vs := req.Header.Values("Stripe-Version"); len(vs) != 1 {
		t.Errorf("Stripe-Version sent %d times", len(vs))
	}
}

// otherFirst changes the first character of id (an "A" would be no change for an id that
// starts with one).
func otherFirst(id string) string {
	if id[0] == 'A' {
		return "B" + id[1:]
	}
	return "A" + id[1:]
}

func TestVerifyChallengeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(c *Challenge)
		at     time.Duration // clock advance before Verify
		want   string
	}{
		{"valid", nil, 0, ""},
		{"valid just before expiry", nil, DefaultChallengeTTL - time.Second, ""},
		{"tampered id", func(c *Challenge) { c.ID = otherFirst(c.ID) }, 0, ReasonInvalidChallenge},
		{"tampered request", func(c *Challenge) { c.Request = "e30" }, 0, ReasonInvalidChallenge},
		{"expiry pushed back", func(c *Challenge) { c.Expires = "2099-01-01T00:00:00Z" }, 0, ReasonInvalidChallenge},
		{"expired", nil, DefaultChallengeTTL, ReasonPaymentExpired},
		{"foreign realm", func(c *Challenge) { c.Realm = "evil.example.com" }, 0, ReasonInvalidChallenge},
		{"wrong method", func(c *Challenge) { c.Method = "tempo" }, 0, ReasonMethodUnsupported},
		{"wrong intent", func(c *Challenge) { c.Intent = "session" }, 0, ReasonMethodUnsupported},
		{"header param we never send", func(c *Challenge) { c.Header = "Payment-Authorization" }, 0, ReasonInvalidChallenge},
		{"opaque we never send", func(c *Challenge) { c.Opaque = "e30" }, 0, ReasonInvalidChallenge},
		{"description is display only", func(c *Challenge) { c.Description = "anything" }, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestRail(t, nil)
			c := tr.challenge(t, dryRun)
			if tc.mutate != nil {
				tc.mutate(&c)
			}
			tr.clock.Set(testNow.Add(tc.at))
			_, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun)
			checkOutcome(t, err, outcome{reason: tc.want})
			creates, _, _, _ := tr.fake.counts()
			if (tc.want == "") != (creates == 1) {
				t.Fatalf("Stripe got %d creates", creates)
			}
		})
	}
}

func TestVerifyChallengeOfAnotherPrice(t *testing.T) {
	tr := newTestRail(t, nil)
	c := tr.challenge(t, dryRun) // 50 cents
	real := dryRun
	real.Mode, real.Amount = payments.ModeReal, 1_000_000
	_, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), real)
	checkOutcome(t, err, outcome{reason: ReasonInvalidChallenge})
}

func TestVerifyRefusesPayload(t *testing.T) {
	tr := newTestRail(t, nil)
	c := tr.challenge(t, dryRun)
	_, err := tr.Verify(context.Background(), requestWith(credential(t, c, "pm_card_visa")), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonInvalidPayload})
	// A refused payload does not use up the challenge.
	if _, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyRefusesUnstorableExternalID: an externalId the payment record cannot hold (a NUL,
// a control character) is refused as invalid-payload before the challenge is claimed, not
// answered 503 with the challenge used up.
func TestVerifyRefusesUnstorableExternalID(t *testing.T) {
	tr := newTestRail(t, nil)
	c := tr.challenge(t, dryRun)
	for _, ext := range []string{`order\u00001`, `order\n1`, `order\u007f1`} {
		cred := Credential{Challenge: c, Payload: json.RawMessage(`{"spt":"` + testSPT + `","externalId":"` + ext + `"}`)}
		tok, err := cred.Encode()
		if err != nil {
			t.Fatal(err)
		}
		_, err = tr.Verify(context.Background(), requestWith("Payment "+tok), dryRun)
		checkOutcome(t, err, outcome{reason: ReasonInvalidPayload})
	}
	if creates, _, _, _ := tr.fake.counts(); creates != 0 {
		t.Fatalf("%d charges for refused payloads", creates)
	}
	if _, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun); err != nil {
		t.Fatalf("the challenge was used up by a refused payload: %v", err)
	}
}

func TestReusedChallenge(t *testing.T) {
	tr := newTestRail(t, nil)
	c := tr.challenge(t, dryRun)
	auth := credential(t, c, testSPT)
	if _, err := tr.Verify(context.Background(), requestWith(auth), dryRun); err != nil {
		t.Fatal(err)
	}
	_, err := tr.Verify(context.Background(), requestWith(auth), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonInvalidChallenge})
	// With another token too: the challenge, not the token, is single-use.
	_, err = tr.Verify(context.Background(), requestWith(credential(t, c, "spt_other")), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonInvalidChallenge})
	if creates, _, _, _ := tr.fake.counts(); creates != 1 {
		t.Fatalf("Stripe got %d creates", creates)
	}
}

// TestConcurrentCredential sends one credential many times at once: one call is paid, once.
func TestConcurrentCredential(t *testing.T) {
	tr := newTestRail(t, nil)
	auth := credential(t, tr.challenge(t, dryRun), testSPT)
	var wins, refused atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := tr.Verify(context.Background(), requestWith(auth), dryRun)
			switch {
			case err == nil:
				wins.Add(1)
			case Reason(err) == ReasonInvalidChallenge:
				refused.Add(1)
			default:
				t.Errorf("unexpected %v", err)
			}
		}()
	}
	wg.Wait()
	if creates, _, _, _ := tr.fake.counts(); wins.Load() != 1 || refused.Load() != 19 || creates != 1 {
		t.Fatalf("wins %d, refused %d, creates %d", wins.Load(), refused.Load(), creates)
	}
}

func TestMalformedCredentials(t *testing.T) {
	tr := newTestRail(t, nil)
	tok := strings.TrimPrefix(credential(t, tr.challenge(t, dryRun), testSPT), "Payment ")
	for _, tc := range []struct {
		name    string
		headers []string
		want    string
	}{
		{"not base64url", []string{"Payment !!!"}, ReasonMalformedCredential},
		{"not JSON", []string{"Payment " + b64("nope")}, ReasonMalformedCredential},
		{"two Payment authorizations", []string{"Payment " + tok, "Payment " + tok}, ReasonBadRequest},
		{"MPP without an id", []string{"MPP"}, ReasonMalformedCredential},
		{"MPP with a charge id", []string{"MPP ch_123"}, ReasonMalformedCredential},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := requestWith(tc.headers...)
			if !tr.Accepts(r) {
				t.Fatal("not accepted")
			}
			_, err := tr.Verify(context.Background(), r, dryRun)
			checkOutcome(t, err, outcome{reason: tc.want})
		})
	}
	if tr.Accepts(requestWith("x402 abc")) || tr.Accepts(requestWith()) {
		t.Fatal("accepts credentials of other rails")
	}
	if creates, _, _, _ := tr.fake.counts(); creates != 0 {
		t.Fatalf("Stripe got %d creates", creates)
	}
}

func boundPI(id string, amount int64, currency, status string, created time.Time) map[string]any {
	return paymentIntent(id, amount, currency, status, created, map[string]string{DefaultBindKey: "api.example.com"})
}

// TestPaymentIntentForm covers the seed's `Authorization: MPP pi_…`.
func TestPaymentIntentForm(t *testing.T) {
	created := testNow.Add(-time.Minute)
	for _, tc := range []struct {
		name string
		pi   map[string]any
		want outcome
	}{
		{"succeeded and bound", boundPI("pi_ok1", 50, "usd", "succeeded", created), outcome{}},
		{"foreign metadata", paymentIntent("pi_foreign", 50, "usd", "succeeded", created, map[string]string{DefaultBindKey: "other.example.com"}), outcome{reason: ReasonVerificationFailed}},
		{"no metadata", paymentIntent("pi_nometa", 50, "usd", "succeeded", created, nil), outcome{reason: ReasonVerificationFailed}},
		{"amount too low", boundPI("pi_low", 49, "usd", "succeeded", created), outcome{reason: ReasonPaymentInsufficient}},
		{"amount too high", boundPI("pi_high", 51, "usd", "succeeded", created), outcome{reason: ReasonVerificationFailed}},
		{"wrong currency", boundPI("pi_eur", 50, "eur", "succeeded", created), outcome{reason: ReasonVerificationFailed}},
		{"not succeeded", boundPI("pi_proc", 50, "usd", "processing", created), outcome{reason: ReasonVerificationFailed}},
		{"requires action", boundPI("pi_act", 50, "usd", "requires_action", created), outcome{reason: ReasonPaymentActionRequired}},
		{"too old", boundPI("pi_old", 50, "usd", "succeeded", testNow.Add(-25*time.Hour)), outcome{reason: ReasonPaymentExpired}},
		{"from the future", boundPI("pi_future", 50, "usd", "succeeded", testNow.Add(time.Hour)), outcome{reason: ReasonVerificationFailed}},
		{"live object for a test key", func() map[string]any {
			pi := boundPI("pi_live", 50, "usd", "succeeded", created)
			pi["livemode"] = true
			return pi
		}(), outcome{reason: ReasonVerificationFailed}},
		{"refunded", func() map[string]any {
			// A refund leaves the PaymentIntent succeeded; its latest charge says otherwise.
			pi := boundPI("pi_refunded", 50, "usd", "succeeded", created)
			pi["latest_charge"] = map[string]any{"id": "ch_refunded", "object": "charge", "amount_refunded": 50, "refunded": true}
			return pi
		}(), outcome{reason: ReasonVerificationFailed}},
		{"disputed", func() map[string]any {
			// A dispute leaves the PaymentIntent succeeded too; Stripe has taken the money back.
			pi := boundPI("pi_disputed", 50, "usd", "succeeded", created)
			pi["latest_charge"] = map[string]any{"id": "ch_disputed", "object": "charge", "amount_refunded": 0, "disputed": true}
			return pi
		}(), outcome{reason: ReasonVerificationFailed}},
		{"unknown", map[string]any{"id": "pi_unknown"}, outcome{reason: ReasonVerificationFailed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTestRail(t, nil)
			id := tc.pi["id"].(string)
			if len(tc.pi) > 1 {
				tr.fake.setPI(tc.pi)
			}
			a, err := tr.Verify(context.Background(), requestWith("MPP "+id), dryRun)
			if gets := tr.fake.getRequests(); len(gets) == 0 || !expands(gets[0].Query, "latest_charge") {
				t.Fatalf("the PaymentIntent was retrieved without its latest charge: %+v", gets)
			}
			checkOutcome(t, err, tc.want)
			open := openPayments(t, tr.book)
			if tc.want.reason != "" {
				if len(open) != 0 {
					t.Fatalf("refused PaymentIntent recorded: %+v", open)
				}
				return
			}
			if len(open) != 1 || open[0].NonceKey != "mpp:"+id || a.Reference != open[0].ID.String() {
				t.Fatalf("recorded %+v for %+v", open, a)
			}
			// Reused: the same PaymentIntent never pays a second call.
			_, err = tr.Verify(context.Background(), requestWith("MPP "+id), dryRun)
			checkOutcome(t, err, outcome{reason: ReasonVerificationFailed})
		})
	}
}

func TestPaymentIntentFormStripeDown(t *testing.T) {
	tr := newTestRailOn(t, nil, newTestStripe(t, closedPort(t), func(c *StripeConfig) { c.MaxAttempts = 2 }), nil)
	_, err := tr.Verify(context.Background(), requestWith("MPP pi_anything1"), dryRun)
	checkOutcome(t, err, outcome{unavailable: true})
}

// TestSPTPaymentIntentCannotBeReused: the PaymentIntent an SPT charge made carries the
// binding metadata, and still cannot pay a second call in the seed form.
func TestSPTPaymentIntentCannotBeReused(t *testing.T) {
	tr := newTestRail(t, nil)
	if _, err := tr.Verify(context.Background(), requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun); err != nil {
		t.Fatal(err)
	}
	tr.fake.setPI(boundPI("pi_fake1", 50, "usd", "succeeded", testNow))
	_, err := tr.Verify(context.Background(), requestWith("MPP pi_fake1"), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonVerificationFailed})
}

func TestSettle(t *testing.T) {
	tr := newTestRail(t, nil)
	a, err := tr.Verify(context.Background(), requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	a.JobID = uuid.NewString()
	s, err := tr.Settle(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	if s.Status != payments.SettlementSettled || s.Reference != "pi_fake1" || s.ID != a.Reference {
		t.Fatalf("settlement %+v", s)
	}
	if s.Header.Get("Cache-Control") != "private" {
		t.Fatalf("headers %v", s.Header)
	}
	r, err := DecodeReceipt(s.Header.Get(HeaderReceipt))
	if err != nil || r.Method != "stripe" || r.Reference != "pi_fake1" || r.Status != "success" || r.Timestamp != "2026-03-23T12:00:00Z" {
		t.Fatalf("receipt %+v, %v", r, err)
	}
	p := paymentByID(t, tr.book, a)
	if p.Status != ledger.StatusSettled || p.TxHash != "pi_fake1" || p.JobID.String() != a.JobID || p.SettledAt.IsZero() {
		t.Fatalf("ledger %+v", p)
	}
	// Settling again answers the same, moves nothing; voiding a settled payment refunds nothing.
	if s2, err := tr.Settle(context.Background(), a); err != nil || s2.Reference != s.Reference {
		t.Fatalf("second settle %+v, %v", s2, err)
	}
	if err := tr.Void(context.Background(), a, "tool_failed"); err == nil {
		t.Fatal("a settled payment was voided")
	}
	if _, refunds, _, _ := tr.fake.counts(); refunds != 0 {
		t.Fatalf("%d refunds", refunds)
	}
}

func TestVoidRefundsOnce(t *testing.T) {
	tr := newTestRail(t, nil)
	a, err := tr.Verify(context.Background(), requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	a.JobID = uuid.NewString()
	for range 2 {
		if err := tr.Void(context.Background(), a, "tool_failed"); err != nil {
			t.Fatal(err)
		}
	}
	refunds := tr.fake.refundRequests()
	if len(refunds) != 1 {
		t.Fatalf("Stripe got %d refunds, want 1", len(refunds))
	}
	if got := refunds[0].Header.Get("Idempotency-Key"); got != "mpp_refund_pi_fake1" {
		t.Fatalf("refund Idempotency-Key %q", got)
	}
	if got := refunds[0].Form.Get("payment_intent"); got != "pi_fake1" {
		t.Fatalf("refunded %q", got)
	}
	p := paymentByID(t, tr.book, a)
	if p.Status != ledger.StatusNotCharged || p.ErrorReason != "refunded: tool_failed" || p.JobID.String() != a.JobID {
		t.Fatalf("ledger %+v", p)
	}
	if _, err := tr.Settle(context.Background(), a); !errors.Is(err, ErrVoided) {
		t.Fatalf("settle after void: %v", err)
	}
}

// TestVoidWhenRefundFails: the payment stays charged and recorded until Reconcile refunds it.
func TestVoidWhenRefundFails(t *testing.T) {
	tr := newTestRail(t, nil)
	a, err := tr.Verify(context.Background(), requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	tr.fake.setRefund(func(w http.ResponseWriter, _ *http.Request, _ url.Values, _ int) {
		writeStripeJSON(w, http.StatusServiceUnavailable, stripeErr("api_error", "", "", "down"))
	})
	if err := tr.Void(context.Background(), a, "tool_failed"); !errors.Is(err, payments.ErrUnavailable) {
		t.Fatalf("void: %v", err)
	}
	if p := paymentByID(t, tr.book, a); p.Status != ledger.StatusVerified {
		t.Fatalf("status %s", p.Status)
	}
	tr.fake.setRefund(nil)
	if err := tr.Reconcile(context.Background(), tr.book, -time.Hour); err != nil {
		t.Fatal(err)
	}
	p := paymentByID(t, tr.book, a)
	if p.Status != ledger.StatusNotCharged || !strings.HasPrefix(p.ErrorReason, "refunded: abandoned") {
		t.Fatalf("after reconcile %+v", p)
	}
	for _, r := range tr.fake.refundRequests() {
		if r.Header.Get("Idempotency-Key") != "mpp_refund_pi_fake1" {
			t.Fatalf("refund key %q", r.Header.Get("Idempotency-Key"))
		}
	}
}

// TestRefundOfARefundedChargeIsDone: Stripe answers charge_already_refunded to a refund retried
// after it forgot the first one's idempotency key (24 h): the money is back, and the payment
// is recorded as not charged instead of failing every reconcile from then on.
func TestRefundOfARefundedChargeIsDone(t *testing.T) {
	tr := newTestRail(t, nil)
	a, err := tr.Verify(context.Background(), requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	tr.fake.setRefund(func(w http.ResponseWriter, _ *http.Request, _ url.Values, _ int) {
		writeStripeJSON(w, http.StatusBadRequest, stripeErr("invalid_request_error", "charge_already_refunded", "", "Charge ch_1 has already been refunded."))
	})
	if err := tr.Reconcile(context.Background(), tr.book, -time.Hour); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if p := paymentByID(t, tr.book, a); p.Status != ledger.StatusNotCharged || !strings.HasPrefix(p.ErrorReason, "refunded: abandoned") {
		t.Fatalf("after reconcile %+v", p)
	}
}

func TestReconcileSettlesSubmitted(t *testing.T) {
	tr := newTestRail(t, nil)
	a, err := tr.Verify(context.Background(), requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	id := a.State.(*pendingPayment).ID
	// A crash between Settle's two moves leaves the payment submitted.
	if _, err := tr.book.Transition(context.Background(), id, []ledger.Status{ledger.StatusVerified}, ledger.StatusSubmitted,
		ledger.Patch{TxHash: "pi_fake1", RawTx: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Reconcile(context.Background(), tr.book, -time.Hour); err != nil {
		t.Fatal(err)
	}
	if p := paymentByID(t, tr.book, a); p.Status != ledger.StatusSettled {
		t.Fatalf("status %s", p.Status)
	}
	if _, refunds, _, _ := tr.fake.counts(); refunds != 0 {
		t.Fatalf("%d refunds", refunds)
	}
}

// failingBook refuses every Create, as a database that cannot take the write.
type failingBook struct{ *ledger.Memory }

func (failingBook) Create(context.Context, ledger.Payment) error {
	return fmt.Errorf("spool full: %w", payments.ErrUnavailable)
}

// TestNoChargeWithoutARecord: a charge that cannot be written ahead is not made.
func TestNoChargeWithoutARecord(t *testing.T) {
	f := newFakeStripe(t)
	mem := ledger.NewMemory()
	r, err := NewRail(Config{Realm: "api.example.com", Secret: []byte(testSecret), NetworkID: "profile_test",
		Now: func() time.Time { return testNow }, Logger: testLogger(t)}, newTestStripe(t, f.URL(), nil), mem, failingBook{mem})
	if err != nil {
		t.Fatal(err)
	}
	tr := &testRail{Rail: r, fake: f, book: mem}
	_, err = r.Verify(context.Background(), requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun)
	checkOutcome(t, err, outcome{unavailable: true})
	if creates, refunds, _, _ := f.counts(); creates != 0 || refunds != 0 {
		t.Fatalf("Stripe got %d creates and %d refunds, want none", creates, refunds)
	}
}

// paymentIntentClaimsDown claims challenges, but cannot claim PaymentIntents: Redis lost
// between the two claims of one call.
type paymentIntentClaimsDown struct{ *ledger.Memory }

func (c paymentIntentClaimsDown) Claim(ctx context.Context, key string, exp time.Time) error {
	if strings.HasPrefix(key, "mpp:pi_") {
		return fmt.Errorf("redis away: %w", payments.ErrUnavailable)
	}
	return c.Memory.Claim(ctx, key, exp)
}

// TestChargeThatCannotBeClaimedIsRefunded: money is never kept for a call that cannot run.
func TestChargeThatCannotBeClaimedIsRefunded(t *testing.T) {
	f := newFakeStripe(t)
	mem := ledger.NewMemory()
	r, err := NewRail(Config{Realm: "api.example.com", Secret: []byte(testSecret), NetworkID: "profile_test",
		Now: func() time.Time { return testNow }, Logger: testLogger(t)}, newTestStripe(t, f.URL(), nil), paymentIntentClaimsDown{mem}, mem)
	if err != nil {
		t.Fatal(err)
	}
	tr := &testRail{Rail: r, fake: f, book: mem}
	c := tr.challenge(t, dryRun)
	_, err = r.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun)
	checkOutcome(t, err, outcome{unavailable: true})
	refunds := f.refundRequests()
	if len(refunds) != 1 || refunds[0].Form.Get("payment_intent") != "pi_fake1" {
		t.Fatalf("refunds %+v", refunds)
	}
	p, err := mem.GetByNonceKey(context.Background(), "mpp:challenge:"+c.ID)
	if err != nil || p.Status != ledger.StatusNotCharged || p.TxHash != "pi_fake1" || p.ErrorReason != "refunded: not_recorded" {
		t.Fatalf("payment %+v, %v", p, err)
	}
}

// switchableClaims is the memory ledger's claims, with Redis lost from the moment down is set.
type switchableClaims struct {
	*ledger.Memory
	down atomic.Bool
}

func (c *switchableClaims) Claim(ctx context.Context, key string, exp time.Time) error {
	if c.down.Load() {
		return fmt.Errorf("redis away: %w", payments.ErrUnavailable)
	}
	return c.Memory.Claim(ctx, key, exp)
}

// TestSeedFormClaimDownNeverRefundsAPaidCall: a PaymentIntent that already paid a call
// (its id is in that call's Payment-Receipt, in either form) presented again as `MPP pi_…`
// while its claim cannot be made is not refunded: the call it paid was delivered.
func TestSeedFormClaimDownNeverRefundsAPaidCall(t *testing.T) {
	for _, form := range []string{"token", "seed"} {
		t.Run(form, func(t *testing.T) {
			f := newFakeStripe(t)
			mem := ledger.NewMemory()
			claims := &switchableClaims{Memory: mem}
			r, err := NewRail(Config{Realm: "api.example.com", Secret: []byte(testSecret), NetworkID: "profile_test",
				Now: func() time.Time { return testNow }, Logger: testLogger(t)}, newTestStripe(t, f.URL(), nil), claims, mem)
			if err != nil {
				t.Fatal(err)
			}
			tr := &testRail{Rail: r, fake: f, book: mem}
			auth, pi := "MPP pi_paid1", "pi_paid1"
			if form == "token" {
				auth, pi = credential(t, tr.challenge(t, dryRun), testSPT), "pi_fake1"
			}
			f.setPI(boundPI("pi_paid1", 50, "usd", "succeeded", testNow.Add(-time.Minute)))
			a, err := r.Verify(context.Background(), requestWith(auth), dryRun)
			if err != nil {
				t.Fatal(err)
			}
			s, err := r.Settle(context.Background(), a)
			if err != nil || s.Reference != pi {
				t.Fatalf("Settle = %+v, %v", s, err)
			}
			f.setPI(boundPI(pi, 50, "usd", "succeeded", testNow.Add(-time.Minute)))
			claims.down.Store(true)
			_, err = r.Verify(context.Background(), requestWith("MPP "+pi), dryRun)
			if err == nil {
				t.Fatal("a PaymentIntent paid a second call")
			}
			if refunds := f.refundRequests(); len(refunds) != 0 {
				t.Fatalf("the PaymentIntent of a delivered call was refunded: %+v (Verify: %v)", refunds, err)
			}
			// One that paid nothing yet may have been claimed all the same: it is refunded.
			f.setPI(boundPI("pi_fresh1", 50, "usd", "succeeded", testNow.Add(-time.Minute)))
			_, err = r.Verify(context.Background(), requestWith("MPP pi_fresh1"), dryRun)
			checkOutcome(t, err, outcome{unavailable: true})
			if refunds := f.refundRequests(); len(refunds) != 1 || refunds[0].Form.Get("payment_intent") != "pi_fresh1" {
				t.Fatalf("refunds %+v", refunds)
			}
		})
	}
}

func TestOffer(t *testing.T) {
	tr := newTestRail(t, func(c *Config) { c.Amounts = map[payments.Mode]uint64{payments.ModeBatch: 125} })
	offer, err := tr.Offer(context.Background(), dryRun, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := tr.challenge(t, dryRun)
	if c.Realm != "api.example.com" || c.Method != "stripe" || c.Intent != "charge" || c.Expires != "2026-03-23T12:05:00Z" {
		t.Fatalf("challenge %+v", c)
	}
	if c.Request != vectorRequestB64 { // 0.50 USDC is the vector's 50 cents
		t.Fatalf("request %s", c.Request)
	}
	var id string
	if err := json.Unmarshal(offer.Body["challengeId"], &id); err != nil || id == "" {
		t.Fatalf("body %s", offer.Body["challengeId"])
	}
	for _, tc := range []struct {
		name   string
		price  payments.Price
		accept string
		cents  uint64 // 0: not offered
	}{
		{"0.50 USDC at par", dryRun, "", 50},
		{"5 USDC at par", payments.Price{Mode: payments.ModeReal, Amount: 5_000_000}, "", 500},
		{"configured batch price", payments.Price{Mode: payments.ModeBatch, Amount: 100_000}, "", 125},
		{"0.01 USDC is below Stripe's minimum", payments.Price{Mode: payments.ModeDryRun, Amount: 10_000}, "", 0},
		{"a fraction of a cent", payments.Price{Mode: payments.ModeReal, Amount: 500_001}, "", 0},
		{"refused by Accept-Payment", dryRun, "stripe/charge;q=0", 0},
		{"other methods preferred", dryRun, "tempo/charge, stripe/charge;q=0.1", 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.accept != "" {
				ctx = WithAcceptPayment(ctx, []string{tc.accept})
			}
			o, err := tr.Offer(ctx, tc.price, nil)
			if err != nil {
				t.Fatal(err)
			}
			vals := o.Header.Values(HeaderWWWAuthenticate)
			if tc.cents == 0 {
				if len(vals) != 0 {
					t.Fatalf("offered %v", vals)
				}
				return
			}
			cs, err := ParseChallenges(vals[0])
			if err != nil {
				t.Fatal(err)
			}
			want, _ := tr.requestFor(tc.cents)
			if cs[0].Params["request"] != want {
				t.Fatalf("request %s, want %d cents", cs[0].Params["request"], tc.cents)
			}
		})
	}
	// Each 402 carries a fresh challenge.
	tr.clock.Set(testNow.Add(time.Second))
	if again := tr.challenge(t, dryRun); again.ID == c.ID {
		t.Fatal("two 402s carried the same challenge id")
	}
}

func TestAmountForOtherCurrency(t *testing.T) {
	tr := newTestRail(t, func(c *Config) { c.Currency = "eur" })
	if _, err := tr.AmountFor(dryRun); err == nil {
		t.Fatal("eur converted from USDC at par")
	}
	tr = newTestRail(t, func(c *Config) { c.Currency = "eur"; c.Amounts = map[payments.Mode]uint64{payments.ModeDryRun: 60} })
	if got, err := tr.AmountFor(dryRun); err != nil || got != 60 {
		t.Fatalf("AmountFor = %d, %v", got, err)
	}
	// A price the rail does not offer is refused if a credential names it anyway.
	_, err := tr.Verify(context.Background(), requestWith("MPP pi_abc"), payments.Price{Mode: payments.ModeReal, Amount: 50_000})
	checkOutcome(t, err, outcome{reason: ReasonMethodUnsupported})
}

func TestNewRailValidates(t *testing.T) {
	mem := ledger.NewMemory()
	st := newTestStripe(t, closedPort(t), nil)
	good := Config{Realm: "api.example.com", Secret: []byte(testSecret), NetworkID: "profile_test"}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"no realm", func(c *Config) { c.Realm = "" }},
		{"realm with a newline", func(c *Config) { c.Realm = "a\nb" }},
		{"short secret", func(c *Config) { c.Secret = []byte("short") }},
		{"short previous secret", func(c *Config) { c.PreviousSecret = []byte("short") }},
		{"no network id", func(c *Config) { c.NetworkID = "" }},
		{"bad currency", func(c *Config) { c.Currency = "US" }},
		{"long bind key", func(c *Config) { c.BindKey = strings.Repeat("k", 41) }},
	} {
		c := good
		tc.mutate(&c)
		if _, err := NewRail(c, st, mem, mem); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := NewRail(good, st, mem, mem); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStripe(StripeConfig{SecretKey: "pk_test_123"}); err == nil {
		t.Error("a publishable key was accepted")
	}
	if s, _ := NewStripe(StripeConfig{SecretKey: "sk_live_123456"}); s == nil || !s.Livemode() {
		t.Error("sk_live_ is not live")
	}
}

func TestRotatedSecretStillVerifies(t *testing.T) {
	oldSecret := []byte(strings.Repeat("o", 32))
	f := newFakeStripe(t)
	st := newTestStripe(t, f.URL(), nil)
	before := newTestRailOn(t, f, st, func(c *Config) { c.Secret = oldSecret })
	c := before.challenge(t, dryRun)
	after := newTestRailOn(t, f, st, func(c *Config) {
		c.Secret, c.PreviousSecret, c.SecretRotatedAt = []byte(testSecret), oldSecret, testNow
	})
	if _, err := after.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun); err != nil {
		t.Fatalf("challenge of the previous secret: %v", err)
	}
	c2 := before.challenge(t, dryRun)
	after.clock.Set(testNow.Add(DefaultChallengeTTL))
	_, err := after.Verify(context.Background(), requestWith(credential(t, c2, testSPT)), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonInvalidChallenge}) // the previous secret is retired
}

func TestIdempotencyKey(t *testing.T) {
	tr := newTestRail(t, nil)
	c := tr.challenge(t, dryRun)
	k1, fp1, ok1, err1 := tr.IdempotencyKey(requestWith(credential(t, c, testSPT)))
	k2, fp2, ok2, _ := tr.IdempotencyKey(requestWith(credential(t, c, testSPT)))
	k3, fp3, _, _ := tr.IdempotencyKey(requestWith(credential(t, c, "spt_other")))
	if err1 != nil || !ok1 || !ok2 || k1 != "mpp:/exec/tool:"+fp1 || k1 != k2 || fp1 != fp2 {
		t.Fatalf("same credential: %q %q %v", k1, k2, err1)
	}
	// Another token for the same challenge is another request: Verify refuses it as an
	// invalid (used) challenge, with the scheme's 402, instead of an identifier conflict.
	if k3 == k1 || fp3 == fp1 {
		t.Fatal("another token for the same challenge must not share the first one's key")
	}
	if k, _, ok, _ := tr.IdempotencyKey(requestWith("MPP pi_abc")); !ok || k != "mpp:/exec/tool:pi_abc" {
		t.Fatalf("seed form key %q", k)
	}
	for _, h := range []string{"Payment !!!", "x402 abc", "MPP nope"} {
		if _, _, ok, err := tr.IdempotencyKey(requestWith(h)); ok || err != nil {
			t.Errorf("%q named a request", h)
		}
	}
}

// TestPayerIsWhatStripeVouchesFor: the authorization names Stripe's customer, never the
// self-asserted source DID, which only the record keeps.
func TestPayerIsWhatStripeVouchesFor(t *testing.T) {
	tr := newTestRail(t, nil)
	pi := boundPI("pi_cust", 50, "usd", "succeeded", testNow.Add(-time.Minute))
	pi["customer"] = "cus_PayerOne"
	tr.fake.setPI(pi)
	a, err := tr.Verify(context.Background(), requestWith("MPP pi_cust"), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	if p := paymentByID(t, tr.book, a); a.Payer != "cus_PayerOne" || p.Payer != "cus_PayerOne" {
		t.Fatalf("authorization payer %q, record payer %q", a.Payer, p.Payer)
	}
}

func TestChallengeIDsAreUniqueWithinASecond(t *testing.T) {
	r := newTestRail(t, nil) // its clock stands still: every challenge in the same instant
	seen := map[string]bool{}
	for range 50 {
		c, err := r.NewChallenge(payments.Price{Mode: payments.ModeDryRun, Amount: 1_000_000, Currency: "USDC"})
		if err != nil {
			t.Fatal(err)
		}
		if seen[c.ID] {
			t.Fatalf("challenge id %s issued twice", c.ID)
		}
		seen[c.ID] = true
	}
}
