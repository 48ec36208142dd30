package exec

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestMathCompute(t *testing.T) {
	tool := NewMathCompute()
	reg := toolsBRegistry(t, tool)
	vars := `"variables": {"x": 7, "y": 2.5, "xs": [1, 2, 3, 4], "fs": [1.5, 2.5], "big": 9223372036854775807}`
	for _, tc := range []struct {
		expr      string
		precision string
		result    string
		typ       string
	}{
		{"2+3*4", "", "14", "integer"},
		{"(2+3)*4", "", "20", "integer"},
		{"2+3*4**2", "", "50", "float"}, // ** is a float power in expr
		{"-2 + 10 % 4", "", "0", "integer"},
		{"7/2", "", "3.5", "float"},
		{"10/2", "", "5", "float"},
		{"x * y", "", "17.5", "float"},
		{"x * 3 - 1", "", "20", "integer"},
		{"big - 1", "", "9223372036854775806", "integer"},
		{"sum(xs)", "", "10", "integer"},
		{"sum(fs)", "", "4", "float"},
		{"mean(xs)", "", "2.5", "float"},
		{"median(xs)", "", "2.5", "float"},
		{"max(xs) - min(fs)", "", "2.5", "float"},
		{"len(xs) + first(xs) + last(xs) + xs[1]", "", "11", "integer"},
		{"sum(map(xs, # * x))", "", "70", "integer"},
		{"count(xs, # > 2)", "", "2", "integer"},
		{"reduce(1..10, #acc * #, 1)", "", "3628800", "integer"},
		{"xs | filter(# % 2 == 0) | sum()", "", "6", "integer"},
		{"let z = x * 2; z > 10 ? z : 0", "", "14", "integer"},
		{"if x > y { 1 } else { 2 }", "", "1", "integer"},
		{"all(xs, # > 0) && not any(xs, # > 4)", "", "true", "boolean"},
		{"3 in xs", "", "true", "boolean"},
		{"[1, 2, 3] == [1, 2, 3] and 2 in [x, 2]", "", "true", "boolean"},
		{"max([1, 5, 2]) + len(map(xs, # * 2))", "", "9", "integer"},
		{"sqrt(16) + pow(2, 3) + abs(-1) + floor(y) + ceil(y) + round(y)", "", "21", "float"},
		{"hypot(3, 4)", "", "5", "float"},
		{"1/3", "4", "0.3333", "float"},
		{"2/3", "0", "1", "float"},
		{"y", "3", "2.5", "float"},
		{"pi", "5", "3.14159", "float"},
		{"0.1 + 0.2", "", "0.30000000000000004", "float"},
		{"1e21 + 1", "", "1000000000000000000000", "float"},
		{"-0.0 * 1", "", "0", "float"},
		{"-x + -(-3) - abs(-2)", "", "-6", "integer"},
		{"abs(-y)", "", "2.5", "float"},
		{"2 ** 62", "", "4611686018427388000", "float"}, // shortest digits that round-trip, like JSON
		{"2 * 2305843009213693952", "", "4611686018427387904", "integer"},
		{"sum(1..1000)", "", "500500", "integer"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			args := `{"expression": ` + toolsBQuote(tc.expr) + `, ` + vars
			if tc.precision != "" {
				args += `, "precision": ` + tc.precision
			}
			out, err := toolsBCall(t, reg, tool, args+`}`)
			if err != nil {
				t.Fatalf("error %v", err)
			}
			want := `{"expression":` + toolsBQuote(tc.expr) + `,"result":` + tc.result + `,"type":"` + tc.typ + `"}`
			if string(out) != want {
				t.Fatalf("got  %s\nwant %s", out, want)
			}
		})
	}
}

