package mpp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/stripe/stripe-go/v76"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
	"github.com/secureexec/secureexec/proof"
)

// nonceClaims marks a key as used, once, across every replica (*ledger.Claims, *ledger.Memory).
type nonceClaims interface {
	Claim(ctx context.Context, key string, expiresAt time.Time) error
}

// paymentBook is the durable state of each payment; only legal transitions succeed
// (*ledger.Ledger, *ledger.Memory).
type paymentBook interface {
	Create(ctx context.Context, p ledger.Payment) error
	Transition(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) (ledger.Payment, error)
	Get(ctx context.Context, id uuid.UUID) (ledger.Payment, error)
	// GetByNonceKey finds the charge a challenge made, for a resend of its credential.
	GetByNonceKey(ctx context.Context, key string) (ledger.Payment, error)
	// GetByReference finds the payment a PaymentIntent was recorded for.
	GetByReference(ctx context.Context, rail, ref string) (ledger.Payment, error)
	// RecordAttempt touches a payment that stays verified: a charge whose answer was lost.
	RecordAttempt(ctx context.Context, id uuid.UUID, status ledger.Status) (ledger.Payment, error)
	// RecordReference records a charge's PaymentIntent, and the customer Stripe names, while
	// its call runs.
	RecordReference(ctx context.Context, id uuid.UUID, status ledger.Status, ref string, payload json.RawMessage) (ledger.Payment, error)
}

// stripeAPI is what the rail needs from Stripe; *Stripe provides it.
type stripeAPI interface {
	ChargeSPT(ctx context.Context, req ChargeRequest) (*stripe.PaymentIntent, error)
	GetPaymentIntent(ctx context.Context, id string) (*stripe.PaymentIntent, error)
	PaymentIntentsOfChallenge(ctx context.Context, challengeID string) ([]*stripe.PaymentIntent, error)
	Refund(ctx context.Context, paymentIntent, reason string) (*stripe.Refund, error)
	Cancel(ctx context.Context, paymentIntent string) error
}

// Network is the ledger's network of every MPP payment; the asset is the currency.
const Network = "stripe"

// Defaults of Config.
const (
	DefaultChallengeTTL = 5 * time.Minute
	DefaultCurrency     = "usd"
	DefaultMinAmount    = 50 // Stripe's minimum charge in usd/eur, in cents
	DefaultDescription  = "SecureExec call"
	DefaultBindKey      = "secureexec_gateway"
	maxStripeAmount     = 99_999_999 // Stripe's eight-digit limit
)

