package x402

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// SettleMode is when the money moves.
type SettleMode string

const (
	// SettleSync settles after the tool succeeded and before responding (x402's
	// authorization flow): the response's PAYMENT-RESPONSE carries the transaction.
	SettleSync SettleMode = "sync"
	// SettleBatch queues the authorization; the batch worker settles many in one
	// transaction. The response says the settlement is pending and gives its id.
	SettleBatch SettleMode = "batch"
)

// nonceClaims marks a credential as used, once, across every replica.
type nonceClaims interface {
	Claim(ctx context.Context, key string, expiresAt time.Time) error
}

// holdingClaims claims a nonce and holds its payment's value in one round trip to Redis;
// *ledger.Claims satisfies it.
type holdingClaims interface {
	ClaimHolding(ctx context.Context, key string, expiresAt time.Time, hold ledger.Hold) error
}

// paymentBook is the durable state of each payment; only legal transitions succeed.
type paymentBook interface {
	Create(ctx context.Context, p ledger.Payment) error
	Transition(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) (ledger.Payment, error)
	Get(ctx context.Context, id uuid.UUID) (ledger.Payment, error)
}

// reserver holds each verified payment's amount against its payer's balance until the money
// moves; *ledger.Reservations (Redis) and *ledger.MemoryReservations satisfy it.
type reserver interface {
	Reserve(ctx context.Context, scope, id string, amount, balance *big.Int, expires time.Time) error
	Release(ctx context.Context, scope string, ids ...string) error        // the money never moves
	ReleaseSettled(ctx context.Context, scope string, ids ...string) error // the money moved (or may have)
}

// remoteVerifier is a facilitator's /verify; *FacilitatorClient satisfies it.
type remoteVerifier interface {
	Verify(ctx context.Context, body []byte) (VerifyResponse, error)
}

// Settler moves the money of one verified payment now: a *ChainSettler (our own key) or a
// *FacilitatorSettler (a remote facilitator).
type Settler interface {
	settle(ctx context.Context, p *pendingPayment) (*payments.Settlement, error)
}

// Config configures the x402 rail.
type Config struct {
	Network    Network
	PayTo      common.Address
	MaxTimeout time.Duration // maxTimeoutSeconds of the offer (default 60 s)
	Mode       SettleMode    // default SettleSync
	PublicURL  string        // the gateway's base URL as payers reach it; resource.url = PublicURL + path
	// Facilitator, when set, is asked to verify every payment that passed local verification
	// (and the rail's settler should be a FacilitatorSettler): X402_FACILITATOR_URL.
	Facilitator remoteVerifier
	// Reservations, when set, keeps what payments not yet settled hold of each payer's balance:
	// a payment is refused when the balance less those does not cover it. Required in batch
	// mode, where calls are answered before their money moves.
	Reservations reserver
	// Backlog, when set, tells batch mode how far settlement is behind (the ledger): a payment
	// whose authorization would expire before the queue ahead of it settles is refused with
	// 503, never answered and left unpaid.
	Backlog backlogReader
	Now     func() time.Time
	Logger  *slog.Logger
}

// Rail is x402 (exact scheme, EIP-3009) as a payments.Rail.
type Rail struct {
	cfg     Config
	reader  ChainReader
	claims  nonceClaims
	book    paymentBook
	settler Settler
	backlog *backlog // batch mode with Config.Backlog
	// holding and holds, when the claims and the reservations are both Redis's: the claim and
	// the hold then go in one round trip (ledger.Claims.ClaimHolding).
	holding holdingClaims
	holds   *ledger.Reservations
}

