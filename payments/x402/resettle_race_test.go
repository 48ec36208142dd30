package x402

import (
	"context"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments/ledger"
)

// stallingReads is a node whose first eth_call (the first authorizationState a resettle reads)
// answers, then is held until release: a slow RPC while a batch lane checks its members.
type readBackend interface {
	chain.Backend
	chainReads
}

type stallingReads struct {
	readBackend
	once             sync.Once
	entered, release chan struct{}
}

func (s *stallingReads) CallContract(ctx context.Context, call ethereum.CallMsg, block *big.Int) ([]byte, error) {
	out, err := s.readBackend.CallContract(ctx, call, block)
	first := false
	s.once.Do(func() { first = true })
	if first {
		close(s.entered)
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return out, err
}

// slowReadsSender signs through the real sender, but its worker reads authorizations through
// stallingReads.
type slowReadsSender struct {
	*chain.Sender
	reads *stallingReads
}

func (s slowReadsSender) Backend() chain.Backend { return s.reads }

// countingSender counts batch transactions signed and persisted (first sends and replacements).
type countingSender struct {
	TxSender
	batcher common.Address
	signed  *atomic.Int32
}

func (c countingSender) count(to common.Address, persist func(*types.Transaction) error) func(*types.Transaction) error {
	return func(tx *types.Transaction) error {
		err := persist(tx)
		if err == nil && to == c.batcher {
			c.signed.Add(1)
		}
		return err
	}
}

func (c countingSender) SendPersisted(ctx context.Context, to common.Address, data []byte, gas uint64, persist func(*types.Transaction) error) (common.Hash, error) {
	return c.TxSender.SendPersisted(ctx, to, data, gas, c.count(to, persist))
}

func (c countingSender) Replace(ctx context.Context, raw []byte, to common.Address, data []byte, gas uint64, persist func(*types.Transaction) error) (common.Hash, error) {
	return c.TxSender.Replace(ctx, raw, to, data, gas, c.count(to, persist))
}

// TestLaneResettleOutlivingOnChainAfterIsNotSignedTwice: a batch lane whose transaction
// reverted moves its members to a new batch (MoveBatch, their last touch) and reads the chain
// for each (settleUsed) before it signs the new batch. If those reads outlast OnChainAfter,
// recovery (another replica) finds the new batch submitted with no recorded transaction,
// takes it for abandoned and signs it; the lane must not then sign the same members again.
func TestLaneResettleOutlivingOnChainAfterIsNotSignedTwice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRecoveryRig(t)
	before := r.balance(t)
	auths := r.queueBatch(t, ctx, 8)

	var signed atomic.Int32
	batcher := r.dev.Addresses().Batcher
	reads := &stallingReads{entered: make(chan struct{}), release: make(chan struct{})}
	reads.readBackend = r.dev.Client()
	const onChainAfter = 300 * time.Millisecond // stands for the 90 s default
	lane := NewWorker(WorkerConfig{Network: r.net, Batcher: batcher, StaleAfter: time.Hour, OnChainAfter: onChainAfter,
		ReceiptTimeout: 5 * time.Second, Reservations: r.reserved}, r.book, slowReadsSender{Sender: r.sender, reads: reads}, r.settler)
	lane.sender = countingSender{TxSender: lane.sender, batcher: batcher, signed: &signed}
	lane.gas.perItem = 1 // the first batch runs out of gas and reverts: its members go to a new batch
	laneDone := make(chan error, 1)
	go func() { _, err := lane.SettleBatch(ctx); laneDone <- err }()

	select {
	case <-reads.entered: // the lane moved its members and is reading the chain for them
	case err := <-laneDone:
		t.Fatalf("lane finished before its resettle: %v", err)
	}
	time.Sleep(onChainAfter + 200*time.Millisecond)
	recovery := NewWorker(WorkerConfig{Network: r.net, Batcher: batcher, StaleAfter: time.Hour, OnChainAfter: onChainAfter,
		ReceiptTimeout: 5 * time.Second, Reservations: r.reserved}, r.book, r.sender, r.settler)
	recovery.sender = countingSender{TxSender: r.sender, batcher: batcher, signed: &signed}
	if err := recovery.Reconcile(ctx); err != nil {
		t.Logf("recovery: %v", err)
	}
	close(reads.release)
	if err := <-laneDone; err != nil {
		t.Logf("lane: %v", err)
	}
	if got := new(big.Int).Sub(r.balance(t), before); got.Cmp(big.NewInt(8*10_000)) != 0 {
		t.Fatalf("payTo gained %v; want 8 payments", got)
	}
	for _, a := range auths {
		if p := r.payment(t, a); p.Status != ledger.StatusSettled {
			t.Fatalf("payment %s (%s); want settled", p.Status, p.ErrorReason)
		}
	}
	// The reverted batch, then one batch for its member: any more is the same authorization
	// signed into a second transaction.
	if n := signed.Load(); n != 2 {
		t.Fatalf("%d batch transactions signed for 8 payments; want 2 (the reverted one and one new batch)", n)
	}
}
