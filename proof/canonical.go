package proof

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/secureexec/secureexec/internal/jsonstr"
)

// AppendString appends s to dst as a canonical (RFC 8785) JSON string. Invalid UTF-8
// becomes U+FFFD byte by byte, as encoding/json writes it, so the result is exactly what
// Canonicalize makes of json.Marshal(s).
func AppendString(dst []byte, s string) []byte { return jsonstr.Append(dst, s, jsonstr.Canonical) }

// AppendCanonical appends the canonical (RFC 8785) form of the JSON value raw to dst. It
// refuses exactly what Canonicalize refuses; on error dst is returned unchanged in length.
func AppendCanonical(dst, raw []byte) ([]byte, error) {
	start := len(dst)
	c := canonicalizerPool.Get().(*canonicalizer)
	c.dst = dst
	i, ok := c.value(jsonSpace(raw, 0), raw, 0)
	dst = c.dst
	c.release()
	if ok && jsonSpace(raw, i) == len(raw) {
		return dst, nil
	}
	buf := append(dst[:start], raw...)
	v := jsontext.Value(buf[start:])
	if err := v.Canonicalize(); err != nil {
		return buf[:start], fmt.Errorf("canonicalize: %w", err)
	}
	if err := checkNumberRange(raw, v); err != nil {
		return buf[:start], err
	}
	// v still shares buf's array unless canonicalizing made it longer than the room left.
	return append(buf[:start], v...), nil
}

// canonicalizerPool keeps the canonicalizers' working space between calls.
var canonicalizerPool = sync.Pool{New: func() any { return new(canonicalizer) }}

// release returns c to the pool, without the caller's buffer or an outsized scratch space.
func (c *canonicalizer) release() {
	c.dst, c.members = nil, c.members[:0]
	if cap(c.scratch) > 64<<10 {
		c.scratch = nil
	}
	if cap(c.members) > 1024 {
		c.members = nil
	}
	canonicalizerPool.Put(c)
}

// canonicalizer writes the canonical form of the plain JSON most records carry — integers of
// up to 15 digits, member names without escapes or characters beyond U+FFFF, little
// nesting — in one pass. For anything else (and for anything invalid) it gives up, and
// jsontext, which handles every case and defines the canonical form here, takes over.
type canonicalizer struct {
	dst     []byte
	members []canonicalMember // of the objects being written, innermost last
	scratch []byte
}

// canonicalMember is one `"name":value` already written to dst, at dst[start:end]; the
// quoted name ends at nameEnd.
type canonicalMember struct{ start, nameEnd, end int }

// canonicalMaxDepth bounds the nesting the fast path follows (and its recursion).
const canonicalMaxDepth = 64

func jsonSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// value writes the value at src[i] and returns the offset just past it.
func (c *canonicalizer) value(i int, src []byte, depth int) (int, bool) {
	if i >= len(src) {
		return 0, false
	}
	switch src[i] {
	case '{':
		return c.object(i, src, depth+1)
	case '[':
		return c.array(i, src, depth+1)
	case '"':
		return c.str(i, src)
	case 't':
		return c.literal(i, src, "true")
	case 'f':
		return c.literal(i, src, "false")
	case 'n':
		return c.literal(i, src, "null")
	default:
		return c.integer(i, src)
	}
}

func (c *canonicalizer) literal(i int, src []byte, lit string) (int, bool) {
	if len(src)-i < len(lit) || string(src[i:i+len(lit)]) != lit {
		return 0, false
	}
	c.dst = append(c.dst, lit...)
	return i + len(lit), true
}

// integer writes an integer of at most 15 digits, which a double holds exactly and which
// ECMAScript prints digit for digit; -0 prints as 0.
func (c *canonicalizer) integer(i int, src []byte) (int, bool) {
	start := i
	if src[i] == '-' {
		i++
	}
	digits := i
	for i < len(src) && '0' <= src[i] && src[i] <= '9' {
		i++
	}
	n := i - digits
	if n == 0 || n > 15 || (n > 1 && src[digits] == '0') {
		return 0, false
	}
	if i < len(src) && (src[i] == '.' || src[i] == 'e' || src[i] == 'E') {
		return 0, false
	}
	if n == 1 && src[digits] == '0' {
		start = digits // -0
	}
	c.dst = append(c.dst, src[start:i]...)
	return i, true
}

// str writes the string at src[i] in canonical form: escapes resolved, then only '"', '\\'
// and control characters escaped.
func (c *canonicalizer) str(i int, src []byte) (int, bool) {
	j, plain := i+1, true
	for ; j < len(src) && src[j] != '"'; j++ {
		switch b := src[j]; {
		case b < ' ':
			return 0, false
		case b == '\\':
			plain = false
			j++
		case b >= utf8.RuneSelf:
			plain = false
		}
	}
	if j >= len(src) {
		return 0, false
	}
	body := src[i+1 : j]
	if plain {
		c.dst = append(c.dst, src[i:j+1]...)
		return j + 1, true
	}
	text, ok := unescape(c.scratch[:0], body)
	c.scratch = text
	if !ok {
		return 0, false
	}
	c.dst = appendCanonicalText(c.dst, text)
	return j + 1, true
}