// NewRail wires the rail. reader serves verification's chain reads; s is the chain or
// facilitator settler (NewChainSettler, NewFacilitatorSettler).
func NewRail(cfg Config, reader ChainReader, claims nonceClaims, book paymentBook, s Settler) (*Rail, error) {
	if err := cfg.Network.Validate(); err != nil {
		return nil, err
	}
	if cfg.PayTo == (common.Address{}) {
		return nil, errors.New("x402: payTo is required")
	}
	if reader == nil || claims == nil || book == nil || s == nil {
		return nil, errors.New("x402: NewRail needs a chain reader, nonce claims, a payment book and a settler")
	}
	if cfg.MaxTimeout <= 0 {
		cfg.MaxTimeout = 60 * time.Second
	}
	if cfg.Mode == "" {
		cfg.Mode = SettleSync
	}
	if cfg.Mode == SettleBatch && cfg.Reservations == nil {
		return nil, errors.New("x402: batch settlement needs reservations: calls are answered before their money moves")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	rail := &Rail{cfg: cfg, reader: reader, claims: claims, book: book, settler: s}
	if holds, ok := cfg.Reservations.(*ledger.Reservations); ok {
		if holding, ok := claims.(holdingClaims); ok {
			rail.holding, rail.holds = holding, holds
		}
	}
	if cfg.Mode == SettleBatch && cfg.Backlog != nil {
		rail.backlog = &backlog{r: cfg.Backlog, log: cfg.Logger,
			scope: ledger.Scope{Rail: RailName, Network: CAIP2(cfg.Network.ChainID), Asset: cfg.Network.Asset.Hex()}}
	}
	return rail, nil
}

// Name implements payments.Rail.
func (*Rail) Name() string { return RailName }

// requirements is this rail's one offer for a price.
func (r *Rail) requirements(price payments.Price) PaymentRequirements {
	return Requirements(r.cfg.Network, price, r.cfg.PayTo, r.cfg.MaxTimeout)
}

// Offer implements payments.Rail: the v2 PAYMENT-REQUIRED header, and the v1 accepts list
// in the body for v1 clients. Answering a refused payment, the header's error is the refusal's
// reason, as the reference server puts it there (x402.md §5, §7).
func (r *Rail) Offer(ctx context.Context, price payments.Price, refused *payments.PaymentError) (payments.Challenge, error) {
	msg := "PAYMENT-SIGNATURE header is required"
	switch {
	case refused == nil:
	case refused.Reason == ReasonNoMatchingRequirements:
		msg = MessageNoMatchingRequirements
	default:
		msg = refused.Reason
	}
	return r.offer(price, strings.TrimSuffix(r.cfg.PublicURL, "/")+price.Resource, msg)
}

func (r *Rail) offer(price payments.Price, resourceURL, errMsg string) (payments.Challenge, error) {
	req := r.requirements(price)
	res := ResourceFor(price, resourceURL)
	v2 := NewPaymentRequired(res, errMsg, req)
	DeclarePaymentIdentifier(&v2, false)
	h, err := EncodePaymentRequired(v2)
	if err != nil {
		return payments.Challenge{}, err
	}
	ch := payments.Challenge{Header: http.Header{}, Body: map[string]json.RawMessage{}}
	ch.Header.Set(HeaderPaymentRequired, h)
	if v1, ok := RequirementsV1(req, res); ok {
		body, err := json.Marshal(NewPaymentRequiredV1("X-PAYMENT header is required", v1))
		if err != nil {
			return payments.Challenge{}, err
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			return payments.Challenge{}, err
		}
		ch.Body["x402Version"], ch.Body["accepts"] = fields["x402Version"], fields["accepts"]
	}
	return ch, nil
}

// Accepts implements payments.Rail.
func (*Rail) Accepts(req *http.Request) bool { return HasCredential(req.Header) }

// storedAuthorization is what the payment book keeps of a verified payment: everything
// needed to settle it later, after a crash, without the request.
type storedAuthorization struct {
	X402Version int    `json:"x402Version"`
	Network     string `json:"network"`
	From        string `json:"from"`
	To          string `json:"to"`
	Value       string `json:"value"`
	ValidAfter  string `json:"validAfter"`
	ValidBefore string `json:"validBefore"`
	Nonce       string `json:"nonce"`
	Signature   string `json:"signature"`
	// SettleRequest is the facilitator request (payload and requirements) when a remote
	// facilitator settles: recovery sends it again, byte for byte in meaning.
	SettleRequest json.RawMessage `json:"settleRequest,omitempty"`
}

func (s storedAuthorization) chainAuthorization() (chain.Authorization, error) {
	var a chain.Authorization
	var ok1, ok2, ok3 bool
	a.From, a.To = common.HexToAddress(s.From), common.HexToAddress(s.To)
	a.Value, ok1 = new(big.Int).SetString(s.Value, 10)
	a.ValidAfter, ok2 = new(big.Int).SetString(s.ValidAfter, 10)
	a.ValidBefore, ok3 = new(big.Int).SetString(s.ValidBefore, 10)
	sig, err := hex.DecodeString(strings.TrimPrefix(s.Signature, "0x"))
	if !ok1 || !ok2 || !ok3 || err != nil {
		return a, errors.New("x402: stored authorization is malformed")
	}
	a.Nonce, a.Signature = common.HexToHash(s.Nonce), sig
	return a, nil
}

// pendingPayment is a verified, claimed payment on its way to settlement.
type pendingPayment struct {
	ID       uuid.UUID
	Verified *Verified
	Auth     chain.Authorization
	JobID    uuid.UUID
	Remote   []byte // the facilitator request; nil unless a facilitator settles
	// Late is the payment's row when it is written only once the call is done (batch mode):
	// queued by Settle, not_charged by Void. Nil when Verify recorded it verified.
	Late *ledger.Payment
}

// Verify implements payments.Rail: decode, verify locally and on-chain, then claim the nonce
// and record the payment. A credential that fails any step is refused with its reason; a
// chain, Redis or database that cannot answer is payments.ErrUnavailable.
func (r *Rail) Verify(ctx context.Context, req *http.Request, price payments.Price) (*payments.Authorization, error) {
	payload, _, err := PayloadFromRequest(req.Header)
	if err != nil {
		return nil, err
	}
	offer := r.requirements(price)
	v, err := Verify(ctx, r.reader, payload, offer, r.cfg.Now())
	if err != nil {
		return nil, err
	}
	var remote []byte
	if r.cfg.Facilitator != nil {
		if remote, err = r.verifyRemote(ctx, payload, offer, price); err != nil {
			return nil, err
		}
	}
	if err := r.checkBacklog(ctx, v); err != nil {
		return nil, err
	}
	if err := r.reserveAndClaim(ctx, v); err != nil {
		return nil, err
	}
	stored := storedAuthorization{
		X402Version: v.X402Version, Network: v.Network, From: v.Payer.Hex(), To: v.To.Hex(), Value: v.Value.String(),
		ValidAfter: v.ValidAfter.String(), ValidBefore: v.ValidBefore.String(), Nonce: v.Nonce.Hex(),
		Signature: "0x" + hex.EncodeToString(v.Signature), SettleRequest: remote,
	}
	auth, err := stored.chainAuthorization()
	if err != nil {
		return nil, err
	}
	raw, _ := json.Marshal(stored)
	p := ledger.Payment{
		ID: uuid.New(), Rail: RailName, Status: ledger.StatusVerified, Network: CAIP2(v.ChainID),
		Asset: v.Asset.Hex(), Payer: v.Payer.Hex(), PayTo: v.To.Hex(), Amount: new(big.Int).Set(v.Value),
		NonceKey: v.NonceKey(), Payload: raw,
	}
	pending := &pendingPayment{ID: p.ID, Verified: v, Auth: auth, Remote: remote}
	if r.cfg.Mode == SettleBatch {
		// The nonce is claimed; the row waits for the call's outcome (queued or not_charged),
		// one write instead of a verified row and a move.
		pending.Late = &p
	} else if err := r.book.Create(ctx, p); err != nil {
		// The nonce is claimed and stays claimed: refusing now cannot charge, and a retry
		// with the same credential is refused as used, never paid twice.
		return nil, fmt.Errorf("x402: recording the payment: %w", errors.Join(payments.ErrUnavailable, err))
	}
	return &payments.Authorization{
		Rail: RailName, Payer: v.Payer.Hex(), Amount: price.Amount, Reference: p.ID.String(), State: pending,
	}, nil
}

// recordLate writes a payment whose row waited for its call, in the status the call's outcome
// gives it.
func (r *Rail) recordLate(ctx context.Context, p *pendingPayment, status ledger.Status, reason string) error {
	row := *p.Late
	row.Status, row.JobID, row.ErrorReason = status, p.JobID, reason
	return r.book.Create(ctx, row)
}

// verifyRemote asks the facilitator to verify a payment that passed local verification, and
// returns the request it will be asked to settle. Its refusal is the 402's reason; a
// facilitator that cannot answer is payments.ErrUnavailable (503), and nothing is claimed.
func (r *Rail) verifyRemote(ctx context.Context, payload *PaymentPayload, offer PaymentRequirements, price payments.Price) ([]byte, error) {
	body, err := NewFacilitatorRequest(payload, offer, ResourceFor(price, strings.TrimSuffix(r.cfg.PublicURL, "/")+price.Resource))
	if err != nil {
		return nil, err
	}
	res, err := r.cfg.Facilitator.Verify(ctx, body)
	if err != nil {
		return nil, err
	}
	if !res.IsValid {
		return nil, refuse(res.InvalidReason, "the facilitator refused the payment: "+orText(res.InvalidMessage, res.InvalidReason))
	}
	return body, nil
}

// checkBacklog refuses, in batch mode, a payment that could expire before its batch settles:
// too short a window is the payer's (402, valid_before); a queue too far behind is ours (503,
// nothing claimed, nothing charged).
func (r *Rail) checkBacklog(ctx context.Context, v *Verified) error {
	if r.backlog == nil {
		return nil
	}
	now := r.cfg.Now()
	expires := v.ExpiresAt()
	if expires.Before(now.Add(batchSettleMargin)) {
		return refuse(ReasonValidBefore, fmt.Sprintf("batch settlement needs an authorization valid for at least %s; this one expires at %s",
			batchSettleMargin, expires.UTC().Format(time.RFC3339)))
	}
	if lag := r.backlog.current(ctx, now); expires.Before(now.Add(lag + batchSettleMargin)) {
		return fmt.Errorf("x402: batch settlement is %s behind and this authorization expires at %s: %w",
			lag.Round(time.Second), expires.UTC().Format(time.RFC3339), payments.ErrUnavailable)
	}
	return nil
}

// A hold is released once its payment's money has moved, but a balance read just before the
// settlement, used by a reservation just after the release, would count that money twice: as
// still in the balance and no longer held. So a reservation uses only a balance read less than
// balanceFreshFor ago (an older one is read again), and settled holds keep counting for
// HoldAfterRelease, which adds the lag of a node behind the one that reported the receipt:
// every balance a reservation can use after that was read after the settlement was visible.
const (
	balanceFreshFor  = 5 * time.Second
	HoldAfterRelease = balanceFreshFor + 5*time.Second
)

// reserveAndClaim holds the payment's value against the payer's balance, keyed by its nonce so
// that a concurrent copy of the same payment holds it once, and claims the nonce. The hold
// comes first: a payment refused for its balance has used nothing and can be sent again once
// the payer has the funds. With Redis reservations and claims both are one round trip
// (ledger.Claims.ClaimHolding).
func (r *Rail) reserveAndClaim(ctx context.Context, v *Verified) error {
	if v.Balance != nil && r.cfg.Now().Sub(v.ReadAfter) > balanceFreshFor {
		// A balance this old (a slow node, a slow facilitator's /verify) may predate a
		// settlement whose hold is gone by now: read it again.
		readAfter := r.cfg.Now()
		bal, err := r.reader.BalanceOf(ctx, v.Asset, v.Payer)
		if err != nil {
			return unavailable("read the payer's balance again", err)
		}
		if bal.Cmp(v.Value) < 0 {
			return refuse(ReasonInsufficientBalance, fmt.Sprintf("balance %s is below %s", bal, v.Value))
		}
		v.Balance, v.ReadAfter = bal, readAfter
	}
	expires := v.ExpiresAt()
	var err error
	switch {
	case r.cfg.Reservations == nil || v.Balance == nil:
		err = r.claims.Claim(ctx, v.NonceKey(), expires)
	case r.holding != nil:
		err = r.holding.ClaimHolding(ctx, v.NonceKey(), expires, ledger.Hold{Book: r.holds,
			Scope: reservationScope(v.ChainID, v.Asset, v.Payer), ID: v.NonceKey(), Amount: v.Value, Balance: v.Balance, Expires: expires})
	default:
		err = r.cfg.Reservations.Reserve(ctx, reservationScope(v.ChainID, v.Asset, v.Payer), v.NonceKey(), v.Value, v.Balance, expires)
		if err == nil {
			err = r.claims.Claim(ctx, v.NonceKey(), expires)
		}
	}
	switch {
	case errors.Is(err, ledger.ErrInsufficientFunds):
		return refuse(ReasonInsufficientBalance, fmt.Sprintf("balance %s, less what this payer's payments not yet settled hold, is below %s", v.Balance, v.Value))
	case errors.Is(err, ledger.ErrNonceUsed):
		return refuse(ReasonNonceAlreadyUsed, "this authorization's nonce was already used")
	case err != nil:
		return fmt.Errorf("x402: reserving the payment and claiming its nonce: %w", err)
	}
	return nil
}

// release gives back what a payment held of its payer's balance: at once when its money never
// moves (refused, not charged), a little later when it has moved (ReleaseSettled: a balance
// read before the settlement may still be in use). A failure is only logged: the reservation
// expires by itself, holding funds back meanwhile, never letting them be spent twice.
func (r *Rail) release(ctx context.Context, p *pendingPayment, moved bool) {
	if r.cfg.Reservations == nil {
		return
	}
	v := p.Verified
	give := r.cfg.Reservations.Release
	if moved {
		give = r.cfg.Reservations.ReleaseSettled
	}
	if err := give(context.WithoutCancel(ctx), reservationScope(v.ChainID, v.Asset, v.Payer), v.NonceKey()); err != nil {
		r.cfg.Logger.Warn("x402: releasing a reservation", "payment", p.ID, "err", err)
	}
}

// reservationScope names one payer's balance of one token.
func reservationScope(chainID uint64, token, payer common.Address) string {
	return strconv.FormatUint(chainID, 10) + ":" + lowerHex(token[:]) + ":" + lowerHex(payer[:])
}

func pendingOf(a *payments.Authorization) (*pendingPayment, error) {
	p, ok := a.State.(*pendingPayment)
	if !ok || a.Rail != RailName {
		return nil, fmt.Errorf("x402: authorization of rail %q is not ours", a.Rail)
	}
	return p, nil
}

// Settle implements payments.Rail. In sync mode the money moves now; in batch mode the
// payment is queued and reported pending. A receipt that does not come in time is pending,
// never failed, and is never answered with a new 402.
func (r *Rail) Settle(ctx context.Context, a *payments.Authorization) (*payments.Settlement, error) {
	p, err := pendingOf(a)
	if err != nil {
		return nil, err
	}
	p.JobID = jobIDOf(a)
	if r.cfg.Mode == SettleBatch {
		if err := r.queue(ctx, p); err != nil {
			if p.Late != nil {
				// No row exists to reconcile later: the call must not be answered as paid.
				r.release(ctx, p, false)
				return nil, fmt.Errorf("x402: recording payment %s: %w", p.ID, errors.Join(payments.ErrNotRecorded, payments.ErrUnavailable, err))
			}
			return nil, fmt.Errorf("x402: queueing payment %s: %w", p.ID, err)
		}
		return r.pendingSettlement(p, ""), nil
	}
	s, err := r.settler.settle(ctx, p)
	if err != nil {
		r.release(ctx, p, false) // refused, or not recorded: the money never moves
		var refused *payments.PaymentError
		if errors.As(err, &refused) {
			// The 402 that answers it says so in PAYMENT-RESPONSE too (core 2.6.0 and later).
			refused.Header = r.responseHeader(p.Verified, SettlementResponse{Success: false, Network: p.Verified.Network,
				Payer: p.Verified.Payer.Hex(), ErrorReason: refused.Reason})
		}
		return nil, err
	}
	if s.Status == payments.SettlementPending {
		return r.pendingSettlement(p, s.TxHash), nil // it may still move: keep holding it
	}
	r.release(ctx, p, true)
	s.Header = r.responseHeader(p.Verified, SettlementResponse{Success: true, Transaction: s.TxHash, Network: p.Verified.Network, Payer: p.Verified.Payer.Hex()})
	return s, nil
}

// queue hands a payment to the batch worker.
func (r *Rail) queue(ctx context.Context, p *pendingPayment) error {
	if p.Late != nil {
		return r.recordLate(ctx, p, ledger.StatusQueued, "")
	}
	_, err := r.book.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified}, ledger.StatusQueued, ledger.Patch{JobID: p.JobID})
	return err
}

