package chain

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// A transaction priced when it was signed can be outbid by the market before it is mined: the
// base fee rises above its fee cap, or the tips of others rise above its own. It then waits in
// the pool, perhaps for ever, and holds its nonce: every later transaction of the key waits
// behind it, and the authorizations it carries draw nearer their validBefore. Outbid tells such
// a transaction, and Replace signs its successor at the same nonce with fees that win.

// bumped is v raised by an eighth, rounded up: geth's and anvil's pools accept a replacement
// that offers at least 10% more on both the tip and the fee cap.
func bumped(v *big.Int) *big.Int {
	eighth := new(big.Int).Add(v, big.NewInt(7))
	eighth.Rsh(eighth, 3)
	return eighth.Add(eighth, v)
}

// Outbid reports whether the market asks more now than the signed transaction raw offers,
// and raw is not mined: its fee cap is below the head's base fee plus the node's suggested tip,
// or its tip is below that tip.
func (s *Sender) Outbid(ctx context.Context, raw []byte) (bool, error) {
	old, err := decodeTx(raw)
	if err != nil {
		return false, err
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultSendTimeout)
	defer cancel()
	// A mined transaction (one waiting for its confirmations, say) is never outbid: a
	// successor could only be refused, and recovery would record what the chain shows from a
	// block less deep than asked. A receipt without a block number is not one (WaitReceipt).
	if r, err := s.receipts.TransactionReceipt(ctx, old.Hash()); err == nil && r != nil && r.BlockNumber != nil {
		return false, nil
	} else if err != nil && !errors.Is(err, ethereum.NotFound) {
		return false, fmt.Errorf("chain: receipt of %s: %w", old.Hash().Hex(), err)
	}
	tip, head, err := s.market(ctx)
	if err != nil {
		return false, err
	}
	asked := new(big.Int).Add(head.BaseFee, tip)
	return old.GasFeeCap().Cmp(asked) < 0 || old.GasTipCap().Cmp(tip) < 0, nil
}

// Replace signs a call of data to `to` at the nonce of the signed transaction raw, with the
// larger of the market's fees (as a first send prices them) and raw's fees raised by an
// eighth, persists it as SendPersisted does and broadcasts it. gas 0 keeps raw's limit.
//
// The two transactions then compete for one nonce: at most one of them is ever mined, and the
// caller takes either's receipt as the outcome. The replacement is never signed at another
// nonce: a nonce already mined (raw, or another transaction of the key) is ErrNonceTaken, and
// a fee cap above SenderOptions.MaxFeePerGas is ErrFeeCapExceeded before anything is signed.
// raw signed by another key or for another chain is refused before anything is signed.
func (s *Sender) Replace(ctx context.Context, raw []byte, to common.Address, data []byte, gas uint64, persist func(*types.Transaction) error) (common.Hash, error) {
	old, err := decodeTx(raw)
	if err != nil {
		return common.Hash{}, err
	}
	// Only a transaction of this key on this chain holds a nonce a successor competes for: at
	// the nonce of another key's (one rotated out, say), both could be mined.
	if from, err := types.Sender(s.signer, old); err != nil || from != s.from {
		return common.Hash{}, fmt.Errorf("chain: replacing %s: not a transaction of %s on chain %s (%v)", old.Hash().Hex(), s.from.Hex(), s.chainID, err)
	}
	if gas == 0 {
		gas = old.Gas()
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultSendTimeout)
	defer cancel()
	tip, feeCap, err := s.replacementFees(ctx, old)
	if err != nil {
		return common.Hash{}, err
	}

	unlock, err := s.acquire(ctx)
	if err != nil {
		return common.Hash{}, err
	}
	defer unlock()
	s.synced = false // the next first send asks the node: this one does not move the count
	tx, err := types.SignNewTx(s.key, s.signer, &types.DynamicFeeTx{
		ChainID:   s.chainID,
		Nonce:     old.Nonce(),
		GasTipCap: tip,
		GasFeeCap: feeCap,
		Gas:       gas,
		To:        &to,
		Data:      data,
	})
	if err != nil {
		return common.Hash{}, fmt.Errorf("chain: sign replacement: %w", err)
	}
	if persist != nil {
		if err := persist(tx); err != nil {
			return common.Hash{}, fmt.Errorf("chain: persisting replacement before broadcast: %w", err)
		}
	}
	err = s.backend.SendTransaction(ctx, tx)
	switch {
	case err == nil || isAlreadyKnown(err):
		s.log.Info("chain: transaction replaced", "old", old.Hash().Hex(), "new", tx.Hash().Hex(), "nonce", tx.Nonce(),
			"tip", tip, "fee_cap", feeCap)
		return tx.Hash(), nil
	case isNonceTooLow(err):
		return tx.Hash(), fmt.Errorf("chain: replacing %s at nonce %d: %w", old.Hash().Hex(), old.Nonce(), ErrNonceTaken)
	default:
		return tx.Hash(), fmt.Errorf("chain: replacing %s at nonce %d: %w", old.Hash().Hex(), old.Nonce(), err)
	}
}

// replacementFees prices the successor of old: the market's fees, but never less than old's
// raised by an eighth, and never above the configured cap.
func (s *Sender) replacementFees(ctx context.Context, old *types.Transaction) (tip, feeCap *big.Int, err error) {
	tip, head, err := s.market(ctx)
	if err != nil {
		return nil, nil, err
	}
	feeCap = new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), tip)
	tip = bigMax(tip, bumped(old.GasTipCap()))
	feeCap = bigMax(feeCap, bumped(old.GasFeeCap()))
	feeCap = bigMax(feeCap, tip)
	// The least that wins now: the head's base fee and the tip, and old's offer outbid by the
	// pools' bump (the tip too cannot exceed the fee cap).
	need := bigMax(bigMax(new(big.Int).Add(head.BaseFee, tip), bumped(old.GasFeeCap())), tip)
	if feeCap, err = s.capped(feeCap, need); err != nil {
		return nil, nil, fmt.Errorf("chain: replacing %s: %w", old.Hash().Hex(), err)
	}
	return tip, feeCap, nil
}

func bigMax(a, b *big.Int) *big.Int {
	if a.Cmp(b) >= 0 {
		return a
	}
	return b
}

func decodeTx(raw []byte) (*types.Transaction, error) {
	var tx types.Transaction
	if err := tx.UnmarshalBinary(raw); err != nil {
		return nil, fmt.Errorf("chain: decode signed tx: %w", err)
	}
	return &tx, nil
}
