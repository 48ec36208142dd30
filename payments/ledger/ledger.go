package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/secureexec/secureexec/internal/segspool"
)

// Options tunes a Ledger; zero values take the defaults in brackets.
type Options struct {
	// SpoolDir is the directory of the spool. Required: without it an outage would lose
	// claimed nonces and new payments. One directory per process.
	SpoolDir string
	// DBTimeout is the deadline of each Postgres statement on the request path [2s].
	DBTimeout time.Duration
	// RetryMin and RetryMax bound the replay backoff while Postgres is away [100ms, 5s].
	RetryMin, RetryMax time.Duration
	// MaxSpoolBytes caps the spool; past it, operations that would spool fail closed with
	// ErrUnavailable instead of filling the disk [256 MiB].
	MaxSpoolBytes int64
	// SegmentBytes is the size at which a spool segment is sealed [16 MiB].
	SegmentBytes int64
	// MaxHeld caps how many spooled payments are kept whole in memory, for Get and for moves
	// made before they reach Postgres [50000]. Past it a payment is still spooled, but reads
	// and moves of it wait for the database.
	MaxHeld int
	// LeaseCheck is how often RunExclusive checks that its Postgres session (and so its
	// advisory lock) is alive [5s].
	LeaseCheck time.Duration
	// Logger receives warnings and errors [slog.Default()].
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur(&o.DBTimeout, 2*time.Second)
	defDur(&o.RetryMin, 100*time.Millisecond)
	defDur(&o.RetryMax, 5*time.Second)
	defDur(&o.LeaseCheck, 5*time.Second)
	o.RetryMax = max(o.RetryMax, o.RetryMin)
	if o.MaxSpoolBytes <= 0 {
		o.MaxSpoolBytes = 256 << 20
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 16 << 20
	}
	if o.MaxHeld <= 0 {
		o.MaxHeld = 50000
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Stats are the ledger's counters (monotonic) and gauges.
type Stats struct {
	Spooled    uint64 // operations written to the spool
	Replayed   uint64 // spooled operations applied to Postgres
	Rejected   uint64 // spooled operations Postgres could not apply (see payment_spool_log)
	Unreadable uint64 // spool lines that could not be decoded (see ledger-unreadable.jsonl)
	SpoolDepth int64  // operations in the spool, not yet replayed
	SpoolBytes int64  // bytes of spool on disk
	Held       int    // spooled payments this process knows of, not yet in Postgres
	Degraded   bool   // Postgres is considered away: spoolable writes go to the spool first
}

// Ledger is the durable record of payments: their states in Postgres, with a local spool for
// the writes that may wait while Postgres is away (see the package documentation for which).
// One Ledger per process; it owns the spool's replayer goroutine, which Close stops.
type Ledger struct {
	pool  *pgxpool.Pool
	opts  Options
	log   *slog.Logger
	spool *segspool.Spool

	// Concurrent creates and common moves share statements (paymentbatch.go).
	creates *coalescer[Payment, struct{}]
	moves   *coalescer[moveReq, Payment]

	mu   sync.Mutex // guards held; held across a spooled move's append so moves keep their order
	held map[uuid.UUID]*heldPayment

	degraded atomic.Bool
	signal   chan struct{}
	stop     chan struct{}
	ctx      context.Context // the replayer's; cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	spooled, replayed, rejected, unreadable atomic.Uint64
}

// heldPayment is a payment with operations in the spool. Until they are all applied, it
// exists only on this replica's disk: no other replica can see or move it, so this process's
// view of it is the truth, and its later moves must follow the earlier ones through the spool.
type heldPayment struct {
	payment *Payment // nil when over MaxHeld
	// sure is false when Postgres may already hold the payment (its INSERT was sent before the
	// connection broke, it was spooled by an earlier process, or its create was replayed):
	// then moves wait for replay.
	sure    bool
	pending int           // spool lines not yet applied
	drained chan struct{} // closed when pending reaches 0
	// moves are the moves spooled after the payment's create, replayed with it (applyOp).
	moves []*spoolOp
	// replaying is non-nil while the create is being replayed (closed when that ends): the
	// payment's moves wait for it.
	replaying chan struct{}
}

// Open opens (or creates) the spool in opts.SpoolDir and starts replaying it: what an earlier
// process left there is applied as soon as Postgres takes it. The pool stays the caller's;
// run store.Migrate on it first. Close the Ledger before the pool.
func Open(pool *pgxpool.Pool, opts Options) (*Ledger, error) {
	opts = opts.withDefaults()
	if pool == nil {
		return nil, errors.New("ledger: pool_required")
	}
	if opts.SpoolDir == "" {
		return nil, errors.New("ledger: spool_dir_required")
	}
	sp, err := openSpool(opts.SpoolDir, opts.SegmentBytes, opts.MaxSpoolBytes)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Ledger{
		pool: pool, opts: opts, log: opts.Logger.With("component", "payments_ledger"), spool: sp,
		held: map[uuid.UUID]*heldPayment{}, signal: make(chan struct{}, 1), stop: make(chan struct{}),
		ctx: ctx, cancel: cancel,
	}
	l.creates, l.moves = newPaymentWriter(l), newMoveWriter(l)
	if n := sp.Lines(); n > 0 {
		l.rebuildHeld()
		l.log.Info("payments spool has operations from an earlier run; replaying", "operations", n, "dir", opts.SpoolDir)
	}
	l.wg.Add(1)
	go l.runReplayer()
	return l, nil
}

// Close stops the replayer and waits for it. What is still spooled stays on disk for the
// next process. Operations after Close still spool (they are replayed by the next process)
// or use Postgres directly. Close is idempotent.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() {
		close(l.stop)
		l.cancel()
		l.wg.Wait()
		l.closeErr = l.spool.Close()
	})
	return l.closeErr
}

