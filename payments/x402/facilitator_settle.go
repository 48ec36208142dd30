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
	Now       func() time.Time
	Logger    *slog.Logger
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
	return &FacilitatorSettler{cfg: cfg, book: book, remote: remote, chain: c, nonces: nonces, log: cfg.Logger}
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
	// unused: otherwise the money moved and recovery finds the transaction.
	used, err := s.nonces.AuthorizationState(ctx, s.cfg.Token, a.From, a.Nonce)
	if err != nil || used {
		s.log.Warn("x402: facilitator refused a settlement the chain may hold", "payment", pid, "reason", res.ErrorReason, "used", used, "err", err)
		return &payments.Settlement{Status: payments.SettlementPending, ID: pid.String()}, nil
	}
	if _, err := s.book.Transition(ctx, pid, []ledger.Status{ledger.StatusSettling}, ledger.StatusNotCharged,
		ledger.Patch{ErrorReason: res.ErrorReason}); err != nil {
		s.log.Error("x402: recording a refused settlement", "payment", pid, "err", err)
	}
	return nil, refuse(res.ErrorReason, "the facilitator refused the settlement: "+orText(res.ErrorMessage, res.ErrorReason))
}

// await checks the receipt of the facilitator's transaction. Not found in ReceiptWait: the
// payment is pending with that transaction, reconciled later.
func (s *FacilitatorSettler) await(ctx context.Context, pid uuid.UUID, a chain.Authorization, hash common.Hash) (*payments.Settlement, error) {
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ReceiptWait)
	receipt, err := chain.WaitReceipt(wctx, s.chain, hash, 50*time.Millisecond)
	cancel()
	if err != nil {
		if _, terr := s.book.Transition(context.WithoutCancel(ctx), pid, []ledger.Status{ledger.StatusSettling}, ledger.StatusPending,
			ledger.Patch{TxHash: hash.Hex(), Attempt: true}); terr != nil {
			s.log.Error("x402: recording a pending settlement", "payment", pid, "err", terr)
		}
		return &payments.Settlement{Status: payments.SettlementPending, ID: pid.String(), TxHash: hash.Hex()}, nil
	}
	return recordReceipt(ctx, s.book, s.log, s.cfg.Token, pid, a, receipt, []ledger.Status{ledger.StatusSettling, ledger.StatusPending})
}

// reconcile finishes a settling or pending payment that the facilitator settled or was asked
// to settle, from what the chain says: its recorded transaction's receipt; else the
// AuthorizationUsed event of its nonce; else, while the authorization is still valid, the
// facilitator once more; else (expired unused) it was never charged.
func (s *FacilitatorSettler) reconcile(ctx context.Context, p ledger.Payment) error {
	a, err := authorizationOf(p)
	if err != nil {
		return err
	}
	if p.TxHash != "" {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.ReceiptWait)
		receipt, err := chain.WaitReceipt(rctx, s.chain, common.HexToHash(p.TxHash), 100*time.Millisecond)
		cancel()
		if err == nil {
			_, err = recordReceipt(ctx, s.book, s.log, s.cfg.Token, p.ID, a, receipt, []ledger.Status{p.Status})
			return ignoreRefusal(err)
		}
	}
	used, err := s.nonces.AuthorizationState(ctx, s.cfg.Token, a.From, a.Nonce)
	if err != nil {
		return err
	}
	if used {
		receipt, err := s.findUse(ctx, a)
		if err != nil {
			return fmt.Errorf("x402: payment %s: its authorization is used on chain, but: %w", p.ID, err)
		}
		_, err = recordReceipt(ctx, s.book, s.log, s.cfg.Token, p.ID, a, receipt, []ledger.Status{p.Status})
		return ignoreRefusal(err)
	}
	if !s.cfg.Now().Before(unixTime(a.ValidBefore)) {
		// Expired and unused: no one can ever move this money now.
		to, reason := ledger.StatusNotCharged, "expired before the facilitator settled it"
		if p.Status == ledger.StatusPending {
			to, reason = ledger.StatusFailed, "the facilitator's transaction never landed and the authorization expired unused"
		}
		_, err := s.book.Transition(ctx, p.ID, []ledger.Status{p.Status}, to, ledger.Patch{ErrorReason: reason})
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

// findUse finds the transaction that used a's nonce, from its AuthorizationUsed event in the
// last LogWindow blocks, and returns its receipt.
func (s *FacilitatorSettler) findUse(ctx context.Context, a chain.Authorization) (*types.Receipt, error) {
	head, err := s.chain.BlockNumber(ctx)
	if err != nil {
		return nil, err
	}
	from := uint64(0)
	if head > s.cfg.LogWindow {
		from = head - s.cfg.LogWindow
	}
	logs, err := s.chain.FilterLogs(ctx, ethereum.FilterQuery{
		FromBlock: new(big.Int).SetUint64(from), ToBlock: new(big.Int).SetUint64(head), Addresses: []common.Address{s.cfg.Token},
		Topics: [][]common.Hash{{chain.AuthorizationUsedTopic}, {common.BytesToHash(a.From.Bytes())}, {a.Nonce}},
	})
	if err != nil {
		return nil, err
	}
	if len(logs) == 0 {
		return nil, fmt.Errorf("no AuthorizationUsed event in blocks %d..%d (canceled by the payer, or older): an operator must look", from, head)
	}
	return s.chain.TransactionReceipt(ctx, logs[0].TxHash)
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
