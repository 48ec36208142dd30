package x402

import (
	"context"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// TestBatchesAreSentWhileEarlierOnesAwaitTheirReceipts: with a block a second, three full
// batches are sent before the first is mined, so they share a block, and every payment settles
// once.
func TestBatchesAreSentWhileEarlierOnesAwaitTheirReceipts(t *testing.T) {
	ctx := context.Background()
	r := newRecoveryRig(t, chain.DevChainOptions{AutoMine: true, AutoMineEvery: time.Second})
	r.worker = NewWorker(WorkerConfig{Network: r.net, Batcher: r.dev.Addresses().Batcher, BatchSize: 2, InFlight: 3,
		ReceiptTimeout: 10 * time.Second, Reservations: r.reserved}, r.book, r.sender, r.settler)
	rail := r.rail(t, SettleBatch, r.settler)
	var queued []*payments.Authorization
	for range 6 {
		a := r.verify(t, rail)
		if _, err := rail.Settle(ctx, a); err != nil {
			t.Fatal(err)
		}
		queued = append(queued, a)
	}
	if err := r.worker.settleQueue(ctx); err != nil {
		t.Fatal(err)
	}
	blocks := map[uint64]bool{}
	txs := map[string]bool{}
	for _, a := range queued {
		p := r.payment(t, a)
		if p.Status != ledger.StatusSettled {
			t.Fatalf("payment %s is %s, want settled", p.ID, p.Status)
		}
		if !txs[p.TxHash] {
			txs[p.TxHash] = true
			rc, err := r.dev.Client().TransactionReceipt(ctx, common.HexToHash(p.TxHash))
			if err != nil {
				t.Fatal(err)
			}
			blocks[rc.BlockNumber.Uint64()] = true
		}
	}
	if len(txs) != 3 {
		t.Fatalf("%d batch transactions for 6 payments in batches of 2, want 3", len(txs))
	}
	if len(blocks) != 1 {
		t.Fatalf("the 3 batches were mined in %d blocks; sent one after another's receipt they cannot share one", len(blocks))
	}
}