func TestMathComputeRefused(t *testing.T) {
	vars := `"variables": {"x": 7, "xs": [1, 2, 3], "big": 9223372036854775807, "many": [` + strings.TrimSuffix(strings.Repeat("1,", 10000), ",") + `]}`
	for _, tc := range []struct {
		name string
		expr string
		cfg  MathComputeConfig
		code string
	}{
		{"integer division by zero", "x / 0", MathComputeConfig{}, "division_by_zero"},
		{"float division by zero", "1.5 / (x - 7)", MathComputeConfig{}, "division_by_zero"},
		{"modulo by zero", "x % 0", MathComputeConfig{}, "division_by_zero"},
		{"addition overflow", "big + 1", MathComputeConfig{}, "integer_overflow"},
		{"multiplication overflow", "big * 2", MathComputeConfig{}, "integer_overflow"},
		{"subtraction overflow", "-big - 2", MathComputeConfig{}, "integer_overflow"},
		{"sum overflow", "sum([big, 1])", MathComputeConfig{}, "integer_overflow"},
		{"negation overflow", "-(-big - 1)", MathComputeConfig{}, "integer_overflow"},
		{"abs overflow", "abs(-big - 1)", MathComputeConfig{}, "integer_overflow"},
		{"overflow inside a closure", "reduce(xs, #acc * big, 2)", MathComputeConfig{}, "integer_overflow"},
		{"NaN", "sqrt(-1)", MathComputeConfig{}, "non_finite_result"},
		{"infinity", "2 ** 2000", MathComputeConfig{}, "non_finite_result"},
		{"huge range refused by the memory budget", "sum(1..100000000)", MathComputeConfig{}, "memory_budget_exceeded"},
		{"nested ranges refused by the memory budget", "sum(map(1..2000, len(1..2000)))", MathComputeConfig{}, "memory_budget_exceeded"},
		{"nested closures refused by the step budget", "count(many, any(many, # > 1))", MathComputeConfig{}, "step_budget_exceeded"},
		{"deep nesting", strings.Repeat("-(", 150) + "1" + strings.Repeat(")", 150), MathComputeConfig{}, "expression_too_complex"},
		{"too many nodes", "1+1+1+1+1+1", MathComputeConfig{MaxNodes: 8}, "expression_too_complex"},
		{"$env", "$env", MathComputeConfig{}, "invalid_expression"},
		{"$env member", `$env["x"]`, MathComputeConfig{}, "invalid_expression"},
		{"env", "env", MathComputeConfig{}, "invalid_expression"},
		{"unknown variable", "nope + 1", MathComputeConfig{}, "invalid_expression"},
		{"string literal", `"abc"`, MathComputeConfig{}, "invalid_expression"},
		{"string builtin", `upper("a")`, MathComputeConfig{}, "invalid_expression"},
		{"matches operator", `x matches "7"`, MathComputeConfig{}, "invalid_expression"},
		{"member access by name", "xs.length", MathComputeConfig{}, "invalid_expression"},
		{"method call", "x.String()", MathComputeConfig{}, "invalid_expression"},
		{"map literal", "{a: 1}", MathComputeConfig{}, "invalid_expression"},
		{"date builtin", "now()", MathComputeConfig{}, "invalid_expression"},
		{"json builtin", "toJSON(xs)", MathComputeConfig{}, "invalid_expression"},
		{"groupBy", "groupBy(xs, #)", MathComputeConfig{}, "invalid_expression"},
		{"sort copies outside the budget", "sort(xs)", MathComputeConfig{}, "invalid_expression"},
		{"internal step function", "__step()", MathComputeConfig{}, "invalid_expression"},
		{"internal operator function", "__add(1, 2)", MathComputeConfig{}, "invalid_expression"},
		{"let with an internal name", "let __add = 1; __add", MathComputeConfig{}, "invalid_expression"},
		{"syntax error", "1 +", MathComputeConfig{}, "invalid_expression"},
		{"nested array literal", "[[1], 2]", MathComputeConfig{}, "nested_array"},
		{"map returning arrays", "len(map(xs, xs))", MathComputeConfig{}, "nested_array"},
		{"shared-array bomb built with let", "let a0 = [1]; let a1 = [a0, a0]; let a2 = [a1, a1]; a2 == a2", MathComputeConfig{}, "nested_array"},
		{"shared-array bomb built with reduce", "let a = reduce(1..60, [#acc, #acc], 0); let b = reduce(1..60, [#acc, #acc], 0); a == b", MathComputeConfig{}, "nested_array"},
		{"array result", "xs", MathComputeConfig{}, "result_not_number"},
		{"nil result", "nil", MathComputeConfig{}, "result_not_number"},
		{"index out of range", "xs[10]", MathComputeConfig{}, "evaluation_failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tool := NewMathCompute(tc.cfg)
			start := time.Now()
			_, err := toolsBCall(t, toolsBRegistry(t, tool), tool, `{"expression": `+toolsBQuote(tc.expr)+`, `+vars+`}`)
			if got := toolsBCode(err); got != tc.code {
				t.Fatalf("code %q, want %q (%v)", got, tc.code, err)
			}
			// Refusals are prompt, not a hang cut short by a deadline. The bound is loose on
			// purpose: it guards against minutes, not milliseconds.
			if d := time.Since(start); d > stretched(5*time.Second) {
				t.Fatalf("took %v", d)
			}
		})
	}
}

