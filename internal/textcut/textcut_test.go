package textcut

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClipAndPrefix(t *testing.T) {
	for _, tc := range []struct {
		s            string
		n            int
		prefix, clip string
	}{
		{"short", 10, "short", "short"},
		{"exactly10!", 10, "exactly10!", "exactly10!"},
		{"abcdef", 3, "abc", "abc…"},
		{"aé", 2, "a", "a…"}, // é is two bytes: never split
		{"🚀🚀", 5, "🚀", "🚀…"}, // a four-byte rune
		{"🚀", 3, "", "…"},    // nothing whole fits
		{strings.Repeat("x", 100), 0, "", "…"},
	} {
		if got := Prefix(tc.s, tc.n); got != tc.prefix || !utf8.ValidString(got) {
			t.Errorf("Prefix(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.prefix)
		}
		if got := Clip(tc.s, tc.n); got != tc.clip {
			t.Errorf("Clip(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.clip)
		}
	}
}
