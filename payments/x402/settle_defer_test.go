package x402

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// nodeDown refuses every send before anything is signed or recorded, as an unreachable node.
type nodeDown struct{ *chain.Sender }

func (nodeDown) SendPersisted(context.Context, common.Address, []byte, uint64, func(*types.Transaction) error) (common.Hash, error) {
	return common.Hash{}, errors.New("chain: suggest gas tip: dial tcp 127.0.0.1:8545: connect: connection refused")
}

// A settlement that cannot start is queued only where a batch worker will settle the queue;
// without one the call is refused, unpaid and uncharged, rather than answered and never paid.
func TestSyncSettlementThatCannotStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newRecoveryRig(t)

	alone := NewChainSettler(r.book, nodeDown{r.sender}, r.net.Asset, 5*time.Second, nil)
	a := r.verify(t, r.rail(t, SettleSync, alone))
	st, err := r.rail(t, SettleSync, alone).Settle(ctx, a)
	if !errors.Is(err, payments.ErrNotRecorded) || !errors.Is(err, payments.ErrUnavailable) {
		t.Fatalf("without a batch worker: Settle = %+v, %v; want ErrNotRecorded (503, result withheld)", st, err)
	}
	if s := r.status(t, a); s == ledger.StatusQueued {
		t.Fatalf("queued with no worker to settle it")
	}

	batched := NewChainSettler(r.book, nodeDown{r.sender}, r.net.Asset, 5*time.Second, nil)
	batched.DeferToBatches()
	rail := r.rail(t, SettleSync, batched)
	a = r.verify(t, rail)
	if st, err := rail.Settle(ctx, a); err != nil || st.Status != payments.SettlementPending {
		t.Fatalf("with a batch worker: Settle = %+v, %v; want pending", st, err)
	}
	if s := r.status(t, a); s != ledger.StatusQueued {
		t.Fatalf("status %s, want queued for the batch worker", s)
	}
	if n, err := r.worker.SettleBatch(ctx); n != 1 || err != nil {
		t.Fatalf("SettleBatch = %d, %v", n, err)
	}
	if s := r.status(t, a); s != ledger.StatusSettled {
		t.Fatalf("status %s after the batch, want settled", s)
	}
}

// A call that outlives the reconciler's wait finds its payment closed as not charged: its
// result must be withheld, whichever way settlement goes, never delivered unpaid.
func TestSettleOfAPaymentClosedWhileItsCallRan(t *testing.T) {
	for _, deferring := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r := newRecoveryRig(t)
		if deferring {
			r.settler.DeferToBatches()
		}
		rail := r.rail(t, SettleSync, r.settler)
		a := r.verify(t, rail)
		if err := r.worker.Reconcile(ctx); err != nil { // the rig's worker waits 1 ns: the call "ran too long"
			t.Fatal(err)
		}
		if s := r.status(t, a); s != ledger.StatusNotCharged {
			t.Fatalf("status %s after reconciling, want not_charged (the premise)", s)
		}
		before := r.balance(t)
		st, err := rail.Settle(ctx, a)
		if !errors.Is(err, payments.ErrNotRecorded) {
			t.Errorf("deferring %v: Settle = %+v, %v on a payment closed not charged; want ErrNotRecorded (result withheld)", deferring, st, err)
		}
		if r.balance(t).Cmp(before) != 0 {
			t.Errorf("deferring %v: payTo's balance moved", deferring)
		}
		cancel()
	}
}

// lostCommit is a ledger whose move to submitted commits and then reports an error, as a
// write whose answer was lost.
type lostCommit struct{ *ledger.Memory }

func (l lostCommit) Transition(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) (ledger.Payment, error) {
	p, err := l.Memory.Transition(ctx, id, from, to, patch)
	if err == nil && to == ledger.StatusSubmitted {
		return ledger.Payment{}, errors.New("ledger: write payment: timeout: the answer was lost")
	}
	return p, err
}

// A settlement whose record committed but whose answer was lost goes on (recovery would send
// the recorded bytes anyway): the call is answered and paid, not refused and charged later.
func TestSettlementRecordedDespiteALostAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	book := lostCommit{r.book}
	settler := NewChainSettler(book, r.sender, r.net.Asset, 10*time.Second, nil)
	rail, err := NewRail(Config{Network: r.net, PayTo: r.payTo, Mode: SettleSync, Reservations: r.reserved},
		NewRPCReader(r.dev.Client(), rigReadTimeout), r.book, book, settler)
	if err != nil {
		t.Fatal(err)
	}
	a := r.verify(t, rail)
	before := r.balance(t)
	st, err := rail.Settle(ctx, a)
	if err != nil || st.Status != payments.SettlementSettled {
		t.Fatalf("Settle = %+v, %v; want settled (the record committed)", st, err)
	}
	if gained := new(big.Int).Sub(r.balance(t), before); gained.Int64() != 10_000 {
		t.Fatalf("payTo gained %v, want the price once", gained)
	}
	if s := r.status(t, a); s != ledger.StatusSettled {
		t.Fatalf("status %s, want settled", s)
	}
}

