package mpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/google/uuid"
	"github.com/stripe/stripe-go/v76"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// The seed's form, `Authorization: MPP pi_…`: a PaymentIntent the payer paid beforehand, made
// out to this gateway by its binding metadata. Verify retrieves it and checks it; its payment
// is keyed by the PaymentIntent.

func (r *Rail) verifyPaymentIntent(ctx context.Context, value string, price payments.Price, amount uint64) (*payments.Authorization, error) {
	id, err := parsePaymentIntentID(value)
	if err != nil {
		return nil, err
	}
	pi, err := r.stripe.GetPaymentIntent(ctx, id)
	if err != nil {
		var se *StripeError
		if errors.As(err, &se) {
			return nil, refuse(ReasonVerificationFailed, "no such PaymentIntent")
		}
		return nil, err
	}
	now := r.cfg.Now()
	created := time.Unix(pi.Created, 0)
	switch {
	case pi.ID != id:
		return nil, refuse(ReasonVerificationFailed, "stripe returned another PaymentIntent")
	case pi.Livemode != r.cfg.Livemode:
		return nil, refuse(ReasonVerificationFailed, "the PaymentIntent is of the other Stripe mode (live/test)")
	case pi.Metadata[r.cfg.BindKey] != r.cfg.BindValue:
		return nil, refuse(ReasonVerificationFailed, "the PaymentIntent was not made out to this gateway")
	case pi.Status == stripe.PaymentIntentStatusRequiresAction:
		return nil, refuse(ReasonPaymentActionRequired, "the PaymentIntent needs an action by the payer")
	case pi.Status != stripe.PaymentIntentStatusSucceeded:
		return nil, refuse(ReasonVerificationFailed, fmt.Sprintf("the PaymentIntent is %s, not succeeded", pi.Status))
	case string(pi.Currency) != r.cfg.Currency:
		return nil, refuse(ReasonVerificationFailed, fmt.Sprintf("the PaymentIntent is in %s, not %s", pi.Currency, r.cfg.Currency))
	case pi.Amount < int64(amount) || pi.AmountReceived < int64(amount):
		return nil, refuse(ReasonPaymentInsufficient, fmt.Sprintf("the PaymentIntent paid %d, the call costs %d", pi.AmountReceived, amount))
	case pi.Amount != int64(amount):
		return nil, refuse(ReasonVerificationFailed, fmt.Sprintf("the PaymentIntent is for %d, the call costs %d", pi.Amount, amount))
	case refunded(pi):
		return nil, refuse(ReasonVerificationFailed, "the PaymentIntent was refunded")
	case pi.LatestCharge != nil && pi.LatestCharge.Disputed:
		return nil, refuse(ReasonVerificationFailed, "the PaymentIntent's charge is disputed")
	case now.Sub(created) > r.cfg.PaymentIntentMaxAge:
		return nil, refuse(ReasonPaymentExpired, "the PaymentIntent is too old to pay a call")
	case created.Sub(now) > 5*time.Minute:
		return nil, refuse(ReasonVerificationFailed, "the PaymentIntent was created in the future")
	}
	return r.record(ctx, pi, storedPayment{Form: formMPP, ChallengeID: pi.Metadata["mpp_challenge_id"]}, price, created)
}

// refunded reports whether any of a PaymentIntent's charge was refunded: such a PaymentIntent
// pays no call, whatever its status says (a refund leaves it succeeded).
func refunded(pi *stripe.PaymentIntent) bool {
	return pi.LatestCharge != nil && (pi.LatestCharge.Refunded || pi.LatestCharge.AmountRefunded > 0)
}

// record claims a PaymentIntent presented as `MPP pi_…` (so it pays one call, in either
// form) and creates its payment, keyed by the PaymentIntent. A failure to record refunds it,
// unless a payment already records it.
func (r *Rail) record(ctx context.Context, pi *stripe.PaymentIntent, st storedPayment, price payments.Price, created time.Time) (*payments.Authorization, error) {
	log := r.cfg.Logger.With("payment_intent", pi.ID)
	key := paymentIntentKey(pi.ID)
	st.PaymentIntent, st.Amount, st.Currency, st.Livemode = pi.ID, pi.Amount, string(pi.Currency), pi.Livemode
	if pi.Customer != nil {
		st.Customer = pi.Customer.ID
	}
	if err := r.claims.Claim(ctx, key, created.Add(r.cfg.PaymentIntentMaxAge)); err != nil {
		if errors.Is(err, ledger.ErrNonceUsed) {
			return nil, refuse(ReasonVerificationFailed, "the PaymentIntent was already used")
		}
		cause := fmt.Errorf("mpp: claiming the PaymentIntent: %w", err)
		// A claim that failed does not say who holds the PaymentIntent: one that paid a call
		// already (its id is in that call's receipt) is never refunded, nor one we cannot
		// look up.
		switch used, lerr := r.paidACall(ctx, pi.ID); {
		case used:
			return nil, refuse(ReasonVerificationFailed, "the PaymentIntent was already used")
		case lerr != nil:
			log.Error("mpp: a PaymentIntent could neither be claimed nor looked up; not refunded", "err", lerr, "cause", cause)
			return nil, cause
		}
		return nil, r.unrecorded(ctx, log, pi.ID, cause)
	}
	payer := st.Customer
	if payer == "" {
		payer = st.Source
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	p := ledger.Payment{
		ID: uuid.New(), Rail: RailName, Status: ledger.StatusVerified, Network: Network, Asset: st.Currency,
		Payer: payer, PayTo: r.cfg.NetworkID, Amount: big.NewInt(pi.Amount), NonceKey: key, Payload: raw,
	}
	if err := r.book.Create(ctx, p); err != nil {
		return nil, r.unrecorded(ctx, log, pi.ID, fmt.Errorf("mpp: recording the payment: %w", errors.Join(payments.ErrUnavailable, err)))
	}
	// The authorization names only a payer Stripe vouches for (its customer): the source DID
	// is self-asserted, fine for the record, but the identity and policy stages must not
	// resolve an agent from it.
	return &payments.Authorization{Rail: RailName, Payer: st.Customer, Amount: price.Amount, Reference: p.ID.String(),
		State: &pendingPayment{ID: p.ID, Stored: st}}, nil
}

// paidACall reports whether a payment of this rail records PaymentIntent pi: keyed by it (the
// seed form) or with it as its reference (a token charge).
func (r *Rail) paidACall(ctx context.Context, pi string) (bool, error) {
	if _, err := r.book.GetByNonceKey(ctx, paymentIntentKey(pi)); !errors.Is(err, ledger.ErrNotFound) {
		return err == nil, err
	}
	_, err := r.book.GetByReference(ctx, RailName, pi)
	if errors.Is(err, ledger.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// unrecorded refunds a payment that could not be claimed or recorded: money is never kept
// without a record. cause is returned (an outage: 503, nothing charged in the end).
func (r *Rail) unrecorded(ctx context.Context, log *slog.Logger, pi string, cause error) error {
	if _, err := r.stripe.Refund(context.WithoutCancel(ctx), pi, "not_recorded"); err != nil {
		log.Error("mpp: a charge could neither be recorded nor refunded; refund it by hand", "err", err, "cause", cause)
	} else {
		log.Warn("mpp: a charge that could not be recorded was refunded", "cause", cause)
	}
	return cause
}
