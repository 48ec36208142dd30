package chain

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

	"github.com/secureexec/secureexec/chain/chaintest"
)

const anvilKey0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

// manualAnvil is anvil with its auto-miner off: transactions wait in the pool until mine.
func manualAnvil(t *testing.T) *ethclient.Client {
	t.Helper()
	_, c := chaintest.StartAnvil(t, 31337)
	if err := c.Client().CallContext(testCtx(t), nil, "evm_setAutomine", false); err != nil {
		t.Fatalf("evm_setAutomine: %v", err)
	}
	return c
}

func mine(t *testing.T, c *ethclient.Client) {
	t.Helper()
	if err := c.Client().CallContext(testCtx(t), nil, "evm_mine"); err != nil {
		t.Fatalf("evm_mine: %v", err)
	}
}

// raiseBaseFee makes the next block's base fee gwei and mines it: what a congested chain does.
func raiseBaseFee(t *testing.T, c *ethclient.Client, gwei int64) {
	t.Helper()
	fee := new(big.Int).Mul(big.NewInt(gwei), big.NewInt(1e9))
	if err := c.Client().CallContext(testCtx(t), nil, "anvil_setNextBlockBaseFeePerGas", (*hexutil.Big)(fee)); err != nil {
		t.Fatalf("anvil_setNextBlockBaseFeePerGas: %v", err)
	}
	mine(t, c)
}

func sendRecorded(t *testing.T, s *Sender, to common.Address) (common.Hash, []byte) {
	t.Helper()
	var raw []byte
	h, err := s.SendPersisted(testCtx(t), to, nil, 0, func(tx *types.Transaction) (err error) {
		raw, err = tx.MarshalBinary()
		return err
	})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return h, raw
}

func receiptMissingNow(t *testing.T, c *ethclient.Client, h common.Hash) bool {
	t.Helper()
	_, err := c.TransactionReceipt(testCtx(t), h)
	if err != nil && !errors.Is(err, ethereum.NotFound) {
		t.Fatalf("receipt %s: %v", h.Hex(), err)
	}
	return errors.Is(err, ethereum.NotFound)
}

// TestReplaceOutbidTransaction: a transaction the base fee outgrew waits in the pool; Outbid
// says so, and Replace signs its successor at the same nonce with fees that win it a block.
// Exactly one of the two is mined and the key's nonce moves by one.
func TestReplaceOutbidTransaction(t *testing.T) {
	c := manualAnvil(t)
	ctx := testCtx(t)
	s := newSender(t, c, mustKey(t, anvilKey0), big.NewInt(31337))
	to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")

	h, raw := sendRecorded(t, s, to)
	if outbid, err := s.Outbid(ctx, raw); err != nil || outbid {
		t.Fatalf("Outbid of a freshly priced transaction = %v, %v; want false", outbid, err)
	}
	raiseBaseFee(t, c, 100)
	if !receiptMissingNow(t, c, h) {
		t.Fatal("a transaction whose fee cap is below the base fee was mined")
	}
	outbid, err := s.Outbid(ctx, raw)
	if err != nil || !outbid {
		t.Fatalf("Outbid = %v, %v; want true", outbid, err)
	}

	var raw2 []byte
	h2, err := s.Replace(ctx, raw, to, nil, 0, func(tx *types.Transaction) (err error) {
		raw2, err = tx.MarshalBinary()
		return err
	})
	if err != nil {
		t.Fatalf("Replace: %v", err)
	}
	old, _ := decodeTx(raw)
	repl, _ := decodeTx(raw2)
	if repl.Hash() != h2 || repl.Nonce() != old.Nonce() || repl.Gas() != old.Gas() {
		t.Fatalf("replacement %s nonce %d gas %d; want the persisted one at nonce %d with gas %d", h2.Hex(), repl.Nonce(), repl.Gas(), old.Nonce(), old.Gas())
	}
	if repl.GasTipCap().Cmp(bumped(old.GasTipCap())) < 0 || repl.GasFeeCap().Cmp(bumped(old.GasFeeCap())) < 0 {
		t.Fatalf("replacement fees %v/%v do not outbid %v/%v by an eighth", repl.GasTipCap(), repl.GasFeeCap(), old.GasTipCap(), old.GasFeeCap())
	}
	if outbid, err := s.Outbid(ctx, raw2); err != nil || outbid {
		t.Fatalf("Outbid of the replacement = %v, %v; want false", outbid, err)
	}

	mine(t, c)
	r, err := c.TransactionReceipt(ctx, h2)
	if err != nil || r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("replacement receipt: %v, %+v", err, r)
	}
	if !receiptMissingNow(t, c, h) {
		t.Fatal("both transactions of one nonce were mined")
	}
	if n, err := c.NonceAt(ctx, s.Address(), nil); err != nil || n != old.Nonce()+1 {
		t.Fatalf("nonce after the replacement was mined = %d, %v; want %d", n, err, old.Nonce()+1)
	}

	// The next first send takes the next nonce: no gap, no reuse.
	h3, raw3 := sendRecorded(t, s, to)
	if tx3, _ := decodeTx(raw3); tx3.Nonce() != old.Nonce()+1 {
		t.Fatalf("next send at nonce %d; want %d", tx3.Nonce(), old.Nonce()+1)
	}
	mine(t, c)
	if receiptMissingNow(t, c, h3) {
		t.Fatal("the next send was not mined")
	}
}

