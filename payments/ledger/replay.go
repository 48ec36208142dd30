package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/secureexec/secureexec/internal/segspool"
)

// Why a spooled operation was not applied, as recorded in payment_spool_log.reason.
const (
	RejectNonceClaimedTwice       = "nonce_claimed_twice"       // another claimant recorded the nonce: a double use to investigate
	RejectNonceKeyConflict        = "nonce_key_conflict"        // another payment holds the payment's nonce key
	RejectPaymentIDConflict       = "payment_id_conflict"       // another payment holds the id
	RejectPaymentNotFound         = "payment_not_found"         // a move of a payment that never reached Postgres
	RejectTransitionNotApplicable = "transition_not_applicable" // the payment had moved on
	RejectTxConflict              = "tx_conflict"               // a different transaction was recorded meanwhile
	RejectRefusedByDatabase       = "refused_by_database"       // a constraint or data error
)

// runReplayer applies the spool to Postgres: at start, whenever an append wakes it, and while
// Postgres fails, on an exponential backoff with jitter between RetryMin and RetryMax.
func (l *Ledger) runReplayer() {
	defer l.wg.Done()
	var wait time.Duration
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-l.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
		if err := l.replayAll(); err != nil {
			if l.ctx.Err() != nil {
				return
			}
			wait = l.nextBackoff(wait)
			l.log.Warn("payments spool replay failed; retrying", "err", err, "retry_in", wait, "spool_operations", l.spool.Lines())
			continue
		}
		wait = 0
		select {
		case <-l.stop:
			return
		case <-l.signal:
		}
	}
}

func (l *Ledger) nextBackoff(prev time.Duration) time.Duration {
	next := min(max(prev*2, l.opts.RetryMin), l.opts.RetryMax)
	// Up to a quarter of jitter, so replicas that lost Postgres together do not return in step.
	return next - time.Duration(rand.Int64N(int64(next)/4+1))
}

// replayAll applies sealed segments, oldest first, until the spool is empty or Postgres fails.
func (l *Ledger) replayAll() error {
	for {
		if err := l.ctx.Err(); err != nil {
			return err
		}
		seg, err := l.spool.Next()
		if err != nil {
			return err
		}
		if seg == nil {
			l.degraded.Store(false)
			return nil
		}
		if err := l.replaySegment(seg); err != nil {
			return err
		}
		if err := l.spool.Remove(seg); err != nil {
			return err
		}
	}
}

func (l *Ledger) replaySegment(seg *segspool.Segment) error {
	sr, err := l.spool.OpenSegment(seg)
	if err != nil {
		return err
	}
	defer sr.Close()
	for {
		line, torn, err := sr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var op spoolOp
		decodeErr := json.Unmarshal(line, &op)
		switch {
		case torn:
			l.setAside(line, "torn_spool_line")
		case decodeErr != nil:
			l.setAside(line, "corrupt_spool_line")
		case op.valid() != nil:
			l.setAside(line, "invalid_spool_line")
		default:
			if err := l.applyOp(&op); err != nil {
				return err
			}
		}
		seg.Offset = sr.Offset()
		l.spool.Consumed(1)
		// A torn line was never counted as pending (rebuildHeld skips it, and this process's
		// appends are never torn), even when it parses: releasing it would free its payment
		// while a retried operation on it is still spooled.
		if !torn && decodeErr == nil {
			l.release(op.paymentID())
		}
	}
}

// setAside moves an unreadable line to the dead-letter file.
func (l *Ledger) setAside(line []byte, reason string) {
	l.unreadable.Add(1)
	l.log.Error("payments spool line unreadable; kept in the dead-letter file", "reason", reason, "bytes", len(line))
	if err := setAside(l.spool, line, reason); err != nil {
		l.log.Error("payments spool dead-letter write failed", "err", err)
	}
}

// release notes that one spooled operation on a payment is in Postgres; when none is left the
// payment is no longer held and its moves go to Postgres.
func (l *Ledger) release(id uuid.UUID) {
	if id == uuid.Nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.held[id]
	if h == nil {
		return
	}
	h.pending--
	if h.pending <= 0 {
		delete(l.held, id)
		close(h.drained)
	}
}

