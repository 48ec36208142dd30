package mpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// WebhookPath is where Stripe posts events.
const WebhookPath = "/webhooks/stripe"

// The events the handler acts on; every other type is acknowledged and ignored.
const (
	EventChargeRefunded       = "charge.refunded"
	EventChargeDisputeCreated = "charge.dispute.created"
)

// MarkKind is what happened to a payment after its call.
type MarkKind string

// The marks a webhook records.
const (
	MarkRefunded MarkKind = "refunded"
	MarkDisputed MarkKind = "disputed"
)

// Mark is a refund or dispute Stripe reported, to be recorded against the gateway's payment
// for the PaymentIntent.
type Mark struct {
	EventID       string
	Kind          MarkKind
	PaymentIntent string
	Charge        string
	Dispute       string // the dispute id, for MarkDisputed
	Amount        int64  // refunded or disputed amount, minor units
	Currency      string
	Reason        string // Stripe's dispute reason, for MarkDisputed
	Livemode      bool
	At            time.Time // when Stripe created the event
}

// Marked is what the store knows of the payment it marked.
type Marked struct {
	Found  bool   // the PaymentIntent paid one of the gateway's calls
	Payer  string // the payment's payer
	JobID  string // the call it paid, "" when it never ran
	Voided bool   // the gateway refunded it itself (Void or Reconcile): nobody to flag
}

// PaymentMarker records a refund or dispute against the payment its PaymentIntent paid. It is
// called once per event on the happy path, but must be idempotent on Mark.EventID: an event
// whose processing failed is delivered again.
type PaymentMarker interface {
	MarkPayment(ctx context.Context, m Mark) (Marked, error)
}

// Flag is why an agent is flagged: its payment was taken back after the call.
type Flag struct {
	EventID       string
	Payer         string
	JobID         string
	PaymentIntent string
	Reason        string // "charge_refunded", "charge_disputed: <stripe reason>"
}

// AgentFlagger flags the agent behind a payment refunded or disputed outside the gateway, for
// the identity and policy stages to act on. Idempotent on Flag.EventID, like PaymentMarker.
type AgentFlagger interface {
	FlagAgent(ctx context.Context, f Flag) error
}

// EventLog remembers processed events (*ledger.Idempotency, *ledger.MemoryIdempotency): Begin
// before processing, Complete after, Abandon when processing failed so that Stripe's next
// delivery is processed again.
type EventLog interface {
	Begin(ctx context.Context, key, fingerprint string) (ledger.Replay, error)
	Complete(ctx context.Context, key string, resp ledger.Response) error
	Abandon(ctx context.Context, key string) error
}

// WebhookConfig configures the handler. Zero values take the defaults in brackets.
type WebhookConfig struct {
	// Secrets are the endpoint's signing secrets (whsec_…), the current one first; during a
	// roll Stripe signs with both. At least one. Never logged.
	Secrets []string
	// Tolerance is how old a signature may be [5m, stripe-go's DefaultTolerance].
	Tolerance time.Duration
	// MaxBodyBytes caps an event [256 KiB].
	MaxBodyBytes int64
	// Timeout bounds the processing of one event [10s].
	Timeout time.Duration
	// Livemode is the Stripe mode of the gateway's key; events of the other mode are ignored.
	Livemode bool
	Logger   *slog.Logger
}

// WebhookHandler serves POST /webhooks/stripe.
type WebhookHandler struct {
	cfg    WebhookConfig
	events EventLog
	marks  PaymentMarker
	flags  AgentFlagger
}

// NewWebhookHandler returns the handler. events deduplicates on the event id; marks and flags
// are the gateway's storage.
func NewWebhookHandler(cfg WebhookConfig, events EventLog, marks PaymentMarker, flags AgentFlagger) (*WebhookHandler, error) {
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("mpp: the Stripe webhook needs its signing secret (STRIPE_WEBHOOK_SECRET)")
	}
	for _, s := range cfg.Secrets {
		if len(s) < 16 {
			return nil, errors.New("mpp: a Stripe webhook signing secret is too short")
		}
	}
	if events == nil || marks == nil || flags == nil {
		return nil, errors.New("mpp: the Stripe webhook needs an event log, a payment marker and an agent flagger")
	}
	if cfg.Tolerance <= 0 {
		cfg.Tolerance = webhook.DefaultTolerance
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 256 << 10
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &WebhookHandler{cfg: cfg, events: events, marks: marks, flags: flags}, nil
}

