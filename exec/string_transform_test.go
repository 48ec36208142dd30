package exec

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"testing"
)

func TestStringTransform(t *testing.T) {
	tool := NewStringTransform()
	reg := toolsBRegistry(t, tool)
	for _, tc := range []struct {
		name  string
		input string
		ops   string // a JSON array of operations, or one operation object
		want  string // the expected output, as JSON
	}{
		{"upper", "Hello World", `{"op": "upper"}`, `{"result":"HELLO WORLD","length":11,"encoding":"utf-8","operationsApplied":1}`},
		{"upper uses full case mapping", "straße", `{"op": "upper"}`, `{"result":"STRASSE","length":7,"encoding":"utf-8","operationsApplied":1}`},
		{"lower", "ÀÉÎ", `{"op": "lower"}`, `{"result":"àéî","length":3,"encoding":"utf-8","operationsApplied":1}`},
		{"title", "hello wORLD", `{"op": "title"}`, `{"result":"Hello World","length":11,"encoding":"utf-8","operationsApplied":1}`},
		{"trim", " \t x \n", `{"op": "trim"}`, `{"result":"x","length":1,"encoding":"utf-8","operationsApplied":1}`},
		{"trim_left with chars", "xxaxx", `{"op": "trim_left", "chars": "x"}`, `{"result":"axx","length":3,"encoding":"utf-8","operationsApplied":1}`},
		{"trim_right", "  a  ", `{"op": "trim_right"}`, `{"result":"  a","length":3,"encoding":"utf-8","operationsApplied":1}`},
		{"reverse by character", "héllo", `{"op": "reverse"}`, `{"result":"olléh","length":5,"encoding":"utf-8","operationsApplied":1}`},
		{"replace all", "a-b-c", `{"op": "replace", "old": "-", "new": "+"}`, `{"result":"a+b+c","length":5,"encoding":"utf-8","operationsApplied":1}`},
		{"replace count", "a-b-c", `{"op": "replace", "old": "-", "new": "", "count": 1}`, `{"result":"ab-c","length":4,"encoding":"utf-8","operationsApplied":1}`},
		{"replace empty old", "ab", `{"op": "replace", "old": "", "new": "."}`, `{"result":".a.b.","length":5,"encoding":"utf-8","operationsApplied":1}`},
		{"substring", "héllo wörld", `{"op": "substring", "start": 1, "end": 4}`, `{"result":"éll","length":3,"encoding":"utf-8","operationsApplied":1}`},
		{"substring from the end", "héllo wörld", `{"op": "substring", "start": -5}`, `{"result":"wörld","length":5,"encoding":"utf-8","operationsApplied":1}`},
		{"substring clamps", "abc", `{"op": "substring", "start": 2, "end": 99}`, `{"result":"c","length":1,"encoding":"utf-8","operationsApplied":1}`},
		{"substring empty range", "abc", `{"op": "substring", "start": 2, "end": 1}`, `{"result":"","length":0,"encoding":"utf-8","operationsApplied":1}`},
		{"pad_left", "7", `{"op": "pad_left", "width": 3, "char": "0"}`, `{"result":"007","length":3,"encoding":"utf-8","operationsApplied":1}`},
		{"pad_right multibyte", "a", `{"op": "pad_right", "width": 3, "char": "é"}`, `{"result":"aéé","length":3,"encoding":"utf-8","operationsApplied":1}`},
		{"pad shorter than input", "abcd", `{"op": "pad_left", "width": 2}`, `{"result":"abcd","length":4,"encoding":"utf-8","operationsApplied":1}`},
		{"repeat", "ab", `{"op": "repeat", "count": 3}`, `{"result":"ababab","length":6,"encoding":"utf-8","operationsApplied":1}`},
		{"truncate", "héllo", `{"op": "truncate", "length": 2}`, `{"result":"hé","length":2,"encoding":"utf-8","operationsApplied":1}`},
		{"base64 round trip", "héllo", `[{"op": "base64_encode"}, {"op": "base64_decode"}]`, `{"result":"héllo","length":5,"encoding":"utf-8","operationsApplied":2}`},
		{"base64_encode", "hi", `{"op": "base64_encode"}`, `{"result":"aGk=","length":4,"encoding":"utf-8","operationsApplied":1}`},
		{"base64_decode url-safe unpadded", "_-8", `{"op": "base64_decode"}`, `{"result":"/+8=","length":2,"encoding":"base64","operationsApplied":1}`},
		{"base64_decode to NUL bytes is returned as base64", "AAAA", `{"op": "base64_decode"}`, `{"result":"AAAA","length":3,"encoding":"base64","operationsApplied":1}`},
		{"hex_encode", "hi", `{"op": "hex_encode"}`, `{"result":"6869","length":4,"encoding":"utf-8","operationsApplied":1}`},
		{"hex_decode invalid UTF-8 is returned as base64", "00ff", `{"op": "hex_decode"}`, `{"result":"AP8=","length":2,"encoding":"base64","operationsApplied":1}`},
		{"binary then hex is text again", "AAD/", `[{"op": "base64_decode"}, {"op": "hex_encode"}]`, `{"result":"0000ff","length":6,"encoding":"utf-8","operationsApplied":2}`},
		{"url_encode", "a b&c=é", `{"op": "url_encode"}`, `{"result":"a+b%26c%3D%C3%A9","length":16,"encoding":"utf-8","operationsApplied":1}`},
		{"url_decode", "a+b%26c", `{"op": "url_decode"}`, `{"result":"a b\u0026c","length":5,"encoding":"utf-8","operationsApplied":1}`},
		{"url_decode to NUL", "%00", `{"op": "url_decode"}`, `{"result":"AA==","length":1,"encoding":"base64","operationsApplied":1}`},
		{"input with NUL", "a\u0000b", `{"op": "upper"}`, `{"result":"QQBC","length":3,"encoding":"base64","operationsApplied":1}`},
		{"slugify", "  Crème Brûlée à la Carte!  ", `{"op": "slugify"}`, `{"result":"creme-brulee-a-la-carte","length":23,"encoding":"utf-8","operationsApplied":1}`},
		{"normalize_whitespace", " a \t\n b  c ", `{"op": "normalize_whitespace"}`, `{"result":"a b c","length":5,"encoding":"utf-8","operationsApplied":1}`},
		{"split", "a,b,,c", `[{"op": "trim"}, {"op": "split", "sep": ","}]`, `{"result":["a","b","","c"],"length":4,"encoding":"utf-8","operationsApplied":2}`},
		{"split into characters", "hé", `{"op": "split", "sep": ""}`, `{"result":["h","é"],"length":2,"encoding":"utf-8","operationsApplied":1}`},
		{"split binary parts are base64", "AP8A", `[{"op": "base64_decode"}, {"op": "split", "sep": "\u00ff"}]`, `{"result":["AP8A"],"length":1,"encoding":"base64","operationsApplied":2}`},
		{"pipeline", "  Hello, World  ", `[{"op": "trim"}, {"op": "lower"}, {"op": "replace", "old": ", ", "new": "_"}, {"op": "pad_left", "width": 13, "char": "*"}]`, `{"result":"**hello_world","length":13,"encoding":"utf-8","operationsApplied":4}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "operation"
			if strings.HasPrefix(tc.ops, "[") {
				key = "operations"
			}
			out, err := toolsBCall(t, reg, tool, `{"input": `+toolsBQuote(tc.input)+`, "`+key+`": `+tc.ops+`}`)
			if err != nil {
				t.Fatalf("error %v", err)
			}
			toolsBNoNUL(t, out)
			var got, want any
			_ = json.Unmarshal(out, &got)
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatalf("bad want: %v", err)
			}
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			if string(g) != string(w) {
				t.Fatalf("got  %s\nwant %s", out, tc.want)
			}
		})
	}
}

func TestStringTransformLimits(t *testing.T) {
	small := StringTransformConfig{MaxBytes: 64, MaxParts: 4}
	for _, tc := range []struct {
		name  string
		input string
		ops   string
		code  string
	}{
		{"repeat past the cap", "abc", `[{"op": "repeat", "count": 1048576}]`, "output_too_large"},
		{"repeat to the cap", strings.Repeat("a", 16), `[{"op": "repeat", "count": 4}]`, ""},
		{"pad past the cap", "a", `[{"op": "pad_left", "width": 1048576, "char": "€"}]`, "output_too_large"},
		{"replace that explodes", strings.Repeat("a", 32), `[{"op": "replace", "old": "a", "new": "aaaa"}]`, "output_too_large"},
		{"replace of the empty string that explodes", strings.Repeat("a", 32), `[{"op": "replace", "old": "", "new": "bb"}]`, "output_too_large"},
		{"repeated doubling", "abc", `[{"op": "repeat", "count": 2}, {"op": "repeat", "count": 2}, {"op": "repeat", "count": 2}, {"op": "repeat", "count": 2}, {"op": "repeat", "count": 2}]`, "output_too_large"},
		{"base64 growth", strings.Repeat("a", 60), `[{"op": "base64_encode"}]`, "output_too_large"},
		{"hex growth", strings.Repeat("a", 40), `[{"op": "hex_encode"}]`, "output_too_large"},
		{"url growth", strings.Repeat("/", 30), `[{"op": "url_encode"}]`, "output_too_large"},
		{"case mapping growth (2 bytes upper-case to 6)", strings.Repeat("ΐ", 20), `[{"op": "upper"}]`, "output_too_large"},
		{"NFKD growth in slugify", strings.Repeat("ﷺ", 10), `[{"op": "slugify"}]`, "output_too_large"},
		{"input over the cap", strings.Repeat("a", 65), `[{"op": "trim"}]`, "input_too_large"},
		{"too many parts", "a,b,c,d,e", `[{"op": "split", "sep": ","}]`, "too_many_parts"},
		{"split must be last", "a,b", `[{"op": "split", "sep": ","}, {"op": "upper"}]`, "split_not_last"},
		{"invalid base64", "@@@", `[{"op": "base64_decode"}]`, "invalid_base64"},
		{"invalid hex", "zz", `[{"op": "hex_decode"}]`, "invalid_hex"},
		{"invalid url encoding", "%zz", `[{"op": "url_decode"}]`, "invalid_url_encoding"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tool := NewStringTransform(small)
			_, err := toolsBCall(t, toolsBRegistry(t, tool), tool, `{"input": `+toolsBQuote(tc.input)+`, "operations": `+tc.ops+`}`)
			if got := toolsBCode(err); got != tc.code {
				t.Fatalf("code %q, want %q (%v)", got, tc.code, err)
			}
		})
	}
	tool := NewStringTransform(StringTransformConfig{MaxOperations: 2})
	_, err := tool.Run(context.Background(), json.RawMessage(`{"input": "a", "operations": [{"op": "upper"}, {"op": "upper"}, {"op": "upper"}]}`))
	if got := toolsBCode(err); got != "too_many_operations" {
		t.Fatalf("code %q, want too_many_operations", got)
	}
}

func TestStringTransformArgsRejected(t *testing.T) {
	reg := toolsBRegistry(t, NewStringTransform())
	many := strings.TrimSuffix(strings.Repeat(`{"op": "upper"},`, 33), ",")
	for _, tc := range []struct {
		name, args, field string
	}{
		{"missing input", `{"operation": {"op": "upper"}}`, "/input"},
		{"no operation", `{"input": "a"}`, "/operations"},
		{"both operation and operations", `{"input": "a", "operation": {"op": "upper"}, "operations": [{"op": "upper"}]}`, ""},
		{"empty operations", `{"input": "a", "operations": []}`, "/operations"},
		{"too many operations", `{"input": "a", "operations": [` + many + `]}`, "/operations"},
		{"unknown op", `{"input": "a", "operation": {"op": "rot13"}}`, "/operation/op"},
		{"missing op", `{"input": "a", "operation": {}}`, "/operation/op"},
		{"replace without new", `{"input": "a", "operation": {"op": "replace", "old": "a"}}`, "/operation/new"},
		{"substring without start", `{"input": "a", "operations": [{"op": "substring"}]}`, "/operations/0/start"},
		{"parameter the op does not take", `{"input": "a", "operation": {"op": "upper", "width": 3}}`, "/operation/width"},
		{"unknown parameter", `{"input": "a", "operation": {"op": "upper", "locale": "tr"}}`, "/operation/locale"},
		{"pad char of two characters", `{"input": "a", "operation": {"op": "pad_left", "width": 3, "char": "ab"}}`, "/operation/char"},
		{"negative repeat", `{"input": "a", "operation": {"op": "repeat", "count": -1}}`, "/operation/count"},
		{"repeat too large", `{"input": "a", "operation": {"op": "repeat", "count": 1048577}}`, "/operation/count"},
		{"input too long", `{"input": "` + strings.Repeat("a", 262145) + `", "operation": {"op": "upper"}}`, "/input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := toolsBArgsField(t, reg, "string_transform", tc.args); got != tc.field {
				t.Fatalf("field %q, want %q", got, tc.field)
			}
		})
	}
}

// TestStringTransformSchemaCoversEveryOperation keeps the schema's enum and the
// implementation in step: every listed operation runs, with its required parameters.
func TestStringTransformSchemaCoversEveryOperation(t *testing.T) {
	params := map[string]string{
		"old": `"a"`, "new": `"b"`, "start": `0`, "width": `2`, "count": `2`, "length": `1`, "sep": `","`,
	}
	var ops []string
	for op := range stringtransformParams {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	tool := NewStringTransform()
	reg := toolsBRegistry(t, tool)
	for _, op := range ops {
		fields := []string{`"op": "` + op + `"`}
		for _, p := range stringtransformParams[op].required {
			fields = append(fields, `"`+p+`": `+params[p])
		}
		input := "YQ=="
		if op == "hex_decode" {
			input = "61"
		}
		if _, err := toolsBCall(t, reg, tool, `{"input": "`+input+`", "operation": {`+strings.Join(fields, ", ")+`}}`); err != nil {
			t.Errorf("%s: %v", op, err)
		}
	}
}

func TestStringTransformContext(t *testing.T) {
	tool := NewStringTransform()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, call := range []func(context.Context, json.RawMessage) (any, error){tool.Simulate, tool.Run} {
		if _, err := call(ctx, json.RawMessage(`{"input": "a", "operation": {"op": "upper"}}`)); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	}
}
