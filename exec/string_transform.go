package exec

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/language"
	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"
)

// StringTransformConfig bounds string_transform. Zero fields take the defaults in
// DefaultStringTransformConfig.
type StringTransformConfig struct {
	MaxBytes      int // largest input, intermediate value and result, in bytes
	MaxOperations int // operations in one call
	MaxParts      int // elements a split may produce
}

// DefaultStringTransformConfig is the configuration NewStringTransform uses for zero fields.
// 512 KiB keeps the encoded output, even base64-wrapped, under the runner's 1 MiB cap.
var DefaultStringTransformConfig = StringTransformConfig{
	MaxBytes:      512 << 10,
	MaxOperations: 32,
	MaxParts:      10_000,
}

// StringTransform is the string_transform tool: a pipeline of string operations applied in
// order.
//
// Every operation knows its output size before it builds anything: operations whose growth
// the caller controls (repeat, pad_left/pad_right, replace) and the encoders compute the exact
// size first; the Unicode mappings (case, slugify) stream through a reader that stops one byte
// past the cap. The result never contains U+0000 or invalid UTF-8: when decoding yields such
// bytes, the result is their base64 and encoding says so (PostgreSQL jsonb, the audit store,
// refuses U+0000). Text operations applied to non-UTF-8 intermediate bytes read each invalid
// byte as U+FFFD.
type StringTransform struct {
	cfg StringTransformConfig
}

// NewStringTransform returns the string_transform tool; zero config fields take the defaults.
func NewStringTransform(cfg ...StringTransformConfig) *StringTransform {
	c := DefaultStringTransformConfig
	if len(cfg) > 0 {
		if cfg[0].MaxBytes > 0 {
			c.MaxBytes = cfg[0].MaxBytes
		}
		if cfg[0].MaxOperations > 0 {
			c.MaxOperations = cfg[0].MaxOperations
		}
		if cfg[0].MaxParts > 0 {
			c.MaxParts = cfg[0].MaxParts
		}
	}
	return &StringTransform{cfg: c}
}

// StringTransformOutput is string_transform's result.
type StringTransformOutput struct {
	Result            any    `json:"result"`            // a string, or []string after split
	Length            int    `json:"length"`            // characters of a utf-8 result, bytes of a base64 one, elements after split
	Encoding          string `json:"encoding"`          // "utf-8", or "base64" when the bytes are not text
	OperationsApplied int    `json:"operationsApplied"` // operations run, all of them on success
}

type stringtransformOp struct {
	Op     string  `json:"op"`
	Old    *string `json:"old"`
	New    *string `json:"new"`
	Count  *int    `json:"count"`
	Start  *int    `json:"start"`
	End    *int    `json:"end"`
	Width  *int    `json:"width"`
	Char   *string `json:"char"`
	Length *int    `json:"length"`
	Sep    *string `json:"sep"`
	Chars  *string `json:"chars"`
}

type stringtransformArgs struct {
	Input      *string             `json:"input"`
	Operations []stringtransformOp `json:"operations"`
	Operation  *stringtransformOp  `json:"operation"`
}

// Name implements Tool.
func (*StringTransform) Name() string { return "string_transform" }

// Description implements Tool.
func (*StringTransform) Description() string {
	return "Apply string operations in order (case, trim, replace, substring, pad, repeat, base64/hex/url coding, slugify, split, ...)"
}

// stringtransformParams says which parameters each operation requires and accepts.
var stringtransformParams = map[string]struct{ required, optional []string }{
	"upper": {}, "lower": {}, "title": {}, "reverse": {}, "base64_encode": {}, "base64_decode": {},
	"hex_encode": {}, "hex_decode": {}, "url_encode": {}, "url_decode": {}, "slugify": {}, "normalize_whitespace": {},
	"trim":       {optional: []string{"chars"}},
	"trim_left":  {optional: []string{"chars"}},
	"trim_right": {optional: []string{"chars"}},
	"replace":    {required: []string{"old", "new"}, optional: []string{"count"}},
	"substring":  {required: []string{"start"}, optional: []string{"end"}},
	"pad_left":   {required: []string{"width"}, optional: []string{"char"}},
	"pad_right":  {required: []string{"width"}, optional: []string{"char"}},
	"repeat":     {required: []string{"count"}},
	"truncate":   {required: []string{"length"}},
	"split":      {required: []string{"sep"}},
}

