package ledger

import (
	"context"
	"errors"
	"math/big"
	"testing"

	"github.com/google/uuid"
)

// TestMoveBatch: the unfinished members of a batch whose transaction died move to a new
// batch; finished ones and other batches stay; the dead batch's record is kept.
func TestMoveBatch(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	for _, book := range []interface {
		Create(context.Context, Payment) error
		Transition(context.Context, uuid.UUID, []Status, Status, Patch) (Payment, error)
		ClaimQueued(context.Context, int, uuid.UUID, Scope) ([]Payment, error)
		MoveBatch(context.Context, uuid.UUID, uuid.UUID) ([]Payment, error)
	}{l, NewMemory()} {
		var ids []uuid.UUID
		for range 3 {
			p := newPayment(big.NewInt(10_000))
			if err := book.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
			if _, err := book.Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, p.ID)
		}
		dead := uuid.New()
		if got, err := book.ClaimQueued(ctx, 10, dead, Scope{}); err != nil || len(got) != 3 {
			t.Fatalf("claim: %d %v", len(got), err)
		}
		// One member finished already (it failed on its own): it stays with the dead batch.
		if _, err := book.Transition(ctx, ids[0], []Status{StatusSubmitted}, StatusFailed, Patch{ErrorReason: "x"}); err != nil {
			t.Fatal(err)
		}
		next := uuid.New()
		moved, err := book.MoveBatch(ctx, dead, next)
		if err != nil || len(moved) != 2 {
			t.Fatalf("MoveBatch = %d, %v; want the 2 unfinished members", len(moved), err)
		}
		for _, p := range moved {
			if p.BatchID != next || p.ID == ids[0] || p.Status != StatusSubmitted {
				t.Fatalf("moved %+v", p)
			}
		}
		if again, err := book.MoveBatch(ctx, dead, uuid.New()); err != nil || len(again) != 0 {
			t.Fatalf("a moved batch has nothing left to move: %d %v", len(again), err)
		}
		if _, err := book.MoveBatch(ctx, next, next); !errors.Is(err, ErrInvalid) {
			t.Fatalf("moving a batch onto itself = %v, want ErrInvalid", err)
		}
	}
}
