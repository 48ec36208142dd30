package x402

import (
	"context"
	"fmt"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// slowFirstReceipt is a node whose first receipt wait (or nth, when set) times out (a slow
// chain): a batch goes pending, with its transaction recorded on its payments; a sync
// settlement answers pending.
type slowFirstReceipt struct {
	*chain.Sender
	nth int32
	n   atomic.Int32
}

func (s *slowFirstReceipt) WaitReceipt(ctx context.Context, h common.Hash, every time.Duration) (*types.Receipt, error) {
	if s.n.Add(1) == max(s.nth, 1) {
		return nil, fmt.Errorf("chain: receipt %s: %w", h.Hex(), chain.ErrReceiptTimeout)
	}
	return s.Sender.WaitReceipt(ctx, h, every)
}

// laggingReceipts is a node behind a load balancer whose receipt index lags: a mined
// transaction's nonce is taken, but this node has no receipt of it yet.
type laggingReceipts struct{ chain.Backend }

func (laggingReceipts) TransactionReceipt(context.Context, common.Hash) (*types.Receipt, error) {
	return nil, ethereum.NotFound
}

// queueBatch verifies n payments in batch mode and queues them.
func (r *recoveryRig) queueBatch(t *testing.T, ctx context.Context, n int) []*payments.Authorization {
	t.Helper()
	rail := r.rail(t, SettleBatch, r.settler)
	var auths []*payments.Authorization
	for range n {
		a := r.verify(t, rail)
		if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("batch settle: %+v %v", s, err)
		}
		auths = append(auths, a)
	}
	return auths
}

// sendBatchThenCrash claims the queue into one batch, records and broadcasts its transaction
// as the worker does, waits for it to be mined, and returns its hash: the process then died
// before it recorded the receipt.
func (r *recoveryRig) sendBatchThenCrash(t *testing.T, ctx context.Context, want int) common.Hash {
	t.Helper()
	batchID := uuid.New()
	ps, err := r.book.ClaimQueued(ctx, 100, batchID, r.worker.scope())
	if err != nil || len(ps) != want {
		t.Fatalf("claim %d %v", len(ps), err)
	}
	var cas []chain.Authorization
	for _, p := range ps {
		a, err := authorizationOf(p)
		if err != nil {
			t.Fatal(err)
		}
		cas = append(cas, a)
	}
	data, err := chain.PackSettleBatch(r.net.Asset, cas)
	if err != nil {
		t.Fatal(err)
	}
	h, err := r.sender.SendPersisted(ctx, r.dev.Addresses().Batcher, data, 0, func(tx *types.Transaction) error {
		raw, _ := tx.MarshalBinary()
		return r.book.RecordBatchTx(ctx, batchID, raw, tx.Hash().Hex())
	})
	if err != nil {
		t.Fatal(err)
	}
	if rc, err := r.sender.WaitReceipt(ctx, h, 10*time.Millisecond); err != nil || rc.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("first batch tx: %v %v", rc, err)
	}
	return h
}

