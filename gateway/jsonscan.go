package gateway

import (
	"bytes"

	"github.com/go-json-experiment/json/jsontext"
)

// Checks of JSON text that request decoding and sealing share, each the one place for its
// rule; most are byte scans, cheaper than any parse.

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

// hasNULEscape reports whether a JSON text contains the escape \u0000, which is the only
// way U+0000 can appear in valid JSON. It is the one check for U+0000, on request bodies and
// on sealed records alike.
func hasNULEscape(b []byte) bool {
	for i := 0; ; i += len(nulEscape) {
		j := bytes.Index(b[i:], nulEscape)
		if j < 0 {
			return false
		}
		i += j
		// An escape starts at an odd run of backslashes; "\\u0000" is a backslash then text.
		run := 1
		for k := i - 1; k >= 0 && b[k] == '\\'; k-- {
			run++
		}
		if run%2 == 1 {
			return true
		}
	}
}

// nulEscape is how JSON spells U+0000, and how a backslash followed by "u0000" ends.
var nulEscape = []byte(`\u0000`)

// outOfRangeNumber returns the field and the text of the first number in the JSON text b that
// a double cannot hold: it rounds to ±Inf, and RFC 7493 (I-JSON) requires numbers an IEEE
// 754 double can represent. Without this check such a number would be echoed as sent but
// sealed as ±1.7976931348623157e+308. A number that merely loses precision is accepted, as
// every canonical (RFC 8785) record already rounds it: integers past 2^53, and magnitudes too
// small for a double (1e-400), which round to 0 as 0.1 rounds to the nearest double.
func outOfRangeNumber(b []byte) (field, number string, found bool) {
	if !mayOverflowDouble(b) {
		return "", "", false
	}
	dec := jsontext.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			return "", "", false
		}
		if tok.Kind() == '0' {
			if _, err := tok.Float(); err != nil {
				return pointerField(dec.StackPointer()), tok.String(), true
			}
		}
	}
}

// mayOverflowDouble reports whether the JSON text b may hold a number beyond a double's range
// (about 1.8e308): one with an exponent of three or more digits, or with 200 or more digits
// and dots in a row (with an exponent of at most 99, 210 integer digits are needed). Digits
// inside strings count too: it may report true for no such number, never false for one. Most
// bodies have neither, and skip the exact check.
func mayOverflowDouble(b []byte) bool {
	run := 0
	for i := 0; i < len(b); i++ {
		switch numberByte[b[i]] {
		case 0:
			run = 0
		case '0':
			if run++; run >= 200 {
				return true
			}
		case 'e':
			if run == 0 {
				continue // a letter, as in true or false
			}
			j := i + 1
			if j < len(b) && (b[j] == '+' || b[j] == '-') {
				j++
			}
			k := j
			for k < len(b) && '0' <= b[k] && b[k] <= '9' {
				k++
			}
			if k-j >= 3 {
				return true
			}
			run, i = 0, k-1
		}
	}
	return false
}

// numberByte classes the bytes mayOverflowDouble looks at: a table, because it sees every byte
// of every body.
var numberByte = func() (t [256]byte) {
	for c := '0'; c <= '9'; c++ {
		t[c] = '0'
	}
	t['.'] = '0'
	t['e'], t['E'] = 'e', 'e'
	return t
}()
