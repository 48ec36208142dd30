package x402

import (
	"context"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments/ledger"
)

// gethPool is anvil seen through geth's pool: a transaction the base fee outgrew is kept in
// the pool (anvil drops it), so the pending nonce stays past it until it is mined or replaced.
type gethPool struct {
	*ethclient.Client
	held uint64 // the outbid transaction's nonce
}

func (g *gethPool) PendingNonceAt(ctx context.Context, a common.Address) (uint64, error) {
	n, err := g.Client.PendingNonceAt(ctx, a)
	if err != nil {
		return 0, err
	}
	mined, err := g.Client.NonceAt(ctx, a, nil)
	if err != nil {
		return 0, err
	}
	if mined <= g.held && n <= g.held {
		n = g.held + 1
	}
	return n, nil
}

type failingNonces struct{}

func (failingNonces) AuthorizationState(context.Context, common.Address, common.Address, common.Hash) (bool, error) {
	return false, errors.New("node unavailable")
}

// TestOutbidBatchSurvivesAFailedRead: recovery finds a batch transaction outbid, moves its
// payments to a new batch and then cannot read one authorization's state (a node hiccup).
// The next pass must still sign their successor at the outbid transaction's nonce: signed at
// a later one, it waits behind the outbid transaction, which holds its nonce in the pool.
func TestOutbidBatchSurvivesAFailedRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := newOutbidRig(t)
	rail := o.rail(t, SettleBatch)
	auths := o.queue(t, ctx, rail, 2)
	if n, err := o.worker.SettleBatch(ctx); n != 2 || err == nil {
		t.Fatalf("SettleBatch = %d, %v; want 2 and a receipt timeout", n, err)
	}
	first := o.payment(t, auths[0])
	firstNonce := nonceOfBatch(t, o, first.BatchID)
	o.congest(t)

	sender, err := chain.NewSender(&gethPool{Client: o.c, held: firstNonce}, key0, big.NewInt(31337), chain.SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	settler := NewChainSettler(o.book, sender, o.net.Asset, 300*time.Millisecond, nil)
	cfg := WorkerConfig{Network: o.net, Batcher: o.addrs.Batcher, StaleAfter: time.Nanosecond, ReceiptTimeout: outbidReceiptWait, Reservations: o.reserved}
	hiccup := NewWorker(cfg, o.book, sender, settler)
	hiccup.uses = &useFinder{token: o.net.Asset, nonces: failingNonces{}, logs: o.c, receipts: o.c, window: defaultLogWindow}
	if err := hiccup.Reconcile(ctx); err == nil {
		t.Fatal("Reconcile with a failing read: nil; want an error")
	}
	w := NewWorker(cfg, o.book, sender, settler)
	for range 2 {
		_ = w.Reconcile(ctx)
	}
	for _, a := range auths {
		p := o.payment(t, a)
		if p.Status != ledger.StatusSettled {
			t.Fatalf("payment %s: %s (batch %s); want settled by a successor at the outbid nonce %d", p.ID, p.Status, p.BatchID, firstNonce)
		}
	}
}
