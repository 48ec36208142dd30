package exec

import (
	"context"
	"encoding/json"
)

// A Tool is one allowed operation. Implementations live one per file (http_get.go, ...).
//
// Args passed to Simulate and Run have already been validated against Schema, so a tool may
// decode them into its own struct without re-checking what the schema guarantees.
type Tool interface {
	// Name is the wire name, e.g. "http_get".
	Name() string
	// Description is one line for GET /exec/tools.
	Description() string
	// Schema is the JSON Schema (draft 2020-12) of the tool's args object.
	Schema() json.RawMessage
	// Simulate describes what Run would do with these args, with no side effect.
	Simulate(ctx context.Context, args json.RawMessage) (any, error)
	// Run performs the work. It must return promptly once ctx is done.
	Run(ctx context.Context, args json.RawMessage) (any, error)
}

// DryRunOnly is implemented by tools that refuse real mode (mock_api_call).
type DryRunOnly interface {
	DryRunOnly() bool
}
