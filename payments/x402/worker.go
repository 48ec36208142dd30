package x402

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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

// settleQueue settles full batches while the queue holds them, up to InFlight at once: each
// lane claims its own batch (no two claim one payment), sends it and waits for its receipt,
// so that the next batches are sent while earlier ones wait to be mined.
func (w *Worker) settleQueue(ctx context.Context) error {
	errs := make([]error, w.cfg.InFlight)
	var wg sync.WaitGroup
	for lane := range w.cfg.InFlight {
		wg.Go(func() {
			for {
				n, err := w.SettleBatch(ctx)
				if err != nil || n < w.cfg.BatchSize {
					errs[lane] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// SettleBatch settles up to BatchSize queued payments in one transaction through the
// batcher and returns how many it took.
func (w *Worker) SettleBatch(ctx context.Context) (int, error) {
	batchID := uuid.New()
	ps, err := w.batches.ClaimQueued(ctx, w.cfg.BatchSize, batchID, w.scope())
	if err != nil || len(ps) == 0 {
		return 0, err
	}
	return len(ps), w.sendBatch(ctx, batchID, ps, nil)
}

// sendBatch signs, records and broadcasts the batch transaction for payments already moved
// to submitted under batchID, then records each one's outcome. With outbid set (the signed
// transaction of an earlier batch of theirs, which the market outbid), it signs at outbid's
// nonce, with fees that win, so that the two compete for one nonce and at most one is mined.
func (w *Worker) sendBatch(ctx context.Context, batchID uuid.UUID, ps []ledger.Payment, outbid []byte) error {
	auths := make([]chain.Authorization, 0, len(ps))
	for _, p := range ps {
		a, err := authorizationOf(p)
		if err != nil {
			return fmt.Errorf("x402: batch %s: payment %s: %w", batchID, p.ID, err)
		}
		auths = append(auths, a)
	}
	data, err := chain.PackSettleBatch(w.cfg.Network.Asset, auths)
	if err != nil {
		return err
	}
	var raw []byte
	persist := func(tx *types.Transaction) (err error) {
		if raw, err = tx.MarshalBinary(); err != nil {
			return err
		}
		return w.batches.RecordBatchTx(ctx, batchID, raw, tx.Hash().Hex())
	}
	var hash common.Hash
	if outbid == nil {
		hash, err = w.sender.SendPersisted(ctx, w.cfg.Batcher, data, w.gas.limit(len(ps)), persist)
	} else {
		hash, err = w.sender.Replace(ctx, outbid, w.cfg.Batcher, data, 0, persist)
	}
	if err != nil {
		if raw == nil {
			w.keepOutbid(ctx, batchID, outbid) // nothing signed in its place
		}
		// Nothing broadcast, or unknown: the members stay submitted under a batch with or
		// without a recorded transaction, and recovery finishes them. A replacement whose
		// nonce was taken meanwhile (chain.ErrNonceTaken) is dead: recovery then finds the
		// transaction that used the authorizations.
		return fmt.Errorf("x402: batch %s: %w", batchID, err)
	}
	// A replacement is not replaced again in the same pass: if the market outruns it too,
	// the next pass of recovery outbids it.
	return w.awaitBatch(ctx, batchID, hash, raw, outbid == nil, ps, auths)
}

// awaitBatch waits for the receipt of batch batchID's transaction hash (signed as raw) and
// records its members' outcomes. A receipt that does not come leaves them pending, unless the
// market outbid the transaction and mayReplace: then its members are settled by a successor
// at its nonce (replaceOutbid).
func (w *Worker) awaitBatch(ctx context.Context, batchID uuid.UUID, hash common.Hash, raw []byte, mayReplace bool, ps []ledger.Payment, auths []chain.Authorization) error {
	receipt, err := w.waitReceipt(ctx, hash)
	if err != nil && mayReplace && w.outbid(ctx, raw, err) {
		w.log.Warn("x402: batch transaction outbid by the market; settling its payments at its nonce with higher fees", "batch", batchID, "tx", hash.Hex())
		return w.resettle(ctx, batchID, raw)
	}
	if err != nil {
		_, terr := w.batches.TransitionBatch(context.WithoutCancel(ctx), batchID, []ledger.Status{ledger.StatusSubmitted}, ledger.StatusPending, ledger.Patch{TxHash: hash.Hex()})
		errs := []error{fmt.Errorf("x402: batch %s receipt: %w", batchID, err), terr}
		// Members already pending are touched too, so that the next pass reads other stuck
		// payments first (recovery hands them here a page at a time, oldest touched first). One
		// that came pending from an earlier batch (MoveBatch dropped that batch's transaction)
		// is given this one's.
		for _, p := range ps {
			if p.Status != ledger.StatusPending {
				continue
			}
			if p.TxHash == "" {
				if _, err := w.recovery.RecordReference(context.WithoutCancel(ctx), p.ID, ledger.StatusPending, hash.Hex(), nil); err != nil &&
					!errors.Is(err, ledger.ErrConflict) {
					errs = append(errs, err)
				}
			}
			if _, err := w.recovery.RecordAttempt(context.WithoutCancel(ctx), p.ID, ledger.StatusPending); err != nil && !errors.Is(err, ledger.ErrConflict) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if receipt.Status != types.ReceiptStatusSuccessful {
		// The whole transaction reverted (out of gas, most likely: the limit came from earlier
		// batches): it moved nothing and used none of the authorizations. Its payments go to a
		// new batch, whose gas the node estimates; a revert the estimate also meets is refused
		// there, before anything is broadcast.
		w.gas.forget()
		w.log.Warn("x402: batch transaction reverted; settling its payments in a new batch", "batch", batchID, "tx", hash.Hex(),
			"gas_used", receipt.GasUsed)
		return w.resettle(ctx, batchID, nil)
	}
	w.gas.learn(receipt.GasUsed, len(ps))
	return w.recordBatch(ctx, ps, auths, receipt)
}

// recordBatch applies a batch receipt to its members: each settled only if the batcher
// reported success for its (payer, nonce) and the token logged the transfer.
func (w *Worker) recordBatch(ctx context.Context, ps []ledger.Payment, auths []chain.Authorization, receipt *types.Receipt) error {
	results, err := chain.ParseSettled(receipt, w.cfg.Batcher)
	if err != nil {
		return err
	}
	ok := map[[52]byte]string{} // payer ‖ nonce -> "" for success, else the revert reason
	for _, r := range results {
		var k [52]byte
		copy(k[:20], r.From[:])
		copy(k[20:], r.Nonce[:])
		if r.Success {
			ok[k] = ""
		} else if _, seen := ok[k]; !seen {
			ok[k] = "reverted: " + r.Reason
		}
	}
	// The members' moves run at once, so that the ledger writes them in one or two statements
	// (its move writer batches concurrent moves) instead of one round trip each. A member
	// whose item failed is failed only if the chain shows its authorization unused: one used
	// by another transaction is settled by it (failUnlessUsed). A move the ledger refuses for a
	// member that is not final is an error, for reconciliation to finish.
	errs := make([]error, len(ps))
	settled := make([]bool, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		var k [52]byte
		copy(k[:20], auths[i].From[:])
		copy(k[20:], auths[i].Nonce[:])
		reason, reported := ok[k]
		patch := ledger.Patch{TxHash: receipt.TxHash.Hex()}
		to := ledger.StatusSettled
		if !reported || reason != "" || !chain.HasTransfer(receipt, w.cfg.Network.Asset, auths[i].From, auths[i].To, auths[i].Value) {
			to, patch.ErrorReason = ledger.StatusFailed, ReasonTransactionFailed
			if reason != "" {
				patch.ErrorReason = settleReason(reason)
			}
		}
		wg.Go(func() {
			to, patch := to, patch
			if to == ledger.StatusFailed {
				var err error
				if to, patch, err = failUnlessUsed(ctx, w.uses, w.cfg.Network.Asset, auths[i], patch); err != nil {
					errs[i] = fmt.Errorf("x402: payment %s: %w", p.ID, err)
					return
				}
			}
			errs[i] = recordOutcome(ctx, w.recovery, w.log, p.ID, p.TxHash, inFlight, to, patch)
			settled[i] = to == ledger.StatusSettled
		})
	}
	wg.Wait()
	var moved, never []ledger.Payment
	for i, p := range ps {
		switch {
		case errs[i] != nil:
		case settled[i]:
			moved = append(moved, p)
		default:
			never = append(never, p)
		}
	}
	w.release(ctx, true, moved...)
	w.release(ctx, false, never...)
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

// Reconcile finishes what a crash or a slow chain left: verified payments whose call never
// completed are marked not charged; submitted and pending ones are re-broadcast from their
// recorded bytes and settled from their receipts. It never signs a new transaction for a
// payment that has one recorded.
func (w *Worker) Reconcile(ctx context.Context) error {
	ps, err := w.recovery.ListStale(ctx, ledger.Staleness{Working: w.cfg.StaleAfter, OnChain: w.cfg.OnChainAfter}, 200)
	if err != nil {
		return err
	}
	batches := map[uuid.UUID][]ledger.Payment{}
	var errs []error
	for _, p := range ps {
		switch {
		case p.Rail != RailName:
			continue
		case p.Status == ledger.StatusVerified:
			_, err := w.recovery.Transition(ctx, p.ID, []ledger.Status{ledger.StatusVerified}, ledger.StatusNotCharged,
				ledger.Patch{ErrorReason: "abandoned: the call did not complete, no result was delivered"})
			if err != nil && !errors.Is(err, ledger.ErrConflict) {
				errs = append(errs, err)
			} else if err == nil {
				w.release(ctx, false, p) // abandoned: its money never moves
			}
		case p.Status == ledger.StatusSettling || (p.Status == ledger.StatusPending && len(p.RawTx) == 0 && p.BatchID == uuid.Nil):
			// Handed to a facilitator: no transaction of ours to re-broadcast.
			if w.cfg.Facilitator == nil {
				errs = append(errs, fmt.Errorf("x402: payment %s was settled through a facilitator, and X402_FACILITATOR_URL is not set", p.ID))
				continue
			}
			errs = append(errs, w.cfg.Facilitator.reconcile(ctx, p))
			w.releaseIfFinal(ctx, p)
		case w.sender == nil:
			errs = append(errs, fmt.Errorf("x402: payment %s is %s with our own transaction, and there is no settlement key to finish it", p.ID, p.Status))
		case p.BatchID != uuid.Nil:
			batches[p.BatchID] = append(batches[p.BatchID], p)
		default:
			errs = append(errs, w.reconcileSingle(ctx, p))
		}
	}
	for id, members := range batches {
		errs = append(errs, w.reconcileBatch(ctx, id, members))
	}
	return errors.Join(errs...)
}

func (w *Worker) reconcileSingle(ctx context.Context, p ledger.Payment) error {
	a, err := authorizationOf(p)
	if err != nil {
		return err
	}
	if len(p.RawTx) == 0 {
		return fmt.Errorf("x402: payment %s is %s without a recorded transaction", p.ID, p.Status)
	}
	hash, err := w.sender.Rebroadcast(ctx, p.RawTx)
	if errors.Is(err, chain.ErrTxDead) {
		// Another transaction took its nonce: it will never be mined. Its authorization is
		// signed again only if the chain shows it unused; used, the transaction that used it
		// settled the payment.
		done, err := w.settleUsed(ctx, p, a)
		if err != nil || done {
			return err
		}
		w.log.Warn("x402: settlement transaction is dead; replacing it", "payment", p.ID, "tx", p.TxHash)
		_, err = w.settler.resend(ctx, p, a)
		w.releaseIfFinal(ctx, p)
		return ignoreRefusal(err)
	}
	outbid := errors.Is(err, chain.ErrUnderpriced) // the node refuses it now: the base fee outgrew it
	if err != nil && !outbid {
		return err
	}
	var receipt *types.Receipt
	if !outbid {
		receipt, err = w.waitReceipt(ctx, hash)
		outbid = err != nil && w.outbid(ctx, p.RawTx, err)
	}
	if outbid {
		w.log.Warn("x402: settlement transaction outbid by the market; signing it again at its nonce with higher fees", "payment", p.ID, "tx", p.TxHash)
		if hash, err = w.settler.replace(ctx, p, a); err != nil {
			// Nothing broadcast, or the nonce taken meanwhile: the next pass reads what the
			// ledger recorded (the successor, or still the first) and goes on from there.
			return fmt.Errorf("x402: payment %s: replacing outbid transaction %s: %w", p.ID, p.TxHash, err)
		}
		p.TxHash = hash.Hex()
		receipt, err = w.waitReceipt(ctx, hash)
	}
	if err != nil {
		// Still no receipt: pending, and touched, so that the next pass reads other stuck
		// payments first instead of waiting on the same page again.
		if p.Status == ledger.StatusSubmitted {
			_, err = w.recovery.Transition(ctx, p.ID, []ledger.Status{ledger.StatusSubmitted}, ledger.StatusPending, ledger.Patch{Attempt: true})
		} else {
			_, err = w.recovery.RecordAttempt(ctx, p.ID, p.Status)
		}
		if errors.Is(err, ledger.ErrConflict) {
			err = nil // it moved meanwhile: whoever moved it has its receipt
		}
		return err
	}
	to, patch, err := decideReceipt(ctx, w.uses, w.cfg.Network.Asset, a, receipt)
	if err != nil {
		return fmt.Errorf("x402: payment %s: %w", p.ID, err)
	}
	if err := recordOutcome(ctx, w.recovery, w.log, p.ID, p.TxHash, inFlight, to, patch); err != nil {
		return err
	}
	w.release(ctx, to == ledger.StatusSettled, p)
	return nil
}

// settleUsed asks the chain whether the authorization of p, whose transaction settled nothing
// (dead, reverted, never sent), is still unused. Used, or canceled, p is recorded from what the
// chain says (the transaction that used it, whoever sent it) and its hold released: done.
// Unused, nothing is recorded: it may be signed again. Without a chain to ask, it may not.
func (w *Worker) settleUsed(ctx context.Context, p ledger.Payment, a chain.Authorization) (done bool, err error) {
	if w.uses == nil {
		return false, fmt.Errorf("x402: payment %s: its transaction settled nothing, and there is no chain reader to check that its authorization is unused before signing it again", p.ID)
	}
	use, err := w.uses.find(ctx, a)
	if err != nil {
		return false, fmt.Errorf("x402: payment %s: %w", p.ID, err)
	}
	if !use.Used {
		return false, nil
	}
	to, patch := useOutcome(w.cfg.Network.Asset, a, use, ledger.Patch{})
	w.log.Warn("x402: the chain shows the authorization of a payment to sign again already used; recording what it says", "payment", p.ID,
		"recorded_tx", p.TxHash, "tx", patch.TxHash, "status", to, "canceled", use.Canceled)
	if err := recordOutcome(ctx, w.recovery, w.log, p.ID, p.TxHash, inFlight, to, patch); err != nil {
		return false, err
	}
	w.release(ctx, to == ledger.StatusSettled, p)
	return true, nil
}

// resettle settles in a new batch the unfinished members of batch from, whose transaction
// settled none of them: it reverted as a whole, it can never be mined, or it was never
// recorded; or, with outbid set (from's signed transaction), it has not been mined and the
// market outbid it, so the new batch's transaction takes its nonce (sendBatch). Each member's
// authorization is signed again only if the chain shows it unused (settleUsed): one used
// elsewhere is recorded from the transaction that used it. If the chain cannot say for some
// member, nothing is signed now: the members wait in the new batch, with no transaction
// recorded, for the next pass.
func (w *Worker) resettle(ctx context.Context, from uuid.UUID, outbid []byte) error {
	next := uuid.New()
	moved, err := w.recovery.MoveBatch(ctx, from, next)
	if err != nil || len(moved) == 0 {
		return err
	}
	w.log.Info("x402: settling a batch's payments in a new batch", "batch", from, "new_batch", next, "payments", len(moved))
	done := make([]bool, len(moved))
	errs := make([]error, len(moved))
	sem := make(chan struct{}, 8) // chain reads at once
	var wg sync.WaitGroup
	for i, p := range moved {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			a, err := authorizationOf(p)
			if err != nil {
				errs[i] = err
				return
			}
			done[i], errs[i] = w.settleUsed(ctx, p, a)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		w.keepOutbid(ctx, next, outbid)
		return fmt.Errorf("x402: batch %s: nothing signed again: %w", next, err)
	}
	unused := make([]ledger.Payment, 0, len(moved))
	for i, p := range moved {
		if !done[i] {
			unused = append(unused, p)
		}
	}
	if len(unused) == 0 {
		return nil
	}
	// The reads above are not bounded by the send and receipt timeouts that OnChainAfter
	// covers, and the move was the members' last touch: recovery (another replica) may have
	// found next with no recorded transaction meanwhile and signed them itself. Take them
	// again, atomically, just before signing: this move restarts their age, and finds nothing
	// if they are no longer ours.
	final := uuid.New()
	again, err := w.recovery.MoveBatch(ctx, next, final)
	if err != nil {
		w.keepOutbid(ctx, next, outbid)
	}
	if err != nil || len(again) == 0 {
		return err
	}
	return w.sendBatch(ctx, final, again, outbid)
}

func (w *Worker) reconcileBatch(ctx context.Context, batchID uuid.UUID, members []ledger.Payment) error {
	b, err := w.recovery.GetBatch(ctx, batchID)
	if errors.Is(err, ledger.ErrNotFound) {
		// The batch was claimed but its transaction never recorded, so never broadcast: sign
		// it now, for the first time, for every member. members is only what this page of
		// recoverable payments holds; a transaction signed for those alone would be recorded
		// for the whole batch, and the members it left out would be failed by its receipt.
		// Moving them all to a new batch fetches every one.
		return w.resettle(ctx, batchID, nil)
	}
	if err != nil {
		return err
	}
	auths := make([]chain.Authorization, 0, len(members))
	for _, p := range members {
		a, err := authorizationOf(p)
		if err != nil {
			return err
		}
		auths = append(auths, a)
	}
	hash, err := w.sender.Rebroadcast(ctx, b.RawTx)
	switch {
	case errors.Is(err, chain.ErrTxDead):
		// Another transaction took its nonce: it will never be mined and settled none of
		// them. Its members go to a new batch.
		w.log.Warn("x402: batch transaction is dead; settling its payments in a new batch", "batch", batchID, "tx", b.TxHash)
		return w.resettle(ctx, batchID, nil)
	case errors.Is(err, chain.ErrUnderpriced):
		// The node refuses it now: the base fee outgrew it. Its members are settled by a
		// successor at its nonce.
		w.log.Warn("x402: batch transaction outbid by the market; settling its payments at its nonce with higher fees", "batch", batchID, "tx", b.TxHash)
		return w.resettle(ctx, batchID, b.RawTx)
	}
	if err != nil {
		return err
	}
	return w.awaitBatch(ctx, batchID, hash, b.RawTx, true, members, auths)
}

// keepOutbid records outbid, the signed transaction that still holds the nonce of batch id's
// members, as id's transaction when nothing was signed in its place: the next pass then
// re-broadcasts it and outbids it again, instead of signing the members at a later nonce,
// behind it (a pool keeps an outbid transaction, and every later one of the key waits).
func (w *Worker) keepOutbid(ctx context.Context, id uuid.UUID, outbid []byte) {
	if outbid == nil {
		return
	}
	tx, err := chainTx(outbid)
	if err == nil {
		err = w.batches.RecordBatchTx(context.WithoutCancel(ctx), id, outbid, tx.Hash().Hex())
	}
	if err != nil && !errors.Is(err, ledger.ErrConflict) {
		w.log.Warn("x402: recording an outbid batch transaction for its payments' new batch", "batch", id, "err", err)
	}
}

func chainTx(raw []byte) (*types.Transaction, error) {
	var tx types.Transaction
	return &tx, tx.UnmarshalBinary(raw)
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