// Stats returns a snapshot of the counters.
func (l *Ledger) Stats() Stats {
	l.mu.Lock()
	held := len(l.held)
	l.mu.Unlock()
	return Stats{
		Spooled: l.spooled.Load(), Replayed: l.replayed.Load(), Rejected: l.rejected.Load(),
		Unreadable: l.unreadable.Load(), SpoolDepth: l.spool.Lines(), SpoolBytes: l.spool.Bytes(),
		Held: held, Degraded: l.degraded.Load(),
	}
}

// Create records a new payment, verified ("" is verified) or, when it is recorded only once
// its call is done, queued or not_charged (with its ErrorReason); CreatedAt defaults to now. It is idempotent on ID: creating the same payment again is a no-op, a
// different payment under a used ID is ErrConflict, and a NonceKey that another payment
// already holds is ErrNonceUsed. When Postgres is unreachable the payment is spooled (nil
// error: it is durable on local disk and reaches Postgres when it is back); when the spool
// cannot take it either, the error wraps payments.ErrUnavailable.
func (l *Ledger) Create(ctx context.Context, p Payment) error {
	p, err := prepareNew(p, time.Now())
	if err != nil {
		return err
	}
	l.mu.Lock()
	h := l.held[p.ID]
	l.mu.Unlock()
	if h != nil {
		if h.payment != nil && !sameIdentity(*h.payment, p) {
			return fmt.Errorf("ledger: payment %s exists with other terms: %w", p.ID, ErrConflict)
		}
		return nil
	}
	sure := true
	if !l.degraded.Load() {
		err := l.createPayment(ctx, p)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("ledger: create payment %s: %w", p.ID, context.Cause(ctx))
		case errors.Is(err, ErrNonceUsed), errors.Is(err, ErrConflict):
			return err
		case !transientDB(err):
			return fmt.Errorf("ledger: create payment %s: %w", p.ID, err)
		}
		// An INSERT that may have reached the server may also have committed: replaying it is
		// harmless (ON CONFLICT), but another replica may then see the payment, so it is not
		// ours alone to move through the spool.
		sure = pgconn.SafeToRetry(err)
		l.enterDegraded("create payment", err)
	}
	op := &spoolOp{Kind: opCreate, Payment: newPaymentLine(p)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.held[p.ID]; h != nil {
		// A concurrent Create of the same id spooled it first.
		if h.payment != nil && !sameIdentity(*h.payment, p) {
			return fmt.Errorf("ledger: payment %s exists with other terms: %w", p.ID, ErrConflict)
		}
		return nil
	}
	if err := l.appendOp(op); err != nil {
		return unavailable("spool payment "+p.ID.String(), err)
	}
	h = &heldPayment{sure: sure, pending: 1, drained: make(chan struct{})}
	if len(l.held) < l.opts.MaxHeld {
		h.payment = &p
	}
	l.held[p.ID] = h
	return nil
}

