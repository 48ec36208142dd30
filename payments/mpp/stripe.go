package mpp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/paymentintent"
	"github.com/stripe/stripe-go/v76/refund"

	"github.com/secureexec/secureexec/internal/capread"
	"github.com/secureexec/secureexec/payments"
)

// Defaults of StripeConfig.
const (
	DefaultPreviewVersion = "2026-07-29.preview"
	DefaultSPTParam       = "shared_payment_granted_token"
)

// StripeConfig configures the Stripe client. Zero values take the defaults in brackets.
type StripeConfig struct {
	SecretKey string // sk_live_…, sk_test_…, rk_live_…, rk_test_…; the prefix decides live mode
	// BaseURL replaces https://api.stripe.com (a fake Stripe or stripe-mock in tests).
	BaseURL string
	// PreviewVersion is the Stripe-Version sent with the SPT create+confirm, since Shared
	// Payment Tokens are a preview feature [DefaultPreviewVersion]. Other calls use stripe-go's
	// pinned version (2023-10-16).
	PreviewVersion string
	// SPTParam is the form name the SPT travels under [DefaultSPTParam]; newer API versions
	// model payment_method_data[shared_payment_granted_token] instead.
	SPTParam string
	// Timeout bounds one operation, all its attempts included [15s].
	Timeout time.Duration
	// AttemptTimeout bounds one HTTP attempt [8s].
	AttemptTimeout time.Duration
	// MaxAttempts is how many times an operation is tried when Stripe cannot be reached or
	// answers 5xx/409/lock timeouts, always with the same idempotency key [3].
	MaxAttempts int
	// MaxResponseBytes caps a response body [1 MiB].
	MaxResponseBytes int64
	// Transport is the HTTP transport [http.DefaultTransport].
	Transport http.RoundTripper
	Logger    *slog.Logger
}

