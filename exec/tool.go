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

// jsonAppender is implemented by tool outputs that encode themselves exactly as json.Marshal
// would, without its reflection: the runner encodes every output it is handed, and for the
// cheapest tools that was a twentieth of a call's CPU.
type jsonAppender interface {
	AppendJSON(dst []byte) []byte
	EncodedSizeHint() int // room for the usual encoding, so that it is written in one allocation
}

// encodeOutput is json.Marshal(out), by the output's own encoder when it has one.
func encodeOutput(out any) ([]byte, error) {
	if a, ok := out.(jsonAppender); ok {
		return a.AppendJSON(make([]byte, 0, a.EncodedSizeHint())), nil
	}
	return json.Marshal(out)
}