var stringtransformAllParams = []string{"old", "new", "count", "start", "end", "width", "char", "length", "sep", "chars"}

// stringtransformSchema is built once: the per-operation rules are generated from
// stringtransformParams. A parameter an operation does not take is a false schema, so the
// registry's error points at it ("/operation/width").
var stringtransformSchema = stringtransformBuildSchema()

func stringtransformBuildSchema() json.RawMessage {
	type rule struct {
		If   json.RawMessage `json:"if"`
		Then json.RawMessage `json:"then"`
	}
	names := make([]string, 0, len(stringtransformParams))
	for op := range stringtransformParams {
		names = append(names, op)
	}
	sort.Strings(names)
	rules := make([]rule, 0, len(names))
	for _, op := range names {
		p := stringtransformParams[op]
		accepted := map[string]bool{}
		for _, n := range append(append([]string{}, p.required...), p.optional...) {
			accepted[n] = true
		}
		forbidden := map[string]bool{}
		for _, n := range stringtransformAllParams {
			if !accepted[n] {
				forbidden[n] = false
			}
		}
		then := map[string]any{"properties": forbidden}
		if len(p.required) > 0 {
			then["required"] = p.required
		}
		ifs, _ := json.Marshal(map[string]any{"required": []string{"op"}, "properties": map[string]any{"op": map[string]string{"const": op}}})
		thens, _ := json.Marshal(then)
		rules = append(rules, rule{If: ifs, Then: thens})
	}
	allOf, err := json.Marshal(rules)
	if err != nil {
		panic(err) // static data; cannot happen
	}
	ops, _ := json.Marshal(names)
	out := strings.Replace(stringtransformSchemaTemplate, "ALLOF", string(allOf), 1)
	return json.RawMessage(strings.Replace(out, "OPS", string(ops), 1))
}

const stringtransformSchemaTemplate = `{
  "type": "object",
  "additionalProperties": false,
  "required": ["input"],
  "properties": {
    "input": {"type": "string", "maxLength": 262144},
    "operations": {"type": "array", "minItems": 1, "maxItems": 32, "items": {"$ref": "#/$defs/op"}},
    "operation": {"$ref": "#/$defs/op"}
  },
  "oneOf": [{"required": ["operations"]}, {"required": ["operation"]}],
  "$defs": {
    "op": {
      "type": "object",
      "additionalProperties": false,
      "required": ["op"],
      "properties": {
        "op": {"type": "string", "enum": OPS},
        "old": {"type": "string", "maxLength": 4096, "description": "replace: the text to find; empty matches between characters"},
        "new": {"type": "string", "maxLength": 4096, "description": "replace: the replacement"},
        "count": {"type": "integer", "minimum": 0, "maximum": 1048576, "description": "replace: most replacements (default all); repeat: copies"},
        "start": {"type": "integer", "minimum": -1048576, "maximum": 1048576, "description": "substring: first character, negative counts from the end"},
        "end": {"type": "integer", "minimum": -1048576, "maximum": 1048576, "description": "substring: character after the last, default the end"},
        "width": {"type": "integer", "minimum": 0, "maximum": 1048576, "description": "pad: width in characters"},
        "char": {"type": "string", "minLength": 1, "maxLength": 1, "description": "pad: the fill character, default a space"},
        "length": {"type": "integer", "minimum": 0, "maximum": 1048576, "description": "truncate: characters kept"},
        "sep": {"type": "string", "maxLength": 256, "description": "split: separator; empty splits into characters"},
        "chars": {"type": "string", "minLength": 1, "maxLength": 256, "description": "trim: characters to remove, default white space"}
      },
      "allOf": ALLOF
    }
  }
}`

