package mpp

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
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

// A Shared Payment Token is charged in Verify, and Stripe's answer to that charge can be lost:
// every attempt times out after Stripe took the money. So the charge is written ahead. Before
// Stripe is asked, the challenge is claimed and its payment created, verified, keyed by the
// challenge and holding a digest of the token. Then:
//
//   - Stripe charged: the payment goes on as every payment does (Settle, or Void's refund);
//   - Stripe refused: the payment is closed not_charged;
//   - no answer: the payment stays verified with one attempt counted, and the request gets 503.
//     A resend of the same credential before the challenge expires charges again with the same
//     idempotency key, and Stripe answers with the first charge's outcome: the payer pays
//     once, for the call the resend runs. Without a resend, Reconcile finds the PaymentIntent
//     by its challenge once the challenge has expired, and refunds it.

// challengeKey is the nonce key of a challenge: claimed once, and the key of its payment.
func challengeKey(id string) string { return "mpp:challenge:" + id }

// paymentIntentKey is the claim that lets a PaymentIntent pay one call, in either form, and
// the key of a payment presented as `MPP pi_…`.
func paymentIntentKey(id string) string { return "mpp:" + id }

// claimPaymentIntent claims a PaymentIntent the rail made, so that it pays one call only: the
// claim lasts as long as the seed form would accept the PaymentIntent.
func (r *Rail) claimPaymentIntent(ctx context.Context, id string) error {
	return r.claims.Claim(ctx, paymentIntentKey(id), r.cfg.Now().Add(r.cfg.PaymentIntentMaxAge))
}

// tokenDigest is what the ledger keeps of a Shared Payment Token: enough to recognise a resend
// of the same credential, nothing to spend.
func tokenDigest(spt string) string {
	sum := sha256.Sum256([]byte(spt))
	return hex.EncodeToString(sum[:])
}

// charge is a token charge written ahead: its payment, and what the payment stores.
type charge struct {
	id      uuid.UUID
	stored  storedPayment
	resumed bool // a resend of a credential whose charge's answer was lost
}

// challengeUsed is the refusal of a credential whose challenge paid, or is paying, a call.
func challengeUsed() error { return refuse(ReasonInvalidChallenge, "the challenge was already used") }

// verifyCredential is Verify of a `Payment` credential: it checks the echoed challenge, writes
// the charge ahead, charges the token, and takes Stripe's answer.
func (r *Rail) verifyCredential(ctx context.Context, token string, price payments.Price, amount uint64) (*payments.Authorization, error) {
	cred, err := DecodeCredential(token)
	if err != nil {
		return nil, err
	}
	ch := cred.Challenge
	exp, err := r.checkChallenge(ch, amount, r.cfg.Now())
	if err != nil {
		return nil, err
	}
	sp, err := DecodeStripePayload(cred.Payload)
	if err != nil {
		return nil, err
	}
	c, err := r.beginCharge(ctx, cred, sp, amount, exp)
	if err != nil {
		return nil, err
	}
	log := r.cfg.Logger.With("payment", c.id, "challenge_id", ch.ID)
	pi, err := r.stripe.ChargeSPT(ctx, ChargeRequest{
		ChallengeID: ch.ID, SPT: sp.SPT, Amount: int64(amount), Currency: r.cfg.Currency, Resumed: c.resumed,
		Metadata: map[string]string{
			"machine_payment": "true", "mpp_sdk": "secureexec", "mpp_intent": IntentCharge,
			"mpp_challenge_id": ch.ID, r.cfg.BindKey: r.cfg.BindValue,
		},
	})
	if err != nil {
		return nil, r.chargeFailed(ctx, log, c, err)
	}
	return r.answered(ctx, log.With("payment_intent", pi.ID), c, pi, price, amount)
}

