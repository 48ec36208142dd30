package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
	"github.com/secureexec/secureexec/internal/textcut"
)

// MathComputeConfig bounds math_compute. Zero fields take the defaults in DefaultMathComputeConfig.
type MathComputeConfig struct {
	MaxNodes         int  // AST nodes in one expression
	MaxDepth         int  // AST nesting depth
	MemoryBudget     uint // expr VM allocation units (about one per array element created)
	MaxSteps         int  // evaluations of closure bodies (map, filter, reduce, all, ...)
	MaxArrayElements int  // elements over all array variables together
}

// DefaultMathComputeConfig is the configuration NewMathCompute uses for zero fields.
var DefaultMathComputeConfig = MathComputeConfig{
	MaxNodes:         512,
	MaxDepth:         100,
	MemoryBudget:     1_000_000,
	MaxSteps:         1_000_000,
	MaxArrayElements: 100_000,
}

// mathcomputeMaxExprBytes backs up the schema's 1024-character limit in bytes, for callers
// that reach the tool without the registry.
const mathcomputeMaxExprBytes = 4096

// mathcomputeMaxVariables backs up the schema's maxProperties.
const mathcomputeMaxVariables = 64

// MathCompute is the math_compute tool: a bounded arithmetic evaluator built on expr-lang/expr.
//
// The expression sees only the caller's numeric variables (plus the constants pi and e unless
// a variable shadows them) and a whitelist of numeric functions. Everything else the expr
// language offers — strings, maps, member access, method calls, $env, date and string
// builtins — is refused before compilation by an AST whitelist, so nothing on the host is
// reachable. Integer + - * and sum() are overflow-checked (expr itself wraps around), / and %
// refuse a zero divisor, every closure body (map, filter, reduce, ...) ticks a step counter
// that also watches ctx, and the VM's memory budget bounds every array the expression builds.
type MathCompute struct {
	cfg MathComputeConfig
}

// NewMathCompute returns the math_compute tool; zero config fields take the defaults.
func NewMathCompute(cfg ...MathComputeConfig) *MathCompute {
	c := DefaultMathComputeConfig
	if len(cfg) > 0 {
		o := cfg[0]
		if o.MaxNodes > 0 {
			c.MaxNodes = o.MaxNodes
		}
		if o.MaxDepth > 0 {
			c.MaxDepth = o.MaxDepth
		}
		if o.MemoryBudget > 0 {
			c.MemoryBudget = o.MemoryBudget
		}
		if o.MaxSteps > 0 {
			c.MaxSteps = o.MaxSteps
		}
		if o.MaxArrayElements > 0 {
			c.MaxArrayElements = o.MaxArrayElements
		}
	}
	return &MathCompute{cfg: c}
}

// MathComputeOutput is math_compute's result.
type MathComputeOutput struct {
	Expression string          `json:"expression"`
	Result     json.RawMessage `json:"result"` // a JSON number, or true/false
	Type       string          `json:"type"`   // "integer", "float" or "boolean"
}

type mathcomputeArgs struct {
	Expression string                     `json:"expression"`
	Variables  map[string]json.RawMessage `json:"variables"`
	Precision  *int                       `json:"precision"`
}

// Name implements Tool.
func (*MathCompute) Name() string { return "math_compute" }

// Description implements Tool.
func (*MathCompute) Description() string {
	return "Evaluate an arithmetic expression over numeric variables, with bounded time and memory; functions: " +
		strings.Join(mathcomputeFunctionNames(), ", ")
}

var mathcomputeSchema = json.RawMessage(`{
  "type": "object",
  "additionalProperties": false,
  "required": ["expression"],
  "properties": {
    "expression": {"type": "string", "minLength": 1, "maxLength": 1024,
      "description": "e.g. \"sum(prices) * (1 + rate)\": numbers, + - * / % ** .., comparisons, and/or/not, ?:, let, closures (map(xs, # * 2)) and the functions named in the tool description; the arguments of one max, min, mean or median call hold at most 1000000 numbers together"},
    "variables": {
      "type": "object",
      "maxProperties": 64,
      "patternProperties": {
        "^[A-Za-z_][A-Za-z0-9_]{0,63}$": {"type": ["number", "array"], "maxItems": 10000, "items": {"type": "number"}}
      },
      "additionalProperties": false
    },
    "precision": {"type": "integer", "minimum": 0, "maximum": 15,
      "description": "decimal places a float result is rounded to"}
  }
}`)