// Schema implements Tool.
func (*StringTransform) Schema() json.RawMessage { return stringtransformSchema }

// Simulate transforms for real: string_transform is a pure computation with no side effect,
// so the dry run returns the actual answer, under exactly the bounds of Run.
func (s *StringTransform) Simulate(ctx context.Context, args json.RawMessage) (any, error) {
	return s.transform(ctx, args)
}

// Run applies the operations.
func (s *StringTransform) Run(ctx context.Context, args json.RawMessage) (any, error) {
	return s.transform(ctx, args)
}

func (s *StringTransform) transform(ctx context.Context, raw json.RawMessage) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("string_transform: %w", err)
	}
	var a stringtransformArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, Failf("invalid_args", "args do not decode: %v", err)
	}
	if a.Input == nil {
		return nil, Failf("invalid_args", "input is required")
	}
	ops := a.Operations
	switch {
	case a.Operation != nil && ops == nil:
		ops = []stringtransformOp{*a.Operation}
	case a.Operation == nil && len(ops) > 0:
	default:
		return nil, Failf("invalid_args", "give exactly one of operation and operations")
	}
	if len(ops) > s.cfg.MaxOperations {
		return nil, Failf("too_many_operations", "%d operations, the limit is %d", len(ops), s.cfg.MaxOperations)
	}
	if len(*a.Input) > s.cfg.MaxBytes {
		return nil, Failf("input_too_large", "the input is %d bytes, the limit is %d", len(*a.Input), s.cfg.MaxBytes)
	}

	st := stringtransformState{val: *a.Input, limit: s.cfg.MaxBytes, maxParts: s.cfg.MaxParts}
	for i, op := range ops {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("string_transform: %w", err)
		}
		if st.parts != nil {
			return nil, Failf("split_not_last", "operation %d (%s) follows split; split must be the last operation", i, op.Op)
		}
		if err := st.apply(op); err != nil {
			if te, ok := err.(*ToolError); ok {
				return nil, Failf(te.Code, "operation %d (%s): %s", i, op.Op, te.Message)
			}
			return nil, err
		}
	}
	return st.output(len(ops)), nil
}

type stringtransformState struct {
	val      string
	parts    []string // set by split, which must come last
	limit    int
	maxParts int
}

// fits refuses a result of n bytes before it is built. n is computed in int64 by callers
// where a product could overflow.
func (st *stringtransformState) fits(n int64) error {
	if n > int64(st.limit) {
		return Failf("output_too_large", "the result would be %d bytes, the limit is %d", n, st.limit)
	}
	return nil
}

func (st *stringtransformState) apply(op stringtransformOp) error {
	s := st.val
	var err error
	switch op.Op {
	case "upper":
		st.val, err = st.stream(cases.Upper(language.Und), s)
	case "lower":
		st.val, err = st.stream(cases.Lower(language.Und), s)
	case "title":
		st.val, err = st.stream(cases.Title(language.Und), s)
	case "trim", "trim_left", "trim_right":
		st.val = stringtransformTrim(op.Op, s, op.Chars)
	case "reverse":
		st.val, err = st.reverse(s)
	case "replace":
		st.val, err = st.replace(s, op)
	case "substring":
		if op.Start == nil {
			return Failf("invalid_args", "substring needs start")
		}
		st.val = stringtransformSubstring(s, *op.Start, op.End)
	case "pad_left", "pad_right":
		st.val, err = st.pad(s, op)
	case "repeat":
		if op.Count == nil || *op.Count < 0 {
			return Failf("invalid_args", "repeat needs a count of at least 0")
		}
		if err = st.fits(int64(len(s)) * int64(*op.Count)); err == nil {
			st.val = strings.Repeat(s, *op.Count)
		}
	case "truncate":
		if op.Length == nil || *op.Length < 0 {
			return Failf("invalid_args", "truncate needs a length of at least 0")
		}
		st.val = stringtransformSubstring(s, 0, op.Length)
	case "base64_encode":
		if err = st.fits(int64(base64.StdEncoding.EncodedLen(len(s)))); err == nil {
			st.val = base64.StdEncoding.EncodeToString([]byte(s))
		}
	case "base64_decode":
		st.val, err = stringtransformBase64Decode(s)
	case "hex_encode":
		if err = st.fits(int64(hex.EncodedLen(len(s)))); err == nil {
			st.val = hex.EncodeToString([]byte(s))
		}
	case "hex_decode":
		var b []byte
		if b, err = hex.DecodeString(strings.TrimSpace(s)); err != nil {
			return Failf("invalid_hex", "%v", err)
		}
		st.val = string(b)
	case "url_encode":
		if err = st.fits(int64(stringtransformQueryEscapedLen(s))); err == nil {
			st.val = url.QueryEscape(s)
		}
	case "url_decode":
		if st.val, err = url.QueryUnescape(s); err != nil {
			return Failf("invalid_url_encoding", "%v", err)
		}
	case "slugify":
		st.val, err = st.slugify(s)
	case "split":
		if op.Sep == nil {
			return Failf("invalid_args", "split needs sep")
		}
		st.parts, err = st.split(s, *op.Sep)
	case "normalize_whitespace":
		st.val = strings.Join(strings.Fields(s), " ")
	default:
		return Failf("invalid_args", "unknown operation %q", op.Op)
	}
	return err
}

