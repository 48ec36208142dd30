package mpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/secureexec/secureexec/payments/ledger"
)

// recoverable lists payments nobody moved for a while (*ledger.Ledger, *ledger.Memory).
type recoverable interface {
	ListStale(ctx context.Context, age ledger.Staleness, limit int) ([]ledger.Payment, error)
}

// SearchLag is how long Reconcile keeps looking for the charge of a payment whose charge had
// no answer, before it concludes that Stripe charged nothing. Stripe's search finds a
// PaymentIntent within a minute of its creation, and within an hour during its incidents,
// which are when answers are lost.
const SearchLag = 2 * time.Hour

// Reconcile finishes what a crash or a lost answer left of MPP payments untouched for
// staleAfter, which must exceed the longest call:
//
//   - verified: charged, or perhaps charged, but the call never completed (or its completion
//     was never recorded), so the charge is refunded and the payment marked not charged —
//     when in doubt the payer gets the money back. Its PaymentIntent is the one it records; a
//     token charge that never learned its PaymentIntent (no answer, a crash) is looked up by
//     its challenge, once no resend can complete it any more: staleAfter after the challenge's
//     expiry. A PaymentIntent still processing is waited for; one that did not succeed is
//     canceled;
//   - submitted or pending: charged and delivered, so it is marked settled.
//
// A payment it must wait for is touched (RecordAttempt), so that it goes to the back of the
// list and cannot hold up the others.
func (r *Rail) Reconcile(ctx context.Context, src recoverable, staleAfter time.Duration) error {
	ps, err := src.ListStale(ctx, ledger.Staleness{Working: staleAfter, OnChain: staleAfter, Rail: RailName}, 200)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range ps {
		if p.Rail != RailName {
			continue
		}
		switch p.Status {
		case ledger.StatusVerified:
			if err := r.reconcileVerified(ctx, p, staleAfter); err != nil {
				// Touched all the same: a payment that keeps failing must not hold the head
				// of the list.
				errs = append(errs, err, r.touch(ctx, p))
			}
		case ledger.StatusSubmitted, ledger.StatusPending:
			_, err := r.book.Transition(ctx, p.ID, []ledger.Status{p.Status}, ledger.StatusSettled, ledger.Patch{})
			if err != nil && !errors.Is(err, ledger.ErrConflict) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// reconcileVerified refunds, cancels or waits for the charge of a verified payment (see
// Reconcile).
func (r *Rail) reconcileVerified(ctx context.Context, listed ledger.Payment, staleAfter time.Duration) error {
	// The list is a snapshot, and Stripe calls take time: a resend or a Settle may have moved
	// the payment since it was listed.
	p, err := r.book.Get(ctx, listed.ID)
	if err != nil {
		return err
	}
	if p.Status != ledger.StatusVerified || !p.UpdatedAt.Equal(listed.UpdatedAt) {
		return nil
	}
	var st storedPayment
	if err := json.Unmarshal(p.Payload, &st); err != nil {
		return fmt.Errorf("mpp: payment %s has an unreadable record: %w", p.ID, err)
	}
	ref := p.TxHash
	if ref == "" {
		ref = st.PaymentIntent
	}
	if ref != "" {
		pi, err := r.stripe.GetPaymentIntent(ctx, ref)
		if err != nil {
			return err
		}
		return r.closeCharges(ctx, p, []*stripe.PaymentIntent{pi}, true, false)
	}
	if st.Form != formPayment || st.ChallengeID == "" {
		return fmt.Errorf("mpp: payment %s has no PaymentIntent or challenge in its record", p.ID)
	}
	exp, err := time.Parse(time.RFC3339, st.Expires)
	if err != nil {
		return fmt.Errorf("mpp: payment %s has no challenge expiry in its record", p.ID)
	}
	now := r.cfg.Now()
	if now.Before(exp.Add(staleAfter)) {
		return r.touch(ctx, p) // a resend accepted before the expiry may still be charging or running
	}
	found, err := r.stripe.PaymentIntentsOfChallenge(ctx, st.ChallengeID)
	if err != nil {
		return err
	}
	// The challenge id is an HMAC of ours over a random nonce: whatever carries it was made
	// for this payment, under whichever binding metadata the gateway had then.
	var pis []*stripe.PaymentIntent
	for _, pi := range found {
		if pi.Metadata["mpp_challenge_id"] == st.ChallengeID && pi.Livemode == r.cfg.Livemode {
			pis = append(pis, pi)
		}
	}
	if len(pis) == 0 {
		if now.Before(exp.Add(staleAfter + SearchLag)) {
			return r.touch(ctx, p) // Stripe's search may not show it yet
		}
		return r.closeReconciled(ctx, p, "", "not charged: stripe has no PaymentIntent for the challenge")
	}
	return r.closeCharges(ctx, p, pis, false, now.Before(exp.Add(staleAfter+SearchLag)))
}

// closeCharges refunds the succeeded PaymentIntents of payment p, cancels those that can still
// move money, waits for processing ones, and marks p not charged. recorded says p recorded
// them itself; found by search, one may have paid another call in the seed form, and is then
// not refunded. patient says an unattributed claim on one may still be waited for.
func (r *Rail) closeCharges(ctx context.Context, p ledger.Payment, pis []*stripe.PaymentIntent, recorded, patient bool) error {
	var ref, reason string
	for _, pi := range pis {
		switch pi.Status {
		case stripe.PaymentIntentStatusSucceeded:
			if !recorded {
				owner, err := r.claimFor(ctx, p, pi.ID)
				switch {
				case err != nil:
					return err
				case owner == ownerUnknown && patient:
					return r.touch(ctx, p) // the seed form claims before it records its payment
				case owner == ownerOther:
					ref, reason = pi.ID, "not charged: its PaymentIntent paid another call in the seed form"
					continue
				}
			}
			if _, err := r.stripe.Refund(ctx, pi.ID, "abandoned"); err != nil {
				return err
			}
			ref, reason = pi.ID, "refunded: abandoned: the call did not complete"
			if !recorded {
				reason = "refunded: abandoned: the charge's answer was lost and no resend completed the call"
			}
			continue
		case stripe.PaymentIntentStatusProcessing:
			return r.touch(ctx, p) // it may still succeed
		case stripe.PaymentIntentStatusCanceled:
		default:
			if err := r.stripe.Cancel(ctx, pi.ID); err != nil {
				return err
			}
		}
		if ref == "" {
			ref, reason = pi.ID, fmt.Sprintf("not charged: the PaymentIntent is %s", pi.Status)
		}
	}
	return r.closeReconciled(ctx, p, ref, reason)
}

// The owners claimFor tells apart.
const (
	ownerThis    = iota // the claim is p's (made now, or by p's charge before a crash)
	ownerOther          // a payment of its own, presented as `MPP pi_…`, holds it: it paid that call
	ownerUnknown        // claimed, and no payment records it (yet)
)

// claimFor claims a PaymentIntent found for payment p, or tells who holds its claim. The
// seed form claims before it creates its payment, and p's own charge claims before it records
// its reference: an unattributed claim is either, and only time tells them apart.
func (r *Rail) claimFor(ctx context.Context, p ledger.Payment, pi string) (int, error) {
	err := r.claimPaymentIntent(ctx, pi)
	if err == nil {
		return ownerThis, nil
	}
	if !errors.Is(err, ledger.ErrNonceUsed) {
		return 0, err
	}
	other, err := r.book.GetByNonceKey(ctx, paymentIntentKey(pi))
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return ownerUnknown, nil
	case err != nil:
		return 0, err
	case other.ID == p.ID:
		return ownerThis, nil
	}
	return ownerOther, nil
}

// closeReconciled marks a reconciled payment not charged; a payment that moved meanwhile is
// left as it is.
func (r *Rail) closeReconciled(ctx context.Context, p ledger.Payment, pi, reason string) error {
	_, err := r.book.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified}, ledger.StatusNotCharged,
		ledger.Patch{TxHash: pi, ErrorReason: reason})
	if errors.Is(err, ledger.ErrConflict) {
		return nil
	}
	return err
}

// touch records that reconciliation waits for a payment.
func (r *Rail) touch(ctx context.Context, p ledger.Payment) error {
	_, err := r.book.RecordAttempt(ctx, p.ID, ledger.StatusVerified)
	if errors.Is(err, ledger.ErrConflict) {
		return nil
	}
	return err
}

// RunReconciler runs Reconcile every interval until ctx is done; its caller owns the goroutine
// and stops it by cancelling ctx. It returns ctx's error.
func (r *Rail) RunReconciler(ctx context.Context, src recoverable, every, staleAfter time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := r.Reconcile(ctx, src, staleAfter); err != nil && ctx.Err() == nil {
				r.cfg.Logger.Warn("mpp: reconciliation", "err", err)
			}
		}
	}
}
