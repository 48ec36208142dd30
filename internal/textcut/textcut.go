// Package textcut shortens text quoted from requests and peers into messages and records, on
// a rune boundary, so that a bound never splits a UTF-8 sequence.
package textcut

import "unicode/utf8"

// Prefix returns s cut to at most n bytes without splitting a rune.
func Prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Clip returns s cut to at most n bytes on a rune boundary, marked with "…" when cut.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return Prefix(s, n) + "…"
}
