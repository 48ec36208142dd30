package x402

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// remoteSettler is the facilitator's /settle; *FacilitatorClient satisfies it.
type remoteSettler interface {
	Settle(ctx context.Context, body []byte) (SettlementResponse, error)
}

// settlementChain is what the facilitator settler reads from the chain to check the
// facilitator's word and to recover: receipts, the token's nonce state, and AuthorizationUsed
// logs. ethclient and the simulated backend's client satisfy it.
type settlementChain interface {
	chain.ReceiptReader
	ethereum.LogFilterer
	BlockNumber(ctx context.Context) (uint64, error)
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
}

// nonceState is the token's authorizationState; the rail's ChainReader satisfies it.
type nonceState interface {
	AuthorizationState(ctx context.Context, token, authorizer common.Address, nonce common.Hash) (bool, error)
}

// FacilitatorSettlerConfig configures a FacilitatorSettler.
type FacilitatorSettlerConfig struct {
	Token common.Address
	// ReceiptWait is how long to look for the receipt of a transaction the facilitator reports
	// (our node may lag its node) before recording the payment pending [10 s].
	ReceiptWait time.Duration
	// LogWindow is how many recent blocks recovery searches for the AuthorizationUsed event of
	// a payment whose facilitator answer was lost [10,000, a common RPC limit].
	LogWindow uint64
	// Confirmations is how many blocks must be mined on top of the facilitator's
	// transaction before its receipt counts (SETTLEMENT_CONFIRMATIONS) [0].
	Confirmations uint64
	Now           func() time.Time
	Logger        *slog.Logger
}

// FacilitatorSettler settles through a remote facilitator: the facilitator signs and sends
// transferWithAuthorization, the gateway records each step and checks the receipt itself. A
// payment is moved to settling before the facilitator is asked, so that a crash or a lost
// answer is recovered (Reconcile) by asking the chain first and the facilitator again second:
// one EIP-3009 nonce moves the money at most once, so asking again never charges twice.
type FacilitatorSettler struct {
	cfg    FacilitatorSettlerConfig
	book   paymentBook
	remote remoteSettler
	chain  settlementChain
	nonces nonceState
	uses   *useFinder
	log    *slog.Logger
}

// NewFacilitatorSettler returns a settler asking remote, checking on c.
func NewFacilitatorSettler(cfg FacilitatorSettlerConfig, book paymentBook, remote remoteSettler, c settlementChain, nonces nonceState) *FacilitatorSettler {
	if cfg.ReceiptWait <= 0 {
		cfg.ReceiptWait = 10 * time.Second
	}
	if cfg.LogWindow == 0 {
		cfg.LogWindow = 10_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	uses := &useFinder{token: cfg.Token, nonces: nonces, logs: c, receipts: c, window: cfg.LogWindow, confirmations: cfg.Confirmations}
	return &FacilitatorSettler{cfg: cfg, book: book, remote: remote, chain: c, nonces: nonces, uses: uses, log: cfg.Logger}
}

// settle implements settler for a payment the rail just verified.
func (s *FacilitatorSettler) settle(ctx context.Context, p *pendingPayment) (*payments.Settlement, error) {
	if len(p.Remote) == 0 {
		return nil, fmt.Errorf("x402: payment %s has no facilitator request", p.ID)
	}
	_, err := s.book.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified}, ledger.StatusSettling, ledger.Patch{JobID: p.JobID})
	if err != nil {
		// Postgres is away (settling must be in Postgres before the facilitator is asked):
		// queue it; the worker hands it to the facilitator once Postgres is back.
		s.log.Warn("x402: settlement deferred", "payment", p.ID, "err", err)
		return deferSettlement(ctx, s.book, p.ID, p.JobID)
	}
	return s.ask(ctx, p.ID, p.Auth, p.Remote)
}

