// Package jsonstr writes JSON strings. Three writers in the project differ only in what they
// escape beyond what JSON requires: RFC 8785 escapes nothing more, encoding/json escapes
// U+2028 and U+2029 always and <, > and & by default, and writes invalid UTF-8 as \ufffd.
// One loop serves them all, chosen by a Style.
package jsonstr

import "unicode/utf8"

// Style is what a writer escapes beyond JSON's minimum.
type Style struct {
	HTML           bool // <, > and & as \u003c, \u003e, \u0026
	LineSeparators bool // U+2028 and U+2029 as \u2028, \u2029
	InvalidEscaped bool // invalid UTF-8 as the escape \ufffd rather than the character U+FFFD
}

// The styles in use.
var (
	// Canonical is RFC 8785: only what JSON requires; invalid UTF-8 becomes U+FFFD.
	Canonical = Style{}
	// EncodingJSON is encoding/json's default.
	EncodingJSON = Style{HTML: true, LineSeparators: true, InvalidEscaped: true}
	// EncodingJSONNoHTML is encoding/json with SetEscapeHTML(false).
	EncodingJSONNoHTML = Style{LineSeparators: true, InvalidEscaped: true}
)

// plain marks the bytes copied as they are: ASCII but for control characters, '"' and '\\';
// plainHTML also excludes '<', '>' and '&'.
var plain, plainHTML = func() (t, h [256]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
		h[c] = t[c] && c != '<' && c != '>' && c != '&'
	}
	return t, h
}()

// Append appends s to dst as a JSON string in style st.
func Append[T ~string | ~[]byte](dst []byte, s T, st Style) []byte {
	const hex = "0123456789abcdef"
	table := &plain
	if st.HTML {
		table = &plainHTML
	}
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if table[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
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
			i++
			start = i
			continue
		}
		r, size := runeAt(s, i)
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			if st.InvalidEscaped {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = append(dst, "\uFFFD"...)
			}
			start = i + size
		case st.LineSeparators && (r == '\u2028' || r == '\u2029'):
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
			start = i + size
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// runeAt decodes the rune at s[i] without converting s (no allocation for either kind).
func runeAt[T ~string | ~[]byte](s T, i int) (rune, int) {
	var b [utf8.UTFMax]byte
	n := copy(b[:], s[i:])
	return utf8.DecodeRune(b[:n])
}
