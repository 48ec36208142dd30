package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// execRequest is the body of POST /exec/tool and /exec/simulate, as the seed defines it.
type execRequest struct {
	AgentID string          `json:"agentId"`
	Tool    *toolSpec       `json:"tool"`
	DryRun  *bool           `json:"dryRun"`
	Context json.RawMessage `json:"context"`
}

type toolSpec struct {
	Name     string          `json:"name"`
	Args     json.RawMessage `json:"args"`
	TimeoutS *float64        `json:"timeout_s"`
}

// requestError is a malformed request: 400 with a code and, when known, the field.
type requestError struct {
	Code   string
	Field  string
	Detail string
}

func (e *requestError) Error() string { return e.Code + ": " + e.Detail }

func badRequest(code, field, format string, args ...any) *requestError {
	return &requestError{Code: code, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// errUnsupportedMediaType answers 415.
var errUnsupportedMediaType = errors.New("unsupported_media_type")

const (
	maxAgentIDLen  = 256
	maxToolNameLen = 128
	maxContextLen  = 16 << 10
)

// decodeExecRequest reads and validates a call. The body is capped at maxBytes (413 past
// it), nesting at maxDepth, and U+0000 is refused anywhere because the audit log cannot
// store it.
func decodeExecRequest(w http.ResponseWriter, r *http.Request, maxBytes int64, maxDepth int) (*execRequest, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		// curl -d sends form-urlencoded by default; the body must still be JSON.
		if err != nil || (mt != "application/json" && mt != "text/plain" && mt != "application/x-www-form-urlencoded") {
			return nil, fmt.Errorf("%w: %q, send application/json", errUnsupportedMediaType, ct)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, tooBig
		}
		return nil, badRequest("unreadable_body", "", "reading the body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("missing_body", "", "the request body is empty; send a JSON object with tool.name")
	}
	if !utf8.Valid(body) {
		return nil, badRequest("invalid_utf8", "", "the body is not valid UTF-8")
	}
	if d := jsonDepth(body); d > maxDepth {
		return nil, badRequest("json_too_deep", "", "JSON nesting depth %d exceeds the limit of %d", d, maxDepth)
	}
	if hasNULEscape(body) {
		return nil, badRequest("nul_character", "", `strings must not contain U+0000 ("\u0000")`)
	}
	var req execRequest
	if err := json.Unmarshal(body, &req); err != nil {
		var typeErr *json.UnmarshalTypeError
		var synErr *json.SyntaxError
		switch {
		case errors.As(err, &typeErr):
			return nil, badRequest("invalid_field_type", typeErr.Field, "%s must be %s, not %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
		case errors.As(err, &synErr):
			return nil, badRequest("invalid_json", "", "malformed JSON at byte %d: %v", synErr.Offset, synErr)
		default:
			return nil, badRequest("invalid_json", "", "malformed JSON: %v", err)
		}
	}
	// Duplicate member names let two parsers read one body differently, and have no
	// canonical form for the proof: refuse them (RFC 7493, I-JSON).
	if !jsontext.Value(body).IsValid() {
		return nil, badRequest("invalid_json", "", "the body is not I-JSON: duplicate member names or escaped lone surrogates")
	}
	if req.Tool == nil || req.Tool.Name == "" {
		return nil, badRequest("missing_tool_name", "tool.name", "tool.name is required")
	}
	if len(req.Tool.Name) > maxToolNameLen {
		return nil, badRequest("invalid_tool_name", "tool.name", "tool.name is longer than %d bytes", maxToolNameLen)
	}
	if len(req.AgentID) > maxAgentIDLen {
		return nil, badRequest("invalid_agent_id", "agentId", "agentId is longer than %d bytes", maxAgentIDLen)
	}
	if t := req.Tool.TimeoutS; t != nil && (*t <= 0 || math.IsInf(*t, 0) || math.IsNaN(*t)) {
		return nil, badRequest("invalid_timeout", "tool.timeout_s", "tool.timeout_s must be a positive number of seconds")
	}
	if c := bytes.TrimSpace(req.Context); len(c) > 0 && !bytes.Equal(c, []byte("null")) {
		if c[0] != '{' {
			return nil, badRequest("invalid_field_type", "context", "context must be an object")
		}
		if len(c) > maxContextLen {
			return nil, badRequest("context_too_large", "context", "context is larger than %d bytes", maxContextLen)
		}
		req.Context = c
	} else {
		req.Context = nil
	}
	return &req, nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "float64", "int", "int64", "uint64":
		return "a number"
	case "ptr", "struct":
		return "an object"
	default:
		return "of another type"
	}
}

// jsonDepth returns the deepest nesting of arrays and objects in a JSON text, ignoring
// brackets inside strings. It is a byte scan, cheaper than any parse.
func jsonDepth(b []byte) int {
	depth, max := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > max {
				max = depth
			}
		case '}', ']':
			depth--
		}
	}
	return max
}

// hasNULEscape reports whether a JSON text contains the escape \u0000 (in any case), which
// is the only way U+0000 can appear in valid JSON.
func hasNULEscape(b []byte) bool {
	for i := 0; i+6 <= len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		// An escape starts at an odd run of backslashes; "\\u0000" is a backslash then text.
		run := 1
		for j := i + 1; j < len(b) && b[j] == '\\'; j++ {
			run++
		}
		if run%2 == 1 {
			k := i + run - 1
			if k+6 <= len(b) && b[k+1] == 'u' && string(b[k+2:k+6]) == "0000" {
				return true
			}
		}
		i += run - 1
	}
	return false
}