// stream runs a Unicode transformer and stops reading one byte past the limit, so an
// expanding mapping never builds more than the cap.
func (st *stringtransformState) stream(t transform.Transformer, s string) (string, error) {
	var buf bytes.Buffer
	r := io.LimitReader(transform.NewReader(strings.NewReader(s), t), int64(st.limit)+1)
	if _, err := buf.ReadFrom(r); err != nil {
		return "", Failf("transform_failed", "%v", err)
	}
	if buf.Len() > st.limit {
		return "", Failf("output_too_large", "the result would exceed %d bytes", st.limit)
	}
	return buf.String(), nil
}

func stringtransformTrim(op, s string, chars *string) string {
	if chars != nil && *chars != "" {
		switch op {
		case "trim_left":
			return strings.TrimLeft(s, *chars)
		case "trim_right":
			return strings.TrimRight(s, *chars)
		}
		return strings.Trim(s, *chars)
	}
	switch op {
	case "trim_left":
		return strings.TrimLeftFunc(s, unicode.IsSpace)
	case "trim_right":
		return strings.TrimRightFunc(s, unicode.IsSpace)
	}
	return strings.TrimSpace(s)
}

// reverse reverses by code point. An invalid byte becomes U+FFFD (three bytes), so the size is
// computed first.
func (st *stringtransformState) reverse(s string) (string, error) {
	size := 0
	for _, r := range s {
		size += utf8.RuneLen(r)
	}
	if err := st.fits(int64(size)); err != nil {
		return "", err
	}
	rs := []rune(s)
	for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
		rs[i], rs[j] = rs[j], rs[i]
	}
	return string(rs), nil
}

func (st *stringtransformState) replace(s string, op stringtransformOp) (string, error) {
	if op.Old == nil || op.New == nil {
		return "", Failf("invalid_args", "replace needs old and new")
	}
	old, repl := *op.Old, *op.New
	n := strings.Count(s, old) // for an empty old: characters + 1
	limit := -1
	if op.Count != nil {
		limit = *op.Count
		n = min(n, limit)
	}
	if err := st.fits(int64(len(s)) + int64(n)*(int64(len(repl))-int64(len(old)))); err != nil {
		return "", err
	}
	return strings.Replace(s, old, repl, limit), nil
}

// stringtransformSubstring takes characters [start, end); negative positions count from the
// end, and positions past either end are clamped.
func stringtransformSubstring(s string, start int, end *int) string {
	n := utf8.RuneCountInString(s)
	clamp := func(i int) int {
		if i < 0 {
			i += n
		}
		return min(max(i, 0), n)
	}
	from, to := clamp(start), n
	if end != nil {
		to = clamp(*end)
	}
	if from >= to {
		return ""
	}
	// Walk once to byte offsets rather than converting the whole string to runes.
	bFrom, bTo, i := len(s), len(s), 0
	for off := range s {
		if i == from {
			bFrom = off
		}
		if i == to {
			bTo = off
			break
		}
		i++
	}
	return s[bFrom:bTo]
}

