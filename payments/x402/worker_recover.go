package x402

import (
	"context"
	"errors"
	"fmt"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments/ledger"
)

// Reconcile finishes what a crash or a slow chain left: verified payments whose call never
// completed are marked not charged; submitted and pending ones are re-broadcast from their
// recorded bytes and settled from their receipts. It never signs a new transaction for a
// payment that has one recorded.
func (w *Worker) Reconcile(ctx context.Context) error {
	ps, err := w.recovery.ListStale(ctx, ledger.Staleness{Working: w.cfg.StaleAfter, OnChain: w.cfg.OnChainAfter, Rail: RailName}, 200)
	if err != nil {
		return err
	}
	batches := map[uuid.UUID][]ledger.Payment{}
	var errs []error
	for _, p := range ps {
		switch {
		case p.Rail != RailName:
			continue
		case p.Status == ledger.StatusVerified:
			_, err := w.recovery.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified}, ledger.StatusNotCharged,
				ledger.Patch{ErrorReason: "abandoned: the call did not complete, no result was delivered"})
			if err != nil && !errors.Is(err, ledger.ErrConflict) {
				errs = append(errs, err)
			} else if err == nil {
				w.release(ctx, false, p) // abandoned: its money never moves
			}
		case p.Status == ledger.StatusSettling || (p.Status == ledger.StatusPending && len(p.RawTx) == 0 && p.BatchID == uuid.Nil):
			// Handed to a facilitator: no transaction of ours to re-broadcast.
			if w.cfg.Facilitator == nil {
				errs = append(errs, fmt.Errorf("x402: payment %s was settled through a facilitator, and X402_FACILITATOR_URL is not set", p.ID))
				continue
			}
			errs = append(errs, w.cfg.Facilitator.reconcile(ctx, p))
			w.releaseIfFinal(ctx, p)
		case w.sender == nil:
			errs = append(errs, fmt.Errorf("x402: payment %s is %s with our own transaction, and there is no settlement key to finish it", p.ID, p.Status))
		case p.BatchID != uuid.Nil:
			batches[p.BatchID] = append(batches[p.BatchID], p)
		default:
			errs = append(errs, w.reconcileSingle(ctx, p))
		}
	}
	for id, members := range batches {
		errs = append(errs, w.reconcileBatch(ctx, id, members))
	}
	return errors.Join(errs...)
}

func (w *Worker) reconcileSingle(ctx context.Context, p ledger.Payment) error {
	a, err := authorizationOf(p)
	if err != nil {
		return err
	}
	if len(p.RawTx) == 0 {
		return fmt.Errorf("x402: payment %s is %s without a recorded transaction", p.ID, p.Status)
	}
	hash, err := w.sender.Rebroadcast(ctx, p.RawTx)
	if errors.Is(err, chain.ErrTxDead) {
		// Another transaction took its nonce: it will never be mined. Its authorization is
		// signed again only if the chain shows it unused; used, the transaction that used it
		// settled the payment.
		w.counts.dead.Add(1)
		done, err := w.settleUsed(ctx, p, a)
		if err != nil || done {
			return err
		}
		w.log.Warn("x402: settlement transaction is dead; replacing it", "payment", p.ID, "tx", p.TxHash)
		_, err = w.settler.resend(ctx, p, a)
		w.releaseIfFinal(ctx, p)
		return ignoreRefusal(err)
	}
	outbid := errors.Is(err, chain.ErrUnderpriced) // the node refuses it now: the base fee outgrew it
	if err != nil && !outbid {
		return err
	}
	var receipt *types.Receipt
	if !outbid {
		receipt, err = w.waitReceipt(ctx, hash)
		outbid = err != nil && w.outbid(ctx, p.RawTx, err)
	}
	if outbid {
		w.log.Warn("x402: settlement transaction outbid by the market; signing it again at its nonce with higher fees", "payment", p.ID, "tx", p.TxHash)
		if hash, err = w.settler.replace(ctx, p, a); err != nil {
			// Nothing broadcast, or the nonce taken meanwhile: the next pass reads what the
			// ledger recorded (the successor, or still the first) and goes on from there.
			return fmt.Errorf("x402: payment %s: replacing outbid transaction %s: %w", p.ID, p.TxHash, err)
		}
		w.counts.replaced.Add(1)
		p.TxHash = hash.Hex()
		receipt, err = w.waitReceipt(ctx, hash)
	}
	if err != nil {
		// Still no receipt: pending, and touched, so that the next pass reads other stuck
		// payments first instead of waiting on the same page again.
		if p.Status == ledger.StatusSubmitted {
			_, err = w.recovery.Transition(ctx, p.ID, []ledger.Status{ledger.StatusSubmitted}, ledger.StatusPending, ledger.Patch{Attempt: true})
		} else {
			_, err = w.recovery.RecordAttempt(ctx, p.ID, p.Status)
		}
		if errors.Is(err, ledger.ErrConflict) {
			err = nil // it moved meanwhile: whoever moved it has its receipt
		}
		return err
	}
	to, patch, err := decideReceipt(ctx, w.uses, w.cfg.Network.Asset, a, receipt)
	if err != nil {
		return fmt.Errorf("x402: payment %s: %w", p.ID, err)
	}
	if err := recordOutcome(ctx, w.recovery, w.log, p.ID, p.TxHash, inFlight, to, patch); err != nil {
		return err
	}
	w.release(ctx, to == ledger.StatusSettled, p)
	return nil
}

