package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// MarkKind is what happened to a payment after its call.
type MarkKind string

// The marks a payment network reports (migrations/004_payment_marks.sql).
const (
	MarkRefunded MarkKind = "refunded" // money went back to the payer
	MarkDisputed MarkKind = "disputed" // the payer's bank disputes the charge
)

// Valid reports whether k is one of the kinds.
func (k MarkKind) Valid() bool { return k == MarkRefunded || k == MarkDisputed }

// Mark is a refund or dispute recorded against a payment, once per network event: the payment's
// status stays where it is (settled, or not_charged when the gateway refunded it itself).
type Mark struct {
	EventID    string // the network's event id (evt_…): a second mark with it is a no-op
	PaymentID  uuid.UUID
	Kind       MarkKind
	Reference  string // the network's object the event is about (a Stripe charge id)
	Dispute    string // the dispute id, for MarkDisputed
	Amount     int64  // refunded or disputed amount, in the payment network's minor units
	Currency   string
	Reason     string    // the network's reason (a dispute's "fraudulent"), "" when none
	OccurredAt time.Time // when the network says it happened
	RecordedAt time.Time // set by the ledger
}

func (m Mark) validate() error {
	switch {
	case m.EventID == "":
		return invalid("a mark needs its event id")
	case m.PaymentID == uuid.Nil:
		return invalid("a mark needs its payment id")
	case !m.Kind.Valid():
		return invalid("mark kind %q", m.Kind)
	case m.Amount < 0:
		return invalid("mark amount %d is negative", m.Amount)
	case m.OccurredAt.IsZero():
		return invalid("a mark needs the time it occurred")
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"event_id", m.EventID, MaxKeyBytes}, {"reference", m.Reference, MaxTextBytes}, {"dispute", m.Dispute, MaxTextBytes},
		{"currency", m.Currency, MaxTextBytes}, {"reason", m.Reason, MaxReasonBytes}} {
		if err := checkText(f.name, f.v, f.max); err != nil {
			return err
		}
	}
	return nil
}

// Flag says that a payer's paid call had its money taken back outside the gateway; the IAM
// stage denies a flagged payer's calls. One per network event.
type Flag struct {
	EventID   string // the network's event id: a second flag with it is a no-op
	Payer     string // the payment's payer, as the payment records it
	PaymentID uuid.UUID
	JobID     uuid.UUID // the call it paid; uuid.Nil when unknown
	Reason    string    // "charge_refunded", "charge_disputed: fraudulent"
	CreatedAt time.Time // set by the ledger
}

func (f Flag) validate() error {
	switch {
	case f.EventID == "":
		return invalid("a flag needs its event id")
	case f.Payer == "":
		return invalid("a flag needs the payer it flags")
	case f.Reason == "":
		return invalid("a flag needs its reason")
	}
	for _, c := range []struct {
		name, v string
		max     int
	}{{"event_id", f.EventID, MaxKeyBytes}, {"payer", f.Payer, MaxTextBytes}, {"reason", f.Reason, MaxReasonBytes}} {
		if err := checkText(c.name, c.v, c.max); err != nil {
			return err
		}
	}
	return nil
}

var errSpooledUnseen = errors.New("payments spooled past MaxHeld are not in Postgres yet, and one of them may be it")

// heldUnseen reports whether some spooled payment is not kept in memory (past MaxHeld): a
// lookup that Postgres answers with no row cannot then tell that the payment does not exist.
func (l *Ledger) heldUnseen() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.held {
		if h.payment == nil {
			return true
		}
	}
	return false
}

