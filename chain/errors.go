package chain

import (
	"encoding/hex"
	"errors"
	"strings"

	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/rpc"
)

// Errors carry a snake_case reason that callers map to their own codes; wrap them with %w.
var (
	// ErrReceiptTimeout means the receipt did not appear before the deadline: the transaction
	// may still be mined, so callers must report it as pending, never as failed.
	ErrReceiptTimeout = errors.New("receipt_timeout")
	// ErrExecutionReverted means the node simulated the call and it reverted; RevertReason
	// extracts the contract's message.
	ErrExecutionReverted = errors.New("execution_reverted")
	// ErrTxDead means a signed transaction can never be mined: the node refused it as "nonce
	// too low" and holds no receipt of it (another transaction took its nonce).
	ErrTxDead = errors.New("transaction_dead")
	// ErrTxReverted means a transaction was mined with status 0.
	ErrTxReverted = errors.New("transaction_reverted")
	// ErrNoBaseFee means the chain's head has no base fee, so EIP-1559 fees cannot be priced.
	ErrNoBaseFee = errors.New("chain_without_base_fee")
	// ErrFeeCapExceeded means the computed max fee per gas is above the configured cap.
	ErrFeeCapExceeded = errors.New("fee_cap_exceeded")
	// ErrUnderpriced means the node refused a signed transaction because its fee cap is below
	// the base fee: the market outbid it, and it waits for a block that is cheap enough, or
	// for Sender.Replace.
	ErrUnderpriced = errors.New("transaction_underpriced")
	// ErrNonceTaken means a replacement found the nonce of the transaction it was to replace
	// already mined (that transaction, or another of the key's): nothing was signed at another
	// nonce, and the caller reads the receipts of what it had sent.
	ErrNonceTaken = errors.New("nonce_taken")
)

// RevertReason returns the Error(string) message carried by a node's "execution reverted"
// error (JSON-RPC error data), or "" when err carries none.
func RevertReason(err error) string {
	var de rpc.DataError
	if !errors.As(err, &de) {
		return ""
	}
	s, ok := de.ErrorData().(string)
	if !ok {
		return ""
	}
	data, decErr := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if decErr != nil {
		return ""
	}
	return DecodeRevert(data)
}

// DecodeRevert turns raw revert data (e.g. the reason of a Settled event) into its message:
// the Error(string) text, a Panic(uint256) description, or "" when it is neither.
func DecodeRevert(data []byte) string {
	msg, err := abi.UnpackRevert(data)
	if err != nil {
		return ""
	}
	return msg
}

// isReverted reports whether a node error is a simulated revert rather than a transport
// failure; geth and anvil both say "execution reverted", and answer a revert carrying data
// with code 3. Error data alone proves nothing: providers attach it to rate limits and
// internal errors too.
func isReverted(err error) bool {
	if err == nil {
		return false
	}
	var re rpc.Error
	return (errors.As(err, &re) && re.ErrorCode() == 3) || strings.Contains(err.Error(), "execution reverted")
}
