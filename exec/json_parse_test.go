package exec

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestJSONParse(t *testing.T) {
	tool := NewJSONParse()
	reg := toolsBRegistry(t, tool)
	intp := func(n int) *int { return &n }
	for _, tc := range []struct {
		name string
		args string
		want JSONParseOutput
	}{
		{"object with sorted keys and depth", `{"text": "{\"b\": 1, \"a\": [1, 2, {\"c\": null}]}"}`,
			JSONParseOutput{Valid: true, Type: "object", Value: json.RawMessage(`{"b":1,"a":[1,2,{"c":null}]}`), Keys: []string{"a", "b"}, Depth: intp(3), Bytes: 34}},
		{"empty object has an empty key list", `{"text": "{}"}`,
			JSONParseOutput{Valid: true, Type: "object", Value: json.RawMessage(`{}`), Keys: []string{}, Depth: intp(1), Bytes: 2}},
		{"array length", `{"text": " [1, \"x\", true] "}`,
			JSONParseOutput{Valid: true, Type: "array", Value: json.RawMessage(`[1,"x",true]`), Length: intp(3), Depth: intp(1), Bytes: 16}},
		{"string length counts characters", `{"text": "\"héllo\""}`,
			JSONParseOutput{Valid: true, Type: "string", Value: json.RawMessage(`"héllo"`), Length: intp(5), Depth: intp(0), Bytes: 8}},
		{"number literal is preserved", `{"text": "12345678901234567890123.50"}`,
			JSONParseOutput{Valid: true, Type: "number", Value: json.RawMessage(`12345678901234567890123.50`), Depth: intp(0), Bytes: 26}},
		{"boolean", `{"text": "false"}`, JSONParseOutput{Valid: true, Type: "boolean", Value: json.RawMessage(`false`), Depth: intp(0), Bytes: 5}},
		{"null", `{"text": "null"}`, JSONParseOutput{Valid: true, Type: "null", Value: json.RawMessage(`null`), Depth: intp(0), Bytes: 4}},
		{"html characters are not escaped", `{"text": "\"<a&b>\""}`,
			JSONParseOutput{Valid: true, Type: "string", Value: json.RawMessage(`"<a&b>"`), Length: intp(5), Depth: intp(0), Bytes: 7}},
		{"lone surrogate becomes U+FFFD", `{"text": "\"\\ud800\""}`,
			JSONParseOutput{Valid: true, Type: "string", Value: json.RawMessage(`"` + "\uFFFD" + `"`), Length: intp(1), Depth: intp(0), Bytes: 8}},
		{"data is inspected as given", `{"data": {"z": [1, 2], "a": null}}`,
			JSONParseOutput{Valid: true, Type: "object", Value: json.RawMessage(`{"z":[1,2],"a":null}`), Keys: []string{"a", "z"}, Depth: intp(2), Bytes: 24}},
		{"data null", `{"data": null}`, JSONParseOutput{Valid: true, Type: "null", Value: json.RawMessage(`null`), Depth: intp(0), Bytes: 4}},

		{"duplicate key", `{"text": "{\"a\": 1, \"a\": 2}"}`,
			JSONParseOutput{Bytes: 16, Error: &JSONParseError{Code: "duplicate_key", Message: `duplicate object key "a"`, Offset: 12, Line: 1, Column: 13}}},
		{"duplicate key in data", `{"data": {"a": 1, "a": 2}}`,
			JSONParseOutput{Bytes: 16, Error: &JSONParseError{Code: "duplicate_key", Message: `duplicate object key "a"`, Offset: 12, Line: 1, Column: 13}}},
		{"trailing data", `{"text": "{} x"}`,
			JSONParseOutput{Bytes: 4, Error: &JSONParseError{Code: "trailing_data", Message: "unexpected data after the JSON value", Offset: 2, Line: 1, Column: 3}}},
		{"second value", `{"text": "1 2"}`,
			JSONParseOutput{Bytes: 3, Error: &JSONParseError{Code: "trailing_data", Message: "unexpected data after the JSON value", Offset: 1, Line: 1, Column: 2}}},
		{"syntax error is located by line and column", `{"text": "[\n1,\n2,\n x]"}`,
			JSONParseOutput{Bytes: 11, Error: &JSONParseError{Code: "syntax_error", Message: "invalid character 'x' looking for beginning of value", Offset: 9, Line: 4, Column: 2}}},
		{"missing colon", `{"text": "{\"a\" 1}"}`,
			JSONParseOutput{Bytes: 7, Error: &JSONParseError{Code: "syntax_error", Message: "invalid character '1' after object key", Offset: 5, Line: 1, Column: 6}}},
		{"unexpected end", `{"text": "[1, 2"}`,
			JSONParseOutput{Bytes: 5, Error: &JSONParseError{Code: "syntax_error", Message: "unexpected end of input", Offset: 5, Line: 1, Column: 6}}},
		{"empty", `{"text": ""}`,
			JSONParseOutput{Bytes: 0, Error: &JSONParseError{Code: "syntax_error", Message: "the input is empty", Offset: 0, Line: 1, Column: 1}}},
		{"number out of float64 range", `{"text": "[1e400]"}`,
			JSONParseOutput{Bytes: 7, Error: &JSONParseError{Code: "number_out_of_range", Message: "the number 1e400 is outside the range of a 64-bit float", Offset: 1, Line: 1, Column: 2}}},
		{"U+0000 in a string", `{"text": "[\"a\\u0000\"]"}`,
			JSONParseOutput{Bytes: 11, Error: &JSONParseError{Code: "nul_character", Message: "a string contains U+0000, which the audit store (PostgreSQL jsonb) cannot hold", Offset: 10, Line: 1, Column: 11}}},
		{"U+0000 in a key", `{"data": {"\u0000": 1}}`,
			JSONParseOutput{Bytes: 13, Error: &JSONParseError{Code: "nul_character", Message: "a string contains U+0000, which the audit store (PostgreSQL jsonb) cannot hold", Offset: 9, Line: 1, Column: 10}}},
		{"long duplicate key is clipped in the message", `{"text": "{\"` + strings.Repeat("k", 100) + `\": 1, \"` + strings.Repeat("k", 100) + `\": 2}"}`,
			JSONParseOutput{Bytes: 214, Error: &JSONParseError{Code: "duplicate_key", Message: `duplicate object key "` + strings.Repeat("k", 64) + `…"`, Offset: 210, Line: 1, Column: 211}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := toolsBCall(t, reg, tool, tc.args)
			if err != nil {
				t.Fatalf("error %v", err)
			}
			want, _ := json.Marshal(tc.want)
			if string(out) != string(want) {
				t.Fatalf("got  %s\nwant %s", out, want)
			}
		})
	}
}

