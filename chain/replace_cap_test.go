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

// busyNode is a node whose head base fee and suggested tip the test sets; it accepts every
// transaction and has no receipts.
type busyNode struct {
	base, tip *big.Int
	sent      []*types.Transaction
}

func (b *busyNode) TransactionReceipt(context.Context, common.Hash) (*types.Receipt, error) {
	return nil, ethereum.NotFound
}
func (b *busyNode) PendingNonceAt(context.Context, common.Address) (uint64, error) { return 0, nil }
func (b *busyNode) EstimateGas(context.Context, ethereum.CallMsg) (uint64, error)  { return 21000, nil }
func (b *busyNode) SuggestGasTipCap(context.Context) (*big.Int, error)             { return b.tip, nil }
func (b *busyNode) HeaderByNumber(context.Context, *big.Int) (*types.Header, error) {
	return &types.Header{Number: big.NewInt(10), BaseFee: b.base, GasLimit: 30_000_000}, nil
}
func (b *busyNode) SendTransaction(_ context.Context, tx *types.Transaction) error {
	b.sent = append(b.sent, tx)
	return nil
}

// TestReplaceUnderTheCapWhenTheCapWins: with SETTLEMENT_MAX_FEE_PER_GAS_WEI at 100 gwei, a
// transaction priced at 41 gwei is outbid when the base fee reaches 60 gwei. A successor
// offering the cap (100 gwei: above base fee + tip, and more than an eighth above the old
// offer) would be mined at once; the cap must cap the successor's fee, not refuse it because
// twice the base fee is above the cap.
func TestReplaceUnderTheCapWhenTheCapWins(t *testing.T) {
	gwei := func(n int64) *big.Int { return new(big.Int).Mul(big.NewInt(n), big.NewInt(1e9)) }
	node := &busyNode{base: gwei(20), tip: gwei(1)}
	s, err := NewSender(node, mustKey(t, anvilKey0), big.NewInt(31337), SenderOptions{MaxFeePerGas: gwei(100)})
	if err != nil {
		t.Fatal(err)
	}
	to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	_, raw := sendRecorded(t, s, to) // fee cap 2*20+1 = 41 gwei
	node.base = gwei(60)             // the market outgrows it
	if out, err := s.Outbid(testCtx(t), raw); err != nil || !out {
		t.Fatalf("Outbid = %v, %v; want true", out, err)
	}
	_, err = s.Replace(testCtx(t), raw, to, nil, 0, nil)
	if err != nil {
		t.Fatalf("Replace with a cap of 100 gwei at a base fee of 60 gwei: %v; want a successor at the cap", err)
	}
	repl := node.sent[len(node.sent)-1]
	if repl.GasFeeCap().Cmp(gwei(100)) > 0 || repl.GasFeeCap().Cmp(gwei(61)) < 0 {
		t.Fatalf("successor fee cap %v; want between base+tip (61 gwei) and the cap", repl.GasFeeCap())
	}
	// Above what the cap can pay, it is still refused before anything is signed.
	node.base = gwei(150)
	if _, err := s.Replace(testCtx(t), raw, to, nil, 0, nil); !errors.Is(err, ErrFeeCapExceeded) {
		t.Fatalf("Replace at a base fee above the cap: %v; want ErrFeeCapExceeded", err)
	}
}

// TestFirstSendOffersTheCapWhenTheCapPays: a first send offers twice the base fee plus the tip,
// lowered to the cap when that is less, and is refused only when the cap cannot pay the base
// fee and the tip.
func TestFirstSendOffersTheCapWhenTheCapPays(t *testing.T) {
	gwei := func(n int64) *big.Int { return new(big.Int).Mul(big.NewInt(n), big.NewInt(1e9)) }
	node := &busyNode{base: gwei(60), tip: gwei(1)}
	s, err := NewSender(node, mustKey(t, anvilKey0), big.NewInt(31337), SenderOptions{MaxFeePerGas: gwei(100)})
	if err != nil {
		t.Fatal(err)
	}
	to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	if _, err := s.Send(testCtx(t), to, nil); err != nil {
		t.Fatalf("Send at a base fee of 60 gwei under a cap of 100: %v", err)
	}
	if fc := node.sent[len(node.sent)-1].GasFeeCap(); fc.Cmp(gwei(100)) != 0 {
		t.Fatalf("fee cap %v; want the cap, 100 gwei (2*60+1 is more)", fc)
	}
	node.base = gwei(100)
	if _, err := s.Send(testCtx(t), to, nil); !errors.Is(err, ErrFeeCapExceeded) {
		t.Fatalf("Send at a base fee of 100 gwei under a cap of 100: %v; want ErrFeeCapExceeded", err)
	}
}

