package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
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
	var a jsonparseArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, Failf("invalid_args", "args do not decode: %v", err)
	}
	var input []byte
	switch {
	case a.Text != nil && a.Data == nil:
		input = []byte(*a.Text)
	case a.Data != nil && a.Text == nil:
		input = a.Data
	default:
		return nil, Failf("invalid_args", "give exactly one of data and text")
	}
	if len(input) > j.cfg.MaxBytes {
		return nil, Failf("input_too_large", "the JSON text is %d bytes, the limit is %d", len(input), j.cfg.MaxBytes)
	}
	maxDepth := j.cfg.DefaultDepth
	if a.MaxDepth != nil {
		if *a.MaxDepth < 1 || *a.MaxDepth > j.cfg.MaxDepth {
			return nil, Failf("invalid_args", "maxDepth must be between 1 and %d", j.cfg.MaxDepth)
		}
		maxDepth = *a.MaxDepth
	}
	return jsonparseText(ctx, input, maxDepth)
}

// jsonparseText parses input strictly and describes it. The returned error is a ToolError for
// a limit, or ctx's error; an invalid text is a JSONParseOutput with Valid false.
func jsonparseText(ctx context.Context, input []byte, maxDepth int) (JSONParseOutput, error) {
	p := &jsonparseParser{ctx: ctx, input: input, maxDepth: maxDepth}
	p.dec = json.NewDecoder(bytes.NewReader(input))
	p.dec.UseNumber()
	p.enc = json.NewEncoder(&p.scratch)
	p.enc.SetEscapeHTML(false)
	out := JSONParseOutput{Bytes: len(input)}

	tok, err := p.next()
	if err == nil {
		err = p.value(tok, 0, true)
	}
	if err == nil {
		// Anything but the end of input after the first value is trailing data.
		at := int(p.dec.InputOffset())
		if _, terr := p.dec.Token(); terr != io.EOF {
			err = p.fail("trailing_data", at, "unexpected data after the JSON value")
		}
	}
	var perr *jsonparseInvalid
	switch {
	case errors.As(err, &perr):
		out.Error = perr.detail(input)
		return out, nil
	case err != nil:
		return JSONParseOutput{}, err
	}
	out.Valid = true
	out.Type = p.topType
	out.Value = append(json.RawMessage(nil), p.out.Bytes()...)
	out.Depth = &p.maxSeen
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

type jsonparseParser struct {
	ctx      context.Context
	input    []byte
	dec      *json.Decoder
	enc      *json.Encoder
	scratch  bytes.Buffer
	out      bytes.Buffer
	maxDepth int
	maxSeen  int
	tokens   int
	topType  string
	topKeys  []string
	topLen   int
}

func (p *jsonparseParser) fail(code string, offset int, format string, args ...any) error {
	return &jsonparseInvalid{code: code, msg: fmt.Sprintf(format, args...), offset: offset}
}

// next reads one token, turning the decoder's errors into invalid-text errors with an offset.
func (p *jsonparseParser) next() (json.Token, error) {
	p.tokens++
	if p.tokens&4095 == 0 {
		if err := p.ctx.Err(); err != nil {
			return nil, fmt.Errorf("json_parse: %w", err)
		}
	}
	at := int(p.dec.InputOffset())
	tok, err := p.dec.Token()
	if err == nil {
		return tok, nil
	}
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return nil, p.syntaxError(se)
	case err == io.EOF && p.tokens == 1:
		return nil, p.fail("syntax_error", len(p.input), "the input is empty")
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return nil, p.fail("syntax_error", len(p.input), "unexpected end of input")
	default:
		return nil, p.fail("syntax_error", at, "%s", err.Error())
	}
}

// syntaxError locates a syntax error. The decoder's offsets are relative to the token it was
// reading for scalars and absolute otherwise, so the whole input is checked once more by
// json.Unmarshal, whose offset is always absolute ("after reading Offset bytes").
func (p *jsonparseParser) syntaxError(se *json.SyntaxError) error {
	var ce *json.SyntaxError
	var sink json.RawMessage
	if err := json.Unmarshal(p.input, &sink); errors.As(err, &ce) {
		se = ce
	}
	return p.fail("syntax_error", int(se.Offset)-1, "%s", se.Error())
}

