package exec

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
)

// TestJSONParseGolden replays texts, many of them malformed in unusual ways, whose answers
// were recorded from the encoding/json implementation json_parse had before its one-pass
// parser (testdata/json_parse_golden.json): the parser must keep every byte of them — the
// value, the keys, the error codes, messages, offsets, lines and columns.
func TestJSONParseGolden(t *testing.T) {
	raw, err := os.ReadFile("testdata/json_parse_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []struct {
		Input    string          `json:"input"` // Go-quoted, so that invalid UTF-8 survives
		MaxDepth int             `json:"maxDepth"`
		Output   json.RawMessage `json:"output"`
		Error    string          `json:"error"`
	}
	if err := json.Unmarshal(raw, &vectors); err != nil {
		t.Fatal(err)
	}
	if len(vectors) < 100 {
		t.Fatalf("only %d vectors", len(vectors))
	}
	for _, v := range vectors {
		text, err := strconv.Unquote(v.Input)
		if err != nil {
			t.Fatalf("input %s: %v", v.Input, err)
		}
		out, err := jsonparseText(context.Background(), []byte(text), v.MaxDepth)
		if v.Error != "" {
			if err == nil || err.Error() != v.Error {
				t.Fatalf("%s depth %d: error %v, want %s", v.Input, v.MaxDepth, err, v.Error)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s depth %d: error %v", v.Input, v.MaxDepth, err)
		}
		got, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(v.Output) {
			t.Fatalf("%s depth %d:\n got  %s\n want %s", v.Input, v.MaxDepth, got, v.Output)
		}
	}
}