// ask sends one /settle for a settling payment and records what it learns.
func (s *FacilitatorSettler) ask(ctx context.Context, pid uuid.UUID, a chain.Authorization, body []byte) (*payments.Settlement, error) {
	res, err := s.remote.Settle(ctx, body)
	if err != nil {
		// Unknown outcome: the payment stays where it is and recovery finds out. Pending, not
		// failed, and never a new 402.
		s.log.Warn("x402: facilitator settlement outcome unknown", "payment", pid, "err", err)
		return &payments.Settlement{Status: payments.SettlementPending, ID: pid.String()}, nil
	}
	switch {
	case res.Success || res.Transaction != "":
		// Sent: the receipt, not the facilitator's word, decides.
		return s.await(ctx, pid, a, common.HexToHash(res.Transaction))
	case res.ErrorReason == ReasonSettlementPending || res.ErrorReason == ReasonUnexpectedSettleError:
		return &payments.Settlement{Status: payments.SettlementPending, ID: pid.String()}, nil
	}
	// Refused with nothing sent. Believe it only if the chain agrees that the authorization is
	// unused: otherwise the money moved and recovery finds the transaction. A refusal because
	// the nonce is used says the facilitator's chain shows a use, whatever our node (perhaps
	// behind) says: recovery decides it from the use, or from the expiry.
	used, err := s.nonces.AuthorizationState(ctx, s.cfg.Token, a.From, a.Nonce)
	if err != nil || used || res.ErrorReason == ReasonNonceAlreadyUsed {
		s.log.Warn("x402: facilitator refused a settlement the chain may hold", "payment", pid, "reason", res.ErrorReason, "used", used, "err", err)
		return &payments.Settlement{Status: payments.SettlementPending, ID: pid.String()}, nil
	}
	if _, err := s.book.Transition(ctx, pid, []ledger.Status{ledger.StatusSettling}, ledger.StatusNotCharged,
		ledger.Patch{ErrorReason: res.ErrorReason}); err != nil {
		s.log.Error("x402: recording a refused settlement", "payment", pid, "err", err)
	}
	return nil, refuse(res.ErrorReason, "the facilitator refused the settlement: "+orText(res.ErrorMessage, res.ErrorReason))
}

// waitReceipt waits for the receipt of hash, buried Confirmations deep.
func (s *FacilitatorSettler) waitReceipt(ctx context.Context, hash common.Hash, pollEvery time.Duration) (*types.Receipt, error) {
	if s.cfg.Confirmations == 0 {
		return chain.WaitReceipt(ctx, s.chain, hash, pollEvery)
	}
	return chain.WaitConfirmed(ctx, s.chain, s.chain, hash, s.cfg.Confirmations, pollEvery)
}

// await checks the receipt of the facilitator's transaction. Not found in ReceiptWait: the
// payment is pending with that transaction, reconciled later.
func (s *FacilitatorSettler) await(ctx context.Context, pid uuid.UUID, a chain.Authorization, hash common.Hash) (*payments.Settlement, error) {
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ReceiptWait)
	receipt, err := s.waitReceipt(wctx, hash, 50*time.Millisecond)
	cancel()
	if err != nil {
		if _, terr := s.book.Transition(context.WithoutCancel(ctx), pid, []ledger.Status{ledger.StatusSettling}, ledger.StatusPending,
			ledger.Patch{TxHash: hash.Hex(), Attempt: true}); terr != nil {
			s.log.Error("x402: recording a pending settlement", "payment", pid, "err", terr)
		}
		return &payments.Settlement{Status: payments.SettlementPending, ID: pid.String(), TxHash: hash.Hex()}, nil
	}
	return recordReceipt(ctx, s.book, s.log, s.uses, s.cfg.Token, pid, "", a, receipt, []ledger.Status{ledger.StatusSettling, ledger.StatusPending})
}