// settleUsed asks the chain whether the authorization of p, whose transaction settled nothing
// (dead, reverted, never sent), is still unused. Used, or canceled, p is recorded from what the
// chain says (the transaction that used it, whoever sent it) and its hold released: done.
// Unused, nothing is recorded: it may be signed again. Without a chain to ask, it may not.
func (w *Worker) settleUsed(ctx context.Context, p ledger.Payment, a chain.Authorization) (done bool, err error) {
	if w.uses == nil {
		return false, fmt.Errorf("x402: payment %s: its transaction settled nothing, and there is no chain reader to check that its authorization is unused before signing it again", p.ID)
	}
	use, err := w.uses.find(ctx, a)
	if err != nil {
		return false, fmt.Errorf("x402: payment %s: %w", p.ID, err)
	}
	if !use.Used {
		return false, nil
	}
	to, patch := useOutcome(w.cfg.Network.Asset, a, use, ledger.Patch{})
	w.log.Warn("x402: the chain shows the authorization of a payment to sign again already used; recording what it says", "payment", p.ID,
		"recorded_tx", p.TxHash, "tx", patch.TxHash, "status", to, "canceled", use.Canceled)
	if err := recordOutcome(ctx, w.recovery, w.log, p.ID, p.TxHash, inFlight, to, patch); err != nil {
		return false, err
	}
	w.release(ctx, to == ledger.StatusSettled, p)
	return true, nil
}

func (w *Worker) reconcileBatch(ctx context.Context, batchID uuid.UUID, members []ledger.Payment) error {
	b, err := w.recovery.GetBatch(ctx, batchID)
	if errors.Is(err, ledger.ErrNotFound) {
		// The batch was claimed but its transaction never recorded, so never broadcast: sign
		// it now, for the first time, for every member. members is only what this page of
		// recoverable payments holds; a transaction signed for those alone would be recorded
		// for the whole batch, and the members it left out would be failed by its receipt.
		// Moving them all to a new batch fetches every one.
		return w.resettle(ctx, batchID, nil)
	}
	if err != nil {
		return err
	}
	auths := make([]chain.Authorization, 0, len(members))
	for _, p := range members {
		a, err := authorizationOf(p)
		if err != nil {
			return err
		}
		auths = append(auths, a)
	}
	hash, err := w.sender.Rebroadcast(ctx, b.RawTx)
	switch {
	case errors.Is(err, chain.ErrTxDead):
		// Another transaction took its nonce: it will never be mined and settled none of
		// them. Its members go to a new batch.
		w.log.Warn("x402: batch transaction is dead; settling its payments in a new batch", "batch", batchID, "tx", b.TxHash)
		w.counts.dead.Add(1)
		return w.resettle(ctx, batchID, nil)
	case errors.Is(err, chain.ErrUnderpriced):
		// The node refuses it now: the base fee outgrew it. Its members are settled by a
		// successor at its nonce.
		w.log.Warn("x402: batch transaction outbid by the market; settling its payments at its nonce with higher fees", "batch", batchID, "tx", b.TxHash)
		return w.resettle(ctx, batchID, b.RawTx)
	}
	if err != nil {
		return err
	}
	return w.awaitBatch(ctx, batchID, hash, b.RawTx, true, members, auths)
}