func (c StripeConfig) withDefaults() StripeConfig {
	if c.PreviewVersion == "" {
		c.PreviewVersion = DefaultPreviewVersion
	}
	if c.SPTParam == "" {
		c.SPTParam = DefaultSPTParam
	}
	if c.Timeout <= 0 {
		c.Timeout = 15 * time.Second
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = 8 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = 1 << 20
	}
	if c.Transport == nil {
		c.Transport = http.DefaultTransport
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Stripe is the slice of the Stripe API the stripe method uses, through stripe-go v76: every
// call has a deadline, every write an idempotency key, and a failure to reach Stripe is
// payments.ErrUnavailable, never a refusal.
type Stripe struct {
	cfg     StripeConfig
	pis     paymentintent.Client
	refunds refund.Client
	live    bool
}

// NewStripe returns the client. The key's prefix decides Livemode.
func NewStripe(cfg StripeConfig) (*Stripe, error) {
	cfg = cfg.withDefaults()
	k := cfg.SecretKey
	if !(strings.HasPrefix(k, "sk_") || strings.HasPrefix(k, "rk_")) || len(k) < 8 || strings.ContainsAny(k, " \t\r\n") {
		return nil, errors.New("mpp: STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_… or rk_…)")
	}
	bc := &stripe.BackendConfig{
		HTTPClient:        &http.Client{Transport: capread.Transport(cfg.Transport, cfg.MaxResponseBytes, errResponseTooLarge)},
		MaxNetworkRetries: stripe.Int64(0), // retries are ours: see ChargeSPT for why
		LeveledLogger:     slogBridge{cfg.Logger},
	}
	if cfg.BaseURL != "" {
		bc.URL = stripe.String(cfg.BaseURL)
	}
	b := stripe.GetBackendWithConfig(stripe.APIBackend, bc)
	return &Stripe{
		cfg: cfg, pis: paymentintent.Client{B: b, Key: k}, refunds: refund.Client{B: b, Key: k},
		live: strings.HasPrefix(k, "sk_live_") || strings.HasPrefix(k, "rk_live_"),
	}, nil
}

// Livemode reports whether the key is a live one: objects of the other mode are refused.
func (s *Stripe) Livemode() bool { return s.live }

// ChargeRequest is one SPT charge: create and confirm a PaymentIntent.
type ChargeRequest struct {
	ChallengeID string
	SPT         string
	Amount      int64  // minor units
	Currency    string // lowercase ISO 4217
	Metadata    map[string]string
	// Resumed says that an earlier create+confirm with this request's idempotency key may have
	// reached Stripe, by this process or another replica: the payer resent a credential whose
	// charge's answer was lost. A replayed answer is then that charge's outcome, not a refusal.
	Resumed bool
}

// IdempotencyKey is the key of the create+confirm, as mppx derives it: mpp_<challengeId>_<spt>.
func (c ChargeRequest) IdempotencyKey() string { return "mpp_" + c.ChallengeID + "_" + c.SPT }

// ErrReplayed is a create+confirm answered with Idempotent-Replayed: true before this process
// ever sent it: someone used this challenge and token first.
var ErrReplayed = errors.New("mpp: stripe answered with a replayed response")

// ChargeSPT creates and confirms a PaymentIntent paid by the Shared Payment Token, exactly as
// mpp.md §4 says: amount, currency, confirm, automatic payment methods without redirects, the
// SPT under SPTParam, metadata, the preview Stripe-Version and the idempotency key.
//
// stripe-go's own retries are off because of the replay rule: a response marked
// Idempotent-Replayed is refused (ErrReplayed) when it answers the first attempt, but accepted
// when it answers a retry after an attempt of ours whose outcome was unknown (a timeout, a
// 5xx, a connection that broke and that net/http resent the request on), or any attempt of a
// Resumed request: the caller holds the challenge's claim, so that earlier request can only
// be ours. The PaymentIntent is returned whatever its status; Stripe refusals (a declined
// card, a bad or spent token) are *StripeError; not reaching Stripe is
// payments.ErrUnavailable.
func (s *Stripe) ChargeSPT(ctx context.Context, req ChargeRequest) (*stripe.PaymentIntent, error) {
	if key := req.IdempotencyKey(); len(key) > 255 {
		return nil, fmt.Errorf("mpp: idempotency key of %d bytes exceeds Stripe's 255", len(key))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ownAttempt := req.Resumed
	var pi *stripe.PaymentIntent
	err := s.retry(ctx, "create payment intent", func(actx context.Context) error {
		p := &stripe.PaymentIntentParams{
			Amount:   stripe.Int64(req.Amount),
			Currency: stripe.String(req.Currency),
			Confirm:  stripe.Bool(true),
			AutomaticPaymentMethods: &stripe.PaymentIntentAutomaticPaymentMethodsParams{
				Enabled: stripe.Bool(true), AllowRedirects: stripe.String("never"),
			},
		}
		// net/http itself sends a request that carries an Idempotency-Key again when a
		// kept-alive connection breaks before the answer (Request.isReplayable), unseen by
		// stripe-go: a replay answering such a resend answers our own first write.
		var writes atomic.Int32
		p.Context = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { writes.Add(1) },
		})
		p.AddExtra(s.cfg.SPTParam, req.SPT)
		for k, v := range req.Metadata {
			p.AddMetadata(k, v)
		}
		p.SetIdempotencyKey(req.IdempotencyKey())
		if s.cfg.PreviewVersion != "" {
			p.Headers = http.Header{"Stripe-Version": {s.cfg.PreviewVersion}}
		}
		got, err := s.pis.New(p)
		if err != nil {
			ownAttempt = true // it may have reached Stripe
			return err
		}
		if got.LastResponse != nil && strings.EqualFold(got.LastResponse.Header.Get("Idempotent-Replayed"), "true") {
			if !ownAttempt && writes.Load() <= 1 {
				return ErrReplayed
			}
			s.cfg.Logger.Info("stripe replayed the outcome of our own earlier attempt", "payment_intent", got.ID, "challenge_id", req.ChallengeID)
		}
		pi = got
		return nil
	})
	return pi, err
}

// GetPaymentIntent retrieves a PaymentIntent, its latest charge expanded (what of it was
// refunded). An unknown id is a *StripeError (404).
func (s *Stripe) GetPaymentIntent(ctx context.Context, id string) (*stripe.PaymentIntent, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var pi *stripe.PaymentIntent
	err := s.retry(ctx, "retrieve payment intent", func(actx context.Context) error {
		p := &stripe.PaymentIntentParams{}
		p.Context = actx
		p.AddExpand("latest_charge")
		got, err := s.pis.Get(id, p)
		pi = got
		return err
	})
	return pi, err
}

// PaymentIntentsOfChallenge finds the PaymentIntents created for a challenge, by the
// mpp_challenge_id metadata every charge of the rail carries (Stripe's search, one page).
// Search is eventually consistent: a PaymentIntent is usually found within a minute of its
// creation, during Stripe incidents up to an hour later. Finding none is not proof of none.
func (s *Stripe) PaymentIntentsOfChallenge(ctx context.Context, challengeID string) ([]*stripe.PaymentIntent, error) {
	if !isChallengeID(challengeID) {
		return nil, fmt.Errorf("mpp: %q is not a challenge id", challengeID)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var found []*stripe.PaymentIntent
	err := s.retry(ctx, "search payment intents", func(actx context.Context) error {
		p := &stripe.PaymentIntentSearchParams{}
		p.Context = actx
		p.Query = "metadata['mpp_challenge_id']:'" + challengeID + "'"
		p.Limit = stripe.Int64(10)
		p.Single = true
		it := s.pis.Search(p)
		found = found[:0]
		for it.Next() {
			found = append(found, it.PaymentIntent())
		}
		return it.Err()
	})
	return found, err
}

// isChallengeID reports whether id can be a challenge id (base64url, as challenge.go makes
// them), so that it is safe inside a quoted search term.
func isChallengeID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// RefundIdempotencyKey is the key of the one refund a PaymentIntent can get from the gateway.
func RefundIdempotencyKey(paymentIntent string) string { return "mpp_refund_" + paymentIntent }

// Refund refunds a PaymentIntent in full, once: every call for the same PaymentIntent sends the
// same idempotency key, so Stripe makes one refund however often it is asked. The key always
// comes with the same parameters: Stripe refuses a key reused with others (idempotency_error),
// and the refund after a lost answer (Reconcile's, after Void's) is asked for another reason.
// So reason is logged, not sent; the ledger records it. A refund that Stripe reports failed or
// canceled is an error.
func (s *Stripe) Refund(ctx context.Context, paymentIntent, reason string) (*stripe.Refund, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	s.cfg.Logger.Debug("mpp: refunding a payment intent", "payment_intent", paymentIntent, "reason", reason)
	var r *stripe.Refund
	err := s.retry(ctx, "refund payment intent", func(actx context.Context) error {
		p := &stripe.RefundParams{PaymentIntent: stripe.String(paymentIntent)}
		p.Context = actx
		p.SetIdempotencyKey(RefundIdempotencyKey(paymentIntent))
		got, err := s.refunds.New(p)
		r = got
		return err
	})
	var se *StripeError
	if errors.As(err, &se) && se.Code == string(stripe.ErrorCodeChargeAlreadyRefunded) {
		// Our own refund, retried after Stripe forgot its idempotency key (24 h), or one made in
		// the dashboard: either way the money is back, which is all a refund is for.
		return &stripe.Refund{PaymentIntent: &stripe.PaymentIntent{ID: paymentIntent}, Status: stripe.RefundStatusSucceeded}, nil
	}
	if err != nil {
		return nil, err
	}
	if r.Status == stripe.RefundStatusFailed || r.Status == stripe.RefundStatusCanceled {
		return r, fmt.Errorf("mpp: refund %s of %s is %s", r.ID, paymentIntent, r.Status)
	}
	return r, nil
}

// Cancel cancels a PaymentIntent that has not succeeded, so that it can never move money
// later (a payer completing a requires_action PaymentIntent the gateway refused).
func (s *Stripe) Cancel(ctx context.Context, paymentIntent string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	return s.retry(ctx, "cancel payment intent", func(actx context.Context) error {
		p := &stripe.PaymentIntentCancelParams{}
		p.Context = actx
		p.SetIdempotencyKey("mpp_cancel_" + paymentIntent)
		_, err := s.pis.Cancel(paymentIntent, p)
		return err
	})
}

// StripeError is Stripe's answer "no" to a request it received and understood: a declined
// card, a spent or unknown token, an unknown object. It is the payer's problem, not an outage.
type StripeError struct {
	Op          string
	Status      int
	Type        string // card_error, invalid_request_error, idempotency_error, …
	Code        string
	DeclineCode string
	Message     string
	// PaymentIntent is the object a failed confirmation left behind, when Stripe returned one.
	PaymentIntent string
}

// Error implements error; it names the operation and Stripe's type, code and message.
func (e *StripeError) Error() string {
	s := fmt.Sprintf("stripe %s: %d %s", e.Op, e.Status, e.Type)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.DeclineCode != "" {
		s += " (" + e.DeclineCode + ")"
	}
	return s + ": " + e.Message
}

// retry runs attempt until it succeeds, is refused, or the attempts or ctx run out. Each
// attempt has its own deadline. It returns nil, a *StripeError, ErrReplayed, or an error
// wrapping payments.ErrUnavailable.
func (s *Stripe) retry(ctx context.Context, op string, attempt func(context.Context) error) error {
	backoff := 200 * time.Millisecond
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
		err := attempt(actx)
		cancel()
		if err == nil || errors.Is(err, ErrReplayed) {
			return err
		}
		retry, why, refusal := classifyStripe(op, err)
		if refusal != nil {
			return refusal
		}
		if !retry || n >= s.cfg.MaxAttempts || ctx.Err() != nil {
			return fmt.Errorf("mpp: stripe %s: %s: %w: %w", op, why, payments.ErrUnavailable, err)
		}
		s.cfg.Logger.Warn("stripe call failed; retrying with the same idempotency key", "op", op, "attempt", n, "reason", why)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("mpp: stripe %s: %s, then out of time: %w: %w", op, why, payments.ErrUnavailable, err)
		case <-t.C:
		}
		backoff *= 2
	}
}

