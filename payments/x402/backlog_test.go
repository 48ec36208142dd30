package x402

import (
	"context"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// TestBatchModeRefusesWhatTheQueueCannotSettleInTime: an authorization that would expire while
// its payment waits behind the queue is refused before anything is claimed (503, the gateway is
// behind), one too short for any batch is the payer's (402 valid_before), and one that outlives
// the backlog is taken.
func TestBatchModeRefusesWhatTheQueueCannotSettleInTime(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	cfg := Config{Network: r.net, PayTo: r.payTo, Mode: SettleBatch, Reservations: r.reserved, Backlog: r.book}
	rail, err := NewRail(cfg, NewRPCReader(r.dev.Client(), rigReadTimeout), r.book, r.book, r.settler)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(validFor time.Duration) (*payments.Authorization, error) {
		hreq, price := r.paidRequest(t, rail, r.payer, validFor)
		return rail.Verify(ctx, hreq, price)
	}

	_, err = verify(10 * time.Second)
	wantReason(t, err, ReasonValidBefore)
	if _, err := verify(time.Minute); err != nil {
		t.Fatalf("no backlog, a 60 s authorization: %v", err)
	}

	// A payment queued 50 s ago and not settled yet: settlement is 50 s behind.
	stuck := ledger.Payment{ID: uuid.New(), Rail: RailName, Network: r.net.CAIP2, Asset: r.net.Asset.Hex(), Payer: "0xB", PayTo: r.payTo.Hex(),
		Amount: big.NewInt(1), NonceKey: "stuck:" + uuid.NewString(), Payload: []byte(`{}`), CreatedAt: time.Now().Add(-50 * time.Second)}
	if err := r.book.Create(ctx, stuck); err != nil {
		t.Fatal(err)
	}
	if _, err := r.book.Transition(ctx, stuck.ID, []ledger.Status{ledger.StatusVerified}, ledger.StatusQueued, ledger.Patch{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(backlogRefresh + 50*time.Millisecond)
	_, err = verify(time.Minute)
	if !errors.Is(err, payments.ErrUnavailable) || Reason(err) != "" {
		t.Fatalf("a 60 s authorization behind a 50 s backlog = %v, want ErrUnavailable (503)", err)
	}
	if _, err := verify(time.Hour); err != nil {
		t.Fatalf("an authorization that outlives the backlog: %v", err)
	}

	// Claimed into a batch whose transaction is not mined: settlement is as far behind.
	scope := ledger.Scope{Rail: RailName, Network: r.net.CAIP2, Asset: r.net.Asset.Hex()}
	if ps, err := r.book.ClaimQueued(ctx, 100, uuid.New(), scope); err != nil || len(ps) != 1 || ps[0].ID != stuck.ID {
		t.Fatalf("claiming the stuck payment: %v %v", ps, err)
	}
	time.Sleep(backlogRefresh + 50*time.Millisecond)
	if _, err = verify(time.Minute); !errors.Is(err, payments.ErrUnavailable) {
		t.Fatalf("a 60 s authorization behind a batch unmined for 50 s = %v, want ErrUnavailable (503)", err)
	}
}