// answered takes Stripe's answer to a charge: a succeeded PaymentIntent pays the call; any
// other is refused, and canceled when it could still move money.
func (r *Rail) answered(ctx context.Context, log *slog.Logger, c charge, pi *stripe.PaymentIntent, price payments.Price, amount uint64) (*payments.Authorization, error) {
	switch pi.Status {
	case stripe.PaymentIntentStatusSucceeded:
		return r.charged(ctx, log, c, pi, price, amount)
	case stripe.PaymentIntentStatusRequiresAction:
		r.cancelAndClose(ctx, log, c.id, pi)
		return nil, refuse(ReasonPaymentActionRequired, "the payment needs an action by the payer; the PaymentIntent was canceled")
	case stripe.PaymentIntentStatusProcessing:
		r.awaitProcessing(ctx, log, c.id, pi.ID)
	case stripe.PaymentIntentStatusCanceled:
		r.close(ctx, log, c.id, pi.ID, "payment intent canceled")
	default:
		r.cancelAndClose(ctx, log, c.id, pi)
	}
	return nil, refuse(ReasonVerificationFailed, fmt.Sprintf("the PaymentIntent is %s, not succeeded", pi.Status))
}

// awaitProcessing keeps a refused PaymentIntent that is still processing for Reconcile: it
// may yet succeed, and then the money must go back. The payment stays verified with the
// PaymentIntent as its reference, and the PaymentIntent is claimed so that it cannot pay a
// call in the seed form meanwhile.
func (r *Rail) awaitProcessing(ctx context.Context, log *slog.Logger, id uuid.UUID, pi string) {
	log.Warn("mpp: a refused PaymentIntent is still processing; reconciliation refunds it if it succeeds")
	if err := r.claimPaymentIntent(ctx, pi); err != nil && !errors.Is(err, ledger.ErrNonceUsed) {
		log.Warn("mpp: claiming a processing PaymentIntent", "err", err)
	}
	if _, err := r.book.RecordReference(ctx, id, ledger.StatusVerified, pi, nil); err != nil {
		log.Warn("mpp: recording a processing PaymentIntent; reconciliation finds it through the challenge", "err", err)
	}
}

// beginCharge writes the charge ahead: it claims the challenge and records its payment. A
// challenge already claimed is refused, unless this is a resend of the credential that claimed
// it and that credential's charge ended without an answer: then the charge is resumed.
func (r *Rail) beginCharge(ctx context.Context, cred *Credential, sp StripePayload, amount uint64, exp time.Time) (charge, error) {
	key := challengeKey(cred.Challenge.ID)
	c := charge{id: uuid.New(), stored: storedPayment{
		Form: formPayment, ChallengeID: cred.Challenge.ID, Expires: cred.Challenge.Expires, TokenDigest: tokenDigest(sp.SPT),
		Amount: int64(amount), Currency: r.cfg.Currency, Livemode: r.cfg.Livemode, Source: cred.Source, ExternalID: sp.ExternalID,
	}}
	err := r.claims.Claim(ctx, key, exp)
	if err == nil {
		raw, merr := json.Marshal(c.stored)
		if merr != nil {
			return charge{}, merr
		}
		// The payer is the self-asserted source until Stripe names a customer: fine for the
		// record, never used to resolve an agent (see charged).
		err = r.book.Create(ctx, ledger.Payment{
			ID: c.id, Rail: RailName, Status: ledger.StatusVerified, Network: Network, Asset: r.cfg.Currency,
			Payer: cred.Source, PayTo: r.cfg.NetworkID, Amount: new(big.Int).SetUint64(amount), NonceKey: key, Payload: raw,
		})
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, ledger.ErrNonceUsed) {
			// Claimed but not recorded: nothing is charged, and a resend is refused (the
			// payer answers a new challenge).
			return charge{}, fmt.Errorf("mpp: recording the charge before it is made: %w", errors.Join(payments.ErrUnavailable, err))
		}
	}
	if !errors.Is(err, ledger.ErrNonceUsed) {
		return charge{}, fmt.Errorf("mpp: claiming the challenge: %w", err)
	}
	return r.resumeCharge(ctx, key, c.stored.TokenDigest)
}

