package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/secureexec/secureexec/proof"
)

// IdempotencyOptions tunes Idempotency; zero values take the defaults in brackets.
type IdempotencyOptions struct {
	// Timeout is the deadline of each statement [2s].
	Timeout time.Duration
	// InFlightTTL is how long an in-flight entry may go without completing before Begin,
	// called again with the same payload, takes it over: the replica that began it is
	// presumed dead [10m]. Keep it above the longest call, settlement wait included.
	InFlightTTL time.Duration
	// MaxBodyBytes caps a stored response body [1 MiB].
	MaxBodyBytes int
	// MaxHeaderBytes caps a stored response's headers, as JSON [64 KiB].
	MaxHeaderBytes int
}

func (o IdempotencyOptions) withDefaults() IdempotencyOptions {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.InFlightTTL <= 0 {
		o.InFlightTTL = 10 * time.Minute
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	return o
}

// InFlightRetryAfter is the Retry-After, in seconds, the gateway sends with ErrInFlight.
const InFlightRetryAfter = 1

// Idempotency implements the x402 payment-identifier extension (x402.md §9): the first
// request with an identifier is processed and its response stored; a resend with the same
// payload gets that response again; the identifier with another payload is refused.
//
// While the first request is in flight, a resend gets ErrInFlight, which the gateway answers
// with 409 Conflict, Retry-After: InFlightRetryAfter and its own reason code — not 425 Too
// Early, which RFC 8470 reserves for TLS early data and which clients do not retry on their
// own. It needs Postgres: unreachable is ErrUnavailable (503), since without the store the
// gateway cannot tell a resend from a new request. Nothing here is spooled.
type Idempotency struct {
	pool *pgxpool.Pool
	opts IdempotencyOptions
}

// NewIdempotency returns the payment-identifier store in pool (migrated by store.Migrate).
func NewIdempotency(pool *pgxpool.Pool, opts IdempotencyOptions) *Idempotency {
	return &Idempotency{pool: pool, opts: opts.withDefaults()}
}

// Response is a stored response, replayed byte for byte (PAYMENT-RESPONSE among its headers).
type Response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

// Replay is what Begin found. Found false: the caller owns the key now, must process the
// request and then call Complete or Abandon. Found true: send Response and process nothing.
type Replay struct {
	Found    bool
	Response Response
}

// Fingerprint is the value Begin binds a key to: "0x" + hex SHA-256 of the RFC 8785 canonical
// form of the decoded PaymentPayload JSON, so the same payload re-encoded (key order,
// spacing) has the same fingerprint.
func Fingerprint(payloadJSON []byte) (string, error) {
	h, err := proof.Hash(payloadJSON)
	if err != nil {
		return "", fmt.Errorf("ledger: fingerprint: %w", ErrInvalid)
	}
	return h, nil
}

// Begin looks key up before anything else is done for the request. New key: an in-flight
// entry is made and Replay{} returned. Same key and fingerprint, completed: the stored
// response. Same key, other fingerprint: ErrIdempotencyConflict. Same key still in flight:
// ErrInFlight (unless older than InFlightTTL, then taken over as new).
func (i *Idempotency) Begin(ctx context.Context, key, fingerprint string) (Replay, error) {
	if err := checkIdemKey(key); err != nil {
		return Replay{}, err
	}
	if fingerprint == "" {
		return Replay{}, invalid("fingerprint is required")
	}
	if err := checkText("fingerprint", fingerprint, 128); err != nil {
		return Replay{}, err
	}
	// A row can vanish between the two statements (Abandon); then the key is new again.
	for range 3 {
		qctx, cancel := context.WithTimeout(ctx, i.opts.Timeout)
		r, retry, err := i.begin(qctx, key, fingerprint)
		cancel()
		if err != nil {
			return Replay{}, dbError(ctx, "begin payment identifier", err)
		}
		if !retry {
			return r, nil
		}
	}
	return Replay{}, fmt.Errorf("ledger: payment identifier %q keeps changing: %w", key, ErrInFlight)
}

func (i *Idempotency) begin(ctx context.Context, key, fingerprint string) (Replay, bool, error) {
	var took bool
	err := i.pool.QueryRow(ctx, `INSERT INTO payment_idempotency (id, fingerprint, state) VALUES ($1, $2, 'in_flight')
		ON CONFLICT (id) DO UPDATE SET updated_at = now()
		WHERE payment_idempotency.state = 'in_flight' AND payment_idempotency.fingerprint = EXCLUDED.fingerprint
			AND payment_idempotency.updated_at < now() - $3::bigint * interval '1 microsecond'
		RETURNING true`, key, fingerprint, i.opts.InFlightTTL.Microseconds()).Scan(&took)
	if err == nil {
		return Replay{}, false, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Replay{}, false, err
	}
	var (
		have, state string
		status      pgtype.Int4
		headers     []byte
		body        []byte
	)
	err = i.pool.QueryRow(ctx, `SELECT fingerprint, state, status_code, headers, body FROM payment_idempotency WHERE id = $1`, key).
		Scan(&have, &state, &status, &headers, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return Replay{}, true, nil
	}
	if err != nil {
		return Replay{}, false, err
	}
	switch {
	case have != fingerprint:
		return Replay{}, false, fmt.Errorf("ledger: payment identifier %q was used with another payload: %w", key, ErrIdempotencyConflict)
	case state != "done":
		return Replay{}, false, fmt.Errorf("ledger: payment identifier %q: %w", key, ErrInFlight)
	}
	r := Replay{Found: true, Response: Response{StatusCode: int(status.Int32), Body: body, Header: http.Header{}}}
	if len(headers) > 0 {
		if err := json.Unmarshal(headers, &r.Response.Header); err != nil {
			return Replay{}, false, invalid("stored headers of %q: %v", key, err)
		}
	}
	return r, false, nil
}

// Complete stores the response of the request that Begin let through, for replay. The entry
// must still be in flight: completed already, or abandoned, is ErrConflict / ErrNotFound.
func (i *Idempotency) Complete(ctx context.Context, key string, resp Response) error {
	if err := checkIdemKey(key); err != nil {
		return err
	}
	if resp.StatusCode < 100 || resp.StatusCode > 599 {
		return invalid("status code %d", resp.StatusCode)
	}
	if len(resp.Body) > i.opts.MaxBodyBytes {
		return invalid("response body is %d bytes, more than %d", len(resp.Body), i.opts.MaxBodyBytes)
	}
	header := resp.Header
	if header == nil {
		header = http.Header{}
	}
	for name, vs := range header {
		for _, v := range append([]string{name}, vs...) {
			// JSONB refuses NUL, even escaped; HTTP forbids it in headers anyway.
			if strings.IndexByte(v, 0) >= 0 {
				return invalid("response header %q contains NUL", name)
			}
		}
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return invalid("response headers: %v", err)
	}
	if len(hj) > i.opts.MaxHeaderBytes {
		return invalid("response headers are %d bytes, more than %d", len(hj), i.opts.MaxHeaderBytes)
	}
	body := resp.Body
	if body == nil {
		body = []byte{}
	}
	qctx, cancel := context.WithTimeout(ctx, i.opts.Timeout)
	defer cancel()
	tag, err := i.pool.Exec(qctx, `UPDATE payment_idempotency SET state = 'done', status_code = $2, headers = $3::jsonb, body = $4, updated_at = now()
		WHERE id = $1 AND state = 'in_flight'`, key, resp.StatusCode, string(hj), body)
	if err != nil {
		return dbError(ctx, "complete payment identifier", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var state string
	err = i.pool.QueryRow(qctx, `SELECT state FROM payment_idempotency WHERE id = $1`, key).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("ledger: payment identifier %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return dbError(ctx, "complete payment identifier", err)
	}
	return fmt.Errorf("ledger: payment identifier %q is already %s: %w", key, state, ErrConflict)
}

// Abandon forgets an in-flight key whose request ended without a response worth replaying
// (verification refused, a 503), so that the client may retry with the same identifier. A
// completed or unknown key is left alone.
func (i *Idempotency) Abandon(ctx context.Context, key string) error {
	if err := checkIdemKey(key); err != nil {
		return err
	}
	qctx, cancel := context.WithTimeout(ctx, i.opts.Timeout)
	defer cancel()
	if _, err := i.pool.Exec(qctx, `DELETE FROM payment_idempotency WHERE id = $1 AND state = 'in_flight'`, key); err != nil {
		return dbError(ctx, "abandon payment identifier", err)
	}
	return nil
}

// Purge deletes entries last touched before before, and returns how many. Run it from one
// replica (Ledger.RunExclusive); keep entries at least as long as clients may resend.
func (i *Idempotency) Purge(ctx context.Context, before time.Time) (int64, error) {
	return purgeInChunks(ctx, i.pool, i.opts.Timeout, "purge payment identifiers",
		`DELETE FROM payment_idempotency WHERE id IN (SELECT id FROM payment_idempotency WHERE updated_at < $1 LIMIT 5000)`, before)
}

func checkIdemKey(key string) error {
	if key == "" {
		return invalid("payment identifier key is required")
	}
	return checkText("payment identifier key", key, MaxKeyBytes)
}