// Config configures the rail. Zero values take the defaults in brackets.
type Config struct {
	// Realm is the challenge's protection space, e.g. the gateway's host name. Required.
	Realm string
	// Secret signs challenge ids (HMAC-SHA256), at least 32 bytes. Required; never logged.
	Secret []byte
	// PreviousSecret is the secret before the last rotation: ids it signed are accepted until
	// SecretRotatedAt + ChallengeTTL, when every challenge it signed has expired.
	PreviousSecret []byte
	// SecretRotatedAt is when Secret replaced PreviousSecret [the rail's construction].
	SecretRotatedAt time.Time
	// ChallengeTTL is how long a challenge may be paid [5m].
	ChallengeTTL time.Duration
	// Currency is the Stripe currency, lowercase [usd].
	Currency string
	// CurrencyDecimals is the currency's minor-unit exponent [2].
	CurrencyDecimals int
	// Amounts fixes the charge per mode, in minor units (cents). A mode without an entry is
	// converted from its USDC price at par (1 USDC = 1 USD: Amount / 10^(6-CurrencyDecimals)),
	// which needs Currency usd and a price that is a whole number of cents.
	Amounts map[payments.Mode]uint64
	// MinAmount is the smallest charge offered, in minor units [50: Stripe's usd minimum]. A
	// price below it is not offered on this rail; the other rails still offer it.
	MinAmount uint64
	// NetworkID is the Stripe Business Network profile id (methodDetails.networkId). Required.
	NetworkID string
	// PaymentMethodTypes are offered in methodDetails [card].
	PaymentMethodTypes []string
	// Description is the request's description [DefaultDescription].
	Description string
	// BindKey and BindValue are the metadata that bind a PaymentIntent to this gateway: set on
	// every PaymentIntent the rail creates, required on one presented as `MPP pi_…`
	// [DefaultBindKey, Realm].
	BindKey, BindValue string
	// Livemode is whether the Stripe key is live (Stripe.Livemode()); objects of the other mode
	// are refused.
	Livemode bool
	// PaymentIntentMaxAge is how old a PaymentIntent presented as `MPP pi_…` may be, and so
	// how long its claim is kept [24h].
	PaymentIntentMaxAge time.Duration
	Now                 func() time.Time
	Logger              *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.ChallengeTTL <= 0 {
		c.ChallengeTTL = DefaultChallengeTTL
	}
	if c.Currency == "" {
		c.Currency = DefaultCurrency
	}
	if c.CurrencyDecimals == 0 {
		c.CurrencyDecimals = 2
	}
	if c.MinAmount == 0 {
		c.MinAmount = DefaultMinAmount
	}
	if len(c.PaymentMethodTypes) == 0 {
		c.PaymentMethodTypes = []string{"card"}
	}
	if c.Description == "" {
		c.Description = DefaultDescription
	}
	if c.BindKey == "" {
		c.BindKey = DefaultBindKey
	}
	if c.BindValue == "" {
		c.BindValue = c.Realm
	}
	if c.PaymentIntentMaxAge <= 0 {
		c.PaymentIntentMaxAge = 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	if c.Realm == "" || !printable(c.Realm, 256) {
		return errors.New("mpp: realm is required: printable ASCII, at most 256 bytes")
	}
	if c.NetworkID == "" || !printable(c.NetworkID, 256) {
		return errors.New("mpp: the Stripe network id (Business Network profile) is required")
	}
	if len(c.Currency) != 3 || !validMethod(c.Currency) {
		return fmt.Errorf("mpp: currency %q is not a lowercase ISO 4217 code", c.Currency)
	}
	if c.CurrencyDecimals < 0 || c.CurrencyDecimals > payments.USDCDecimals {
		return fmt.Errorf("mpp: currency decimals %d outside 0..%d", c.CurrencyDecimals, payments.USDCDecimals)
	}
	if len(c.BindKey) > 40 || len(c.BindValue) > 500 || !printable(c.BindKey, 40) || !printable(c.BindValue, 500) {
		return errors.New("mpp: the binding metadata must fit Stripe's limits (key 40, value 500 characters)")
	}
	for _, t := range c.PaymentMethodTypes {
		if !printable(t, 64) {
			return fmt.Errorf("mpp: payment method type %q", t)
		}
	}
	if !printable(c.Description, 256) {
		return errors.New("mpp: description must be printable ASCII, at most 256 bytes")
	}
	return nil
}

func printable(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// Rail is the MPP `Payment` scheme with the stripe method, charge intent, as a payments.Rail
// and payments.Voider. Unlike x402, the money moves in Verify: a Shared Payment Token is
// spent by the create+confirm that proves it, so Void refunds and Settle only records.
type Rail struct {
	cfg    Config
	keys   *Keyring
	stripe stripeAPI
	claims nonceClaims
	book   paymentBook
}

// NewRail wires the rail: st is the Stripe client (NewStripe), claims and book the shared
// ledger (the same ones the x402 rail uses).
func NewRail(cfg Config, st stripeAPI, claims nonceClaims, book paymentBook) (*Rail, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if st == nil || claims == nil || book == nil {
		return nil, errors.New("mpp: NewRail needs a Stripe client, nonce claims and a payment book")
	}
	rotated := cfg.SecretRotatedAt
	if rotated.IsZero() {
		rotated = cfg.Now()
	}
	var prev []byte
	if len(cfg.PreviousSecret) > 0 {
		prev = cfg.PreviousSecret
	}
	keys, err := NewKeyring(cfg.Secret, prev, rotated.Add(cfg.ChallengeTTL))
	if err != nil {
		return nil, err
	}
	return &Rail{cfg: cfg, keys: keys, stripe: st, claims: claims, book: book}, nil
}

// Name implements payments.Rail.
func (*Rail) Name() string { return RailName }

// errNotChargeable says why a price cannot be charged on this rail.
var errNotChargeable = errors.New("mpp: price not chargeable with stripe")

// AmountFor is the charge for price in the currency's minor units: Config.Amounts for its
// mode, else its USDC price at par in cents. A price that converts inexactly, falls below
// MinAmount or exceeds Stripe's limit is an error: the rail does not offer it.
func (r *Rail) AmountFor(price payments.Price) (uint64, error) {
	amount, fixed := r.cfg.Amounts[price.Mode]
	if !fixed {
		if r.cfg.Currency != "usd" {
			return 0, fmt.Errorf("%w: no amount configured for mode %s in %s", errNotChargeable, price.Mode, r.cfg.Currency)
		}
		div := uint64(1)
		for range payments.USDCDecimals - r.cfg.CurrencyDecimals {
			div *= 10
		}
		if price.Amount%div != 0 {
			return 0, fmt.Errorf("%w: %s USDC is not a whole number of minor units", errNotChargeable, price.Decimal())
		}
		amount = price.Amount / div
	}
	switch {
	case amount == 0 || amount < r.cfg.MinAmount:
		return 0, fmt.Errorf("%w: %d is below the minimum charge of %d %s minor units", errNotChargeable, amount, r.cfg.MinAmount, r.cfg.Currency)
	case amount > maxStripeAmount:
		return 0, fmt.Errorf("%w: %d exceeds Stripe's maximum charge", errNotChargeable, amount)
	}
	return amount, nil
}

// stripeRequest is the stripe/charge `request` (mpp.md §4).
type stripeRequest struct {
	Amount        string        `json:"amount"`
	Currency      string        `json:"currency"`
	Description   string        `json:"description,omitempty"`
	MethodDetails methodDetails `json:"methodDetails"`
}

type methodDetails struct {
	NetworkID          string   `json:"networkId"`
	PaymentMethodTypes []string `json:"paymentMethodTypes"`
}

// requestFor is the encoded request of a charge of amount minor units.
func (r *Rail) requestFor(amount uint64) (string, error) {
	return EncodeRequest(stripeRequest{
		Amount: strconv.FormatUint(amount, 10), Currency: r.cfg.Currency, Description: r.cfg.Description,
		MethodDetails: methodDetails{NetworkID: r.cfg.NetworkID, PaymentMethodTypes: r.cfg.PaymentMethodTypes},
	})
}

// NewChallenge returns a fresh, signed stripe/charge challenge for price, expiring ChallengeTTL
// from now.
func (r *Rail) NewChallenge(price payments.Price) (Challenge, error) {
	amount, err := r.AmountFor(price)
	if err != nil {
		return Challenge{}, err
	}
	req, err := r.requestFor(amount)
	if err != nil {
		return Challenge{}, err
	}
	// A random value in opaque (echoed unchanged by clients, and bound into the id) makes
	// every challenge's id unique: without it two 402s for one price in the same second
	// share an id, and a challenge id pays once.
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return Challenge{}, err
	}
	opaque, err := EncodeRequest(map[string]string{"n": hex.EncodeToString(n[:])})
	if err != nil {
		return Challenge{}, err
	}
	c := Challenge{Realm: r.cfg.Realm, Method: MethodStripe, Intent: IntentCharge, Request: req,
		Expires: r.cfg.Now().Add(r.cfg.ChallengeTTL).UTC().Format("2006-01-02T15:04:05Z"), Opaque: opaque}
	c.ID = r.keys.Sign(c)
	return c, nil
}

// Offer implements payments.Rail: one `WWW-Authenticate: Payment` challenge, fresh at every
// call, and its id in the body (as mppx adds challengeId). A price this rail cannot charge, or
// an Accept-Payment (see WithAcceptPayment) that refuses stripe/charge, yields no offer.
func (r *Rail) Offer(ctx context.Context, price payments.Price, _ *payments.PaymentError) (payments.Challenge, error) {
	if !offerWanted(ctx, MethodStripe, IntentCharge) {
		return payments.Challenge{}, nil
	}
	c, err := r.NewChallenge(price)
	if errors.Is(err, errNotChargeable) {
		r.cfg.Logger.Debug("mpp: price not offered", "mode", price.Mode, "reason", err)
		return payments.Challenge{}, nil
	}
	if err != nil {
		return payments.Challenge{}, err
	}
	id, _ := json.Marshal(c.ID)
	ch := payments.Challenge{Header: http.Header{}, Body: map[string]json.RawMessage{"challengeId": id}}
	ch.Header.Add(HeaderWWWAuthenticate, c.HeaderValue())
	return ch, nil
}

// Accepts implements payments.Rail: an Authorization of scheme Payment or MPP.
func (*Rail) Accepts(req *http.Request) bool { return hasCredential(req.Header) }

// storedPayment is what the payment book keeps of an MPP payment: enough to refund or settle
// it after a crash. The Shared Payment Token is not kept, only its digest: it is a credential.
// A payment made with a token is stored before its charge (charge.go), without its
// PaymentIntent and customer: they are added, the PaymentIntent as the payment's reference
// (TxHash) too, once Stripe names them.
type storedPayment struct {
	Form          string `json:"form"`
	PaymentIntent string `json:"paymentIntent,omitempty"`
	ChallengeID   string `json:"challengeId,omitempty"`
	Expires       string `json:"expires,omitempty"`     // the challenge's expiry: no resend completes the charge after it
	TokenDigest   string `json:"tokenSha256,omitempty"` // hex SHA-256 of the Shared Payment Token
	Amount        int64  `json:"amount"`
	Currency      string `json:"currency"`
	Livemode      bool   `json:"livemode"`
	Customer      string `json:"customer,omitempty"`
	Source        string `json:"source,omitempty"`
	ExternalID    string `json:"externalId,omitempty"`
}

// pendingPayment is a charged, recorded payment waiting for Settle or Void.
type pendingPayment struct {
	ID     uuid.UUID
	Stored storedPayment

	mu       sync.Mutex
	settled  bool
	refund   bool // refunded by Void
	unstored bool // the record of a token charge (its PaymentIntent and customer) is not written yet
}

// Verify implements payments.Rail. For `Payment` it checks the echoed challenge (id in
// constant time, realm, method, intent, expiry, price), claims the challenge id, records the
// payment, and charges the Shared Payment Token: the money moves here (charge.go). For
// `MPP pi_…` it retrieves the PaymentIntent, checks it paid this price to this gateway, and
// claims it. Either way the payment is recorded before Verify returns; a charge that cannot be
// recorded is refunded.
// Refusals are *payments.PaymentError with a draft reason; Stripe, Redis or the database
// unreachable is payments.ErrUnavailable.
func (r *Rail) Verify(ctx context.Context, req *http.Request, price payments.Price) (*payments.Authorization, error) {
	p, err := credentialFrom(req.Header)
	if err != nil {
		return nil, err
	}
	amount, err := r.AmountFor(price)
	if err != nil {
		return nil, refuse(ReasonMethodUnsupported, "this call's price cannot be paid with stripe: "+err.Error())
	}
	if p.form == formMPP {
		return r.verifyPaymentIntent(ctx, p.value, price, amount)
	}
	return r.verifyCredential(ctx, p.value, price, amount)
}

// checkChallenge applies the draft's checks to an echoed challenge, in an order that gives each
// failure its own reason: what is not ours (method, intent, realm) before the id, the id before
// the expiry, so that an expiry is only reported for a challenge we issued.
func (r *Rail) checkChallenge(ch Challenge, amount uint64, now time.Time) (time.Time, error) {
	switch {
	case ch.Method != MethodStripe:
		return time.Time{}, refuse(ReasonMethodUnsupported, fmt.Sprintf("payment method %q is not offered here; stripe is", ch.Method))
	case ch.Intent != IntentCharge:
		return time.Time{}, refuse(ReasonMethodUnsupported, fmt.Sprintf("intent %q is not offered here; charge is", ch.Intent))
	case ch.Realm != r.cfg.Realm:
		return time.Time{}, refuse(ReasonInvalidChallenge, "the challenge was issued for another realm")
	case ch.Header != "":
		return time.Time{}, refuse(ReasonInvalidChallenge, "this server never issues challenges with a header parameter")
	case !r.keys.Verify(ch, now):
		return time.Time{}, refuse(ReasonInvalidChallenge, "the challenge id does not match its parameters")
	}
	exp, err := time.Parse(time.RFC3339, ch.Expires)
	if err != nil {
		return time.Time{}, refuse(ReasonInvalidChallenge, "the challenge has no valid expiry")
	}
	if !now.Before(exp) {
		return time.Time{}, refuse(ReasonPaymentExpired, "the challenge expired at "+ch.Expires)
	}
	want, err := r.requestFor(amount)
	if err != nil {
		return time.Time{}, err
	}
	if ch.Request != want {
		return time.Time{}, refuse(ReasonInvalidChallenge, "the challenge was issued for another price or offer")
	}
	return exp, nil
}

func pendingOf(a *payments.Authorization) (*pendingPayment, error) {
	p, ok := a.State.(*pendingPayment)
	if !ok || a.Rail != RailName {
		return nil, fmt.Errorf("mpp: authorization of rail %q is not ours", a.Rail)
	}
	return p, nil
}

// ErrVoided is Settle of an authorization that Void already refunded.
var ErrVoided = errors.New("mpp: payment was refunded")

// Settle implements payments.Rail. The money moved in Verify: Settle records the payment as
// settled (verified -> submitted, with the PaymentIntent as its transaction and the receipt
// as its record, -> settled) and returns the Payment-Receipt. If the first move cannot be
// recorded, the payment stays verified, Reconcile refunds it, and so the call's result must
// not be delivered: Settle fails with payments.ErrNotRecorded.
func (r *Rail) Settle(ctx context.Context, a *payments.Authorization) (*payments.Settlement, error) {
	p, err := pendingOf(a)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refund {
		return nil, ErrVoided
	}
	receipt := NewReceipt(p.Stored.PaymentIntent, p.Stored.ExternalID, r.cfg.Now())
	hdr, err := receipt.Header()
	if err != nil {
		return nil, err
	}
	s := &payments.Settlement{Status: payments.SettlementSettled, ID: p.ID.String(), Reference: p.Stored.PaymentIntent, Header: hdr}
	if p.settled {
		return s, nil
	}
	record, err := json.Marshal(receipt)
	if err != nil {
		return nil, err
	}
	if p.unstored {
		// Verify could not write the charge's record: the customer a dispute must flag is in it.
		if raw, err := json.Marshal(p.Stored); err == nil {
			if _, err := r.book.RecordReference(ctx, p.ID, ledger.StatusVerified, p.Stored.PaymentIntent, raw); err == nil {
				p.unstored = false
			}
		}
	}
	if _, err := r.book.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified}, ledger.StatusSubmitted,
		ledger.Patch{JobID: jobIDOf(a), TxHash: p.Stored.PaymentIntent, RawTx: record}); err != nil && !r.movedToSubmitted(ctx, p) {
		return nil, fmt.Errorf("mpp: recording payment %s as charged: %w", p.ID, errors.Join(payments.ErrNotRecorded, payments.ErrUnavailable, err))
	}
	p.settled = true
	if _, err := r.book.Transition(ctx, p.ID, []ledger.Status{ledger.StatusSubmitted}, ledger.StatusSettled, ledger.Patch{}); err != nil {
		// Recorded as submitted with its PaymentIntent: Reconcile finishes the move.
		r.cfg.Logger.Warn("mpp: recording a settlement", "payment", p.ID, "payment_intent", p.Stored.PaymentIntent, "err", err)
	}
	return s, nil
}

