package exec

// json_parse's parser: one pass over the input that checks it (depth, the deadline) and writes
// the value out again, compact.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/secureexec/secureexec/internal/jsonstr"
	"github.com/secureexec/secureexec/internal/textcut"
)

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
func jsonparseClip(s string) string { return textcut.Clip(s, 64) }
