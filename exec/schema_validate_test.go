package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// schemavalidateDoubling returns a schema whose $defs each reference the previous one twice:
// a few hundred bytes that ask for 2^n evaluations. wrap places the top reference ("REF").
func schemavalidateDoubling(n int, wrap string) string {
	defs := []string{`"a0": {"type": "object"}`}
	for i := 1; i <= n; i++ {
		defs = append(defs, fmt.Sprintf(`"a%d": {"allOf": [{"$ref": "#/$defs/a%d"}, {"$ref": "#/$defs/a%d"}]}`, i, i-1, i-1))
	}
	ref := fmt.Sprintf(`{"$ref": "#/$defs/a%d"}`, n)
	return fmt.Sprintf(`{"$defs": {%s}, %s}`, strings.Join(defs, ", "), strings.ReplaceAll(wrap, "REF", ref))
}

// schemavalidateFanOut is the reported attack: anyOf of six branches that each recurse into
// the items, over data nested depth levels deep, so that every level multiplies the work by
// six and every evaluation fails.
func schemavalidateFanOut(depth int) string {
	branch := `{"type": "array", "items": {"$ref": "#"}}`
	return `{"schema": {"anyOf": [` + strings.Repeat(branch+", ", 6) + `{"type": "number"}]}, "data": ` +
		strings.Repeat("[", depth) + `"x"` + strings.Repeat("]", depth) + `}`
}

// schemavalidateNested returns data: inner wrapped in depth arrays.
func schemavalidateNested(depth int, inner string) string {
	return strings.Repeat("[", depth) + inner + strings.Repeat("]", depth)
}