// classifyStripe says what a failed call means: a refusal by Stripe (returned as
// *StripeError), or an outage, retryable or not, with its reason.
func classifyStripe(op string, err error) (retry bool, why string, refusal *StripeError) {
	var se *stripe.Error
	if !errors.As(err, &se) {
		// Transport errors, deadlines, bodies cut by the size cap or not JSON: Stripe may or
		// may not have acted, and a retry with the same key finds out.
		return true, "stripe unreachable or unreadable", nil
	}
	hint := ""
	if se.LastResponse != nil {
		hint = se.LastResponse.Header.Get("Stripe-Should-Retry")
	}
	switch code := se.HTTPStatusCode; {
	case code >= 500:
		return hint != "false", fmt.Sprintf("stripe answered %d", code), nil
	case code == http.StatusConflict:
		return hint != "false", "idempotent request still in progress", nil
	case code == http.StatusTooManyRequests:
		return se.Code == stripe.ErrorCodeLockTimeout || hint == "true", "rate limited", nil
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		// Our key, not the payer's credential: an outage of this rail until fixed.
		return false, fmt.Sprintf("stripe refused the API key (%d)", code), nil
	}
	r := &StripeError{Op: op, Status: se.HTTPStatusCode, Type: string(se.Type), Code: string(se.Code),
		DeclineCode: string(se.DeclineCode), Message: se.Msg}
	if se.PaymentIntent != nil {
		r.PaymentIntent = se.PaymentIntent.ID
	}
	return false, "", r
}

// errResponseTooLarge is an answer of Stripe's past Config.MaxResponseBytes.
var errResponseTooLarge = errors.New("mpp: stripe response exceeds the size cap")

// slogBridge sends stripe-go's own log lines to slog at debug level: the rail logs what
// matters itself, with its fields, and stripe-go's error lines would only repeat it. Its
// debug lines are dropped: they carry whole response bodies, client_secret included.
type slogBridge struct{ log *slog.Logger }

func (l slogBridge) Debugf(string, ...any) {}
func (l slogBridge) Infof(format string, v ...any) {
	l.log.Debug("stripe-go: " + fmt.Sprintf(format, v...))
}
func (l slogBridge) Warnf(format string, v ...any) {
	l.log.Debug("stripe-go: " + fmt.Sprintf(format, v...))
}
func (l slogBridge) Errorf(format string, v ...any) {
	l.log.Debug("stripe-go: " + fmt.Sprintf(format, v...))
}
