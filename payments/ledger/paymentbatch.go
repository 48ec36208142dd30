package ledger

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Limits of the payment writers: how many rows one statement carries, and how many
// statements of one writer run at once. One: a payment row costs Postgres mostly per
// statement (trigger, six indexes, a commit), so rows that wait for the running statement
// and go together in the next cost less than a second statement started beside it (on 2
// cores, 1 in flight gave 0.8–1.0 ms of Postgres CPU per paid call, 2 gave 1.0–1.4, 4 gave
// 1.1–1.3; docs/PERFORMANCE.md).
const (
	paymentBatchMax      = 128
	paymentBatchInFlight = 1
)

// batchFailed settles the rows of a batch whose statement failed as a whole. A statement
// Postgres refused for its content, or rolled back for a deadlock or a serialization failure,
// wrote nothing: each row goes its own way, so that one bad row fails only its caller. Any
// other failure (Postgres unreachable, a timeout) is every row's, as it would have been
// alone.
func batchFailed[R, O any](batch []*batchWait[R, O], err error) {
	var pe *pgconn.PgError
	retryAlone := !transientDB(err) || (errors.As(err, &pe) && pgClass(pe) == "40")
	for _, wt := range batch {
		if retryAlone {
			wt.alone = true
		} else {
			wt.err = err
		}
		close(wt.done)
	}
}

// sortByID orders a batch by payment id, so that concurrent statements (other replicas')
// lock rows in one order; a deadlock that happens all the same is retried row by row
// (batchFailed).
func sortByID[R, O any](batch []*batchWait[R, O], id func(R) uuid.UUID) {
	slices.SortFunc(batch, func(a, b *batchWait[R, O]) int {
		x, y := id(a.req), id(b.req)
		return bytes.Compare(x[:], y[:])
	})
}

// newPaymentWriter returns the writer of Create's rows.
func newPaymentWriter(l *Ledger) *coalescer[Payment, struct{}] {
	return &coalescer[Payment, struct{}]{timeout: l.opts.DBTimeout, write: l.writePayments, maxRows: paymentBatchMax, maxInFlight: paymentBatchInFlight}
}

// newMoveWriter returns the writer of Transition's common moves.
func newMoveWriter(l *Ledger) *coalescer[moveReq, Payment] {
	return &coalescer[moveReq, Payment]{timeout: l.opts.DBTimeout, write: l.writeMoves, maxRows: paymentBatchMax, maxInFlight: paymentBatchInFlight}
}

// createPayment is insertPayment through the batch: the same outcomes, and the same
// single-row statement for every row the batch could not settle.
func (l *Ledger) createPayment(ctx context.Context, p Payment) error {
	_, alone, err := l.creates.submit(ctx, p)
	if alone {
		return l.insertPayment(ctx, p)
	}
	return err
}

const insertPaymentsSQL = `INSERT INTO payments (id, rail, status, network, asset, payer, pay_to, amount, nonce_key,
	job_id, payload, attempts, created_at, updated_at, error_reason)
SELECT id::uuid, rail, status, network, asset, payer, pay_to, amount::numeric, nonce_key, job_id::uuid, payload::jsonb, 0, created_at, now(),
	NULLIF(error_reason, '')
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
	$10::text[], $11::timestamptz[], $12::text[], $13::text[])
	AS t(id, rail, network, asset, payer, pay_to, amount, nonce_key, job_id, payload, created_at, status, error_reason)
ON CONFLICT DO NOTHING
RETURNING id`

// writePayments inserts a batch of new payments in one statement. ON CONFLICT has no target,
// so that a nonce key another payment holds skips its row instead of failing the statement.
// A row that was not inserted (its id or its nonce key is taken, or repeats an earlier row of
// the batch) is left to the caller's single-row INSERT, which tells a retried Create (no-op)
// from ErrConflict and ErrNonceUsed exactly as before.
func (l *Ledger) writePayments(ctx context.Context, batch []*batchWait[Payment, struct{}]) {
	if len(batch) == 1 {
		wt := batch[0]
		wt.err = l.insertPayment(ctx, wt.req)
		close(wt.done)
		return
	}
	sortByID(batch, func(p Payment) uuid.UUID { return p.ID })
	var (
		in                                                                []*batchWait[Payment, struct{}]
		later                                                             []*batchWait[Payment, struct{}]
		seenID                                                            = make(map[uuid.UUID]bool, len(batch))
		seenKey                                                           = make(map[string]bool, len(batch))
		ids, rails, nets, assets, payers, payTos, amounts, keys, payloads []string
		statuses, reasons                                                 []string
		jobs                                                              []*string
		created                                                           []time.Time
	)
	for _, wt := range batch {
		p := wt.req
		// A repeated id or key is settled after the statement, against the row it wrote.
		if seenID[p.ID] || seenKey[p.NonceKey] {
			later = append(later, wt)
			continue
		}
		seenID[p.ID], seenKey[p.NonceKey] = true, true
		in = append(in, wt)
		ids = append(ids, p.ID.String())
		rails, nets, assets = append(rails, p.Rail), append(nets, p.Network), append(assets, p.Asset)
		payers, payTos = append(payers, p.Payer), append(payTos, p.PayTo)
		amounts, keys = append(amounts, p.Amount.String()), append(keys, p.NonceKey)
		var job *string
		if p.JobID != uuid.Nil {
			s := p.JobID.String()
			job = &s
		}
		jobs, payloads, created = append(jobs, job), append(payloads, string(p.Payload)), append(created, p.CreatedAt)
		statuses, reasons = append(statuses, string(p.Status)), append(reasons, p.ErrorReason)
	}
	inserted := make(map[uuid.UUID]bool, len(in))
	err := collectIDs(ctx, l, insertPaymentsSQL, inserted, ids, rails, nets, assets, payers, payTos, amounts, keys, jobs, payloads, created,
		statuses, reasons)
	if err != nil {
		batchFailed(batch, err)
		return
	}
	for _, wt := range in {
		wt.alone = !inserted[wt.req.ID]
		close(wt.done)
	}
	for _, wt := range later {
		wt.alone = true
		close(wt.done)
	}
}

