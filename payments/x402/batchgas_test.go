package x402

import (
	"context"
	"math/big"
	"testing"

	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// TestBatchGasIsLearnedAndARevertedBatchIsSettledAgain: the first batch's gas is estimated by the
// node and what it used is learned; a batch given too little gas reverts as a whole, moves
// nothing, and its payments settle, once each, in a new batch whose gas the node estimates.
func TestBatchGasIsLearnedAndARevertedBatchIsSettledAgain(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	rail := r.rail(t, SettleBatch, r.settler)
	queue := func(n int) []*payments.Authorization {
		var out []*payments.Authorization
		for range n {
			a := r.verify(t, rail)
			if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
				t.Fatalf("batch settle: %+v %v", s, err)
			}
			out = append(out, a)
		}
		return out
	}
	batchOf := func(a *payments.Authorization) ledger.Payment { return r.payment(t, a) }

	// The first batch: estimated, and learned from.
	first := queue(2)
	if n, err := r.worker.SettleBatch(ctx); err != nil || n != 2 {
		t.Fatalf("SettleBatch = %d, %v", n, err)
	}
	if r.worker.gas.perItem == 0 {
		t.Fatal("nothing learned from a settled batch")
	}
	for _, a := range first {
		if p := batchOf(a); p.Status != ledger.StatusSettled {
			t.Fatalf("status %s, want settled", p.Status)
		}
	}
	if got := r.worker.gas.limit(2); got == 0 || got > 2*r.worker.gas.perItem*5/4+chain.BatchItemReserve+batchGasBase {
		t.Fatalf("limit for 2 = %d with %d per payment learned", got, r.worker.gas.perItem)
	}

	// Too little gas: the batch reverts as a whole, and is settled again in a new batch.
	before := r.balance(t)
	const n = 8
	second := queue(n)
	r.worker.gas.perItem = 1 // the reserve for one item, and next to nothing for the others
	if n, err := r.worker.SettleBatch(ctx); err != nil || n != len(second) {
		t.Fatalf("SettleBatch with too little gas = %d, %v", n, err)
	}
	if st := r.worker.Stats(); st.BatchesSent != 3 || st.BatchesReverted != 1 {
		t.Fatalf("worker stats %+v; want 3 batches sent (the first, the reverted one, its successor), 1 reverted", st)
	}
	var batches []uuid.UUID
	for _, a := range second {
		p := batchOf(a)
		// Two moves: to the new batch, and again (taken back) just before it is signed.
		if p.Status != ledger.StatusSettled || p.Attempts != 2 {
			t.Fatalf("status %s after %d moves, want settled after the move to a new batch and its retake", p.Status, p.Attempts)
		}
		batches = append(batches, p.BatchID)
	}
	for _, b := range batches {
		if b != batches[0] {
			t.Fatalf("the moved payments are in several batches: %v", batches)
		}
	}
	price := big.NewInt(10_000)
	if got, want := r.balance(t), new(big.Int).Add(before, new(big.Int).Mul(price, big.NewInt(n))); got.Cmp(want) != 0 {
		t.Fatalf("payTo balance %v, want %v: each payment moves exactly once", got, want)
	}
	if r.worker.gas.perItem <= 1 {
		t.Fatal("the new batch's gas was not learned after the revert")
	}
}
