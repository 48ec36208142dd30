package ledger

import (
	"bytes"
	"encoding/json"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Limits on what a payment row may hold: every field can come, one way or another, from a
// request, and the spool and the overlay keep whole payments in memory and on disk.
const (
	MaxKeyBytes     = 512       // nonce keys, idempotency keys
	MaxTextBytes    = 256       // rail, network, asset, payer, pay_to
	MaxReasonBytes  = 1024      // error_reason
	MaxTxHashBytes  = 130       // "0x" + 64 hex digits, with room for other rails' references
	MaxRawTxBytes   = 128 << 10 // go-ethereum's transaction size limit
	MaxPayloadBytes = 64 << 10  // the rail's authorization, as JSON
)

// maxAmount is 2^256-1: amounts are EVM uint256 atomic units, and NUMERIC(78,0) holds them.
var maxAmount = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))

// Payment is one paid call, from the claimed credential to the settled transfer.
type Payment struct {
	ID          uuid.UUID
	Rail        string // the rail that verified it and alone may settle it: "x402", ...
	Status      Status
	Network     string          // CAIP-2, e.g. "eip155:8453"
	Asset       string          // token contract, checksummed
	Payer       string          // checksummed address
	PayTo       string          // checksummed address
	Amount      *big.Int        // atomic units; never nil in a stored payment
	NonceKey    string          // the key claimed with Claims.Claim; unique across payments
	JobID       uuid.UUID       // uuid.Nil until the tool has run
	Payload     json.RawMessage // the rail's full authorization (stored as JSONB: key order and spacing are not kept)
	TxHash      string          // "" until a transaction is recorded
	RawTx       []byte          // the signed transaction, recorded before broadcast; nil for batch members
	BatchID     uuid.UUID       // uuid.Nil unless settled in a batch
	ErrorReason string          // why it failed or was not charged
	Attempts    int             // settlement attempts (broadcasts and reconciliations)
	CreatedAt   time.Time
	UpdatedAt   time.Time
	SettledAt   time.Time // zero until settled
}

// Patch is what a move records besides the new status. Zero fields leave the row as it is;
// TxHash and RawTx are written once: a different value than the one recorded is ErrConflict.
type Patch struct {
	JobID       uuid.UUID
	TxHash      string
	RawTx       []byte
	BatchID     uuid.UUID
	ErrorReason string
	Attempt     bool // count one more settlement attempt
}

func (p Patch) validate() error {
	if err := checkText("tx_hash", p.TxHash, MaxTxHashBytes); err != nil {
		return err
	}
	if err := checkText("error_reason", p.ErrorReason, MaxReasonBytes); err != nil {
		return err
	}
	if len(p.RawTx) > MaxRawTxBytes {
		return invalid("raw_tx is %d bytes, more than %d", len(p.RawTx), MaxRawTxBytes)
	}
	if len(p.RawTx) > 0 && p.TxHash == "" {
		return invalid("a signed transaction is recorded with its hash (TxHash)")
	}
	return nil
}

// normalizeTime is the precision and zone Postgres stores, so a payment reads the same from
// the spool's overlay and from the database.
func normalizeTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// prepareNew validates a payment given to Create and fills what the ledger decides.
func prepareNew(p Payment, now time.Time) (Payment, error) {
	if p.ID == uuid.Nil {
		return p, invalid("payment id is required")
	}
	switch {
	case p.Status == "":
		p.Status = StatusVerified
	case !slices.Contains(entryStatuses, p.Status):
		return p, invalid("a payment starts verified, queued or not_charged, not %s", p.Status)
	}
	if p.ErrorReason != "" && p.Status != StatusNotCharged {
		return p, invalid("a new payment has an error reason only when it is not charged")
	}
	if p.Rail == "" {
		return p, invalid("payment rail is required")
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"rail", p.Rail, MaxTextBytes}, {"network", p.Network, MaxTextBytes}, {"asset", p.Asset, MaxTextBytes},
		{"payer", p.Payer, MaxTextBytes}, {"pay_to", p.PayTo, MaxTextBytes}, {"nonce_key", p.NonceKey, MaxKeyBytes},
		{"tx_hash", p.TxHash, MaxTxHashBytes}, {"error_reason", p.ErrorReason, MaxReasonBytes},
	} {
		if err := checkText(f.name, f.v, f.max); err != nil {
			return p, err
		}
	}
	if p.NonceKey == "" {
		return p, invalid("payment nonce_key is required")
	}
	if err := checkAmount(p.Amount); err != nil {
		return p, err
	}
	if err := checkPayload(p.Payload); err != nil {
		return p, err
	}
	// What a move records is not part of a new payment: it starts with nothing recorded.
	if p.TxHash != "" || p.RawTx != nil || p.BatchID != uuid.Nil || p.Attempts != 0 || !p.SettledAt.IsZero() {
		return p, invalid("a new payment has no transaction, batch, attempts or settlement yet")
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = now
	}
	p.CreatedAt = normalizeTime(p.CreatedAt)
	p.UpdatedAt = p.CreatedAt
	p.Amount = new(big.Int).Set(p.Amount)
	p.Payload = slices.Clone(p.Payload)
	return p, nil
}