func TestJSONParseLimits(t *testing.T) {
	deep := strings.Repeat("[", 65) + strings.Repeat("]", 65)
	for _, tc := range []struct {
		name string
		cfg  JSONParseConfig
		args string
		code string
	}{
		{"default depth 64 holds", JSONParseConfig{}, `{"text": "` + deep[1:len(deep)-1] + `"}`, ""},
		{"depth 65 exceeds the default", JSONParseConfig{}, `{"text": "` + deep + `"}`, "depth_exceeded"},
		{"maxDepth argument lowers the limit", JSONParseConfig{}, `{"text": "[[[1]]]", "maxDepth": 2}`, "depth_exceeded"},
		{"maxDepth argument raises the limit", JSONParseConfig{}, `{"text": "` + deep + `", "maxDepth": 100}`, ""},
		{"maxDepth above the configured ceiling", JSONParseConfig{MaxDepth: 10}, `{"text": "1", "maxDepth": 11}`, "invalid_args"},
		{"depth applies to data too", JSONParseConfig{}, `{"data": [[[1]]], "maxDepth": 2}`, "depth_exceeded"},
		{"text over the size cap", JSONParseConfig{MaxBytes: 16}, `{"text": "` + strings.Repeat(" ", 17) + `"}`, "input_too_large"},
		{"data over the size cap", JSONParseConfig{MaxBytes: 16}, `{"data": [1, 2, 3, 4, 5, 6, 7, 8, 9]}`, "input_too_large"},
		{"text at the size cap", JSONParseConfig{MaxBytes: 16}, `{"text": "` + strings.Repeat(" ", 15) + `1"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tool := NewJSONParse(tc.cfg)
			_, err := toolsBCall(t, toolsBRegistry(t, tool), tool, tc.args)
			if got := toolsBCode(err); got != tc.code {
				t.Fatalf("code %q, want %q (%v)", got, tc.code, err)
			}
		})
	}
}

func TestJSONParseArgsRejected(t *testing.T) {
	reg := toolsBRegistry(t, NewJSONParse())
	for _, tc := range []struct {
		name, args, field string
	}{
		{"neither data nor text", `{}`, "/data"},
		{"both data and text", `{"data": 1, "text": "1"}`, ""},
		{"text not a string", `{"text": 1}`, "/text"},
		{"maxDepth zero", `{"text": "1", "maxDepth": 0}`, "/maxDepth"},
		{"maxDepth too large", `{"text": "1", "maxDepth": 257}`, "/maxDepth"},
		{"maxDepth not an integer", `{"text": "1", "maxDepth": 1.5}`, "/maxDepth"},
		{"unknown property", `{"text": "1", "strict": false}`, "/strict"},
		{"text too long", `{"text": "` + strings.Repeat("a", 262145) + `"}`, "/text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := toolsBArgsField(t, reg, "json_parse", tc.args); got != tc.field {
				t.Fatalf("field %q, want %q", got, tc.field)
			}
		})
	}
}

func TestJSONParseContext(t *testing.T) {
	tool := NewJSONParse()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, call := range []func(context.Context, json.RawMessage) (any, error){tool.Simulate, tool.Run} {
		if _, err := call(ctx, json.RawMessage(`{"text": "[1]"}`)); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	}
	// A large document notices cancellation while it is being read, not only at the start.
	big := "[" + strings.Repeat("1,", 50_000) + "1]"
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := jsonparseText(ctx, []byte(big), 64); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}
