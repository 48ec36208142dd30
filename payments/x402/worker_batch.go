package x402

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments/ledger"
)

// settleQueue settles full batches while the queue holds them, up to InFlight at once: each
// lane claims its own batch (no two claim one payment), sends it and waits for its receipt,
// so that the next batches are sent while earlier ones wait to be mined.
func (w *Worker) settleQueue(ctx context.Context) error {
	errs := make([]error, w.cfg.InFlight)
	var wg sync.WaitGroup
	for lane := range w.cfg.InFlight {
		wg.Go(func() {
			for {
				n, err := w.SettleBatch(ctx)
				if err != nil || n < w.cfg.BatchSize {
					errs[lane] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// SettleBatch settles up to BatchSize queued payments in one transaction through the
// batcher and returns how many it took.
func (w *Worker) SettleBatch(ctx context.Context) (int, error) {
	batchID := uuid.New()
	ps, err := w.batches.ClaimQueued(ctx, w.cfg.BatchSize, batchID, w.scope())
	if err != nil || len(ps) == 0 {
		return 0, err
	}
	return len(ps), w.sendBatch(ctx, batchID, ps, nil)
}

// sendBatch signs, records and broadcasts the batch transaction for payments already moved
// to submitted under batchID, then records each one's outcome. With outbid set (the signed
// transaction of an earlier batch of theirs, which the market outbid), it signs at outbid's
// nonce, with fees that win, so that the two compete for one nonce and at most one is mined.
func (w *Worker) sendBatch(ctx context.Context, batchID uuid.UUID, ps []ledger.Payment, outbid []byte) error {
	auths := make([]chain.Authorization, 0, len(ps))
	for _, p := range ps {
		a, err := authorizationOf(p)
		if err != nil {
			return fmt.Errorf("x402: batch %s: payment %s: %w", batchID, p.ID, err)
		}
		auths = append(auths, a)
	}
	data, err := chain.PackSettleBatch(w.cfg.Network.Asset, auths)
	if err != nil {
		return err
	}
	var raw []byte
	persist := func(tx *types.Transaction) (err error) {
		if raw, err = tx.MarshalBinary(); err != nil {
			return err
		}
		return w.batches.RecordBatchTx(ctx, batchID, raw, tx.Hash().Hex())
	}
	var hash common.Hash
	counter := &w.counts.batchesSent
	if outbid == nil {
		hash, err = w.sender.SendPersisted(ctx, w.cfg.Batcher, data, w.gas.limit(len(ps)), persist)
	} else {
		hash, err = w.sender.Replace(ctx, outbid, w.cfg.Batcher, data, 0, persist)
		counter = &w.counts.replaced
	}
	if err != nil {
		if raw == nil {
			w.keepOutbid(ctx, batchID, outbid) // nothing signed in its place
		}
		// Nothing broadcast, or unknown: the members stay submitted under a batch with or
		// without a recorded transaction, and recovery finishes them. A replacement whose
		// nonce was taken meanwhile (chain.ErrNonceTaken) is dead: recovery then finds the
		// transaction that used the authorizations.
		return fmt.Errorf("x402: batch %s: %w", batchID, err)
	}
	counter.Add(1)
	// A replacement is not replaced again in the same pass: if the market outruns it too,
	// the next pass of recovery outbids it.
	return w.awaitBatch(ctx, batchID, hash, raw, outbid == nil, ps, auths)
}

// awaitBatch waits for the receipt of batch batchID's transaction hash (signed as raw) and
// records its members' outcomes. A receipt that does not come leaves them pending, unless the
// market outbid the transaction and mayReplace: then its members are settled by a successor
// at its nonce (resettle with raw).
func (w *Worker) awaitBatch(ctx context.Context, batchID uuid.UUID, hash common.Hash, raw []byte, mayReplace bool, ps []ledger.Payment, auths []chain.Authorization) error {
	receipt, err := w.waitReceipt(ctx, hash)
	if err != nil && mayReplace && w.outbid(ctx, raw, err) {
		w.log.Warn("x402: batch transaction outbid by the market; settling its payments at its nonce with higher fees", "batch", batchID, "tx", hash.Hex())
		return w.resettle(ctx, batchID, raw)
	}
	if err != nil {
		_, terr := w.batches.TransitionBatch(context.WithoutCancel(ctx), batchID, []ledger.Status{ledger.StatusSubmitted}, ledger.StatusPending, ledger.Patch{TxHash: hash.Hex()})
		errs := []error{fmt.Errorf("x402: batch %s receipt: %w", batchID, err), terr}
		// Members already pending are touched too, so that the next pass reads other stuck
		// payments first (recovery hands them here a page at a time, oldest touched first). One
		// that came pending from an earlier batch (MoveBatch dropped that batch's transaction)
		// is given this one's.
		for _, p := range ps {
			if p.Status != ledger.StatusPending {
				continue
			}
			if p.TxHash == "" {
				if _, err := w.recovery.RecordReference(context.WithoutCancel(ctx), p.ID, ledger.StatusPending, hash.Hex(), nil); err != nil &&
					!errors.Is(err, ledger.ErrConflict) {
					errs = append(errs, err)
				}
			}
			if _, err := w.recovery.RecordAttempt(context.WithoutCancel(ctx), p.ID, ledger.StatusPending); err != nil && !errors.Is(err, ledger.ErrConflict) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if receipt.Status != types.ReceiptStatusSuccessful {
		// The whole transaction reverted (out of gas, most likely: the limit came from earlier
		// batches): it moved nothing and used none of the authorizations. Its payments go to a
		// new batch, whose gas the node estimates; a revert the estimate also meets is refused
		// there, before anything is broadcast.
		w.gas.forget()
		w.counts.batchesReverted.Add(1)
		w.log.Warn("x402: batch transaction reverted; settling its payments in a new batch", "batch", batchID, "tx", hash.Hex(),
			"gas_used", receipt.GasUsed)
		return w.resettle(ctx, batchID, nil)
	}
	w.gas.learn(receipt.GasUsed, len(ps))
	return w.recordBatch(ctx, ps, auths, receipt)
}

// recordBatch applies a batch receipt to its members: each settled only if the batcher
// reported success for its (payer, nonce) and the token logged the transfer.
func (w *Worker) recordBatch(ctx context.Context, ps []ledger.Payment, auths []chain.Authorization, receipt *types.Receipt) error {
	results, err := chain.ParseSettled(receipt, w.cfg.Batcher)
	if err != nil {
		return err
	}
	ok := map[[52]byte]string{} // payer ‖ nonce -> "" for success, else the revert reason
	for _, r := range results {
		var k [52]byte
		copy(k[:20], r.From[:])
		copy(k[20:], r.Nonce[:])
		if r.Success {
			ok[k] = ""
		} else if _, seen := ok[k]; !seen {
			ok[k] = "reverted: " + r.Reason
		}
	}
	// The members' moves run at once, so that the ledger writes them in one or two statements
	// (its move writer batches concurrent moves) instead of one round trip each. A member
	// whose item failed is failed only if the chain shows its authorization unused: one used
	// by another transaction is settled by it (failUnlessUsed). A move the ledger refuses for a
	// member that is not final is an error, for reconciliation to finish.
	errs := make([]error, len(ps))
	settled := make([]bool, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		var k [52]byte
		copy(k[:20], auths[i].From[:])
		copy(k[20:], auths[i].Nonce[:])
		reason, reported := ok[k]
		patch := ledger.Patch{TxHash: receipt.TxHash.Hex()}
		to := ledger.StatusSettled
		if !reported || reason != "" || !chain.HasTransfer(receipt, w.cfg.Network.Asset, auths[i].From, auths[i].To, auths[i].Value) {
			to, patch.ErrorReason = ledger.StatusFailed, ReasonTransactionFailed
			if reason != "" {
				patch.ErrorReason = settleReason(reason)
			}
		}
		wg.Go(func() {
			to, patch := to, patch
			if to == ledger.StatusFailed {
				var err error
				if to, patch, err = failUnlessUsed(ctx, w.uses, w.cfg.Network.Asset, auths[i], patch); err != nil {
					errs[i] = fmt.Errorf("x402: payment %s: %w", p.ID, err)
					return
				}
			}
			errs[i] = recordOutcome(ctx, w.recovery, w.log, p.ID, p.TxHash, inFlight, to, patch)
			settled[i] = to == ledger.StatusSettled
		})
	}
	wg.Wait()
	var moved, never []ledger.Payment
	for i, p := range ps {
		switch {
		case errs[i] != nil:
		case settled[i]:
			moved = append(moved, p)
		default:
			never = append(never, p)
		}
	}
	w.release(ctx, true, moved...)
	w.release(ctx, false, never...)
	return errors.Join(errs...)
}

// resettle settles in a new batch the unfinished members of batch from, whose transaction
// settled none of them: it reverted as a whole, it can never be mined, or it was never
// recorded; or, with outbid set (from's signed transaction), it has not been mined and the
// market outbid it, so the new batch's transaction takes its nonce (sendBatch). Each member's
// authorization is signed again only if the chain shows it unused (settleUsed): one used
// elsewhere is recorded from the transaction that used it. If the chain cannot say for some
// member, nothing is signed now: the members wait in the new batch, with no transaction
// recorded, for the next pass.
func (w *Worker) resettle(ctx context.Context, from uuid.UUID, outbid []byte) error {
	next := uuid.New()
	moved, err := w.recovery.MoveBatch(ctx, from, next)
	if err != nil || len(moved) == 0 {
		return err
	}
	w.log.Info("x402: settling a batch's payments in a new batch", "batch", from, "new_batch", next, "payments", len(moved))
	done := make([]bool, len(moved))
	errs := make([]error, len(moved))
	sem := make(chan struct{}, 8) // chain reads at once
	var wg sync.WaitGroup
	for i, p := range moved {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			a, err := authorizationOf(p)
			if err != nil {
				errs[i] = err
				return
			}
			done[i], errs[i] = w.settleUsed(ctx, p, a)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		w.keepOutbid(ctx, next, outbid)
		return fmt.Errorf("x402: batch %s: nothing signed again: %w", next, err)
	}
	unused := make([]ledger.Payment, 0, len(moved))
	for i, p := range moved {
		if !done[i] {
			unused = append(unused, p)
		}
	}
	if len(unused) == 0 {
		return nil
	}
	// The reads above are not bounded by the send and receipt timeouts that OnChainAfter
	// covers, and the move was the members' last touch: recovery (another replica) may have
	// found next with no recorded transaction meanwhile and signed them itself. Take them
	// again, atomically, just before signing: this move restarts their age, and finds nothing
	// if they are no longer ours.
	final := uuid.New()
	again, err := w.recovery.MoveBatch(ctx, next, final)
	if err != nil {
		w.keepOutbid(ctx, next, outbid)
	}
	if err != nil || len(again) == 0 {
		return err
	}
	return w.sendBatch(ctx, final, again, outbid)
}

// keepOutbid records outbid, the signed transaction that still holds the nonce of batch id's
// members, as id's transaction when nothing was signed in its place: the next pass then
// re-broadcasts it and outbids it again, instead of signing the members at a later nonce,
// behind it (a pool keeps an outbid transaction, and every later one of the key waits).
func (w *Worker) keepOutbid(ctx context.Context, id uuid.UUID, outbid []byte) {
	if outbid == nil {
		return
	}
	tx, err := chainTx(outbid)
	if err == nil {
		err = w.batches.RecordBatchTx(context.WithoutCancel(ctx), id, outbid, tx.Hash().Hex())
	}
	if err != nil && !errors.Is(err, ledger.ErrConflict) {
		w.log.Warn("x402: recording an outbid batch transaction for its payments' new batch", "batch", id, "err", err)
	}
}

func chainTx(raw []byte) (*types.Transaction, error) {
	var tx types.Transaction
	return &tx, tx.UnmarshalBinary(raw)
}
