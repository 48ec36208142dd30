package ledger

import (
	"context"
	"math/big"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestOutbidSyncPaymentMoves: the moves the x402 worker makes for an outbid sync payment, in
// both books (the guard trigger in Postgres): its transaction replaced by a successor at the
// same nonce, from submitted or pending, then settled by the successor, or by the first one
// when that is what the chain mined.
func TestOutbidSyncPaymentMoves(t *testing.T) {
	bothBooks(t, func(t *testing.T, b batchMover) {
		book := b.(interface {
			replacer
			ReplaceTx(context.Context, uuid.UUID, string, []byte, string) (Payment, error)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		inFlight := []Status{StatusSubmitted, StatusPending}
		for _, oldMined := range []bool{false, true} {
			for _, pend := range []bool{false, true} {
				p := newPayment(big.NewInt(10_000))
				if err := book.Create(ctx, p); err != nil {
					t.Fatal(err)
				}
				raw1, h1 := rawTx("first")
				if _, err := book.Transition(ctx, p.ID, []Status{StatusVerified}, StatusSubmitted, Patch{RawTx: raw1, TxHash: h1}); err != nil {
					t.Fatal(err)
				}
				if pend {
					if _, err := book.Transition(ctx, p.ID, []Status{StatusSubmitted}, StatusPending, Patch{Attempt: true}); err != nil {
						t.Fatal(err)
					}
				}
				raw2, h2 := rawTx("successor")
				if _, err := book.ReplaceTx(ctx, p.ID, h1, raw2, h2); err != nil {
					t.Fatalf("ReplaceTx (pending %v): %v", pend, err)
				}
				var err error
				if oldMined {
					_, err = book.TransitionReplacing(ctx, p.ID, inFlight, StatusSettled, h2, Patch{TxHash: h1})
				} else {
					_, err = book.Transition(ctx, p.ID, inFlight, StatusSettled, Patch{TxHash: h2})
				}
				if err != nil {
					t.Fatalf("settle (old mined %v, pending %v): %v", oldMined, pend, err)
				}
				got, err := book.Get(ctx, p.ID)
				want := h2
				if oldMined {
					want = h1
				}
				if err != nil || got.Status != StatusSettled || got.TxHash != want {
					t.Fatalf("after settling (old mined %v, pending %v): %s by %s (%v); want settled by %s", oldMined, pend, got.Status, got.TxHash, err, want)
				}
			}
		}
	})
}