// TestPendingBatchThatRevertedIsSettledByItsNewBatch: a batch whose receipt wait timed out
// (pending, its transaction recorded on its payments) and whose transaction then reverted
// (out of gas) is settled by recovery in a new batch, and its payments are recorded settled
// by that batch's transaction, once each, their holds released.
func TestPendingBatchThatRevertedIsSettledByItsNewBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	before := r.balance(t)
	auths := r.queueBatch(t, ctx, 8)
	slow := NewWorker(WorkerConfig{Network: r.net, Batcher: r.dev.Addresses().Batcher, StaleAfter: time.Nanosecond,
		ReceiptTimeout: 5 * time.Second, Reservations: r.reserved}, r.book, &slowFirstReceipt{Sender: r.sender}, r.settler)
	slow.gas.perItem = 1 // the batch runs out of gas and reverts as a whole
	if n, err := slow.SettleBatch(ctx); n != 8 || err == nil {
		t.Fatalf("SettleBatch = %d, %v; want 8 and a receipt timeout", n, err)
	}
	var reverted string
	for _, a := range auths {
		p := r.payment(t, a)
		if p.Status != ledger.StatusPending || p.TxHash == "" {
			t.Fatalf("after the timeout: %s tx %q, want pending with the batch tx", p.Status, p.TxHash)
		}
		reverted = p.TxHash
	}
	if _, err := r.sender.WaitReceipt(ctx, common.HexToHash(reverted), 10*time.Millisecond); err != nil {
		t.Fatal(err) // the reverted transaction is mined
	}
	// Recovery reads the revert and sends a new batch, whose receipt wait times out too: the
	// payments, pending, now name the new batch's transaction.
	slowAgain := NewWorker(WorkerConfig{Network: r.net, Batcher: r.dev.Addresses().Batcher, StaleAfter: time.Nanosecond,
		ReceiptTimeout: 5 * time.Second, Reservations: r.reserved}, r.book, &slowFirstReceipt{Sender: r.sender, nth: 2}, r.settler)
	if err := slowAgain.Reconcile(ctx); err == nil {
		t.Fatal("reconcile = nil; want the new batch's receipt timeout")
	}
	var second string
	for _, a := range auths {
		p := r.payment(t, a)
		if p.Status != ledger.StatusPending || p.TxHash == "" || p.TxHash == reverted || (second != "" && p.TxHash != second) {
			t.Fatalf("after the second timeout: %s tx %q, want pending with the new batch's tx (not the reverted %s)", p.Status, p.TxHash, reverted)
		}
		second = p.TxHash
	}
	for pass := range 3 {
		if err := r.worker.Reconcile(ctx); err != nil {
			t.Fatalf("reconcile pass %d: %v", pass, err)
		}
	}
	if gained := new(big.Int).Sub(r.balance(t), before); gained.Cmp(big.NewInt(8*10_000)) != 0 {
		t.Fatalf("payTo gained %v, want exactly 8 payments", gained)
	}
	for i, a := range auths {
		p := r.payment(t, a)
		if p.Status != ledger.StatusSettled || p.TxHash != second {
			t.Errorf("payment %d: %s tx %s; want settled by the new batch's transaction %s (not the reverted %s)", i, p.Status, p.TxHash, second, reverted)
		}
	}
	r.wantNoHolds(t, ctx, auths[0])
}

// TestMinedBatchIsNotSentAgainWhileTheNodeLags: a batch transaction was recorded and
// broadcast, and mined, and the process died before recording its receipt. At restart the
// node refuses it again as "nonce too low", and its receipt index lags: the transaction must
// not be taken for dead (re-signed, its payments failed as "used"): they are settled by it.
func TestMinedBatchIsNotSentAgainWhileTheNodeLags(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	before := r.balance(t)
	auths := r.queueBatch(t, ctx, 3)
	h := r.sendBatchThenCrash(t, ctx, 3)
	// Restart: a sender whose node lags on receipts; its receipts reader is a good node.
	lagSender, err := chain.NewSender(laggingReceipts{r.dev.Client()}, r.dev.OperatorKey(), r.dev.ChainID(),
		chain.SenderOptions{Receipts: r.dev.Client()})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWorker(WorkerConfig{Network: r.net, Batcher: r.dev.Addresses().Batcher, StaleAfter: time.Nanosecond,
		ReceiptTimeout: 10 * time.Second, Reservations: r.reserved}, r.book, lagSender, r.settler)
	if err := w.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(big.NewInt(3*10_000)) != 0 {
		t.Fatalf("payTo gained %v, want exactly 3 payments", got)
	}
	for i, a := range auths {
		if p := r.payment(t, a); p.Status != ledger.StatusSettled || p.TxHash != h.Hex() {
			t.Errorf("payment %d moved its money in %s but is recorded %s (%s) tx %s", i, h.Hex(), p.Status, p.ErrorReason, p.TxHash)
		}
	}
}

