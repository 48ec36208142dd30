package x402

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments/ledger"
)

// batchBook is what the batch settler needs from the ledger.
type batchBook interface {
	ClaimQueued(ctx context.Context, limit int, batchID uuid.UUID, scope ledger.Scope) ([]ledger.Payment, error)
	ClaimQueuedSettling(ctx context.Context, limit int, scope ledger.Scope) ([]ledger.Payment, error)
	RecordBatchTx(ctx context.Context, batchID uuid.UUID, rawTx []byte, txHash string) error
	Transition(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) (ledger.Payment, error)
	TransitionBatch(ctx context.Context, batchID uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) ([]ledger.Payment, error)
}

// recoveryBook is what the reconciler, and the recording of what the chain says, need from
// the ledger. Recording a payment decided by another transaction than its recorded one also
// needs replacingBook, which *ledger.Ledger and *ledger.Memory satisfy.
type recoveryBook interface {
	outcomeBook
	ListStale(ctx context.Context, age ledger.Staleness, limit int) ([]ledger.Payment, error)
	RecordAttempt(ctx context.Context, id uuid.UUID, status ledger.Status) (ledger.Payment, error)
	RecordReference(ctx context.Context, id uuid.UUID, status ledger.Status, ref string, payload json.RawMessage) (ledger.Payment, error)
	GetBatch(ctx context.Context, batchID uuid.UUID) (ledger.Batch, error)
	MoveBatch(ctx context.Context, from, to uuid.UUID) ([]ledger.Payment, error)
}

// chainReads is what recovery reads from the node besides receipts: the token's
// authorizationState and AuthorizationUsed logs. *ethclient.Client and the simulated chain's
// client satisfy it.
type chainReads interface {
	ContractCaller
	logReader
}

// finderOf is the useFinder over the node sender sends to (a *chain.Sender, or anything that
// embeds one), reading receipts as the sender does; nil when that node cannot be read so.
func finderOf(sender TxSender, token common.Address) *useFinder {
	s, ok := sender.(interface {
		Backend() chain.Backend
		Receipts() chain.ReceiptReader
		Confirmations() uint64
	})
	if !ok {
		return nil
	}
	b, ok := s.Backend().(chainReads)
	if !ok {
		return nil
	}
	return &useFinder{token: token, nonces: NewRPCReader(b, 0), logs: b, receipts: s.Receipts(), window: defaultLogWindow,
		confirmations: s.Confirmations()}
}

// defaultLogWindow is how many recent blocks are searched for the event of an authorization's
// use, a common RPC limit.
const defaultLogWindow = 10_000

// inFlight are the statuses of a payment with a transaction of ours in flight.
var inFlight = []ledger.Status{ledger.StatusSubmitted, ledger.StatusPending}

// exclusive runs background work on one replica at a time.
type exclusive interface {
	RunExclusive(ctx context.Context, name string, fn func(context.Context) error) (bool, error)
}

// WorkerConfig configures the rail's background work.
type WorkerConfig struct {
	Network   Network
	Batcher   common.Address // the SettlementBatcher; zero disables batch settlement
	BatchSize int            // most payments per batch transaction (default 100)
	// InFlight is how many batch transactions may await their receipts at once (default 4):
	// a chain that mines a block every second or two then takes several batches per block.
	// Sends stay one at a time, in nonce order (the Sender's lock).
	InFlight   int
	Interval   time.Duration // how often to look for work (default 250 ms)
	StaleAfter time.Duration // a verified or settling payment untouched this long is recovered (default 2 min)
	// OnChainAfter is how long a submitted or pending payment (its transaction recorded) is
	// left untouched before recovery reads the chain for it, re-broadcasts it or outbids it
	// (default: ReceiptTimeout, plus twice a send's bound, chain.DefaultSendTimeout (the send,
	// then the outbid check after the wait), plus 30 s, so that no request or batch lane is
	// still sending or awaiting it; never more than StaleAfter).
	OnChainAfter   time.Duration
	ReceiptTimeout time.Duration // how long to wait for a receipt before "pending" (default 30 s)
	// Facilitator, when set, settles through a remote facilitator: queued payments are handed
	// to it one by one and settling ones are recovered through it. Without a settlement key
	// (sender nil) that is all the worker does.
	Facilitator *FacilitatorSettler
	// Reservations, when set, is given back what settled batches and abandoned payments held
	// of their payers' balances (the rail's Config.Reservations).
	Reservations reserver
	Logger       *slog.Logger
}

// Worker settles queued payments in batches and reconciles what a crash or a slow chain
// left behind. Every payment it touches moves only along the ledger's legal transitions,
// and every transaction it sends was recorded before broadcast.
type Worker struct {
	cfg      WorkerConfig
	batches  batchBook
	recovery recoveryBook
	lock     exclusive
	sender   TxSender
	settler  *ChainSettler
	uses     *useFinder // nil: no failure is recorded and no dead transaction replaced
	gas      batchGas
	log      *slog.Logger
	counts   workerCounters

	stop chan struct{}
	done chan struct{}
}

// NewWorker returns a worker; Start runs it and Close stops it.
func NewWorker(cfg WorkerConfig, l interface {
	batchBook
	recoveryBook
	exclusive
}, sender TxSender, settler *ChainSettler) *Worker {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 4
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 2 * time.Minute
	}
	if cfg.ReceiptTimeout <= 0 {
		cfg.ReceiptTimeout = 30 * time.Second
	}
	if cfg.OnChainAfter <= 0 {
		cfg.OnChainAfter = cfg.ReceiptTimeout + 2*chain.DefaultSendTimeout + 30*time.Second
	}
	cfg.OnChainAfter = min(cfg.OnChainAfter, cfg.StaleAfter)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Worker{cfg: cfg, batches: l, recovery: l, lock: l, sender: sender, settler: settler, uses: finderOf(sender, cfg.Network.Asset),
		log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
}

