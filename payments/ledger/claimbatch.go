package ledger

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Limits of the nonce writer: how many rows one INSERT carries, and how many INSERTs run at
// once. One at a time, like the payment writer: what costs Postgres most per claim is the
// commit (its WAL flush), not the row, and with one statement in flight the claims that arrive
// meanwhile share the next commit. Under x402 load four in flight made 0.64 commits per paid
// call and one 0.42, with 20% less Postgres CPU per call.
const (
	nonceBatchMax      = 256
	nonceBatchInFlight = 1
)

// nonceOutcome is one claim row's outcome, as insertNonce reports it: fresh, or already
// recorded with the claim id have.
type nonceOutcome struct {
	fresh bool
	have  uuid.UUID
}

// newNonceWriter returns the writer of the claims' Postgres rows: concurrent claims share one
// multi-row INSERT ... ON CONFLICT DO NOTHING instead of one statement (and one commit) each.
func newNonceWriter(l *Ledger) *coalescer[nonceRow, nonceOutcome] {
	return &coalescer[nonceRow, nonceOutcome]{timeout: l.opts.DBTimeout, write: l.writeNonces, maxRows: nonceBatchMax, maxInFlight: nonceBatchInFlight}
}

// insertNonceBatched is insertNonce through the nonce writer: it returns when the row's
// statement did, or when ctx ends, or after the Ledger's DBTimeout. A row whose caller went
// away may still be written: as when an INSERT's reply is lost, the claim stands on Redis's
// word and a retry of the credential is refused as used.
func insertNonceBatched(ctx context.Context, w *coalescer[nonceRow, nonceOutcome], n nonceRow) (fresh bool, have uuid.UUID, err error) {
	out, _, err := w.submit(ctx, n)
	return out.fresh, out.have, err
}

const insertNoncesSQL = `INSERT INTO payment_nonces (key, claim_id, claimed_at, expires_at)
	SELECT k, c::uuid, a, e FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS t(k, c, a, e)
	ON CONFLICT (key) DO NOTHING RETURNING key`

// write inserts a batch in one statement. A row whose key was not inserted is already
// recorded: its claim id is looked up as insertNonce does. A key twice in one batch (Redis
// forgot it between two claims) is fresh for the first claim only. A statement Postgres
// refuses for its content is retried row by row, so that one bad row fails only its claim.
func (l *Ledger) writeNonces(ctx context.Context, batch []*batchWait[nonceRow, nonceOutcome]) {
	finish := func(wt *batchWait[nonceRow, nonceOutcome]) { close(wt.done) }

	if len(batch) == 1 {
		wt := batch[0]
		wt.out.fresh, wt.out.have, wt.err = insertNonce(ctx, l.pool, wt.req)
		finish(wt)
		return
	}
	keys := make([]string, len(batch))
	ids := make([]string, len(batch))
	claimed := make([]time.Time, len(batch))
	expires := make([]time.Time, len(batch))
	for i, wt := range batch {
		keys[i], ids[i], claimed[i], expires[i] = wt.req.Key, wt.req.ClaimID.String(), wt.req.ClaimedAt, wt.req.ExpiresAt
	}
	inserted := make(map[string]bool, len(batch))
	rows, err := l.pool.Query(ctx, insertNoncesSQL, keys, ids, claimed, expires)
	if err == nil {
		for rows.Next() {
			var k string
			if err = rows.Scan(&k); err != nil {
				break
			}
			inserted[k] = true
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	switch {
	case err != nil && !transientDB(err):
		for _, wt := range batch {
			wt.out.fresh, wt.out.have, wt.err = insertNonce(ctx, l.pool, wt.req)
			finish(wt)
		}
		return
	case err != nil:
		for _, wt := range batch {
			wt.err = err
			finish(wt)
		}
		return
	}
	var conflicts []*batchWait[nonceRow, nonceOutcome]
	for _, wt := range batch {
		if inserted[wt.req.Key] {
			delete(inserted, wt.req.Key)
			wt.out = nonceOutcome{fresh: true, have: wt.req.ClaimID}
			finish(wt)
			continue
		}
		conflicts = append(conflicts, wt)
	}
	for _, wt := range conflicts {
		wt.out.have, wt.err = recordedClaim(ctx, l.pool, wt.req.Key)
		finish(wt)
	}
}

// recordedClaim is the claim id Postgres holds for key; uuid.Nil if the row was purged in
// the meantime (it was claimed, and has expired since).
func recordedClaim(ctx context.Context, q querier, key string) (uuid.UUID, error) {
	var have uuid.UUID
	err := q.QueryRow(ctx, `SELECT claim_id FROM payment_nonces WHERE key = $1`, key).Scan(&have)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, nil
	}
	return have, err
}
