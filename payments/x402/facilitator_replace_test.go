package x402

import (
	"context"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// replacingFacilitator answers with the hash of a first transaction that it then replaced
// (sped up, same nonce): the transfer landed in another transaction than the one it named.
type replacingFacilitator struct{ c *FacilitatorClient }

func (r replacingFacilitator) Settle(ctx context.Context, body []byte) (SettlementResponse, error) {
	res, err := r.c.Settle(ctx, body)
	if err == nil && res.Success {
		res = SettlementResponse{Success: false, ErrorReason: ReasonSettlementPending, Transaction: common.Hash{0xde, 0xad}.Hex(), Network: res.Network}
	}
	return res, err
}

// facilitatorRig is a rail and worker settling through remote, with the rig's reservations.
func (r *recoveryRig) facilitatorRig(t *testing.T, remote func(*FacilitatorClient) remoteSettler) (*Rail, *Worker, *fakeFacilitator) {
	t.Helper()
	f := newFakeFacilitator(t, r)
	c, err := NewFacilitatorClient(f.srv.URL, FacilitatorOptions{SettleTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reader := NewRPCReader(r.dev.Client(), rigReadTimeout)
	s := NewFacilitatorSettler(FacilitatorSettlerConfig{Token: r.net.Asset, ReceiptWait: 300 * time.Millisecond}, r.book, remote(c), r.dev.Client(), reader)
	rail, err := NewRail(Config{Network: r.net, PayTo: r.payTo, Facilitator: c, Reservations: r.reserved}, reader, r.book, r.book, s)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWorker(WorkerConfig{Network: r.net, StaleAfter: time.Nanosecond, Facilitator: s, Reservations: r.reserved}, r.book, nil, nil)
	return rail, w, f
}

// TestFacilitatorTransactionReplacedIsSettledByTheOneThatMovedTheMoney: the facilitator's
// answer names transaction A, and the transfer landed in B (A was replaced). The payment is
// pending with A; recovery finds B through the AuthorizationUsed event, records it in A's
// place (A is kept among the replaced transactions) and settles the payment, releasing its
// hold.
func TestFacilitatorTransactionReplacedIsSettledByTheOneThatMovedTheMoney(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	rail, w, _ := r.facilitatorRig(t, func(c *FacilitatorClient) remoteSettler { return replacingFacilitator{c} })
	before := r.balance(t)
	a := r.verify(t, rail)
	st, err := rail.Settle(ctx, a)
	if err != nil || st.Status != payments.SettlementPending {
		t.Fatalf("settle: %+v %v", st, err)
	}
	named := common.Hash{0xde, 0xad}.Hex()
	if p := r.payment(t, a); p.Status != ledger.StatusPending || p.TxHash != named {
		t.Fatalf("after the answer: %s tx %s, want pending with the named transaction %s", p.Status, p.TxHash, named)
	}
	for pass := range 2 {
		if err := w.Reconcile(ctx); err != nil {
			t.Fatalf("reconcile pass %d: %v", pass, err)
		}
	}
	if gained := new(big.Int).Sub(r.balance(t), before); gained.Cmp(big.NewInt(10_000)) != 0 {
		t.Fatalf("payTo gained %v, want one payment", gained)
	}
	p := r.payment(t, a)
	if p.Status != ledger.StatusSettled || p.TxHash == named || p.TxHash == "" {
		t.Fatalf("the money moved but the payment is %s with tx %s", p.Status, p.TxHash)
	}
	receipt, err := r.dev.Client().TransactionReceipt(ctx, common.HexToHash(p.TxHash))
	if err != nil || receipt.Status != 1 {
		t.Fatalf("recorded transaction %s: %v %v", p.TxHash, receipt, err)
	}
	r.wantNoHolds(t, ctx, a)
}

// TestFacilitatorPaymentRecoveredReleasesItsHold: the facilitator settled the payment but its
// answer was lost: the payment stays settling, holding its amount. Recovery finds the
// transaction on chain, records it settled, and releases the hold.
func TestFacilitatorPaymentRecoveredReleasesItsHold(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	rail, w, f := r.facilitatorRig(t, func(c *FacilitatorClient) remoteSettler { return c })
	f.set("lose-answer")
	before := r.balance(t)
	a := r.verify(t, rail)
	if st, err := rail.Settle(ctx, a); err != nil || st.Status != payments.SettlementPending {
		t.Fatalf("settle: %+v %v; want pending", st, err)
	}
	if p := r.payment(t, a); p.Status != ledger.StatusSettling {
		t.Fatalf("after a lost answer: %s, want settling", p.Status)
	}
	if err := w.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if p := r.payment(t, a); p.Status != ledger.StatusSettled {
		t.Fatalf("recovered: %s, want settled", p.Status)
	}
	if gained := new(big.Int).Sub(r.balance(t), before); gained.Cmp(big.NewInt(10_000)) != 0 {
		t.Fatalf("payTo gained %v, want one payment", gained)
	}
	r.wantNoHolds(t, ctx, a)
}

// usedElsewhereFacilitator settles through c, then answers as a facilitator whose own attempt
// found the authorization already used (by an earlier attempt of its own, or by anyone else
// holding it): a refusal, nonce_already_used, with no transaction.
type usedElsewhereFacilitator struct{ c *FacilitatorClient }

func (r usedElsewhereFacilitator) Settle(ctx context.Context, body []byte) (SettlementResponse, error) {
	res, err := r.c.Settle(ctx, body)
	if err == nil && res.Success {
		res = SettlementResponse{Success: false, ErrorReason: ReasonNonceAlreadyUsed, Network: res.Network}
	}
	return res, err
}

// laggingNode is a node some blocks behind: while behind, every authorization looks unused.
type laggingNode struct {
	nonceState
	behind atomic.Bool
}

func (l *laggingNode) AuthorizationState(ctx context.Context, token, authorizer common.Address, nonce common.Hash) (bool, error) {
	if l.behind.Load() {
		return false, nil
	}
	return l.nonceState.AuthorizationState(ctx, token, authorizer, nonce)
}

// TestFacilitatorNonceUsedIsNeverNotCharged: a facilitator refuses to settle because the
// authorization is already used, and our node, behind, still shows it unused. The refusal is
// evidence that money moved, not that none did: the payment stays settling (pending), and
// recovery, once the node has caught up, records it settled by the transaction that used it.
func TestFacilitatorNonceUsedIsNeverNotCharged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	f := newFakeFacilitator(t, r)
	c, err := NewFacilitatorClient(f.srv.URL, FacilitatorOptions{SettleTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reader := NewRPCReader(r.dev.Client(), rigReadTimeout)
	node := &laggingNode{nonceState: reader}
	s := NewFacilitatorSettler(FacilitatorSettlerConfig{Token: r.net.Asset, ReceiptWait: 300 * time.Millisecond}, r.book, usedElsewhereFacilitator{c}, r.dev.Client(), node)
	rail, err := NewRail(Config{Network: r.net, PayTo: r.payTo, Facilitator: c}, reader, r.book, r.book, s)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWorker(WorkerConfig{Network: r.net, StaleAfter: time.Nanosecond, Facilitator: s}, r.book, nil, nil)

	before := r.balance(t)
	a := r.verify(t, rail)
	node.behind.Store(true)
	st, err := rail.Settle(ctx, a)
	if err != nil || st.Status != payments.SettlementPending {
		t.Fatalf("Settle = %+v, %v; want pending, never a refusal of a payment whose nonce is used", st, err)
	}
	if p := r.payment(t, a); p.Status.Terminal() {
		t.Fatalf("after the refusal: %s %q; want still open", p.Status, p.ErrorReason)
	}
	node.behind.Store(false)
	// The facilitator's transaction is mined on the dev chain's own clock: recovery is asked
	// once the node shows the authorization used (before that, it rightly keeps waiting).
	auth, err := authorizationOf(r.payment(t, a))
	if err != nil {
		t.Fatal(err)
	}
	for {
		used, err := reader.AuthorizationState(ctx, r.net.Asset, auth.From, auth.Nonce)
		if err != nil {
			t.Fatal(err)
		}
		if used {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the facilitator's transaction was never mined")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := w.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if gained := new(big.Int).Sub(r.balance(t), before); gained.Cmp(big.NewInt(10_000)) != 0 {
		t.Fatalf("payTo gained %v, want one payment", gained)
	}
	if p := r.payment(t, a); p.Status != ledger.StatusSettled || p.TxHash == "" {
		t.Fatalf("the money moved, and the payment is %s %q", p.Status, p.TxHash)
	}
}

// replayingFacilitator settles the first payment through c, then answers every later /settle
// with that first answer (a cache keyed by payer and amount, or a facilitator that lies),
// sending nothing.
type replayingFacilitator struct {
	c     *FacilitatorClient
	first *SettlementResponse
}

func (r *replayingFacilitator) Settle(ctx context.Context, body []byte) (SettlementResponse, error) {
	if r.first != nil {
		return *r.first, nil
	}
	res, err := r.c.Settle(ctx, body)
	if err == nil && res.Success {
		r.first = &res
	}
	return res, err
}

// TestFacilitatorTransactionOfAnotherPaymentDoesNotSettle: the facilitator names the
// transaction that settled an earlier payment of the same payer, amount and payTo. Its Transfer
// matches, but it used another authorization: this payment is not settled by it, and with its
// own authorization unused on chain it is failed (transfer_event_mismatch).
func TestFacilitatorTransactionOfAnotherPaymentDoesNotSettle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	remote := &replayingFacilitator{}
	rail, _, _ := r.facilitatorRig(t, func(c *FacilitatorClient) remoteSettler { remote.c = c; return remote })
	before := r.balance(t)
	first := r.verify(t, rail)
	if st, err := rail.Settle(ctx, first); err != nil || st.Status != payments.SettlementSettled {
		t.Fatalf("first payment: %+v %v", st, err)
	}
	second := r.verify(t, rail)
	st, err := rail.Settle(ctx, second)
	if err == nil && st.Status == payments.SettlementSettled {
		t.Fatalf("the second payment was answered settled by the first one's transaction %s", st.TxHash)
	}
	wantReason(t, err, ReasonTransferEventMismatch)
	if p := r.payment(t, second); p.Status != ledger.StatusFailed || p.ErrorReason != ReasonTransferEventMismatch {
		t.Fatalf("the second payment is %s (%q) by %s, and its money never moved; want failed", p.Status, p.ErrorReason, p.TxHash)
	}
	if gained := new(big.Int).Sub(r.balance(t), before); gained.Cmp(big.NewInt(10_000)) != 0 {
		t.Fatalf("payTo gained %v, want the first payment only", gained)
	}
}