func TestSchemaValidate(t *testing.T) {
	tool := NewSchemaValidate()
	reg := toolsBRegistry(t, tool)
	for _, tc := range []struct {
		name, args, want string
	}{
		{"valid", `{"schema": {"type": "string", "minLength": 2}, "data": "ok"}`,
			`{"valid":true,"draft":"2020-12","errors":[],"errorCount":0}`},
		{"errors name instance and keyword", `{"schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["b"]}, "data": {"a": "x"}}`,
			`{"valid":false,"draft":"2020-12","errors":[{"instanceLocation":"","keywordLocation":"/required","message":"missing property 'b'"},{"instanceLocation":"/a","keywordLocation":"/properties/a/type","message":"got string, want integer"}],"errorCount":2}`},
		{"internal $ref and $defs", `{"schema": {"$defs": {"p": {"type": "integer", "minimum": 3}}, "items": {"$ref": "#/$defs/p"}}, "data": [1, 5, 2]}`,
			`{"valid":false,"draft":"2020-12","errors":[{"instanceLocation":"/0","keywordLocation":"/items/$ref/minimum","message":"minimum: got 1, want 3"},{"instanceLocation":"/2","keywordLocation":"/items/$ref/minimum","message":"minimum: got 2, want 3"}],"errorCount":2}`},
		{"$anchor", `{"schema": {"$defs": {"s": {"$anchor": "str", "type": "string"}}, "$ref": "#str"}, "data": "x"}`,
			`{"valid":true,"draft":"2020-12","errors":[],"errorCount":0}`},
		{"recursive schema over nested data", `{"schema": {"$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}, "data": {"kids": [{"kids": []}, {"kids": [1]}]}}`,
			`{"valid":false,"draft":"2020-12","errors":[{"instanceLocation":"/kids/1/kids/0","keywordLocation":"/$ref/properties/kids/items/$ref/properties/kids/items/$ref/type","message":"got number, want object"}],"errorCount":1}`},
		{"true schema", `{"schema": true, "data": {"any": "thing"}}`, `{"valid":true,"draft":"2020-12","errors":[],"errorCount":0}`},
		{"false schema", `{"schema": false, "data": 1}`,
			`{"valid":false,"draft":"2020-12","errors":[{"instanceLocation":"","keywordLocation":"","message":"false schema"}],"errorCount":1}`},
		{"draft-07 by $schema", `{"schema": {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}]}, "data": [1]}`,
			`{"valid":false,"draft":"draft-07","errors":[{"instanceLocation":"/0","keywordLocation":"/items/0/type","message":"got number, want string"}],"errorCount":1}`},
		{"draft 2019-09 by $schema", `{"schema": {"$schema": "https://json-schema.org/draft/2019-09/schema", "type": "null"}, "data": null}`,
			`{"valid":true,"draft":"2019-09","errors":[],"errorCount":0}`},
		{"format is an annotation in 2020-12", `{"schema": {"format": "email"}, "data": "not an email"}`,
			`{"valid":true,"draft":"2020-12","errors":[],"errorCount":0}`},
		{"format is asserted in draft-07", `{"schema": {"$schema": "http://json-schema.org/draft-07/schema#", "items": {"format": "email"}}, "data": ["a@b.c", "not an email"]}`,
			`{"valid":false,"draft":"draft-07","errors":[{"instanceLocation":"/1","keywordLocation":"/items/format","message":"'not an email' is not valid email: missing @"}],"errorCount":1}`},
		{"U+0000 in data", `{"schema": {"const": "a"}, "data": "b\u0000"}`,
			`{"valid":false,"draft":"2020-12","errors":[{"instanceLocation":"","keywordLocation":"/const","message":"value must be 'a'"}],"errorCount":1}`},
		{"U+0000 in a message is quoted", `{"schema": {"additionalProperties": false}, "data": {"k\u0000": 1}}`,
			`{"valid":false,"draft":"2020-12","errors":[{"instanceLocation":"","keywordLocation":"/additionalProperties","message":"additional properties 'k\\x00' not allowed"}],"errorCount":1}`},
		{"U+0000 in a location is replaced", `{"schema": {"additionalProperties": {"type": "string"}}, "data": {"k\u0000": 1}}`,
			`{"valid":false,"draft":"2020-12","errors":[{"instanceLocation":"/k` + "\uFFFD" + `","keywordLocation":"/additionalProperties/type","message":"got number, want string"}],"errorCount":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := toolsBCall(t, reg, tool, tc.args)
			if err != nil {
				t.Fatalf("error %v", err)
			}
			toolsBNoNUL(t, out)
			if string(out) != tc.want {
				t.Fatalf("got  %s\nwant %s", out, tc.want)
			}
		})
	}
}

func TestSchemaValidateRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  SchemaValidateConfig
		args string
		code string
	}{
		{"remote $ref", SchemaValidateConfig{}, `{"schema": {"$ref": "https://example.com/s.json"}, "data": 1}`, "schema_ref_not_allowed"},
		{"file $ref", SchemaValidateConfig{}, `{"schema": {"$ref": "file:///etc/passwd"}, "data": 1}`, "schema_ref_not_allowed"},
		{"relative $ref", SchemaValidateConfig{}, `{"schema": {"$ref": "other.json#/x"}, "data": 1}`, "schema_ref_not_allowed"},
		{"remote $ref under $id", SchemaValidateConfig{}, `{"schema": {"$id": "http://127.0.0.1/s.json", "properties": {"a": {"$ref": "t.json"}}}, "data": 1}`, "schema_ref_not_allowed"},
		{"unknown metaschema", SchemaValidateConfig{}, `{"schema": {"$schema": "https://example.com/meta", "type": "string"}, "data": 1}`, "unsupported_schema_draft"},
		{"schema invalid against its metaschema", SchemaValidateConfig{}, `{"schema": {"type": "strin"}, "data": 1}`, "invalid_schema"},
		{"bad regex in the schema", SchemaValidateConfig{}, `{"schema": {"pattern": "(["}, "data": "x"}`, "invalid_schema"},
		{"missing internal $ref", SchemaValidateConfig{}, `{"schema": {"$ref": "#/$defs/nope"}, "data": 1}`, "invalid_schema"},
		{"exponential schema stops at the budget", SchemaValidateConfig{}, `{"schema": ` + schemavalidateDoubling(40, `"allOf": [REF]`) + `, "data": {}}`, "evaluation_budget_exceeded"},
		{"exponential schema under anyOf", SchemaValidateConfig{MaxEvaluations: 50_000}, `{"schema": ` + schemavalidateDoubling(40, `"anyOf": [REF, {"type": "null"}]`) + `, "data": 1}`, "evaluation_budget_exceeded"},
		// Under not, the validator only asks whether the subschema fails, and skips a
		// vocabulary's hook after any failure: 2^21 evaluations that no budget or deadline saw.
		{"exponential schema under not", SchemaValidateConfig{}, `{"schema": {"$defs": {` + schemavalidateDependentDoubling(20) + `}, "not": {"$ref": "#/$defs/a20"}}, "data": {"x": 1, "y": 1}}`, "evaluation_budget_exceeded"},
		{"anyOf fan-out over nested data", SchemaValidateConfig{}, schemavalidateFanOut(60), "evaluation_budget_exceeded"},
		// Evaluations that fail at their type check count too: 300 of them per item here.
		{"wide anyOf over every item", SchemaValidateConfig{MaxEvaluations: 50_000}, `{"schema": {"anyOf": [` + strings.Repeat(`{"type": "string"}, `, 300) + `{"items": {"$ref": "#"}}]}, "data": [` + strings.Repeat("0, ", 999) + `0]}`, "evaluation_budget_exceeded"},
		// 400 items and their 400 evaluations fit in 1000 for flat data; 20 levels deeper they
		// take 440, but the budget for data 21 levels deep is 1000 × 20/41.
		{"flat data within the budget", SchemaValidateConfig{MaxEvaluations: 1000}, `{"schema": {"items": {"$ref": "#"}}, "data": [` + strings.Repeat("0, ", 399) + `0]}`, ""},
		{"deep data has a smaller budget", SchemaValidateConfig{MaxEvaluations: 1000}, `{"schema": {"items": {"$ref": "#"}}, "data": ` + schemavalidateNested(20, `[`+strings.Repeat("0, ", 399)+`0]`) + `}`, "evaluation_budget_exceeded"},
		{"schema too large", SchemaValidateConfig{MaxSchemaBytes: 32}, `{"schema": {"description": "` + strings.Repeat("x", 32) + `"}, "data": 1}`, "schema_too_large"},
		{"schema too deep", SchemaValidateConfig{MaxSchemaDepth: 4}, `{"schema": {"items": {"items": {"items": {"items": {}}}}}, "data": 1}`, "schema_too_deep"},
		{"data too large", SchemaValidateConfig{MaxDataBytes: 8}, `{"schema": true, "data": "` + strings.Repeat("x", 8) + `"}`, "data_too_large"},
		{"data too deep", SchemaValidateConfig{MaxDataDepth: 3}, `{"schema": true, "data": [[[[1]]]]}`, "data_too_deep"},
		{"data at the depth limit", SchemaValidateConfig{MaxDataDepth: 3}, `{"schema": true, "data": [[[1]]]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tool := NewSchemaValidate(tc.cfg)
			start := time.Now()
			_, err := toolsBCall(t, toolsBRegistry(t, tool), tool, tc.args)
			if got := toolsBCode(err); got != tc.code {
				t.Fatalf("code %q, want %q (%v)", got, tc.code, err)
			}
			if d := time.Since(start); d > 10*time.Second { // guards against a hang, not a speed
				t.Fatalf("took %v", d)
			}
		})
	}
}

