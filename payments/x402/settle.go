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
// for the receipt, re-broadcast after a crash, and sign again at its nonce a transaction the
// market outbid. *chain.Sender satisfies it.
type TxSender interface {
	SendPersisted(ctx context.Context, to common.Address, data []byte, gas uint64, persist func(*types.Transaction) error) (common.Hash, error)
	WaitReceipt(ctx context.Context, hash common.Hash, pollEvery time.Duration) (*types.Receipt, error)
	Rebroadcast(ctx context.Context, raw []byte) (common.Hash, error)
	Outbid(ctx context.Context, raw []byte) (bool, error)
	Replace(ctx context.Context, raw []byte, to common.Address, data []byte, gas uint64, persist func(*types.Transaction) error) (common.Hash, error)
}

// settlementBook is the payment book of a settler that signs: it may also replace a dead
// transaction (refused "nonce too low") by a new one. *ledger.Ledger and *ledger.Memory
// satisfy it.
type settlementBook interface {
	paymentBook
	ReplaceTx(ctx context.Context, id uuid.UUID, deadHash string, raw []byte, hash string) (ledger.Payment, error)
}

// ChainSettler settles with the gateway's own settlement key.
type ChainSettler struct {
	book           settlementBook
	sender         TxSender
	token          common.Address
	receiptTimeout time.Duration
	pollEvery      time.Duration
	log            *slog.Logger
	deferToBatches bool // a settlement that cannot start now is queued for the batch worker
}

// DeferToBatches says that a batch worker settles queued payments (a SettlementBatcher is
// configured), so a settlement that cannot start now (the node unreachable) may be queued for
// it and the call answered as pending. Without one nothing would ever settle a queued payment:
// such a call is refused (503, nothing charged) instead.
func (s *ChainSettler) DeferToBatches() { s.deferToBatches = true }

// NewChainSettler returns a settler sending transferWithAuthorization from the sender's key.
// A receipt not seen within receiptTimeout leaves the payment pending.
func NewChainSettler(book settlementBook, sender TxSender, token common.Address, receiptTimeout time.Duration, log *slog.Logger) *ChainSettler {
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
	return s.send(ctx, p.ID, p.JobID, p.Auth, "")
}

// resend signs a new transaction for a submitted or pending payment whose recorded one is
// dead (chain.ErrTxDead): it can never be mined, so the authorization is still unused and
// still ours to settle, once.
func (s *ChainSettler) resend(ctx context.Context, p ledger.Payment, a chain.Authorization) (*payments.Settlement, error) {
	return s.send(ctx, p.ID, uuid.Nil, a, p.TxHash)
}

// replace signs again, at its nonce and with fees that win, the recorded transaction of a
// submitted or pending payment p that the market outbid, and records the successor in its
// place (the recorded one kept in replaced_txs). The two compete for one nonce, so at most one
// is mined: recovery waits for the successor, and when the node calls it dead the chain's
// record of the authorization's use names the one that was.
func (s *ChainSettler) replace(ctx context.Context, p ledger.Payment, a chain.Authorization) (common.Hash, error) {
	data, err := chain.PackTransferWithAuthorization(a)
	if err != nil {
		return common.Hash{}, fmt.Errorf("x402: packing the transfer: %w", err)
	}
	return s.sender.Replace(ctx, p.RawTx, s.token, data, 0, func(tx *types.Transaction) error {
		raw, err := tx.MarshalBinary()
		if err != nil {
			return err
		}
		_, err = s.book.ReplaceTx(ctx, p.ID, p.TxHash, raw, tx.Hash().Hex())
		return err
	})
}