// reconcile finishes a settling or pending payment that the facilitator settled or was asked
// to settle, from what the chain says: its recorded transaction's receipt; else the
// AuthorizationUsed event of its nonce (the transaction that used it is recorded, in place of
// the one the facilitator named if that one was replaced); else, while the authorization is
// still valid, the facilitator once more; else (expired unused) it was never charged. A nil
// error says the ledger holds what the chain said, or that there is nothing to say yet.
func (s *FacilitatorSettler) reconcile(ctx context.Context, p ledger.Payment) error {
	a, err := authorizationOf(p)
	if err != nil {
		return err
	}
	from := []ledger.Status{p.Status}
	if p.TxHash != "" {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.ReceiptWait)
		receipt, err := s.waitReceipt(rctx, common.HexToHash(p.TxHash), 100*time.Millisecond)
		cancel()
		if err == nil {
			to, patch, err := decideReceipt(ctx, s.uses, s.cfg.Token, a, receipt)
			if err != nil {
				return fmt.Errorf("x402: payment %s: %w", p.ID, err)
			}
			return recordOutcome(ctx, s.book, s.log, p.ID, p.TxHash, from, to, patch)
		}
	}
	use, err := s.uses.find(ctx, a)
	if err != nil {
		return fmt.Errorf("x402: payment %s: %w", p.ID, err)
	}
	if use.Used {
		to, patch := useOutcome(s.cfg.Token, a, use, ledger.Patch{})
		if use.Canceled && p.Status == ledger.StatusSettling {
			to = ledger.StatusNotCharged // nothing of ours was sent, and nothing ever moves
		}
		return recordOutcome(ctx, s.book, s.log, p.ID, p.TxHash, from, to, patch)
	}
	expired, err := s.expired(ctx, a)
	if err != nil {
		return fmt.Errorf("x402: payment %s: %w", p.ID, err)
	}
	if expired {
		// Expired and unused: no one can ever move this money now.
		to, reason := ledger.StatusNotCharged, "expired before the facilitator settled it"
		if p.Status == ledger.StatusPending {
			to, reason = ledger.StatusFailed, "the facilitator's transaction never landed and the authorization expired unused"
		}
		return recordOutcome(ctx, s.book, s.log, p.ID, "", from, to, ledger.Patch{ErrorReason: reason})
	}
	// Each look is recorded, which makes the payment young again: the next one waits
	// StaleAfter (OnChainAfter when pending), not the next tick of the worker. A payment that
	// moved meanwhile (its call's own /settle answered) is left alone.
	if moved, err := s.recordAttempt(ctx, p); err != nil || moved {
		return err
	}
	if p.Status != ledger.StatusSettling {
		return nil // pending with a transaction in flight: wait for it, or for the expiry
	}
	req, err := settleRequestOf(p)
	if err != nil {
		return err
	}
	_, err = s.ask(ctx, p.ID, a, req)
	return ignoreRefusal(err)
}

// recordAttempt counts one more look at p, which stays where it is, and resets its age;
// moved reports that p is no longer in its status.
func (s *FacilitatorSettler) recordAttempt(ctx context.Context, p ledger.Payment) (moved bool, err error) {
	ab, ok := s.book.(attemptBook)
	if !ok {
		return false, nil
	}
	if _, err := ab.RecordAttempt(ctx, p.ID, p.Status); err != nil {
		if errors.Is(err, ledger.ErrConflict) {
			return true, nil
		}
		return false, fmt.Errorf("x402: payment %s: recording a settlement attempt: %w", p.ID, err)
	}
	return false, nil
}

// attemptBook counts a settlement attempt on a payment that stays where it is, and resets its
// age for recovery; *ledger.Ledger and *ledger.Memory satisfy it.
type attemptBook interface {
	RecordAttempt(ctx context.Context, id uuid.UUID, status ledger.Status) (ledger.Payment, error)
}

