package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/secureexec/secureexec/internal/jsonskip"
	"github.com/secureexec/secureexec/internal/jsonstr"
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

// jsonparseSpan is where one member name of an open object sits, encoded, in the output.
type jsonparseSpan struct{ start, end int }

// jsonparseLinearKeys is how many names an object may have before duplicates are looked up
// in a map instead of by comparing against every earlier name.
const jsonparseLinearKeys = 16

type jsonparseParser struct {
	ctx      context.Context
	in       []byte
	out      []byte          // the compact encoding of what has been read so far
	keys     []jsonparseSpan // names of the open objects, innermost last
	scratch  []byte          // a decoded string, for the strings that need escaping work
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

// tick counts a token and looks at ctx every 4096 of them, so that a large text notices a
// cancellation while it is being read.
func (p *jsonparseParser) tick() error {
	p.tokens++
	if p.tokens&4095 == 0 {
		if err := p.ctx.Err(); err != nil {
			return fmt.Errorf("json_parse: %w", err)
		}
	}
	return nil
}

// unexpectedEnd is the error for a text that stops before its value is complete.
func (p *jsonparseParser) unexpectedEnd() error {
	return p.fail("syntax_error", len(p.in), "unexpected end of input")
}

// syntaxError reports the byte at offset as invalid. The message and offset are
// encoding/json's, which json_parse has always quoted; its scanner stops at the same byte.
func (p *jsonparseParser) syntaxError(offset int) error {
	var se *json.SyntaxError
	var sink json.RawMessage
	if err := json.Unmarshal(p.in, &sink); errors.As(err, &se) {
		return p.fail("syntax_error", int(se.Offset)-1, "%s", se.Error())
	}
	// Unreachable while both grammars agree; the fuzz tests hold them to it.
	return p.fail("syntax_error", offset, "invalid character %q", rune(p.in[offset]))
}

// jsonparseSkipSpace returns the offset of the first byte at or after i that is not JSON
// whitespace.
func jsonparseSkipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// value reads the value starting at in[i] (not whitespace), appends its compact encoding to
// p.out and returns the offset just past it. depth is the nesting of the enclosing value;
// recursion is bounded by maxDepth (at most 256).
func (p *jsonparseParser) value(i, depth int, top bool) (int, error) {
	if err := p.tick(); err != nil {
		return 0, err
	}
	if i >= len(p.in) {
		return 0, p.unexpectedEnd()
	}
	switch c := p.in[i]; c {
	case '{', '[':
		if depth+1 > p.maxDepth {
			return 0, Failf("depth_exceeded", "the JSON nests deeper than %d levels (at byte %d)", p.maxDepth, i+1)
		}
		p.maxSeen = max(p.maxSeen, depth+1)
		if c == '{' {
			if top {
				p.topType = "object"
			}
			return p.object(i, depth+1, top)
		}
		if top {
			p.topType = "array"
		}
		return p.array(i, depth+1, top)
	case '"':
		end, nul, err := p.str(i)
		if err != nil {
			return 0, err
		}
		if nul {
			return 0, p.nulError(end)
		}
		if top {
			p.topType = "string"
			p.topLen = utf8.RuneCount(p.decoded(p.in[i+1 : end-1]))
		}
		return end, nil
	case 't':
		return p.literal(i, "true", "boolean", top)
	case 'f':
		return p.literal(i, "false", "boolean", top)
	case 'n':
		return p.literal(i, "null", "null", top)
	default:
		if c == '-' || ('0' <= c && c <= '9') {
			return p.number(i, top)
		}
		return 0, p.syntaxError(i)
	}
}

func (p *jsonparseParser) nulError(end int) error {
	return p.fail("nul_character", end, "a string contains U+0000, which the audit store (PostgreSQL jsonb) cannot hold")
}

func (p *jsonparseParser) literal(i int, lit, typ string, top bool) (int, error) {
	for k := 0; k < len(lit); k++ {
		switch {
		case i+k >= len(p.in):
			return 0, p.unexpectedEnd()
		case p.in[i+k] != lit[k]:
			return 0, p.syntaxError(i + k)
		}
	}
	if top {
		p.topType = typ
	}
	p.out = append(p.out, lit...)
	return i + len(lit), nil
}

// number reads a number (RFC 8259 grammar) and refuses one outside the float64 range.
func (p *jsonparseParser) number(i int, top bool) (int, error) {
	in, start := p.in, i
	if in[i] == '-' {
		i++
	}
	switch {
	case i >= len(in):
		return 0, p.unexpectedEnd()
	case in[i] == '0':
		i++
	case '1' <= in[i] && in[i] <= '9':
		i = jsonparseDigits(in, i+1)
	default:
		return 0, p.syntaxError(i)
	}
	exponent := false
	if i < len(in) && in[i] == '.' {
		i++
		if i >= len(in) {
			return 0, p.unexpectedEnd()
		}
		if !jsonparseIsDigit(in[i]) {
			return 0, p.syntaxError(i)
		}
		i = jsonparseDigits(in, i+1)
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		exponent = true
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		if i >= len(in) {
			return 0, p.unexpectedEnd()
		}
		if !jsonparseIsDigit(in[i]) {
			return 0, p.syntaxError(i)
		}
		i = jsonparseDigits(in, i+1)
	}
	num := in[start:i]
	// Without an exponent, fewer than 300 characters cannot reach 1.8e308.
	if exponent || len(num) >= 300 {
		f, err := strconv.ParseFloat(string(num), 64)
		if err != nil || math.IsInf(f, 0) {
			return 0, p.fail("number_out_of_range", start, "the number %.40s is outside the range of a 64-bit float", string(num))
		}
	}
	if top {
		p.topType = "number"
	}
	p.out = append(p.out, num...)
	return i, nil
}

func jsonparseIsDigit(c byte) bool { return '0' <= c && c <= '9' }

func jsonparseDigits(b []byte, i int) int {
	for i < len(b) && jsonparseIsDigit(b[i]) {
		i++
	}
	return i
}

func (p *jsonparseParser) object(i, depth int, top bool) (int, error) {
	p.out = append(p.out, '{')
	if p.keys == nil {
		p.keys = make([]jsonparseSpan, 0, 8)
	}
	base := len(p.keys)
	var seen map[string]struct{} // built once the object outgrows jsonparseLinearKeys
	i = jsonparseSkipSpace(p.in, i+1)
	for n := 0; ; n++ {
		if i >= len(p.in) {
			return 0, p.unexpectedEnd()
		}
		if n == 0 && p.in[i] == '}' {
			break
		}
		if err := p.tick(); err != nil {
			return 0, err
		}
		if p.in[i] != '"' {
			return 0, p.syntaxError(i)
		}
		if n > 0 {
			p.out = append(p.out, ',')
		}
		start := len(p.out)
		end, nul, err := p.str(i)
		if err != nil {
			return 0, err
		}
		// Names are compared encoded: encoding is one-to-one on the decoded text.
		name := p.out[start:]
		dup := false
		if seen == nil {
			for _, k := range p.keys[base:] {
				if string(p.out[k.start:k.end]) == string(name) {
					dup = true
					break
				}
			}
			if !dup && n >= jsonparseLinearKeys {
				seen = make(map[string]struct{}, 2*jsonparseLinearKeys)
				for _, k := range p.keys[base:] {
					seen[string(p.out[k.start:k.end])] = struct{}{}
				}
				seen[string(name)] = struct{}{}
			}
		} else if _, dup = seen[string(name)]; !dup {
			seen[string(name)] = struct{}{}
		}
		if dup {
			return 0, p.fail("duplicate_key", end, "duplicate object key %q", jsonparseClip(string(p.decoded(p.in[i+1:end-1]))))
		}
		if nul {
			return 0, p.nulError(end)
		}
		if seen == nil {
			p.keys = append(p.keys, jsonparseSpan{start, len(p.out)})
		}
		if top {
			p.topKeys = append(p.topKeys, string(p.decoded(p.in[i+1:end-1])))
		}
		p.out = append(p.out, ':')
		i = jsonparseSkipSpace(p.in, end)
		if i >= len(p.in) {
			return 0, p.unexpectedEnd()
		}
		if p.in[i] != ':' {
			return 0, p.syntaxError(i)
		}
		if i, err = p.value(jsonparseSkipSpace(p.in, i+1), depth, false); err != nil {
			return 0, err
		}
		i = jsonparseSkipSpace(p.in, i)
		if i >= len(p.in) {
			return 0, p.unexpectedEnd()
		}
		if p.in[i] == '}' {
			break
		}
		if p.in[i] != ',' {
			return 0, p.syntaxError(i)
		}
		i = jsonparseSkipSpace(p.in, i+1)
	}
	if err := p.tick(); err != nil {
		return 0, err
	}
	p.keys = p.keys[:base]
	p.out = append(p.out, '}')
	return i + 1, nil
}

func (p *jsonparseParser) array(i, depth int, top bool) (int, error) {
	p.out = append(p.out, '[')
	i = jsonparseSkipSpace(p.in, i+1)
	n := 0
	for ; ; n++ {
		if i >= len(p.in) {
			return 0, p.unexpectedEnd()
		}
		if n == 0 && p.in[i] == ']' {
			break
		}
		if n > 0 {
			p.out = append(p.out, ',')
		}
		var err error
		if i, err = p.value(i, depth, false); err != nil {
			return 0, err
		}
		i = jsonparseSkipSpace(p.in, i)
		if i >= len(p.in) {
			return 0, p.unexpectedEnd()
		}
		if p.in[i] == ']' {
			n++
			break
		}
		if p.in[i] != ',' {
			return 0, p.syntaxError(i)
		}
		i = jsonparseSkipSpace(p.in, i+1)
	}
	if err := p.tick(); err != nil {
		return 0, err
	}
	if top {
		p.topLen = n
	}
	p.out = append(p.out, ']')
	return i + 1, nil
}

// str reads the string starting at the quote in[i], appends it to p.out as encoding/json's
// Encoder (without HTML escaping) writes the decoded text, and returns the offset just past
// the closing quote and whether the text holds U+0000.
func (p *jsonparseParser) str(i int) (end int, nul bool, err error) {
	in := p.in
	plain := true // no escape and no byte outside ASCII: the text is its own encoding
	j := i + 1
	for {
		if j >= len(in) {
			return 0, false, p.unexpectedEnd()
		}
		c := in[j]
		if c == '"' {
			break
		}
		switch {
		case c == '\\':
			plain = false
			j++
			if j >= len(in) {
				return 0, false, p.unexpectedEnd()
			}
			switch in[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j++
			case 'u':
				j++
				for k := 0; k < 4; k++ {
					if j >= len(in) {
						return 0, false, p.unexpectedEnd()
					}
					if !jsonparseIsHex(in[j]) {
						return 0, false, p.syntaxError(j)
					}
					j++
				}
			default:
				return 0, false, p.syntaxError(j)
			}
		case c < ' ':
			return 0, false, p.syntaxError(j)
		default:
			if c >= utf8.RuneSelf {
				plain = false
			}
			j++
		}
	}
	end = j + 1
	if plain {
		p.out = append(p.out, in[i:end]...)
		return end, false, nil
	}
	text := p.decoded(in[i+1 : j])
	p.out = jsonparseAppendString(p.out, text)
	return end, bytes.IndexByte(text, 0) >= 0, nil
}

func jsonparseIsHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// decoded is jsonparseUnquote into the parser's scratch buffer, valid until the next call.
func (p *jsonparseParser) decoded(s []byte) []byte {
	p.scratch = jsonparseUnquote(p.scratch[:0], s)
	return p.scratch
}

// jsonparseUnquote appends the text of a well-formed string body (between its quotes) as
// encoding/json decodes it: escapes resolved, a lone surrogate escape and each byte of
// invalid UTF-8 replaced by U+FFFD.
func jsonparseUnquote(b, s []byte) []byte {
	for r := 0; r < len(s); {
		switch c := s[r]; {
		case c == '\\':
			switch e := s[r+1]; e {
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr := jsonparseHex4(s[r+2:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if r+6 <= len(s) && s[r] == '\\' && s[r+1] == 'u' {
						if dec := utf16.DecodeRune(rr, jsonparseHex4(s[r+2:])); dec != unicode.ReplacementChar {
							b = utf8.AppendRune(b, dec)
							r += 6
							continue
						}
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
				continue
			default: // '"', '\\', '/'
				b = append(b, e)
			}
			r += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			b = utf8.AppendRune(b, rr)
			r += size
		}
	}
	return b
}

// jsonparseHex4 is the value of four hex digits that the scanner has already checked.
func jsonparseHex4(s []byte) rune {
	var r rune
	for _, c := range s[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// jsonparseAppendString appends text (valid UTF-8) as a JSON string exactly as
// encoding/json's Encoder with SetEscapeHTML(false) writes it.
func jsonparseAppendString(dst, text []byte) []byte {
	return jsonstr.Append(dst, text, jsonstr.EncodingJSONNoHTML)
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
