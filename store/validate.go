package store

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
)

// MaxTextBytes caps every text column. Three of them are btree-indexed, and Postgres refuses an
// index row over about 2.7 kB; the gateway should refuse longer agent ids at its edge, so an
// agent can never make its own call unauditable.
const MaxTextBytes = 1024

// Validate reports whether every backend can store e, and if not, why (an *InvalidEntryError).
// Postgres refuses some input that encoding/json accepts: jsonb rejects the \u0000 escape and
// unpaired UTF-16 surrogate escapes, text rejects NUL bytes and invalid UTF-8. Checking them
// here, before a COPY, keeps one such entry from failing the whole batch around it. Callers
// (the gateway builds records with encoding/json from values it controls) should never trip
// it; when they do, the writer moves the entry to the dead-letter file instead of losing it.
func Validate(e Entry) error {
	fail := func(reason, detail string) error {
		return &InvalidEntryError{JobID: e.JobID, Reason: reason, Detail: detail}
	}
	if len(e.JobID) != 36 {
		return fail(ReasonInvalidJobID, "want a UUID in its 36-character form")
	}
	if _, err := uuid.Parse(e.JobID); err != nil {
		return fail(ReasonInvalidJobID, err.Error())
	}
	if y := e.Timestamp.Year(); y < 1 || y > 9999 {
		return fail(ReasonTimestampOutOfRange, e.Timestamp.Format(time.RFC3339))
	}
	if e.LatencyMs < 0 || e.LatencyMs > math.MaxInt32 {
		return fail(ReasonLatencyOutOfRange, "")
	}
	for _, f := range [...]struct{ name, v string }{
		{"callerAgentId", e.CallerAgentID},
		{"toolName", e.ToolName},
		{"status", e.Status},
		{"proofHash", e.ProofHash},
		{"paymentProtocol", e.PaymentProtocol},
		{"schemaVersion", e.SchemaVersion},
	} {
		if len(f.v) > MaxTextBytes {
			return fail(ReasonTextTooLong, f.name)
		}
		if !utf8.ValidString(f.v) {
			return fail(ReasonInvalidUTF8, f.name)
		}
		if strings.IndexByte(f.v, 0) >= 0 {
			return fail(ReasonTextContainsNUL, f.name)
		}
	}
	return validateRecord(e.JobID, e.Record)
}

// validateRecord checks the record JSON: well-formed, UTF-8, and free of the escapes that
// Postgres jsonb refuses.
func validateRecord(jobID string, rec json.RawMessage) error {
	// What the gateway writes passes in one pass: I-JSON is UTF-8, well-formed and free of
	// unpaired surrogate escapes, which leaves only \u0000 to look for. Anything else (a
	// repeated name, which I-JSON refuses and jsonb accepts, or a record to refuse) takes the
	// checks below, which name the reason.
	if jsontext.Value(rec).IsValid() && !bytes.Contains(rec, nulEscape) {
		return nil
	}
	fail := func(reason, detail string) error {
		return &InvalidEntryError{JobID: jobID, Reason: reason, Detail: detail}
	}
	if len(rec) == 0 {
		return fail(ReasonInvalidRecordJSON, "empty record")
	}
	if !utf8.Valid(rec) {
		return fail(ReasonInvalidUTF8, "record")
	}
	if !json.Valid(rec) {
		return fail(ReasonInvalidRecordJSON, "")
	}
	if reason := scanEscapes(rec); reason != "" {
		return fail(reason, "")
	}
	return nil
}

var nulEscape = []byte(`\u0000`)

// scanEscapes walks the backslash escapes of well-formed JSON (outside strings JSON has no
// backslash, so string tracking is unnecessary) and returns the reason for the first escape
// jsonb refuses, or "".
func scanEscapes(b []byte) string {
	pendingHigh := false // the previous escape was a high surrogate that still needs its pair
	for {
		i := bytes.IndexByte(b, '\\')
		if i < 0 {
			if pendingHigh {
				return ReasonRecordLoneSurrogate
			}
			return ""
		}
		if pendingHigh && i != 0 {
			return ReasonRecordLoneSurrogate
		}
		if i+1 >= len(b) {
			return "" // unreachable for valid JSON
		}
		if b[i+1] != 'u' {
			if pendingHigh {
				return ReasonRecordLoneSurrogate
			}
			b = b[i+2:]
			continue
		}
		if i+6 > len(b) {
			return "" // unreachable for valid JSON
		}
		cp := hex4(b[i+2 : i+6])
		b = b[i+6:]
		switch {
		case cp == 0:
			return ReasonRecordNULEscape
		case cp >= 0xD800 && cp <= 0xDBFF:
			if pendingHigh {
				return ReasonRecordLoneSurrogate
			}
			pendingHigh = true
		case cp >= 0xDC00 && cp <= 0xDFFF:
			if !pendingHigh {
				return ReasonRecordLoneSurrogate
			}
			pendingHigh = false
		default:
			if pendingHigh {
				return ReasonRecordLoneSurrogate
			}
		}
	}
}

func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c-'a') + 10
		case c >= 'A' && c <= 'F':
			r |= rune(c-'A') + 10
		}
	}
	return r
}
