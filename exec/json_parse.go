package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/secureexec/secureexec/internal/jsonskip"
)

// JSONParseConfig bounds json_parse. Zero fields take the defaults in DefaultJSONParseConfig.
type JSONParseConfig struct {
	MaxBytes     int // largest text (or data) accepted, in bytes
	DefaultDepth int // nesting limit when the call names none
	MaxDepth     int // largest maxDepth a call may ask for
}

// DefaultJSONParseConfig is the configuration NewJSONParse uses for zero fields. 256 KiB keeps
// the output (value plus key list, each at most the input's size) under the runner's 1 MiB cap.
var DefaultJSONParseConfig = JSONParseConfig{
	MaxBytes:     256 << 10,
	DefaultDepth: 64,
	MaxDepth:     256,
}

// JSONParse is the json_parse tool: it parses a JSON text (or inspects a JSON value passed as
// data) and describes it.
//
// Parsing is strict, to the profile the rest of the gateway can store (RFC 8259 plus I-JSON,
// RFC 7493): trailing data, duplicate object keys (detected per object with a set, so cheaply),
// numbers outside the float64 range and U+0000 in any string (PostgreSQL jsonb refuses it) make
// the text invalid. A lone UTF-16 surrogate escape is replaced by U+FFFD, as encoding/json does.
//
// A text that is not valid is a successful call with valid:false and an error naming the code,
// byte offset, line and column: the tool's job is to answer "is this valid?". Limits — a text
// over the size cap or nesting deeper than maxDepth — are ToolErrors (input_too_large,
// depth_exceeded), because the tool declined to answer.
type JSONParse struct {
	cfg JSONParseConfig
}

// NewJSONParse returns the json_parse tool; zero config fields take the defaults.
func NewJSONParse(cfg ...JSONParseConfig) *JSONParse {
	c := DefaultJSONParseConfig
	if len(cfg) > 0 {
		if cfg[0].MaxBytes > 0 {
			c.MaxBytes = cfg[0].MaxBytes
		}
		if cfg[0].DefaultDepth > 0 {
			c.DefaultDepth = cfg[0].DefaultDepth
		}
		if cfg[0].MaxDepth > 0 {
			c.MaxDepth = cfg[0].MaxDepth
		}
	}
	if c.DefaultDepth > c.MaxDepth {
		c.DefaultDepth = c.MaxDepth
	}
	return &JSONParse{cfg: c}
}

// JSONParseOutput is json_parse's result. Type, Value and Depth are set only when Valid.
type JSONParseOutput struct {
	Valid  bool            `json:"valid"`
	Type   string          `json:"type,omitempty"`   // object, array, string, number, boolean or null
	Value  json.RawMessage `json:"value,omitempty"`  // the parsed value, re-encoded compactly
	Keys   []string        `json:"keys,omitzero"`    // top-level keys of an object, sorted
	Length *int            `json:"length,omitempty"` // elements of an array, characters (code points) of a string
	Depth  *int            `json:"depth,omitempty"`  // nesting of arrays and objects: 0 for a scalar
	Bytes  int             `json:"bytes"`            // size of the JSON text examined
	Error  *JSONParseError `json:"error,omitempty"`
}

// JSONParseError says why a text is not valid and where.
type JSONParseError struct {
	Code    string `json:"code"` // syntax_error, trailing_data, duplicate_key, number_out_of_range, nul_character
	Message string `json:"message"`
	Offset  int    `json:"offset"` // byte offset where the problem was detected
	Line    int    `json:"line"`   // 1-based
	Column  int    `json:"column"` // 1-based, in characters
}

type jsonparseArgs struct {
	Data     json.RawMessage `json:"data"`
	Text     *string         `json:"text"`
	MaxDepth *int            `json:"maxDepth"`
}

// Name implements Tool.
func (*JSONParse) Name() string { return "json_parse" }

// Description implements Tool.
func (*JSONParse) Description() string {
	return "Parse and validate a JSON payload strictly (no trailing data, no duplicate keys) and describe it"
}

var jsonparseSchema = json.RawMessage(`{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "data": {"description": "any JSON value, inspected as given",
      "maxLength": 262144, "maxItems": 100000, "maxProperties": 10000},
    "text": {"type": "string", "maxLength": 262144, "description": "a string holding JSON text, parsed strictly"},
    "maxDepth": {"type": "integer", "minimum": 1, "maximum": 256, "description": "nesting limit, default 64"}
  },
  "oneOf": [{"required": ["data"]}, {"required": ["text"]}]
}`)

// Schema implements Tool.
func (*JSONParse) Schema() json.RawMessage { return jsonparseSchema }

// Simulate parses for real: json_parse is a pure computation with no side effect, so the dry
// run returns the actual answer, under exactly the bounds of Run.
func (j *JSONParse) Simulate(ctx context.Context, args json.RawMessage) (any, error) {
	return j.parse(ctx, args)
}

// Run parses the text or inspects the data.
func (j *JSONParse) Run(ctx context.Context, args json.RawMessage) (any, error) {
	return j.parse(ctx, args)
}