// applyOp applies one spooled operation in a transaction that also records its op id, so it
// is applied at most once whatever happens to the spool file. A nil error means the operation
// is settled (applied, found applied before, or rejected and recorded as such); an error means
// "try again later".
//
// The create of a payment this replica holds goes with the moves spooled after it, in the same
// transaction: once the create is in Postgres any replica's recovery may act on the payment,
// so it must never be seen there without them (a replay cut off in between by a second outage
// would show a payment verified that this replica answered queued, and recovery would close it
// not charged). Their own lines are then found applied before.
func (l *Ledger) applyOp(op *spoolOp) error {
	ops, end := l.beginReplay(op)
	outs, err := l.applyOps(ops)
	end(err)
	if err != nil {
		if l.ctx.Err() == nil {
			l.degraded.Store(true)
		}
		return fmt.Errorf("ledger: replay %s %s: %w", op.Kind, op.subject(), err)
	}
	// Postgres took a write: spoolable writes may try it directly again while the rest drains.
	l.degraded.Store(false)
	for _, o := range outs {
		switch {
		case o.duplicate:
			l.log.Info("spooled payment operation was applied before; skipped", "op_id", o.op.OpID, "kind", o.op.Kind, "subject", o.op.subject())
		case o.reason != "":
			l.rejected.Add(1)
			l.log.Error("spooled payment operation could not be applied; recorded in payment_spool_log",
				"op_id", o.op.OpID, "kind", o.op.Kind, "subject", o.op.subject(), "reason", o.reason, "detail", o.detail)
		default:
			l.replayed.Add(1)
		}
	}
	return nil
}

// beginReplay returns op, and after it, when op creates a payment this replica holds, the
// moves of that payment spooled since. Until end is called with the outcome of applying them,
// the payment's moves wait instead of spooling (they would miss this transaction). Once the
// create may be in Postgres, where other replicas can move the payment, its later moves go
// there.
func (l *Ledger) beginReplay(op *spoolOp) (ops []*spoolOp, end func(err error)) {
	ops = []*spoolOp{op}
	if op.Kind != opCreate {
		return ops, func(error) {}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.held[op.Payment.ID]
	if h == nil || h.replaying != nil {
		return ops, func(error) {}
	}
	h.replaying = make(chan struct{})
	ops = append(ops, h.moves...)
	return ops, func(err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if err == nil || errors.Is(err, errMaybeCommitted) {
			h.sure = false
		}
		if err == nil {
			h.moves = nil
		}
		close(h.replaying)
		h.replaying = nil
	}
}

// errMaybeCommitted: the transaction's COMMIT failed, and whether it took effect is unknown.
var errMaybeCommitted = errors.New("commit outcome unknown")

// opOutcome is what replaying one operation did.
type opOutcome struct {
	op             *spoolOp
	duplicate      bool   // applied before: nothing done
	reason, detail string // rejected, and recorded as such
}

// applyOps applies ops in one transaction, each recorded in payment_spool_log. The first one
// is a create when there are several: refused, the moves that follow it are left to their own
// lines.
func (l *Ledger) applyOps(ops []*spoolOp) ([]opOutcome, error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.DBTimeout)
	defer cancel()
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	outs := make([]opOutcome, 0, len(ops))
	for i, op := range ops {
		o, err := applyLogged(ctx, tx, op)
		if err != nil {
			return nil, err
		}
		outs = append(outs, o)
		if i == 0 && o.reason != "" {
			break
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", errMaybeCommitted, err)
	}
	return outs, nil
}

// applyLogged records op's id and applies its body, or finds it applied before.
func applyLogged(ctx context.Context, tx pgx.Tx, op *spoolOp) (opOutcome, error) {
	o := opOutcome{op: op}
	// clock_timestamp: the operations of one transaction keep their order in applied_at.
	tag, err := tx.Exec(ctx, `INSERT INTO payment_spool_log (op_id, kind, subject, outcome, spooled_at, applied_at)
		VALUES ($1::uuid, $2, $3, 'applied', $4, clock_timestamp()) ON CONFLICT (op_id) DO NOTHING`,
		op.OpID.String(), op.Kind, op.subject(), op.At)
	if err != nil {
		return o, err
	}
	if tag.RowsAffected() == 0 {
		o.duplicate = true
		return o, nil
	}
	if o.reason, o.detail, err = applyInSavepoint(ctx, tx, op); err != nil || o.reason == "" {
		return o, err
	}
	body, err := json.Marshal(op)
	if err != nil {
		return o, err
	}
	_, err = tx.Exec(ctx, `UPDATE payment_spool_log SET outcome = 'rejected', reason = $2, detail = $3, op = $4::jsonb
		WHERE op_id = $1::uuid`, op.OpID.String(), o.reason, o.detail, string(body))
	return o, err
}

// applyInSavepoint applies op's body inside a savepoint, so that a statement Postgres refuses
// for its content rolls back alone and the refusal can be recorded in the same transaction.
func applyInSavepoint(ctx context.Context, tx pgx.Tx, op *spoolOp) (reason, detail string, err error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return "", "", err
	}
	reason, detail, err = applyBody(ctx, sp, op)
	if err != nil {
		_ = sp.Rollback(ctx)
		if pe, ok := contentRejected(err); ok {
			if pe.Code == "23505" && pe.ConstraintName == "payments_nonce_key_key" {
				return RejectNonceKeyConflict, pe.Detail, nil
			}
			return RejectRefusedByDatabase, pe.Code + ": " + pe.Message, nil
		}
		return "", "", err
	}
	if reason != "" {
		return reason, detail, sp.Rollback(ctx)
	}
	return "", "", sp.Commit(ctx)
}

