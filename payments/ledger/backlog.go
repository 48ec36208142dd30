package ledger

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// unsettled are the statuses of a payment whose call was answered and whose money has not
// moved yet: queued for a batch, handed to a facilitator, or in a transaction not yet mined.
var unsettled = []Status{StatusQueued, StatusSettling, StatusSubmitted, StatusPending}

// OldestUnsettled returns when the oldest payment of scope whose money has not moved yet
// (queued, settling, submitted or pending) was created, and false when there is none: how far
// settlement is behind. A batch stuck in a transaction that is not mined counts as much as a
// queue that is not claimed. It reads two partial indexes (idx_payments_queue and
// idx_payments_recoverable). It needs Postgres: unreachable is ErrUnavailable.
func (l *Ledger) OldestUnsettled(ctx context.Context, scope Scope) (time.Time, bool, error) {
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	queued, args := scope.queuedWhere(1)
	inFlight, _ := scope.where("status IN ('settling', 'submitted', 'pending')", 1)
	var oldest pgtype.Timestamptz
	err := l.pool.QueryRow(qctx, `SELECT LEAST(
		(SELECT created_at FROM payments WHERE `+queued+` ORDER BY created_at LIMIT 1),
		(SELECT min(created_at) FROM payments WHERE `+inFlight+`))`, args...).Scan(&oldest)
	if err != nil {
		return time.Time{}, false, dbError(ctx, "read the settlement backlog", err)
	}
	return oldest.Time, oldest.Valid, nil
}

// where is the condition selecting payments of scope in status (an SQL condition), with the
// scope's values as arguments numbered from next.
func (s Scope) where(status string, next int) (string, []any) {
	where, args := status, []any{}
	for _, f := range []struct{ col, v string }{{"rail", s.Rail}, {"network", s.Network}, {"asset", s.Asset}} {
		if f.v != "" {
			where += fmt.Sprintf(" AND %s = $%d", f.col, next+len(args))
			args = append(args, f.v)
		}
	}
	return where, args
}

// OldestUnsettled is Ledger.OldestUnsettled in memory.
func (m *Memory) OldestUnsettled(_ context.Context, scope Scope) (time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var oldest time.Time
	found := false
	for _, p := range m.payments {
		if !slices.Contains(unsettled, p.Status) || (scope.Rail != "" && p.Rail != scope.Rail) || (scope.Network != "" && p.Network != scope.Network) ||
			(scope.Asset != "" && p.Asset != scope.Asset) {
			continue
		}
		if !found || p.CreatedAt.Before(oldest) {
			oldest, found = p.CreatedAt, true
		}
	}
	return oldest, found, nil
}