// expired reports whether no block can include a's transfer any more: the chain's own time,
// Confirmations blocks below its head, is past validBefore (the token requires
// block.timestamp < validBefore). Our clock only says when to ask: it may run ahead of the
// chain, and our node may lag the facilitator's, while the transaction waits in a pool.
func (s *FacilitatorSettler) expired(ctx context.Context, a chain.Authorization) (bool, error) {
	if s.cfg.Now().Before(unixTime(a.ValidBefore)) {
		return false, nil
	}
	head, err := s.chain.BlockNumber(ctx)
	if err != nil {
		return false, err
	}
	if head < s.cfg.Confirmations {
		return false, nil
	}
	h, err := s.chain.HeaderByNumber(ctx, new(big.Int).SetUint64(head-s.cfg.Confirmations))
	if err != nil {
		return false, fmt.Errorf("reading block %d for its time: %w", head-s.cfg.Confirmations, err)
	}
	return a.ValidBefore.IsUint64() && h.Time >= a.ValidBefore.Uint64(), nil
}

// authorizationCanceledTopic is keccak256("AuthorizationCanceled(address,bytes32)").
var authorizationCanceledTopic = crypto.Keccak256Hash([]byte("AuthorizationCanceled(address,bytes32)"))

// reasonCanceled is the failure of a payment whose authorization its payer canceled unused.
const reasonCanceled = "the payer canceled the authorization before it was used"

// logReader reads event logs and the head block's number.
type logReader interface {
	ethereum.LogFilterer
	BlockNumber(ctx context.Context) (uint64, error)
}

// useFinder asks the chain what became of an authorization: whether the token holds its
// nonce used (or canceled), and which transaction used it. An EIP-3009 authorization may be
// sent by anyone who holds it (a facilitator's replacement transaction, the payer, one of our
// transactions taken for dead), so before a payment is recorded failed, or its authorization
// signed again, the chain is asked: money that moved is recorded from the transaction that
// moved it.
type useFinder struct {
	token    common.Address
	nonces   nonceState
	logs     logReader
	receipts chain.ReceiptReader
	window   uint64 // how many recent blocks are searched for the event
	// confirmations is how many blocks must be on top of the event's before it decides
	// anything: a use less deep could still be reorged away (SETTLEMENT_CONFIRMATIONS).
	confirmations uint64
}

// errUseUnconfirmed: the chain shows an authorization's use, but not yet deep enough to
// decide its payment; the next pass asks again.
var errUseUnconfirmed = errors.New("authorization_use_unconfirmed")

// authorizationUse is what the chain says of one authorization.
type authorizationUse struct {
	Used     bool           // the token holds its nonce used or canceled
	Receipt  *types.Receipt // the transaction that used it (its AuthorizationUsed event)
	Canceled bool           // its payer canceled it (AuthorizationCanceled): it never moved money
}

// find reads the authorization's state and, when it is used, the event that used or canceled
// it. A nonce used with neither event in the window is an error: an operator must look.
func (f *useFinder) find(ctx context.Context, a chain.Authorization) (authorizationUse, error) {
	used, err := f.nonces.AuthorizationState(ctx, f.token, a.From, a.Nonce)
	if err != nil || !used {
		return authorizationUse{}, err
	}
	head, err := f.logs.BlockNumber(ctx)
	if err != nil {
		return authorizationUse{}, err
	}
	from := uint64(0)
	if head > f.window {
		from = head - f.window
	}
	logs, err := f.logs.FilterLogs(ctx, ethereum.FilterQuery{
		FromBlock: new(big.Int).SetUint64(from), ToBlock: new(big.Int).SetUint64(head), Addresses: []common.Address{f.token},
		Topics: [][]common.Hash{{chain.AuthorizationUsedTopic, authorizationCanceledTopic}, {common.BytesToHash(a.From.Bytes())}, {a.Nonce}},
	})
	if err != nil {
		return authorizationUse{}, err
	}
	canceled := false
	for _, l := range logs {
		switch {
		case l.Removed || len(l.Topics) == 0:
		case l.BlockNumber+f.confirmations > head:
			return authorizationUse{}, fmt.Errorf("its authorization was used or canceled in block %d, not yet %d blocks deep (head %d): %w",
				l.BlockNumber, f.confirmations, head, errUseUnconfirmed)
		case l.Topics[0] == chain.AuthorizationUsedTopic:
			receipt, err := f.receipts.TransactionReceipt(ctx, l.TxHash)
			if err != nil {
				return authorizationUse{}, fmt.Errorf("the receipt of %s, which used the authorization: %w", l.TxHash.Hex(), err)
			}
			return authorizationUse{Used: true, Receipt: receipt}, nil
		default:
			canceled = true
		}
	}
	if canceled {
		return authorizationUse{Used: true, Canceled: true}, nil
	}
	return authorizationUse{}, fmt.Errorf("its authorization is used on chain, but no AuthorizationUsed event is in blocks %d..%d (older?): an operator must look", from, head)
}