// Start runs the worker until Close. Recovery runs first, so work a crash left is resumed
// before anything new.
func (w *Worker) Start() {
	go func() {
		defer close(w.done)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-w.stop; cancel() }()
		w.Tick(ctx)
		t := time.NewTicker(w.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.Tick(ctx)
			}
		}
	}()
}

// Close stops the worker and waits for it. A batch in flight is left submitted or pending,
// and finished by the next run's recovery.
func (w *Worker) Close() {
	close(w.stop)
	<-w.done
}

// Tick does one round of work: settle queued batches (or hand queued payments to the
// facilitator), then reconcile stale payments.
func (w *Worker) Tick(ctx context.Context) {
	if w.cfg.Facilitator != nil {
		if _, err := w.lock.RunExclusive(ctx, "x402-facilitator-queue", w.settleQueuedRemote); err != nil && ctx.Err() == nil {
			w.log.Warn("x402: facilitator settlement of queued payments", "err", err)
		}
	}
	if w.cfg.Batcher != (common.Address{}) && w.sender != nil {
		if _, err := w.lock.RunExclusive(ctx, "x402-batch", w.settleQueue); err != nil && ctx.Err() == nil {
			w.log.Warn("x402: batch settlement", "err", err)
		}
	}
	if _, err := w.lock.RunExclusive(ctx, "x402-reconcile", w.Reconcile); err != nil && ctx.Err() == nil {
		w.log.Warn("x402: reconciliation", "err", err)
	}
}

func (w *Worker) scope() ledger.Scope {
	return ledger.Scope{Rail: RailName, Network: CAIP2(w.cfg.Network.ChainID), Asset: w.cfg.Network.Asset.Hex()}
}

// settleQueuedRemote hands queued payments (deferred while Postgres was away) to the
// facilitator, one /settle each.
func (w *Worker) settleQueuedRemote(ctx context.Context) error {
	ps, err := w.batches.ClaimQueuedSettling(ctx, w.cfg.BatchSize, w.scope())
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range ps {
		errs = append(errs, w.cfg.Facilitator.reconcile(ctx, p))
		w.releaseIfFinal(ctx, p)
	}
	return errors.Join(errs...)
}

// release gives back what ps held of their payers' balances, one call per payer: a little
// later when their money moved (ReleaseSettled), at once when it never will. A failure is only
// logged, the reservation expires by itself.
func (w *Worker) release(ctx context.Context, moved bool, ps ...ledger.Payment) {
	if w.cfg.Reservations == nil {
		return
	}
	byScope := map[string][]string{}
	for _, p := range ps {
		chainID, err := ParseCAIP2(p.Network)
		if err != nil {
			continue
		}
		scope := reservationScope(chainID, common.HexToAddress(p.Asset), common.HexToAddress(p.Payer))
		byScope[scope] = append(byScope[scope], p.NonceKey)
	}
	give := w.cfg.Reservations.Release
	if moved {
		give = w.cfg.Reservations.ReleaseSettled
	}
	for scope, keys := range byScope {
		if err := give(context.WithoutCancel(ctx), scope, keys...); err != nil {
			w.log.Warn("x402: releasing reservations", "scope", scope, "payments", len(keys), "err", err)
		}
	}
}

// releaseIfFinal releases p's hold once the ledger holds p final (settled, failed, not
// charged): after a reconciliation whose outcome the caller cannot tell.
func (w *Worker) releaseIfFinal(ctx context.Context, p ledger.Payment) {
	if w.cfg.Reservations == nil {
		return
	}
	if cur, err := w.recovery.Get(ctx, p.ID); err == nil && cur.Status.Terminal() {
		w.release(ctx, cur.Status == ledger.StatusSettled, p)
	}
}

// waitReceipt waits ReceiptTimeout at most for the receipt of hash.
func (w *Worker) waitReceipt(ctx context.Context, hash common.Hash) (*types.Receipt, error) {
	wctx, cancel := context.WithTimeout(ctx, w.cfg.ReceiptTimeout)
	defer cancel()
	return w.sender.WaitReceipt(wctx, hash, 20*time.Millisecond)
}

// outbid reports whether a wait for the receipt of the signed transaction raw ended in
// waitErr because the market outbid it: the wait timed out and the node now asks more than raw
// offers. A node that cannot say is not a reason to sign again.
func (w *Worker) outbid(ctx context.Context, raw []byte, waitErr error) bool {
	if len(raw) == 0 || ctx.Err() != nil || !errors.Is(waitErr, chain.ErrReceiptTimeout) {
		return false
	}
	outbid, err := w.sender.Outbid(ctx, raw)
	if err != nil {
		w.log.Warn("x402: cannot tell whether the market outbid a settlement transaction", "err", err)
		return false
	}
	return outbid
}

// authorizationOf decodes the authorization the rail stored with a payment.
func authorizationOf(p ledger.Payment) (chain.Authorization, error) {
	var s storedAuthorization
	if err := json.Unmarshal(p.Payload, &s); err != nil {
		return chain.Authorization{}, fmt.Errorf("x402: payment %s: stored authorization: %w", p.ID, err)
	}
	return s.chainAuthorization()
}
