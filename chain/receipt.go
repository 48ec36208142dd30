package chain

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/secureexec/secureexec/contracts/bindings/settlementbatcher"
)

// Event topics the settlement code looks for.
var (
	// TransferTopic is keccak256("Transfer(address,address,uint256)").
	TransferTopic = crypto.Keccak256Hash([]byte("Transfer(address,address,uint256)"))
	// AuthorizationUsedTopic is keccak256("AuthorizationUsed(address,bytes32)").
	AuthorizationUsedTopic = crypto.Keccak256Hash([]byte("AuthorizationUsed(address,bytes32)"))
	// SettledTopic is keccak256("Settled(bytes32,address,bool,bytes)") of SettlementBatcher.
	SettledTopic = crypto.Keccak256Hash([]byte("Settled(bytes32,address,bool,bytes)"))
)

// DefaultReceiptTimeout bounds WaitReceipt when the caller's context has no deadline; it is
// the x402 reference facilitator's confirmation timeout (180 s).
const DefaultReceiptTimeout = 180 * time.Second

// DefaultPollEvery is the receipt polling interval used when none is given: dev chains mine
// in milliseconds, and bind.WaitMined's 1 s would dominate every settlement.
const DefaultPollEvery = 10 * time.Millisecond

// ReceiptReader is what WaitReceipt needs; every ethclient-compatible client has it.
type ReceiptReader interface {
	TransactionReceipt(ctx context.Context, txHash common.Hash) (*types.Receipt, error)
}

// WaitReceipt polls for the receipt of hash every pollEvery until it exists or ctx ends. A
// mined transaction is returned whatever its status (check receipt.Status). When ctx expires
// or is canceled first, the error wraps ErrReceiptTimeout and the context's error: the
// transaction is pending, not failed. Transient node errors are retried until the deadline. A
// receipt without a block number (some nodes serve one for a transaction still in their pool)
// is not a mined transaction: it is waited past too.
func WaitReceipt(ctx context.Context, r ReceiptReader, hash common.Hash, pollEvery time.Duration) (*types.Receipt, error) {
	if pollEvery <= 0 {
		pollEvery = DefaultPollEvery
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultReceiptTimeout)
	defer cancel()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastErr error
	for {
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("chain: receipt %s: %w: %w (last error: %v)", hash.Hex(), ErrReceiptTimeout, ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("chain: receipt %s: %w: %w", hash.Hex(), ErrReceiptTimeout, ctx.Err())
		case <-timer.C:
		}
		rcpt, err := r.TransactionReceipt(ctx, hash)
		switch {
		case err == nil && rcpt != nil && rcpt.BlockNumber != nil:
			return rcpt, nil
		case err == nil && rcpt != nil:
			lastErr = errors.New("a receipt without a block number")
		case err == nil, errors.Is(err, ethereum.NotFound):
			lastErr = nil
		case ctx.Err() != nil:
			// The deadline hit mid-request; report it as the timeout it is.
		default:
			lastErr = err
		}
		timer.Reset(pollEvery)
	}
}

// HeadReader reads the number of the chain's head; every ethclient-compatible client has it.
type HeadReader interface {
	BlockNumber(ctx context.Context) (uint64, error)
}

// WaitConfirmed is WaitReceipt for a receipt with confirmations blocks mined on top of its
// block. Once the head is that far ahead it reads the receipt again: a receipt the chain no
// longer holds, or holds from another block (a reorg dropped or moved the transaction), is
// waited for again, so what it returns is in the canonical chain, that deep, when it returns.
// Its deadline is ctx's, as WaitReceipt's.
func WaitConfirmed(ctx context.Context, r ReceiptReader, heads HeadReader, hash common.Hash, confirmations uint64, pollEvery time.Duration) (*types.Receipt, error) {
	if pollEvery <= 0 {
		pollEvery = DefaultPollEvery
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultReceiptTimeout)
	defer cancel()
	for {
		rcpt, err := WaitReceipt(ctx, r, hash, pollEvery)
		if err != nil {
			return nil, err
		}
		if !rcpt.BlockNumber.IsUint64() {
			return nil, fmt.Errorf("chain: receipt %s in block %v, beyond any head", hash.Hex(), rcpt.BlockNumber)
		}
		if err := waitHead(ctx, heads, rcpt.BlockNumber.Uint64()+confirmations, pollEvery); err != nil {
			return nil, fmt.Errorf("chain: receipt %s in block %v, waiting for %d confirmations: %w", hash.Hex(), rcpt.BlockNumber, confirmations, err)
		}
		again, err := r.TransactionReceipt(ctx, hash)
		switch {
		case err == nil && again != nil && again.BlockNumber != nil && again.BlockHash == rcpt.BlockHash:
			return again, nil
		case err == nil, errors.Is(err, ethereum.NotFound):
			// Reorged out, or into another block: wait for it, and its depth, again.
		case ctx.Err() != nil:
			return nil, fmt.Errorf("chain: receipt %s: %w: %w", hash.Hex(), ErrReceiptTimeout, ctx.Err())
		default:
			// The node cannot say now; ask again after a poll.
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("chain: receipt %s: %w: %w", hash.Hex(), ErrReceiptTimeout, ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// waitHead polls until the chain's head is at least block want. Its timeout is ErrReceiptTimeout.
func waitHead(ctx context.Context, heads HeadReader, want uint64, pollEvery time.Duration) error {
	for {
		head, err := heads.BlockNumber(ctx)
		if err == nil && head >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrReceiptTimeout, ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// HasTransfer reports whether a successful receipt carries Transfer(from, to, value) emitted by
// token: the proof settlement needs that money moved, independent of what the sender intended.
func HasTransfer(r *types.Receipt, token, from, to common.Address, value *big.Int) bool {
	if r == nil || r.Status != types.ReceiptStatusSuccessful || value == nil {
		return false
	}
	for _, l := range r.Logs {
		if l.Address != token || len(l.Topics) != 3 || l.Topics[0] != TransferTopic || len(l.Data) != 32 {
			continue
		}
		if common.BytesToAddress(l.Topics[1].Bytes()) == from &&
			common.BytesToAddress(l.Topics[2].Bytes()) == to &&
			new(big.Int).SetBytes(l.Data).Cmp(value) == 0 {
			return true
		}
	}
	return false
}

// BatchResult is the outcome of one item of a settleBatch call, read from its Settled event.
type BatchResult struct {
	Nonce   common.Hash
	From    common.Address
	Success bool
	// Reason is the token's revert message when Success is false ("" if it had none).
	Reason string
	// RawReason is the undecoded revert data.
	RawReason []byte
}

// ParseSettled returns the Settled events batcher emitted in r, in log order (= item order).
func ParseSettled(r *types.Receipt, batcher common.Address) ([]BatchResult, error) {
	if r == nil {
		return nil, errors.New("chain: nil receipt")
	}
	b := settlementbatcher.NewSettlementBatcher()
	var out []BatchResult
	for _, l := range r.Logs {
		if l.Address != batcher || len(l.Topics) == 0 || l.Topics[0] != SettledTopic {
			continue
		}
		ev, err := b.UnpackSettledEvent(l)
		if err != nil {
			return nil, fmt.Errorf("chain: decode Settled log %d: %w", l.Index, err)
		}
		out = append(out, BatchResult{
			Nonce:     common.Hash(ev.Nonce),
			From:      ev.From,
			Success:   ev.Success,
			Reason:    DecodeRevert(ev.Reason),
			RawReason: ev.Reason,
		})
	}
	return out, nil
}

// withDefaultTimeout gives ctx a deadline when it has none, so no chain call waits forever.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
