package mpp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/secureexec/secureexec/payments/ledger"
)

const (
	whsec      = "whsec_test_secret_0123456789abcdef"
	whsecOther = "whsec_rolled_secret_0123456789abcd"
)

// paymentStore is the gateway's side of the webhook, kept in memory: which PaymentIntents
// paid calls, and what was marked and flagged. Both operations are idempotent on the event.
type paymentStore struct {
	mu      sync.Mutex
	known   map[string]Marked // by PaymentIntent
	marks   []Mark
	flags   []Flag
	failing error
}

func (s *paymentStore) MarkPayment(_ context.Context, m Mark) (Marked, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing != nil {
		return Marked{}, s.failing
	}
	for _, old := range s.marks {
		if old.EventID == m.EventID {
			return s.known[m.PaymentIntent], nil
		}
	}
	got, ok := s.known[m.PaymentIntent]
	if ok {
		s.marks = append(s.marks, m)
	}
	return got, nil
}

func (s *paymentStore) FlagAgent(_ context.Context, f Flag) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, old := range s.flags {
		if old.EventID == f.EventID {
			return nil
		}
	}
	s.flags = append(s.flags, f)
	return nil
}

func (s *paymentStore) counts() (marks, flags int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.marks), len(s.flags)
}

func eventJSON(t *testing.T, id, typ string, livemode bool, obj map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"id": id, "object": "event", "api_version": "2026-07-29.preview", "created": time.Now().Unix(),
		"livemode": livemode, "type": typ, "pending_webhooks": 1, "data": map[string]any{"object": obj}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func refundedCharge(pi string) map[string]any {
	return map[string]any{"id": "ch_1", "object": "charge", "payment_intent": pi, "amount": 50, "amount_refunded": 50, "currency": "usd", "refunded": true}
}

func dispute(pi string) map[string]any {
	return map[string]any{"id": "dp_1", "object": "dispute", "charge": "ch_1", "payment_intent": pi, "amount": 50, "currency": "usd", "reason": "fraudulent", "status": "needs_response"}
}

type delivery struct {
	body   []byte
	secret string
	at     time.Time
	header string // Stripe-Signature instead of a valid one
}

func post(t *testing.T, h http.Handler, d delivery) (int, webhookAnswer) {
	t.Helper()
	sig := d.header
	if sig == "" && d.secret != "" {
		at := d.at
		if at.IsZero() {
			at = time.Now()
		}
		sig = webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: d.body, Secret: d.secret, Timestamp: at}).Header
	}
	r := httptest.NewRequest(http.MethodPost, WebhookPath, bytes.NewReader(d.body))
	if sig != "" {
		r.Header.Set("Stripe-Signature", sig)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var a webhookAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("answer %q: %v", w.Body.String(), err)
	}
	return w.Code, a
}

