package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/secureexec/secureexec/payments"
)

// The ledger's refusals. Each is a sentinel with a snake_case message, returned wrapped (test
// with errors.Is); the rail or the gateway maps it to its own reason code and status, in one
// place. Failures of Redis or Postgres are not among them: they wrap payments.ErrUnavailable
// (503 with Retry-After, nothing charged).
var (
	// ErrNonceUsed: the credential's nonce was claimed before (by Redis, or by Postgres after
	// Redis forgot it). The x402 rail reports it as invalid_exact_evm_nonce_already_used.
	ErrNonceUsed = errors.New("nonce_already_used")
	// ErrConflict: the payment is not in a state the operation may move it from (another
	// replica or request moved it first), or a different transaction is already recorded.
	ErrConflict = errors.New("payment_state_conflict")
	// ErrNotFound: no payment (or batch, or idempotency entry) with that id.
	ErrNotFound = errors.New("payment_not_found")
	// ErrIllegalTransition: the requested move is not an edge of the state machine. A
	// programming error, never a race: races are ErrConflict.
	ErrIllegalTransition = errors.New("illegal_payment_transition")
	// ErrInvalid: an argument the ledger refuses to store (empty key, oversized payload,
	// malformed amount, text with NUL, ...).
	ErrInvalid = errors.New("invalid_ledger_input")
	// ErrIdempotencyConflict: a payment identifier reused with a different payment payload.
	// The gateway answers 409.
	ErrIdempotencyConflict = errors.New("payment_identifier_conflict")
	// ErrInFlight: the first request with this payment identifier is still being processed.
	// The gateway answers 409 with Retry-After (see Idempotency).
	ErrInFlight = errors.New("payment_identifier_in_flight")
	// ErrLeaseLost: RunExclusive lost its Postgres session while fn ran, so another replica may
	// have started the same work; fn's context was cancelled.
	ErrLeaseLost = errors.New("exclusive_lease_lost")
)

// unavailable wraps a backend failure so the gateway answers 503 and charges nothing.
func unavailable(what string, cause error) error {
	return fmt.Errorf("ledger: %s: %w: %w", what, payments.ErrUnavailable, cause)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("ledger: %s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

// transientDB reports whether err means "Postgres could not be asked or could not answer"
// rather than "Postgres answered no": every error that is not a server error, plus the server
// errors of classes that describe the server, not the statement (connection exceptions,
// insufficient resources, operator intervention, system errors, serialization failures).
func transientDB(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return true
	}
	switch pgClass(pe) {
	case "08", "53", "57", "58", "40":
		return true
	}
	return false
}

// contentRejected reports whether Postgres refused an operation for its content (integrity
// constraints, data exceptions), so that retrying it can never succeed. Anything else — a
// missing table before migrations ran, a permission, an outage — may succeed later.
func contentRejected(err error) (*pgconn.PgError, bool) {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return nil, false
	}
	switch pgClass(pe) {
	case "22", "23":
		return pe, true
	}
	return nil, false
}

// dbError turns a failed statement into the ledger's error: a transient failure becomes
// ErrUnavailable, the caller's own cancellation stays itself, anything else is returned as
// it is, wrapped with what was being done.
func dbError(ctx context.Context, what string, err error) error {
	for _, own := range []error{ErrNonceUsed, ErrConflict, ErrNotFound, ErrIllegalTransition, ErrInvalid, ErrIdempotencyConflict, ErrInFlight} {
		if errors.Is(err, own) {
			return err // already the ledger's answer, not a database failure
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("ledger: %s: %w", what, context.Cause(ctx))
	}
	if transientDB(err) {
		return unavailable(what, err)
	}
	return fmt.Errorf("ledger: %s: %w", what, err)
}

// pgClass is the two-character class of a SQLSTATE.
func pgClass(pe *pgconn.PgError) string {
	if len(pe.Code) < 2 {
		return ""
	}
	return pe.Code[:2]
}