// schemavalidateDependentDoubling returns $defs a0..an where each a(i) applies a(i-1) twice
// through dependentSchemas, and a0 fails on an object.
func schemavalidateDependentDoubling(n int) string {
	defs := []string{`"a0": {"type": "string"}`}
	for i := 1; i <= n; i++ {
		defs = append(defs, fmt.Sprintf(`"a%d": {"dependentSchemas": {"x": {"$ref": "#/$defs/a%d"}, "y": {"$ref": "#/$defs/a%d"}}}`, i, i-1, i-1))
	}
	return strings.Join(defs, ", ")
}

// TestSchemaValidateMemory bounds what one call allocates, with the default configuration.
// Before the budget counted evaluations ahead of the work, the fan-out call (400 bytes)
// allocated 1 GB and held most of it until the budget noticed, and the wide anyOf call
// allocated until the process ran out of memory. The bound is loose (the calls measure
// about 45 MB; a failing evaluation keeps about 300 bytes) so that it holds across Go and
// library versions, yet a budget that lets the error tree grow unchecked fails it.
func TestSchemaValidateMemory(t *testing.T) {
	const bound = 64 << 20
	for _, tc := range []struct {
		name, args, code string
	}{
		{"anyOf fan-out over 60 levels", schemavalidateFanOut(60), "evaluation_budget_exceeded"},
		{"anyOf fan-out over 10 levels", schemavalidateFanOut(10), "evaluation_budget_exceeded"},
		{"wide anyOf over every item", `{"schema": {"anyOf": [` + strings.Repeat(`{"type": "string"}, `, 300) + `{"items": {"$ref": "#"}}]}, "data": [` + strings.Repeat("0, ", 19_999) + `0]}`, "evaluation_budget_exceeded"},
		// Within the budget, but failing everywhere: the errors listed are few, the error
		// tree is large, and only the listed ones may be turned into output.
		{"fan-out that fits the budget", schemavalidateFanOut(5), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tool := NewSchemaValidate()
			args, err := toolsBRegistry(t, tool).Validate(tool.Name(), json.RawMessage(tc.args))
			if err != nil {
				t.Fatalf("args refused: %v", err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err = tool.Simulate(context.Background(), args)
			runtime.ReadMemStats(&after)
			if got := toolsBCode(err); got != tc.code {
				t.Fatalf("code %q, want %q (%v)", got, tc.code, err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > bound {
				t.Fatalf("one call allocated %d MB, want at most %d MB", alloc>>20, bound>>20)
			}
		})
	}
}

func TestSchemaValidateErrorCap(t *testing.T) {
	tool := NewSchemaValidate(SchemaValidateConfig{MaxErrors: 3})
	out, err := toolsBCall(t, toolsBRegistry(t, tool), tool, `{"schema": {"items": {"type": "string"}}, "data": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}`)
	if err != nil {
		t.Fatal(err)
	}
	var got SchemaValidateOutput
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Valid || len(got.Errors) != 3 || got.ErrorCount != 10 || !got.Truncated || got.Errors[2].InstanceLocation != "/2" {
		t.Fatalf("got %s", out)
	}
}

func TestSchemaValidateLongMessagesAreClipped(t *testing.T) {
	tool := NewSchemaValidate()
	long := strings.Repeat("é", 2000)
	out, err := toolsBCall(t, toolsBRegistry(t, tool), tool, `{"schema": {"pattern": "^a"}, "data": "`+long+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	var got SchemaValidateOutput
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Errors) != 1 || len(got.Errors[0].Message) > 512+len("…") || !strings.HasSuffix(got.Errors[0].Message, "…") {
		t.Fatalf("message not clipped: %d bytes", len(got.Errors[0].Message))
	}
}

func TestSchemaValidateArgsRejected(t *testing.T) {
	reg := toolsBRegistry(t, NewSchemaValidate())
	for _, tc := range []struct {
		name, args, field string
	}{
		{"missing schema", `{"data": 1}`, "/schema"},
		{"missing data", `{"schema": {}}`, "/data"},
		{"schema is a string", `{"schema": "x", "data": 1}`, "/schema"},
		{"unknown property", `{"schema": {}, "data": 1, "draft": "7"}`, "/draft"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := toolsBArgsField(t, reg, "schema_validate", tc.args); got != tc.field {
				t.Fatalf("field %q, want %q", got, tc.field)
			}
		})
	}
}

func TestSchemaValidateContext(t *testing.T) {
	tool := NewSchemaValidate()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, call := range []func(context.Context, json.RawMessage) (any, error){tool.Simulate, tool.Run} {
		if _, err := call(ctx, json.RawMessage(`{"schema": true, "data": 1}`)); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	}

	// With the budget out of the way, the deadline alone must stop an exponential validation.
	unbounded := NewSchemaValidate(SchemaValidateConfig{MaxEvaluations: 1 << 50})
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := unbounded.Run(ctx, json.RawMessage(`{"schema": `+schemavalidateDoubling(60, `"allOf": [REF]`)+`, "data": {}}`))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("returned %v after the deadline", d)
	}
}

// pattern and patternProperties are compiled under regex_match's instruction cap, and every
// match costs an evaluation and stops at the deadline: Go's regexp cannot be interrupted, and
// the budget hook never ran inside a match.
func TestSchemaValidatePatternBoundedByDeadline(t *testing.T) {
	reg := toolsBRegistry(t, NewSchemaValidate())
	long := strings.Repeat("a", 14000)
	slow := strings.Repeat(`[^x]{990}`, 10) + "x" // 9903 instructions, just under the cap
	for _, tc := range []struct {
		name   string
		schema map[string]any
		data   any
		code   string // "" for the deadline
	}{
		{"pattern over the instruction cap", map[string]any{"type": "string", "pattern": strings.Repeat(`[^x]{1000}`, 10) + "x"}, long, "invalid_schema"},
		{"patternProperties over the instruction cap", map[string]any{"patternProperties": map[string]any{strings.Repeat(`[^x]{1000}`, 10) + "x": true}}, map[string]any{"k": 1}, "invalid_schema"},
		{"pattern under the cap", map[string]any{"type": "string", "pattern": slow}, long, ""},
		{"patternProperties under the cap", map[string]any{"patternProperties": map[string]any{slow: true}}, map[string]any{long: 1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, _ := json.Marshal(map[string]any{"schema": tc.schema, "data": tc.data})
			err := runSchemaValidate(t, args, 50*time.Millisecond, time.Second)
			if tc.code == "" && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error %v, want the deadline", err)
			}
			if tc.code != "" && toolsBCode(err) != tc.code {
				t.Fatalf("error %v, want %s", err, tc.code)
			}
		})
	}
	// A match is an evaluation: 2000 property names against 50 patterns exceed a budget of
	// 50,000 that the property count alone would not.
	var props []string
	for i := 0; i < 2000; i++ {
		props = append(props, fmt.Sprintf(`"p%d": 1`, i))
	}
	pats := map[string]any{}
	for i := 0; i < 50; i++ {
		pats[fmt.Sprintf("^q%d$", i)] = true
	}
	schema, _ := json.Marshal(map[string]any{"patternProperties": pats})
	_, err := NewSchemaValidate(SchemaValidateConfig{MaxEvaluations: 150_000}).Run(context.Background(),
		json.RawMessage(`{"schema": `+string(schema)+`, "data": {`+strings.Join(props, ", ")+`}}`))
	if toolsBCode(err) != "evaluation_budget_exceeded" {
		t.Fatalf("error %v, want evaluation_budget_exceeded", err)
	}
	// Patterns still work (one error per call: the library's order between properties varies).
	schema = []byte(`{"patternProperties": {"^a": {"type": "integer"}}, "properties": {"s": {"pattern": "^x+$"}}}`)
	for data, want := range map[string]string{
		`{"ab": 1, "s": "xx"}`:    `"valid":true`,
		`{"ab": 1, "s": "xxy"}`:   `"keywordLocation":"/properties/s/pattern"`,
		`{"ab": "no", "s": "xx"}`: `"keywordLocation":"/patternProperties/%5Ea/type"`,
	} {
		out, err := toolsBCall(t, reg, NewSchemaValidate(), `{"schema": `+string(schema)+`, "data": `+data+`}`)
		if err != nil || !strings.Contains(string(out), want) {
			t.Fatalf("%s: got %s, %v; want %s", data, out, err, want)
		}
	}
}