func newTestWebhook(t *testing.T, store *paymentStore) *WebhookHandler {
	t.Helper()
	h, err := NewWebhookHandler(WebhookConfig{Secrets: []string{whsec, whsecOther}, MaxBodyBytes: 8 << 10, Logger: testLogger(t)},
		ledger.NewMemoryIdempotency(), store, store)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestWebhook(t *testing.T) {
	paid := Marked{Found: true, Payer: "did:pkh:eip155:8453:0xabc", JobID: "job-1"}
	voided := Marked{Found: true, Payer: "did:pkh:eip155:8453:0xdef", Voided: true}
	for _, tc := range []struct {
		name          string
		d             func(t *testing.T) delivery
		status        int
		marks, flags  int
		ignored       bool
		wantFlagCause string
	}{
		{"refund of a paid call marks and flags", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_1", EventChargeRefunded, false, refundedCharge("pi_paid")), secret: whsec}
		}, 200, 1, 1, false, "charge_refunded"},
		{"signed with the rolled secret", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_2", EventChargeRefunded, false, refundedCharge("pi_paid")), secret: whsecOther}
		}, 200, 1, 1, false, "charge_refunded"},
		{"our own refund is marked, not flagged", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_3", EventChargeRefunded, false, refundedCharge("pi_voided")), secret: whsec}
		}, 200, 1, 0, false, ""},
		{"dispute marks and flags", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_4", EventChargeDisputeCreated, false, dispute("pi_paid")), secret: whsec}
		}, 200, 1, 1, false, "charge_disputed: fraudulent"},
		{"expanded payment_intent", func(t *testing.T) delivery {
			c := refundedCharge("")
			c["payment_intent"] = map[string]any{"id": "pi_paid", "object": "payment_intent"}
			return delivery{body: eventJSON(t, "evt_5", EventChargeRefunded, false, c), secret: whsec}
		}, 200, 1, 1, false, "charge_refunded"},
		{"someone else's payment", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_6", EventChargeRefunded, false, refundedCharge("pi_unknown")), secret: whsec}
		}, 200, 0, 0, false, ""},
		{"other event types are ignored", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_7", "payment_intent.succeeded", false, map[string]any{"id": "pi_paid", "object": "payment_intent"}), secret: whsec}
		}, 200, 0, 0, true, ""},
		{"events of the other mode are ignored", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_8", EventChargeRefunded, true, refundedCharge("pi_paid")), secret: whsec}
		}, 200, 0, 0, true, ""},
		{"bad signature", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_9", EventChargeRefunded, false, refundedCharge("pi_paid")), secret: "whsec_wrong_secret_0123456789"}
		}, 400, 0, 0, false, ""},
		{"tampered body", func(t *testing.T) delivery {
			body := eventJSON(t, "evt_10", EventChargeRefunded, false, refundedCharge("pi_paid"))
			sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: whsec, Timestamp: time.Now()}).Header
			return delivery{body: bytes.Replace(body, []byte("pi_paid"), []byte("pi_evil"), 1), header: sig}
		}, 400, 0, 0, false, ""},
		{"unsigned", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_11", EventChargeRefunded, false, refundedCharge("pi_paid"))}
		}, 400, 0, 0, false, ""},
		{"garbled signature header", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_12", EventChargeRefunded, false, refundedCharge("pi_paid")), header: "nonsense"}
		}, 400, 0, 0, false, ""},
		{"stale timestamp", func(t *testing.T) delivery {
			return delivery{body: eventJSON(t, "evt_13", EventChargeRefunded, false, refundedCharge("pi_paid")), secret: whsec, at: time.Now().Add(-6 * time.Minute)}
		}, 400, 0, 0, false, ""},
		{"signed but not an event", func(t *testing.T) delivery {
			return delivery{body: []byte(`{"id":"evt_14","object":"event","type":"charge.refunded"}`), secret: whsec}
		}, 400, 0, 0, false, ""},
		{"signed but not JSON", func(t *testing.T) delivery {
			return delivery{body: []byte(`not json`), secret: whsec}
		}, 400, 0, 0, false, ""},
		{"body over the cap", func(t *testing.T) delivery {
			c := refundedCharge("pi_paid")
			c["description"] = strings.Repeat("x", 9<<10)
			return delivery{body: eventJSON(t, "evt_15", EventChargeRefunded, false, c), secret: whsec}
		}, 413, 0, 0, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &paymentStore{known: map[string]Marked{"pi_paid": paid, "pi_voided": voided}}
			h := newTestWebhook(t, store)
			status, a := post(t, h, tc.d(t))
			if status != tc.status {
				t.Fatalf("status %d (%+v), want %d", status, a, tc.status)
			}
			if a.Ignored != tc.ignored {
				t.Fatalf("ignored %v", a.Ignored)
			}
			marks, flags := store.counts()
			if marks != tc.marks || flags != tc.flags {
				t.Fatalf("marks %d, flags %d; want %d, %d", marks, flags, tc.marks, tc.flags)
			}
			if tc.flags == 1 {
				f := store.flags[0]
				if f.Reason != tc.wantFlagCause || f.PaymentIntent != "pi_paid" || f.Payer != paid.Payer || f.JobID != "job-1" || f.EventID == "" {
					t.Fatalf("flag %+v", f)
				}
			}
			if tc.marks == 1 && (store.marks[0].PaymentIntent == "" || store.marks[0].Amount != 50 || store.marks[0].Charge != "ch_1") {
				t.Fatalf("mark %+v", store.marks[0])
			}
		})
	}
}

