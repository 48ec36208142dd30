package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// Helpers shared by the tests of json_parse, schema_validate, math_compute, string_transform
// and data_filter; prefixed so they cannot collide with the other tools' tests.

// toolsBRegistry builds a registry of the given tools, failing the test if a schema does not
// compile.
func toolsBRegistry(t testing.TB, tools ...Tool) *Registry {
	t.Helper()
	reg, err := NewRegistry(tools...)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	return reg
}

// toolsBCall validates args through the registry, then runs the tool in both modes and
// requires both to agree: these tools are pure, so the dry run is the real answer.
func toolsBCall(t *testing.T, reg *Registry, tool Tool, args string) (json.RawMessage, error) {
	t.Helper()
	valid, err := reg.Validate(tool.Name(), json.RawMessage(args))
	if err != nil {
		t.Fatalf("Validate(%s): %v", args, err)
	}
	ctx := context.Background()
	simOut, simErr := tool.Simulate(ctx, valid)
	runOut, runErr := tool.Run(ctx, valid)
	if !reflect.DeepEqual(simErr, runErr) {
		t.Fatalf("Simulate error %v, Run error %v", simErr, runErr)
	}
	if runErr != nil {
		return nil, runErr
	}
	simJSON, err := json.Marshal(simOut)
	if err != nil {
		t.Fatalf("marshal Simulate output: %v", err)
	}
	runJSON, err := json.Marshal(runOut)
	if err != nil {
		t.Fatalf("marshal Run output: %v", err)
	}
	if !bytes.Equal(simJSON, runJSON) {
		t.Fatalf("Simulate %s, Run %s", simJSON, runJSON)
	}
	return runJSON, nil
}

// toolsBCode is the ToolError code of err, "" for nil and "!" for any other error.
func toolsBCode(err error) string {
	if err == nil {
		return ""
	}
	var te *ToolError
	if errors.As(err, &te) {
		return te.Code
	}
	return "!" + err.Error()
}

// toolsBArgsField validates args that must be refused and returns the offending field.
func toolsBArgsField(t *testing.T, reg *Registry, tool, args string) string {
	t.Helper()
	_, err := reg.Validate(tool, json.RawMessage(args))
	var ae *ArgsError
	if !errors.As(err, &ae) {
		t.Fatalf("Validate(%s) = %v, want an *ArgsError", args, err)
	}
	if !errors.Is(err, ErrInvalidArgs) {
		t.Fatalf("ArgsError does not wrap ErrInvalidArgs")
	}
	return ae.Field
}

// toolsBNoNUL fails if the encoded output holds U+0000 (escaped, as encoding/json writes it),
// which the audit store cannot hold.
func toolsBNoNUL(t testing.TB, out []byte) {
	t.Helper()
	if bytes.Contains(out, []byte(`\u0000`)) || bytes.IndexByte(out, 0) >= 0 {
		t.Fatalf("output contains U+0000: %.200s", out)
	}
}

// toolsBFuzzRun validates and runs like the gateway does, under a deadline, and checks the
// invariants every tool keeps: no panic (the fuzzer would report it), an error is a ToolError
// or ctx's, and the output encodes, fits the runner's cap and holds no U+0000.
func toolsBFuzzRun(t *testing.T, reg *Registry, tool Tool, args []byte) []byte {
	valid, err := reg.Validate(tool.Name(), args)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := tool.Run(ctx, valid)
	if err != nil {
		var te *ToolError
		if !errors.As(err, &te) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error is neither a ToolError nor the deadline: %v", err)
		}
		return nil
	}
	enc, err := json.Marshal(out)
	if err != nil {
		t.Fatalf("output does not encode: %v", err)
	}
	if a, ok := out.(jsonAppender); ok {
		if own := a.AppendJSON(nil); !bytes.Equal(own, enc) {
			t.Fatalf("AppendJSON differs from json.Marshal:\n own %s\nwant %s", own, enc)
		}
	}
	if len(enc) > DefaultLimits.MaxOutputBytes {
		t.Fatalf("output is %d bytes", len(enc))
	}
	toolsBNoNUL(t, enc)
	return enc
}