func (j *JSONParse) parse(ctx context.Context, raw json.RawMessage) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("json_parse: %w", err)
	}
	a, ok := jsonparseArgsFast(raw)
	if !ok {
		var v jsonparseArgs
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, Failf("invalid_args", "args do not decode: %v", err)
		}
		a = jsonparseCall{data: v.Data, hasData: v.Data != nil, hasText: v.Text != nil, maxDepth: v.MaxDepth}
		if v.Text != nil {
			a.text = []byte(*v.Text)
		}
	}
	var input []byte
	switch {
	case a.hasText && !a.hasData:
		input = a.text
	case a.hasData && !a.hasText:
		input = a.data
	default:
		return nil, Failf("invalid_args", "give exactly one of data and text")
	}
	if len(input) > j.cfg.MaxBytes {
		return nil, Failf("input_too_large", "the JSON text is %d bytes, the limit is %d", len(input), j.cfg.MaxBytes)
	}
	maxDepth := j.cfg.DefaultDepth
	if a.maxDepth != nil {
		if *a.maxDepth < 1 || *a.maxDepth > j.cfg.MaxDepth {
			return nil, Failf("invalid_args", "maxDepth must be between 1 and %d", j.cfg.MaxDepth)
		}
		maxDepth = *a.maxDepth
	}
	return jsonparseText(ctx, input, maxDepth)
}

// jsonparseCall is a decoded jsonparseArgs; text is the decoded string.
type jsonparseCall struct {
	data, text       []byte
	hasData, hasText bool
	maxDepth         *int
}

// jsonparseArgsFast decodes args the way json.Unmarshal into jsonparseArgs does, for the
// shape the schema admits: an I-JSON object (checked in one pass) whose names are exactly
// data, text and maxDepth, text a string or null, maxDepth an integer literal or null. It
// reports false for anything else (other or mis-cased names, values of another type,
// malformed JSON, duplicate names, invalid UTF-8), which then takes json.Unmarshal and its
// errors. encoding/json's reflection cost more than the parse itself.
func jsonparseArgsFast(raw []byte) (a jsonparseCall, ok bool) {
	if !jsontext.Value(raw).IsValid() {
		return a, false
	}
	i := jsonparseSkipSpace(raw, 0)
	if raw[i] != '{' {
		return a, false
	}
	for i = jsonparseSkipSpace(raw, i+1); raw[i] != '}'; {
		nameEnd := jsonskip.StringEnd(raw, i)
		name := raw[i:nameEnd]
		start := jsonparseSkipSpace(raw, jsonparseSkipSpace(raw, nameEnd)+1) // past the colon
		end := jsonskip.ValueEnd(raw, start)
		v := raw[start:end:end]
		switch string(name) {
		case `"data"`:
			a.data, a.hasData = v, true
		case `"text"`:
			switch v[0] {
			case 'n': // absent, as json.Unmarshal leaves a nil pointer
			case '"':
				a.text, a.hasText = jsonparseUnquote(nil, v[1:len(v)-1]), true
			default:
				return a, false
			}
		case `"maxDepth"`:
			if v[0] == 'n' {
				break
			}
			if v[0] != '-' && !jsonparseIsDigit(v[0]) || bytes.ContainsAny(v, ".eE") {
				return a, false
			}
			n, err := strconv.Atoi(string(v))
			if err != nil {
				return a, false
			}
			a.maxDepth = &n
		default:
			return a, false
		}
		if i = jsonparseSkipSpace(raw, end); raw[i] == ',' {
			i = jsonparseSkipSpace(raw, i+1)
		}
	}
	return a, true
}

// jsonparseText parses input strictly and describes it. The returned error is a ToolError for
// a limit, or ctx's error; an invalid text is a JSONParseOutput with Valid false.
//
// It is a single pass over the bytes that accepts exactly what encoding/json accepts and
// reproduces what json_parse always answered: the value re-encoded as encoding/json's Encoder
// (without HTML escaping) writes the decoded text, invalid UTF-8 and lone surrogates turned
// into U+FFFD as encoding/json decodes them, and encoding/json's own words for a syntax error.
// A token-by-token encoding/json.Decoder walk cost several times as much.
func jsonparseText(ctx context.Context, input []byte, maxDepth int) (JSONParseOutput, error) {
	p := &jsonparseParser{ctx: ctx, in: input, maxDepth: maxDepth}
	p.out = make([]byte, 0, len(input)+2)
	out := JSONParseOutput{Bytes: len(input)}

	var err error
	start := jsonparseSkipSpace(input, 0)
	if start == len(input) {
		err = p.fail("syntax_error", len(input), "the input is empty")
	} else {
		var end int
		end, err = p.value(start, 0, true)
		// Anything but whitespace after the first value is trailing data.
		if err == nil && jsonparseSkipSpace(input, end) < len(input) {
			err = p.fail("trailing_data", end, "unexpected data after the JSON value")
		}
	}
	if err != nil {
		// The parser returns its own errors unwrapped; anything else is a limit or ctx's.
		if perr, ok := err.(*jsonparseInvalid); ok {
			out.Error = perr.detail(input)
			return out, nil
		}
		return JSONParseOutput{}, err
	}
	out.Valid = true
	out.Type = p.topType
	out.Value = p.out
	depth := p.maxSeen
	out.Depth = &depth
	switch p.topType {
	case "object":
		sort.Strings(p.topKeys)
		out.Keys = p.topKeys
		if out.Keys == nil {
			out.Keys = []string{}
		}
	case "array", "string":
		n := p.topLen
		out.Length = &n
	}
	return out, nil
}

// jsonparseInvalid is an error that makes the text invalid (as opposed to a limit).
type jsonparseInvalid struct {
	code, msg string
	offset    int
}

func (e *jsonparseInvalid) Error() string { return e.code + ": " + e.msg }

func (e *jsonparseInvalid) detail(input []byte) *JSONParseError {
	off := min(max(e.offset, 0), len(input))
	line, col := 1, 1
	for _, r := range string(input[:off]) {
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return &JSONParseError{Code: e.code, Message: e.msg, Offset: off, Line: line, Column: col}
}
