package x402

import (
	"context"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
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

// TestAuthorizationValidForever: validBefore may be any uint256 and the token accepts it. Such
// a payment is held and queued like any other, and settles: its expiry is not read as 1969
// (2^256-1 truncated to int64 is -1) nor wrapped around past 2^63, either of which would let
// its hold lapse at once and a second payment spend the same balance.
func TestAuthorizationValidForever(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	rail := r.rail(t, SettleBatch, r.settler)
	key, _ := crypto.GenerateKey()
	mint := func(amount int64) {
		t.Helper()
		h, err := r.sender.Send(ctx, r.net.Asset, chain.PackMint(crypto.PubkeyToAddress(key.PublicKey), big.NewInt(amount)))
		if err == nil {
			_, err = r.sender.WaitReceipt(ctx, h, 10*time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	forever := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1)).String()
	wrapped := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), 64), big.NewInt(time.Now().Unix()+3)).String()
	pay := func(validBefore string) error {
		hreq, price := r.paidRequestUntil(t, rail, key, validBefore)
		a, err := rail.Verify(ctx, hreq, price)
		if err != nil {
			return err
		}
		a.JobID = uuid.NewString()
		if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("validBefore %s: batch settle %+v, %v", validBefore, s, err)
		}
		return nil
	}
	before := r.balance(t)
	mint(15_000)
	if err := pay(forever); err != nil {
		t.Fatalf("validBefore 2^256-1: %v", err)
	}
	wantReason(t, pay(wrapped), ReasonInsufficientBalance) // the first still holds 10,000 of 15,000
	mint(5_000)
	if err := pay(wrapped); err != nil {
		t.Fatalf("validBefore 2^64+now+3: %v", err)
	}
	if n, err := r.worker.SettleBatch(ctx); err != nil || n != 2 {
		t.Fatalf("SettleBatch = %d, %v; want both payments settled", n, err)
	}
	if got, want := r.balance(t), new(big.Int).Add(before, big.NewInt(20_000)); got.Cmp(want) != 0 {
		t.Fatalf("payTo holds %s, want %s", got, want)
	}
}

func TestUnixTimeSaturates(t *testing.T) {
	for _, tc := range []struct {
		sec  *big.Int
		want time.Time
	}{
		{big.NewInt(0), time.Unix(0, 0)},
		{big.NewInt(1_900_000_000), time.Unix(1_900_000_000, 0)},
		{big.NewInt(farFuture.Unix() + 1), farFuture},
		{new(big.Int).Lsh(big.NewInt(1), 63), farFuture},
		{new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1)), farFuture},
	} {
		if got := unixTime(tc.sec); !got.Equal(tc.want) {
			t.Errorf("unixTime(%s) = %v, want %v", tc.sec, got, tc.want)
		}
	}
}

// TestRefusalsSayWhyInTheOffer: the 402 answering a refused payment names the reason in
// PAYMENT-REQUIRED.error (the reference server's text for an offer no payment matches), and a
// settlement the token refuses carries PAYMENT-RESPONSE with success false and the reason
// (x402.md §1, §7).
func TestRefusalsSayWhyInTheOffer(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	rail := r.rail(t, SettleSync, r.settler)
	price := payments.Price{Amount: 10_000, Currency: "USDC", Resource: "/exec/tool"}
	for _, tc := range []struct {
		refused *payments.PaymentError
		want    string
	}{
		{nil, "PAYMENT-SIGNATURE header is required"},
		{refuse(ReasonSignature, "bad"), ReasonSignature},
		{refuse(ReasonNoMatchingRequirements, "other asset"), MessageNoMatchingRequirements},
	} {
		ch, err := rail.Offer(ctx, price, tc.refused)
		if err != nil {
			t.Fatal(err)
		}
		pr, err := DecodePaymentRequired(ch.Header.Get(HeaderPaymentRequired))
		if err != nil || pr.Error != tc.want || len(pr.Accepts) != 1 {
			t.Fatalf("offer answering %v: %+v, %v; want error %q and the offer", tc.refused, pr, err, tc.want)
		}
	}

	// The payer moves its whole balance away between verify and settle. (Had it spent the
	// authorization itself, the money would have reached payTo: that settles the payment,
	// TestFirstSendFindsTheAuthorizationUsedByAnother.)
	a := r.verify(t, rail)
	payer := crypto.PubkeyToAddress(r.payer.PublicKey)
	bal, err := chain.TokenBalance(ctx, r.dev.Client(), r.net.Asset, payer)
	if err != nil {
		t.Fatal(err)
	}
	payerSender, err := chain.NewSender(r.dev.Client(), r.payer, r.dev.ChainID(), chain.SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	transfer := append(common.FromHex("0xa9059cbb"), common.LeftPadBytes(r.dev.Accounts()[4].Address.Bytes(), 32)...) // transfer(address,uint256)
	transfer = append(transfer, common.LeftPadBytes(bal.Bytes(), 32)...)
	h, err := payerSender.Send(ctx, r.net.Asset, transfer)
	if err == nil {
		_, err = payerSender.WaitReceipt(ctx, h, 10*time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	_, err = rail.Settle(ctx, a)
	var refused *payments.PaymentError
	if !errors.As(err, &refused) {
		t.Fatalf("settling a spent authorization: %v, want a refusal", err)
	}
	sr, derr := DecodeSettlementResponse(refused.Header.Get(HeaderPaymentResponse))
	if derr != nil || sr.Success || sr.Transaction != "" || sr.ErrorReason != refused.Reason || sr.Network != CAIP2(r.net.ChainID) ||
		!strings.EqualFold(sr.Payer, a.Payer) {
		t.Fatalf("PAYMENT-RESPONSE of a refused settlement: %+v, %v", sr, derr)
	}
}
