package exec

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

var jsonparseArgsSeeds = []string{
	`{"data":{"a":1}}`, `{"text":"[1]"}`, `{"text":"[1]","maxDepth":3}`, ` { "data" : [ 1 , 2 ] , "maxDepth" : 2 } `,
	`{"text":null}`, `{"data":null}`, `{"maxDepth":null,"text":"1"}`, `{}`, `null`, `[]`, `"x"`, `1`, `{"Text":"1"}`,
	`{"TEXT":"1","text":"2"}`, `{"data":1,"data":2}`, `{"text":1}`, `{"text":"\ud800"}`, "{\"text\":\"\xff\"}",
	`{"maxDepth":1.0,"text":"1"}`, `{"maxDepth":1e2,"text":"1"}`, `{"maxDepth":-5,"text":"1"}`, `{"maxDepth":99999999999999999999,"text":"1"}`,
	`{"maxDepth":"3","text":"1"}`, `{"t\u0065xt":"1"}`, `{"text":"a\"b\\c\/\n\u00e9\ud83d\ude00"}`, `{"text":"1"} x`, `{"text":`,
	`{"data":{"text":"x","maxDepth":1},"x":1}`, `{"data":"}],\"{"}`, `{"data":[{"a":[]},"\\"]}`, `{"strict":false,"text":"1"}`,
}

// FuzzJSONParseArgsFast holds the fast argument decoder to json.Unmarshal: wherever it
// answers, it answers what json.Unmarshal into jsonparseArgs does.
func FuzzJSONParseArgsFast(f *testing.F) {
	for _, s := range jsonparseArgsSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		jsonparseArgsAgree(t, raw)
	})
}

func TestJSONParseArgsFast(t *testing.T) {
	fast := 0
	for _, s := range jsonparseArgsSeeds {
		if jsonparseArgsAgree(t, []byte(s)) {
			fast++
		}
	}
	if fast < 8 {
		t.Fatalf("only %d seeds took the fast path", fast)
	}
}

func jsonparseArgsAgree(t *testing.T, raw []byte) bool {
	t.Helper()
	got, ok := jsonparseArgsFast(raw)
	if !ok {
		return false
	}
	var want jsonparseArgs
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatalf("%q: fast path accepted what json.Unmarshal refuses: %v", raw, err)
	}
	if got.hasData != (want.Data != nil) || !bytes.Equal(got.data, want.Data) ||
		got.hasText != (want.Text != nil) || (want.Text != nil && string(got.text) != *want.Text) ||
		!reflect.DeepEqual(got.maxDepth, want.MaxDepth) {
		t.Fatalf("%q: fast %+v, json.Unmarshal %+v", raw, got, want)
	}
	return true
}