// enum, const and the other numeric keywords parse numbers into big.Rat per comparison, at a
// cost quadratic in the literal, which neither the budget nor ctx could stop: a 100k-digit
// number against a 60-entry enum ran for seconds. Number literals are bounded in both the data
// and the schema.
func TestSchemaValidateLongNumbersRefused(t *testing.T) {
	var enum []string
	for i := 0; i < 60; i++ {
		enum = append(enum, strconv.Itoa(i))
	}
	long := "1." + strings.Repeat("7", 100000)
	reg := toolsBRegistry(t, NewSchemaValidate())
	for _, tc := range []struct{ name, args, where string }{
		{"data against an enum", `{"schema":{"enum":[` + strings.Join(enum, ",") + `]},"data":` + long + `}`, "the data has a number of 100002 characters as its whole value"},
		{"inside the data", `{"schema":{"const":1},"data":{"a":[0,` + long + `]}}`, `at "/a/1"`},
		{"inside the schema", `{"schema":{"properties":{"x/y":{"const":` + long[:200] + `}}},"data":1}`, `the schema has a number of 200 characters at "/properties/x~1y/const"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runSchemaValidate(t, []byte(tc.args), 50*time.Millisecond, time.Second)
			var te *ToolError
			if !errors.As(err, &te) || te.Code != "number_too_long" || !strings.Contains(te.Message, tc.where) {
				t.Fatalf("error %v, want number_too_long %s", err, tc.where)
			}
		})
	}
	// 128 characters are fine.
	n := "1." + strings.Repeat("5", 126)
	if out, err := toolsBCall(t, reg, NewSchemaValidate(), `{"schema":{"enum":[`+n+`]},"data":`+n+`}`); err != nil || !strings.Contains(string(out), `"valid":true`) {
		t.Fatalf("got %s, %v", out, err)
	}
}

// TestSchemaValidateHugeExponentsRefused: 1e-999999 is short, but an exact fraction with a
// million-digit denominator, parsed again by every keyword that looks at it (~40 ms each).
func TestSchemaValidateHugeExponentsRefused(t *testing.T) {
	reg := toolsBRegistry(t, NewSchemaValidate())
	many := strings.TrimSuffix(strings.Repeat("1e-999999,", 50), ",")
	for _, tc := range []struct{ name, args, where string }{
		{"in the data", `{"schema":{"items":{"type":"integer","multipleOf":3}},"data":[` + many + `]}`, `the data has the number 1e-999999 at "/0"`},
		{"in the schema", `{"schema":{"minimum":1E+401},"data":1}`, `the schema has the number 1E+401 at "/minimum"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runSchemaValidate(t, []byte(tc.args), 10*time.Second, 100*time.Millisecond)
			var te *ToolError
			if !errors.As(err, &te) || te.Code != "number_out_of_range" || !strings.Contains(te.Message, tc.where) {
				t.Fatalf("error %v, want number_out_of_range %s", err, tc.where)
			}
		})
	}
	// An exponent float64 can reach is fine.
	if out, err := toolsBCall(t, reg, NewSchemaValidate(), `{"schema":{"maximum":1e300},"data":2.5e-300}`); err != nil || !strings.Contains(string(out), `"valid":true`) {
		t.Fatalf("got %s, %v", out, err)
	}
}

