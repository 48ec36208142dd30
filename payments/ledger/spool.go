package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/uuid"

	"github.com/secureexec/secureexec/internal/segspool"
)

// The spool keeps, on local disk, the operations this replica could not write to Postgres:
// a directory of append-only JSON-lines segments, one operation per line, each append fsynced
// before the call that made it returns. The replayer applies segments oldest first, line by
// line, so the operations on one payment reach Postgres in the order they were made, and
// deletes a segment only once every line of it is applied. Each line carries an op id that
// the replaying transaction records in payment_spool_log, so a segment replayed twice (a
// crash between the commit and the delete) applies nothing twice.

const (
	segPrefix      = "ledger-"
	segSuffix      = ".jsonl"
	deadLetterName = "ledger-unreadable.jsonl"
	spoolVersion   = 1
)

// Operation kinds.
const (
	opNonce      = "nonce"
	opCreate     = "create"
	opTransition = "transition"
)

// spoolOp is one line of the spool.
type spoolOp struct {
	V          int           `json:"v"`
	OpID       uuid.UUID     `json:"opId"`
	Kind       string        `json:"kind"`
	At         time.Time     `json:"at"`
	Nonce      *nonceRow     `json:"nonce,omitempty"`
	Payment    *paymentLine  `json:"payment,omitempty"`
	Transition *transitionOp `json:"transition,omitempty"`
}

// subject is what the operation is about: a nonce key or a payment id.
func (op *spoolOp) subject() string {
	switch {
	case op.Nonce != nil:
		return op.Nonce.Key
	case op.Payment != nil:
		return op.Payment.ID.String()
	case op.Transition != nil:
		return op.Transition.ID.String()
	}
	return ""
}

// paymentID is the payment the operation touches, or uuid.Nil.
func (op *spoolOp) paymentID() uuid.UUID {
	switch {
	case op.Payment != nil:
		return op.Payment.ID
	case op.Transition != nil:
		return op.Transition.ID
	}
	return uuid.Nil
}

// valid checks a decoded line: a line that decodes into something else is set aside, never
// half-applied.
func (op *spoolOp) valid() error {
	if op.V != spoolVersion || op.OpID == uuid.Nil || op.At.IsZero() {
		return errors.New("missing version, op id or time")
	}
	switch {
	case op.Kind == opNonce && op.Nonce != nil && op.Payment == nil && op.Transition == nil:
		if op.Nonce.Key == "" || op.Nonce.ClaimID == uuid.Nil {
			return errors.New("nonce without key or claim id")
		}
	case op.Kind == opCreate && op.Payment != nil && op.Nonce == nil && op.Transition == nil:
		if _, err := op.Payment.payment(); err != nil {
			return err
		}
	case op.Kind == opTransition && op.Transition != nil && op.Nonce == nil && op.Payment == nil:
		if op.Transition.ID == uuid.Nil {
			return errors.New("transition without payment id")
		}
		if err := checkTransition(op.Transition.From, op.Transition.To, op.Transition.Patch.patch()); err != nil {
			return err
		}
	default:
		return fmt.Errorf("kind %q does not match its body", op.Kind)
	}
	return nil
}

