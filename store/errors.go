package store

import (
	"fmt"
	"strings"
)

// Reasons an entry is refused, in one list. They are snake_case so logs and the dead-letter
// file can be filtered by machine.
const (
	ReasonInvalidJobID        = "invalid_job_id"
	ReasonInvalidRecordJSON   = "invalid_record_json"
	ReasonRecordNULEscape     = "record_nul_escape"
	ReasonRecordLoneSurrogate = "record_lone_surrogate"
	ReasonInvalidUTF8         = "invalid_utf8"
	ReasonTextContainsNUL     = "text_contains_nul"
	ReasonLatencyOutOfRange   = "latency_out_of_range"
	ReasonTimestampOutOfRange = "timestamp_out_of_range"
	ReasonTextTooLong         = "text_too_long"
	ReasonRefusedByDatabase   = "refused_by_database"
	ReasonRecordTooLarge      = "record_too_large"
)

// InvalidEntryError says why Validate refuses an entry. Such an entry can never be stored, so
// retrying it is pointless; the writer moves it to the dead-letter file instead.
type InvalidEntryError struct {
	JobID  string
	Reason string
	Detail string
}

// Error implements error.
func (e *InvalidEntryError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("store: entry %q: %s", e.JobID, e.Reason)
	}
	return fmt.Sprintf("store: entry %q: %s: %s", e.JobID, e.Reason, e.Detail)
}

// Rejection is one entry of a batch that a backend refused for its content.
type Rejection struct {
	Index  int // position in the batch given to WriteBatch
	JobID  string
	Reason string
	Detail string
}

// RejectError is what WriteBatch returns when some entries were refused for their content:
// every other entry of the batch WAS written, so the caller must not retry the batch, only
// deal with Rejected. One bad entry never poisons the rest of its batch.
type RejectError struct {
	Rejected []Rejection
}

// Error implements error.
func (e *RejectError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store: %d entries rejected", len(e.Rejected))
	for i, r := range e.Rejected {
		if i == 3 {
			b.WriteString(", ...")
			break
		}
		fmt.Fprintf(&b, "; %q: %s", r.JobID, r.Reason)
	}
	return b.String()
}