// TestSyncPaymentSettledByRecoveryReleasesItsHold: a sync settlement whose receipt wait timed
// out is pending and keeps its hold on the payer's balance; once recovery records it settled,
// the hold is released: the money left the payer on chain, and the hold must not count it a
// second time.
func TestSyncPaymentSettledByRecoveryReleasesItsHold(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	slow := NewChainSettler(r.book, &slowFirstReceipt{Sender: r.sender}, r.net.Asset, 5*time.Second, nil)
	rail := r.rail(t, SettleSync, slow)
	a := r.verify(t, rail)
	if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
		t.Fatalf("settle: %+v %v; want pending", s, err)
	}
	p := r.payment(t, a)
	if _, err := r.sender.WaitReceipt(ctx, common.HexToHash(p.TxHash), 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := r.worker.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.status(t, a); st != ledger.StatusSettled {
		t.Fatalf("status %s, want settled", st)
	}
	r.wantNoHolds(t, ctx, a)
}

// wantNoHolds fails unless nothing of a's payer is held any more: its whole on-chain balance
// can be reserved.
func (r *recoveryRig) wantNoHolds(t *testing.T, ctx context.Context, a *payments.Authorization) {
	t.Helper()
	payer := common.HexToAddress(a.Payer)
	bal, err := chain.TokenBalance(ctx, r.dev.Client(), r.net.Asset, payer)
	if err != nil {
		t.Fatal(err)
	}
	scope := reservationScope(r.net.ChainID, r.net.Asset, payer)
	probe := "probe-" + uuid.NewString()
	if err := r.reserved.Reserve(ctx, scope, probe, bal, bal, time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("a finished payment still holds part of the payer's balance: reserving the whole balance %v: %v", bal, err)
	}
	if err := r.reserved.Release(ctx, scope, probe); err != nil {
		t.Fatal(err)
	}
}

// deadOnRebroadcast is a node that calls every recorded transaction dead, mined or not (a
// receipt index that lags for longer than the sender waits).
type deadOnRebroadcast struct{ *chain.Sender }

func (deadOnRebroadcast) Rebroadcast(_ context.Context, raw []byte) (common.Hash, error) {
	var tx types.Transaction
	if err := tx.UnmarshalBinary(raw); err != nil {
		return common.Hash{}, err
	}
	return tx.Hash(), fmt.Errorf("chain: rebroadcast %s: %w", tx.Hash().Hex(), chain.ErrTxDead)
}

// useDirectly sends the stored authorization of a's payment to the token from another
// account, as anyone holding a signed EIP-3009 authorization may: the money moves to payTo by
// a transaction that is not the gateway's. It returns that transaction.
func (r *recoveryRig) useDirectly(t *testing.T, ctx context.Context, a *payments.Authorization) common.Hash {
	t.Helper()
	ca, err := authorizationOf(r.payment(t, a))
	if err != nil {
		t.Fatal(err)
	}
	key, err := crypto.HexToECDSA(r.dev.Accounts()[3].PrivateKeyHex[2:])
	if err != nil {
		t.Fatal(err)
	}
	other, err := chain.NewSender(r.dev.Client(), key, r.dev.ChainID(), chain.SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := chain.PackTransferWithAuthorization(ca)
	if err != nil {
		t.Fatal(err)
	}
	h, err := other.Send(ctx, r.net.Asset, data)
	if err != nil {
		t.Fatal(err)
	}
	if rc, err := other.WaitReceipt(ctx, h, 10*time.Millisecond); err != nil || rc.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("direct use: %v %v", rc, err)
	}
	return h
}