func FuzzJSONParse(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `[1,2`, `{"a":1,"a":2}`, `"\u0000"`, `1e400`, `{} x`, `"\ud800"`, `[[[[[[]]]]]]`, ``, `-0.0e-0`} {
		f.Add(s, uint8(0))
	}
	tool := NewJSONParse()
	reg := toolsBRegistry(f, tool)
	f.Fuzz(func(t *testing.T, text string, maxDepth uint8) {
		if !utf8.ValidString(text) {
			return // JSON args cannot carry it: encoding turns each bad byte into U+FFFD
		}
		args := map[string]any{"text": text}
		if maxDepth > 0 {
			args["maxDepth"] = int(maxDepth)
		}
		raw, _ := json.Marshal(args)
		enc := toolsBFuzzRun(t, reg, tool, raw)
		if enc == nil {
			return
		}
		var out JSONParseOutput
		if err := json.Unmarshal(enc, &out); err != nil {
			t.Fatalf("output does not decode: %v", err)
		}
		// Agreement with encoding/json: whatever we accept, it accepts.
		if out.Valid && !json.Valid([]byte(text)) {
			t.Fatalf("accepted invalid JSON %q", text)
		}
		if out.Valid {
			// The value says what the text says (encoding/json also turns a lone surrogate
			// into U+FFFD, so the two agree there too).
			var fromText, fromValue any
			if err := toolsBDecode([]byte(text), &fromText); err != nil {
				t.Fatalf("text: %v", err)
			}
			if err := toolsBDecode(out.Value, &fromValue); err != nil {
				t.Fatalf("value is not JSON: %q", out.Value)
			}
			if !reflect.DeepEqual(fromText, fromValue) {
				t.Fatalf("value %s differs from text %q", out.Value, text)
			}
		}
		if !out.Valid && (out.Error == nil || out.Error.Offset < 0 || out.Error.Offset > len(text)) {
			t.Fatalf("invalid without a located error: %+v", out.Error)
		}
	})
}

func FuzzMathCompute(f *testing.F) {
	for _, s := range []string{"2+3*4", "sum(xs) / len(xs)", "x ** y", "map(xs, # * x) | sum()", "1/0", "x % 0",
		"reduce(1..100, #acc * 2, 1)", "let z = x; z > y ? z : y", "$env", "xs[1:2]", "max(xs) - min(xs)", "-(-(-x))"} {
		f.Add(s, int64(3), 2.5)
	}
	tool := NewMathCompute(MathComputeConfig{MaxSteps: 20_000, MemoryBudget: 100_000})
	reg := toolsBRegistry(f, tool)
	f.Fuzz(func(t *testing.T, expression string, x int64, y float64) {
		raw, err := json.Marshal(map[string]any{"expression": expression, "variables": map[string]any{"x": x, "y": y, "xs": []int64{x, 1, 2}}})
		if err != nil {
			return // y is NaN or Inf: not JSON
		}
		enc := toolsBFuzzRun(t, reg, tool, raw)
		if enc == nil {
			return
		}
		var out MathComputeOutput
		if err := json.Unmarshal(enc, &out); err != nil {
			t.Fatalf("output does not decode: %v", err)
		}
		switch out.Type {
		case "integer", "float":
			if bytes.ContainsAny(out.Result, "eE") {
				t.Fatalf("number printed with an exponent: %s", out.Result)
			}
		case "boolean":
		default:
			t.Fatalf("result type %q", out.Type)
		}
	})
}

func FuzzStringTransform(f *testing.F) {
	f.Add("Hello, World", []byte(`[{"op":"upper"},{"op":"slugify"}]`))
	f.Add("AAAA", []byte(`[{"op":"base64_decode"}]`))
	f.Add("ab", []byte(`[{"op":"repeat","count":1000000}]`))
	f.Add("a,b,,c", []byte(`[{"op":"split","sep":","}]`))
	f.Add("ﷺﷺﷺ", []byte(`[{"op":"slugify"},{"op":"pad_left","width":40,"char":"ß"},{"op":"upper"}]`))
	f.Add("x", []byte(`[{"op":"replace","old":"","new":"yy"},{"op":"substring","start":-3,"end":-1}]`))
	f.Add("%00%ff", []byte(`[{"op":"url_decode"},{"op":"reverse"}]`))
	tool := NewStringTransform(StringTransformConfig{MaxBytes: 64 << 10})
	reg := toolsBRegistry(f, tool)
	f.Fuzz(func(t *testing.T, input string, ops []byte) {
		if !json.Valid(ops) {
			return
		}
		raw := []byte(`{"input":` + toolsBQuote(input) + `,"operations":` + string(ops) + `}`)
		enc := toolsBFuzzRun(t, reg, tool, raw)
		if enc == nil {
			return
		}
		var out StringTransformOutput
		if err := json.Unmarshal(enc, &out); err != nil {
			t.Fatalf("output does not decode: %v", err)
		}
		if s, ok := out.Result.(string); ok {
			if len(s) > 2*(64<<10) { // base64 of the cap is 4/3 of it
				t.Fatalf("result is %d bytes", len(s))
			}
			if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("result is not storable text: %q", s)
			}
		}
	})
}

