package chain

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

// Backend is what a Sender needs from a node. *ethclient.Client and the simulated chain's
// client both satisfy it.
type Backend interface {
	ReceiptReader
	PendingNonceAt(ctx context.Context, account common.Address) (uint64, error)
	EstimateGas(ctx context.Context, call ethereum.CallMsg) (uint64, error)
	SuggestGasTipCap(ctx context.Context) (*big.Int, error)
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	SendTransaction(ctx context.Context, tx *types.Transaction) error
}

// DefaultSendTimeout bounds Send when the caller's context has no deadline.
const DefaultSendTimeout = 30 * time.Second

// SenderOptions tune a Sender; the zero value is usable.
type SenderOptions struct {
	// Lock, when set, is held around every sign-and-broadcast, and the nonce is read from
	// the node each time under it: replicas that share one key then never race for a nonce.
	Lock func(ctx context.Context) (unlock func(), err error)
	// GasMarginPercent is added to the node's gas estimate (default 25): estimates are taken
	// against the pending state, which can change before the tx is mined.
	GasMarginPercent uint64
	// MaxFeePerGas caps the fee the sender will offer: a transaction offers it when twice the
	// base fee plus the tip is more, and none is sent (ErrFeeCapExceeded) while the base fee
	// plus the tip is more; nil means no cap.
	MaxFeePerGas *big.Int
	// Logger receives one debug line per sent transaction; nil means slog.Default().
	Logger *slog.Logger
	// Receipts reads the receipts WaitReceipt waits for, and those Rebroadcast looks for; nil
	// means the backend. Give RPCReceipts when the backend speaks JSON-RPC: it decodes large
	// receipts several times faster.
	Receipts ReceiptReader
	// ReceiptLag is how long Rebroadcast keeps looking for the receipt of a transaction the
	// node refused as "nonce too low" before it calls it dead [2s]: a node behind a load
	// balancer can know a transaction's nonce is taken before it serves its receipt.
	ReceiptLag time.Duration
	// Confirmations is how many blocks must be mined on top of a receipt's block before
	// WaitReceipt returns it (0: the receipt as soon as it exists). Each wait then re-reads the
	// receipt: one a reorg dropped is waited for again, so a settlement is never recorded from
	// a block the chain gave up.
	Confirmations uint64
}

// DefaultReceiptLag is SenderOptions.ReceiptLag's default.
const DefaultReceiptLag = 2 * time.Second

// Sender signs and sends EIP-1559 transactions from one key, tracking nonces locally so that
// concurrent callers never reuse or skip one. It is safe for concurrent use.
type Sender struct {
	backend   Backend
	receipts  ReceiptReader
	key       *ecdsa.PrivateKey
	from      common.Address
	chainID   *big.Int
	signer    types.Signer
	marginPct uint64
	maxFee    *big.Int
	lag       time.Duration
	confirm   uint64
	log       *slog.Logger

	// lock is a one-slot semaphore rather than a sync.Mutex so that waiting for it honours
	// the caller's deadline. It is held across nonce allocation and SendTransaction, so nonces
	// reach the node in order and a rejected transaction never leaves a gap.
	lock       chan struct{}
	sharedLock func(ctx context.Context) (func(), error)
	synced     bool   // false until the first send, and again after an ambiguous send error
	nonce      uint64 // next nonce to use when synced
}

// NewSender returns a Sender for key on the chain chainID; no network call is made yet.
func NewSender(backend Backend, key *ecdsa.PrivateKey, chainID *big.Int, opts SenderOptions) (*Sender, error) {
	if backend == nil || key == nil || chainID == nil || chainID.Sign() <= 0 {
		return nil, errors.New("chain: NewSender needs a backend, a key and a positive chain id")
	}
	margin := opts.GasMarginPercent
	if margin == 0 {
		margin = 25
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.Default()
	}
	receipts := opts.Receipts
	if receipts == nil {
		receipts = backend
	}
	lag := opts.ReceiptLag
	if lag <= 0 {
		lag = DefaultReceiptLag
	}
	return &Sender{
		backend:    backend,
		receipts:   receipts,
		key:        key,
		from:       crypto.PubkeyToAddress(key.PublicKey),
		chainID:    new(big.Int).Set(chainID),
		signer:     types.LatestSignerForChainID(chainID),
		marginPct:  margin,
		maxFee:     opts.MaxFeePerGas,
		lag:        lag,
		confirm:    opts.Confirmations,
		log:        lg,
		lock:       make(chan struct{}, 1),
		sharedLock: opts.Lock,
	}, nil
}