func checkAmount(a *big.Int) error {
	if a == nil {
		return invalid("payment amount is required")
	}
	if a.Sign() < 0 || a.Cmp(maxAmount) > 0 {
		return invalid("payment amount %s is outside 0 .. 2^256-1", a)
	}
	return nil
}

// checkPayload accepts a JSON object that Postgres can store as JSONB, so that a payment
// spooled during an outage is never refused when it is replayed.
func checkPayload(b json.RawMessage) error {
	if len(b) == 0 {
		return invalid("payment payload is required")
	}
	if len(b) > MaxPayloadBytes {
		return invalid("payment payload is %d bytes, more than %d", len(b), MaxPayloadBytes)
	}
	if !utf8.Valid(b) || !json.Valid(b) {
		return invalid("payment payload is not UTF-8 JSON")
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return invalid("payment payload is not a JSON object")
	}
	if why := jsonbIncompatible(b); why != "" {
		return invalid("payment payload: %s", why)
	}
	return nil
}

// Bounds on the numbers of a payload: Postgres JSONB stores them as NUMERIC, which overflows
// far beyond these; no authorization needs more (amounts travel as strings).
const (
	maxNumberBytes    = 64
	maxNumberExponent = 300
)

// jsonbIncompatible says what in a valid JSON document Postgres JSONB would refuse: a \u0000
// escape, an unpaired surrogate escape, or a number NUMERIC cannot hold. "" when nothing.
func jsonbIncompatible(b []byte) string {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			end, why := scanString(b, i+1)
			if why != "" {
				return why
			}
			i = end
		case c == '-' || (c >= '0' && c <= '9'):
			j := i
			for j < len(b) && strings.IndexByte("+-.eE0123456789", b[j]) >= 0 {
				j++
			}
			if why := checkNumber(b[i:j]); why != "" {
				return why
			}
			i = j - 1
		}
	}
	return ""
}

// scanString checks the string starting after its opening quote at i and returns the index of
// its closing quote.
func scanString(b []byte, i int) (int, string) {
	pendingHigh := false
	for ; i < len(b); i++ {
		c := b[i]
		if c == '"' {
			if pendingHigh {
				return i, "unpaired surrogate escape"
			}
			return i, ""
		}
		if c != '\\' {
			if pendingHigh {
				return i, "unpaired surrogate escape"
			}
			continue
		}
		i++
		if i >= len(b) {
			break
		}
		if b[i] != 'u' {
			if pendingHigh {
				return i, "unpaired surrogate escape"
			}
			continue
		}
		if i+4 >= len(b) {
			break
		}
		v, err := strconv.ParseUint(string(b[i+1:i+5]), 16, 16)
		if err != nil {
			return i, "invalid unicode escape"
		}
		i += 4
		switch {
		case v == 0:
			return i, "\\u0000 escape"
		case v >= 0xD800 && v <= 0xDBFF:
			if pendingHigh {
				return i, "unpaired surrogate escape"
			}
			pendingHigh = true
		case v >= 0xDC00 && v <= 0xDFFF:
			if !pendingHigh {
				return i, "unpaired surrogate escape"
			}
			pendingHigh = false
		default:
			if pendingHigh {
				return i, "unpaired surrogate escape"
			}
		}
	}
	return len(b), "unterminated string"
}

func checkNumber(n []byte) string {
	if len(n) > maxNumberBytes {
		return "number longer than 64 characters"
	}
	if k := bytes.IndexAny(n, "eE"); k >= 0 {
		e, err := strconv.Atoi(strings.TrimPrefix(string(n[k+1:]), "+"))
		if err != nil || e > maxNumberExponent || e < -maxNumberExponent {
			return "number exponent beyond 300"
		}
	}
	return ""
}

// checkText refuses what a Postgres TEXT column cannot hold (invalid UTF-8, NUL) and what is
// longer than max bytes.
func checkText(name, s string, max int) error {
	if len(s) > max {
		return invalid("%s is %d bytes, more than %d", name, len(s), max)
	}
	if !utf8.ValidString(s) {
		return invalid("%s is not UTF-8", name)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return invalid("%s contains NUL", name)
	}
	return nil
}

