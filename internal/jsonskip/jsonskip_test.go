package jsonskip

import (
	"encoding/json"
	"testing"
)

func TestValueEnd(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want string // the value at the start of doc
	}{
		{`"a\"b\\" ,1`, `"a\"b\\"`},
		{`{"k":[1,{"x":"}"}],"e":{}} , 2`, `{"k":[1,{"x":"}"}],"e":{}}`},
		{`[[],[[]]]]`, `[[],[[]]]`},
		{`123.5e-3,`, `123.5e-3`},
		{`true}`, `true`},
		{`null`, `null`},
		{`"\u00e9"`, `"\u00e9"`},
	} {
		if got := tc.doc[:ValueEnd([]byte(tc.doc), 0)]; got != tc.want {
			t.Errorf("ValueEnd(%q) stops after %q, want %q", tc.doc, got, tc.want)
		}
	}
}

// FuzzValueEnd: for any valid JSON array, stepping over its elements one by one lands on every
// element exactly as encoding/json splits them.
func FuzzValueEnd(f *testing.F) {
	f.Add(`[1,"two",{"3":[4]},[],null,"\"\\"]`)
	f.Add(`[ {"a" : "b" } , [ 1 , 2 ] ]`)
	f.Fuzz(func(t *testing.T, doc string) {
		var elems []json.RawMessage
		if !json.Valid([]byte(doc)) || json.Unmarshal([]byte(doc), &elems) != nil || len(doc) == 0 || doc[0] != '[' {
			return
		}
		b := []byte(doc)
		i := 1
		for n := 0; ; n++ {
			for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r' || b[i] == ',') {
				i++
			}
			if b[i] == ']' {
				if n != len(elems) {
					t.Fatalf("stepped over %d elements, encoding/json found %d", n, len(elems))
				}
				return
			}
			end := ValueEnd(b, i)
			var a, e any
			if json.Unmarshal(b[i:end], &a) != nil || json.Unmarshal(elems[n], &e) != nil {
				t.Fatalf("element %d: %q is not the element %q", n, b[i:end], elems[n])
			}
			i = end
		}
	})
}
