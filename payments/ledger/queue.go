package ledger

// The settlement queue and its batches: what batch workers claim, what recovery lists, and the
// one signed transaction of each batch. Moving a dead batch is in batchmove.go, the backlog's
// age in backlog.go.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Scope narrows ClaimQueued to payments one batch transaction can settle; "" matches any.
type Scope struct {
	Rail    string
	Network string
	Asset   string
}

// queuedWhere is the WHERE clause of a read of scope's queue, its parameters numbered from
// $next on. Only the fields scope sets are compared, by equality, so that a full scope (what
// the worker and the backlog read) walks idx_payments_queue in order.
func (s Scope) queuedWhere(next int) (string, []any) {
	return s.where("status = 'queued'", next)
}

// ClaimQueued moves up to limit queued payments of scope, oldest first, to submitted under
// batchID and returns them. Workers on any number of replicas never claim the same payment
// (FOR UPDATE SKIP LOCKED). It needs Postgres: unreachable is ErrUnavailable, nothing spooled.
// Record the batch's signed transaction with RecordBatchTx before broadcasting it.
func (l *Ledger) ClaimQueued(ctx context.Context, limit int, batchID uuid.UUID, scope Scope) ([]Payment, error) {
	return l.claimQueued(ctx, limit, StatusSubmitted, Patch{BatchID: batchID}, scope)
}

// ClaimQueuedSettling moves up to limit queued payments of scope, oldest first, to settling
// and returns them, for a rail that settles each through a remote facilitator. As with
// ClaimQueued, no two workers claim one payment.
func (l *Ledger) ClaimQueuedSettling(ctx context.Context, limit int, scope Scope) ([]Payment, error) {
	return l.claimQueued(ctx, limit, StatusSettling, Patch{}, scope)
}