// Schema implements Tool.
func (*MathCompute) Schema() json.RawMessage { return mathcomputeSchema }

// Simulate evaluates the expression for real: math_compute is a pure computation with no side
// effect, so the dry run returns the actual answer, under exactly the bounds of Run.
func (m *MathCompute) Simulate(ctx context.Context, args json.RawMessage) (any, error) {
	return m.compute(ctx, args)
}

// Run evaluates the expression.
func (m *MathCompute) Run(ctx context.Context, args json.RawMessage) (any, error) {
	return m.compute(ctx, args)
}

func (m *MathCompute) compute(ctx context.Context, raw json.RawMessage) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("math_compute: %w", err)
	}
	var a mathcomputeArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, Failf("invalid_args", "args do not decode: %v", err)
	}
	if a.Expression == "" {
		return nil, Failf("invalid_expression", "the expression is empty")
	}
	if len(a.Expression) > mathcomputeMaxExprBytes {
		return nil, Failf("expression_too_long", "the expression is %d bytes, the limit is %d", len(a.Expression), mathcomputeMaxExprBytes)
	}
	if a.Precision != nil && (*a.Precision < 0 || *a.Precision > 15) {
		return nil, Failf("invalid_args", "precision must be between 0 and 15")
	}
	env, err := m.env(a.Variables)
	if err != nil {
		return nil, err
	}

	st := &mathcomputeRun{ctx: ctx, max: m.cfg.MaxSteps}
	opts := st.options(env, m.cfg)
	if err := m.check(a.Expression, env, opts); err != nil {
		return nil, err
	}
	prog, err := mathcomputeCompile(a.Expression, opts)
	if err != nil {
		return nil, mathcomputeFailure(ctx, "invalid_expression", err)
	}
	machine := vm.VM{MemoryBudget: m.cfg.MemoryBudget}
	out, err := machine.Run(prog, env)
	if err != nil {
		return nil, mathcomputeFailure(ctx, "evaluation_failed", err)
	}
	result, typ, err := mathcomputeFormat(out, a.Precision)
	if err != nil {
		return nil, err
	}
	return MathComputeOutput{Expression: a.Expression, Result: result, Type: typ}, nil
}

// mathcomputeCompile compiles, turning a panic inside the compiler into an error: the input
// is hostile and expr's checker is not documented as panic-free.
func mathcomputeCompile(src string, opts []expr.Option) (prog *vm.Program, err error) {
	defer func() {
		if p := recover(); p != nil {
			prog, err = nil, fmt.Errorf("the expression could not be compiled: %v", p)
		}
	}()
	return expr.Compile(src, opts...)
}

// env converts the caller's variables into the only values the expression can see: Go ints,
// float64s and slices of them. Integers that fit int64 stay integers.
func (m *MathCompute) env(vars map[string]json.RawMessage) (map[string]any, error) {
	if len(vars) > mathcomputeMaxVariables {
		return nil, Failf("too_many_variables", "%d variables, the limit is %d", len(vars), mathcomputeMaxVariables)
	}
	env := map[string]any{"pi": math.Pi, "e": math.E}
	elements := 0
	for name, raw := range vars {
		if err := mathcomputeCheckName(name); err != nil {
			return nil, err
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		raw = bytes.TrimSpace(raw)
		if len(raw) > 0 && raw[0] == '[' {
			var nums []json.Number
			if err := dec.Decode(&nums); err != nil {
				return nil, Failf("invalid_variable", "variable %q must be a number or an array of numbers", name)
			}
			elements += len(nums)
			if elements > m.cfg.MaxArrayElements {
				return nil, Failf("too_many_elements", "array variables hold more than %d elements together", m.cfg.MaxArrayElements)
			}
			v, err := mathcomputeArray(name, nums)
			if err != nil {
				return nil, err
			}
			env[name] = v
			continue
		}
		var n json.Number
		if err := dec.Decode(&n); err != nil {
			return nil, Failf("invalid_variable", "variable %q must be a number or an array of numbers", name)
		}
		v, err := mathcomputeNumber(name, n)
		if err != nil {
			return nil, err
		}
		env[name] = v
	}
	return env, nil
}

func mathcomputeNumber(name string, n json.Number) (any, error) {
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return int(i), nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, Failf("invalid_variable", "variable %q: %s is not a finite 64-bit number", name, s)
	}
	return f, nil
}