// bigEstimate is a busyNode whose gas estimate for every call is est.
type bigEstimate struct {
	*busyNode
	est uint64
}

func (b bigEstimate) EstimateGas(context.Context, ethereum.CallMsg) (uint64, error) {
	return b.est, nil
}

// TestGasLimitNeverAboveTheBlocks: the margin added to the node's estimate must not carry the
// limit past the head block's gas limit: a node refuses such a transaction ("exceeds block gas
// limit") although the call fits in a block, and SendPersisted promises never to send one.
func TestGasLimitNeverAboveTheBlocks(t *testing.T) {
	node := &busyNode{base: big.NewInt(1e9), tip: big.NewInt(1e9)}
	to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	for _, est := range []uint64{21_000, 28_000_000, 30_000_000, 1 << 62} {
		s, err := NewSender(bigEstimate{node, est}, mustKey(t, anvilKey0), big.NewInt(31337), SenderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.SendPersisted(testCtx(t), to, nil, 0, nil); err != nil {
			t.Fatalf("estimate %d: %v", est, err)
		}
		gas := node.sent[len(node.sent)-1].Gas()
		if gas > 30_000_000 || gas < min(est, 30_000_000) {
			t.Fatalf("estimate %d: gas limit %d; want at least the estimate and at most the block's 30,000,000", est, gas)
		}
	}
}

// TestReplaceOnlyItsOwnTransactions: a recorded transaction signed by another key (the
// settlement key was rotated) or for another chain holds no nonce of this key: a "successor"
// at its nonce would compete with nothing, and both could be mined. Replace refuses it and
// signs nothing.
func TestReplaceOnlyItsOwnTransactions(t *testing.T) {
	node := &busyNode{base: big.NewInt(1e9), tip: big.NewInt(1e9)}
	to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	s, err := NewSender(node, mustKey(t, anvilKey0), big.NewInt(31337), SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewSender(node, mustKey(t, "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"), big.NewInt(31337), SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	otherChain, err := NewSender(node, mustKey(t, anvilKey0), big.NewInt(8453), SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, from := range map[string]*Sender{"another key": other, "another chain": otherChain} {
		_, raw := sendRecorded(t, from, to)
		sent := len(node.sent)
		if _, err := s.Replace(testCtx(t), raw, to, nil, 0, nil); err == nil || len(node.sent) != sent {
			t.Fatalf("%s: Replace = %v, %d transactions sent; want an error and none", name, err, len(node.sent)-sent)
		}
	}
	_, raw := sendRecorded(t, s, to)
	if _, err := s.Replace(testCtx(t), raw, to, nil, 0, nil); err != nil {
		t.Fatalf("Replace of its own transaction: %v", err)
	}
}

// heldBroadcast is a busyNode whose SendTransaction of hold waits for release (after saying
// so on entered), and which counts PendingNonceAt calls.
type heldBroadcast struct {
	*busyNode
	hold             common.Hash
	entered, release chan struct{}
	nonceReads       atomic.Int32
}

func (h *heldBroadcast) PendingNonceAt(ctx context.Context, a common.Address) (uint64, error) {
	h.nonceReads.Add(1)
	return h.busyNode.PendingNonceAt(ctx, a)
}

func (h *heldBroadcast) SendTransaction(ctx context.Context, tx *types.Transaction) error {
	if tx.Hash() == h.hold {
		close(h.entered)
		<-h.release
	}
	return h.busyNode.SendTransaction(ctx, tx)
}

// TestRebroadcastHoldsTheSendLock: recovery re-broadcasts a persisted transaction whose nonce
// the pool may have forgotten; a send that read the pending nonce meanwhile would sign a second
// transaction at that nonce, and one of the two would be refused or would evict the other. So
// the re-broadcast happens under the send lock, as every sign-and-broadcast of the key does:
// no send reads the nonce while it is under way.
func TestRebroadcastHoldsTheSendLock(t *testing.T) {
	node := &busyNode{base: big.NewInt(1e9), tip: big.NewInt(1e9)}
	to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	key := mustKey(t, anvilKey0)
	first, err := NewSender(node, key, big.NewInt(31337), SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, raw := sendRecorded(t, first, to)
	held := &heldBroadcast{busyNode: node, hold: h, entered: make(chan struct{}), release: make(chan struct{})}
	s, err := NewSender(held, key, big.NewInt(31337), SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Rebroadcast(testCtx(t), raw)
		done <- err
	}()
	<-held.entered
	ctx, cancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
	defer cancel()
	_, sendErr := s.Send(ctx, to, []byte{1})
	reads := held.nonceReads.Load()
	close(held.release)
	if err := <-done; err != nil {
		t.Fatalf("Rebroadcast: %v", err)
	}
	if reads != 0 || sendErr == nil {
		t.Fatalf("a send read the pending nonce %d times (send: %v) while a re-broadcast was under way", reads, sendErr)
	}
}

// rpcError is a JSON-RPC error answer as go-ethereum's client returns it.
type rpcError struct {
	code int
	msg  string
	data any
}

func (e rpcError) Error() string  { return e.msg }
func (e rpcError) ErrorCode() int { return e.code }
func (e rpcError) ErrorData() any { return e.data }

// failingEstimate is a busyNode whose gas estimates fail with err.
type failingEstimate struct {
	*busyNode
	err error
}

func (f failingEstimate) EstimateGas(context.Context, ethereum.CallMsg) (uint64, error) {
	return 0, f.err
}

// TestOnlyARevertIsARevert: a call the node simulated and saw revert is ErrExecutionReverted
// (settlement then refuses the payment for good); a node error that merely carries JSON-RPC
// error data, as providers' rate-limit answers do, is a transient failure, not a revert.
func TestOnlyARevertIsARevert(t *testing.T) {
	revertData := "0x08c379a00000000000000000000000000000000000000000000000000000000000000020000000000000000000000000000000000000000000000000000000000000000c617574686f72697a6174696f6e0000000000000000000000000000000000000000"
	for _, tc := range []struct {
		name     string
		err      error
		reverted bool
	}{
		{"geth's revert with a reason", rpcError{3, "execution reverted: authorization", revertData}, true},
		{"a revert without data", rpcError{-32000, "execution reverted", nil}, true},
		{"code 3 under another message", rpcError{3, "reverted", revertData}, true},
		{"a rate limit with data", rpcError{-32005, "daily request count exceeded, request rate limited", map[string]any{"see": "https://example.invalid"}}, false},
		{"an internal error with data", rpcError{-32603, "internal error", "upstream timeout"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := failingEstimate{&busyNode{base: big.NewInt(1e9), tip: big.NewInt(1e9)}, tc.err}
			s, err := NewSender(node, mustKey(t, anvilKey0), big.NewInt(31337), SenderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Send(testCtx(t), common.Address{1}, nil)
			if err == nil || errors.Is(err, ErrExecutionReverted) != tc.reverted {
				t.Fatalf("Send = %v; want reverted=%v", err, tc.reverted)
			}
		})
	}
}

// pendingReceipts is a busyNode that serves a receipt without a block for every transaction,
// as some nodes do for one still in their pool.
type pendingReceipts struct{ *busyNode }

func (pendingReceipts) TransactionReceipt(_ context.Context, h common.Hash) (*types.Receipt, error) {
	return &types.Receipt{TxHash: h, Status: types.ReceiptStatusSuccessful}, nil
}

// TestOutbidLooksPastAReceiptWithoutABlock: a receipt without a block number is not a mined
// transaction (WaitReceipt waits past it); Outbid must not take it for one and leave an outbid
// transaction waiting in the pool for good.
func TestOutbidLooksPastAReceiptWithoutABlock(t *testing.T) {
	gwei := func(n int64) *big.Int { return new(big.Int).Mul(big.NewInt(n), big.NewInt(1e9)) }
	node := &busyNode{base: gwei(20), tip: gwei(1)}
	s, err := NewSender(pendingReceipts{node}, mustKey(t, anvilKey0), big.NewInt(31337), SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, raw := sendRecorded(t, s, common.HexToAddress("0x000000000000000000000000000000000000dEaD"))
	node.base = gwei(60)
	if out, err := s.Outbid(testCtx(t), raw); err != nil || !out {
		t.Fatalf("Outbid = %v, %v; want true: the receipt has no block, the market outgrew the fees", out, err)
	}
}
