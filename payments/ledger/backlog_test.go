package ledger

import (
	"context"
	"math/big"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestOldestQueued(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	for name, book := range map[string]interface {
		Create(context.Context, Payment) error
		Transition(context.Context, uuid.UUID, []Status, Status, Patch) (Payment, error)
		OldestQueued(context.Context, Scope) (time.Time, bool, error)
	}{"postgres": l, "memory": NewMemory()} {
		t.Run(name, func(t *testing.T) {
			if _, ok, err := book.OldestQueued(ctx, Scope{Rail: "x402"}); err != nil || ok {
				t.Fatalf("empty queue: %v %v", ok, err)
			}
			old := time.Now().Add(-40 * time.Second).UTC().Truncate(time.Microsecond)
			for i, created := range []time.Time{time.Now(), old} {
				p := newPayment(big.NewInt(int64(10 + i)))
				p.CreatedAt = created
				if err := book.Create(ctx, p); err != nil {
					t.Fatal(err)
				}
				if _, err := book.Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
					t.Fatal(err)
				}
			}
			got, ok, err := book.OldestQueued(ctx, Scope{Rail: "x402"})
			if err != nil || !ok || !got.Equal(old) {
				t.Fatalf("OldestQueued = %v %v %v, want %v", got, ok, err, old)
			}
			if _, ok, _ := book.OldestQueued(ctx, Scope{Network: "eip155:99999"}); ok {
				t.Fatal("a queue of another network counted")
			}
		})
	}
}