const insertPaymentSQL = `INSERT INTO payments (id, rail, status, network, asset, payer, pay_to, amount, nonce_key,
	job_id, payload, attempts, created_at, updated_at, error_reason)
VALUES ($1::uuid, $2, $12, $3, $4, $5, $6, $7::numeric, $8, $9::uuid, $10::jsonb, 0, $11, now(), NULLIF($13, ''))
ON CONFLICT (id) DO NOTHING`

func insertArgs(p Payment) []any {
	return []any{p.ID.String(), p.Rail, p.Network, p.Asset, p.Payer, p.PayTo, p.Amount.String(), p.NonceKey,
		uuidArg(p.JobID), string(p.Payload), p.CreatedAt, string(p.Status), p.ErrorReason}
}

// insertPayment is Create's direct path.
func (l *Ledger) insertPayment(ctx context.Context, p Payment) error {
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	tag, err := l.pool.Exec(qctx, insertPaymentSQL, insertArgs(p)...)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "payments_nonce_key_key" {
			return fmt.Errorf("ledger: payment %s: nonce key held by another payment: %w", p.ID, ErrNonceUsed)
		}
		return err // classified by the caller
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	have, err := l.getDB(qctx, p.ID)
	if err != nil {
		return err
	}
	if !sameIdentity(have, p) {
		return fmt.Errorf("ledger: payment %s exists with other terms: %w", p.ID, ErrConflict)
	}
	return nil
}

// Transition moves a payment from one of the statuses in from to to, recording patch, and
// returns it as it now is. Exactly one of any number of concurrent moves from the same status
// wins, across replicas: the others get ErrConflict. A move that is not an edge of the state
// machine is ErrIllegalTransition; an unknown id ErrNotFound.
//
// A payment that exists only in this replica's spool (created while Postgres was away) moves
// through the spool too, in order, when the move is to not_charged or queued; any other move
// of it first waits, up to Options.DBTimeout, for the spool to deliver it to Postgres. A
// payment already in Postgres is moved there or not at all: Postgres unreachable is
// ErrUnavailable, and then the outcome is unknown only if the statement may have reached the
// server (recovery finds the row in whichever state it is).
func (l *Ledger) Transition(ctx context.Context, id uuid.UUID, from []Status, to Status, patch Patch) (Payment, error) {
	if err := checkTransition(from, to, patch); err != nil {
		return Payment{}, err
	}
	at := normalizeTime(time.Now())
	if p, done, err := l.transitionHeld(ctx, id, from, to, patch, at); done {
		return p, err
	}
	return l.moveDB(ctx, moveReq{id: id, from: from, to: to, patch: patch, at: at})
}