// resumeCharge finds the payment of a used challenge and resumes its charge when it is this
// credential's (same token) and no request is charging it any more: it is verified, with an
// attempt counted (its answer was lost, or Reconcile found it untouched for a whole call),
// where a charge still running has none. Anything else is the challenge used.
func (r *Rail) resumeCharge(ctx context.Context, key, digest string) (charge, error) {
	prev, err := r.book.GetByNonceKey(ctx, key)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return charge{}, challengeUsed()
	case err != nil:
		return charge{}, fmt.Errorf("mpp: reading the challenge's charge: %w", err)
	}
	var st storedPayment
	if json.Unmarshal(prev.Payload, &st) != nil || prev.Rail != RailName || prev.Status != ledger.StatusVerified ||
		prev.Attempts == 0 || subtle.ConstantTimeCompare([]byte(st.TokenDigest), []byte(digest)) != 1 {
		return charge{}, challengeUsed()
	}
	// Counting the resend also holds Reconcile off this payment for as long as a call takes.
	if _, err := r.book.RecordAttempt(ctx, prev.ID, ledger.StatusVerified); err != nil {
		if errors.Is(err, ledger.ErrConflict) {
			return charge{}, challengeUsed()
		}
		return charge{}, fmt.Errorf("mpp: resuming the challenge's charge: %w", err)
	}
	return charge{id: prev.ID, stored: st, resumed: true}, nil
}

// chargeFailed answers a create+confirm that returned no PaymentIntent. A refusal of a first
// charge closes the payment: no money moved. A refusal of a resumed charge proves nothing of
// the first one (Stripe refuses a key reused with other parameters, as a replica of another
// configuration sends), so its payment stays for Reconcile. No answer leaves the payment
// verified, with an attempt counted so that a resend of the credential resumes it, and is an
// outage (503).
func (r *Rail) chargeFailed(ctx context.Context, log *slog.Logger, c charge, err error) error {
	var se *StripeError
	switch {
	case c.resumed && errors.As(err, &se):
		log.Warn("mpp: stripe refused a resumed charge; reconciliation settles the first one", "err", err)
	case errors.Is(err, ErrReplayed):
		// An earlier request with this key that is not this payment's: what it charged paid
		// for what it was sent for.
		r.close(ctx, log, c.id, "", "stripe replayed another request's charge")
	case errors.As(err, &se):
		r.close(ctx, log, c.id, se.PaymentIntent, "refused by stripe: "+se.Type+" "+se.Code+" "+se.DeclineCode)
	default:
		log.Warn("mpp: the charge's outcome is unknown; a resend of the same credential completes it, else reconciliation refunds it", "err", err)
		if _, terr := r.book.RecordAttempt(context.WithoutCancel(ctx), c.id, ledger.StatusVerified); terr != nil {
			log.Warn("mpp: a charge without an answer could not be marked resumable; reconciliation refunds it", "err", terr)
		}
		return err
	}
	return chargeRefusal(err)
}

// charged takes a succeeded charge: its PaymentIntent is claimed, so that it pays this call
// only, recorded as the payment's reference, and checked to be what the challenge asked.
func (r *Rail) charged(ctx context.Context, log *slog.Logger, c charge, pi *stripe.PaymentIntent, price payments.Price, amount uint64) (*payments.Authorization, error) {
	if err := r.claimPaymentIntent(ctx, pi.ID); err != nil {
		if !errors.Is(err, ledger.ErrNonceUsed) {
			return nil, r.refundUnrecorded(ctx, log, c.id, pi.ID, fmt.Errorf("mpp: claiming the PaymentIntent: %w", err))
		}
		if c.resumed {
			// The request this resend raced, or the one that crashed, claimed it: the charge
			// pays that call, or Reconcile refunds it.
			return nil, challengeUsed()
		}
		log.Error("mpp: a PaymentIntent created for this challenge was already used")
		return nil, refuse(ReasonVerificationFailed, "the PaymentIntent was already used")
	}
	st := c.stored
	st.PaymentIntent, st.Livemode = pi.ID, pi.Livemode
	if pi.Customer != nil {
		st.Customer = pi.Customer.ID
	}
	pending := &pendingPayment{ID: c.id, Stored: st}
	raw, _ := json.Marshal(st) // strings and numbers: it always encodes
	if _, err := r.book.RecordReference(ctx, c.id, ledger.StatusVerified, pi.ID, raw); errors.Is(err, ledger.ErrConflict) {
		// The payment moved while Stripe charged: Reconcile closed it, and refunded this
		// PaymentIntent. The call is not served.
		log.Error("mpp: a charge's payment was closed while it was charged", "err", err)
		return nil, challengeUsed()
	} else if err != nil {
		// Settle tries again; until then Reconcile finds the charge through the challenge,
		// and the webhook does not find the payment.
		log.Warn("mpp: recording the PaymentIntent of a charge", "err", err)
		pending.unstored = true
	}
	// The authorization names only a payer Stripe vouches for (its customer): the source DID
	// is self-asserted, and the identity and policy stages must not resolve an agent from it.
	auth := &payments.Authorization{Rail: RailName, Payer: st.Customer, Amount: price.Amount, Reference: c.id.String(),
		State: pending}
	if pi.Amount != int64(amount) || string(pi.Currency) != r.cfg.Currency {
		log.Error("mpp: stripe charged another amount than asked; refunding", "amount", pi.Amount, "currency", pi.Currency, "want", amount)
		if verr := r.Void(ctx, auth, "amount_mismatch"); verr != nil {
			log.Error("mpp: refunding a mischarged PaymentIntent failed; reconciliation retries it", "err", verr)
		}
		return nil, refuse(ReasonVerificationFailed, "stripe charged another amount or currency than the challenge asked")
	}
	return auth, nil
}

