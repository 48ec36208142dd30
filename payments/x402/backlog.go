package x402

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/secureexec/secureexec/payments/ledger"
)

// Batch mode answers a call before its money moves; an authorization that expires while its
// payment waits in the queue can never be settled, and that call would be answered and never
// paid. So a batch payment must leave time for the queue ahead of it to settle.
const (
	// batchSettleMargin is what one batch needs from being claimed to its receipt, with room:
	// a payment whose authorization expires sooner is refused whatever the queue.
	batchSettleMargin = 15 * time.Second
	// backlogRefresh is how often a replica reads how far settlement is behind.
	backlogRefresh = 250 * time.Millisecond
)

// backlogReader tells when the oldest payment whose money has not moved yet was created; the
// ledger satisfies it.
type backlogReader interface {
	OldestUnsettled(ctx context.Context, scope ledger.Scope) (time.Time, bool, error)
}

// backlog is how far batch settlement is behind, read at most every backlogRefresh and shared
// by the calls of this replica. A read that fails counts as no backlog: with Postgres away,
// calls go on and spool, as the ledger promises.
type backlog struct {
	r     backlogReader
	scope ledger.Scope
	log   *slog.Logger

	mu         sync.Mutex
	lag        time.Duration
	readAt     time.Time
	refreshing bool
}

// current returns the settlement lag as of now: the age of the oldest payment not yet settled.
func (b *backlog) current(ctx context.Context, now time.Time) time.Duration {
	b.mu.Lock()
	if b.refreshing || now.Sub(b.readAt) < backlogRefresh {
		lag := b.lag
		b.mu.Unlock()
		return lag
	}
	b.refreshing = true
	b.mu.Unlock()

	lag := time.Duration(0)
	oldest, ok, err := b.r.OldestUnsettled(ctx, b.scope)
	switch {
	case err != nil:
		b.log.Warn("x402: reading the settlement backlog", "err", err)
	case ok && now.After(oldest):
		lag = now.Sub(oldest)
	}
	b.mu.Lock()
	b.lag, b.readAt, b.refreshing = lag, now, false
	b.mu.Unlock()
	return lag
}