// movedToSubmitted reads back a payment whose move to submitted failed: the statement may
// have committed although its answer was lost. Unreadable is not moved.
func (r *Rail) movedToSubmitted(ctx context.Context, p *pendingPayment) bool {
	got, err := r.book.Get(ctx, p.ID)
	return err == nil && got.TxHash == p.Stored.PaymentIntent &&
		(got.Status == ledger.StatusSubmitted || got.Status == ledger.StatusSettled)
}

// Void implements payments.Voider: the call did not complete, so the charge is refunded (in
// full, with an idempotency key per PaymentIntent) and the payment recorded as not charged.
// A second Void is a no-op. A refund Stripe cannot take now is an error; the payment stays
// verified and Reconcile refunds it later.
func (r *Rail) Void(ctx context.Context, a *payments.Authorization, reason string) error {
	p, err := pendingOf(a)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.refund:
		return nil
	case p.settled:
		return fmt.Errorf("mpp: payment %s is settled; it is not voided", p.ID)
	}
	if _, err := r.stripe.Refund(ctx, p.Stored.PaymentIntent, reason); err != nil {
		return fmt.Errorf("mpp: refunding payment %s: %w", p.ID, err)
	}
	p.refund = true
	_, err = r.book.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified}, ledger.StatusNotCharged,
		ledger.Patch{ErrorReason: "refunded: " + reason, JobID: jobIDOf(a), TxHash: p.Stored.PaymentIntent})
	return err
}

