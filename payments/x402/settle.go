package x402

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// TxSender is what settlement needs from a chain: sign and persist before broadcast, wait
// for the receipt, and re-broadcast after a crash. *chain.Sender satisfies it.
type TxSender interface {
	SendPersisted(ctx context.Context, to common.Address, data []byte, persist func(*types.Transaction) error) (common.Hash, error)
	WaitReceipt(ctx context.Context, hash common.Hash, pollEvery time.Duration) (*types.Receipt, error)
	Rebroadcast(ctx context.Context, raw []byte) (common.Hash, error)
}

// ChainSettler settles with the gateway's own settlement key.
type ChainSettler struct {
	book           paymentBook
	sender         TxSender
	token          common.Address
	receiptTimeout time.Duration
	pollEvery      time.Duration
	log            *slog.Logger
}

// NewChainSettler returns a settler sending transferWithAuthorization from the sender's key.
// A receipt not seen within receiptTimeout leaves the payment pending.
func NewChainSettler(book paymentBook, sender TxSender, token common.Address, receiptTimeout time.Duration, log *slog.Logger) *ChainSettler {
	if receiptTimeout <= 0 {
		receiptTimeout = 30 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &ChainSettler{book: book, sender: sender, token: token, receiptTimeout: receiptTimeout, pollEvery: 20 * time.Millisecond, log: log}
}

// settle moves one verified (or queued) payment's money and records every step, so that a
// crash at any point is recovered without a second charge: the signed transaction is
// persisted before broadcast, and recovery re-broadcasts those bytes.
func (s *ChainSettler) settle(ctx context.Context, p *pendingPayment) (*payments.Settlement, error) {
	data, err := chain.PackTransferWithAuthorization(p.Auth)
	if err != nil {
		return nil, fmt.Errorf("x402: packing the transfer: %w", err)
	}
	hash, err := s.sender.SendPersisted(ctx, s.token, data, func(tx *types.Transaction) error {
		raw, err := tx.MarshalBinary()
		if err != nil {
			return err
		}
		_, err = s.book.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified, ledger.StatusQueued}, ledger.StatusSubmitted,
			ledger.Patch{JobID: p.JobID, TxHash: tx.Hash().Hex(), RawTx: raw, Attempt: true})
		return err
	})
	switch {
	case errors.Is(err, chain.ErrExecutionReverted):
		// The token refuses the authorization (spent, expired, cancelled, moved funds): it
		// can never settle, and nothing was broadcast, so nothing was charged.
		reason := settleReason(chain.RevertReason(err))
		if _, terr := s.book.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified, ledger.StatusQueued}, ledger.StatusNotCharged,
			ledger.Patch{JobID: p.JobID, ErrorReason: reason}); terr != nil {
			s.log.Error("x402: recording a failed settlement", "payment", p.ID, "err", terr)
		}
		return nil, refuse(reason, "the token refused the authorization at settlement: "+chain.RevertReason(err))
	case err != nil:
		// Not broadcast (or not known to be): owed, not lost. Queue it for the reconciler.
		s.log.Warn("x402: settlement deferred", "payment", p.ID, "err", err)
		if _, terr := s.book.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified}, ledger.StatusQueued, ledger.Patch{JobID: p.JobID}); terr != nil &&
			!errors.Is(terr, ledger.ErrConflict) {
			s.log.Error("x402: queueing a deferred settlement", "payment", p.ID, "err", terr)
		}
		return &payments.Settlement{Status: payments.SettlementPending, ID: p.ID.String()}, nil
	}
	return s.await(ctx, p, hash)
}

// await waits for the receipt of a broadcast settlement and records the outcome.
func (s *ChainSettler) await(ctx context.Context, p *pendingPayment, hash common.Hash) (*payments.Settlement, error) {
	wctx, cancel := context.WithTimeout(ctx, s.receiptTimeout)
	defer cancel()
	receipt, err := s.sender.WaitReceipt(wctx, hash, s.pollEvery)
	if err != nil {
		// A timeout is "pending": the transaction may still land. The reconciler finishes it.
		if _, terr := s.book.Transition(context.WithoutCancel(ctx), p.ID, []ledger.Status{ledger.StatusSubmitted}, ledger.StatusPending, ledger.Patch{}); terr != nil {
			s.log.Error("x402: recording a pending settlement", "payment", p.ID, "err", terr)
		}
		return &payments.Settlement{Status: payments.SettlementPending, ID: p.ID.String(), TxHash: hash.Hex()}, nil
	}
	return s.record(ctx, p.ID, p.Auth, receipt)
}

// record turns a receipt into the payment's final state.
func (s *ChainSettler) record(ctx context.Context, pid uuid.UUID, a chain.Authorization, receipt *types.Receipt) (*payments.Settlement, error) {
	return recordReceipt(ctx, s.book, s.log, s.token, pid, a, receipt, []ledger.Status{ledger.StatusSubmitted, ledger.StatusPending})
}

// recordReceipt moves a payment from one of the statuses in from to settled when receipt
// carries the Transfer the authorization promised, and to failed otherwise: whoever sent the
// transaction, the chain's receipt is what decides.
func recordReceipt(ctx context.Context, book paymentBook, log *slog.Logger, token common.Address, pid uuid.UUID, a chain.Authorization,
	receipt *types.Receipt, from []ledger.Status) (*payments.Settlement, error) {
	if !chain.HasTransfer(receipt, token, a.From, a.To, a.Value) {
		reason := ReasonTransferEventMismatch
		if receipt.Status != types.ReceiptStatusSuccessful {
			reason = ReasonTransactionFailed
		}
		if _, err := book.Transition(ctx, pid, from, ledger.StatusFailed, ledger.Patch{TxHash: receipt.TxHash.Hex(), ErrorReason: reason}); err != nil {
			log.Error("x402: recording a failed settlement", "payment", pid, "err", err)
		}
		return nil, refuse(reason, "settlement transaction "+receipt.TxHash.Hex()+" did not transfer the payment")
	}
	if _, err := book.Transition(ctx, pid, from, ledger.StatusSettled, ledger.Patch{TxHash: receipt.TxHash.Hex()}); err != nil && !errors.Is(err, ledger.ErrConflict) {
		log.Error("x402: recording a settlement", "payment", pid, "err", err)
	}
	return &payments.Settlement{Status: payments.SettlementSettled, ID: pid.String(), TxHash: receipt.TxHash.Hex(), Reference: pid.String()}, nil
}

func containsFold(s, sub string) bool { return strings.Contains(strings.ToLower(s), sub) }

// settleReason maps a token's revert message to the reference facilitator's reason code.
func settleReason(revert string) string {
	switch {
	case containsFold(revert, "used or canceled"):
		return ReasonNonceAlreadyUsed
	case containsFold(revert, "expired"):
		return ReasonValidBefore
	case containsFold(revert, "not yet valid"):
		return ReasonValidAfter
	case containsFold(revert, "balance"):
		return ReasonInsufficientBalance
	case containsFold(revert, "signature"):
		return ReasonSignature
	default:
		return ReasonTransactionSimulationFailed
	}
}
