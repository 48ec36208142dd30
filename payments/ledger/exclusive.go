package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// exclusiveLockSpace is the first half of RunExclusive's advisory locks (the migration runner
// uses another), the second being a hash of the schema and the job's name.
const exclusiveLockSpace = 0x5EC1ED

// RunExclusive runs fn if no other replica is running the job called name, and reports
// whether it ran. The guard is a Postgres session advisory lock held on a connection of its
// own for as long as fn runs; that connection is checked every Options.LeaseCheck, and if it
// is lost (and with it the lock, which another replica may then take) fn's context is
// cancelled and the error wraps ErrLeaseLost. fn must stop when its context is done. Locks
// are per database and schema. Session locks need session pooling: not through a pgbouncer
// in transaction mode. Postgres unreachable: ErrUnavailable, fn not run.
func (l *Ledger) RunExclusive(ctx context.Context, name string, fn func(context.Context) error) (bool, error) {
	if name == "" {
		return false, invalid("exclusive job name is required")
	}
	if err := checkText("exclusive job name", name, MaxKeyBytes); err != nil {
		return false, err
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	conn, err := l.pool.Acquire(qctx)
	if err != nil {
		cancel()
		return false, dbError(ctx, "acquire exclusive connection", err)
	}
	var got bool
	err = conn.QueryRow(qctx, `SELECT pg_try_advisory_lock($1, hashtext(COALESCE(current_schema(), '') || '/' || $2))`,
		exclusiveLockSpace, name).Scan(&got)
	cancel()
	if err != nil {
		// The connection's state is unknown: it may hold the lock. Never give it back.
		cctx, ccancel := context.WithTimeout(context.Background(), l.opts.DBTimeout)
		_ = conn.Hijack().Close(cctx)
		ccancel()
		return false, dbError(ctx, "take exclusive lock "+name, err)
	}
	if !got {
		conn.Release()
		return false, nil
	}

	fnCtx, cancelFn := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	watchdogDone := make(chan struct{})
	wg.Add(1)
	go func() {
		// The watchdog owns the connection while fn runs; nothing else touches it.
		defer wg.Done()
		t := time.NewTicker(l.opts.LeaseCheck)
		defer t.Stop()
		for {
			select {
			case <-watchdogDone:
				return
			case <-t.C:
			}
			pctx, cancel := context.WithTimeout(context.Background(), l.opts.DBTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				l.log.Error("exclusive job lost its Postgres session; cancelling it", "job", name, "err", err)
				cancelFn(fmt.Errorf("ledger: %s: %w: %w", name, ErrLeaseLost, err))
				return
			}
		}
	}()
	ferr := fn(fnCtx)
	close(watchdogDone)
	wg.Wait()
	lost := context.Cause(fnCtx)
	if !errors.Is(lost, ErrLeaseLost) {
		lost = nil
	}
	cancelFn(nil)

	uctx, ucancel := context.WithTimeout(context.Background(), l.opts.DBTimeout)
	defer ucancel()
	var released bool
	if lost == nil {
		err = conn.QueryRow(uctx, `SELECT pg_advisory_unlock($1, hashtext(COALESCE(current_schema(), '') || '/' || $2))`,
			exclusiveLockSpace, name).Scan(&released)
	}
	if lost != nil || err != nil || !released {
		// Closing the session releases whatever it holds.
		_ = conn.Hijack().Close(uctx)
	} else {
		conn.Release()
	}
	return true, errors.Join(ferr, lost)
}

// Lock blocks until this replica holds the lock called name, or ctx ends, and returns the
// function that releases it. Unlike RunExclusive it waits its turn: it serialises short
// critical sections across replicas, such as signing and broadcasting with a settlement key
// they share. The lock is a transaction-scoped Postgres advisory lock, so a replica that dies
// holding it releases it with its connection.
func (l *Ledger) Lock(ctx context.Context, name string) (unlock func(), err error) {
	if err := checkText("lock name", name, MaxKeyBytes); err != nil || name == "" {
		return nil, invalid("lock name is required")
	}
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		return nil, dbError(ctx, "begin lock "+name, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(COALESCE(current_schema(), '') || '/' || $2))`,
		exclusiveLockSpace, name); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, dbError(ctx, "take lock "+name, err)
	}
	return func() {
		rctx, cancel := context.WithTimeout(context.Background(), l.opts.DBTimeout)
		defer cancel()
		_ = tx.Rollback(rctx) // nothing was written: ending the transaction releases the lock
	}, nil
}
