package x402

import (
	"context"
	"crypto/ecdsa"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
)

// slowBalance is a node whose balance answer arrives late: the value it returns was read
// before the moment the test lets it go.
type slowBalance struct {
	*RPCReader
	read, release chan struct{}
}

func (s *slowBalance) BalanceOf(ctx context.Context, token, owner common.Address) (*big.Int, error) {
	b, err := s.RPCReader.BalanceOf(ctx, token, owner)
	select {
	case s.read <- struct{}{}:
		<-s.release
	default:
	}
	return b, err
}

// TestBalanceReadBeforeASettlementIsNotCountedTwice: a payer's balance read just before its
// batch settles, used by a reservation just after the batch's holds are released, would count
// the settled money twice (still in the balance, no longer held). Released holds count on for
// HoldAfterRelease, so the call is refused.
func TestBalanceReadBeforeASettlementIsNotCountedTwice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	r.reserved.KeepSettled = HoldAfterRelease
	payerKey := r.fundedPayer(t, ctx, 50_000)
	reader := &slowBalance{RPCReader: NewRPCReader(r.dev.Client(), rigReadTimeout), read: make(chan struct{}), release: make(chan struct{})}
	rail, err := NewRail(Config{Network: r.net, PayTo: r.payTo, Mode: SettleBatch, Reservations: r.reserved}, reader, r.book, r.book, r.settler)
	if err != nil {
		t.Fatal(err)
	}
	call := func(key *ecdsa.PrivateKey) (*payments.Authorization, error) {
		hreq, price := r.paidRequest(t, rail, key, time.Hour)
		a, err := rail.Verify(ctx, hreq, price)
		if err != nil {
			return nil, err
		}
		a.JobID = uuid.NewString()
		if _, err := rail.Settle(ctx, a); err != nil {
			return nil, err
		}
		return a, nil
	}
	go func() {
		for range 5 {
			<-reader.read
			reader.release <- struct{}{}
		}
	}()
	for i := range 5 { // 5 x 10,000: the whole balance held
		if _, err := call(payerKey); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	done := make(chan error, 1)
	go func() { _, err := call(payerKey); done <- err }()
	<-reader.read // the sixth call's balance: 50,000, read before the batch settles
	if n, err := r.worker.SettleBatch(ctx); err != nil || n != 5 {
		t.Fatalf("SettleBatch = %d, %v", n, err)
	}
	reader.release <- struct{}{}
	err = <-done
	wantReason(t, err, ReasonInsufficientBalance)
}

// countingBalance counts the balance reads of a reader.
type countingBalance struct {
	*RPCReader
	reads int
}

func (c *countingBalance) BalanceOf(ctx context.Context, token, owner common.Address) (*big.Int, error) {
	c.reads++
	return c.RPCReader.BalanceOf(ctx, token, owner)
}

// TestStaleBalanceIsReadAgain: a verification whose balance read began longer ago than
// balanceFreshFor (a slow node, a slow facilitator) reads the balance again before it holds
// anything against it.
func TestStaleBalanceIsReadAgain(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	start := time.Now()
	calls := 0
	clock := func() time.Time { // Verify's now, then later readings
		calls++
		if calls == 1 {
			return start
		}
		return start.Add(balanceFreshFor + time.Second)
	}
	reader := &countingBalance{RPCReader: NewRPCReader(r.dev.Client(), rigReadTimeout)}
	rail, err := NewRail(Config{Network: r.net, PayTo: r.payTo, Mode: SettleBatch, Reservations: r.reserved, Now: clock},
		reader, r.book, r.book, r.settler)
	if err != nil {
		t.Fatal(err)
	}
	hreq, price := r.paidRequest(t, rail, r.payer, time.Hour)
	if _, err = rail.Verify(ctx, hreq, price); err != nil {
		t.Fatal(err)
	}
	if reader.reads != 2 {
		t.Fatalf("%d balance reads, want 2: the one verification made, %s old when holding, and a fresh one", reader.reads, balanceFreshFor+time.Second)
	}
}

// TestHoldOfAPaymentNeverChargedGoesAtOnce: only a settlement's hold is kept a little past its
// release; a payment voided (its tool failed) gives its hold back at once, so that the payer's
// retry fits in the same balance.
func TestHoldOfAPaymentNeverChargedGoesAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	r.reserved.KeepSettled = HoldAfterRelease // as serve configures it
	payerKey := r.fundedPayer(t, ctx, 10_000)
	rail := r.rail(t, SettleBatch, r.settler)
	hreq, price := r.paidRequest(t, rail, payerKey, time.Hour)
	a, err := rail.Verify(ctx, hreq, price)
	if err != nil {
		t.Fatalf("first call: %v", err)
	}
	a.JobID = uuid.NewString()
	if err := rail.Void(ctx, a, "tool_failed"); err != nil {
		t.Fatalf("Void: %v", err)
	}
	hreq, price = r.paidRequest(t, rail, payerKey, time.Hour)
	if _, err := rail.Verify(ctx, hreq, price); err != nil {
		t.Fatalf("retry after a call that was not charged: %v", err)
	}
}

// TestAbandonedPaymentHoldGoesAtOnce: the reconciler closing a payment whose call never
// completed gives its hold back at once too: its money never moves.
func TestAbandonedPaymentHoldGoesAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	r.reserved.KeepSettled = HoldAfterRelease // as serve configures it
	payerKey := r.fundedPayer(t, ctx, 10_000)
	rail := r.rail(t, SettleSync, r.settler) // sync: the payment is recorded verified before its call
	hreq, price := r.paidRequest(t, rail, payerKey, time.Hour)
	if _, err := rail.Verify(ctx, hreq, price); err != nil {
		t.Fatalf("first call: %v", err)
	}
	time.Sleep(10 * time.Millisecond)
	if err := r.worker.Reconcile(ctx); err != nil { // the rig's worker waits 1 ns: the call died
		t.Fatalf("Reconcile: %v", err)
	}
	hreq, price = r.paidRequest(t, rail, payerKey, time.Hour)
	if _, err := rail.Verify(ctx, hreq, price); err != nil {
		t.Fatalf("retry after a payment closed not charged: %v", err)
	}
}

// fundedPayer is a new payer holding amount of the rig's token.
func (r *recoveryRig) fundedPayer(t *testing.T, ctx context.Context, amount int64) *ecdsa.PrivateKey {
	t.Helper()
	key, _ := crypto.GenerateKey()
	h, err := r.sender.Send(ctx, r.net.Asset, chain.PackMint(crypto.PubkeyToAddress(key.PublicKey), big.NewInt(amount)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.sender.WaitReceipt(ctx, h, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	return key
}
