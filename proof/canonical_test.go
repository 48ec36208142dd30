package proof

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

var canonicalSeeds = []string{
	`{}`, `[]`, `null`, `true`, `false`, `0`, `-0`, `-1`, `123456789012345`, `1234567890123456`, `01`, `-`, `1.5`, `1e2`, `-0.0`,
	`""`, `"a b"`, `"\u00e9\n\t\"\\\/\b\f\r\u0001\u001f\u007f\u2028"`, `"\ud83d\ude00"`, `"\ud800"`, `"\udc00\ud800"`, `"\ud800\u0041"`,
	"\"\xff\"", "\"\xed\xa0\x80\"", "\"a\x01\"", `"\x"`, `"\u12"`, `"abc`, `"é€😀"`, `{"b":1,"a":2}`, `{"a":1,"a":2}`,
	`{"a":1,"b":{"d":[1,{"f":1,"e":2}],"c":null}}`, `{"a":1,"a ":2,"a!":3,"":4}`, `{"\u0061":1,"a":2}`, `{"é":1,"z":2,"€":3,"😀":4,"\uff61":5}`,
	` { "b" : [ 1 , 2 ] , "a" : true } `, `{"a":1,}`, `[1,]`, `[1 2]`, `{"a" 1}`, `{"a":1 "b":2}`, `{,}`, `1 2`, `tru`, `truex`, `[truex]`,
	`{"a":[1,2,{"b":[true,false,null]}]}`, strings.Repeat("[", 70) + strings.Repeat("]", 70), `{"z":1,"y":2,"x":3,"w":4,"v":5}`,
	`{"k":"\u003c\u0026\u003e"}`, `{"a\u0000":1}`, `{"a":"\u0000"}`, "{\"\xff\":1}", "{\"a\x7f\":1,\"a\":2}", `[-0,0,-5,10]`,
}

// canonicalAgrees holds AppendCanonical to jsontext's Canonicalize (through Canonicalize):
// the same bytes, the same refusals, and dst kept intact.
func canonicalAgrees(t *testing.T, doc []byte) {
	t.Helper()
	want, wantErr := Canonicalize(doc)
	prefix := []byte("prefix")
	got, gotErr := AppendCanonical(prefix[:len(prefix):len(prefix)], doc)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%q: error %v, Canonicalize %v", doc, gotErr, wantErr)
	}
	if !bytes.HasPrefix(got, prefix) {
		t.Fatalf("%q: dst lost its prefix: %q", doc, got)
	}
	if gotErr != nil {
		if len(got) != len(prefix) {
			t.Fatalf("%q: dst grew on error: %q", doc, got)
		}
		return
	}
	if !bytes.Equal(got[len(prefix):], want) {
		t.Fatalf("%q:\n got  %q\n want %q", doc, got[len(prefix):], want)
	}
}

func TestAppendCanonicalMatchesCanonicalize(t *testing.T) {
	for _, s := range canonicalSeeds {
		canonicalAgrees(t, []byte(s))
	}
}

// TestAppendCanonicalFastPath checks that typical records take the one-pass path rather
// than jsontext (which would still be correct, only slower).
func TestAppendCanonicalFastPath(t *testing.T) {
	for _, s := range []string{`{"purpose":"load test"}`, `{"data":{"key":"value","n":[1,2,3]}}`,
		`{"valid":true,"type":"object","value":{"key":"value","n":[1,2,3]},"keys":["key","n"],"depth":2,"bytes":36}`,
		`{"text":"a\u003cb\n","n":-7}`} {
		c := canonicalizer{}
		if i, ok := c.value(0, []byte(s), 0); !ok || i != len(s) {
			t.Fatalf("%s did not take the fast path", s)
		}
	}
}

func FuzzAppendCanonicalMatchesCanonicalize(f *testing.F) {
	for _, s := range canonicalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		canonicalAgrees(t, doc)
		// Marshalled Go values are what records hold: exercise those shapes as well.
		var v any
		if json.Unmarshal(doc, &v) == nil {
			if b, err := json.Marshal(v); err == nil {
				canonicalAgrees(t, b)
			}
		}
		if jsontext.Value(doc).IsValid() {
			canonicalAgrees(t, append([]byte(" \n"), doc...))
		}
	})
}
