// Package store keeps the audit log of every call: Postgres (pgx v5) in production, an
// embedded file database by default, and the asynchronous writer in front of both that never
// blocks a response and never loses a record.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Entry is one call as the audit log keeps it: the seed's secureexec_calls columns plus the
// full proof record. Record is the exact JSON whose canonical form proofHash commits to.
type Entry struct {
	JobID           string          `json:"jobId"`
	Timestamp       time.Time       `json:"timestamp"`
	CallerAgentID   string          `json:"callerAgentId"`
	ToolName        string          `json:"toolName"`
	DryRun          bool            `json:"dryRun"`
	Status          string          `json:"status"`
	IAMApproved     bool            `json:"iamApproved"`
	ProofHash       string          `json:"proofHash"`
	LatencyMs       int             `json:"latencyMs"`
	PaymentProtocol string          `json:"paymentProtocol"`
	SchemaVersion   string          `json:"schemaVersion"`
	Record          json.RawMessage `json:"record"`
}

// ErrNotFound is returned by Get for an unknown job id.
var ErrNotFound = errors.New("job_not_found")

// Backend is a durable home for entries. WriteBatch must be idempotent on JobID: writing an
// entry that is already stored is a no-op, never a duplicate and never an error.
type Backend interface {
	WriteBatch(ctx context.Context, entries []Entry) error
	Get(ctx context.Context, jobID string) (Entry, error)
	Close() error
}

// DefaultSchemaVersion is the schema_version the seed's table defaults to; entries that carry
// none are stored with it.
const DefaultSchemaVersion = "v1"
