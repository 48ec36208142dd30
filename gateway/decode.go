package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/secureexec/secureexec/internal/jsonskip"
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

// errBodyTimeout answers 408: the body did not arrive within the server's read timeout.
var errBodyTimeout = errors.New("the request body did not arrive in time")

// readAllUpFront bounds the memory a declared Content-Length reserves before the body arrives.
const readAllUpFront = 16 << 10

const (
	maxAgentIDLen  = 256
	maxToolNameLen = 128
	maxContextLen  = 16 << 10
)

// decodeExecRequest reads and validates a call. The body is capped at maxBytes (413 past
// it), nesting at maxDepth, and U+0000 is refused anywhere because the audit log cannot
// store it. The body must be an I-JSON (RFC 7493) object, numbers included.
func decodeExecRequest(w http.ResponseWriter, r *http.Request, maxBytes int64, maxDepth int) (*execRequest, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		// curl -d sends form-urlencoded by default; the body must still be JSON.
		if err != nil || (mt != "application/json" && mt != "text/plain" && mt != "application/x-www-form-urlencoded") {
			return nil, fmt.Errorf("%w: %q, send application/json", errUnsupportedMediaType, ct)
		}
	}
	if coding := unsupportedContentCoding(r.Header); coding != "" {
		// RFC 9110 §15.5.16: a 415 for a content coding says which codings would do.
		w.Header().Set("Accept-Encoding", "identity")
		return nil, fmt.Errorf("%w: Content-Encoding %q, send the body uncompressed", errUnsupportedMediaType, coding)
	}
	if r.ContentLength > maxBytes {
		// Refused unread: reading would cost the cap in transfer first, and would tell a
		// client waiting on "Expect: 100-continue" to send the whole body.
		return nil, &http.MaxBytesError{Limit: maxBytes}
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, maxBytes), r.ContentLength, maxBytes)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, tooBig
		}
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			return nil, errBodyTimeout
		}
		// The error names the connection's addresses: the caller knows them, the detail need not.
		return nil, badRequest("unreadable_body", "", "the connection failed before the body ended")
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
	if !decodeExecRequestFast(body, &req) {
		req = execRequest{}
		if err := decodeExecRequestSlow(body, &req); err != nil {
			return nil, err
		}
	}
	if field, number, found := outOfRangeNumber(body); found {
		return nil, numberRangeError(field, number)
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
	if !displayable(req.AgentID) {
		return nil, badRequest("invalid_agent_id", "agentId", "agentId contains a control, formatting or invisible character")
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

// readAll is io.ReadAll with a first buffer sized from the declared length: a typical body
// arrives in one allocation instead of growing from 512 bytes. The declaration is the
// client's word, so it sizes at most readAllUpFront bytes before any arrive; past that the
// buffer grows with what is actually read.
func readAll(r io.Reader, declared, limit int64) ([]byte, error) {
	size := int64(512)
	if declared > 0 {
		size = min(declared, limit, readAllUpFront) + 1 // room to read the EOF without growing
	}
	b := make([]byte, 0, size)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// unsupportedContentCoding returns the first content coding of the request other than
// identity, or "": the body is parsed as it arrives, so a compressed one would reach the JSON
// parser as binary and be refused for the wrong reason.
func unsupportedContentCoding(h http.Header) string {
	for _, v := range h.Values("Content-Encoding") {
		for coding := range strings.SplitSeq(v, ",") {
			if c := strings.TrimSpace(coding); c != "" && !strings.EqualFold(c, "identity") {
				return c
			}
		}
	}
	return ""
}

// decodeExecRequestSlow decodes what the fast path declines, with the same rules: member
// names match exactly as the seed spells them (encoding/json would also take "TOOL" or "Tool"
// for tool, so that one body could name two calls), unknown members are ignored, and the
// body must be an I-JSON object. Every refusal names the problem and, when there is one, the
// field.
func decodeExecRequestSlow(body []byte, req *execRequest) error {
	// Syntax first, so that a malformed body is reported as malformed whatever else is wrong
	// with it. Duplicate member names let two parsers read one body differently, and have no
	// canonical form for the proof: jsontext refuses them, and escaped lone surrogates.
	if err := jsonv2.Unmarshal(body, new(jsontext.Value)); err != nil {
		var synErr *jsontext.SyntacticError
		switch {
		case errors.As(err, &synErr) && synErr.Err == jsontext.ErrDuplicateName:
			field := pointerField(synErr.JSONPointer)
			return badRequest("invalid_json", field, "the body is not I-JSON (RFC 7493): the member name %s appears twice", field)
		case errors.As(err, &synErr):
			return badRequest("invalid_json", pointerField(synErr.JSONPointer), "malformed JSON at byte %d: %v", synErr.ByteOffset, synErr.Err)
		default:
			return badRequest("invalid_json", "", "malformed JSON: %v", err)
		}
	}
	if c := body[jsonSkipSpace(body, 0)]; c != '{' {
		return badRequest("invalid_field_type", "", "the request body must be a JSON object, not %s", jsonValueKind(c))
	}
	if err := jsonv2.Unmarshal(body, req); err != nil {
		var semErr *jsonv2.SemanticError
		if !errors.As(err, &semErr) {
			return badRequest("invalid_json", "", "malformed JSON: %v", err)
		}
		field := pointerField(semErr.JSONPointer)
		if errors.Is(semErr.Err, strconv.ErrRange) {
			return numberRangeError(field, string(semErr.JSONValue))
		}
		want := "of another type"
		if semErr.GoType != nil {
			want = jsonKind(semErr.GoType.Kind().String())
		}
		return badRequest("invalid_field_type", field, "%s must be %s, not %s", field, want, jsonValueKind(byte(semErr.JSONKind)))
	}
	return nil
}

// decodeExecRequestFast decodes body into req exactly as decodeExecRequestSlow does, for the
// bodies clients send: I-JSON (checked in one pass), an object with only the seed's field
// names, spelled as the seed spells them, each of the type the seed gives it. It reports false
// for anything else, and the caller takes the slow path and its exact errors: unknown or
// mis-cased names (which both paths ignore), escaped names, wrong types, duplicate names,
// malformed JSON. Reflection-based decoding cost more than the rest of decoding.
func decodeExecRequestFast(body []byte, req *execRequest) bool {
	if !jsontext.Value(body).IsValid() {
		return false
	}
	return decodeMembers(body, func(name, v []byte) bool {
		switch string(name) {
		case "agentId":
			return decodeString(v, &req.AgentID)
		case "tool":
			switch v[0] {
			case 'n':
				req.Tool = nil
				return true
			case '{':
				req.Tool = &toolSpec{}
				return decodeToolSpec(v, req.Tool)
			}
		case "dryRun":
			switch v[0] {
			case 'n':
				req.DryRun = nil
				return true
			case 't', 'f':
				b := v[0] == 't'
				req.DryRun = &b
				return true
			}
		case "context":
			req.Context = v
			return true
		}
		return false
	})
}

func decodeToolSpec(obj []byte, t *toolSpec) bool {
	return decodeMembers(obj, func(name, v []byte) bool {
		switch string(name) {
		case "name":
			return decodeString(v, &t.Name)
		case "args":
			t.Args = v
			return true
		case "timeout_s":
			if v[0] == 'n' {
				t.TimeoutS = nil
				return true
			}
			if v[0] != '-' && (v[0] < '0' || v[0] > '9') {
				return false
			}
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				return false // out of range: encoding/json's type error says so
			}
			t.TimeoutS = &f
			return true
		}
		return false
	})
}

// decodeMembers calls member for each member of the object at the start of b (valid JSON,
// possibly after whitespace) with its name and its value's bytes, until member returns
// false. It reports false if b is not an object or member refused one.
func decodeMembers(b []byte, member func(name, v []byte) bool) bool {
	i := jsonSkipSpace(b, 0)
	if b[i] != '{' {
		return false
	}
	for i = jsonSkipSpace(b, i+1); b[i] != '}'; {
		nameEnd := jsonskip.StringEnd(b, i)
		name := b[i+1 : nameEnd-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			return false // an escaped name is not one the seed spells
		}
		start := jsonSkipSpace(b, jsonSkipSpace(b, nameEnd)+1) // past the colon
		end := jsonskip.ValueEnd(b, start)
		// Capped, so that appending to one raw value can never write over the next.
		if !member(name, b[start:end:end]) {
			return false
		}
		if i = jsonSkipSpace(b, end); b[i] == ',' {
			i = jsonSkipSpace(b, i+1)
		}
	}
	return true
}

// decodeString sets *dst from a JSON string (valid I-JSON) and leaves it alone for null, as
// json.Unmarshal does; any other value is refused.
func decodeString(v []byte, dst *string) bool {
	switch v[0] {
	case 'n':
		return true
	case '"':
		if bytes.IndexByte(v, '\\') < 0 {
			*dst = string(v[1 : len(v)-1])
			return true
		}
		s, err := jsontext.AppendUnquote(nil, v)
		*dst = string(s)
		return err == nil
	}
	return false
}

func jsonSkipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// ValidAgentID reports whether id passes the rules a request's agentId is held to: at most
// 256 bytes of UTF-8 with no control, formatting or invisible character. The internal agent id
// (ACHILLES_AGENT_ID), recorded in place of a missing one, is checked against it too.
func ValidAgentID(id string) bool {
	return len(id) <= maxAgentIDLen && utf8.ValidString(id) && displayable(id)
}

// displayable reports whether s has no control characters and no formatting or invisible ones
// (bidirectional controls, zero-width spaces, soft hyphens, variation selectors): an agent id
// is shown in logs, records and policies, where any of them could make one id read as another.
func displayable(s string) bool {
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && (unicode.IsControl(r) ||
			unicode.In(r, unicode.Cf, unicode.Bidi_Control, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point))) {
			return false
		}
	}
	return true
}

// jsonValueKind names the kind of the JSON value that starts with c (or of a jsontext.Kind).
func jsonValueKind(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// pointerField turns a JSON pointer ("/tool/args/items/3") into the dotted field name the
// API uses ("tool.args.items.3"), as argsField does for the tool's own errors.
func pointerField(p jsontext.Pointer) string {
	var b strings.Builder
	first := true
	for tok := range p.Tokens() {
		if !first {
			b.WriteByte('.')
		}
		b.WriteString(tok)
		first = false
	}
	return b.String()
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

// numberRangeError refuses a number a double cannot hold, at field.
func numberRangeError(field, number string) *requestError {
	if len(number) > 40 {
		number = number[:20] + "..." + number[len(number)-10:]
	}
	return badRequest("invalid_json", field, "the body is not I-JSON (RFC 7493): the number %s at %s is beyond the range of an IEEE 754 double", number, field)
}
