package chain

import (
	"context"
	"errors"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// noReceipts is a node whose receipt index lags for good: it has none.
type noReceipts struct{ Backend }

func (noReceipts) TransactionReceipt(context.Context, common.Hash) (*types.Receipt, error) {
	return nil, ethereum.NotFound
}

// lateReceipts answers "not found" for its first misses lookups, then asks the node.
type lateReceipts struct {
	ReceiptReader
	misses int32
	n      atomic.Int32
}

func (l *lateReceipts) TransactionReceipt(ctx context.Context, h common.Hash) (*types.Receipt, error) {
	if l.n.Add(1) <= l.misses {
		return nil, ethereum.NotFound
	}
	return l.ReceiptReader.TransactionReceipt(ctx, h)
}

// TestRebroadcastOfAMinedTransactionWhoseReceiptLags: the node refuses a mined transaction
// again as "nonce too low". Rebroadcast looks for its receipt through the Sender's receipts
// reader (not the backend's), and again for ReceiptLag while it is not found, before calling
// it dead: a receipt that shows up late is not a dead transaction.
func TestRebroadcastOfAMinedTransactionWhoseReceiptLags(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 1, AutoMine: true})
	ctx := testCtx(t)
	c, token := d.Client(), d.Addresses().Token
	s := newSender(t, c, d.OperatorKey(), d.ChainID())
	var raw []byte
	h, err := s.SendPersisted(ctx, token, PackMint(common.BigToAddress(big.NewInt(0x4000)), big.NewInt(1)), 0, func(tx *types.Transaction) error {
		var err error
		raw, err = tx.MarshalBinary()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitReceipt(ctx, h, 0); err != nil {
		t.Fatal(err)
	}
	waitPoolForgets(t, c, raw)
	for _, tc := range []struct {
		name     string
		backend  Backend
		receipts ReceiptReader
		dead     bool
	}{
		{"the backend lags, the receipts reader has it", noReceipts{c}, c, false},
		{"the receipts reader finds it on its fourth look", noReceipts{c}, &lateReceipts{ReceiptReader: c, misses: 3}, false},
		{"no receipt for ReceiptLag: dead", c, noReceipts{c}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lag := 300 * time.Millisecond
			rs, err := NewSender(tc.backend, d.OperatorKey(), d.ChainID(), SenderOptions{Receipts: tc.receipts, ReceiptLag: lag})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			got, err := rs.Rebroadcast(ctx, raw)
			if got != h {
				t.Fatalf("hash %s, want %s", got.Hex(), h.Hex())
			}
			if dead := errors.Is(err, ErrTxDead); dead != tc.dead || (!tc.dead && err != nil) {
				t.Fatalf("Rebroadcast = %v; want dead=%v", err, tc.dead)
			}
			if tc.dead && time.Since(start) < lag {
				t.Fatalf("called dead after %v, before ReceiptLag %v", time.Since(start), lag)
			}
		})
	}
}

// waitPoolForgets waits until the simulated node's pool no longer holds the mined transaction
// raw: for a moment after its receipt the pool still answers a send of it "already known"
// (Rebroadcast's success) instead of "nonce too low" (this test's dead case failed so once).
func waitPoolForgets(t *testing.T, c Backend, raw []byte) {
	t.Helper()
	tx := new(types.Transaction)
	if err := tx.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.SendTransaction(testCtx(t), tx)
		if err != nil && isNonceTooLow(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node still takes the mined transaction %s: %v", tx.Hash().Hex(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