func (l *Ledger) claimQueued(ctx context.Context, limit int, to Status, patch Patch, scope Scope) ([]Payment, error) {
	if err := checkTransition([]Status{StatusQueued}, to, patch); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 10000 {
		return nil, invalid("claim limit %d is outside 1 .. 10000", limit)
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	where, args := scope.queuedWhere(4)
	rows, err := l.pool.Query(qctx, `WITH picked AS (
		SELECT id FROM payments WHERE `+where+`
		ORDER BY created_at, id
		LIMIT $1
		FOR UPDATE SKIP LOCKED
	)
	UPDATE payments p SET status = $3, batch_id = $2::uuid, updated_at = now()
	FROM picked WHERE p.id = picked.id AND p.status = 'queued'
	RETURNING `+paymentColumns("p."), append([]any{limit, uuidArg(patch.BatchID), string(to)}, args...)...)
	if err != nil {
		return nil, dbError(ctx, "claim queued payments", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Payment, error) { return scanPayment(r) })
	if err != nil {
		return nil, dbError(ctx, "claim queued payments", err)
	}
	sortByCreated(out)
	return out, nil
}

// Staleness is how long recovery lets a payment sit untouched before it takes it up.
type Staleness struct {
	// Working covers verified payments, whose call may still be running, and settling ones,
	// whose facilitator may still be answering the call's request.
	Working time.Duration
	// OnChain covers submitted and pending payments, whose transaction is recorded: once no
	// request or batch lane awaits its receipt, recovery can read the chain (and outbid a
	// transaction the market left behind) without waiting as long as the longest call.
	OnChain time.Duration
	// Rail, when set, lists only that rail's payments: each rail's recovery pages through its
	// own, so that another rail's payments it cannot finish never fill its page.
	Rail string
}

func (a Staleness) check() error {
	if a.Working < 0 || a.OnChain < 0 {
		return invalid("staleness %+v is negative", a)
	}
	return nil
}

// isStale reports whether p, last touched at updated, is older than its status's age at now.
func (a Staleness) isStale(p Payment, now time.Time) bool {
	switch p.Status {
	case StatusVerified, StatusSettling:
		return p.UpdatedAt.Before(now.Add(-a.Working))
	case StatusSubmitted, StatusPending:
		return p.UpdatedAt.Before(now.Add(-a.OnChain))
	}
	return false
}

// ListRecoverable returns up to limit payments that nobody has moved for olderThan, oldest
// first: verified ones (the call never finished: mark them not_charged), submitted or
// pending ones (reconcile them against the chain, re-broadcasting RawTx or the batch's
// transaction) and settling ones (ask the chain, then the facilitator again). It needs Postgres: unreachable is ErrUnavailable. Age is measured from
// updated_at, which a spooled payment gets when it reaches Postgres, so an outage does not
// make a payment that is still being worked on look abandoned.
func (l *Ledger) ListRecoverable(ctx context.Context, olderThan time.Duration, limit int) ([]Payment, error) {
	return l.ListStale(ctx, Staleness{Working: olderThan, OnChain: olderThan}, limit)
}

// ListStale is ListRecoverable with two ages: Working for verified and settling payments,
// OnChain for submitted and pending ones.
func (l *Ledger) ListStale(ctx context.Context, age Staleness, limit int) ([]Payment, error) {
	if err := age.check(); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 10000 {
		return nil, invalid("list limit %d is outside 1 .. 10000", limit)
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	// The first bound (the younger age) lets the recoverable index range over updated_at; the
	// second holds each status to its own age.
	rows, err := l.pool.Query(qctx, `SELECT `+paymentColumns("")+` FROM payments
		WHERE status IN ('verified', 'submitted', 'settling', 'pending')
		  AND updated_at < now() - LEAST($1::bigint, $2::bigint) * interval '1 microsecond'
		  AND updated_at < now() - (CASE WHEN status IN ('submitted', 'pending') THEN $2::bigint ELSE $1::bigint END) * interval '1 microsecond'
		  AND ($4 = '' OR rail = $4)
		ORDER BY updated_at, id LIMIT $3`, age.Working.Microseconds(), age.OnChain.Microseconds(), limit, age.Rail)
	if err != nil {
		return nil, dbError(ctx, "list recoverable payments", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Payment, error) { return scanPayment(r) })
	if err != nil {
		return nil, dbError(ctx, "list recoverable payments", err)
	}
	return out, nil
}

// TransitionBatch moves every payment of a batch that is in one of the statuses in from to
// to, recording patch on each (typically the batch's TxHash), and returns those it moved. It
// needs Postgres: unreachable is ErrUnavailable.
func (l *Ledger) TransitionBatch(ctx context.Context, batchID uuid.UUID, from []Status, to Status, patch Patch) ([]Payment, error) {
	if batchID == uuid.Nil {
		return nil, invalid("batch id is required")
	}
	if err := checkTransition(from, to, patch); err != nil {
		return nil, err
	}
	at := normalizeTime(time.Now())
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	rows, err := l.pool.Query(qctx, fmt.Sprintf(transitionSQL, "batch_id = $1::uuid"), transitionArgs(batchID.String(), from, to, patch, at)...)
	if err != nil {
		return nil, dbError(ctx, "move batch "+batchID.String(), err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Payment, error) { return scanPayment(r) })
	if err != nil {
		if pe, ok := contentRejected(err); ok && pe.Code == "23514" {
			return nil, fmt.Errorf("ledger: move batch %s: refused by the database: %s: %w", batchID, pe.Message, ErrIllegalTransition)
		}
		return nil, dbError(ctx, "move batch "+batchID.String(), err)
	}
	sortByCreated(out)
	return out, nil
}

// Batch is the signed transaction that settles a batch of payments.
type Batch struct {
	ID        uuid.UUID
	RawTx     []byte
	TxHash    string
	CreatedAt time.Time
}

// RecordBatchTx records a batch's signed transaction; call it before broadcasting. It is
// written once: recording the same bytes again is a no-op, different bytes are ErrConflict
// (recovery must re-broadcast the recorded transaction, never sign another). A batch whose
// payments are submitted but which has no recorded transaction was never broadcast, so
// recovery may sign one and record it under the same batch id. It needs Postgres: unreachable
// is ErrUnavailable.
func (l *Ledger) RecordBatchTx(ctx context.Context, batchID uuid.UUID, rawTx []byte, txHash string) error {
	if batchID == uuid.Nil {
		return invalid("batch id is required")
	}
	if len(rawTx) == 0 || txHash == "" {
		return invalid("a batch transaction needs its bytes and its hash")
	}
	if err := (Patch{RawTx: rawTx, TxHash: txHash}).validate(); err != nil {
		return err
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	tag, err := l.pool.Exec(qctx, `INSERT INTO payment_batches (id, raw_tx, tx_hash) VALUES ($1::uuid, $2, $3) ON CONFLICT (id) DO NOTHING`,
		batchID.String(), rawTx, txHash)
	if err != nil {
		return dbError(ctx, "record batch "+batchID.String(), err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	have, err := l.GetBatch(ctx, batchID)
	if err != nil {
		return err
	}
	if have.TxHash != txHash || string(have.RawTx) != string(rawTx) {
		return fmt.Errorf("ledger: batch %s already has transaction %s: %w", batchID, have.TxHash, ErrConflict)
	}
	return nil
}

// GetBatch returns a batch's recorded transaction, or ErrNotFound when none was recorded.
func (l *Ledger) GetBatch(ctx context.Context, batchID uuid.UUID) (Batch, error) {
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	b := Batch{ID: batchID}
	err := l.pool.QueryRow(qctx, `SELECT raw_tx, tx_hash, created_at FROM payment_batches WHERE id = $1::uuid`, batchID.String()).
		Scan(&b.RawTx, &b.TxHash, &b.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Batch{}, fmt.Errorf("ledger: batch %s: %w", batchID, ErrNotFound)
	}
	if err != nil {
		return Batch{}, dbError(ctx, "get batch "+batchID.String(), err)
	}
	b.CreatedAt = normalizeTime(b.CreatedAt)
	return b, nil
}
