package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/payments/ledger"
	"github.com/secureexec/secureexec/payments/mpp"
)

// StripeMarkStore is what the Stripe webhook records in the payments ledger; *ledger.Ledger and
// *ledger.Memory provide it.
type StripeMarkStore interface {
	GetByNonceKey(ctx context.Context, key string) (ledger.Payment, error)
	GetByReference(ctx context.Context, rail, ref string) (ledger.Payment, error)
	MarkPayment(ctx context.Context, m ledger.Mark) (bool, error)
	FlagPayer(ctx context.Context, f ledger.Flag) (bool, error)
}

// StripeMarks is the gateway's side of POST /webhooks/stripe: it records a refund or dispute
// against the MPP payment its PaymentIntent paid (mpp.PaymentMarker), and flags the payer
// (mpp.AgentFlagger). Both are idempotent on the event id, as the webhook requires.
type StripeMarks struct {
	store StripeMarkStore
	log   *slog.Logger
}

// NewStripeMarks returns the webhook's marker and flagger over store.
func NewStripeMarks(store StripeMarkStore, log *slog.Logger) *StripeMarks {
	if log == nil {
		log = slog.Default()
	}
	return &StripeMarks{store: store, log: log}
}

// mppNonceKey is the nonce key the MPP rail records a payment presented as `MPP pi_…` under:
// "mpp:" + PaymentIntent id (payments/mpp doc).
func mppNonceKey(paymentIntent string) string { return "mpp:" + paymentIntent }

// paymentOf finds the MPP payment a PaymentIntent paid: by its nonce key (`MPP pi_…`), else by
// its reference (a payment made with a Shared Payment Token is keyed by its challenge and
// records its PaymentIntent when it is settled or refunded).
func (s *StripeMarks) paymentOf(ctx context.Context, paymentIntent string) (ledger.Payment, error) {
	p, err := s.store.GetByNonceKey(ctx, mppNonceKey(paymentIntent))
	if errors.Is(err, ledger.ErrNotFound) {
		return s.store.GetByReference(ctx, mpp.RailName, paymentIntent)
	}
	return p, err
}

// MarkPayment implements mpp.PaymentMarker. A PaymentIntent the gateway never recorded is not
// found (another integration of the same Stripe account): nothing is marked.
func (s *StripeMarks) MarkPayment(ctx context.Context, m mpp.Mark) (mpp.Marked, error) {
	p, err := s.paymentOf(ctx, m.PaymentIntent)
	if errors.Is(err, ledger.ErrNotFound) {
		return mpp.Marked{}, nil
	}
	if err != nil {
		return mpp.Marked{}, err
	}
	if p.Rail != mpp.RailName {
		return mpp.Marked{}, nil
	}
	kind := ledger.MarkRefunded
	if m.Kind == mpp.MarkDisputed {
		kind = ledger.MarkDisputed
	}
	if _, err := s.store.MarkPayment(ctx, ledger.Mark{EventID: m.EventID, PaymentID: p.ID, Kind: kind, Reference: m.Charge,
		Dispute: m.Dispute, Amount: max(m.Amount, 0), Currency: m.Currency, Reason: m.Reason, OccurredAt: m.At}); err != nil {
		return mpp.Marked{}, fmt.Errorf("gateway: marking payment %s %s: %w", p.ID, kind, err)
	}
	out := mpp.Marked{Found: true, Payer: payerOf(p),
		// The gateway refunds a charge itself only while its payment is verified (Void, or
		// Reconcile of an abandoned call) and then moves it to not_charged: Stripe's event
		// for that refund may arrive between the two, so both statuses mean "our own refund".
		Voided: p.Status == ledger.StatusNotCharged || p.Status == ledger.StatusVerified}
	if p.JobID != uuid.Nil {
		out.JobID = p.JobID.String()
	}
	return out, nil
}

// payerOf is the payer of payment p as its rail vouches for it, which a flag must name and
// GET /payments/{id} shows: for MPP, the Stripe customer. A payment made with a Shared Payment
// Token is recorded before Stripe names the customer, under the credential's self-asserted
// source, and keeps the customer in its record.
func payerOf(p ledger.Payment) string {
	var stored struct {
		Customer string `json:"customer"`
	}
	if json.Unmarshal(p.Payload, &stored) == nil && stored.Customer != "" {
		return stored.Customer
	}
	return p.Payer
}

// FlagAgent implements mpp.AgentFlagger: the payer of the payment is flagged, so that
// DenyFlagged refuses its next calls. A payment that names no payer flags nobody.
func (s *StripeMarks) FlagAgent(ctx context.Context, f mpp.Flag) error {
	if f.Payer == "" {
		s.log.Warn("stripe: a paid call's money was taken back, but its payment names no payer to flag",
			"payment_intent", f.PaymentIntent, "reason", f.Reason)
		return nil
	}
	p, err := s.paymentOf(ctx, f.PaymentIntent)
	if err != nil && !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	jobID, _ := uuid.Parse(f.JobID)
	_, err = s.store.FlagPayer(ctx, ledger.Flag{EventID: f.EventID, Payer: f.Payer, PaymentID: p.ID, JobID: jobID, Reason: f.Reason})
	return err
}

// FlagChecker says whether a payer is flagged; *ledger.Ledger and *ledger.Memory provide it.
type FlagChecker interface {
	Flagged(ctx context.Context, payer string) (ledger.Flag, bool, error)
}

// ReasonPayerFlagged is the IAM reason of a call refused because its payer is flagged.
const ReasonPayerFlagged = "payer_flagged"

// flagTimeout bounds the flag lookup on the call path.
const flagTimeout = 2 * time.Second

// flagGate is the IAM stage with the flag store in front of it.
type flagGate struct {
	next  Authorizer
	flags FlagChecker
	log   *slog.Logger
}

// DenyFlagged returns the IAM stage next, preceded by a check of the payer's flags: a payer
// whose earlier payment was refunded or disputed outside the gateway is denied by policy
// (reason payer_flagged), and the rail voids the payment. Only payers a rail proved are
// checked (an MPP payment's Stripe customer, an x402 signer), never a self-asserted id. When
// the flag store cannot answer the call proceeds to next: a flag is a risk signal, and the
// payment itself was verified.
func DenyFlagged(next Authorizer, flags FlagChecker, log *slog.Logger) Authorizer {
	if log == nil {
		log = slog.Default()
	}
	return &flagGate{next: next, flags: flags, log: log}
}

// Decide implements Authorizer.
func (g *flagGate) Decide(ctx context.Context, req identity.Request) identity.Outcome {
	if req.Payer == "" || req.Internal {
		return g.next.Decide(ctx, req)
	}
	fctx, cancel := context.WithTimeout(ctx, flagTimeout)
	f, flagged, err := g.flags.Flagged(fctx, req.Payer)
	cancel()
	switch {
	case err != nil:
		g.log.Warn("payer flags unavailable; deciding without them", "job_id", req.JobID, "err", err)
	case flagged:
		return identity.Outcome{Decision: identity.DecisionDenied, Source: identity.SourcePolicy, Reason: ReasonPayerFlagged,
			Violations: []string{"an earlier payment of this payer was taken back outside the gateway (" + f.Reason + ")"}}
	}
	return g.next.Decide(ctx, req)
}
