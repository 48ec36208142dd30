package ledger

import (
	"context"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestOldestUnsettled: settlement is as far behind as the oldest payment whose money has not
// moved, queued or in a transaction not yet mined; a settled or closed one does not count.
func TestOldestUnsettled(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	for name, book := range map[string]interface {
		Create(context.Context, Payment) error
		Transition(context.Context, uuid.UUID, []Status, Status, Patch) (Payment, error)
		OldestUnsettled(context.Context, Scope) (time.Time, bool, error)
		ClaimQueued(context.Context, int, uuid.UUID, Scope) ([]Payment, error)
	}{"postgres": l, "memory": NewMemory()} {
		t.Run(name, func(t *testing.T) {
			if _, ok, err := book.OldestUnsettled(ctx, Scope{Rail: "x402"}); err != nil || ok {
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
			got, ok, err := book.OldestUnsettled(ctx, Scope{Rail: "x402"})
			if err != nil || !ok || !got.Equal(old) {
				t.Fatalf("OldestUnsettled = %v %v %v, want %v", got, ok, err, old)
			}
			if _, ok, _ := book.OldestUnsettled(ctx, Scope{Network: "eip155:99999"}); ok {
				t.Fatal("a queue of another network counted")
			}
			// Both claimed into a batch (submitted), then pending: as far behind.
			claimed, err := book.ClaimQueued(ctx, 10, uuid.New(), Scope{Rail: "x402"})
			if err != nil || len(claimed) != 2 {
				t.Fatalf("claim: %v %v", claimed, err)
			}
			hash := "0x" + strings.Repeat("ab", 32)
			moveAll := func(from, to Status) {
				t.Helper()
				for _, p := range claimed {
					if _, err := book.Transition(ctx, p.ID, []Status{from}, to, Patch{TxHash: hash}); err != nil {
						t.Fatalf("%s -> %s: %v", from, to, err)
					}
				}
			}
			for _, step := range []struct{ from, to Status }{{"", StatusSubmitted}, {StatusSubmitted, StatusPending}} {
				if step.from != "" {
					moveAll(step.from, step.to)
				}
				if got, ok, err := book.OldestUnsettled(ctx, Scope{Rail: "x402"}); err != nil || !ok || !got.Equal(old) {
					t.Fatalf("%s: OldestUnsettled = %v %v %v, want %v", step.to, got, ok, err, old)
				}
			}
			// Settled: nothing behind.
			moveAll(StatusPending, StatusSettled)
			if got, ok, err := book.OldestUnsettled(ctx, Scope{Rail: "x402"}); err != nil || ok {
				t.Fatalf("all settled: OldestUnsettled = %v %v %v", got, ok, err)
			}
		})
	}
}