// TestWebhookReplayedEvent: Stripe delivers an event again (new signature, same id): it is
// acknowledged and processed once.
func TestWebhookReplayedEvent(t *testing.T) {
	store := &paymentStore{known: map[string]Marked{"pi_paid": {Found: true, Payer: "p"}}}
	h := newTestWebhook(t, store)
	body := eventJSON(t, "evt_once", EventChargeRefunded, false, refundedCharge("pi_paid"))
	for i := range 3 {
		status, a := post(t, h, delivery{body: body, secret: whsec, at: time.Now().Add(time.Duration(i) * time.Second)})
		if status != 200 || a.Duplicate != (i > 0) {
			t.Fatalf("delivery %d: %d %+v", i, status, a)
		}
	}
	if marks, flags := store.counts(); marks != 1 || flags != 1 {
		t.Fatalf("marks %d, flags %d", marks, flags)
	}
}

// TestWebhookRetriedAfterFailure: an event whose processing failed is processed when Stripe
// delivers it again.
func TestWebhookRetriedAfterFailure(t *testing.T) {
	store := &paymentStore{known: map[string]Marked{"pi_paid": {Found: true, Payer: "p"}}, failing: errors.New("database down")}
	h := newTestWebhook(t, store)
	body := eventJSON(t, "evt_retry", EventChargeRefunded, false, refundedCharge("pi_paid"))
	if status, _ := post(t, h, delivery{body: body, secret: whsec}); status != http.StatusServiceUnavailable {
		t.Fatalf("status %d", status)
	}
	store.mu.Lock()
	store.failing = nil
	store.mu.Unlock()
	if status, a := post(t, h, delivery{body: body, secret: whsec}); status != 200 || a.Duplicate {
		t.Fatalf("redelivery %d %+v", status, a)
	}
	if marks, flags := store.counts(); marks != 1 || flags != 1 {
		t.Fatalf("marks %d, flags %d", marks, flags)
	}
}

func TestWebhookMethodAndConfig(t *testing.T) {
	h := newTestWebhook(t, &paymentStore{})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, WebhookPath, nil))
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "POST" {
		t.Fatalf("GET: %d", w.Code)
	}
	s := &paymentStore{}
	if _, err := NewWebhookHandler(WebhookConfig{}, ledger.NewMemoryIdempotency(), s, s); err == nil {
		t.Fatal("no secret accepted")
	}
	if _, err := NewWebhookHandler(WebhookConfig{Secrets: []string{whsec}}, nil, s, s); err == nil {
		t.Fatal("no event log accepted")
	}
}

// TestWebhookUnavailableSaysWhenToRetry: a 503 (the store away) and a 409 (the event still in
// flight) carry Retry-After, as every 503 and in-flight 409 of the gateway does.
func TestWebhookUnavailableSaysWhenToRetry(t *testing.T) {
	store := &paymentStore{known: map[string]Marked{"pi_paid": {Found: true, Payer: "p"}}, failing: errors.New("database down")}
	events := ledger.NewMemoryIdempotency()
	h, err := NewWebhookHandler(WebhookConfig{Secrets: []string{whsec}, Logger: testLogger(t)}, events, store, store)
	if err != nil {
		t.Fatal(err)
	}
	send := func(body []byte) *httptest.ResponseRecorder {
		sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: whsec, Timestamp: time.Now()}).Header
		r := httptest.NewRequest(http.MethodPost, WebhookPath, bytes.NewReader(body))
		r.Header.Set("Stripe-Signature", sig)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	w := send(eventJSON(t, "evt_down", EventChargeRefunded, false, refundedCharge("pi_paid")))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("store away: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	fp, err := ledger.Fingerprint([]byte(`{"event":"evt_busy"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.Begin(context.Background(), "stripe-event:evt_busy", fp); err != nil {
		t.Fatal(err)
	}
	w = send(eventJSON(t, "evt_busy", EventChargeRefunded, false, refundedCharge("pi_paid")))
	if w.Code != http.StatusConflict || w.Header().Get("Retry-After") == "" {
		t.Fatalf("event in flight: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
}