// send signs, records and broadcasts transferWithAuthorization for payment pid. dead is the
// payment's recorded transaction when it is being replaced, "" for a first send.
func (s *ChainSettler) send(ctx context.Context, pid, jobID uuid.UUID, a chain.Authorization, dead string) (*payments.Settlement, error) {
	data, err := chain.PackTransferWithAuthorization(a)
	if err != nil {
		return nil, fmt.Errorf("x402: packing the transfer: %w", err)
	}
	recorded := dead
	hash, err := s.sender.SendPersisted(ctx, s.token, data, 0, func(tx *types.Transaction) error {
		raw, err := tx.MarshalBinary()
		if err != nil {
			return err
		}
		if recorded == "" {
			_, err = s.book.Transition(ctx, pid, []ledger.Status{ledger.StatusVerified, ledger.StatusQueued}, ledger.StatusSubmitted,
				ledger.Patch{JobID: jobID, TxHash: tx.Hash().Hex(), RawTx: raw, Attempt: true})
			if err != nil && s.recordedAnyway(ctx, pid, tx.Hash().Hex()) {
				// The write committed and its answer was lost: recovery would broadcast these
				// bytes anyway, so refusing the call now would charge it without its result.
				err = nil
			}
		} else {
			// The sender signs again only after the node refused the recorded transaction as
			// "nonce too low": that one can never be mined, so this one takes its place.
			_, err = s.book.ReplaceTx(ctx, pid, recorded, raw, tx.Hash().Hex())
		}
		if err == nil {
			recorded = tx.Hash().Hex()
		}
		return err
	})
	switch {
	case errors.Is(err, chain.ErrExecutionReverted) && dead != "":
		// The token refuses the authorization of a payment whose recorded transaction is dead:
		// nothing was broadcast now. Failed only if the chain shows the authorization unused
		// (or canceled); used, the transaction that used it decides.
		reason := settleReason(chain.RevertReason(err))
		to, patch, derr := failUnlessUsed(ctx, finderOf(s.sender, s.token), s.token, a, ledger.Patch{ErrorReason: reason})
		if derr != nil {
			return nil, fmt.Errorf("x402: payment %s: replacing dead transaction %s: the token refuses the authorization (%s): %w", pid, dead, reason, derr)
		}
		if err := recordOutcome(ctx, s.book, s.log, pid, dead, []ledger.Status{ledger.StatusSubmitted, ledger.StatusPending}, to, patch); err != nil {
			return nil, err
		}
		if to == ledger.StatusSettled {
			return &payments.Settlement{Status: payments.SettlementSettled, ID: pid.String(), TxHash: patch.TxHash, Reference: pid.String()}, nil
		}
		return nil, refuse(reason, "the token refused the authorization at settlement: "+chain.RevertReason(err))
	case errors.Is(err, chain.ErrExecutionReverted):
		// The token refuses the authorization (spent, expired, cancelled, moved funds): it
		// can never settle, and nothing was broadcast, so nothing was charged by us. But the
		// payer, or anyone holding the payment header, may have sent it to the token first:
		// when the chain shows the transaction that used it moving the price to payTo, that
		// transaction settles the payment, and the call was paid.
		reason := settleReason(chain.RevertReason(err))
		if st, ok := s.settledByAnother(ctx, pid, jobID, a, reason); ok {
			return st, nil
		}
		if _, terr := s.book.Transition(ctx, pid, []ledger.Status{ledger.StatusVerified, ledger.StatusQueued}, ledger.StatusNotCharged,
			ledger.Patch{JobID: jobID, ErrorReason: reason}); terr != nil {
			s.log.Error("x402: recording a failed settlement", "payment", pid, "err", terr)
		}
		return nil, refuse(reason, "the token refused the authorization at settlement: "+chain.RevertReason(err))
	case err != nil && dead != "":
		return nil, fmt.Errorf("x402: payment %s: replacing dead transaction %s: %w", pid, dead, err)
	case err != nil && recorded != "":
		// Recorded as submitted, and perhaps broadcast: owed, not lost. The reconciler sends
		// the recorded bytes again or finds their receipt.
		s.log.Warn("x402: settlement deferred", "payment", pid, "err", err)
		return &payments.Settlement{Status: payments.SettlementPending, ID: pid.String()}, nil
	case err != nil && !s.deferToBatches:
		// Not recorded, so not broadcast, and nothing would settle it later: nothing is charged.
		return nil, fmt.Errorf("x402: payment %s: settlement could not start: %w", pid, errors.Join(payments.ErrNotRecorded, payments.ErrUnavailable, err))
	case err != nil:
		// Not recorded, so not broadcast: queue it for the worker.
		s.log.Warn("x402: settlement deferred", "payment", pid, "err", err)
		return deferSettlement(ctx, s.book, pid, jobID)
	}
	return s.await(ctx, pid, a, hash)
}