// value consumes the value starting with tok and writes its compact encoding to p.out.
// Recursion is bounded by maxDepth (at most 256).
func (p *jsonparseParser) value(tok json.Token, depth int, top bool) error {
	switch t := tok.(type) {
	case json.Delim:
		if depth+1 > p.maxDepth {
			return Failf("depth_exceeded", "the JSON nests deeper than %d levels (at byte %d)", p.maxDepth, p.dec.InputOffset())
		}
		p.maxSeen = max(p.maxSeen, depth+1)
		switch t {
		case '{':
			if top {
				p.topType = "object"
			}
			return p.object(depth+1, top)
		case '[':
			if top {
				p.topType = "array"
			}
			return p.array(depth+1, top)
		default:
			return p.fail("syntax_error", int(p.dec.InputOffset())-1, "unexpected %q", rune(t))
		}
	case string:
		if top {
			p.topType = "string"
			p.topLen = utf8.RuneCountInString(t)
		}
		return p.str(t)
	case json.Number:
		if top {
			p.topType = "number"
		}
		f, err := strconv.ParseFloat(t.String(), 64)
		if err != nil || math.IsInf(f, 0) {
			return p.fail("number_out_of_range", int(p.dec.InputOffset())-len(t), "the number %.40s is outside the range of a 64-bit float", t.String())
		}
		p.out.WriteString(t.String())
		return nil
	case bool:
		if top {
			p.topType = "boolean"
		}
		p.out.WriteString(strconv.FormatBool(t))
		return nil
	case nil:
		if top {
			p.topType = "null"
		}
		p.out.WriteString("null")
		return nil
	default:
		return p.fail("syntax_error", int(p.dec.InputOffset()), "unexpected token")
	}
}

func (p *jsonparseParser) object(depth int, top bool) error {
	p.out.WriteByte('{')
	seen := map[string]struct{}{}
	for i := 0; ; i++ {
		tok, err := p.next()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok && d == '}' {
			p.out.WriteByte('}')
			return nil
		}
		key, ok := tok.(string)
		if !ok {
			return p.fail("syntax_error", int(p.dec.InputOffset()), "object key is not a string")
		}
		if _, dup := seen[key]; dup {
			return p.fail("duplicate_key", int(p.dec.InputOffset()), "duplicate object key %q", jsonparseClip(key))
		}
		seen[key] = struct{}{}
		if top {
			p.topKeys = append(p.topKeys, key)
		}
		if i > 0 {
			p.out.WriteByte(',')
		}
		if err := p.str(key); err != nil {
			return err
		}
		p.out.WriteByte(':')
		val, err := p.next()
		if err != nil {
			return err
		}
		if err := p.value(val, depth, false); err != nil {
			return err
		}
	}
}

func (p *jsonparseParser) array(depth int, top bool) error {
	p.out.WriteByte('[')
	for i := 0; ; i++ {
		tok, err := p.next()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok && d == ']' {
			p.out.WriteByte(']')
			if top {
				p.topLen = i
			}
			return nil
		}
		if i > 0 {
			p.out.WriteByte(',')
		}
		if err := p.value(tok, depth, false); err != nil {
			return err
		}
	}
}

// str writes s as a JSON string, refusing U+0000, which PostgreSQL jsonb cannot store.
func (p *jsonparseParser) str(s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return p.fail("nul_character", int(p.dec.InputOffset()), "a string contains U+0000, which the audit store (PostgreSQL jsonb) cannot hold")
	}
	p.scratch.Reset()
	if err := p.enc.Encode(s); err != nil {
		return p.fail("syntax_error", int(p.dec.InputOffset()), "%v", err)
	}
	p.out.Write(bytes.TrimSuffix(p.scratch.Bytes(), []byte("\n")))
	return nil
}

// jsonparseClip shortens s for an error message, on a rune boundary.
func jsonparseClip(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
