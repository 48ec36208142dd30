package x402

import (
	"context"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// TestBatchModeNeverPromisesMoreThanThePayerHolds: in batch mode a call is answered before its
// money moves. A payer holding 25,000 gets two 10,000 payments answered; a third is refused
// while the two are queued, even though the chain still shows 25,000. Once the batch settles
// and releases them, the chain's own balance (5,000) is what counts.
func TestBatchModeNeverPromisesMoreThanThePayerHolds(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	rail := r.rail(t, SettleBatch, r.settler)
	key, _ := crypto.GenerateKey()
	payer := crypto.PubkeyToAddress(key.PublicKey)
	mint := func(amount int64) {
		h, err := r.sender.Send(ctx, r.net.Asset, chain.PackMint(payer, big.NewInt(amount)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.sender.WaitReceipt(ctx, h, 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	mint(25_000)
	verify := func() (*payments.Authorization, error) {
		hreq, price := r.paidRequest(t, rail, key, time.Hour)
		a, err := rail.Verify(ctx, hreq, price)
		if err == nil {
			a.JobID = uuid.NewString()
		}
		return a, err
	}
	var queued []*payments.Authorization
	for range 2 {
		a, err := verify()
		if err != nil {
			t.Fatal(err)
		}
		if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("batch settle: %+v %v", s, err)
		}
		queued = append(queued, a)
	}
	_, err := verify()
	wantReason(t, err, ReasonInsufficientBalance)

	// The worker settles the two queued payments and releases what they held.
	a, err := r.book.Get(ctx, uuid.MustParse(queued[0].Reference))
	if err != nil || a.Status != ledger.StatusQueued {
		t.Fatalf("%+v %v", a, err)
	}
	if n, err := r.worker.SettleBatch(ctx); err != nil || n != 2 {
		t.Fatalf("SettleBatch = %d, %v", n, err)
	}
	for _, q := range queued {
		if s := r.status(t, q); s != ledger.StatusSettled {
			t.Fatalf("status %s, want settled", s)
		}
	}
	// Released: the chain says 5,000 now, which does not cover 10,000...
	_, err = verify()
	wantReason(t, err, ReasonInsufficientBalance)
	// ...and a top-up does, with nothing left held.
	mint(5_000)
	v, err := verify()
	if err != nil {
		t.Fatalf("after a top-up to 10,000 with nothing held: %v", err)
	}
	if err := rail.Void(ctx, v, "tool_failed"); err != nil {
		t.Fatal(err)
	}
	if p, err := r.book.Get(ctx, uuid.MustParse(v.Reference)); err != nil || p.Status != ledger.StatusNotCharged || p.ErrorReason != "tool_failed" ||
		p.JobID.String() != v.JobID {
		t.Fatalf("a voided batch payment reads %+v, %v; want not_charged (tool_failed) under its job", p, err)
	}
	if _, err := verify(); err != nil {
		t.Fatalf("a voided payment must release what it held: %v", err)
	}
}
