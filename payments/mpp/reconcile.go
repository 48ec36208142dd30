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
	ListRecoverable(ctx context.Context, olderThan time.Duration, limit int) ([]ledger.Payment, error)
}

// SearchLag is how long after a challenge's expiry Reconcile keeps looking for the charge of
// a payment whose charge had no answer, before it concludes that Stripe charged nothing.
// Stripe's search finds a PaymentIntent within a minute of its creation, and within an hour
// during its incidents, which are when answers are lost.
const SearchLag = 2 * time.Hour

// Reconcile finishes what a crash or a lost answer left of MPP payments untouched for
// staleAfter:
//
//   - verified, with its PaymentIntent (`MPP pi_…`, or a token's charge that recorded it):
//     charged, but the call never completed (or its completion was never recorded), so it is
//     refunded and marked not charged — when in doubt the payer gets the money back;
//   - verified, paid with a token whose charge named no PaymentIntent (charge.go: no answer, a
//     crash, a PaymentIntent still processing): once its challenge has expired, so that no
//     resend can complete it, the PaymentIntents Stripe made for the challenge are looked up: a
//     succeeded one is refunded, one still processing is waited for, any other is canceled, and
//     the payment is marked not charged, with the PaymentIntent as its reference;
//   - submitted or pending: charged and delivered, so it is marked settled.
//
// A payment it must wait for is touched (RecordAttempt), so that it goes to the back of the
// list and cannot hold up the others.
func (r *Rail) Reconcile(ctx context.Context, src recoverable, staleAfter time.Duration) error {
	ps, err := src.ListRecoverable(ctx, staleAfter, 200)
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
			var st storedPayment
			if err := json.Unmarshal(p.Payload, &st); err != nil {
				errs = append(errs, fmt.Errorf("mpp: payment %s has an unreadable record: %w", p.ID, err))
				continue
			}
			switch {
			case st.PaymentIntent != "":
				errs = append(errs, r.refundAbandoned(ctx, p, st.PaymentIntent))
			case p.TxHash != "":
				errs = append(errs, r.refundAbandoned(ctx, p, p.TxHash))
			case st.Form == formPayment && st.ChallengeID != "":
				errs = append(errs, r.reconcileCharge(ctx, p, st))
			default:
				errs = append(errs, fmt.Errorf("mpp: payment %s has no PaymentIntent or challenge in its record", p.ID))
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

// refundAbandoned refunds a charged payment whose call never completed.
func (r *Rail) refundAbandoned(ctx context.Context, p ledger.Payment, pi string) error {
	if _, err := r.stripe.Refund(ctx, pi, "abandoned"); err != nil {
		return err
	}
	return r.closeReconciled(ctx, p, pi, "refunded: abandoned: the call did not complete")
}

// reconcileCharge settles a token charge left verified (see Reconcile).
func (r *Rail) reconcileCharge(ctx context.Context, p ledger.Payment, st storedPayment) error {
	exp, err := time.Parse(time.RFC3339, st.Expires)
	if err != nil {
		return fmt.Errorf("mpp: payment %s has no challenge expiry in its record", p.ID)
	}
	now := r.cfg.Now()
	if now.Before(exp) {
		return r.touch(ctx, p) // the payer may still resend the credential
	}
	pis, err := r.stripe.PaymentIntentsOfChallenge(ctx, st.ChallengeID)
	if err != nil {
		return err
	}
	var ref string
	reason := "not charged: stripe made no PaymentIntent for the challenge"
	for _, pi := range pis {
		if pi.Metadata["mpp_challenge_id"] != st.ChallengeID || pi.Metadata[r.cfg.BindKey] != r.cfg.BindValue || pi.Livemode != r.cfg.Livemode {
			continue
		}
		switch pi.Status {
		case stripe.PaymentIntentStatusSucceeded:
			if _, err := r.stripe.Refund(ctx, pi.ID, "abandoned"); err != nil {
				return err
			}
			ref, reason = pi.ID, "refunded: abandoned: the charge's answer was lost and no resend completed the call"
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
	if ref == "" && now.Before(exp.Add(SearchLag)) {
		return r.touch(ctx, p) // Stripe's search may not show it yet
	}
	return r.closeReconciled(ctx, p, ref, reason)
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
