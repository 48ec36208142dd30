package ledger

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// MoveBatch moves the unfinished members (submitted or pending) of batch from to a new batch
// to, and returns them. Call it only when from's recorded transaction settled none of them:
// it can never be mined (the node refused it as "nonce too low" and holds no receipt of it),
// it was mined and reverted as a whole, or it was never recorded. from's row in
// payment_batches stays as it was, the record of that transaction, and the members are
// settled by to's transaction, recorded with RecordBatchTx before it is broadcast. A member
// that went pending carries from's transaction (TxHash): it gives it up, kept in the row's
// replaced_txs as ReplaceTx keeps a dead one, so that to's transaction can be recorded on it
// (migration 008 allows this move). It needs Postgres: unreachable is ErrUnavailable.
func (l *Ledger) MoveBatch(ctx context.Context, from, to uuid.UUID) ([]Payment, error) {
	if from == uuid.Nil || to == uuid.Nil || from == to {
		return nil, invalid("moving a batch needs two different batch ids")
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	rows, err := l.pool.Query(qctx, `UPDATE payments SET batch_id = $2::uuid, attempts = attempts + 1, updated_at = now(),
			replaced_txs = CASE WHEN tx_hash IS NULL THEN replaced_txs ELSE array_append(replaced_txs, tx_hash) END,
			tx_hash = NULL
		WHERE batch_id = $1::uuid AND status IN ('submitted', 'pending') AND raw_tx IS NULL
		RETURNING `+paymentColumns(""), from.String(), to.String())
	if err != nil {
		return nil, dbError(ctx, "move batch "+from.String(), err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Payment, error) { return scanPayment(r) })
	if err != nil {
		return nil, dbError(ctx, "move batch "+from.String(), err)
	}
	sortByCreated(out)
	return out, nil
}