// GetByNonceKey returns the payment that holds nonce key key (for MPP, "mpp:challenge:" + the
// challenge id, or "mpp:" + the PaymentIntent id): from this replica's spool when it has not reached Postgres yet, else from
// Postgres. No such payment: ErrNotFound; Postgres unreachable: ErrUnavailable.
func (l *Ledger) GetByNonceKey(ctx context.Context, key string) (Payment, error) {
	if key == "" {
		return Payment{}, invalid("nonce key is required")
	}
	l.mu.Lock()
	for _, h := range l.held {
		if h.payment != nil && h.payment.NonceKey == key {
			p := h.payment.clone()
			l.mu.Unlock()
			return p, nil
		}
	}
	l.mu.Unlock()
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	p, err := scanPayment(l.pool.QueryRow(qctx, `SELECT `+paymentColumns("")+` FROM payments WHERE nonce_key = $1`, key))
	if errors.Is(err, pgx.ErrNoRows) {
		if l.heldUnseen() {
			return Payment{}, unavailable("get payment by nonce key", errSpooledUnseen)
		}
		return Payment{}, fmt.Errorf("ledger: payment of nonce key %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return Payment{}, dbError(ctx, "get payment by nonce key", err)
	}
	return p, nil
}

// GetByReference returns the payment of rail rail whose recorded reference (TxHash) is ref:
// for MPP, the PaymentIntent a payment keyed by its challenge was charged with. When several
// payments share a reference (the members of an x402 batch), the oldest is returned. From
// this replica's spool when it has not reached Postgres yet, else from Postgres, where only
// MPP references are indexed (migrations/007): other rails' lookups scan. No such payment:
// ErrNotFound; Postgres unreachable: ErrUnavailable.
func (l *Ledger) GetByReference(ctx context.Context, rail, ref string) (Payment, error) {
	if rail == "" || ref == "" {
		return Payment{}, invalid("a reference lookup needs a rail and a reference")
	}
	l.mu.Lock()
	var held *Payment
	for _, h := range l.held {
		if p := h.payment; p != nil && p.Rail == rail && p.TxHash == ref && (held == nil || olderPayment(*p, *held)) {
			held = p
		}
	}
	if held != nil {
		p := held.clone()
		l.mu.Unlock()
		return p, nil
	}
	l.mu.Unlock()
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	p, err := scanPayment(l.pool.QueryRow(qctx, `SELECT `+paymentColumns("")+` FROM payments
		WHERE rail = $1 AND tx_hash = $2 ORDER BY created_at, id LIMIT 1`, rail, ref))
	if errors.Is(err, pgx.ErrNoRows) {
		if l.heldUnseen() {
			return Payment{}, unavailable("get payment by reference", errSpooledUnseen)
		}
		return Payment{}, fmt.Errorf("ledger: %s payment of reference %q: %w", rail, ref, ErrNotFound)
	}
	if err != nil {
		return Payment{}, dbError(ctx, "get payment by reference", err)
	}
	return p, nil
}

// MarkPayment records m once: recorded is false when a mark with m.EventID exists already
// (a redelivered event). It needs Postgres: unreachable is ErrUnavailable.
func (l *Ledger) MarkPayment(ctx context.Context, m Mark) (recorded bool, err error) {
	if err := m.validate(); err != nil {
		return false, err
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	tag, err := l.pool.Exec(qctx, `INSERT INTO payment_marks
		(event_id, payment_id, kind, reference, dispute, amount, currency, reason, occurred_at)
		VALUES ($1, $2::uuid, $3, $4, $5, $6::numeric, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING`,
		m.EventID, m.PaymentID.String(), string(m.Kind), m.Reference, m.Dispute, big.NewInt(m.Amount).String(),
		m.Currency, m.Reason, m.OccurredAt.UTC())
	if err != nil {
		return false, dbError(ctx, "mark payment "+m.PaymentID.String(), err)
	}
	return tag.RowsAffected() == 1, nil
}

// Marks returns a payment's marks, oldest first. It needs Postgres.
func (l *Ledger) Marks(ctx context.Context, paymentID uuid.UUID) ([]Mark, error) {
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	rows, err := l.pool.Query(qctx, `SELECT event_id, payment_id, kind, reference, dispute, amount::text, currency, reason,
		occurred_at, recorded_at FROM payment_marks WHERE payment_id = $1::uuid ORDER BY occurred_at, event_id`, paymentID.String())
	if err != nil {
		return nil, dbError(ctx, "marks of payment "+paymentID.String(), err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Mark, error) {
		var (
			m            Mark
			kind, amount string
		)
		if err := row.Scan(&m.EventID, &m.PaymentID, &kind, &m.Reference, &m.Dispute, &amount, &m.Currency, &m.Reason,
			&m.OccurredAt, &m.RecordedAt); err != nil {
			return m, err
		}
		a, ok := new(big.Int).SetString(amount, 10)
		if !ok || !a.IsInt64() {
			return m, invalid("stored mark amount %q", amount)
		}
		m.Kind, m.Amount = MarkKind(kind), a.Int64()
		m.OccurredAt, m.RecordedAt = normalizeTime(m.OccurredAt), normalizeTime(m.RecordedAt)
		return m, nil
	})
	if err != nil {
		return nil, dbError(ctx, "marks of payment "+paymentID.String(), err)
	}
	return out, nil
}

// FlagPayer records f once: recorded is false when a flag with f.EventID exists already. It
// needs Postgres: unreachable is ErrUnavailable.
func (l *Ledger) FlagPayer(ctx context.Context, f Flag) (recorded bool, err error) {
	if err := f.validate(); err != nil {
		return false, err
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	tag, err := l.pool.Exec(qctx, `INSERT INTO agent_flags (event_id, payer, payment_id, job_id, reason)
		VALUES ($1, $2, $3::uuid, $4::uuid, $5) ON CONFLICT (event_id) DO NOTHING`,
		f.EventID, f.Payer, uuidArg(f.PaymentID), uuidArg(f.JobID), f.Reason)
	if err != nil {
		return false, dbError(ctx, "flag payer", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Flagged returns the latest flag of payer, and whether there is one. It needs Postgres:
// unreachable is ErrUnavailable.
func (l *Ledger) Flagged(ctx context.Context, payer string) (Flag, bool, error) {
	if payer == "" {
		return Flag{}, false, nil
	}
	qctx, cancel := context.WithTimeout(ctx, l.opts.DBTimeout)
	defer cancel()
	var (
		f              Flag
		payment, jobID pgtype.UUID
	)
	err := l.pool.QueryRow(qctx, `SELECT event_id, payer, payment_id, job_id, reason, created_at FROM agent_flags
		WHERE payer = $1 ORDER BY created_at DESC, event_id LIMIT 1`, payer).
		Scan(&f.EventID, &f.Payer, &payment, &jobID, &f.Reason, &f.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Flag{}, false, nil
	}
	if err != nil {
		return Flag{}, false, dbError(ctx, "flags of a payer", err)
	}
	if payment.Valid {
		f.PaymentID = payment.Bytes
	}
	if jobID.Valid {
		f.JobID = jobID.Bytes
	}
	f.CreatedAt = normalizeTime(f.CreatedAt)
	return f, true, nil
}

// GetByNonceKey is Ledger.GetByNonceKey.
func (m *Memory) GetByNonceKey(_ context.Context, key string) (Payment, error) {
	if key == "" {
		return Payment{}, invalid("nonce key is required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.payments {
		if p.NonceKey == key {
			return p.clone(), nil
		}
	}
	return Payment{}, fmt.Errorf("ledger: payment of nonce key %q: %w", key, ErrNotFound)
}

// olderPayment orders payments as Postgres's ORDER BY created_at, id does.
func olderPayment(a, b Payment) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.ID.String() < b.ID.String()
}

// GetByReference is Ledger.GetByReference.
func (m *Memory) GetByReference(_ context.Context, rail, ref string) (Payment, error) {
	if rail == "" || ref == "" {
		return Payment{}, invalid("a reference lookup needs a rail and a reference")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var found *Payment
	for _, p := range m.payments {
		if p.Rail == rail && p.TxHash == ref && (found == nil || olderPayment(p, *found)) {
			found = &p
		}
	}
	if found == nil {
		return Payment{}, fmt.Errorf("ledger: %s payment of reference %q: %w", rail, ref, ErrNotFound)
	}
	return found.clone(), nil
}

// MarkPayment is Ledger.MarkPayment.
func (m *Memory) MarkPayment(_ context.Context, mk Mark) (bool, error) {
	if err := mk.validate(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.marks == nil {
		m.marks = map[string]Mark{}
	}
	if _, seen := m.marks[mk.EventID]; seen {
		return false, nil
	}
	mk.OccurredAt, mk.RecordedAt = normalizeTime(mk.OccurredAt), normalizeTime(time.Now())
	m.marks[mk.EventID] = mk
	return true, nil
}

// Marks is Ledger.Marks.
func (m *Memory) Marks(_ context.Context, paymentID uuid.UUID) ([]Mark, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Mark
	for _, mk := range m.marks {
		if mk.PaymentID == paymentID {
			out = append(out, mk)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].OccurredAt.Equal(out[j].OccurredAt) {
			return out[i].OccurredAt.Before(out[j].OccurredAt)
		}
		return out[i].EventID < out[j].EventID
	})
	return out, nil
}

// FlagPayer is Ledger.FlagPayer.
func (m *Memory) FlagPayer(_ context.Context, f Flag) (bool, error) {
	if err := f.validate(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.flags == nil {
		m.flags = map[string]Flag{}
	}
	if _, seen := m.flags[f.EventID]; seen {
		return false, nil
	}
	f.CreatedAt = normalizeTime(time.Now())
	m.flags[f.EventID] = f
	return true, nil
}

// Flagged is Ledger.Flagged.
func (m *Memory) Flagged(_ context.Context, payer string) (Flag, bool, error) {
	if payer == "" {
		return Flag{}, false, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var (
		latest Flag
		found  bool
	)
	for _, f := range m.flags {
		if f.Payer != payer {
			continue
		}
		if !found || f.CreatedAt.After(latest.CreatedAt) || (f.CreatedAt.Equal(latest.CreatedAt) && f.EventID < latest.EventID) {
			latest, found = f, true
		}
	}
	return latest, found, nil
}