// The payer (or anyone holding the payment header) sends the authorization to the token before
// our first send: the money reached payTo by that transaction, so it settles the payment and
// the call is answered as paid, not refused as "nonce already used".
func TestFirstSendFindsTheAuthorizationUsedByAnother(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	rail := r.rail(t, SettleSync, r.settler)
	a := r.verify(t, rail)
	before := r.balance(t)
	h := r.useDirectly(t, ctx, a)
	st, err := rail.Settle(ctx, a)
	if err != nil || st.Status != payments.SettlementSettled || st.TxHash != h.Hex() {
		t.Fatalf("Settle = %+v, %v; want settled by %s", st, err, h.Hex())
	}
	if s := r.status(t, a); s != ledger.StatusSettled {
		t.Fatalf("status %s, want settled", s)
	}
	if gained := new(big.Int).Sub(r.balance(t), before); gained.Int64() != 10_000 {
		t.Fatalf("payTo gained %v, want the price once", gained)
	}
}

// TestFirstSendFindsTheAuthorizationUsedByAnotherWithConfirmations: the same with
// SETTLEMENT_CONFIRMATIONS set. The call is being answered now and the payer's own
// transaction is the only one there will be: it settles the payment at once, rather than
// leaving it refused (not charged) while its money moved.
func TestFirstSendFindsTheAuthorizationUsedByAnotherWithConfirmations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	confirming, err := chain.NewSender(r.dev.Client(), r.dev.OperatorKey(), r.dev.ChainID(), chain.SenderOptions{Confirmations: 3})
	if err != nil {
		t.Fatal(err)
	}
	settler := NewChainSettler(r.book, confirming, r.net.Asset, 10*time.Second, nil)
	rail := r.rail(t, SettleSync, settler)
	a := r.verify(t, rail)
	h := r.useDirectly(t, ctx, a)
	st, err := rail.Settle(ctx, a)
	if err != nil || st.Status != payments.SettlementSettled || st.TxHash != h.Hex() {
		t.Fatalf("Settle = %+v, %v; want settled by %s", st, err, h.Hex())
	}
}

// lostQueuedAnswer is a ledger whose move to queued commits and then reports Postgres away, as
// a statement whose answer was lost.
type lostQueuedAnswer struct{ *ledger.Memory }

func (l lostQueuedAnswer) Transition(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) (ledger.Payment, error) {
	p, err := l.Memory.Transition(ctx, id, from, to, patch)
	if err == nil && to == ledger.StatusQueued {
		return ledger.Payment{}, fmt.Errorf("ledger: move payment: %w: read tcp 127.0.0.1:5432: connection reset by peer", payments.ErrUnavailable)
	}
	return p, err
}

// A payment queued for the batch worker by a move whose answer was lost is charged by the
// worker: its call must be answered (pending), not withheld as not recorded while the money
// moves. The row says which it was.
func TestDeferredSettlementWhoseAnswerWasLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	book := lostQueuedAnswer{r.book}
	settler := NewChainSettler(book, nodeDown{r.sender}, r.net.Asset, 5*time.Second, nil)
	settler.DeferToBatches()
	rail, err := NewRail(Config{Network: r.net, PayTo: r.payTo, Mode: SettleSync, Reservations: r.reserved},
		NewRPCReader(r.dev.Client(), rigReadTimeout), book, book, settler)
	if err != nil {
		t.Fatal(err)
	}
	a := r.verify(t, rail)
	if st, err := rail.Settle(ctx, a); err != nil || st.Status != payments.SettlementPending {
		t.Fatalf("Settle = %+v, %v; want pending: the payment is queued and will be charged", st, err)
	}
	if s := r.status(t, a); s != ledger.StatusQueued {
		t.Fatalf("status %s, want queued", s)
	}
	before := r.balance(t)
	if n, err := r.worker.SettleBatch(ctx); n != 1 || err != nil {
		t.Fatalf("SettleBatch = %d, %v", n, err)
	}
	if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(new(big.Int).SetUint64(a.Amount)) != 0 {
		t.Fatalf("payTo gained %v, want the price %v once", got, a.Amount)
	}
}