// TestReplaceOfAMinedNonceSignsNothingElse: when the transaction to replace was mined first,
// Replace reports ErrNonceTaken and does not sign the call again at another nonce (the caller
// reads the first one's receipt).
func TestReplaceOfAMinedNonceSignsNothingElse(t *testing.T) {
	c := manualAnvil(t)
	ctx := testCtx(t)
	s := newSender(t, c, mustKey(t, anvilKey0), big.NewInt(31337))
	to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")

	h, raw := sendRecorded(t, s, to)
	mine(t, c)
	if receiptMissingNow(t, c, h) {
		t.Fatal("the first transaction was not mined")
	}
	persisted := 0
	_, err := s.Replace(ctx, raw, to, nil, 0, func(*types.Transaction) error { persisted++; return nil })
	if !errors.Is(err, ErrNonceTaken) {
		t.Fatalf("Replace of a mined nonce: %v; want ErrNonceTaken", err)
	}
	if persisted != 1 {
		t.Fatalf("persist called %d times; want once (one transaction signed, at the old nonce)", persisted)
	}
	mine(t, c)
	if n, err := c.NonceAt(ctx, s.Address(), nil); err != nil || n != 1 {
		t.Fatalf("nonce = %d, %v; want 1: nothing else was sent", n, err)
	}
}

// TestReplaceRespectsTheFeeCap: a replacement that would offer more than MaxFeePerGas is not
// signed.
func TestReplaceRespectsTheFeeCap(t *testing.T) {
	c := manualAnvil(t)
	ctx := testCtx(t)
	head, err := c.HeaderByNumber(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	capFee := new(big.Int).Mul(head.BaseFee, big.NewInt(40))
	s, err := NewSender(c, mustKey(t, anvilKey0), big.NewInt(31337), SenderOptions{MaxFeePerGas: capFee})
	if err != nil {
		t.Fatal(err)
	}
	to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	_, raw := sendRecorded(t, s, to)
	raiseBaseFee(t, c, 100)
	persisted := false
	_, err = s.Replace(context.Background(), raw, to, nil, 0, func(*types.Transaction) error { persisted = true; return nil })
	if !errors.Is(err, ErrFeeCapExceeded) || persisted {
		t.Fatalf("Replace above the cap: %v, persisted %v; want ErrFeeCapExceeded and nothing signed", err, persisted)
	}
}

// firstReceiptSignal is a receipts reader that says when it first hands out a receipt.
type firstReceiptSignal struct {
	ReceiptReader
	once sync.Once
	seen chan struct{}
}

func (f *firstReceiptSignal) TransactionReceipt(ctx context.Context, h common.Hash) (*types.Receipt, error) {
	r, err := f.ReceiptReader.TransactionReceipt(ctx, h)
	if err == nil && r != nil {
		f.once.Do(func() { close(f.seen) })
	}
	return r, err
}

// TestWaitReceiptWithConfirmationsOutlivesAReorg: a receipt seen in a block that a reorg then
// drops is not returned; the wait goes on until the transaction is mined again and buried
// under the confirmations asked for, and returns the receipt of the canonical block.
func TestWaitReceiptWithConfirmationsOutlivesAReorg(t *testing.T) {
	c := manualAnvil(t)
	ctx := testCtx(t)
	rc := c.Client()
	seen := &firstReceiptSignal{ReceiptReader: c, seen: make(chan struct{})}
	s, err := NewSender(c, mustKey(t, anvilKey0), big.NewInt(31337), SenderOptions{Confirmations: 2, Receipts: seen})
	if err != nil {
		t.Fatal(err)
	}
	var snapshot hexutil.Big
	if err := rc.CallContext(ctx, &snapshot, "evm_snapshot"); err != nil {
		t.Fatal(err)
	}
	h, raw := sendRecorded(t, s, common.HexToAddress("0x000000000000000000000000000000000000dEaD"))
	mine(t, c)

	type result struct {
		r   *types.Receipt
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := s.WaitReceipt(ctx, h, 5*time.Millisecond)
		done <- result{r, err}
	}()
	<-seen.seen // the wait holds the receipt at depth 0 and waits for two more blocks

	// The block is reorged away and the chain grows past the depth without the transaction.
	var reverted bool
	if err := rc.CallContext(ctx, &reverted, "evm_revert", &snapshot); err != nil || !reverted {
		t.Fatalf("evm_revert: %v %v", reverted, err)
	}
	for range 3 {
		mine(t, c)
	}
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("WaitReceipt: %v", res.err)
		}
		t.Fatalf("WaitReceipt returned the receipt in block %v (%s), which a reorg dropped", res.r.BlockNumber, res.r.BlockHash.Hex())
	case <-time.After(300 * time.Millisecond):
	}

	// It is broadcast again (recovery re-broadcasts the recorded bytes) and mined, deep enough.
	if _, err := s.Rebroadcast(ctx, raw); err != nil {
		t.Fatalf("Rebroadcast: %v", err)
	}
	for range 3 {
		mine(t, c)
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("WaitReceipt: %v", res.err)
	}
	canonical, err := c.HeaderByNumber(ctx, res.r.BlockNumber)
	if err != nil || canonical.Hash() != res.r.BlockHash {
		t.Fatalf("receipt in block %s; the canonical block at %v is %v (%v)", res.r.BlockHash.Hex(), res.r.BlockNumber, canonical, err)
	}
	head, _ := c.HeaderByNumber(ctx, nil)
	if new(big.Int).Sub(head.Number, res.r.BlockNumber).Int64() < 2 {
		t.Fatalf("receipt at block %v returned with the head at %v; want 2 confirmations", res.r.BlockNumber, head.Number)
	}
}
