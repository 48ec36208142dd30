package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
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
			if _, err := reg.Validate("schema_validate", args); err != nil {
				t.Fatalf("args should be valid: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			var err error
			took, ok := runWithin(3*time.Second, func() { _, err = NewSchemaValidate().Run(ctx, args) })
			if !ok || took > time.Second {
				t.Fatalf("ran %v (finished: %v) with a 50ms deadline", took, ok)
			}
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
			args := json.RawMessage(tc.args)
			if _, err := reg.Validate("schema_validate", args); err != nil {
				t.Fatalf("args should be valid: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			var err error
			took, ok := runWithin(3*time.Second, func() { _, err = NewSchemaValidate().Run(ctx, args) })
			if !ok || took > time.Second {
				t.Fatalf("ran %v (finished: %v) with a 50ms deadline", took, ok)
			}
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