func FuzzDataFilter(f *testing.F) {
	f.Add([]byte(`[{"a":1,"b":"x"},{"a":"1"},{"a":1.0,"c":[1,2]},{}]`), []byte(`[{"field":"a","op":"gte","value":1}]`), []byte(`[{"field":"a","order":"desc"}]`))
	f.Add([]byte(`[{"a":{"b":[{"c":null}]}}]`), []byte(`[{"field":"a.b.0.c","op":"exists"}]`), []byte(`[]`))
	f.Add([]byte(`[{"n":12345678901234567890},{"n":1e400},{"n":-0}]`), []byte(`[{"field":"n","op":"in","value":[0,1e400]}]`), []byte(`[{"field":"n"}]`))
	f.Add([]byte(`[{"s":"abc"}]`), []byte(`[{"field":"s","op":"regex","value":"^a.*c$"}]`), []byte(`[{"field":"s"},{"field":"t","order":"asc"}]`))
	tool := NewDataFilter()
	reg := toolsBRegistry(f, tool)
	f.Fuzz(func(t *testing.T, data, where, sortBy []byte) {
		if !json.Valid(data) || !json.Valid(where) || !json.Valid(sortBy) {
			return
		}
		raw := []byte(`{"data":` + string(data) + `,"where":` + string(where) + `,"sort":` + string(sortBy) + `}`)
		enc := toolsBFuzzRun(t, reg, tool, raw)
		if enc == nil {
			return
		}
		var out DataFilterOutput
		if err := json.Unmarshal(enc, &out); err != nil {
			t.Fatalf("output does not decode: %v", err)
		}
		if out.Returned != len(out.Items) || out.Returned > out.Limit || out.Total < out.Returned {
			t.Fatalf("inconsistent counts: total %d returned %d items %d limit %d", out.Total, out.Returned, len(out.Items), out.Limit)
		}
	})
}

func toolsBDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(v)
}

func toolsBQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestToolsBThroughRunner runs each tool through the Runner in both modes, as the gateway
// does: the output must be completed, encodable and free of U+0000.
func TestToolsBThroughRunner(t *testing.T) {
	reg := toolsBRegistry(t, NewJSONParse(), NewSchemaValidate(), NewMathCompute(), NewStringTransform(), NewDataFilter())
	for _, info := range reg.List() {
		if info.Description == "" || strings.Contains(info.Description, "\n") {
			t.Fatalf("%s: description must be one non-empty line", info.Name)
		}
	}
	runner := NewRunner(reg, Limits{}, nil)
	calls := []struct{ tool, args string }{
		{"json_parse", `{"text": "{\"a\": [1, 2]}"}`},
		{"schema_validate", `{"schema": {"type": "integer"}, "data": "x"}`},
		{"math_compute", `{"expression": "sum(xs) * 2", "variables": {"xs": [1, 2, 3]}}`},
		{"string_transform", `{"input": "AAAA", "operation": {"op": "base64_decode"}}`},
		{"data_filter", `{"data": [{"a": 2}, {"a": 1}], "sort": [{"field": "a"}]}`},
	}
	for _, c := range calls {
		for _, dry := range []bool{true, false} {
			args, err := reg.Validate(c.tool, json.RawMessage(c.args))
			if err != nil {
				t.Fatalf("%s: %v", c.tool, err)
			}
			res, status, err := runner.Run(context.Background(), Call{Tool: c.tool, Args: args, DryRun: dry})
			if err != nil || status != StatusCompleted || res.ExitCode != ExitOK || res.Simulated != dry {
				t.Fatalf("%s dry=%v: status %q exit %d err %v tool error %+v", c.tool, dry, status, res.ExitCode, err, res.Error)
			}
			toolsBNoNUL(t, res.Output)
		}
	}
}

// toolsBCountdownCtx is a context whose Err reports cancellation after a number of calls,
// which makes "the tool checks ctx while it works, not only at the start" testable without
// racing a timer.
type toolsBCountdownCtx struct {
	context.Context
	left atomic.Int64
}

func toolsBCountdown(n int64) *toolsBCountdownCtx {
	c := &toolsBCountdownCtx{Context: context.Background()}
	c.left.Store(n)
	return c
}

func (c *toolsBCountdownCtx) Err() error {
	if c.left.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// TestToolsBNoticeCancellationMidway lets each tool pass its first ctx check and cancels
// at the next one, which only a check inside the tool's main loop can see.
func TestToolsBNoticeCancellationMidway(t *testing.T) {
	items := strings.TrimSuffix(strings.Repeat(`{"a": 1},`, 1500), ",")
	for _, tc := range []struct {
		tool Tool
		args string
	}{
		{NewJSONParse(), `{"data": [` + items + `]}`},
		{NewSchemaValidate(), `{"schema": {"items": {"type": "object"}}, "data": [` + items + `]}`},
		{NewMathCompute(), `{"expression": "count(1..1000, # > 0)"}`},
		{NewStringTransform(), `{"input": "a", "operations": [{"op": "upper"}, {"op": "lower"}, {"op": "upper"}]}`},
		{NewDataFilter(), `{"data": [` + items + `], "where": [{"field": "a", "op": "eq", "value": 1}]}`},
	} {
		t.Run(tc.tool.Name(), func(t *testing.T) {
			for _, call := range []func(context.Context, json.RawMessage) (any, error){tc.tool.Simulate, tc.tool.Run} {
				if _, err := call(toolsBCountdown(1), json.RawMessage(tc.args)); !errors.Is(err, context.Canceled) {
					t.Fatalf("error %v, want context.Canceled", err)
				}
			}
		})
	}
}