// webhookRetryAfter is the Retry-After, in seconds, of a 503: the gateway's for a backend away.
const webhookRetryAfter = 2

// webhookAnswer is every response body of the handler.
type webhookAnswer struct {
	Received  bool   `json:"received"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Ignored   bool   `json:"ignored,omitempty"`
	Error     string `json:"error,omitempty"`
}

func writeAnswer(w http.ResponseWriter, status int, a webhookAnswer) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	switch status {
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", strconv.Itoa(webhookRetryAfter))
	case http.StatusConflict:
		w.Header().Set("Retry-After", strconv.Itoa(ledger.InFlightRetryAfter))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(a)
}

// ServeHTTP checks the signature (Stripe-Signature, within Tolerance), then processes each
// event once: 2xx tells Stripe to stop, anything else makes it deliver again later. A bad or
// stale signature is 400; a body over the cap 413; the store unavailable 503.
func (h *WebhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeAnswer(w, http.StatusMethodNotAllowed, webhookAnswer{Error: "method_not_allowed"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeAnswer(w, http.StatusRequestEntityTooLarge, webhookAnswer{Error: "body_too_large"})
			return
		}
		writeAnswer(w, http.StatusBadRequest, webhookAnswer{Error: "unreadable_body"})
		return
	}
	ev, err := h.construct(body, r.Header.Get("Stripe-Signature"))
	if err != nil {
		h.cfg.Logger.Warn("mpp: stripe webhook refused", "reason", err)
		writeAnswer(w, http.StatusBadRequest, webhookAnswer{Error: err.Error()})
		return
	}
	log := h.cfg.Logger.With("event_id", ev.ID, "event_type", ev.Type)
	if ev.Livemode != h.cfg.Livemode || (ev.Type != EventChargeRefunded && ev.Type != EventChargeDisputeCreated) {
		log.Debug("mpp: stripe event ignored", "livemode", ev.Livemode)
		writeAnswer(w, http.StatusOK, webhookAnswer{Received: true, Ignored: true})
		return
	}
	status, ans := h.once(r.Context(), log, ev)
	writeAnswer(w, status, ans)
}

// webhook errors, as answered to Stripe.
var (
	errWebhookSignature = errors.New("invalid_signature")
	errWebhookStale     = errors.New("stale_signature")
	errWebhookEvent     = errors.New("malformed_event")
)

// construct verifies the signature against each secret. The API version of the event is not
// checked: the account's version decides it, and only a few stable fields are read.
func (h *WebhookHandler) construct(body []byte, sig string) (stripe.Event, error) {
	var last error
	for _, secret := range h.cfg.Secrets {
		ev, err := webhook.ConstructEventWithOptions(body, sig, secret, webhook.ConstructEventOptions{
			Tolerance: h.cfg.Tolerance, IgnoreAPIVersionMismatch: true,
		})
		switch {
		case err == nil && (ev.ID == "" || ev.Data == nil || len(ev.Data.Raw) == 0):
			return ev, errWebhookEvent
		case err == nil:
			return ev, nil
		case errors.Is(err, webhook.ErrTooOld):
			return ev, errWebhookStale
		}
		last = err
	}
	if last != nil && !errors.Is(last, webhook.ErrNoValidSignature) && !errors.Is(last, webhook.ErrNotSigned) && !errors.Is(last, webhook.ErrInvalidHeader) {
		return stripe.Event{}, errWebhookEvent // signed, but not an event
	}
	return stripe.Event{}, errWebhookSignature
}

// once processes an event unless the log has it: the key is the event id, so a redelivery
// (Stripe retries for days) is acknowledged without a second mark or flag.
func (h *WebhookHandler) once(ctx context.Context, log *slog.Logger, ev stripe.Event) (int, webhookAnswer) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.Timeout)
	defer cancel()
	key := "stripe-event:" + ev.ID
	fp, err := ledger.Fingerprint([]byte(fmt.Sprintf("{\"event\":%q}", ev.ID)))
	if err != nil {
		return http.StatusBadRequest, webhookAnswer{Error: errWebhookEvent.Error()}
	}
	replay, err := h.events.Begin(ctx, key, fp)
	switch {
	case err == nil && replay.Found:
		return http.StatusOK, webhookAnswer{Received: true, Duplicate: true}
	case errors.Is(err, ledger.ErrInFlight):
		return http.StatusConflict, webhookAnswer{Error: "event_in_flight"}
	case err != nil:
		log.Warn("mpp: stripe event log unavailable", "err", err)
		return http.StatusServiceUnavailable, webhookAnswer{Error: "event_log_unavailable"}
	}
	if err := h.process(ctx, log, ev); err != nil {
		if aerr := h.events.Abandon(ctx, key); aerr != nil {
			log.Warn("mpp: releasing a stripe event", "err", aerr)
		}
		if errors.Is(err, errWebhookEvent) {
			return http.StatusBadRequest, webhookAnswer{Error: err.Error()}
		}
		log.Warn("mpp: processing a stripe event; stripe will deliver it again", "err", err)
		return http.StatusServiceUnavailable, webhookAnswer{Error: "processing_failed"}
	}
	ans := webhookAnswer{Received: true}
	body, _ := json.Marshal(ans)
	if err := h.events.Complete(ctx, key, ledger.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: body}); err != nil {
		log.Warn("mpp: recording a processed stripe event", "err", err)
	}
	return http.StatusOK, ans
}

// chargeObject and disputeObject are the few fields read from events, decoded loosely: the
// account's API version, not stripe-go's, shapes them.
type chargeObject struct {
	ID             string          `json:"id"`
	Object         string          `json:"object"`
	PaymentIntent  json.RawMessage `json:"payment_intent"`
	AmountRefunded int64           `json:"amount_refunded"`
	Currency       string          `json:"currency"`
}

type disputeObject struct {
	ID            string          `json:"id"`
	Object        string          `json:"object"`
	Charge        json.RawMessage `json:"charge"`
	PaymentIntent json.RawMessage `json:"payment_intent"`
	Amount        int64           `json:"amount"`
	Currency      string          `json:"currency"`
	Reason        string          `json:"reason"`
}

// expandableID reads a Stripe reference that is an id string or an expanded object with one.
func expandableID(raw json.RawMessage) string {
	var id string
	if json.Unmarshal(raw, &id) == nil {
		return id
	}
	var obj struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.ID
	}
	return ""
}

func (h *WebhookHandler) process(ctx context.Context, log *slog.Logger, ev stripe.Event) error {
	m := Mark{EventID: ev.ID, Livemode: ev.Livemode, At: time.Unix(ev.Created, 0).UTC()}
	var flagReason string
	switch ev.Type {
	case EventChargeRefunded:
		var c chargeObject
		if err := json.Unmarshal(ev.Data.Raw, &c); err != nil || c.Object != "charge" {
			return fmt.Errorf("%w: charge.refunded without a charge", errWebhookEvent)
		}
		m.Kind, m.Charge, m.PaymentIntent, m.Amount, m.Currency = MarkRefunded, c.ID, expandableID(c.PaymentIntent), c.AmountRefunded, c.Currency
		flagReason = "charge_refunded"
	case EventChargeDisputeCreated:
		var d disputeObject
		if err := json.Unmarshal(ev.Data.Raw, &d); err != nil || d.Object != "dispute" {
			return fmt.Errorf("%w: charge.dispute.created without a dispute", errWebhookEvent)
		}
		m.Kind, m.Dispute, m.Charge, m.PaymentIntent = MarkDisputed, d.ID, expandableID(d.Charge), expandableID(d.PaymentIntent)
		m.Amount, m.Currency, m.Reason = d.Amount, d.Currency, d.Reason
		flagReason = "charge_disputed: " + d.Reason
	}
	if m.PaymentIntent == "" {
		log.Debug("mpp: stripe event without a PaymentIntent; not ours")
		return nil
	}
	got, err := h.marks.MarkPayment(ctx, m)
	if err != nil {
		return fmt.Errorf("mpp: marking payment of %s: %w", m.PaymentIntent, err)
	}
	if !got.Found {
		log.Debug("mpp: stripe event for a PaymentIntent the gateway did not take", "payment_intent", m.PaymentIntent)
		return nil
	}
	if m.Kind == MarkRefunded && got.Voided {
		return nil // the gateway's own refund of a call that did not complete
	}
	log.Warn("mpp: a paid call's money was taken back; flagging the agent", "payment_intent", m.PaymentIntent, "payer", got.Payer, "kind", m.Kind)
	if err := h.flags.FlagAgent(ctx, Flag{EventID: ev.ID, Payer: got.Payer, JobID: got.JobID, PaymentIntent: m.PaymentIntent, Reason: flagReason}); err != nil {
		return fmt.Errorf("mpp: flagging the agent of %s: %w", m.PaymentIntent, errors.Join(payments.ErrUnavailable, err))
	}
	return nil
}