// unescape appends the text of a JSON string body to dst. It reports false for what the
// canonical form refuses or this path leaves to jsontext: a malformed escape, a lone
// surrogate, invalid UTF-8.
func unescape(dst, body []byte) ([]byte, bool) {
	for k := 0; k < len(body); {
		b := body[k]
		if b != '\\' {
			if b >= utf8.RuneSelf {
				r, size := utf8.DecodeRune(body[k:])
				if r == utf8.RuneError && size == 1 {
					return dst, false
				}
				dst = append(dst, body[k:k+size]...)
				k += size
				continue
			}
			dst = append(dst, b)
			k++
			continue
		}
		if k+1 >= len(body) {
			return dst, false
		}
		switch e := body[k+1]; e {
		case '"', '\\', '/':
			dst = append(dst, e)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(body[k+2:])
			if !ok {
				return dst, false
			}
			if utf16.IsSurrogate(r) {
				r2, ok := hex4(body[min(k+8, len(body)):])
				if !ok || k+7 >= len(body) || body[k+6] != '\\' || body[k+7] != 'u' {
					return dst, false
				}
				if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
					return dst, false
				}
				k += 6
			}
			dst = utf8.AppendRune(dst, r)
			k += 6
			continue
		default:
			return dst, false
		}
		k += 2
	}
	return dst, true
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// appendCanonicalText appends valid UTF-8 text as a canonical JSON string.
func appendCanonicalText(dst, text []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i, c := range text {
		if c >= ' ' && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, text[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		start = i + 1
	}
	dst = append(dst, text[start:]...)
	return append(dst, '"')
}

func (c *canonicalizer) array(i int, src []byte, depth int) (int, bool) {
	if depth > canonicalMaxDepth {
		return 0, false
	}
	c.dst = append(c.dst, '[')
	i = jsonSpace(src, i+1)
	if i < len(src) && src[i] == ']' {
		c.dst = append(c.dst, ']')
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = c.value(i, src, depth); !ok {
			return 0, false
		}
		i = jsonSpace(src, i)
		if i >= len(src) {
			return 0, false
		}
		switch src[i] {
		case ']':
			c.dst = append(c.dst, ']')
			return i + 1, true
		case ',':
			c.dst = append(c.dst, ',')
			i = jsonSpace(src, i+1)
		default:
			return 0, false
		}
	}
}

// object writes the members as they come, then puts them in order of their names. Names are
// limited to what sorts the same in UTF-8 bytes as in UTF-16 code units (RFC 8785's order)
// and needs no escaping: no backslash, no control character, nothing beyond U+FFFF.
func (c *canonicalizer) object(i int, src []byte, depth int) (int, bool) {
	if depth > canonicalMaxDepth {
		return 0, false
	}
	c.dst = append(c.dst, '{')
	i = jsonSpace(src, i+1)
	if i < len(src) && src[i] == '}' {
		c.dst = append(c.dst, '}')
		return i + 1, true
	}
	base := len(c.members)
	defer func() { c.members = c.members[:base] }()
	sorted := true
	for {
		if i >= len(src) || src[i] != '"' {
			return 0, false
		}
		j := i + 1
		for ; j < len(src) && src[j] != '"'; j++ {
			if b := src[j]; b < ' ' || b == '\\' || b >= 0xF0 {
				return 0, false
			}
		}
		if j >= len(src) || !utf8.Valid(src[i+1:j]) {
			return 0, false
		}
		m := canonicalMember{start: len(c.dst)}
		c.dst = append(c.dst, src[i:j+1]...)
		m.nameEnd = len(c.dst)
		if n := len(c.members); n > base {
			prev := c.members[n-1]
			if cmp := bytes.Compare(c.dst[prev.start+1:prev.nameEnd-1], c.dst[m.start+1:m.nameEnd-1]); cmp == 0 {
				return 0, false
			} else if cmp > 0 {
				sorted = false
			}
		}
		i = jsonSpace(src, j+1)
		if i >= len(src) || src[i] != ':' {
			return 0, false
		}
		c.dst = append(c.dst, ':')
		var ok bool
		if i, ok = c.value(jsonSpace(src, i+1), src, depth); !ok {
			return 0, false
		}
		m.end = len(c.dst)
		c.members = append(c.members, m)
		i = jsonSpace(src, i)
		if i >= len(src) {
			return 0, false
		}
		if src[i] == '}' {
			break
		}
		if src[i] != ',' {
			return 0, false
		}
		c.dst = append(c.dst, ',')
		i = jsonSpace(src, i+1)
	}
	if !sorted && !c.reorder(c.members[base:]) {
		return 0, false
	}
	c.dst = append(c.dst, '}')
	return i + 1, true
}

// reorder sorts the members written at the end of dst by name, and reports false for a
// duplicate name.
func (c *canonicalizer) reorder(ms []canonicalMember) bool {
	start, end := ms[0].start, ms[len(ms)-1].end
	c.scratch = append(c.scratch[:0], c.dst[start:end]...)
	old := c.scratch
	name := func(m canonicalMember) []byte { return old[m.start-start+1 : m.nameEnd-start-1] } // without quotes
	slices.SortFunc(ms, func(a, b canonicalMember) int { return bytes.Compare(name(a), name(b)) })
	out := c.dst[:start]
	for k, m := range ms {
		if k > 0 {
			if bytes.Equal(name(ms[k-1]), name(m)) {
				return false
			}
			out = append(out, ',')
		}
		out = append(out, old[m.start-start:m.end-start]...)
	}
	c.dst = out
	return true
}
