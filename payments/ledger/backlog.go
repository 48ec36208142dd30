package ledger

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// OldestQueued returns when the oldest payment of scope still queued for batch settlement was
// created, and false when none is queued: how far batch settlement is behind. It reads the
// queue's index (idx_payments_queue). It needs Postgres: unreachable is ErrUnavailable.
func (l *Ledger) OldestQueued(ctx context.Context, scope Scope) (time.Time, bool, error) {
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	where, args := scope.queuedWhere(1)
	var oldest time.Time
	err := l.pool.QueryRow(qctx, `SELECT created_at FROM payments WHERE `+where+` ORDER BY created_at LIMIT 1`, args...).Scan(&oldest)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return time.Time{}, false, nil
	case err != nil:
		return time.Time{}, false, dbError(ctx, "read the settlement backlog", err)
	}
	return oldest, true, nil
}

// OldestQueued is Ledger.OldestQueued in memory.
func (m *Memory) OldestQueued(_ context.Context, scope Scope) (time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var oldest time.Time
	found := false
	for _, p := range m.payments {
		if p.Status != StatusQueued || (scope.Rail != "" && p.Rail != scope.Rail) || (scope.Network != "" && p.Network != scope.Network) ||
			(scope.Asset != "" && p.Asset != scope.Asset) {
			continue
		}
		if !found || p.CreatedAt.Before(oldest) {
			oldest, found = p.CreatedAt, true
		}
	}
	return oldest, found, nil
}