// refundUnrecorded refunds a charge whose PaymentIntent could not be claimed: money is never
// kept for a call that cannot run. cause (an outage: 503) is returned.
func (r *Rail) refundUnrecorded(ctx context.Context, log *slog.Logger, id uuid.UUID, pi string, cause error) error {
	if _, err := r.stripe.Refund(context.WithoutCancel(ctx), pi, "not_recorded"); err != nil {
		log.Error("mpp: a charge that could not be claimed was not refunded; reconciliation refunds it", "err", err, "cause", cause)
		return cause
	}
	log.Warn("mpp: a charge that could not be claimed was refunded", "cause", cause)
	r.close(ctx, log, id, pi, "refunded: not_recorded")
	return cause
}

// close records that a charge keeps no money: refused, canceled or refunded. pi, when there is
// one, is recorded as the payment's reference. A failure is logged: the payment stays
// verified, and Reconcile closes it.
func (r *Rail) close(ctx context.Context, log *slog.Logger, id uuid.UUID, pi, reason string) {
	_, err := r.book.Transition(context.WithoutCancel(ctx), id, []ledger.Status{ledger.StatusVerified}, ledger.StatusNotCharged,
		ledger.Patch{TxHash: pi, ErrorReason: reason})
	if err != nil {
		log.Warn("mpp: recording a charge that keeps no money; reconciliation closes it", "err", err)
	}
}

// chargeRefusal turns a refused create+confirm into the rail's answer.
func chargeRefusal(err error) error {
	var se *StripeError
	switch {
	case errors.Is(err, ErrReplayed):
		return refuse(ReasonVerificationFailed, "this payment was already processed")
	case errors.As(err, &se) && se.Type == string(stripe.ErrorTypeCard):
		d := "the payment was declined"
		if se.DeclineCode != "" {
			d += " (" + se.DeclineCode + ")"
		}
		return refuse(ReasonVerificationFailed, d)
	case errors.As(err, &se):
		code := se.Code
		if code == "" {
			code = se.Type
		}
		return refuse(ReasonVerificationFailed, "stripe refused the shared payment token: "+code)
	}
	return err
}

// cancelAndClose cancels a PaymentIntent the rail refused, so that it can never move money
// (a payer completing its action later), and closes its payment. A cancel that fails leaves
// the payment verified with the PaymentIntent as its reference: Reconcile cancels it, or
// refunds it if it succeeded meanwhile.
func (r *Rail) cancelAndClose(ctx context.Context, log *slog.Logger, id uuid.UUID, pi *stripe.PaymentIntent) {
	if err := r.stripe.Cancel(context.WithoutCancel(ctx), pi.ID); err != nil {
		log.Error("mpp: canceling a refused PaymentIntent failed; reconciliation retries it", "err", err)
		if _, err := r.book.RecordReference(context.WithoutCancel(ctx), id, ledger.StatusVerified, pi.ID, nil); err != nil {
			log.Warn("mpp: recording a refused PaymentIntent; reconciliation finds it through the challenge", "err", err)
		}
		return
	}
	r.close(ctx, log, id, pi.ID, fmt.Sprintf("payment intent %s: canceled", pi.Status))
}