// receiptOutcome is what the receipt of a transaction sent for authorization a decides of its
// payment: settled by it when it used a (its AuthorizationUsed event) and carries the Transfer
// the authorization promised, failed by it otherwise (but see decideReceipt). The Transfer
// alone is not enough: an earlier payment of the same payer, amount and payTo carries the same
// one, and a facilitator may name its transaction.
func receiptOutcome(token common.Address, a chain.Authorization, receipt *types.Receipt) (ledger.Status, ledger.Patch) {
	patch := ledger.Patch{TxHash: receipt.TxHash.Hex()}
	if usesAuthorization(receipt, token, a) && chain.HasTransfer(receipt, token, a.From, a.To, a.Value) {
		return ledger.StatusSettled, patch
	}
	patch.ErrorReason = ReasonTransferEventMismatch
	if receipt.Status != types.ReceiptStatusSuccessful {
		patch.ErrorReason = ReasonTransactionFailed
	}
	return ledger.StatusFailed, patch
}

// usesAuthorization reports whether receipt holds token's AuthorizationUsed(a.From, a.Nonce).
func usesAuthorization(receipt *types.Receipt, token common.Address, a chain.Authorization) bool {
	for _, l := range receipt.Logs {
		if l.Address == token && len(l.Topics) == 3 && l.Topics[0] == chain.AuthorizationUsedTopic &&
			l.Topics[1] == common.BytesToHash(a.From.Bytes()) && l.Topics[2] == a.Nonce {
			return true
		}
	}
	return false
}

// useOutcome is what the chain's use decides of a payment: the transaction that used its
// authorization, or a failure when its payer canceled it; failure when it is unused.
func useOutcome(token common.Address, a chain.Authorization, use authorizationUse, failure ledger.Patch) (ledger.Status, ledger.Patch) {
	switch {
	case use.Receipt != nil:
		return receiptOutcome(token, a, use.Receipt)
	case use.Canceled:
		return ledger.StatusFailed, ledger.Patch{TxHash: failure.TxHash, ErrorReason: reasonCanceled}
	}
	return ledger.StatusFailed, failure
}

// decideReceipt is receiptOutcome, with a failure checked on chain (failUnlessUsed).
func decideReceipt(ctx context.Context, f *useFinder, token common.Address, a chain.Authorization, receipt *types.Receipt) (ledger.Status, ledger.Patch, error) {
	to, patch := receiptOutcome(token, a, receipt)
	if to == ledger.StatusSettled {
		return to, patch, nil
	}
	return failUnlessUsed(ctx, f, token, a, patch)
}