func applyBody(ctx context.Context, q querier, op *spoolOp) (reason, detail string, err error) {
	switch op.Kind {
	case opNonce:
		n := op.Nonce
		fresh, have, err := insertNonce(ctx, q, *n)
		// have is uuid.Nil when the row expired and was purged meanwhile: nothing to alarm on.
		if err != nil || fresh || have == n.ClaimID || have == uuid.Nil {
			return "", "", err
		}
		return RejectNonceClaimedTwice, fmt.Sprintf("claim %s was spooled, claim %s is recorded", n.ClaimID, have), nil
	case opCreate:
		p, err := op.Payment.payment()
		if err != nil {
			return RejectRefusedByDatabase, err.Error(), nil
		}
		tag, err := q.Exec(ctx, insertPaymentSQL, insertArgs(p)...)
		if err != nil || tag.RowsAffected() == 1 {
			return "", "", err
		}
		have, err := scanPayment(q.QueryRow(ctx, `SELECT `+paymentColumns("")+` FROM payments WHERE id = $1::uuid`, p.ID.String()))
		if err != nil {
			return "", "", err
		}
		if !sameIdentity(have, p) {
			return RejectPaymentIDConflict, "a payment with other terms holds the id", nil
		}
		return "", "", nil
	case opTransition:
		t := op.Transition
		_, err := transitionRow(ctx, q, t.ID, t.From, t.To, t.Patch.patch(), op.At)
		if !errors.Is(err, pgx.ErrNoRows) {
			return "", "", err
		}
		var status string
		err = q.QueryRow(ctx, `SELECT status FROM payments WHERE id = $1::uuid`, t.ID.String()).Scan(&status)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return RejectPaymentNotFound, "", nil
		case err != nil:
			return "", "", err
		case !slices.Contains(t.From, Status(status)):
			return RejectTransitionNotApplicable, fmt.Sprintf("payment is %s, the move was %v -> %s", status, t.From, t.To), nil
		default:
			return RejectTxConflict, "", nil
		}
	}
	return RejectRefusedByDatabase, "unknown operation kind " + op.Kind, nil
}

// insertNonce records a claimed nonce. fresh is true when this call inserted it; otherwise
// have is the claim id already recorded.
func insertNonce(ctx context.Context, q querier, n nonceRow) (fresh bool, have uuid.UUID, err error) {
	var tag pgconn.CommandTag
	tag, err = q.Exec(ctx, `INSERT INTO payment_nonces (key, claim_id, claimed_at, expires_at)
		VALUES ($1, $2::uuid, $3, $4) ON CONFLICT (key) DO NOTHING`, n.Key, n.ClaimID.String(), n.ClaimedAt, n.ExpiresAt)
	if err != nil {
		return false, uuid.Nil, err
	}
	if tag.RowsAffected() == 1 {
		return true, n.ClaimID, nil
	}
	err = q.QueryRow(ctx, `SELECT claim_id FROM payment_nonces WHERE key = $1`, n.Key).Scan(&have)
	if errors.Is(err, pgx.ErrNoRows) {
		// Purged between the two statements: it was claimed, and has expired since.
		return false, uuid.Nil, nil
	}
	return false, have, err
}

// rebuildHeld reads what an earlier process left in the spool, so that Get answers for those
// payments during an outage and their replay is accounted for. They are not sure: the earlier
// process may have got some of them into Postgres already.
func (l *Ledger) rebuildHeld() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, seg := range l.spool.Segments() {
		sr, err := l.spool.OpenSegment(seg)
		if err != nil {
			l.log.Warn("payments spool segment unreadable at start", "err", err)
			continue
		}
		for {
			line, torn, err := sr.Next()
			if err != nil {
				break
			}
			var op spoolOp
			if torn || json.Unmarshal(line, &op) != nil {
				continue
			}
			id := op.paymentID()
			if id == uuid.Nil {
				continue
			}
			h := l.held[id]
			if h == nil {
				h = &heldPayment{drained: make(chan struct{})}
				l.held[id] = h
			}
			h.pending++
			if op.valid() != nil {
				continue
			}
			switch {
			case op.Kind == opCreate && h.payment == nil && len(l.held) <= l.opts.MaxHeld:
				if p, err := op.Payment.payment(); err == nil {
					h.payment = &p
				}
			case op.Kind == opTransition && h.payment != nil:
				h.moves = append(h.moves, &op)
				if !slices.Contains(op.Transition.From, h.payment.Status) {
					break
				}
				if next, err := applyPatch(*h.payment, op.Transition.To, op.Transition.Patch.patch(), op.At); err == nil {
					h.payment = &next
				}
			}
		}
		sr.Close()
	}
}