// Address is the account the Sender signs for (it pays the gas).
func (s *Sender) Address() common.Address { return s.from }

// Backend is the node the Sender sends to; recovery reads the chain through it too.
func (s *Sender) Backend() Backend { return s.backend }

// Confirmations is SenderOptions.Confirmations: how deep a receipt must be to count.
func (s *Sender) Confirmations() uint64 { return s.confirm }

// Receipts is the reader the Sender reads receipts with (SenderOptions.Receipts).
func (s *Sender) Receipts() ReceiptReader { return s.receipts }

// Send estimates gas, prices fees, signs and submits a call of data to `to`, returning the
// transaction hash once the node accepted it. A call that would revert fails here with an
// error wrapping ErrExecutionReverted (see RevertReason) and consumes no nonce.
func (s *Sender) Send(ctx context.Context, to common.Address, data []byte) (common.Hash, error) {
	return s.send(ctx, &to, data, 0, nil)
}

// SendPersisted is Send with a hook that receives the signed transaction before it is
// broadcast, while the nonce is still held. Settlement persists the raw transaction there,
// so that after a crash it re-broadcasts the very same transaction and never signs a second
// one for the same payment. If persist fails, nothing is broadcast and the nonce is reused.
//
// persist is called again, with a new transaction, only when the node refused the previous
// one as "nonce too low": its nonce is taken by a mined transaction, so it can never be mined
// itself, and the caller may record the new one in its place. Any other refusal ends the send.
//
// gas is the transaction's gas limit; 0 asks the node (eth_estimateGas, which also refuses a
// call that would revert). A limit above the head block's is never sent: the node is asked
// instead. A caller that gives a limit takes on what estimation would have caught: the
// transaction may be mined and revert.
func (s *Sender) SendPersisted(ctx context.Context, to common.Address, data []byte, gas uint64, persist func(tx *types.Transaction) error) (common.Hash, error) {
	return s.send(ctx, &to, data, gas, persist)
}

// Rebroadcast sends an already signed transaction again (recovery after a crash). A
// transaction the node already knows, or whose nonce is already used, is not an error: the
// caller looks for its receipt next. One whose nonce is used and whose receipt cannot be found
// for ReceiptLag is ErrTxDead: another transaction took its nonce. One whose fee cap the base
// fee outgrew is ErrUnderpriced: Replace it.
func (s *Sender) Rebroadcast(ctx context.Context, raw []byte) (common.Hash, error) {
	var tx types.Transaction
	if err := tx.UnmarshalBinary(raw); err != nil {
		return common.Hash{}, fmt.Errorf("chain: decode persisted tx: %w", err)
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultSendTimeout)
	defer cancel()
	// Under the send lock, as every broadcast of the key: a send reading the pending nonce
	// while the pool takes this transaction back would sign a second one at its nonce.
	unlock, err := s.acquire(ctx)
	if err != nil {
		return tx.Hash(), err
	}
	err = s.backend.SendTransaction(ctx, &tx)
	unlock()
	switch {
	case err == nil || isAlreadyKnown(err):
		return tx.Hash(), nil
	case isNonceTooLow(err):
		// Its nonce is taken by a mined transaction: this one, or another that makes it dead.
		if s.receiptMissing(ctx, tx.Hash()) {
			return tx.Hash(), fmt.Errorf("chain: rebroadcast %s: %w", tx.Hash().Hex(), ErrTxDead)
		}
		return tx.Hash(), nil // mined (the caller reads the receipt), or the node cannot say now
	case isNonceStale(err):
		return tx.Hash(), nil // another pending transaction holds the nonce: wait and see
	case isFeeCapTooLow(err):
		return tx.Hash(), fmt.Errorf("chain: rebroadcast %s: %w: %w", tx.Hash().Hex(), ErrUnderpriced, err)
	default:
		return tx.Hash(), fmt.Errorf("chain: rebroadcast %s: %w", tx.Hash().Hex(), err)
	}
}