func mathcomputeArray(name string, nums []json.Number) (any, error) {
	vals := make([]any, len(nums))
	allInt := true
	for i, n := range nums {
		v, err := mathcomputeNumber(name, n)
		if err != nil {
			return nil, err
		}
		if _, ok := v.(int); !ok {
			allInt = false
		}
		vals[i] = v
	}
	if allInt {
		out := make([]int, len(vals))
		for i, v := range vals {
			out[i] = v.(int)
		}
		return out, nil
	}
	out := make([]float64, len(vals))
	for i, v := range vals {
		out[i], _ = mathcomputeFloat(v)
	}
	return out, nil
}

// mathcomputeFailure maps an expr error to a ToolError, keeping the code a checked operation
// chose and the position expr reports.
func mathcomputeFailure(ctx context.Context, code string, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("math_compute: %w", ctx.Err())
	}
	// expr formats operand values into some messages; an array can make that megabytes.
	msg := mathcomputeClip(err.Error())
	var fe *file.Error
	if errors.As(err, &fe) {
		msg = fmt.Sprintf("%s (at column %d)", mathcomputeClip(fe.Message), fe.Column+1)
	}
	var te *ToolError
	if errors.As(err, &te) {
		if fe != nil {
			return Failf(te.Code, "%s (at column %d)", te.Message, fe.Column+1)
		}
		return te
	}
	// The VM signals an exhausted budget by panicking with this exact string; there is no
	// typed error to match.
	if fe != nil && strings.Contains(fe.Message, "memory budget exceeded") {
		return Failf("memory_budget_exceeded", "%s", msg)
	}
	return Failf(code, "%s", msg)
}

// mathcomputeClip bounds a message taken from expr.
func mathcomputeClip(s string) string { return textcut.Clip(s, 512) }

// mathcomputeFormat renders the result as a JSON literal. Integers print in full; floats print
// in positional notation (at most ~330 characters for 1e308) and never as NaN or Inf.
func mathcomputeFormat(v any, precision *int) (json.RawMessage, string, error) {
	switch x := v.(type) {
	case bool:
		return json.RawMessage(strconv.FormatBool(x)), "boolean", nil
	case int:
		return json.RawMessage(strconv.Itoa(x)), "integer", nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, "", Failf("non_finite_result", "the result is %v, which is not a finite number", x)
		}
		if x == 0 {
			x = 0 // no "-0"
		}
		// Always positional notation: an integral result never turns into 1e+21.
		p := -1
		if precision != nil {
			p = *precision
		}
		s := strconv.FormatFloat(x, 'f', p, 64)
		if p > 0 {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		if s == "-0" {
			s = "0"
		}
		return json.RawMessage(s), "float", nil
	case nil:
		return nil, "", Failf("result_not_number", "the expression evaluated to nil, not a number")
	default:
		return nil, "", Failf("result_not_number", "the expression evaluated to %s, not a number or boolean", mathcomputeKind(v))
	}
}

// mathcomputeFunctionNames lists the callable functions, for documentation and tests.
func mathcomputeFunctionNames() []string {
	var names []string
	for n := range mathcomputeBuiltins {
		names = append(names, n)
	}
	for n := range mathcomputeUnary {
		names = append(names, n)
	}
	for n := range mathcomputeBinary {
		names = append(names, n)
	}
	names = append(names, "sum", "abs")
	for n := range mathcomputeAggregates {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