// nonceRow is one row of payment_nonces.
type nonceRow struct {
	Key       string    `json:"key"`
	ClaimID   uuid.UUID `json:"claimId"`
	ClaimedAt time.Time `json:"claimedAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// paymentLine is a new payment as the spool writes it: the amount as a decimal string, so no
// JSON reader can round it.
type paymentLine struct {
	ID        uuid.UUID       `json:"id"`
	Rail      string          `json:"rail"`
	Network   string          `json:"network,omitempty"`
	Asset     string          `json:"asset,omitempty"`
	Payer     string          `json:"payer,omitempty"`
	PayTo     string          `json:"payTo,omitempty"`
	Amount    string          `json:"amount"`
	NonceKey  string          `json:"nonceKey"`
	JobID     uuid.UUID       `json:"jobId"`
	Payload   json.RawMessage `json:"payload"`
	CreatedAt time.Time       `json:"createdAt"`
	// Status is where the payment starts; absent (spooled before payments could start
	// anywhere else) is verified.
	Status      Status `json:"status,omitempty"`
	ErrorReason string `json:"errorReason,omitempty"`
}

func newPaymentLine(p Payment) *paymentLine {
	return &paymentLine{ID: p.ID, Rail: p.Rail, Network: p.Network, Asset: p.Asset, Payer: p.Payer, PayTo: p.PayTo,
		Amount: p.Amount.String(), NonceKey: p.NonceKey, JobID: p.JobID, Payload: p.Payload, CreatedAt: p.CreatedAt,
		Status: p.Status, ErrorReason: p.ErrorReason}
}

func (l *paymentLine) payment() (Payment, error) {
	a, ok := new(big.Int).SetString(l.Amount, 10)
	if !ok {
		return Payment{}, invalid("spooled amount %q is not an integer", l.Amount)
	}
	p := Payment{ID: l.ID, Rail: l.Rail, Network: l.Network, Asset: l.Asset, Payer: l.Payer, PayTo: l.PayTo,
		Amount: a, NonceKey: l.NonceKey, JobID: l.JobID, Payload: l.Payload, CreatedAt: l.CreatedAt,
		Status: l.Status, ErrorReason: l.ErrorReason}
	return prepareNew(p, l.CreatedAt)
}

// transitionOp is one move as the spool writes it.
type transitionOp struct {
	ID    uuid.UUID `json:"id"`
	From  []Status  `json:"from"`
	To    Status    `json:"to"`
	Patch patchLine `json:"patch"`
}

type patchLine struct {
	JobID       uuid.UUID `json:"jobId"`
	TxHash      string    `json:"txHash,omitempty"`
	RawTx       []byte    `json:"rawTx,omitempty"`
	BatchID     uuid.UUID `json:"batchId"`
	ErrorReason string    `json:"errorReason,omitempty"`
	Attempt     bool      `json:"attempt,omitempty"`
}

func newPatchLine(p Patch) patchLine {
	return patchLine{JobID: p.JobID, TxHash: p.TxHash, RawTx: p.RawTx, BatchID: p.BatchID, ErrorReason: p.ErrorReason, Attempt: p.Attempt}
}

func (p patchLine) patch() Patch {
	return Patch{JobID: p.JobID, TxHash: p.TxHash, RawTx: p.RawTx, BatchID: p.BatchID, ErrorReason: p.ErrorReason, Attempt: p.Attempt}
}

// maxLineBytes bounds one spool line: a payment with the largest payload and transaction,
// base64-encoded, with room to spare. A longer line is not ours and is set aside.
const maxLineBytes = 4 * (MaxPayloadBytes + MaxRawTxBytes)

// openSpool opens the ledger's spool (internal/segspool): one operation per line, lines that
// cannot be decoded set aside in deadLetterName beside the segments. Past maxBytes appends fail
// (segspool.ErrFull) and the ledger fails closed instead of filling the disk.
func openSpool(dir string, segmentBytes, maxBytes int64) (*segspool.Spool, error) {
	sp, err := segspool.Open(dir, segspool.Options{
		Prefix: segPrefix, Suffix: segSuffix, SegmentBytes: segmentBytes, MaxBytes: maxBytes,
		MaxLineBytes: maxLineBytes, DeadLetterName: deadLetterName,
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return sp, nil
}

// appendLine writes one operation line (without its newline) and fsyncs it: a nil error means
// the operation survives a crash; an error (a failed fsync included) means this process never
// replays it, so the caller may report the operation as not done. (Only if the disk refused
// both the fsync and cutting the line off can a later process find it and replay it.)
func appendLine(sp *segspool.Spool, line []byte) error {
	return sp.Append(append(line[:len(line):len(line)], '\n'), 1)
}

// setAside keeps a line that cannot be decoded, for an operator; it is never replayed.
func setAside(sp *segspool.Spool, line []byte, reason string) error {
	rec, err := json.Marshal(struct {
		At     time.Time `json:"at"`
		Reason string    `json:"reason"`
		Line   []byte    `json:"line"`
	}{time.Now().UTC(), reason, line})
	if err != nil {
		return err
	}
	return sp.AppendDeadLetter(append(rec, '\n'))
}