// failUnlessUsed decides a payment whose own transaction did not move its money (failure):
// failed only if the chain shows its authorization unused, or canceled. A token checks an
// authorization's window before its nonce, so even a refusal other than "used or canceled" may
// hide a use by another transaction: when the chain shows one, that transaction decides. With
// no chain to ask (f nil), it cannot be decided.
func failUnlessUsed(ctx context.Context, f *useFinder, token common.Address, a chain.Authorization, failure ledger.Patch) (ledger.Status, ledger.Patch, error) {
	if f == nil {
		return "", ledger.Patch{}, errors.New("its settlement failed, and there is no chain reader to check that its authorization was not used by another transaction")
	}
	use, err := f.find(ctx, a)
	if err != nil {
		return "", ledger.Patch{}, fmt.Errorf("its settlement failed (%s), and whether its authorization was used elsewhere is unknown: %w", failure.ErrorReason, err)
	}
	to, patch := useOutcome(token, a, use, failure)
	return to, patch, nil
}

// outcomeBook is what recording an outcome needs of the ledger.
type outcomeBook interface {
	Transition(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) (ledger.Payment, error)
	Get(ctx context.Context, id uuid.UUID) (ledger.Payment, error)
}

// replacingBook records a payment settled or failed by another transaction than the one
// recorded on it; *ledger.Ledger and *ledger.Memory satisfy it.
type replacingBook interface {
	TransitionReplacing(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, replaced string, patch ledger.Patch) (ledger.Payment, error)
}

// recordOutcome moves payment pid from one of from to to, with patch, whose TxHash (if any)
// is the transaction the chain shows decided it. recorded is the transaction recorded on the
// payment ("" for none); a different one gives way to patch.TxHash (TransitionReplacing): the
// chain shows that it did not move the money. It returns nil once the payment is final:
// moved now, or found final already (whoever moved it read the same chain). A conflict with a
// payment that is not final is an error, for reconciliation to try again: never done.
func recordOutcome(ctx context.Context, book outcomeBook, log *slog.Logger, pid uuid.UUID, recorded string, from []ledger.Status, to ledger.Status,
	patch ledger.Patch) error {
	var err error
	if recorded != "" && patch.TxHash != "" && recorded != patch.TxHash {
		rb, ok := book.(replacingBook)
		if !ok {
			return fmt.Errorf("x402: payment %s was decided by transaction %s, not the recorded %s, and its ledger cannot record a replacement",
				pid, patch.TxHash, recorded)
		}
		_, err = rb.TransitionReplacing(ctx, pid, from, to, recorded, patch)
	} else {
		_, err = book.Transition(ctx, pid, from, to, patch)
	}
	if !errors.Is(err, ledger.ErrConflict) {
		if err != nil {
			return fmt.Errorf("x402: recording payment %s %s: %w", pid, to, err)
		}
		return nil
	}
	cur, gerr := book.Get(ctx, pid)
	switch {
	case gerr != nil:
		return fmt.Errorf("x402: recording payment %s %s: %w", pid, to, errors.Join(err, gerr))
	case !cur.Status.Terminal():
		return fmt.Errorf("x402: payment %s is %s with transaction %q, and the chain says %s by %q: %w", pid, cur.Status, cur.TxHash, to, patch.TxHash, err)
	case cur.Status != to || (patch.TxHash != "" && cur.TxHash != patch.TxHash):
		log.Error("x402: a final payment disagrees with the chain", "payment", pid, "status", cur.Status, "tx", cur.TxHash,
			"chain_says", to, "chain_tx", patch.TxHash)
	}
	return nil
}

// ignoreRefusal drops a refusal (already recorded on the payment) from a reconciliation's error.
func ignoreRefusal(err error) error {
	var pe *payments.PaymentError
	if errors.As(err, &pe) {
		return nil
	}
	return err
}

// settleRequestOf is the facilitator request the rail stored with a payment.
func settleRequestOf(p ledger.Payment) ([]byte, error) {
	var s storedAuthorization
	if err := json.Unmarshal(p.Payload, &s); err != nil {
		return nil, fmt.Errorf("x402: payment %s: stored authorization: %w", p.ID, err)
	}
	if len(s.SettleRequest) == 0 {
		return nil, fmt.Errorf("x402: payment %s was not verified for a facilitator: no request to send", p.ID)
	}
	return s.SettleRequest, nil
}

func orText(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}
