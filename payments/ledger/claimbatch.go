package ledger

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Limits of nonceWriter: how many rows one INSERT carries, and how many INSERTs run at once.
const (
	nonceBatchMax      = 256
	nonceBatchInFlight = 4
)

// nonceWriter records the Postgres rows of concurrent claims with one multi-row INSERT ... ON
// CONFLICT DO NOTHING instead of one statement (and one commit) each: under load that is most
// of what a claim costs Postgres. It adds no wait: a claim that finds a free slot is written
// at once, and claims that arrive while nonceBatchInFlight statements run go together in the
// next one. Each row's outcome is its own, as with insertNonce: fresh, or already recorded
// with its claim id. It has no goroutine of its own beyond one per running statement, which
// ends with it.
type nonceWriter struct {
	l *Ledger

	mu       sync.Mutex
	pending  []*nonceWait
	inFlight int

	onWrite func(rows int) // tests: called as each statement starts
}

type nonceWait struct {
	ctx   context.Context
	row   nonceRow
	done  chan struct{} // closed when the fields below are set
	fresh bool
	have  uuid.UUID
	err   error
}

// insert is insertNonce through the batch: it returns when the row's statement did, or when
// ctx ends, or after the Ledger's DBTimeout, as insertNonce under that deadline would. The
// statement itself runs under its own DBTimeout, not under ctx, so that one caller going away
// cannot fail the others' rows.
func (w *nonceWriter) insert(ctx context.Context, n nonceRow) (fresh bool, have uuid.UUID, err error) {
	ctx, cancel := context.WithTimeout(ctx, w.l.opts.DBTimeout)
	defer cancel()
	wt := &nonceWait{ctx: ctx, row: n, done: make(chan struct{})}
	w.mu.Lock()
	w.pending = append(w.pending, wt)
	start := w.inFlight < nonceBatchInFlight
	if start {
		w.inFlight++
	}
	w.mu.Unlock()
	if start {
		go w.drain()
	}
	select {
	case <-wt.done:
		return wt.fresh, wt.have, wt.err
	case <-ctx.Done():
		// The row may still be written: as when an INSERT's reply is lost, the claim stands
		// on Redis's word and a retry of the credential is refused as used.
		return false, uuid.Nil, context.Cause(ctx)
	}
}

func (w *nonceWriter) drain() {
	for {
		w.mu.Lock()
		batch := w.take()
		if len(batch) == 0 {
			w.inFlight--
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		w.write(batch)
	}
}

// take removes up to nonceBatchMax waiting rows, dropping those whose caller has gone (their
// Redis claim stands; the row is what a retry would be refused by, and Redis refuses it first).
// Called with mu held.
func (w *nonceWriter) take() []*nonceWait {
	var batch []*nonceWait
	rest := w.pending[:0]
	for _, wt := range w.pending {
		switch {
		case wt.ctx.Err() != nil:
			wt.err = context.Cause(wt.ctx)
			close(wt.done)
		case len(batch) < nonceBatchMax:
			batch = append(batch, wt)
		default:
			rest = append(rest, wt)
		}
	}
	clear(w.pending[len(rest):])
	w.pending = rest
	return batch
}

const insertNoncesSQL = `INSERT INTO payment_nonces (key, claim_id, claimed_at, expires_at)
	SELECT k, c::uuid, a, e FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS t(k, c, a, e)
	ON CONFLICT (key) DO NOTHING RETURNING key`

// write inserts a batch in one statement. A row whose key was not inserted is already
// recorded: its claim id is looked up as insertNonce does. A key twice in one batch (Redis
// forgot it between two claims) is fresh for the first claim only. A statement Postgres
// refuses for its content is retried row by row, so that one bad row fails only its claim.
func (w *nonceWriter) write(batch []*nonceWait) {
	l := w.l
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.DBTimeout)
	defer cancel()
	finish := func(wt *nonceWait) { close(wt.done) }
	if w.onWrite != nil {
		w.onWrite(len(batch))
	}

	if len(batch) == 1 {
		wt := batch[0]
		wt.fresh, wt.have, wt.err = insertNonce(ctx, l.pool, wt.row)
		finish(wt)
		return
	}
	keys := make([]string, len(batch))
	ids := make([]string, len(batch))
	claimed := make([]time.Time, len(batch))
	expires := make([]time.Time, len(batch))
	for i, wt := range batch {
		keys[i], ids[i], claimed[i], expires[i] = wt.row.Key, wt.row.ClaimID.String(), wt.row.ClaimedAt, wt.row.ExpiresAt
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
			wt.fresh, wt.have, wt.err = insertNonce(ctx, l.pool, wt.row)
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
	var conflicts []*nonceWait
	for _, wt := range batch {
		if inserted[wt.row.Key] {
			delete(inserted, wt.row.Key)
			wt.fresh, wt.have = true, wt.row.ClaimID
			finish(wt)
			continue
		}
		conflicts = append(conflicts, wt)
	}
	for _, wt := range conflicts {
		wt.have, wt.err = recordedClaim(ctx, l.pool, wt.row.Key)
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