// receiptMissing reports whether the receipts reader says, again and again for ReceiptLag,
// that it has no receipt of hash. Anything else (the receipt, another error, the caller's
// deadline) is not proof that the transaction is dead.
func (s *Sender) receiptMissing(ctx context.Context, hash common.Hash) bool {
	deadline := time.Now().Add(s.lag)
	every := max(s.lag/10, time.Millisecond)
	for {
		_, err := s.receipts.TransactionReceipt(ctx, hash)
		if !errors.Is(err, ethereum.NotFound) {
			return false
		}
		if !time.Now().Before(deadline) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(every):
		}
	}
}

// WaitReceipt waits for hash to be mined and confirmed by SenderOptions.Confirmations blocks,
// polling every pollEvery; see the package-level WaitReceipt for the ErrReceiptTimeout
// contract.
func (s *Sender) WaitReceipt(ctx context.Context, hash common.Hash, pollEvery time.Duration) (*types.Receipt, error) {
	if s.confirm == 0 {
		return WaitReceipt(ctx, s.receipts, hash, pollEvery)
	}
	return WaitConfirmed(ctx, s.receipts, headNumber{s.backend}, hash, s.confirm, pollEvery)
}

// headNumber reads the head's number through a Backend's HeaderByNumber.
type headNumber struct{ b Backend }

func (h headNumber) BlockNumber(ctx context.Context) (uint64, error) {
	head, err := h.b.HeaderByNumber(ctx, nil)
	if err != nil {
		return 0, err
	}
	return head.Number.Uint64(), nil
}

// send handles calls and (to == nil) contract creations.
func (s *Sender) send(ctx context.Context, to *common.Address, data []byte, gas uint64, persist func(*types.Transaction) error) (common.Hash, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultSendTimeout)
	defer cancel()

	tip, feeCap, blockGas, err := s.fees(ctx)
	if err != nil {
		return common.Hash{}, err
	}
	if gas == 0 || gas > blockGas {
		est, err := s.backend.EstimateGas(ctx, ethereum.CallMsg{From: s.from, To: to, Data: data})
		if err != nil {
			if isReverted(err) {
				return common.Hash{}, fmt.Errorf("chain: estimate gas: %w: %w", ErrExecutionReverted, err)
			}
			return common.Hash{}, fmt.Errorf("chain: estimate gas: %w", err)
		}
		// The margin never carries the limit past the block's: a node refuses such a
		// transaction although the call fits in a block.
		gas = blockGas
		if est < blockGas {
			gas = min(est+est*s.marginPct/100, blockGas)
		}
	}

	unlock, err := s.acquire(ctx)
	if err != nil {
		return common.Hash{}, err
	}
	defer unlock()
	// Ask the node every time: a cached nonce goes stale whenever anything else sends with
	// this key (another replica, a recovery re-broadcast), and a stale nonce makes a
	// persisted send sign a second transaction for the same payment.
	s.synced = false
	const attempts = 5 // a stale nonce is resynced at most four times before giving up
	var floor uint64   // after a refusal for nonce n, never n again: at least n+1
	for attempt := 1; ; attempt++ {
		if !s.synced {
			n, err := s.backend.PendingNonceAt(ctx, s.from)
			if err != nil {
				return common.Hash{}, fmt.Errorf("chain: pending nonce of %s: %w", s.from.Hex(), err)
			}
			// A node's pending count can lag its own pool for a moment (while a block is
			// being committed): the nonce it just refused as taken is taken whatever it says.
			s.nonce, s.synced = max(n, floor), true
		}
		tx, err := types.SignNewTx(s.key, s.signer, &types.DynamicFeeTx{
			ChainID:   s.chainID,
			Nonce:     s.nonce,
			GasTipCap: tip,
			GasFeeCap: feeCap,
			Gas:       gas,
			To:        to,
			Data:      data,
		})
		if err != nil {
			return common.Hash{}, fmt.Errorf("chain: sign tx: %w", err)
		}
		if persist != nil {
			if err := persist(tx); err != nil {
				return common.Hash{}, fmt.Errorf("chain: persisting tx before broadcast: %w", err)
			}
		}
		err = s.backend.SendTransaction(ctx, tx)
		switch {
		case err == nil || isAlreadyKnown(err):
			s.nonce++
			s.log.Debug("chain: tx sent", "hash", tx.Hash().Hex(), "from", s.from.Hex(), "nonce", tx.Nonce(), "gas", gas)
			return tx.Hash(), nil
		case isNonceStale(err) && attempt < attempts && (persist == nil || isNonceTooLow(err)):
			// Someone else (another process with the same key, or a replaced tx) used this
			// nonce: resync from the node's pending view and sign again.
			s.log.Warn("chain: nonce resync", "from", s.from.Hex(), "nonce", s.nonce, "err", err)
			s.synced, floor = false, tx.Nonce()+1
		default:
			// The node may or may not have kept the transaction (timeouts, dropped
			// connections), so trust the node's count next time rather than our own.
			s.synced = false
			return common.Hash{}, fmt.Errorf("chain: send tx nonce %d: %w", s.nonce, err)
		}
	}
}