// settledByAnother records payment pid settled by the transaction the chain shows used its
// authorization, when that transaction moved the price to payTo; ok reports it did. Anything
// else (unused, canceled, no chain to ask, the ledger refusing) leaves the payment as it was.
func (s *ChainSettler) settledByAnother(ctx context.Context, pid, jobID uuid.UUID, a chain.Authorization, reason string) (*payments.Settlement, bool) {
	// The call is being answered now, and the transaction that used the authorization is the
	// only one there will be: it decides at any depth. Waiting for SETTLEMENT_CONFIRMATIONS
	// here would refuse the call and close its payment not charged while its money moved.
	uses := finderOf(s.sender, s.token)
	if uses != nil {
		shallow := *uses
		shallow.confirmations = 0
		uses = &shallow
	}
	to, patch, err := failUnlessUsed(ctx, uses, s.token, a, ledger.Patch{ErrorReason: reason})
	if err != nil || to != ledger.StatusSettled {
		return nil, false
	}
	patch.JobID = jobID
	if _, err := s.book.Transition(ctx, pid, []ledger.Status{ledger.StatusVerified, ledger.StatusQueued}, ledger.StatusSettled, patch); err != nil {
		s.log.Error("x402: recording a payment settled by another transaction", "payment", pid, "tx", patch.TxHash, "err", err)
		return nil, false
	}
	s.log.Warn("x402: a payment's authorization was used by another transaction before ours; it settled the payment", "payment", pid, "tx", patch.TxHash)
	return &payments.Settlement{Status: payments.SettlementSettled, ID: pid.String(), TxHash: patch.TxHash, Reference: pid.String()}, true
}

// recordedAnyway reports whether payment pid is recorded submitted with transaction hash,
// read back after a write that reported an error (a timeout may come after the commit).
func (s *ChainSettler) recordedAnyway(ctx context.Context, pid uuid.UUID, hash string) bool {
	p, err := s.book.Get(context.WithoutCancel(ctx), pid)
	return err == nil && p.Status == ledger.StatusSubmitted && p.TxHash == hash
}

// deferSettlement queues a verified payment whose settlement could not start now (Postgres
// away, the node unreachable), for the worker to settle later, and reports it pending. A
// payment that cannot be queued either is ErrNotRecorded: left verified, the reconciler would
// take it for a call that never answered and mark it not charged, so the result must be
// withheld (503) rather than delivered unpaid. So is one the reconciler has already closed
// (a call that ran longer than it waits): a conflict counts as queued only when the payment
// is on its way to being settled. A move that reports an error may have been made anyway (its
// answer lost): the row, read back, says whether the payment is owed.
func deferSettlement(ctx context.Context, book paymentBook, pid, jobID uuid.UUID) (*payments.Settlement, error) {
	_, err := book.Transition(ctx, pid, []ledger.Status{ledger.StatusVerified}, ledger.StatusQueued, ledger.Patch{JobID: jobID})
	if err != nil {
		owed := owedAlready(context.WithoutCancel(ctx), book, pid)
		if owed == nil || errors.Is(err, ledger.ErrConflict) {
			err = owed
		}
	}
	if err != nil {
		return nil, fmt.Errorf("x402: payment %s could be neither settled nor queued: %w", pid, errors.Join(payments.ErrNotRecorded, payments.ErrUnavailable, err))
	}
	return &payments.Settlement{Status: payments.SettlementPending, ID: pid.String()}, nil
}