func (r *Rail) pendingSettlement(p *pendingPayment, tx string) *payments.Settlement {
	return &payments.Settlement{
		Status: payments.SettlementPending, ID: p.ID.String(), TxHash: tx, Reference: p.ID.String(),
		Header: r.responseHeader(p.Verified, SettlementResponse{Success: false, Transaction: tx, Network: p.Verified.Network,
			Payer: p.Verified.Payer.Hex(), ErrorReason: ReasonSettlementPending}),
	}
}

func (r *Rail) responseHeader(v *Verified, sr SettlementResponse) http.Header {
	h := http.Header{}
	if enc, err := EncodeSettlementResponse(sr); err == nil {
		h.Set(ResponseHeader(v.X402Version), enc)
	}
	return h
}

// Void marks a verified payment as never to be charged: the tool failed or the call was
// refused after verification. The claimed nonce stays claimed.
func (r *Rail) Void(ctx context.Context, a *payments.Authorization, reason string) error {
	p, err := pendingOf(a)
	if err != nil {
		return err
	}
	if p.Late != nil {
		p.JobID = jobIDOf(a)
		err = r.recordLate(ctx, p, ledger.StatusNotCharged, reason)
	} else {
		_, err = r.book.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified}, ledger.StatusNotCharged, ledger.Patch{ErrorReason: reason, JobID: jobIDOf(a)})
	}
	if err == nil {
		r.release(ctx, p, false) // not charged: the money never moves
	}
	return err
}

// jobIDOf reads the job id the gateway attached to an authorization, if any.
func jobIDOf(a *payments.Authorization) uuid.UUID {
	id, _ := uuid.Parse(a.JobID)
	return id
}

// IdempotencyKey implements payments.Idempotent: the payment-identifier extension's id,
// scoped to this rail, bound to the exact payment payload. A payload that does not decode,
// or names no id, names nothing: Verify reports what is wrong with it.
func (r *Rail) IdempotencyKey(req *http.Request) (key, fingerprint string, ok bool, err error) {
	if !HasCredential(req.Header) {
		return "", "", false, nil
	}
	payload, _, derr := PayloadFromRequest(req.Header)
	if derr != nil {
		return "", "", false, nil
	}
	id, present, err := payload.PaymentIdentifier()
	if err != nil || !present {
		return "", "", false, err
	}
	fp := payload.Fingerprint()
	return RailName + ":" + req.URL.Path + ":" + id, "0x" + hex.EncodeToString(fp[:]), true, nil
}