// clone returns a copy that shares no memory with p.
func (p Payment) clone() Payment {
	if p.Amount != nil {
		p.Amount = new(big.Int).Set(p.Amount)
	}
	p.Payload = slices.Clone(p.Payload)
	p.RawTx = slices.Clone(p.RawTx)
	return p
}

// sameIdentity reports whether two payments with one id are the same payment: what Create
// must find when it is retried.
func sameIdentity(a, b Payment) bool {
	return a.ID == b.ID && a.Rail == b.Rail && a.NonceKey == b.NonceKey && a.Network == b.Network &&
		a.Asset == b.Asset && a.Payer == b.Payer && a.PayTo == b.PayTo &&
		a.Amount != nil && b.Amount != nil && a.Amount.Cmp(b.Amount) == 0
}

// applyPatch is a move applied to a payment held in memory, with the same rules as the SQL of
// a move: the status changes, set-once fields conflict when they differ.
func applyPatch(p Payment, to Status, patch Patch, at time.Time) (Payment, error) {
	p = p.clone()
	if patch.TxHash != "" {
		if p.TxHash != "" && p.TxHash != patch.TxHash {
			return p, txConflict(p.ID)
		}
		p.TxHash = patch.TxHash
	}
	if patch.RawTx != nil {
		if p.RawTx != nil && !bytes.Equal(p.RawTx, patch.RawTx) {
			return p, txConflict(p.ID)
		}
		p.RawTx = slices.Clone(patch.RawTx)
	}
	if patch.JobID != uuid.Nil {
		p.JobID = patch.JobID
	}
	if patch.BatchID != uuid.Nil {
		p.BatchID = patch.BatchID
	}
	if patch.ErrorReason != "" {
		p.ErrorReason = patch.ErrorReason
	}
	if patch.Attempt {
		p.Attempts++
	}
	if to == StatusSettled {
		p.SettledAt = at
	}
	p.Status = to
	p.UpdatedAt = at
	return p, nil
}

// paymentColumns is the column list every read uses, in scanPayment's order; prefix names
// the table when a statement joins.
func paymentColumns(prefix string) string {
	cols := []string{"id", "rail", "status", "network", "asset", "payer", "pay_to", "amount::text", "nonce_key",
		"job_id", "payload", "tx_hash", "raw_tx", "batch_id", "error_reason", "attempts", "created_at", "updated_at", "settled_at"}
	for i := range cols {
		cols[i] = prefix + cols[i]
	}
	return strings.Join(cols, ", ")
}

func scanPayment(row pgx.Row) (Payment, error) {
	var (
		p                      Payment
		status, amount         string
		jobID, batchID         pgtype.UUID
		txHash, reason         pgtype.Text
		settledAt              pgtype.Timestamptz
		payload                []byte
		createdAt, updatedAt   time.Time
		id                     uuid.UUID
		rail, network, asset   string
		payer, payTo, nonceKey string
		rawTx                  []byte
		attempts               int32
	)
	if err := row.Scan(&id, &rail, &status, &network, &asset, &payer, &payTo, &amount, &nonceKey,
		&jobID, &payload, &txHash, &rawTx, &batchID, &reason, &attempts, &createdAt, &updatedAt, &settledAt); err != nil {
		return Payment{}, err
	}
	a, ok := new(big.Int).SetString(amount, 10)
	if !ok {
		return Payment{}, invalid("stored amount %q is not an integer", amount)
	}
	p = Payment{
		ID: id, Rail: rail, Status: Status(status), Network: network, Asset: asset, Payer: payer, PayTo: payTo,
		Amount: a, NonceKey: nonceKey, Payload: payload, RawTx: rawTx, Attempts: int(attempts),
		CreatedAt: normalizeTime(createdAt), UpdatedAt: normalizeTime(updatedAt),
	}
	if jobID.Valid {
		p.JobID = jobID.Bytes
	}
	if batchID.Valid {
		p.BatchID = batchID.Bytes
	}
	p.TxHash, p.ErrorReason = txHash.String, reason.String
	if settledAt.Valid {
		p.SettledAt = normalizeTime(settledAt.Time)
	}
	return p, nil
}

// uuidArg is a UUID as a statement argument: uuid.Nil is NULL.
func uuidArg(u uuid.UUID) any {
	if u == uuid.Nil {
		return nil
	}
	return u.String()
}

// textArg is a string as a statement argument: "" is NULL.
func textArg(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func statusArgs(ss []Status) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return out
}
