package jsonstr

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

func encodingJSON(s string, html bool) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(html)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// Each style equals the encoder it stands for, for strings and byte slices alike.
func FuzzAppend(f *testing.F) {
	for _, s := range []string{"", "plain", "a\"b\\c", "<&>", "\x00\x1f\x7f", "\u2028\u2029", "caf\u00e9 \U0001F600", "\xff\xfe", "a\xe2\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tc := range []struct {
			name  string
			style Style
			want  []byte
		}{
			{"encoding/json", EncodingJSON, encodingJSON(s, true)},
			{"encoding/json without HTML", EncodingJSONNoHTML, encodingJSON(s, false)},
		} {
			if got := Append(nil, s, tc.style); !bytes.Equal(got, tc.want) {
				t.Fatalf("%s %q: got %s want %s", tc.name, s, got, tc.want)
			}
			if got := Append(nil, []byte(s), tc.style); !bytes.Equal(got, tc.want) {
				t.Fatalf("%s []byte %q: got %s want %s", tc.name, s, got, tc.want)
			}
		}
		// Canonical is RFC 8785 of what encoding/json writes.
		v := jsontext.Value(encodingJSON(s, true))
		if err := v.Canonicalize(); err == nil {
			if got := Append(nil, s, Canonical); !bytes.Equal(got, v) {
				t.Fatalf("canonical %q: got %s want %s", s, got, v)
			}
		}
	})
}