// collectIDs runs a statement that returns ids, and marks them in got.
func collectIDs(ctx context.Context, l *Ledger, sql string, got map[uuid.UUID]bool, args ...any) error {
	rows, err := l.pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			return err
		}
		got[id] = true
	}
	return rows.Err()
}

// moveReq is one Transition waiting for the shared statement.
type moveReq struct {
	id    uuid.UUID
	from  []Status
	to    Status
	patch Patch
	at    time.Time
}

// batchable reports whether a move may share a statement: any move but one that records a
// signed transaction (rare, and the row's bytes are best compared alone).
func batchable(patch Patch) bool { return patch.RawTx == nil }

// moveSQL is transitionSQL for many rows: the same SET and the same WHERE, per row. from is a
// comma-separated list (statuses have no commas): unnest cannot give each row an array.
var moveSQL = `UPDATE payments p SET
	status = t.to_status,
	job_id = COALESCE(t.job_id::uuid, p.job_id),
	tx_hash = COALESCE(p.tx_hash, t.tx_hash),
	batch_id = COALESCE(t.batch_id::uuid, p.batch_id),
	error_reason = COALESCE(t.reason, p.error_reason),
	attempts = p.attempts + t.attempt,
	settled_at = CASE WHEN t.to_status = 'settled' THEN t.at ELSE p.settled_at END,
	updated_at = now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::timestamptz[])
	AS t(id, from_statuses, to_status, job_id, tx_hash, batch_id, reason, attempt, at)
WHERE p.id = t.id::uuid AND p.status = ANY(string_to_array(t.from_statuses, ','))
	AND (t.tx_hash IS NULL OR p.tx_hash IS NULL OR p.tx_hash = t.tx_hash)
RETURNING ` + paymentColumns("p.")

// writeMoves applies a batch of moves in one statement. A payment the statement did not move
// (not in an allowed status, another transaction recorded, gone, or named twice in the batch)
// is left to the caller's single-row move, whose moveError names the reason as before.
func (l *Ledger) writeMoves(ctx context.Context, batch []*batchWait[moveReq, Payment]) {
	if len(batch) == 1 {
		wt := batch[0]
		m := wt.req
		wt.out, wt.err = transitionRow(ctx, l.pool, m.id, m.from, m.to, m.patch, m.at)
		close(wt.done)
		return
	}
	sortByID(batch, func(m moveReq) uuid.UUID { return m.id })
	var (
		in, later                       []*batchWait[moveReq, Payment]
		seen                            = make(map[uuid.UUID]bool, len(batch))
		ids, froms, tos                 []string
		jobs, hashes, batchIDs, reasons []*string
		attempts                        []int32
		ats                             []time.Time
	)
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	optID := func(u uuid.UUID) *string {
		if u == uuid.Nil {
			return nil
		}
		return opt(u.String())
	}
	for _, wt := range batch {
		m := wt.req
		if seen[m.id] {
			later = append(later, wt)
			continue
		}
		seen[m.id] = true
		in = append(in, wt)
		var attempt int32
		if m.patch.Attempt {
			attempt = 1
		}
		ids, froms, tos = append(ids, m.id.String()), append(froms, strings.Join(statusArgs(m.from), ",")), append(tos, string(m.to))
		jobs, hashes = append(jobs, optID(m.patch.JobID)), append(hashes, opt(m.patch.TxHash))
		batchIDs, reasons = append(batchIDs, optID(m.patch.BatchID)), append(reasons, opt(m.patch.ErrorReason))
		attempts, ats = append(attempts, attempt), append(ats, m.at)
	}
	moved := make(map[uuid.UUID]Payment, len(in))
	err := func() error {
		rows, err := l.pool.Query(ctx, moveSQL, ids, froms, tos, jobs, hashes, batchIDs, reasons, attempts, ats)
		if err != nil {
			return err
		}
		out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Payment, error) { return scanPayment(r) })
		for _, p := range out {
			moved[p.ID] = p
		}
		return err
	}()
	if err != nil {
		batchFailed(batch, err)
		return
	}
	for _, wt := range in {
		p, ok := moved[wt.req.id]
		wt.out, wt.alone = p, !ok
		close(wt.done)
	}
	for _, wt := range later {
		wt.alone = true
		close(wt.done)
	}
}