// jobIDOf reads the job id the gateway attached to an authorization, if any.
func jobIDOf(a *payments.Authorization) uuid.UUID {
	id, _ := uuid.Parse(a.JobID)
	return id
}

// IdempotencyKey implements payments.Idempotent: a credential names its request, so a resend
// of the same credential (a lost response) gets the stored response instead of an
// invalid-challenge. The key is the whole credential's fingerprint (scoped to this rail and
// path), not the challenge id: another credential for a used challenge is then a new request,
// which Verify refuses as invalid-challenge (402, as the scheme says), rather than an
// identifier conflict. A PaymentIntent is keyed by its id. What does not decode names nothing.
func (r *Rail) IdempotencyKey(req *http.Request) (key, fingerprint string, ok bool, err error) {
	if !hasCredential(req.Header) {
		return "", "", false, nil
	}
	p, err := credentialFrom(req.Header)
	if err != nil {
		return "", "", false, nil
	}
	if p.form == formMPP {
		id, err := parsePaymentIntentID(p.value)
		if err != nil {
			return "", "", false, nil
		}
		sum := sha256.Sum256([]byte(id))
		return RailName + ":" + req.URL.Path + ":" + id, "0x" + hex.EncodeToString(sum[:]), true, nil
	}
	cred, err := DecodeCredential(p.value)
	if err != nil {
		return "", "", false, nil
	}
	raw, err := json.Marshal(cred)
	if err != nil {
		return "", "", false, nil
	}
	fp, err := proof.Hash(raw)
	if err != nil {
		return "", "", false, nil
	}
	return RailName + ":" + req.URL.Path + ":" + fp, fp, true, nil
}
