package x402

import (
	"context"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/chain/chaintest"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// outbidRig is the recovery rig on anvil, whose miner the test drives: a settlement
// transaction is sent while blocks are cheap, then the market's base fee jumps above what it
// offers, as on a congested chain.
type outbidRig struct {
	*recoveryRig
	c     *ethclient.Client
	addrs chain.Addresses
}

// outbidReceiptWait is the rigs' workers' receipt wait: what a test that expects a timeout
// (the miner off) spends on it, and long enough for a loaded machine to mine and answer when
// the test expects a receipt (1 s was not, with other packages' tests running beside).
const outbidReceiptWait = 3 * time.Second

func newOutbidRig(t *testing.T) *outbidRig {
	t.Helper()
	ctx := context.Background()
	_, c := chaintest.StartAnvil(t, 31337)
	chainID := big.NewInt(31337)
	addrs, err := chain.Deploy(ctx, c, key0, chainID)
	if err != nil {
		t.Fatal(err)
	}
	sender, err := chain.NewSender(c, key0, chainID, chain.SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := sender.Send(ctx, addrs.Token, chain.PackMint(addr2, big.NewInt(1_000_000_000)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sender.WaitReceipt(ctx, h, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := c.Client().CallContext(ctx, nil, "evm_setAutomine", false); err != nil {
		t.Fatal(err)
	}
	r := &recoveryRig{net: CustomNetwork(31337, addrs.Token, "USD Coin", "2"), book: ledger.NewMemory(),
		reserved: ledger.NewMemoryReservations(), payer: key2, payTo: addr1, sender: sender}
	r.settler = NewChainSettler(r.book, sender, r.net.Asset, 300*time.Millisecond, nil)
	r.worker = NewWorker(WorkerConfig{Network: r.net, Batcher: addrs.Batcher, StaleAfter: time.Nanosecond, ReceiptTimeout: outbidReceiptWait,
		Reservations: r.reserved}, r.book, sender, r.settler)
	return &outbidRig{recoveryRig: r, c: c, addrs: addrs}
}

func (o *outbidRig) rail(t *testing.T, mode SettleMode) *Rail {
	t.Helper()
	rail, err := NewRail(Config{Network: o.net, PayTo: o.payTo, Mode: mode, Reservations: o.reserved}, NewRPCReader(o.c, rigReadTimeout), o.book, o.book, o.settler)
	if err != nil {
		t.Fatal(err)
	}
	return rail
}

// queue verifies n payments through a batch-mode rail and queues them.
func (o *outbidRig) queue(t *testing.T, ctx context.Context, rail *Rail, n int) []*payments.Authorization {
	t.Helper()
	var auths []*payments.Authorization
	for range n {
		a := o.verify(t, rail)
		if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("batch settle: %+v %v", s, err)
		}
		auths = append(auths, a)
	}
	return auths
}

// congest mines a block every 50 ms, each with a base fee of 100 gwei (a hundred times the
// base fee the settlement was priced at), until the test ends or stop is called.
func (o *outbidRig) congest(t *testing.T) (stop func()) {
	t.Helper()
	fee := (*hexutil.Big)(big.NewInt(100e9))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	mineOnce := func() error {
		if err := o.c.Client().CallContext(ctx, nil, "anvil_setNextBlockBaseFeePerGas", fee); err != nil {
			return err
		}
		return o.c.Client().CallContext(ctx, nil, "evm_mine")
	}
	if err := mineOnce(); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := mineOnce(); err != nil && ctx.Err() == nil {
				t.Errorf("mining: %v", err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	return stop
}

// mineCheap mines one block with a base fee of 1 gwei: any transaction priced earlier fits.
func (o *outbidRig) mineCheap(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if err := o.c.Client().CallContext(ctx, nil, "anvil_setNextBlockBaseFeePerGas", (*hexutil.Big)(big.NewInt(1e9))); err != nil {
		t.Fatal(err)
	}
	if err := o.c.Client().CallContext(ctx, nil, "evm_mine"); err != nil {
		t.Fatal(err)
	}
}

// afterFirstSend is the settlement key's node, where something happens to the chain (then) as
// soon as the first transaction is broadcast: the market jumps, or a block is mined.
type afterFirstSend struct {
	*chain.Sender
	then func()
	once sync.Once
}

func (a *afterFirstSend) SendPersisted(ctx context.Context, to common.Address, data []byte, gas uint64, persist func(*types.Transaction) error) (common.Hash, error) {
	h, err := a.Sender.SendPersisted(ctx, to, data, gas, persist)
	a.once.Do(a.then)
	return h, err
}

// minedBeforeReplace is a node where the outbid transaction gets its block (the market falls
// back for one block) just before its successor is broadcast.
type minedBeforeReplace struct {
	*chain.Sender
	before func()
}

func (m *minedBeforeReplace) Replace(ctx context.Context, raw []byte, to common.Address, data []byte, gas uint64, persist func(*types.Transaction) error) (common.Hash, error) {
	m.before()
	return m.Sender.Replace(ctx, raw, to, data, gas, persist)
}

// minedBeforeItsSuccessor congests the chain, so that batch's transaction is outbid, and
// returns sender as a node where that transaction gets its block just before its successor is
// broadcast: the market falls back, and the first transaction (which anvil dropped from its
// pool while it could not pay the base fee) is broadcast again, by anyone, and mined.
func (o *outbidRig) minedBeforeItsSuccessor(t *testing.T, ctx context.Context, sender *chain.Sender, batch uuid.UUID) *minedBeforeReplace {
	t.Helper()
	stop := o.congest(t)
	b, err := o.book.GetBatch(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	var firstTx types.Transaction
	if err := firstTx.UnmarshalBinary(b.RawTx); err != nil {
		t.Fatal(err)
	}
	return &minedBeforeReplace{Sender: sender, before: func() {
		stop()
		o.mineCheap(t)
		if err := o.c.SendTransaction(ctx, &firstTx); err != nil {
			t.Errorf("broadcasting the first transaction again: %v", err)
		}
		o.mineCheap(t)
	}}
}

// recoveryWorker is a worker of the rig's ledger settling through sender, whose recovery
// takes up every unfinished payment at once.
func (o *outbidRig) recoveryWorker(sender TxSender) *Worker {
	return NewWorker(WorkerConfig{Network: o.net, Batcher: o.addrs.Batcher, StaleAfter: time.Nanosecond, ReceiptTimeout: outbidReceiptWait,
		Reservations: o.reserved}, o.book, sender, o.settler)
}

// TestBatchOutbidWhileAwaitedIsReplacedAtOnce: the market jumps while the worker waits for a
// batch's receipt; when the wait runs out, the worker sees the batch outbid and settles its
// payments with a successor at its nonce in the same pass.
func TestBatchOutbidWhileAwaitedIsReplacedAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := newOutbidRig(t)
	rail := o.rail(t, SettleBatch)
	payToBefore := o.tokenBalance(t, addr1)
	auths := o.queue(t, ctx, rail, 3)
	sender := &afterFirstSend{Sender: o.sender, then: func() { o.congest(t) }}
	w := NewWorker(WorkerConfig{Network: o.net, Batcher: o.addrs.Batcher, ReceiptTimeout: outbidReceiptWait, Reservations: o.reserved}, o.book, sender, o.settler)
	if n, err := w.SettleBatch(ctx); n != 3 || err != nil {
		t.Fatalf("SettleBatch = %d, %v; want 3 settled in one pass", n, err)
	}
	var by string
	for _, a := range auths {
		p := o.payment(t, a)
		if p.Status != ledger.StatusSettled || (by != "" && p.TxHash != by) {
			t.Fatalf("payment %s: %s by %s; want all settled by one successor", p.ID, p.Status, p.TxHash)
		}
		by = p.TxHash
	}
	if got := new(big.Int).Sub(o.tokenBalance(t, addr1), payToBefore); got.Cmp(big.NewInt(3*10_000)) != 0 {
		t.Fatalf("payTo gained %v; want 30000, once", got)
	}
}

// TestOutbidBatchMinedBeforeItsSuccessor: the outbid batch transaction is mined just before its
// successor reaches the node, which refuses the successor (its nonce is taken). Nothing is
// signed at another nonce; the next pass finds the successor dead and the chain's record of
// each authorization's use names the first transaction: every payment settled by it, once.
func TestOutbidBatchMinedBeforeItsSuccessor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := newOutbidRig(t)
	rail := o.rail(t, SettleBatch)
	payToBefore := o.tokenBalance(t, addr1)
	auths := o.queue(t, ctx, rail, 3)
	if n, err := o.worker.SettleBatch(ctx); n != 3 || err == nil {
		t.Fatalf("SettleBatch = %d, %v; want 3 and a receipt timeout", n, err)
	}
	first := o.payment(t, auths[0])
	w := o.recoveryWorker(o.minedBeforeItsSuccessor(t, ctx, o.sender, first.BatchID))
	if err := w.Reconcile(ctx); !errors.Is(err, chain.ErrNonceTaken) {
		t.Fatalf("Reconcile = %v; want the successor refused, its nonce taken", err)
	}
	if !o.mined(t, first.TxHash) {
		t.Fatal("the first transaction was not mined")
	}
	if err := o.worker.Reconcile(ctx); err != nil {
		t.Fatalf("second Reconcile: %v", err)
	}
	if st := w.Stats(); st.Replaced != 0 {
		t.Fatalf("racing worker stats %+v; want no replacement counted (its nonce was taken)", st)
	}
	if st := o.worker.Stats(); st.Dead != 1 {
		t.Fatalf("worker stats %+v; want the successor found dead once", st)
	}
	for _, a := range auths {
		p := o.payment(t, a)
		if p.Status != ledger.StatusSettled || p.TxHash != first.TxHash {
			t.Fatalf("payment %s: %s by %s; want settled by the first transaction %s", p.ID, p.Status, p.TxHash, first.TxHash)
		}
		o.wantNoHolds(t, ctx, a)
	}
	if got := new(big.Int).Sub(o.tokenBalance(t, addr1), payToBefore); got.Cmp(big.NewInt(3*10_000)) != 0 {
		t.Fatalf("payTo gained %v; want 30000, once", got)
	}
	if n, err := o.c.NonceAt(ctx, o.sender.Address(), nil); err != nil || n != nonceOfBatch(t, o, first.BatchID)+1 {
		t.Fatalf("settlement key's nonce %d (%v): want one past the first batch's, nothing else sent", n, err)
	}
}

func (o *outbidRig) tokenBalance(t *testing.T, holder common.Address) *big.Int {
	t.Helper()
	b, err := chain.TokenBalance(context.Background(), o.c, o.net.Asset, holder)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (o *outbidRig) mined(t *testing.T, h string) bool {
	t.Helper()
	_, err := o.c.TransactionReceipt(context.Background(), common.HexToHash(h))
	if err != nil && err != ethereum.NotFound {
		t.Fatal(err)
	}
	return err == nil
}

// TestOutbidBatchIsSettledAtItsNonce: a batch transaction the base fee outgrew never gets a
// block. Recovery sees the market outbid it and settles its payments with a successor at the
// same nonce with fees that win: each payment settled once, by the successor, the old
// transaction never mined, the money moved exactly once.
func TestOutbidBatchIsSettledAtItsNonce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := newOutbidRig(t)
	rail := o.rail(t, SettleBatch)
	payerBefore, payToBefore := o.tokenBalance(t, addr2), o.tokenBalance(t, addr1)
	auths := o.queue(t, ctx, rail, 3)

	// Sent while blocks are cheap, not mined (the miner is off): the receipt wait times out.
	// The market has not moved, so the batch only goes pending.
	if n, err := o.worker.SettleBatch(ctx); n != 3 || err == nil {
		t.Fatalf("SettleBatch = %d, %v; want 3 and a receipt timeout", n, err)
	}
	first := o.payment(t, auths[0])
	if first.Status != ledger.StatusPending || first.TxHash == "" {
		t.Fatalf("after the timeout: %s tx %q; want pending with the batch transaction", first.Status, first.TxHash)
	}
	firstNonce := nonceOfBatch(t, o, first.BatchID)

	o.congest(t)
	if err := o.worker.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if st := o.worker.Stats(); st.BatchesSent != 1 || st.Replaced != 1 || st.Dead != 0 {
		t.Fatalf("worker stats %+v; want one batch sent, then replaced once", st)
	}
	var successor string
	for _, a := range auths {
		p := o.payment(t, a)
		if p.Status != ledger.StatusSettled || p.TxHash == "" || p.TxHash == first.TxHash {
			t.Fatalf("payment %s: %s by %q; want settled by a successor of %s", p.ID, p.Status, p.TxHash, first.TxHash)
		}
		if successor != "" && p.TxHash != successor {
			t.Fatalf("payments settled by %s and %s; want one successor", successor, p.TxHash)
		}
		successor = p.TxHash
		if p.BatchID == first.BatchID {
			t.Fatalf("payment %s still in the outbid batch %s", p.ID, p.BatchID)
		}
		o.wantNoHolds(t, ctx, a)
	}
	tx, _, err := o.c.TransactionByHash(ctx, common.HexToHash(successor))
	if err != nil || tx.Nonce() != firstNonce {
		t.Fatalf("successor %s at nonce %v (%v); want the outbid one's nonce %d", successor, tx.Nonce(), err, firstNonce)
	}
	if o.mined(t, first.TxHash) {
		t.Fatal("the outbid transaction was mined as well")
	}
	price := big.NewInt(3 * 10_000) // paidRequestUntil pays 10,000 each
	if got := new(big.Int).Sub(o.tokenBalance(t, addr1), payToBefore); got.Cmp(price) != 0 {
		t.Fatalf("payTo gained %v; want %v", got, price)
	}
	if got := new(big.Int).Sub(payerBefore, o.tokenBalance(t, addr2)); got.Cmp(price) != 0 {
		t.Fatalf("payer lost %v; want %v", got, price)
	}
}

// TestOutbidSyncSettlementIsSignedAgainAtItsNonce: a sync settlement answered pending
// because its transaction waited in the pool; when the market outbids it, recovery signs it
// again at its nonce, records the successor in its place (the first kept as replaced) and
// settles the payment by it, once.
func TestOutbidSyncSettlementIsSignedAgainAtItsNonce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := newOutbidRig(t)
	rail := o.rail(t, SettleSync)
	payToBefore := o.tokenBalance(t, addr1)
	a := o.verify(t, rail)
	if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
		t.Fatalf("sync settle with the miner off: %+v %v; want pending", s, err)
	}
	first := o.payment(t, a)
	if first.Status != ledger.StatusSubmitted && first.Status != ledger.StatusPending {
		t.Fatalf("after the timeout: %s; want submitted or pending", first.Status)
	}

	o.congest(t)
	if err := o.worker.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if st := o.worker.Stats(); st.Replaced != 1 || st.BatchesSent != 0 {
		t.Fatalf("worker stats %+v; want one replacement and no batch", st)
	}
	p := o.payment(t, a)
	if p.Status != ledger.StatusSettled || p.TxHash == first.TxHash || string(p.RawTx) == string(first.RawTx) {
		t.Fatalf("payment: %s by %s; want settled by a successor of %s, its signed bytes recorded", p.Status, p.TxHash, first.TxHash)
	}
	var successor types.Transaction
	if err := successor.UnmarshalBinary(p.RawTx); err != nil || successor.Hash().Hex() != p.TxHash {
		t.Fatalf("recorded bytes %v do not sign the recorded %s", err, p.TxHash)
	}
	var outbid types.Transaction
	if err := outbid.UnmarshalBinary(first.RawTx); err != nil || outbid.Nonce() != successor.Nonce() {
		t.Fatalf("successor at nonce %d, outbid at %d (%v); want one nonce", successor.Nonce(), outbid.Nonce(), err)
	}
	if o.mined(t, first.TxHash) || !o.mined(t, p.TxHash) {
		t.Fatal("want the successor mined and the outbid transaction not")
	}
	if got := new(big.Int).Sub(o.tokenBalance(t, addr1), payToBefore); got.Cmp(big.NewInt(10_000)) != 0 {
		t.Fatalf("payTo gained %v; want 10000", got)
	}
	o.wantNoHolds(t, ctx, a)
}

// nonceOfBatch is the nonce of the transaction recorded for batch id.
func nonceOfBatch(t *testing.T, o *outbidRig, id uuid.UUID) uint64 {
	t.Helper()
	b, err := o.book.GetBatch(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var tx types.Transaction
	if err := tx.UnmarshalBinary(b.RawTx); err != nil {
		t.Fatal(err)
	}
	return tx.Nonce()
}

// wantNoHolds: nothing of the payer's balance is held once its payments are final.
func (o *outbidRig) wantNoHolds(t *testing.T, ctx context.Context, a *payments.Authorization) {
	t.Helper()
	payer := common.HexToAddress(a.Payer)
	bal := o.tokenBalance(t, payer)
	scope := reservationScope(o.net.ChainID, o.net.Asset, payer)
	probe := "probe-" + uuid.NewString()
	if err := o.reserved.Reserve(ctx, scope, probe, bal, bal, time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("a finished payment still holds part of the payer's balance: %v", err)
	}
	if err := o.reserved.Release(ctx, scope, probe); err != nil {
		t.Fatal(err)
	}
}
