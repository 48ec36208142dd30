package gateway

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/proof"
)

// SchemaVersion is the version of the record and response shapes.
const SchemaVersion = "v1"

// timestampLayout is RFC 3339 in UTC with milliseconds, as records and responses show time.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// Record is everything a call decided and produced. Its RFC 8785 canonical JSON is what
// the proof hash commits to; GET /exec/jobs/{jobId} returns it verbatim so that anyone can
// recompute the hash.
type Record struct {
	SchemaVersion string           `json:"schemaVersion"`
	JobID         string           `json:"jobId"`
	Timestamp     string           `json:"timestamp"`
	Endpoint      string           `json:"endpoint"`
	AgentID       string           `json:"agentId"`
	Tool          RecordTool       `json:"tool"`
	DryRun        bool             `json:"dryRun"`
	Context       json.RawMessage  `json:"context,omitempty"`
	Status        string           `json:"status"`
	Result        exec.Result      `json:"result"`
	IAM           identity.Outcome `json:"iam"`
	Payment       PaymentRef       `json:"payment"`
}

// RecordTool is the call as the sandbox ran it: the validated args and the effective timeout.
type RecordTool struct {
	Name      string          `json:"name"`
	Args      json.RawMessage `json:"args"`
	TimeoutMs int64           `json:"timeoutMs"`
}

// PaymentRef says how the call was paid for. Amount is in atomic units, as a string.
type PaymentRef struct {
	Protocol  string `json:"protocol"`
	Amount    string `json:"amount"`
	Currency  string `json:"currency"`
	Payer     string `json:"payer,omitempty"`
	Reference string `json:"reference,omitempty"`
}

// Statuses of a record besides the runner's completed/failed/timeout.
const statusDenied = "denied"

// nulEscape is how canonical JSON spells U+0000, which the audit log (jsonb) cannot store.
var nulEscape = []byte(`\u0000`)

// seal canonicalises and hashes the record. A result that cannot be stored (U+0000) or
// cannot be canonicalised (a number JSON cannot represent as a double) is replaced by an
// error result, so that every call gets a proof hash and an audit row.
func seal(rec *Record) (canonical []byte, hash string) {
	c, h, err := proof.Seal(rec)
	if err == nil && !bytes.Contains(c, nulEscape) {
		return c, h
	}
	code := "output_not_storable"
	if err != nil {
		code = "output_not_canonicalizable"
	}
	rec.Status = exec.StatusFailed
	rec.Result = exec.Result{Output: json.RawMessage("null"), ExitCode: exec.ExitFailed, Simulated: rec.Result.Simulated,
		Error: exec.Failf(code, "the tool's output cannot be sealed in a verifiable record")}
	c, h, err = proof.Seal(rec)
	if err != nil {
		// Everything left in the record came from validated input and our own types.
		panic("sealing a sanitised record: " + err.Error())
	}
	return c, h
}

func formatTimestamp(t time.Time) string { return t.UTC().Format(timestampLayout) }
