package x402

import (
	"context"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments/ledger"
)

// confirmingSender signs with the rig's settlement key and counts a receipt only n blocks deep.
func (o *outbidRig) confirmingSender(t *testing.T, n uint64) *chain.Sender {
	t.Helper()
	s, err := chain.NewSender(o.c, key0, big.NewInt(31337), chain.SenderOptions{Confirmations: n})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMinedUnconfirmedBatchIsNeverOutbid: with SETTLEMENT_CONFIRMATIONS set, a batch
// transaction that is mined but not yet deep enough when the receipt wait runs out, while the
// market has moved, is not "outbid" (it is mined): nothing is signed again, and its payment is
// not recorded settled from a block a reorg could still drop.
func TestMinedUnconfirmedBatchIsNeverOutbid(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := newOutbidRig(t)
	a := o.queue(t, ctx, o.rail(t, SettleBatch), 1)[0]
	confirming := o.confirmingSender(t, 20)
	var snap hexutil.Big
	sender := &afterFirstSend{Sender: confirming, then: func() {
		if err := o.c.Client().CallContext(ctx, &snap, "evm_snapshot"); err != nil {
			t.Fatal(err)
		}
		o.mineCheap(t) // the batch transaction's block
		// one more block, with the base fee a congested chain asks
		if err := o.c.Client().CallContext(ctx, nil, "anvil_setNextBlockBaseFeePerGas", (*hexutil.Big)(big.NewInt(100e9))); err != nil {
			t.Fatal(err)
		}
		if err := o.c.Client().CallContext(ctx, nil, "evm_mine"); err != nil {
			t.Fatal(err)
		}
	}}
	w := NewWorker(WorkerConfig{Network: o.net, Batcher: o.addrs.Batcher, ReceiptTimeout: outbidReceiptWait, Reservations: o.reserved}, o.book, sender, o.settler)
	n, err := w.SettleBatch(ctx)
	if n != 1 || !errors.Is(err, chain.ErrReceiptTimeout) {
		t.Fatalf("SettleBatch = %d, %v; want 1 and a receipt timeout (mined, not yet 20 deep)", n, err)
	}
	p := o.payment(t, a)
	if p.Status != ledger.StatusPending {
		t.Fatalf("payment %s by %s; want pending until 20 deep", p.Status, p.TxHash)
	}
	if nonce, _ := o.c.PendingNonceAt(ctx, confirming.Address()); nonce != nonceOfBatch(t, o, p.BatchID)+1 {
		t.Fatalf("the settlement key's pending nonce is %d; want one past the mined batch's: nothing signed again", nonce)
	}
	head, _ := o.c.BlockNumber(ctx)
	if p.Status == ledger.StatusSettled {
		rcpt, _ := o.c.TransactionReceipt(ctx, common.HexToHash(p.TxHash))
		depth := head - rcpt.BlockNumber.Uint64()
		// A reorg now drops the block (anvil: back to the snapshot taken before it).
		var ok bool
		_ = o.c.Client().CallContext(ctx, &ok, "evm_revert", &snap)
		_, rerr := o.c.TransactionReceipt(ctx, common.HexToHash(p.TxHash))
		t.Fatalf("payment recorded settled by %s with %d of 20 confirmations; after a reorg dropping its block the receipt is %v, and the ledger still says %s",
			p.TxHash, depth, rerr, o.payment(t, a).Status)
	}
}

// TestOutbidMinedFirstIsSettledOnlyOnceDeepEnough: the outbid batch transaction is mined just
// before its successor (TestOutbidBatchMinedBeforeItsSuccessor) on a settler that counts a
// settlement only 20 blocks deep. The next pass finds the successor dead and reads the chain's
// record of the authorizations' use: it records the payment settled by the first transaction
// only once that is 20 blocks deep.
func TestOutbidMinedFirstIsSettledOnlyOnceDeepEnough(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := newOutbidRig(t)
	a := o.queue(t, ctx, o.rail(t, SettleBatch), 1)[0]
	confirming := o.confirmingSender(t, 20)
	w0 := o.recoveryWorker(confirming)
	if n, err := w0.SettleBatch(ctx); n != 1 || err == nil {
		t.Fatalf("SettleBatch = %d, %v; want 1 and a receipt timeout", n, err)
	}
	first := o.payment(t, a)
	w1 := o.recoveryWorker(o.minedBeforeItsSuccessor(t, ctx, confirming, first.BatchID))
	if err := w1.Reconcile(ctx); !errors.Is(err, chain.ErrNonceTaken) {
		t.Fatalf("Reconcile 1 = %v; want the successor refused, its nonce taken", err)
	}
	if err := w0.Reconcile(ctx); !errors.Is(err, errUseUnconfirmed) {
		t.Fatalf("Reconcile 2 = %v; want the first transaction's use found, not yet deep enough", err)
	}
	p := o.payment(t, a)
	if p.Status == ledger.StatusSettled {
		rcpt, err := o.c.TransactionReceipt(ctx, common.HexToHash(p.TxHash))
		if err != nil {
			t.Fatal(err)
		}
		head, _ := o.c.BlockNumber(ctx)
		if depth := head - rcpt.BlockNumber.Uint64(); depth < 20 {
			t.Fatalf("payment recorded settled by %s with %d of 20 confirmations", p.TxHash, depth)
		}
	}
	for range 21 {
		o.mineCheap(t)
	}
	if err := w0.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile once deep enough: %v", err)
	}
	if p := o.payment(t, a); p.Status != ledger.StatusSettled || p.TxHash != first.TxHash {
		t.Fatalf("once deep enough: %s by %s; want settled by %s", p.Status, p.TxHash, first.TxHash)
	}
}
