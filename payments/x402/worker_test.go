package x402

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/prometheus/client_golang/prometheus"

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

// TestWorkerCollectorReportsItsCounters: /metrics shows what Stats counts, by name.
func TestWorkerCollectorReportsItsCounters(t *testing.T) {
	w := NewWorker(WorkerConfig{}, ledger.NewMemory(), nil, nil)
	w.counts.batchesSent.Add(3)
	w.counts.replaced.Add(2)
	w.counts.dead.Add(1)
	reg := prometheus.NewRegistry()
	reg.MustRegister(w.Collector())
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
	}
	want := map[string]float64{"secureexec_x402_batches_sent_total": 3, "secureexec_x402_batches_reverted_total": 0,
		"secureexec_x402_settlements_replaced_total": 2, "secureexec_x402_settlements_dead_total": 1}
	if !maps.Equal(got, want) {
		t.Fatalf("gathered %v; want %v", got, want)
	}
}