// owedAlready reports nil when payment pid is queued, being settled or settled: whoever moved
// it there will charge it. Anything else (closed not charged, failed) is an error.
func owedAlready(ctx context.Context, book paymentBook, pid uuid.UUID) error {
	p, err := book.Get(ctx, pid)
	if err != nil {
		return err
	}
	switch p.Status {
	case ledger.StatusQueued, ledger.StatusSettling, ledger.StatusSubmitted, ledger.StatusPending, ledger.StatusSettled:
		return nil
	}
	return fmt.Errorf("the payment is %s (%s)", p.Status, p.ErrorReason)
}

// await waits for the receipt of a broadcast settlement and records the outcome.
func (s *ChainSettler) await(ctx context.Context, pid uuid.UUID, a chain.Authorization, hash common.Hash) (*payments.Settlement, error) {
	wctx, cancel := context.WithTimeout(ctx, s.receiptTimeout)
	defer cancel()
	receipt, err := s.sender.WaitReceipt(wctx, hash, s.pollEvery)
	if err != nil {
		// A timeout is "pending": the transaction may still land. The reconciler finishes it.
		if _, terr := s.book.Transition(context.WithoutCancel(ctx), pid, []ledger.Status{ledger.StatusSubmitted}, ledger.StatusPending, ledger.Patch{}); terr != nil &&
			!errors.Is(terr, ledger.ErrConflict) {
			s.log.Error("x402: recording a pending settlement", "payment", pid, "err", terr)
		}
		return &payments.Settlement{Status: payments.SettlementPending, ID: pid.String(), TxHash: hash.Hex()}, nil
	}
	return s.record(ctx, pid, a, receipt)
}

// record turns a receipt into the payment's final state.
func (s *ChainSettler) record(ctx context.Context, pid uuid.UUID, a chain.Authorization, receipt *types.Receipt) (*payments.Settlement, error) {
	return recordReceipt(ctx, s.book, s.log, finderOf(s.sender, s.token), s.token, pid, receipt.TxHash.Hex(), a, receipt,
		[]ledger.Status{ledger.StatusSubmitted, ledger.StatusPending})
}

// recordReceipt moves a payment from one of the statuses in from to settled when receipt
// carries the Transfer the authorization promised, and to failed otherwise, unless the chain
// shows the authorization used by another transaction (uses; see failUnlessUsed): whoever
// sent the transaction, the chain decides. recorded is the transaction recorded on the
// payment. It returns the call's answer; what cannot be recorded now is logged and left to
// reconciliation (the payment stays where it is), and the answer says what the chain says.
func recordReceipt(ctx context.Context, book paymentBook, log *slog.Logger, uses *useFinder, token common.Address, pid uuid.UUID, recorded string,
	a chain.Authorization, receipt *types.Receipt, from []ledger.Status) (*payments.Settlement, error) {
	to, patch, err := decideReceipt(ctx, uses, token, a, receipt)
	if err != nil {
		log.Warn("x402: settlement outcome unknown; left to reconciliation", "payment", pid, "tx", receipt.TxHash.Hex(), "err", err)
		return &payments.Settlement{Status: payments.SettlementPending, ID: pid.String(), TxHash: receipt.TxHash.Hex()}, nil
	}
	if err := recordOutcome(ctx, book, log, pid, recorded, from, to, patch); err != nil {
		log.Error("x402: recording a settlement", "payment", pid, "status", to, "err", err)
	}
	if to == ledger.StatusSettled {
		return &payments.Settlement{Status: payments.SettlementSettled, ID: pid.String(), TxHash: patch.TxHash, Reference: pid.String()}, nil
	}
	reason := patch.ErrorReason
	if reason == reasonCanceled {
		reason = ReasonNonceAlreadyUsed // the token's "used or canceled"
	}
	return nil, refuse(reason, "settlement transaction "+receipt.TxHash.Hex()+" did not transfer the payment")
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
