package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// TestJSONParseOutputAppendJSON holds the runner's encoder of json_parse's output to
// json.Marshal's bytes, on outputs that reach every field and every escape.
func TestJSONParseOutputAppendJSON(t *testing.T) {
	two := 2
	outputs := []JSONParseOutput{
		{},
		{Valid: true, Type: "null", Value: json.RawMessage("null"), Depth: new(int), Bytes: 4},
		{Valid: true, Type: "object", Value: json.RawMessage(`{"a<b":"x&y>z","\u2028":1}`), Keys: []string{"<", "a&b", "\u2028\u2029", "é", "\"\\\n"}, Depth: &two, Bytes: 40},
		{Valid: true, Type: "object", Value: json.RawMessage(`{}`), Keys: []string{}, Depth: new(int), Bytes: 2},
		{Valid: true, Type: "array", Value: json.RawMessage(`[1,2]`), Length: &two, Depth: &two, Bytes: 5},
		{Bytes: 3, Error: &JSONParseError{Code: "syntax_error", Message: `unexpected "<" after 'x' & more`, Offset: 2, Line: 1, Column: 3}},
	}
	for _, o := range outputs {
		want, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("AppendJSON:\n got %s\nwant %s", got, want)
		}
	}
}

// The runner encodes json_parse's output by AppendJSON; the bytes are json.Marshal's.
func TestRunnerEncodesByAppendJSON(t *testing.T) {
	reg, err := NewRegistry(NewJSONParse())
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(reg, DefaultLimits, nil)
	args := json.RawMessage(`{"text":"{\"<k>\":[\"a&b\"]}"}`)
	res, status, err := r.Run(context.Background(), Call{Tool: "json_parse", Args: args, DryRun: true})
	if err != nil || status != StatusCompleted {
		t.Fatalf("Run: %v %s", err, status)
	}
	out, err := NewJSONParse().Simulate(context.Background(), args)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(out)
	if !bytes.Equal(res.Output, want) {
		t.Fatalf("output %s, want %s", res.Output, want)
	}
}
