package x402

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"
)

// ContractCaller is the part of an Ethereum client the reader uses; *ethclient.Client and the
// simulated backend's client satisfy it.
type ContractCaller interface {
	CodeAt(ctx context.Context, account common.Address, blockNumber *big.Int) ([]byte, error)
	CallContract(ctx context.Context, call ethereum.CallMsg, blockNumber *big.Int) ([]byte, error)
}

// DefaultReadTimeout bounds each chain read when the reader is given no timeout.
const DefaultReadTimeout = 3 * time.Second

// Selectors of the calls the reader makes, with hand-packed arguments so that this package
// needs no generated bindings.
var (
	selectorBalanceOf          = [4]byte{0x70, 0xa0, 0x82, 0x31} // balanceOf(address)
	selectorAuthorizationState = [4]byte{0xe9, 0x4a, 0x01, 0x02} // authorizationState(address,bytes32)
	selectorIsValidSignature   = [4]byte{0x16, 0x26, 0xba, 0x7e} // isValidSignature(bytes32,bytes), also its magic value
)

// RPCReader is the ChainReader over a JSON-RPC client, reading at the latest block. Each read
// has its own deadline.
type RPCReader struct {
	c       ContractCaller
	timeout time.Duration
}

// NewRPCReader returns a reader over c whose reads each time out after timeout
// (DefaultReadTimeout when not positive).
func NewRPCReader(c ContractCaller, timeout time.Duration) *RPCReader {
	if timeout <= 0 {
		timeout = DefaultReadTimeout
	}
	return &RPCReader{c: c, timeout: timeout}
}

var _ ChainReader = (*RPCReader)(nil)

// CodeAt returns the code at addr.
func (r *RPCReader) CodeAt(ctx context.Context, addr common.Address) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	code, err := r.c.CodeAt(ctx, addr, nil)
	if err != nil {
		return nil, fmt.Errorf("eth_getCode %s: %w", addr.Hex(), err)
	}
	return code, nil
}

// erc1271Gas bounds one isValidSignature call: a multisig's or a passkey wallet's check fits
// well within it, and a wallet that loops costs the node this much per verification, not the
// node's whole eth_call cap.
const erc1271Gas = 2_000_000

// IsValidSignature1271 calls wallet.isValidSignature(digest, sig). As OpenZeppelin's
// SignatureChecker does, only a full return word equal to the magic value 0x1626ba7e is a yes;
// a revert, a failure inside the EVM (out of gas, an invalid opcode), short or other return
// data is a no.
func (r *RPCReader) IsValidSignature1271(ctx context.Context, wallet common.Address, digest common.Hash, sig []byte) (bool, error) {
	padded := (len(sig) + 31) / 32 * 32
	data := make([]byte, 4+32*3+padded)
	copy(data, selectorIsValidSignature[:])
	copy(data[4:36], digest[:])
	data[4+63] = 0x40 // offset of the bytes argument
	putUint64Word(data[68:100], uint64(len(sig)))
	copy(data[100:], sig)
	out, err := r.callWithGas(ctx, wallet, data, erc1271Gas)
	if errors.Is(err, ErrCallReverted) || isEVMFailure(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("isValidSignature on %s: %w", wallet.Hex(), err)
	}
	if len(out) < 32 {
		return false, nil
	}
	var want [32]byte
	copy(want[:], selectorIsValidSignature[:])
	return [32]byte(out[:32]) == want, nil
}

// BalanceOf calls token.balanceOf(owner).
func (r *RPCReader) BalanceOf(ctx context.Context, token, owner common.Address) (*big.Int, error) {
	data := make([]byte, 4+32)
	copy(data, selectorBalanceOf[:])
	copy(data[16:36], owner[:])
	out, err := r.call(ctx, token, data)
	if err != nil {
		return nil, fmt.Errorf("balanceOf on %s: %w", token.Hex(), err)
	}
	if len(out) < 32 {
		return nil, fmt.Errorf("balanceOf on %s: %d bytes returned, want 32: %w", token.Hex(), len(out), ErrCallReverted)
	}
	return new(big.Int).SetBytes(out[:32]), nil
}

// AuthorizationState calls token.authorizationState(authorizer, nonce): true when the nonce is
// used or canceled.
func (r *RPCReader) AuthorizationState(ctx context.Context, token, authorizer common.Address, nonce common.Hash) (bool, error) {
	data := make([]byte, 4+64)
	copy(data, selectorAuthorizationState[:])
	copy(data[16:36], authorizer[:])
	copy(data[36:68], nonce[:])
	out, err := r.call(ctx, token, data)
	if err != nil {
		return false, fmt.Errorf("authorizationState on %s: %w", token.Hex(), err)
	}
	if len(out) < 32 || !isZero(out[:31]) || out[31] > 1 {
		return false, fmt.Errorf("authorizationState on %s: return data is not an ABI bool: %w", token.Hex(), ErrCallReverted)
	}
	return out[31] == 1, nil
}

// call runs an eth_call with the reader's deadline; a revert is reported as ErrCallReverted.
func (r *RPCReader) call(ctx context.Context, to common.Address, data []byte) ([]byte, error) {
	return r.callWithGas(ctx, to, data, 0)
}

// callWithGas is call with at most gas (0: the node's cap).
func (r *RPCReader) callWithGas(ctx context.Context, to common.Address, data []byte, gas uint64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	out, err := r.c.CallContract(ctx, ethereum.CallMsg{To: &to, Data: data, Gas: gas}, nil)
	if err != nil {
		if isRevert(err) {
			return nil, fmt.Errorf("%w: %w", ErrCallReverted, err)
		}
		return nil, err
	}
	return out, nil
}

// isRevert tells an answer from the node that the call reverted (JSON-RPC error code 3, or the
// "execution reverted" message of nodes that use -32000) from a failure to get an answer.
func isRevert(err error) bool {
	var rpcErr rpc.Error
	if errors.As(err, &rpcErr) && rpcErr.ErrorCode() == 3 {
		return true
	}
	return strings.Contains(err.Error(), "execution reverted")
}

// evmFailures are how nodes word a call that failed inside the EVM rather than reverted: geth
// and the simulated backend ("out of gas", "invalid opcode: INVALID", "stack underflow", "invalid
// jump destination"), anvil ("EVM error OutOfGas", "EVM error InvalidFEOpcode"). Such a call
// got an answer from the contract, as a revert does.
var evmFailures = []string{"out of gas", "invalid opcode", "stack underflow", "stack overflow", "invalid jump", "evm error"}

// isEVMFailure tells a call that failed inside the EVM from a failure to reach the node.
func isEVMFailure(err error) bool {
	if err == nil {
		return false
	}
	msg := strings.ToLower(err.Error())
	for _, f := range evmFailures {
		if strings.Contains(msg, f) {
			return true
		}
	}
	return false
}

// putUint64Word writes n as a big-endian 32-byte ABI word.
func putUint64Word(word []byte, n uint64) {
	for i := 0; i < 8; i++ {
		word[31-i] = byte(n >> (8 * i))
	}
}
