package x402

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

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