func (st *stringtransformState) pad(s string, op stringtransformOp) (string, error) {
	if op.Width == nil {
		return "", Failf("invalid_args", "pad needs width")
	}
	fill := " "
	if op.Char != nil {
		if utf8.RuneCountInString(*op.Char) != 1 {
			return "", Failf("invalid_args", "char must be exactly one character")
		}
		fill = *op.Char
	}
	missing := *op.Width - utf8.RuneCountInString(s)
	if missing <= 0 {
		return s, nil
	}
	if err := st.fits(int64(len(s)) + int64(missing)*int64(len(fill))); err != nil {
		return "", err
	}
	padding := strings.Repeat(fill, missing)
	if op.Op == "pad_left" {
		return padding + s, nil
	}
	return s + padding, nil
}

// stringtransformBase64Decode accepts standard and URL-safe base64, padded or not, ignoring
// surrounding white space and line breaks (as in PEM or MIME bodies).
func stringtransformBase64Decode(s string) (string, error) {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, s)
	var firstErr error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err == nil {
			return string(b), nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return "", Failf("invalid_base64", "%v", firstErr)
}

// stringtransformQueryEscapedLen is the length of url.QueryEscape(s): unreserved bytes stay,
// a space becomes '+', every other byte becomes %XX.
func stringtransformQueryEscapedLen(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '_', c == '.', c == '~', c == ' ':
			n++
		default:
			n += 3
		}
	}
	return n
}

// slugify lowers the text, drops accents (NFKD then removing combining marks) and joins runs
// of letters and digits with single hyphens. NFKD can expand a character many times over, so
// it streams under the cap.
func (st *stringtransformState) slugify(s string) (string, error) {
	folded, err := st.stream(transform.Chain(norm.NFKD, runes.Remove(runes.In(unicode.Mn)), cases.Lower(language.Und)), s)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.Grow(len(folded))
	pendingHyphen := false
	for _, r := range folded {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if pendingHyphen && b.Len() > 0 {
				b.WriteByte('-')
			}
			pendingHyphen = false
			b.WriteRune(r)
			continue
		}
		pendingHyphen = true
	}
	return b.String(), nil
}

func (st *stringtransformState) split(s, sep string) ([]string, error) {
	n := strings.Count(s, sep) + 1
	if sep == "" {
		n = utf8.RuneCountInString(s)
	}
	if n > st.maxParts {
		return nil, Failf("too_many_parts", "split would produce %d parts, the limit is %d", n, st.maxParts)
	}
	parts := strings.Split(s, sep)
	if parts == nil {
		parts = []string{}
	}
	return parts, nil
}

// stringtransformIsText reports whether s can be returned as a JSON string that the audit
// store accepts: valid UTF-8 and no U+0000.
func stringtransformIsText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

func (st *stringtransformState) output(applied int) StringTransformOutput {
	out := StringTransformOutput{Encoding: "utf-8", OperationsApplied: applied}
	if st.parts != nil {
		text := true
		for _, p := range st.parts {
			text = text && stringtransformIsText(p)
		}
		parts := st.parts
		if !text {
			out.Encoding = "base64"
			parts = make([]string, len(st.parts))
			for i, p := range st.parts {
				parts[i] = base64.StdEncoding.EncodeToString([]byte(p))
			}
		}
		out.Result, out.Length = parts, len(parts)
		return out
	}
	if !stringtransformIsText(st.val) {
		out.Encoding = "base64"
		out.Result, out.Length = base64.StdEncoding.EncodeToString([]byte(st.val)), len(st.val)
		return out
	}
	out.Result, out.Length = st.val, utf8.RuneCountInString(st.val)
	return out
}