func TestMathComputeVariables(t *testing.T) {
	tool := NewMathCompute(MathComputeConfig{MaxArrayElements: 5})
	for _, tc := range []struct {
		name, vars, code string
	}{
		{"keyword name", `{"true": 1}`, "invalid_variable"},
		{"function name", `{"sum": 1}`, "invalid_variable"},
		{"builtin name", `{"max": 1}`, "invalid_variable"},
		{"internal prefix", `{"__add": 1}`, "invalid_variable"},
		{"integer too large becomes a float", `{"x": 92233720368547758070}`, ""},
		{"number out of range", `{"x": 1e400}`, "invalid_variable"},
		{"too many array elements", `{"a": [1, 2, 3], "b": [4, 5, 6]}`, "too_many_elements"},
		{"shadowing pi is allowed", `{"pi": 3}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tool.Run(context.Background(), json.RawMessage(`{"expression": "1", "variables": `+tc.vars+`}`))
			if got := toolsBCode(err); got != tc.code {
				t.Fatalf("code %q, want %q (%v)", got, tc.code, err)
			}
		})
	}
	out, err := tool.Run(context.Background(), json.RawMessage(`{"expression": "pi * 2", "variables": {"pi": 3}}`))
	if err != nil || string(out.(MathComputeOutput).Result) != "6" {
		t.Fatalf("a variable shadows the constant: %v %v", out, err)
	}
}

func TestMathComputeArgsRejected(t *testing.T) {
	reg := toolsBRegistry(t, NewMathCompute())
	for _, tc := range []struct {
		name, args, field string
	}{
		{"missing expression", `{}`, "/expression"},
		{"empty expression", `{"expression": ""}`, "/expression"},
		{"expression too long", `{"expression": "` + strings.Repeat("1", 1025) + `"}`, "/expression"},
		{"variable name not an identifier", `{"expression": "1", "variables": {"9x": 1}}`, "/variables/9x"},
		{"variable is a string", `{"expression": "1", "variables": {"x": "1"}}`, "/variables/x"},
		{"array holds a string", `{"expression": "1", "variables": {"x": [1, "a"]}}`, "/variables/x/1"},
		{"array too long", `{"expression": "1", "variables": {"x": [` + strings.TrimSuffix(strings.Repeat("1,", 10001), ",") + `]}}`, "/variables/x"},
		{"precision too large", `{"expression": "1", "precision": 16}`, "/precision"},
		{"unknown property", `{"expression": "1", "env": {}}`, "/env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := toolsBArgsField(t, reg, "math_compute", tc.args); got != tc.field {
				t.Fatalf("field %q, want %q", got, tc.field)
			}
		})
	}
}

func TestMathComputeContext(t *testing.T) {
	tool := NewMathCompute()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, call := range []func(context.Context, json.RawMessage) (any, error){tool.Simulate, tool.Run} {
		if _, err := call(ctx, json.RawMessage(`{"expression": "1"}`)); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	}

	// With the step budget out of the way, only the deadline stops nested closures, and the
	// step counter must notice it.
	unbounded := NewMathCompute(MathComputeConfig{MaxSteps: 1 << 50})
	many := "[" + strings.TrimSuffix(strings.Repeat("1,", 10000), ",") + "]"
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := unbounded.Run(ctx, json.RawMessage(`{"expression": "count(a, any(a, # < 0))", "variables": {"a": `+many+`}}`))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("returned %v after the deadline", d)
	}
}

// max, min, mean and median take any number of arguments; expr's median copied all of them
// into one slice and sorted it, so median(r, r, ...) over a 200k range allocated 470 MiB
// against a memory budget that had counted the range once, with no ctx check. The tool's own
// versions count the numbers of all arguments against the budget, and watch ctx.
func TestMathComputeAggregatesBounded(t *testing.T) {
	reg := toolsBRegistry(t, NewMathCompute())
	for _, fn := range []string{"median", "mean", "max", "min"} {
		t.Run(fn, func(t *testing.T) {
			expr := "let r = 1..200000; " + fn + "(" + strings.TrimSuffix(strings.Repeat("r,", 50), ",") + ")"
			args, _ := json.Marshal(map[string]any{"expression": expr})
			if _, err := reg.Validate("math_compute", args); err != nil {
				t.Fatalf("args should be valid: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			var err error
			took, ok := runWithin(stretched(10*time.Second), func() { _, err = NewMathCompute().Run(ctx, args) })
			runtime.ReadMemStats(&m1)
			if alloc := (m1.TotalAlloc - m0.TotalAlloc) >> 20; alloc > 16 {
				t.Errorf("a %d-byte expression allocated %d MiB", len(expr), alloc)
			}
			if !ok || took > stretched(500*time.Millisecond) {
				t.Fatalf("ran %v (finished: %v) with a 50ms deadline", took, ok)
			}
			if toolsBCode(err) != "memory_budget_exceeded" {
				t.Fatalf("error %v, want memory_budget_exceeded", err)
			}
		})
	}
	// Within the budget, repeated calls still stop at the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	expr := "let r = 1..500000; sum(map(1..1000, mean(r)))"
	args, _ := json.Marshal(map[string]any{"expression": expr})
	var err error
	took, ok := runWithin(stretched(10*time.Second), func() { _, err = NewMathCompute().Run(ctx, args) })
	if !ok || took > stretched(300*time.Millisecond) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ran %v (finished: %v) with a 50ms deadline: %v", took, ok, err)
	}
}

// The replacements answer as expr's builtins did.
func TestMathComputeAggregates(t *testing.T) {
	tool := NewMathCompute()
	reg := toolsBRegistry(t, tool)
	vars := `"variables": {"x": 7, "xs": [1, 2, 3, 4], "fs": [1.5, 2.5]}`
	for _, tc := range []struct{ expr, want string }{
		{"max(1, 2, 3)", `3,"type":"integer"`},
		{"max(xs, 10)", `10,"type":"integer"`},
		{"max(fs, xs)", `4,"type":"integer"`},
		{"min(xs, fs)", `1,"type":"integer"`},
		{"min(fs)", `1.5,"type":"float"`},
		{"max(2, 2.0)", `2,"type":"integer"`}, // the first of equals
		{"max(2.0, 2)", `2,"type":"float"`},
		{"min(-x, x)", `-7,"type":"integer"`},
		{"median(xs, 5)", `3,"type":"float"`},
		{"median(1..4)", `2.5,"type":"float"`},
		{"median(fs, [])", `2,"type":"float"`},
		{"median([])", `0,"type":"float"`},
		{"mean(1, 2)", `1.5,"type":"float"`},
		{"mean(map(xs, # / 2))", `1.25,"type":"float"`},
		{"mean([])", `0,"type":"float"`},
	} {
		out, err := toolsBCall(t, reg, tool, `{"expression": `+toolsBQuote(tc.expr)+`, `+vars+`}`)
		if err != nil || !strings.HasSuffix(string(out), `"result":`+tc.want+`}`) {
			t.Errorf("%s: got %s, %v; want result %s", tc.expr, out, err, tc.want)
		}
	}
	for _, tc := range []struct{ expr, code string }{
		{"max([])", "result_not_number"},
		{"max([true])", "evaluation_failed"},
		{"mean([1, nil])", "evaluation_failed"},
		{"max()", "invalid_expression"},
		{"median(1..600000, 1..600000)", "memory_budget_exceeded"},
	} {
		_, err := toolsBCall(t, reg, tool, `{"expression": `+toolsBQuote(tc.expr)+`, `+vars+`}`)
		if got := toolsBCode(err); got != tc.code {
			t.Errorf("%s: code %q, want %q (%v)", tc.expr, got, tc.code, err)
		}
	}
}

// ==, != and in on arrays walk them element by element, and the VM neither counts that work
// nor looks at ctx: a range built once and compared or searched in every body of a map, or
// in every term of one expression, ran for seconds past the deadline.
func TestMathComputeArrayComparisonsBounded(t *testing.T) {
	reg := toolsBRegistry(t, NewMathCompute())
	terms := strings.TrimSuffix(strings.Repeat("0 in r or ", 95), " or ")
	for _, expr := range []string{
		"let r = 1..500000; len(filter(1..1000, 0 in r))",
		"let r = 1..500000; len(filter(1..1000, not (0 in r)))",
		"let a = 1..250000; let b = 1..250000; count(1..400000, a == b)",
		"let a = 1..250000; let b = 1..250000; count(1..400000, a != b)",
		"let r = 1..500000; " + terms,
		"len(filter(1..100000, # in xs))",
	} {
		t.Run(expr[:min(len(expr), 60)], func(t *testing.T) {
			xs := make([]int, 10000)
			args, _ := json.Marshal(map[string]any{"expression": expr, "variables": map[string]any{"xs": xs}})
			if _, err := reg.Validate("math_compute", args); err != nil {
				t.Fatalf("args should be valid: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			var err error
			took, ok := runWithin(stretched(3*time.Second), func() { _, err = NewMathCompute().Run(ctx, args) })
			if !ok || took > stretched(300*time.Millisecond) {
				t.Fatalf("ran %v (finished: %v) with a 50ms deadline", took, ok)
			}
			if !errors.Is(err, context.DeadlineExceeded) && toolsBCode(err) != "step_budget_exceeded" {
				t.Fatalf("error %v, want the deadline or step_budget_exceeded", err)
			}
		})
	}
	// The answers are expr's.
	vars := `"variables": {"xs": [1, 2, 3], "fs": [1.0, 2.0, 3.0], "ys": [1, 2]}`
	for _, tc := range []struct{ expr, want string }{
		{"2 in xs", "true"}, {"2.0 in xs", "true"}, {"4 in xs", "false"}, {"not (4 in xs)", "true"},
		{"2 in fs", "true"}, {"nil in xs", "false"},
		{"xs == fs", "false"}, {"xs == [1, 2, 3]", "true"}, {"xs == xs", "true"}, {"xs != ys", "true"},
		{"fs == [1.0, 2.0, 3.0]", "true"}, {"1 == 1.0", "true"}, {"1 != 2", "true"}, {"nil == nil", "true"},
		{"5 in 1..10", "true"}, {"50 in 1..10", "false"}, {"5000000 in 1..10000000", "true"},
		{"len(filter(1..10, # in xs))", "3"}, {"[1, 2] == map(1..2, #)", "true"},
	} {
		out, err := toolsBCall(t, reg, NewMathCompute(), `{"expression": "`+tc.expr+`", `+vars+`}`)
		if err != nil || !strings.Contains(string(out), `"result":`+tc.want+`,`) {
			t.Errorf("%s: got %s, %v; want %s", tc.expr, out, err, tc.want)
		}
	}
}

// TestMathComputeEqualityOnComputedValues: == and != on what sum, the aggregates, reduce
// and let return, whose static type expr does not know, answer as before the comparisons were
// charged.
func TestMathComputeEqualityOnComputedValues(t *testing.T) {
	tool := NewMathCompute()
	for _, e := range []string{
		"sum(xs) == 10", "sum(xs) != 11", "max(xs) == 4", "mean(xs) == 2.5", "median(xs) == 2.5",
		"let s = sum(xs); s == 10", "reduce(xs, #acc + #, 0) == 10", "filter(xs, # == max(xs)) | len() == 1",
		"min(xs) in xs",
	} {
		out, err := tool.Run(context.Background(), json.RawMessage(`{"expression": `+toolsBQuote(e)+`, "variables": {"xs": [1, 2, 3, 4]}}`))
		if err != nil {
			t.Errorf("%s: %v (want true)", e, err)
			continue
		}
		if got := string(out.(MathComputeOutput).Result); got != "true" {
			t.Errorf("%s = %s, want true", e, got)
		}
	}
}

// TestMathComputeAggregateArgumentsChecked: an aggregate of something that is not a number
// is refused before it runs, as expr's own aggregates were (invalid_expression).
func TestMathComputeAggregateArgumentsChecked(t *testing.T) {
	tool := NewMathCompute()
	for _, e := range []string{"max(true)", "min(1, true)", "mean(nil)", "median(1 > 0)"} {
		_, err := tool.Run(context.Background(), json.RawMessage(`{"expression": `+toolsBQuote(e)+`}`))
		if got := toolsBCode(err); got != "invalid_expression" {
			t.Errorf("%s: code %q (%v), want invalid_expression", e, got, err)
		}
	}
}

// TestMathComputeComputedIntsCompareAsNumbers: abs of an aggregate is typed int by abs's first
// overload even when it is a float; == and != on it compare numbers, as expr's own max and
// min (typed float for floats) let them.
func TestMathComputeComputedIntsCompareAsNumbers(t *testing.T) {
	tool := NewMathCompute()
	vars := `{"a": 1.5, "b": 2.0, "fs": [1.5, 2.5, 3.0], "xs": [1, 2, 3]}`
	for _, c := range []struct{ e, want string }{
		{"abs(max(a, b) - 2) == 0", "true"},
		{"abs(min(a, b)) != 1", "true"},
		{"abs(max(1.5, 2.5)) == 2", "false"},
		{"abs(sum(fs)) == 7", "true"},
		{"abs(mean(xs)) == 2", "true"},
		{"abs(max(fs)) == 3", "true"},
		{"sum(fs) % 2 == 1", "true"},
		{"abs(-3) == 3", "true"},
	} {
		out, err := tool.Run(context.Background(), json.RawMessage(`{"expression": `+toolsBQuote(c.e)+`, "variables": `+vars+`}`))
		if err != nil {
			t.Errorf("%s: %v (want %s)", c.e, err, c.want)
			continue
		}
		if got := string(out.(MathComputeOutput).Result); got != c.want {
			t.Errorf("%s = %s, want %s", c.e, got, c.want)
		}
	}
}