// TestDeadBatchWhoseAuthorizationsWereUsedIsNotSignedAgain: a mined batch transaction is taken
// for dead (its receipt could not be found). Before its payments are signed again, the chain is
// asked: every authorization is used, by that very transaction, so they are recorded settled
// by it, nothing is sent again, and nothing is failed.
func TestDeadBatchWhoseAuthorizationsWereUsedIsNotSignedAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	before := r.balance(t)
	auths := r.queueBatch(t, ctx, 3)
	h := r.sendBatchThenCrash(t, ctx, 3)
	nonce, err := r.dev.Client().PendingNonceAt(ctx, r.sender.Address())
	if err != nil {
		t.Fatal(err)
	}
	w := NewWorker(WorkerConfig{Network: r.net, Batcher: r.dev.Addresses().Batcher, StaleAfter: time.Nanosecond,
		ReceiptTimeout: 10 * time.Second, Reservations: r.reserved}, r.book, deadOnRebroadcast{r.sender}, r.settler)
	if err := w.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if after, err := r.dev.Client().PendingNonceAt(ctx, r.sender.Address()); err != nil || after != nonce {
		t.Fatalf("the settlement key sent %d more transactions (%v); want none", after-nonce, err)
	}
	if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(big.NewInt(3*10_000)) != 0 {
		t.Fatalf("payTo gained %v, want exactly 3 payments", got)
	}
	for i, a := range auths {
		if p := r.payment(t, a); p.Status != ledger.StatusSettled || p.TxHash != h.Hex() {
			t.Errorf("payment %d: %s (%s) tx %s; want settled by %s", i, p.Status, p.ErrorReason, p.TxHash, h.Hex())
		}
	}
	r.wantNoHolds(t, ctx, auths[0])
}

// TestBatchItemUsedByAnotherTransactionIsSettledByIt: one authorization of a queued batch is
// sent to the token by someone else first. The batch's item for it fails ("used or
// canceled"), but the money moved: the payment is recorded settled by the transaction that
// used it, the others by the batch, and payTo gains each payment once.
func TestBatchItemUsedByAnotherTransactionIsSettledByIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	before := r.balance(t)
	auths := r.queueBatch(t, ctx, 3)
	used := r.useDirectly(t, ctx, auths[1])
	if n, err := r.worker.SettleBatch(ctx); n != 3 || err != nil {
		t.Fatalf("SettleBatch = %d, %v", n, err)
	}
	if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(big.NewInt(3*10_000)) != 0 {
		t.Fatalf("payTo gained %v, want exactly 3 payments", got)
	}
	batchTx := r.payment(t, auths[0]).TxHash
	for i, a := range auths {
		want := batchTx
		if i == 1 {
			want = used.Hex()
		}
		if p := r.payment(t, a); p.Status != ledger.StatusSettled || p.TxHash != want {
			t.Errorf("payment %d: %s (%s) tx %s; want settled by %s", i, p.Status, p.ErrorReason, p.TxHash, want)
		}
	}
	r.wantNoHolds(t, ctx, auths[0])
}

// TestDeadSyncTransactionWhoseAuthorizationWasUsedIsSettled: a sync settlement was mined but
// its receipt wait timed out (pending); recovery then takes the transaction for dead. The
// chain shows the authorization used by it: the payment is settled by it, not signed again
// and failed as "used".
func TestDeadSyncTransactionWhoseAuthorizationWasUsedIsSettled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	before := r.balance(t)
	rail := r.rail(t, SettleSync, NewChainSettler(r.book, &slowFirstReceipt{Sender: r.sender}, r.net.Asset, 5*time.Second, nil))
	a := r.verify(t, rail)
	if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
		t.Fatalf("settle: %+v %v; want pending", s, err)
	}
	h := r.payment(t, a).TxHash
	if _, err := r.sender.WaitReceipt(ctx, common.HexToHash(h), 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	w := NewWorker(WorkerConfig{Network: r.net, Batcher: r.dev.Addresses().Batcher, StaleAfter: time.Nanosecond,
		ReceiptTimeout: 10 * time.Second, Reservations: r.reserved}, r.book, deadOnRebroadcast{r.sender}, r.settler)
	if err := w.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if p := r.payment(t, a); p.Status != ledger.StatusSettled || p.TxHash != h {
		t.Fatalf("payment %s (%s) tx %s; want settled by %s", p.Status, p.ErrorReason, p.TxHash, h)
	}
	if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(big.NewInt(10_000)) != 0 {
		t.Fatalf("payTo gained %v, want one payment", got)
	}
	r.wantNoHolds(t, ctx, a)
}