// runSchemaValidate checks that args pass the tool's schema, runs schema_validate on them under
// deadline, requires the run to end within within (stretched under the race detector), and
// returns its error.
func runSchemaValidate(t *testing.T, args []byte, deadline, within time.Duration) error {
	t.Helper()
	if _, err := toolsBRegistry(t, NewSchemaValidate()).Validate("schema_validate", args); err != nil {
		t.Fatalf("args should be valid: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var err error
	took, ok := runWithin(stretched(3*time.Second), func() { _, err = NewSchemaValidate().Run(ctx, args) })
	if !ok || took > stretched(within) {
		t.Fatalf("a %d-byte call ran %v (finished: %v) with a %v deadline", len(args), took, ok, deadline)
	}
	return err
}

// schemavalidateBounded runs schema_validate on args under a 50ms deadline and requires it to
// end within half a second, at the deadline or with one of codes ("" for an answer).
func schemavalidateBounded(t *testing.T, args []byte, codes ...string) {
	t.Helper()
	err := runSchemaValidate(t, args, 50*time.Millisecond, 500*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) && !slices.Contains(codes, toolsBCode(err)) {
		t.Fatalf("error %v, want the deadline or one of %v", err, codes)
	}
}

// An enum or const fails before the schema's budget hook runs, so the scans of enum × items
// were neither counted nor stopped: 15000 entries over 5000 items, a 40 kB call, ran 87 s
// past a 50ms deadline. They go through the budget now, directly or behind a $ref.
func TestSchemaValidateEnumBounded(t *testing.T) {
	zeros := strings.TrimSuffix(strings.Repeat("0,", 15000), ",")
	ones := strings.TrimSuffix(strings.Repeat("1,", 5000), ",")
	strs := strings.TrimSuffix(strings.Repeat(`"a",`, 15000), ",")
	for name, args := range map[string]string{
		"enum of numbers": `{"schema": {"items": {"enum": [` + zeros + `]}}, "data": [` + ones + `]}`,
		"enum of strings": `{"schema": {"items": {"enum": [` + strs + `]}}, "data": [` + ones + `]}`,
		"enum of arrays": `{"schema": {"items": {"enum": [` + strings.TrimSuffix(strings.Repeat("[0, 0, 0, 1],", 3000), ",") + `]}}, "data": [` +
			strings.TrimSuffix(strings.Repeat("[0, 0, 0, 0],", 5000), ",") + `]}`,
	} {
		t.Run(name, func(t *testing.T) {
			schemavalidateBounded(t, []byte(args), "", "evaluation_budget_exceeded") // "": answered in time
		})
	}
	// Behind a $ref, the referring schema's hook checks ctx before each scan, but the scans
	// were not counted: 50 references per item ran on to the deadline, whatever the budget.
	args := []byte(`{"schema": {"$defs": {"e": {"enum": [` + zeros + `]}}, "items": {"allOf": [` +
		strings.TrimSuffix(strings.Repeat(`{"$ref": "#/$defs/e"},`, 50), ",") + `]}}, "data": [` + ones + `]}`)
	ctx, cancel := context.WithTimeout(context.Background(), stretched(2*time.Second))
	defer cancel()
	var err error
	took, ok := runWithin(stretched(3*time.Second), func() { _, err = NewSchemaValidate().Run(ctx, args) })
	if !ok || took > stretched(500*time.Millisecond) || toolsBCode(err) != "evaluation_budget_exceeded" {
		t.Fatalf("enum behind $ref: ran %v (finished: %v): %v; want evaluation_budget_exceeded", took, ok, err)
	}
	// A few hundred values over a thousand items are well within the default budget, and the
	// answer and its errors are the library's.
	var vals []string
	for i := 0; i < 500; i++ {
		vals = append(vals, strconv.Itoa(i), fmt.Sprintf(`"s%d"`, i))
	}
	var items []string
	for i := 0; i < 2000; i++ {
		items = append(items, strconv.Itoa(499-i%500), fmt.Sprintf(`"s%d"`, i%500))
	}
	enum := `{"items": {"enum": [` + strings.Join(vals, ", ") + `, [1, 2], {"a": [1.0]}]}}`
	reg := toolsBRegistry(t, NewSchemaValidate())
	start := time.Now()
	out, err := toolsBCall(t, reg, NewSchemaValidate(), `{"schema": `+enum+`, "data": [`+strings.Join(items, ", ")+`]}`)
	if err != nil || !strings.Contains(string(out), `"valid":true`) {
		t.Fatalf("1000 values over 4000 items: %s, %v", out, err)
	}
	if took := time.Since(start); took > stretched(500*time.Millisecond) {
		t.Errorf("1000 values over 4000 items took %v (twice)", took)
	}
	for data, want := range map[string]string{
		`[1000]`:                                 `{"instanceLocation":"/0","keywordLocation":"/items/enum","message":"'enum' failed"}`,
		`[[1, 2], {"a": [1]}, 1e0, 0.5e1, "s7"]`: `"valid":true`,
		`[[2, 1]]`:                               `"keywordLocation":"/items/enum"`,
		`[{"a": [1, 2]}]`:                        `"keywordLocation":"/items/enum"`,
	} {
		out, err := toolsBCall(t, reg, NewSchemaValidate(), `{"schema": `+enum+`, "data": `+data+`}`)
		if err != nil || !strings.Contains(string(out), want) {
			t.Fatalf("%s: got %s, %v; want %s", data, out, err, want)
		}
	}
	// The message of a long enum is the library's, cut as every message is.
	var many, quoted []string
	for i := 0; i < 1000; i++ {
		many, quoted = append(many, fmt.Sprintf(`"v%d"`, i)), append(quoted, fmt.Sprintf("'v%d'", i))
	}
	msg := ("value must be one of " + strings.Join(quoted, ", "))[:512] + "…"
	out, err = toolsBCall(t, reg, NewSchemaValidate(), `{"schema": {"enum": [`+strings.Join(many, ", ")+`]}, "data": "w"}`)
	if want, _ := json.Marshal(msg); err != nil || !strings.Contains(string(out), `"message":`+string(want)) {
		t.Fatalf("long enum: got %s, %v; want %s", out, err, want)
	}
	for _, tc := range []struct{ schema, data, want string }{
		{`{"const": 1}`, `1.0`, `"valid":true`},
		{`{"const": 1}`, `2`, `{"instanceLocation":"","keywordLocation":"/const","message":"value must be 1"}`},
		{`{"enum": ["a", "b"]}`, `"c"`, `{"instanceLocation":"","keywordLocation":"/enum","message":"value must be one of 'a', 'b'"}`},
		{`{"properties": {"x": {"const": {"b": [true, null]}}}}`, `{"x": {"b": [true, null]}}`, `"valid":true`},
		{`{"properties": {"x": {"const": {"b": [true, null]}}}}`, `{"x": {"b": [true, false]}}`, `"keywordLocation":"/properties/x/const","message":"'const' failed"`},
		{`{"$schema": "http://json-schema.org/draft-07/schema#", "items": {"enum": [1], "format": "regex"}}`, `[1, "("]`, `"keywordLocation":"/items/enum"`},
		{`{"type": "string", "enum": ["a", 1]}`, `1`, `"keywordLocation":"/type"`},
	} {
		out, err := toolsBCall(t, reg, NewSchemaValidate(), `{"schema": `+tc.schema+`, "data": `+tc.data+`}`)
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Fatalf("%s with %s: got %s, %v; want %s", tc.schema, tc.data, out, err, tc.want)
		}
	}
}

// A format "regex" compiles each string it checks, and compiling a 1 kB pattern took up to
// 110 ms even when it was then refused for its size, with no budget charged and no ctx checked:
// 250 such strings under a draft that asserts formats ran half a minute. Schemas' own
// patterns, compiled (twice: once by the metaschema's format check) before validation, too.
func TestSchemaValidateFormatRegexBounded(t *testing.T) {
	heavy := strings.Repeat(`(?:a{0,1000})`, 78)
	var strs []string
	for i := 0; i < 240; i++ {
		strs = append(strs, strconv.Quote(heavy))
	}
	args := `{"schema": {"$schema": "http://json-schema.org/draft-07/schema#", "items": {"format": "regex"}}, "data": [` + strings.Join(strs, ", ") + `]}`
	schemavalidateBounded(t, []byte(args), "evaluation_budget_exceeded")
	ok := strings.Repeat(`[^x]{99}`, 90) // 8911 instructions, under the cap
	strs = strs[:0]
	for i := 0; i < 240; i++ {
		strs = append(strs, strconv.Quote(ok))
	}
	args = `{"schema": {"$schema": "http://json-schema.org/draft-07/schema#", "items": {"format": "regex"}}, "data": [` + strings.Join(strs, ", ") + `]}`
	schemavalidateBounded(t, []byte(args), "evaluation_budget_exceeded")
	props := map[string]any{}
	for i := 0; i < 60; i++ {
		props[fmt.Sprintf("p%d", i)] = map[string]any{"pattern": heavy}
	}
	schema, _ := json.Marshal(map[string]any{"properties": props})
	schemavalidateBounded(t, []byte(`{"schema": `+string(schema)+`, "data": {}}`), "evaluation_budget_exceeded", "invalid_schema")
	// Patterns under the cap cost their compiling too: 85 of them, each compiled twice
	// before validation starts, took 1.4 s with nothing charged and ctx never looked at.
	props = map[string]any{}
	for i := 0; i < 85; i++ {
		props[fmt.Sprintf("p%d", i)] = map[string]any{"pattern": ok}
	}
	schema, _ = json.Marshal(map[string]any{"properties": props})
	schemavalidateBounded(t, []byte(`{"schema": `+string(schema)+`, "data": {}}`), "evaluation_budget_exceeded")
	// The hook of the format's own schema watches ctx, but the compiles were not counted:
	// without a deadline, 240 of them ran 1.8 s where the budget allows a tenth of that.
	ctx, cancel := context.WithTimeout(context.Background(), stretched(3*time.Second))
	defer cancel()
	var err error
	took, finished := runWithin(stretched(4*time.Second), func() { _, err = NewSchemaValidate().Run(ctx, []byte(args)) })
	if !finished || took > stretched(500*time.Millisecond) || toolsBCode(err) != "evaluation_budget_exceeded" {
		t.Fatalf("240 patterns in the data: ran %v (finished: %v): %v; want evaluation_budget_exceeded", took, finished, err)
	}
	// format "regex" still checks.
	reg := toolsBRegistry(t, NewSchemaValidate())
	for data, want := range map[string]string{
		`["^a+$", "[0-9]{2}"]`: `"valid":true`,
		`["("]`:                `"keywordLocation":"/items/format"`,
	} {
		out, err := toolsBCall(t, reg, NewSchemaValidate(), `{"schema": {"$schema": "http://json-schema.org/draft-07/schema#", "items": {"format": "regex"}}, "data": `+data+`}`)
		if err != nil || !strings.Contains(string(out), want) {
			t.Fatalf("%s: got %s, %v; want %s", data, out, err, want)
		}
	}
}