// acquire takes the send lock (and the shared one, when configured): every sign-and-broadcast
// of the key happens under it, so nonces reach the node in order.
func (s *Sender) acquire(ctx context.Context) (unlock func(), err error) {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("chain: waiting to send: %w", ctx.Err())
	}
	if s.sharedLock == nil {
		return func() { <-s.lock }, nil
	}
	shared, err := s.sharedLock(ctx)
	if err != nil {
		<-s.lock
		return nil, fmt.Errorf("chain: taking the shared send lock: %w", err)
	}
	return func() { shared(); <-s.lock }, nil
}

// fees prices an EIP-1559 transaction: the node's suggested tip, and a cap of twice the head's
// base fee plus the tip, which survives six full blocks of base-fee growth, lowered to
// MaxFeePerGas when that is less (refused when the cap cannot pay base fee and tip now). It also returns the
// head's gas limit, the most gas one transaction can be given.
func (s *Sender) fees(ctx context.Context) (tip, feeCap *big.Int, blockGas uint64, err error) {
	tip, head, err := s.market(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	feeCap, err = s.capped(new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), tip), new(big.Int).Add(head.BaseFee, tip))
	if err != nil {
		return nil, nil, 0, err
	}
	return tip, feeCap, head.GasLimit, nil
}

// capped is the fee cap to offer, feeCap, lowered to MaxFeePerGas when that is less: the cap
// caps the offer, and refuses it (ErrFeeCapExceeded) only when it is below need, the least
// that can win a block now.
func (s *Sender) capped(feeCap, need *big.Int) (*big.Int, error) {
	switch {
	case s.maxFee == nil || feeCap.Cmp(s.maxFee) <= 0:
		return feeCap, nil
	case need.Cmp(s.maxFee) > 0:
		return nil, fmt.Errorf("chain: max fee %s needed, above cap %s: %w", need, s.maxFee, ErrFeeCapExceeded)
	default:
		return new(big.Int).Set(s.maxFee), nil
	}
}

// market reads what the node asks now: its suggested tip, and the head, whose base fee is set.
func (s *Sender) market(ctx context.Context) (tip *big.Int, head *types.Header, err error) {
	tip, err = s.backend.SuggestGasTipCap(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("chain: suggest gas tip: %w", err)
	}
	head, err = s.backend.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("chain: head header: %w", err)
	}
	if head.BaseFee == nil {
		return nil, nil, fmt.Errorf("chain: head %d: %w", head.Number, ErrNoBaseFee)
	}
	return tip, head, nil
}

// isNonceStale matches geth's and anvil's rejections of a nonce that is already taken.
func isNonceStale(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "nonce too low") || strings.Contains(msg, "replacement transaction underpriced")
}

// isNonceTooLow matches a nonce below the account's mined count: a transaction that can never
// be mined.
func isNonceTooLow(err error) bool {
	return strings.Contains(strings.ToLower(err.Error()), "nonce too low")
}

// isFeeCapTooLow matches geth's and anvil's refusal of a transaction whose fee cap is below
// the base fee it would be mined at.
func isFeeCapTooLow(err error) bool {
	return strings.Contains(strings.ToLower(err.Error()), "max fee per gas less than block base fee")
}

// isAlreadyKnown matches a resubmission of a transaction the pool already holds.
func isAlreadyKnown(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "already known") || strings.Contains(msg, "already imported")
}