// TestSyncAuthorizationUsedByAnotherTransactionIsSettledByIt: a sync settlement's transaction
// was recorded and the process died before broadcasting it; meanwhile someone else sent the
// authorization to the token. Recovery broadcasts the recorded transaction, which reverts
// ("used"): the payment is not failed but settled by the transaction that used the
// authorization, recorded in place of ours.
func TestSyncAuthorizationUsedByAnotherTransactionIsSettledByIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	before := r.balance(t)
	rail := r.rail(t, SettleSync, NewChainSettler(r.book, crashAfterPersist{r.sender}, r.net.Asset, 10*time.Second, nil))
	a := r.verify(t, rail)
	if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
		t.Fatalf("a crashed settlement must read as pending: %+v %v", s, err)
	}
	ours := r.payment(t, a).TxHash
	used := r.useDirectly(t, ctx, a)
	if err := r.worker.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if rc, err := r.dev.Client().TransactionReceipt(ctx, common.HexToHash(ours)); err != nil || rc.Status == types.ReceiptStatusSuccessful {
		t.Fatalf("our recorded transaction: %v %v; want mined and reverted", rc, err)
	}
	if p := r.payment(t, a); p.Status != ledger.StatusSettled || p.TxHash != used.Hex() {
		t.Fatalf("payment %s (%s) tx %s; want settled by %s", p.Status, p.ErrorReason, p.TxHash, used.Hex())
	}
	if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(big.NewInt(10_000)) != 0 {
		t.Fatalf("payTo gained %v, want one payment", got)
	}
	r.wantNoHolds(t, ctx, a)
}

// TestBatchMemberWithAnotherTransactionRecordedIsNotTakenForDone: a batch member whose row
// carries another transaction than its batch's (an earlier batch's, left by a version that
// kept it when the batch moved) cannot be moved by the receipt as the worker knew it: the
// conflict is an error, its hold is kept, and the next reconciliation, reading the row again,
// records the batch's transaction in place of the stale one and settles it.
func TestBatchMemberWithAnotherTransactionRecordedIsNotTakenForDone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	auths := r.queueBatch(t, ctx, 2)
	h := r.sendBatchThenCrash(t, ctx, 2)
	members := []ledger.Payment{r.payment(t, auths[0]), r.payment(t, auths[1])}
	stale := common.Hash{0x0b, 0xad}.Hex()
	if _, err := r.book.TransitionBatch(ctx, members[0].BatchID, []ledger.Status{ledger.StatusSubmitted}, ledger.StatusPending,
		ledger.Patch{TxHash: stale}); err != nil {
		t.Fatal(err)
	}
	receipt, err := r.sender.WaitReceipt(ctx, h, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var cas []chain.Authorization
	for _, p := range members {
		a, err := authorizationOf(p)
		if err != nil {
			t.Fatal(err)
		}
		cas = append(cas, a)
	}
	if err := r.worker.recordBatch(ctx, members, cas, receipt); err == nil {
		t.Fatal("recordBatch = nil; want the conflict with the recorded transaction reported")
	}
	for i, a := range auths {
		if p := r.payment(t, a); p.Status != ledger.StatusPending || p.TxHash != stale {
			t.Fatalf("payment %d: %s tx %s; want still pending with %s", i, p.Status, p.TxHash, stale)
		}
	}
	payer := common.HexToAddress(auths[0].Payer)
	bal, err := chain.TokenBalance(ctx, r.dev.Client(), r.net.Asset, payer)
	if err != nil {
		t.Fatal(err)
	}
	scope := reservationScope(r.net.ChainID, r.net.Asset, payer)
	if err := r.reserved.Reserve(ctx, scope, "probe", bal, bal, time.Now().Add(time.Minute)); err == nil {
		t.Fatal("the holds of payments not recorded were released")
	}
	if err := r.worker.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	for i, a := range auths {
		if p := r.payment(t, a); p.Status != ledger.StatusSettled || p.TxHash != h.Hex() {
			t.Fatalf("payment %d: %s tx %s; want settled by %s", i, p.Status, p.TxHash, h.Hex())
		}
	}
	r.wantNoHolds(t, ctx, auths[0])
}