// moveDB is a move in Postgres: through the shared statement when it can be, else (or when
// the shared statement did not move the payment) alone, where moveError says why not.
func (l *Ledger) moveDB(ctx context.Context, m moveReq) (Payment, error) {
	if batchable(m.patch) {
		p, alone, err := l.moves.submit(ctx, m)
		switch {
		case alone:
		case err != nil:
			return Payment{}, l.moveError(ctx, m.id, m.from, err)
		default:
			return p, nil
		}
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	p, err := transitionRow(qctx, l.pool, m.id, m.from, m.to, m.patch, m.at)
	if err != nil {
		return Payment{}, l.moveError(ctx, m.id, m.from, err)
	}
	return p, nil
}

// transitionHeld moves a held payment through the spool, or waits for it to reach Postgres.
// done is false when the move should go to Postgres.
func (l *Ledger) transitionHeld(ctx context.Context, id uuid.UUID, from []Status, to Status, patch Patch, at time.Time) (Payment, bool, error) {
	wctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	l.mu.Lock()
	h := l.held[id]
	for h != nil && h.replaying != nil {
		// Its create is on its way to Postgres, with the moves spooled so far: a move
		// spooled now would follow it late.
		replaying := h.replaying
		l.mu.Unlock()
		select {
		case <-replaying:
		case <-wctx.Done():
			return Payment{}, true, heldWaitError(ctx, id)
		}
		l.mu.Lock()
		h = l.held[id]
	}
	if h == nil {
		l.mu.Unlock()
		return Payment{}, false, nil
	}
	if h.sure && h.payment != nil && spoolable(to) {
		defer l.mu.Unlock()
		if !slices.Contains(from, h.payment.Status) {
			return Payment{}, true, fmt.Errorf("ledger: payment %s is %s, not %v: %w", id, h.payment.Status, from, ErrConflict)
		}
		next, err := applyPatch(*h.payment, to, patch, at)
		if err != nil {
			return Payment{}, true, err
		}
		op := &spoolOp{Kind: opTransition, At: at, Transition: &transitionOp{ID: id, From: from, To: to, Patch: newPatchLine(patch)}}
		if err := l.appendOp(op); err != nil {
			return Payment{}, true, unavailable("spool move of payment "+id.String(), err)
		}
		h.payment = &next
		h.pending++
		h.moves = append(h.moves, op)
		return next.clone(), true, nil
	}
	drained := h.drained
	l.mu.Unlock()
	l.wake()
	select {
	case <-drained:
		return Payment{}, false, nil
	case <-wctx.Done():
		return Payment{}, true, heldWaitError(ctx, id)
	}
}

// heldWaitError is the error of a move that waited in vain for its payment to leave the spool.
func heldWaitError(ctx context.Context, id uuid.UUID) error {
	if ctx.Err() != nil {
		return fmt.Errorf("ledger: move payment %s: %w", id, context.Cause(ctx))
	}
	return unavailable("move payment "+id.String(), errors.New("the payment is still in the local spool, waiting for Postgres"))
}

// querier is what the statements need: a pool, a connection or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// transitionSQL is a move in one statement: the WHERE clause is what makes one of two
// concurrent moves lose (the second finds the row no longer in an allowed status), and what
// keeps a recorded transaction from being replaced. The trigger checks the edge again.
var transitionSQL = `UPDATE payments SET
	status = $3,
	job_id = COALESCE($4::uuid, job_id),
	tx_hash = COALESCE(tx_hash, $5::text),
	raw_tx = COALESCE(raw_tx, $6::bytea),
	batch_id = COALESCE($7::uuid, batch_id),
	error_reason = COALESCE($8::text, error_reason),
	attempts = attempts + $9,
	settled_at = CASE WHEN $3 = 'settled' THEN $10::timestamptz ELSE settled_at END,
	updated_at = now()
WHERE %s AND status = ANY($2::text[])
	AND ($5::text IS NULL OR tx_hash IS NULL OR tx_hash = $5::text)
	AND ($6::bytea IS NULL OR raw_tx IS NULL OR raw_tx = $6::bytea)
RETURNING ` + paymentColumns("")

func transitionArgs(key any, from []Status, to Status, patch Patch, at time.Time) []any {
	attempt := 0
	if patch.Attempt {
		attempt = 1
	}
	var raw any
	if patch.RawTx != nil {
		raw = patch.RawTx
	}
	return []any{key, statusArgs(from), string(to), uuidArg(patch.JobID), textArg(patch.TxHash), raw,
		uuidArg(patch.BatchID), textArg(patch.ErrorReason), attempt, at}
}

// transitionRow applies a move to one row; pgx.ErrNoRows means the row is missing or not in
// an allowed status (moveError tells which).
func transitionRow(ctx context.Context, q querier, id uuid.UUID, from []Status, to Status, patch Patch, at time.Time) (Payment, error) {
	return scanPayment(q.QueryRow(ctx, fmt.Sprintf(transitionSQL, "id = $1::uuid"), transitionArgs(id.String(), from, to, patch, at)...))
}

// moveError explains a move that changed nothing, or classifies a failed one.
func (l *Ledger) moveError(ctx context.Context, id uuid.UUID, from []Status, err error) error {
	if !errors.Is(err, pgx.ErrNoRows) {
		if pe, ok := contentRejected(err); ok && pe.Code == "23514" {
			return fmt.Errorf("ledger: move payment %s: refused by the database: %s: %w", id, pe.Message, ErrIllegalTransition)
		}
		return dbError(ctx, "move payment "+id.String(), err)
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	cur, gerr := l.getDB(qctx, id)
	switch {
	case errors.Is(gerr, pgx.ErrNoRows):
		return fmt.Errorf("ledger: payment %s: %w", id, ErrNotFound)
	case gerr != nil:
		// The move did not happen, and why cannot be told now.
		return dbError(ctx, "payment "+id.String()+" not moved; read it back", gerr)
	case !slices.Contains(from, cur.Status):
		return fmt.Errorf("ledger: payment %s is %s, not %v: %w", id, cur.Status, from, ErrConflict)
	default:
		return txConflict(id)
	}
}

func txConflict(id uuid.UUID) error {
	return fmt.Errorf("ledger: payment %s already has a different transaction recorded: %w", id, ErrConflict)
}

// Get returns a payment: from this replica's spool if it has not reached Postgres yet, else
// from Postgres (unreachable: ErrUnavailable; no such payment: ErrNotFound).
func (l *Ledger) Get(ctx context.Context, id uuid.UUID) (Payment, error) {
	l.mu.Lock()
	h := l.held[id]
	if h != nil && h.payment != nil {
		p := h.payment.clone()
		l.mu.Unlock()
		return p, nil
	}
	l.mu.Unlock()
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	if h != nil {
		// Spooled past MaxHeld: Postgres may not have it yet, so wait for the spool to
		// deliver it rather than answer that it does not exist.
		l.wake()
		select {
		case <-h.drained:
		case <-qctx.Done():
			if ctx.Err() != nil {
				return Payment{}, fmt.Errorf("ledger: get payment %s: %w", id, context.Cause(ctx))
			}
			return Payment{}, unavailable("get payment "+id.String(), errors.New("the payment is still in the local spool, waiting for Postgres"))
		}
	}
	p, err := l.getDB(qctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Payment{}, fmt.Errorf("ledger: payment %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Payment{}, dbError(ctx, "get payment "+id.String(), err)
	}
	return p, nil
}

func (l *Ledger) getDB(ctx context.Context, id uuid.UUID) (Payment, error) {
	return scanPayment(l.pool.QueryRow(ctx, `SELECT `+paymentColumns("")+` FROM payments WHERE id = $1::uuid`, id.String()))
}

// RecordAttempt counts one more settlement attempt on a payment that stays where it is (a
// reconciliation that re-broadcast and is still waiting) and resets its age for
// ListRecoverable. The payment must be in status: otherwise ErrConflict (it moved meanwhile).
// It needs Postgres: unreachable is ErrUnavailable.
func (l *Ledger) RecordAttempt(ctx context.Context, id uuid.UUID, status Status) (Payment, error) {
	if !status.Valid() || status.Terminal() {
		return Payment{}, invalid("attempts are recorded on a payment in progress, not %q", status)
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	p, err := scanPayment(l.pool.QueryRow(qctx, `UPDATE payments SET attempts = attempts + 1, updated_at = now()
		WHERE id = $1::uuid AND status = $2 RETURNING `+paymentColumns(""), id.String(), string(status)))
	if err != nil {
		return Payment{}, l.moveError(ctx, id, []Status{status}, err)
	}
	return p, nil
}

// RecordReference records ref as the reference (TxHash) of a payment that stays in status,
// and resets its age for ListRecoverable: the PaymentIntent of an MPP charge, known once
// Stripe answers, while its call runs. A non-nil payload replaces the rail's stored
// authorization with what the rail learned along with ref. A payment no longer in status, or
// with another reference recorded, is ErrConflict. It needs Postgres: unreachable is
// ErrUnavailable.
func (l *Ledger) RecordReference(ctx context.Context, id uuid.UUID, status Status, ref string, payload json.RawMessage) (Payment, error) {
	if err := checkReference(status, ref, payload); err != nil {
		return Payment{}, err
	}
	var raw any
	if payload != nil {
		raw = string(payload)
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	p, err := scanPayment(l.pool.QueryRow(qctx, `UPDATE payments SET tx_hash = $3, payload = COALESCE($4::jsonb, payload), updated_at = now()
		WHERE id = $1::uuid AND status = $2 AND (tx_hash IS NULL OR tx_hash = $3) RETURNING `+paymentColumns(""),
		id.String(), string(status), ref, raw))
	if err != nil {
		return Payment{}, l.moveError(ctx, id, []Status{status}, err)
	}
	return p, nil
}

func checkReference(status Status, ref string, payload json.RawMessage) error {
	if !status.Valid() || status.Terminal() {
		return invalid("a reference is recorded on a payment in progress, not %q", status)
	}
	if ref == "" {
		return invalid("a reference is required")
	}
	if payload != nil {
		if err := checkPayload(payload); err != nil {
			return err
		}
	}
	return Patch{TxHash: ref}.validate()
}

// ReplaceTx records raw (hash) as the settlement transaction of a submitted or pending payment
// in place of deadHash, which must be its recorded transaction, and keeps deadHash in the
// row's replaced_txs. Call it for a transaction that can never be mined (the node refused it
// as "nonce too low": another transaction of the settlement key took its nonce, and no
// receipt of it exists), or for one the market outbid, whose successor signed at its nonce
// competes with it (chain.Sender.Replace): at most one of the two is mined, and recovery
// records whichever the chain shows used the authorization. The status stays; the trigger allows no other change of a recorded
// transaction. A payment whose transaction is no longer deadHash is ErrConflict. It needs
// Postgres: unreachable is ErrUnavailable.
func (l *Ledger) ReplaceTx(ctx context.Context, id uuid.UUID, deadHash string, raw []byte, hash string) (Payment, error) {
	if err := checkReplacement(deadHash, raw, hash); err != nil {
		return Payment{}, err
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	p, err := scanPayment(l.pool.QueryRow(qctx, `UPDATE payments
		SET raw_tx = $3, tx_hash = $4, replaced_txs = array_append(replaced_txs, tx_hash), attempts = attempts + 1, updated_at = now()
		WHERE id = $1::uuid AND status IN ('submitted', 'pending') AND tx_hash = $2 AND raw_tx IS NOT NULL AND batch_id IS NULL
		RETURNING `+paymentColumns(""), id.String(), deadHash, raw, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return Payment{}, fmt.Errorf("ledger: payment %s is not a submitted or pending payment with its own transaction %s: %w", id, deadHash, ErrConflict)
	}
	if err != nil {
		return Payment{}, l.moveError(ctx, id, []Status{StatusSubmitted, StatusPending}, err)
	}
	return p, nil
}

// TransitionReplacing moves a payment from one of the statuses in from to settled or failed,
// as Transition does, by a transaction (patch.TxHash) other than the one recorded on it,
// replaced: the chain shows that patch.TxHash is the transaction that used the payment's
// authorization (a facilitator's transaction that was replaced, one declared dead while
// another used the authorization, a batch member whose old batch settled nothing). replaced
// must be the recorded transaction and is kept in the row's replaced_txs; the signed bytes, if
// any, stay as the record of what was sent. A payment no longer in from, or whose recorded
// transaction is no longer replaced, is ErrConflict. It needs Postgres: unreachable is
// ErrUnavailable.
func (l *Ledger) TransitionReplacing(ctx context.Context, id uuid.UUID, from []Status, to Status, replaced string, patch Patch) (Payment, error) {
	if err := checkReplacing(from, to, replaced, patch); err != nil {
		return Payment{}, err
	}
	attempt := 0
	if patch.Attempt {
		attempt = 1
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	p, err := scanPayment(l.pool.QueryRow(qctx, `UPDATE payments SET
			status = $3,
			tx_hash = $4,
			replaced_txs = array_append(replaced_txs, tx_hash),
			job_id = COALESCE($6::uuid, job_id),
			error_reason = COALESCE($7::text, error_reason),
			attempts = attempts + $8,
			settled_at = CASE WHEN $3 = 'settled' THEN $9::timestamptz ELSE settled_at END,
			updated_at = now()
		WHERE id = $1::uuid AND status = ANY($2::text[]) AND tx_hash = $5
		RETURNING `+paymentColumns(""),
		id.String(), statusArgs(from), string(to), patch.TxHash, replaced, uuidArg(patch.JobID), textArg(patch.ErrorReason), attempt,
		normalizeTime(time.Now())))
	if err != nil {
		return Payment{}, l.moveError(ctx, id, from, err)
	}
	return p, nil
}

// checkReplacing is checkTransition for TransitionReplacing.
func checkReplacing(from []Status, to Status, replaced string, patch Patch) error {
	if to != StatusSettled && to != StatusFailed {
		return invalid("a recorded transaction is replaced only by the move to settled or failed, not %s", to)
	}
	if replaced == "" || patch.TxHash == "" || replaced == patch.TxHash {
		return invalid("a replacing move names the recorded transaction and a different new one")
	}
	if len(patch.RawTx) > 0 || patch.BatchID != uuid.Nil {
		return invalid("a replacing move records only the transaction's hash")
	}
	return checkTransition(from, to, patch)
}

func checkReplacement(deadHash string, raw []byte, hash string) error {
	if deadHash == "" || hash == "" || deadHash == hash || len(raw) == 0 {
		return invalid("a replacement names the dead transaction and a different new one, with its bytes")
	}
	return Patch{TxHash: hash, RawTx: raw}.validate()
}

// PurgeSpoolLog deletes the payment_spool_log rows of operations applied before before, and
// returns how many. An applied row is needed only while the segment that held its operation
// may be replayed again (its process died between the commit and deleting the segment, and
// the next process on that spool directory replays it): keep them for longer than a replica
// stays down (weeks). Were a segment replayed after its rows went, nothing would move twice
// (creates do nothing on a payment that exists, and no move leads back to the statuses a
// spooled move starts from), but each move would be recorded again as rejected. Rejected rows
// are never purged: each is an operation that did not reach the payments table, kept with its
// body for an operator.
func (l *Ledger) PurgeSpoolLog(ctx context.Context, before time.Time) (int64, error) {
	return purgeInChunks(ctx, l.pool, l.opts.DBTimeout, "purge spool log",
		`DELETE FROM payment_spool_log WHERE op_id IN (SELECT op_id FROM payment_spool_log
			WHERE applied_at < $1 AND outcome = 'applied' LIMIT 5000)`, before)
}

// purgeInChunks runs a bounded DELETE until it deletes less than a chunk, so a purge never
// holds many row locks for long.
func purgeInChunks(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration, what, sql string, arg any) (int64, error) {
	var total int64
	for {
		qctx, cancel := context.WithTimeout(ctx, timeout)
		tag, err := pool.Exec(qctx, sql, arg)
		cancel()
		if err != nil {
			return total, dbError(ctx, what, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 5000 {
			return total, nil
		}
	}
}

func sortByCreated(ps []Payment) {
	sort.Slice(ps, func(i, j int) bool {
		if !ps[i].CreatedAt.Equal(ps[j].CreatedAt) {
			return ps[i].CreatedAt.Before(ps[j].CreatedAt)
		}
		return ps[i].ID.String() < ps[j].ID.String()
	})
}

// appendOp stamps op and writes it to the spool. Operations on a payment are appended with
// l.mu held, so that they reach the spool in the order the held state saw them.
func (l *Ledger) appendOp(op *spoolOp) error {
	op.V = spoolVersion
	op.OpID = uuid.New()
	if op.At.IsZero() {
		op.At = normalizeTime(time.Now())
	}
	line, err := json.Marshal(op)
	if err != nil {
		return err
	}
	if err := appendLine(l.spool, line); err != nil {
		l.log.Error("payments spool append failed", "err", err, "kind", op.Kind, "subject", op.subject())
		// Nothing may be spooled for the replayer to retry: let it see the spool empty and
		// clear degraded, or writes would skip Postgres for good once it is back.
		l.wake()
		return err
	}
	l.spooled.Add(1)
	l.wake()
	return nil
}

// enterDegraded notes that Postgres failed a write: spoolable writes skip it until the
// replayer gets an operation through.
func (l *Ledger) enterDegraded(what string, err error) {
	if !l.degraded.Swap(true) {
		l.log.Warn("Postgres unreachable; spooling payment writes until it is back", "op", what, "err", err)
	}
}

func (l *Ledger) wake() {
	select {
	case l.signal <- struct{}{}:
	default:
	}
}
