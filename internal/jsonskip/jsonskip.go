// Package jsonskip steps over JSON values in a document already known to be valid: what a
// single-pass decoder needs to find where an argument it does not parse itself ends, without
// parsing it. Both functions assume valid JSON and do no checking of their own.
package jsonskip

// StringEnd returns the offset just past the string that starts at the quote b[i].
func StringEnd(b []byte, i int) int {
	for i++; ; i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// ValueEnd returns the offset just past the value that starts at b[i].
func ValueEnd(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			i = StringEnd(b, i)
			if depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	return i
}
