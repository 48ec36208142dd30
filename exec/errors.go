package exec

import (
	"errors"
	"fmt"
)

// Errors that refuse a call before any tool runs. The gateway maps them to HTTP statuses.
var (
	ErrUnknownTool = errors.New("unknown_tool")
	ErrToolBlocked = errors.New("tool_blocked")
	ErrDryRunOnly  = errors.New("dry_run_only")
	ErrInvalidArgs = errors.New("invalid_args")
	ErrSandboxBusy = errors.New("sandbox_busy")
)

// ArgsError says which argument is wrong and why. It wraps ErrInvalidArgs.
type ArgsError struct {
	Tool   string // tool name
	Field  string // JSON pointer of the offending value, "" for the args object itself
	Reason string // human-readable, e.g. "missing property 'url'"
}

func (e *ArgsError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: invalid args: %s", e.Tool, e.Reason)
	}
	return fmt.Sprintf("%s: invalid args at %s: %s", e.Tool, e.Field, e.Reason)
}

func (e *ArgsError) Unwrap() error { return ErrInvalidArgs }

// ToolError is a failure inside a tool: the call completed, unsuccessfully. It becomes the
// result's error object and a non-zero exit code; it is never an HTTP error.
type ToolError struct {
	Code    string `json:"code"`    // snake_case reason, e.g. "destination_not_allowed"
	Message string `json:"message"` // human-readable detail
}

func (e *ToolError) Error() string { return e.Code + ": " + e.Message }

// Failf returns a *ToolError with the given code and formatted message.
func Failf(code, format string, args ...any) *ToolError {
	return &ToolError{Code: code, Message: fmt.Sprintf(format, args...)}
}
