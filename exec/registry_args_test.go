package exec

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

var argsDocSeeds = []string{
	`{}`, `[]`, `null`, `true`, `false`, `"x"`, `0`, `-1.5e+3`, ` {"a" : [1, {"b": null}, "c\u00e9\n"], "d": {} } `,
	`{"data":{"key":"value","n":[1,2,3]}}`, `{"a":1,"a":2}`, `{"\ud800":1}`, "\"\xff\"", `{"a":`, `1 2`, `[1,]`,
	`{"k\u0065y":"v\"\\\/\b\f\n\r\t\ud83d\ude00"}`, `123456789012345678901234567890`, `[[[[[]]]]]`, `{"":""}`,
}

func argsDocAgree(t *testing.T, raw []byte) bool {
	t.Helper()
	got, ok := argsDocFast(raw)
	if !ok {
		return false
	}
	want, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%q: fast path accepted what jsonschema.UnmarshalJSON refuses: %v", raw, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n fast %#v\n want %#v", raw, got, want)
	}
	return true
}

func TestArgsDocFast(t *testing.T) {
	fast := 0
	for _, s := range argsDocSeeds {
		if argsDocAgree(t, []byte(s)) {
			fast++
		}
	}
	if fast < 12 {
		t.Fatalf("only %d seeds took the fast path", fast)
	}
}

// FuzzArgsDocFast holds Validate's fast decoder to jsonschema.UnmarshalJSON: wherever it
// answers, the documents are identical.
func FuzzArgsDocFast(f *testing.F) {
	for _, s := range argsDocSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		argsDocAgree(t, raw)
	})
}
