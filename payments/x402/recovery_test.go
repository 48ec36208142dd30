package x402

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// recoveryRig is a rail, settler and worker on the dev chain with the in-process ledger.
type recoveryRig struct {
	dev      *chain.DevChain
	net      Network
	book     *ledger.Memory
	sender   *chain.Sender
	settler  *ChainSettler
	worker   *Worker
	reserved *ledger.MemoryReservations
	payer    *ecdsa.PrivateKey
	payTo    common.Address
}

// rigReadTimeout bounds the rigs' chain reads: generous, because no test here expects a read
// to time out, and a loaded machine made a 3 s bound fail one.
const rigReadTimeout = 15 * time.Second

func newRecoveryRig(t *testing.T, opts ...chain.DevChainOptions) *recoveryRig {
	t.Helper()
	ctx := context.Background()
	devOpts := chain.DevChainOptions{AutoMine: true}
	if len(opts) > 0 {
		devOpts = opts[0]
	}
	dev, err := chain.StartSimulated(ctx, devOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	r := &recoveryRig{dev: dev, book: ledger.NewMemory(), reserved: ledger.NewMemoryReservations(), payTo: dev.Accounts()[0].Address}
	r.payer, _ = crypto.HexToECDSA(dev.Accounts()[1].PrivateKeyHex[2:])
	r.net = CustomNetwork(dev.ChainID().Uint64(), dev.Addresses().Token, "USD Coin", "2")
	if r.sender, err = chain.NewSender(dev.Client(), dev.OperatorKey(), dev.ChainID(), chain.SenderOptions{}); err != nil {
		t.Fatal(err)
	}
	r.settler = NewChainSettler(r.book, r.sender, r.net.Asset, 10*time.Second, nil)
	r.worker = NewWorker(WorkerConfig{Network: r.net, Batcher: dev.Addresses().Batcher, StaleAfter: time.Nanosecond, ReceiptTimeout: 10 * time.Second,
		Reservations: r.reserved},
		r.book, r.sender, r.settler)
	return r
}

func (r *recoveryRig) rail(t *testing.T, mode SettleMode, s Settler) *Rail {
	t.Helper()
	rail, err := NewRail(Config{Network: r.net, PayTo: r.payTo, Mode: mode, Reservations: r.reserved}, NewRPCReader(r.dev.Client(), rigReadTimeout), r.book, r.book, s)
	if err != nil {
		t.Fatal(err)
	}
	return rail
}

// verify sends one fresh payment through the rail's Verify, as the gateway does.
func (r *recoveryRig) verify(t *testing.T, rail *Rail) *payments.Authorization {
	t.Helper()
	hreq, price := r.request(t, rail)
	a, err := rail.Verify(context.Background(), hreq, price)
	if err != nil {
		t.Fatal(err)
	}
	a.JobID = uuid.NewString()
	return a
}

// request is a fresh paid request from the rig's payer, valid for an hour.
func (r *recoveryRig) request(t *testing.T, rail *Rail) (*http.Request, payments.Price) {
	t.Helper()
	return r.paidRequest(t, rail, r.payer, time.Hour)
}

// paidRequest is a fresh request paying the rail's dry-run price, signed by key, with an
// authorization valid for validFor from now.
func (r *recoveryRig) paidRequest(t *testing.T, rail *Rail, key *ecdsa.PrivateKey, validFor time.Duration) (*http.Request, payments.Price) {
	t.Helper()
	return r.paidRequestUntil(t, rail, key, strconv.FormatInt(time.Now().Add(validFor).Unix(), 10))
}

// paidRequestUntil is paidRequest for an authorization valid before validBefore (decimal).
func (r *recoveryRig) paidRequestUntil(t *testing.T, rail *Rail, key *ecdsa.PrivateKey, validBefore string) (*http.Request, payments.Price) {
	t.Helper()
	price := payments.Price{Amount: 10_000, Currency: "USDC", Resource: "/exec/tool"}
	req := rail.requirements(price)
	var nonce [32]byte
	_, _ = rand.Read(nonce[:])
	auth := EIP3009Authorization{From: crypto.PubkeyToAddress(key.PublicKey).Hex(), To: req.PayTo, Value: req.Amount,
		ValidAfter: "0", ValidBefore: validBefore, Nonce: common.Hash(nonce).Hex()}
	accepted := req
	p := &PaymentPayload{X402Version: 2, Accepted: &accepted, Payload: ExactEVMPayload{Signature: sign(t, key, req, auth), Authorization: auth}}
	hreq := httptest.NewRequest("POST", "/exec/tool", nil)
	hreq.Header.Set(HeaderPaymentSignature, mustEncode(t, p))
	return hreq, price
}

func (r *recoveryRig) balance(t *testing.T) *big.Int {
	t.Helper()
	b, err := chain.TokenBalance(context.Background(), r.dev.Client(), r.net.Asset, r.payTo)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r *recoveryRig) status(t *testing.T, a *payments.Authorization) ledger.Status {
	t.Helper()
	p, err := r.book.Get(context.Background(), uuid.MustParse(a.Reference))
	if err != nil {
		t.Fatal(err)
	}
	return p.Status
}

// crashAfterPersist records the signed transaction as the real settler does, then "crashes"
// before broadcasting it.
type crashAfterPersist struct{ *chain.Sender }

var errCrash = errors.New("crash before broadcast")

func (c crashAfterPersist) SendPersisted(ctx context.Context, to common.Address, data []byte, gas uint64, persist func(*types.Transaction) error) (common.Hash, error) {
	return c.Sender.SendPersisted(ctx, to, data, gas, func(tx *types.Transaction) error {
		if err := persist(tx); err != nil {
			return err
		}
		return errCrash
	})
}

func TestRecoveryAfterACrash(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	price := big.NewInt(10_000)

	t.Run("verified, then the process died before the tool answered: not charged", func(t *testing.T) {
		before := r.balance(t)
		a := r.verify(t, r.rail(t, SettleSync, r.settler))
		if err := r.worker.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if s := r.status(t, a); s != ledger.StatusNotCharged {
			t.Fatalf("status %s, want not_charged", s)
		}
		if got := r.balance(t); got.Cmp(before) != 0 {
			t.Fatalf("payTo balance moved: %v -> %v", before, got)
		}
	})

	t.Run("batch mode, the process died before the tool answered: nothing recorded, nothing charged, the nonce stays used", func(t *testing.T) {
		before := r.balance(t)
		rail := r.rail(t, SettleBatch, r.settler)
		hreq, price := r.request(t, rail)
		a, err := rail.Verify(ctx, hreq, price)
		if err != nil {
			t.Fatal(err)
		}
		// Batch mode writes the payment's row once the call is done; the call never ended.
		if _, err := r.book.Get(ctx, uuid.MustParse(a.Reference)); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("a payment whose call never ended is recorded: %v", err)
		}
		if err := r.worker.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if n, err := r.worker.SettleBatch(ctx); err != nil || n != 0 {
			t.Fatalf("SettleBatch = %d, %v; want nothing to settle", n, err)
		}
		if got := r.balance(t); got.Cmp(before) != 0 {
			t.Fatalf("payTo balance moved: %v -> %v", before, got)
		}
		_, err = rail.Verify(ctx, hreq, price) // the same payment again
		wantReason(t, err, ReasonNonceAlreadyUsed)
	})

	t.Run("transaction persisted, then the process died before broadcasting: recovery sends those bytes once", func(t *testing.T) {
		before := r.balance(t)
		crashing := NewChainSettler(r.book, crashAfterPersist{r.sender}, r.net.Asset, 10*time.Second, nil)
		rail := r.rail(t, SettleSync, crashing)
		a := r.verify(t, rail)
		s, err := rail.Settle(ctx, a)
		if err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("a crashed settlement must read as pending: %+v %v", s, err)
		}
		p, _ := r.book.Get(ctx, uuid.MustParse(a.Reference))
		if p.Status != ledger.StatusSubmitted || len(p.RawTx) == 0 {
			t.Fatalf("the signed transaction must be recorded before broadcast: %+v", p)
		}
		for range 2 { // a second pass finds nothing to do
			if err := r.worker.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
		}
		after, _ := r.book.Get(ctx, uuid.MustParse(a.Reference))
		if after.Status != ledger.StatusSettled || after.TxHash != p.TxHash {
			t.Fatalf("after recovery: %s with tx %s, want settled with the recorded %s", after.Status, after.TxHash, p.TxHash)
		}
		if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(price) != 0 {
			t.Fatalf("payTo gained %v, want exactly %v", got, price)
		}
	})

	t.Run("transaction persisted, then another took its nonce: recovery replaces the dead one and settles once", func(t *testing.T) {
		before := r.balance(t)
		crashing := NewChainSettler(r.book, crashAfterPersist{r.sender}, r.net.Asset, 10*time.Second, nil)
		rail := r.rail(t, SettleSync, crashing)
		a := r.verify(t, rail)
		if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("a crashed settlement must read as pending: %+v %v", s, err)
		}
		dead, _ := r.book.Get(ctx, uuid.MustParse(a.Reference))
		// Someone else with the settlement key (another replica, an operator) takes the nonce.
		h, err := r.sender.Send(ctx, r.net.Asset, chain.PackMint(common.Address{0x42}, big.NewInt(1)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.sender.WaitReceipt(ctx, h, 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		reconcileUntilFinal(t, r, a)
		after, _ := r.book.Get(ctx, uuid.MustParse(a.Reference))
		if after.Status != ledger.StatusSettled || after.TxHash == dead.TxHash || after.TxHash == "" {
			t.Fatalf("after recovery: %s with tx %s (dead %s), want settled by a new transaction", after.Status, after.TxHash, dead.TxHash)
		}
		if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(price) != 0 {
			t.Fatalf("payTo gained %v, want exactly %v", got, price)
		}
	})

	t.Run("batch transaction recorded, then another took its nonce: recovery settles its payments in a new batch", func(t *testing.T) {
		before := r.balance(t)
		rail := r.rail(t, SettleBatch, r.settler)
		a := r.verify(t, rail)
		if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("batch settle: %+v %v", s, err)
		}
		crashing := NewWorker(WorkerConfig{Network: r.net, Batcher: r.dev.Addresses().Batcher, ReceiptTimeout: 10 * time.Second}, r.book, crashAfterPersist{r.sender}, r.settler)
		if _, err := crashing.SettleBatch(ctx); !errors.Is(err, errCrash) {
			t.Fatalf("SettleBatch with a crash before broadcast = %v", err)
		}
		p, _ := r.book.Get(ctx, uuid.MustParse(a.Reference))
		dead := p.BatchID
		h, err := r.sender.Send(ctx, r.net.Asset, chain.PackMint(common.Address{0x43}, big.NewInt(1)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.sender.WaitReceipt(ctx, h, 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		reconcileUntilFinal(t, r, a)
		after, _ := r.book.Get(ctx, uuid.MustParse(a.Reference))
		if after.Status != ledger.StatusSettled || after.BatchID == dead || after.BatchID == uuid.Nil {
			t.Fatalf("after recovery: %s in batch %s (dead %s), want settled in a new batch", after.Status, after.BatchID, dead)
		}
		if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(price) != 0 {
			t.Fatalf("payTo gained %v, want exactly %v", got, price)
		}
	})

	t.Run("batch claimed, then the process died before recording its transaction: recovery settles it once", func(t *testing.T) {
		before := r.balance(t)
		rail := r.rail(t, SettleBatch, r.settler)
		a := r.verify(t, rail)
		if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("batch settle: %+v %v", s, err)
		}
		batch := uuid.New()
		claimed, err := r.book.ClaimQueued(ctx, 10, batch, r.worker.scope())
		if err != nil || len(claimed) != 1 {
			t.Fatalf("claim: %v %v", claimed, err)
		}
		// The crash: no batch transaction was recorded or sent.
		for range 2 {
			if err := r.worker.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if s := r.status(t, a); s != ledger.StatusSettled {
			t.Fatalf("status %s, want settled", s)
		}
		if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(price) != 0 {
			t.Fatalf("payTo gained %v, want exactly %v", got, price)
		}
	})
}

// reconcileUntilFinal runs recovery until a's payment is settled or failed, at most five
// passes. A pass may end in a receipt timeout: a node that cannot yet say whether a transaction
// is dead (its receipt index behind, as the simulated node's is under load) is waited for, and
// "pending" is the right answer then; the next pass decides. Any other error fails the test.
func reconcileUntilFinal(t *testing.T, r *recoveryRig, a *payments.Authorization) {
	t.Helper()
	for range 5 {
		if err := r.worker.Reconcile(context.Background()); err != nil && !errors.Is(err, chain.ErrReceiptTimeout) {
			t.Fatal(err)
		}
		if s := r.status(t, a); s == ledger.StatusSettled || s == ledger.StatusFailed {
			return
		}
	}
}

// failingCreates is a payment book whose Create fails, as the ledger's does when Postgres and
// its local spool both fail.
type failingCreates struct{ *ledger.Memory }

func (failingCreates) Create(context.Context, ledger.Payment) error {
	return errors.Join(payments.ErrUnavailable, errors.New("spool: disk full"))
}

// TestBatchPaymentThatCannotBeRecordedIsNotAnsweredAsPaid: batch mode writes a payment's row
// once the call is done; if it cannot, Settle says so (ErrNotRecorded, so the gateway withholds
// the result), and what the payment held of the payer's balance is released.
func TestBatchPaymentThatCannotBeRecordedIsNotAnsweredAsPaid(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	rail, err := NewRail(Config{Network: r.net, PayTo: r.payTo, Mode: SettleBatch, Reservations: r.reserved},
		NewRPCReader(r.dev.Client(), rigReadTimeout), r.book, failingCreates{r.book}, r.settler)
	if err != nil {
		t.Fatal(err)
	}
	a := r.verify(t, rail)
	s, err := rail.Settle(ctx, a)
	if !errors.Is(err, payments.ErrNotRecorded) || s != nil {
		t.Fatalf("Settle = %+v, %v; want ErrNotRecorded", s, err)
	}
	if _, err := r.book.Get(ctx, uuid.MustParse(a.Reference)); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("a payment that could not be recorded is found: %v", err)
	}
	v := a.State.(*pendingPayment).Verified
	// With nothing held, a balance of exactly one payment covers one more.
	if err := r.reserved.Reserve(ctx, reservationScope(v.ChainID, v.Asset, v.Payer), "probe", v.Value, v.Value, time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("the payment still holds the payer's balance: %v", err)
	}
}

// awayBook is the rig's book with Postgres gone away from its moves while away is set.
type awayBook struct {
	*ledger.Memory
	away atomic.Bool
}

func (b *awayBook) Transition(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) (ledger.Payment, error) {
	if b.away.Load() {
		return ledger.Payment{}, fmt.Errorf("ledger: move payment: %w: dial tcp 127.0.0.1:5432: connection refused", payments.ErrUnavailable)
	}
	return b.Memory.Transition(ctx, id, from, to, patch)
}

// TestSettlementThatCannotBeRecordedWithholdsTheResult: in sync mode, Postgres goes away
// between verify and settle. The transaction cannot be recorded, so it is not sent, and the
// payment cannot be queued either: answering "pending" would deliver a result that the
// reconciler later marks not charged (it is still verified). Settle says ErrNotRecorded, the
// gateway withholds the result, nothing moves, and recovery marks it not charged, rightly.
func TestSettlementThatCannotBeRecordedWithholdsTheResult(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	book := &awayBook{Memory: r.book}
	rail, err := NewRail(Config{Network: r.net, PayTo: r.payTo, Mode: SettleSync, Reservations: r.reserved},
		NewRPCReader(r.dev.Client(), rigReadTimeout), book, book, NewChainSettler(book, r.sender, r.net.Asset, 10*time.Second, nil))
	if err != nil {
		t.Fatal(err)
	}
	before := r.balance(t)
	a := r.verify(t, rail)
	book.away.Store(true)
	s, err := rail.Settle(ctx, a)
	if !errors.Is(err, payments.ErrNotRecorded) || !errors.Is(err, payments.ErrUnavailable) {
		t.Fatalf("settling with the book away = %+v, %v; want ErrNotRecorded and ErrUnavailable", s, err)
	}
	book.away.Store(false)
	if err := r.worker.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.status(t, a); st != ledger.StatusNotCharged {
		t.Fatalf("status %s, want not_charged: its result was withheld", st)
	}
	if got := r.balance(t); got.Cmp(before) != 0 {
		t.Fatalf("payTo balance moved: %v -> %v", before, got)
	}
}

// TestRecoveryOfUnsentBatchesLargerThanAPage: batches were claimed and the process died
// before recording their transactions, and there are more such payments than one page of
// Reconcile (200): the page ends inside the second batch. Every member of every batch still
// settles, exactly once; none is failed for being left out of a transaction signed from the
// page alone.
func TestRecoveryOfUnsentBatchesLargerThanAPage(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	stale := r.verify(t, r.rail(t, SettleSync, r.settler)) // abandoned, first on the page
	rail := r.rail(t, SettleBatch, r.settler)
	before := r.balance(t)
	var queued []*payments.Authorization
	for range 200 {
		a := r.verify(t, rail)
		if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("batch settle: %+v %v", s, err)
		}
		queued = append(queued, a)
	}
	for range 2 { // the crash: claimed, no transaction recorded or sent
		if claimed, err := r.book.ClaimQueued(ctx, 100, uuid.New(), r.worker.scope()); err != nil || len(claimed) != 100 {
			t.Fatalf("claim: %d, %v", len(claimed), err)
		}
	}
	for range 3 {
		if err := r.worker.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.status(t, stale); st != ledger.StatusNotCharged {
		t.Fatalf("the abandoned payment is %s, want not_charged", st)
	}
	for i, a := range queued {
		if st := r.status(t, a); st != ledger.StatusSettled {
			t.Fatalf("payment %d of 200 is %s, want settled", i, st)
		}
	}
	if got, want := new(big.Int).Sub(r.balance(t), before), big.NewInt(200*10_000); got.Cmp(want) != 0 {
		t.Fatalf("payTo gained %v, want exactly %v", got, want)
	}
}

// neverMined is a node that takes every transaction and never mines it.
type neverMined struct{ *chain.Sender }

func (neverMined) Rebroadcast(_ context.Context, raw []byte) (common.Hash, error) {
	var tx types.Transaction
	if err := tx.UnmarshalBinary(raw); err != nil {
		return common.Hash{}, err
	}
	return tx.Hash(), nil
}

func (neverMined) WaitReceipt(ctx context.Context, _ common.Hash, _ time.Duration) (*types.Receipt, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestStuckPaymentsAreTouchedEachPass: a settlement whose transaction is never mined stays
// pending, and every pass that waited for it in vain touches it (one more attempt, a new
// updated_at). Recovery reads a page of the least recently touched payments, so without
// that the same stuck page would be waited on at every pass and nothing behind it reached.
func TestStuckPaymentsAreTouchedEachPass(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t)
	rail := r.rail(t, SettleSync, NewChainSettler(r.book, crashAfterPersist{r.sender}, r.net.Asset, 10*time.Second, nil))
	a := r.verify(t, rail)
	if s, err := rail.Settle(ctx, a); err != nil || s.Status != payments.SettlementPending {
		t.Fatalf("a crashed settlement must read as pending: %+v %v", s, err)
	}
	stuck := NewWorker(WorkerConfig{Network: r.net, Batcher: r.dev.Addresses().Batcher, StaleAfter: time.Nanosecond, ReceiptTimeout: 20 * time.Millisecond},
		r.book, neverMined{r.sender}, r.settler)
	id := uuid.MustParse(a.Reference)
	var last ledger.Payment
	for pass := range 3 {
		if err := stuck.Reconcile(ctx); err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
		p, err := r.book.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != ledger.StatusPending || (pass > 0 && (!p.UpdatedAt.After(last.UpdatedAt) || p.Attempts != last.Attempts+1)) {
			t.Fatalf("pass %d: %s, attempts %d, updated %v; before it: attempts %d, updated %v; want pending and touched",
				pass, p.Status, p.Attempts, p.UpdatedAt, last.Attempts, last.UpdatedAt)
		}
		last = p
	}
}

// TestPendingSettlementIsRecoveredSoonerThanAnAbandonedCall: recovery takes up a payment whose
// transaction is recorded (pending) after OnChainAfter, without waiting the longest call
// (StaleAfter), which only a verified payment's call may still need.
func TestPendingSettlementIsRecoveredSoonerThanAnAbandonedCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	slow := &slowFirstReceipt{Sender: r.sender}
	settler := NewChainSettler(r.book, slow, r.net.Asset, 10*time.Second, nil)
	rail := r.rail(t, SettleSync, settler)
	a := r.verify(t, rail)
	if st, err := rail.Settle(ctx, a); err != nil || st.Status != payments.SettlementPending {
		t.Fatalf("Settle = %+v, %v; want pending (the receipt wait timed out)", st, err)
	}
	for _, tc := range []struct {
		onChainAfter time.Duration
		want         ledger.Status
	}{
		{time.Hour, ledger.StatusPending},
		{time.Millisecond, ledger.StatusSettled},
	} {
		time.Sleep(5 * time.Millisecond)
		w := NewWorker(WorkerConfig{Network: r.net, Batcher: r.dev.Addresses().Batcher, StaleAfter: time.Hour, OnChainAfter: tc.onChainAfter,
			ReceiptTimeout: 10 * time.Second, Reservations: r.reserved}, r.book, r.sender, r.settler)
		if err := w.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if s := r.status(t, a); s != tc.want {
			t.Fatalf("OnChainAfter %v, StaleAfter 1h: %s; want %s", tc.onChainAfter, s, tc.want)
		}
	}
}
