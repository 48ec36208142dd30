package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
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

// mathcomputeBuiltins are the expr builtins left enabled: numeric only, and none that copies
// arrays outside the VM's memory accounting (reverse, sort, concat, take, uniq, ... are off).
// max, min, mean and median are this tool's own (mathcomputeAggregates): expr's take any number
// of arrays, so median(r, r, ...) copied and sorted one range hundreds of times.
var mathcomputeBuiltins = map[string]bool{
	"ceil": true, "floor": true, "round": true, "len": true,
	"first": true, "last": true,
	// closure builtins: every body evaluation ticks the step counter
	"all": true, "none": true, "any": true, "one": true, "filter": true, "map": true,
	"count": true, "reduce": true, "find": true, "findIndex": true, "findLast": true, "findLastIndex": true,
}

var mathcomputeUnary = map[string]func(float64) float64{
	"sqrt": math.Sqrt, "cbrt": math.Cbrt, "exp": math.Exp, "log": math.Log, "log2": math.Log2,
	"log10": math.Log10, "sin": math.Sin, "cos": math.Cos, "tan": math.Tan, "asin": math.Asin,
	"acos": math.Acos, "atan": math.Atan, "trunc": math.Trunc,
}

var mathcomputeBinary = map[string]func(float64, float64) float64{
	"pow": math.Pow, "atan2": math.Atan2, "hypot": math.Hypot,
}

var mathcomputeBinaryOps = map[string]bool{
	"+": true, "-": true, "*": true, "/": true, "%": true, "**": true, "^": true,
	"==": true, "!=": true, "<": true, ">": true, "<=": true, ">=": true,
	"and": true, "or": true, "&&": true, "||": true, "in": true, "..": true, "??": true,
}

var mathcomputeUnaryOps = map[string]bool{"-": true, "+": true, "!": true, "not": true}

// mathcomputeOperators are the operators replaced by checked functions; the name is internal
// ("__" names are refused in user input).
var mathcomputeOperators = map[string]string{
	"+": "__add", "-": "__sub", "*": "__mul", "/": "__div", "%": "__mod",
}

const mathcomputeStepFn = "__step"

// mathcomputeKeywords cannot be variable names: the expr lexer reads them as operators.
var mathcomputeKeywords = map[string]bool{
	"true": true, "false": true, "nil": true, "let": true, "if": true, "else": true, "in": true,
	"not": true, "and": true, "or": true, "matches": true, "contains": true, "startsWith": true,
	"endsWith": true,
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

// mathcomputeCallable reports whether name is one of the functions this tool defines (as
// opposed to an expr builtin).
func mathcomputeCallable(name string) bool {
	return mathcomputeUnary[name] != nil || mathcomputeBinary[name] != nil || name == "sum" || name == "abs" ||
		mathcomputeAggregates[name]
}

// mathcomputeAggregates are the variadic functions of numbers and arrays of numbers.
var mathcomputeAggregates = map[string]bool{"max": true, "min": true, "mean": true, "median": true}

func mathcomputeCheckName(name string) error {
	bad := name == "" || len(name) > 64 || strings.HasPrefix(name, "__") || strings.HasPrefix(name, "$") ||
		mathcomputeKeywords[name] || mathcomputeBuiltins[name] || mathcomputeCallable(name)
	for i, r := range name {
		ok := r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9')
		bad = bad || !ok
	}
	if bad {
		return Failf("invalid_variable", "%q cannot be a variable name (it must be an identifier and not a keyword or function name)", name)
	}
	return nil
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

// check parses the expression once more and walks it against the whitelist. Parsing with the
// same options as the compiler yields the same tree the compiler will see.
func (m *MathCompute) check(src string, env map[string]any, opts []expr.Option) error {
	cfg := conf.CreateNew()
	for _, o := range opts {
		o(cfg)
	}
	cfg.MaxNodes = 0 // counted below, with a clearer error
	tree, err := mathcomputeParse(src, cfg)
	if err != nil {
		return mathcomputeFailure(context.Background(), "invalid_expression", err)
	}
	w := &mathcomputeWalker{env: env, lets: map[string]bool{}, maxDepth: m.cfg.MaxDepth, maxNodes: m.cfg.MaxNodes}
	return w.walk(tree.Node, 1)
}

func mathcomputeParse(src string, cfg *conf.Config) (tree *parser.Tree, err error) {
	defer func() {
		if p := recover(); p != nil {
			tree, err = nil, fmt.Errorf("the expression could not be parsed: %v", p)
		}
	}()
	return parser.ParseWithConfig(src, cfg)
}

type mathcomputeWalker struct {
	env      map[string]any
	lets     map[string]bool
	nodes    int
	maxNodes int
	maxDepth int
}

func (w *mathcomputeWalker) walk(n ast.Node, depth int) error {
	if n == nil {
		return nil
	}
	w.nodes++
	if w.nodes > w.maxNodes {
		return Failf("expression_too_complex", "the expression has more than %d nodes", w.maxNodes)
	}
	if depth > w.maxDepth {
		return Failf("expression_too_complex", "the expression nests deeper than %d levels", w.maxDepth)
	}
	refuse := func(what string) error {
		loc := n.Location()
		return Failf("invalid_expression", "%s is not allowed (at column %d)", what, loc.From+1)
	}
	d := depth + 1
	switch n := n.(type) {
	case *ast.NilNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.PointerNode:
		return nil
	case *ast.IdentifierNode:
		if _, ok := w.env[n.Value]; ok || w.lets[n.Value] {
			return nil
		}
		return refuse(fmt.Sprintf("the name %q (not a variable)", n.Value))
	case *ast.UnaryNode:
		if !mathcomputeUnaryOps[n.Operator] {
			return refuse(fmt.Sprintf("the operator %q", n.Operator))
		}
		return w.walk(n.Node, d)
	case *ast.BinaryNode:
		if !mathcomputeBinaryOps[n.Operator] {
			return refuse(fmt.Sprintf("the operator %q", n.Operator))
		}
		return w.walkAll(d, n.Left, n.Right)
	case *ast.ChainNode:
		return w.walk(n.Node, d)
	case *ast.MemberNode:
		// Only array indexing: a name property (a.b, a.method()) would be a StringNode.
		if n.Method {
			return refuse("a method call")
		}
		if _, ok := n.Property.(*ast.StringNode); ok {
			return refuse("member access by name")
		}
		return w.walkAll(d, n.Node, n.Property)
	case *ast.SliceNode:
		return w.walkAll(d, n.Node, n.From, n.To)
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok || !mathcomputeCallable(id.Value) {
			name := "this call"
			if ok {
				name = fmt.Sprintf("the function %q", id.Value)
			}
			return refuse(name)
		}
		if mathcomputeAggregates[id.Value] && len(n.Arguments) == 0 {
			return Failf("invalid_expression", "not enough arguments to call %s (at column %d)", id.Value, n.Location().From+1)
		}
		return w.walkAll(d, n.Arguments...)
	case *ast.BuiltinNode:
		if !mathcomputeBuiltins[n.Name] {
			return refuse(fmt.Sprintf("the function %q", n.Name))
		}
		return w.walkAll(d, n.Arguments...)
	case *ast.PredicateNode:
		return w.walk(n.Node, d)
	case *ast.ConditionalNode:
		return w.walkAll(d, n.Cond, n.Exp1, n.Exp2)
	case *ast.VariableDeclaratorNode:
		if strings.HasPrefix(n.Name, "__") || strings.HasPrefix(n.Name, "$") {
			return refuse(fmt.Sprintf("the name %q", n.Name))
		}
		if err := w.walk(n.Value, d); err != nil {
			return err
		}
		w.lets[n.Name] = true
		return w.walk(n.Expr, d)
	case *ast.SequenceNode:
		return w.walkAll(d, n.Nodes...)
	case *ast.ArrayNode:
		return w.walkAll(d, n.Nodes...)
	case *ast.StringNode, *ast.BytesNode:
		return refuse("a string")
	case *ast.MapNode, *ast.PairNode:
		return refuse("a map")
	default:
		return refuse(fmt.Sprintf("the construct %T", n))
	}
}

func (w *mathcomputeWalker) walkAll(depth int, nodes ...ast.Node) error {
	for _, n := range nodes {
		if err := w.walk(n, depth); err != nil {
			return err
		}
	}
	return nil
}

// mathcomputeRun is the per-evaluation state the injected functions share. One VM runs on one
// goroutine, so the counter needs no lock.
type mathcomputeRun struct {
	ctx   context.Context
	steps int
	max   int
}

// step is injected at the start of every closure body. It bounds the work of nested
// map/filter/reduce and notices cancellation, which the VM itself never checks.
func (r *mathcomputeRun) step(...any) (any, error) {
	r.steps++
	if r.steps > r.max {
		return nil, Failf("step_budget_exceeded", "the expression evaluated more than %d closure bodies", r.max)
	}
	if r.steps&63 == 0 {
		if err := r.ctx.Err(); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// Visit implements ast.Visitor. It prefixes each closure body with a call to the step
// counter (a sequence keeps the body's static type, so the checker still sees what the body
// returns), and it routes every array literal element and every map() result through
// mathcomputeScalar, so that no array ever holds an array. Nested arrays would let a short
// expression build a DAG (let b = [a, a]; let c = [b, b]; ...) that ==, in, max or an error
// message then walks in exponential time, none of which the VM bounds.
func (r *mathcomputeRun) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.UnaryNode:
		// expr negates with Go's wrapping minus; 0 - x goes through the checked subtraction.
		if n.Operator == "-" {
			zero := &ast.IntegerNode{Value: 0}
			zero.SetLocation(n.Location())
			sub := &ast.BinaryNode{Operator: "-", Left: zero, Right: n.Node}
			sub.SetLocation(n.Location())
			ast.Patch(node, sub)
		}
	case *ast.PredicateNode:
		tick := &ast.CallNode{Callee: &ast.IdentifierNode{Value: mathcomputeStepFn}}
		n.Node = &ast.SequenceNode{Nodes: []ast.Node{tick, n.Node}}
	case *ast.ArrayNode:
		for i := range n.Nodes {
			n.Nodes[i] = mathcomputeScalarCall(n.Nodes[i])
		}
	case *ast.BinaryNode:
		switch n.Operator {
		case "==", "!=":
			n.Left, n.Right = mathcomputeChargeCall(n.Left), mathcomputeChargeCall(n.Right)
		case "in":
			// A range written in place is built afresh, within the memory budget, for every
			// test (and a constant one never is: the optimizer turns the test into a bounds check).
			if rng, ok := n.Right.(*ast.BinaryNode); !ok || rng.Operator != ".." {
				n.Right = mathcomputeChargeCall(n.Right)
			}
		}
	case *ast.BuiltinNode:
		if n.Name == "map" && len(n.Arguments) == 2 {
			if p, ok := n.Arguments[1].(*ast.PredicateNode); ok {
				p.Node = mathcomputeScalarCall(p.Node)
			}
		}
	}
}

const mathcomputeScalarFn = "__scalar"

// mathcomputeChargeFn wraps each operand of ==, != and in that may be an array. Those walk
// arrays element by element, which the VM neither counts nor interrupts: a range built once
// and searched in every body of a map, or in every term of one expression, ran for seconds
// past the deadline.
const mathcomputeChargeFn = "__charge"

// mathcomputeScanPerStep is how many array elements ==, != or in may visit for one step: a
// step is a closure body, some tens of nanoseconds; an element compared by in, a few.
const mathcomputeScanPerStep = 32

// mathcomputeChargeAnyFn is the charge for an operand whose static type is unknown (a sum,
// an aggregate, a reduce): its only signature keeps that type unknown. Through
// mathcomputeChargeFn's first overload it would have become []int, and sum(xs) == 10 a
// type error.
const mathcomputeChargeAnyFn = "__charge_any"

// mathcomputeChargeCall wraps n in the charge unless its static type rules out an array; the
// charge keeps the operand's static type.
func mathcomputeChargeCall(n ast.Node) ast.Node {
	fn := mathcomputeChargeAnyFn
	if t := n.Type(); t != nil {
		switch t.Kind() {
		case reflect.Slice, reflect.Array:
			fn = mathcomputeChargeFn
		case reflect.Interface:
		case reflect.Int:
			// A computed int may be a float at run time: abs(max(a, b)) takes abs's first
			// overload, func(int) int, whatever max returns. Typed int, == would compile to
			// expr's integer-only comparison and fail on the float; unknown, it compares
			// numbers. A literal is what it says.
			if _, literal := n.(*ast.IntegerNode); literal {
				return n
			}
		default:
			return n
		}
	}
	call := &ast.CallNode{Callee: &ast.IdentifierNode{Value: fn}, Arguments: []ast.Node{n}}
	call.SetLocation(n.Location())
	return call
}

// charge spends a step per mathcomputeScanPerStep elements of an array operand of ==, != or
// in, before the operator walks it, and looks at ctx; it returns the operand unchanged.
func (r *mathcomputeRun) charge(p ...any) (any, error) {
	n := 0
	switch x := p[0].(type) {
	case []int:
		n = len(x)
	case []float64:
		n = len(x)
	case []any:
		n = len(x)
	default:
		return p[0], nil
	}
	r.steps += (n + mathcomputeScanPerStep - 1) / mathcomputeScanPerStep
	if r.steps > r.max {
		return nil, Failf("step_budget_exceeded", "the expression evaluated more than %d closure bodies (or compared or searched as many arrays of %d elements)", r.max, mathcomputeScanPerStep)
	}
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	return p[0], nil
}

func mathcomputeScalarCall(n ast.Node) ast.Node {
	call := &ast.CallNode{Callee: &ast.IdentifierNode{Value: mathcomputeScalarFn}, Arguments: []ast.Node{n}}
	call.SetLocation(n.Location()) // errors point at the element, not at column 1
	return call
}

// mathcomputeScalar lets numbers, booleans and nil through and refuses everything else.
func mathcomputeScalar(p ...any) (any, error) {
	switch p[0].(type) {
	case int, float64, bool, nil:
		return p[0], nil
	}
	return nil, Failf("nested_array", "an array element must be a number or a boolean, not %s", mathcomputeKind(p[0]))
}

func (r *mathcomputeRun) options(env map[string]any, cfg MathComputeConfig) []expr.Option {
	opts := []expr.Option{
		expr.Env(env),
		expr.DisableAllBuiltins(),
		expr.MaxNodes(uint(cfg.MaxNodes) * 4), // generous: the walker has counted already; the checked operators add nodes
		expr.Patch(r),
		expr.Function(mathcomputeStepFn, r.step),
		expr.Function(mathcomputeScalarFn, mathcomputeScalar, new(func(any) any)),
		expr.Function(mathcomputeChargeFn, r.charge, new(func([]int) []int), new(func([]float64) []float64),
			new(func([]any) []any), new(func(any) any)),
		expr.Function(mathcomputeChargeAnyFn, r.charge, new(func(any) any)),
		expr.Function("sum", func(p ...any) (any, error) { return mathcomputeSum(r.ctx, p[0]) }, new(func(any) any)),
		expr.Function("abs", mathcomputeAbs, new(func(int) int), new(func(float64) float64), new(func(any) any)),
	}
	for name := range mathcomputeAggregates {
		opts = append(opts, expr.Function(name, func(p ...any) (any, error) {
			return mathcomputeAggregate(r.ctx, name, int(cfg.MemoryBudget), p)
		}, new(func(...any) any)))
	}
	for name := range mathcomputeBuiltins {
		opts = append(opts, expr.EnableBuiltin(name))
	}
	for name, fn := range mathcomputeUnary {
		opts = append(opts, expr.Function(name, func(p ...any) (any, error) {
			x, ok := mathcomputeFloat(p[0])
			if !ok {
				return nil, Failf("invalid_operand", "%s takes a number, got %s", name, mathcomputeKind(p[0]))
			}
			return fn(x), nil
		}, new(func(any) float64)))
	}
	for name, fn := range mathcomputeBinary {
		opts = append(opts, expr.Function(name, func(p ...any) (any, error) {
			x, ok1 := mathcomputeFloat(p[0])
			y, ok2 := mathcomputeFloat(p[1])
			if !ok1 || !ok2 {
				return nil, Failf("invalid_operand", "%s takes two numbers, got %s and %s", name, mathcomputeKind(p[0]), mathcomputeKind(p[1]))
			}
			return fn(x, y), nil
		}, new(func(any, any) float64)))
	}
	// Operator overloads, most specific first so that the checker keeps static types.
	for _, op := range []string{"+", "-", "*", "/", "%"} {
		op := op
		fn := mathcomputeOperators[op]
		var types []any
		if op == "/" {
			types = []any{new(func(int, int) float64)}
		} else {
			types = []any{new(func(int, int) int)}
		}
		types = append(types, new(func(float64, float64) float64), new(func(int, float64) float64),
			new(func(float64, int) float64), new(func(any, any) any))
		opts = append(opts,
			expr.Function(fn, func(p ...any) (any, error) { return mathcomputeArith(op, p[0], p[1]) }, types...),
			expr.Operator(op, fn))
	}
	return opts
}

func mathcomputeKind(v any) string {
	switch v.(type) {
	case int:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case nil:
		return "nil"
	case []int, []float64, []any:
		return "an array"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func mathcomputeFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// mathcomputeArith implements + - * / % with the checks expr leaves out: integer overflow
// (expr wraps around silently) and zero divisors.
func mathcomputeArith(op string, a, b any) (any, error) {
	ai, aInt := a.(int)
	bi, bInt := b.(int)
	if aInt && bInt {
		switch op {
		case "+":
			s := ai + bi
			if (ai > 0 && bi > 0 && s < 0) || (ai < 0 && bi < 0 && s >= 0) {
				return nil, Failf("integer_overflow", "%d + %d overflows a 64-bit integer", ai, bi)
			}
			return s, nil
		case "-":
			s := ai - bi
			if (ai >= 0 && bi < 0 && s < 0) || (ai < 0 && bi > 0 && s >= 0) {
				return nil, Failf("integer_overflow", "%d - %d overflows a 64-bit integer", ai, bi)
			}
			return s, nil
		case "*":
			if ai == 0 || bi == 0 {
				return 0, nil
			}
			p := ai * bi
			if p/bi != ai || (ai == -1 && bi == math.MinInt) || (bi == -1 && ai == math.MinInt) {
				return nil, Failf("integer_overflow", "%d * %d overflows a 64-bit integer", ai, bi)
			}
			return p, nil
		case "/":
			if bi == 0 {
				return nil, Failf("division_by_zero", "division by zero")
			}
			return float64(ai) / float64(bi), nil
		case "%":
			if bi == 0 {
				return nil, Failf("division_by_zero", "modulo by zero")
			}
			return ai % bi, nil
		}
	}
	x, ok1 := mathcomputeFloat(a)
	y, ok2 := mathcomputeFloat(b)
	if !ok1 || !ok2 {
		return nil, Failf("invalid_operand", "%s needs two numbers, got %s and %s", op, mathcomputeKind(a), mathcomputeKind(b))
	}
	switch op {
	case "+":
		return x + y, nil
	case "-":
		return x - y, nil
	case "*":
		return x * y, nil
	case "/":
		if y == 0 {
			return nil, Failf("division_by_zero", "division by zero")
		}
		return x / y, nil
	default: // "%"
		if y == 0 {
			return nil, Failf("division_by_zero", "modulo by zero")
		}
		return math.Mod(x, y), nil
	}
}

// mathcomputeAbs replaces expr's abs, which returns math.MinInt64 for itself.
func mathcomputeAbs(p ...any) (any, error) {
	switch x := p[0].(type) {
	case int:
		if x == math.MinInt {
			return nil, Failf("integer_overflow", "abs(%d) overflows a 64-bit integer", x)
		}
		if x < 0 {
			return -x, nil
		}
		return x, nil
	case float64:
		return math.Abs(x), nil
	}
	return nil, Failf("invalid_operand", "abs takes a number, got %s", mathcomputeKind(p[0]))
}

// mathcomputeSum replaces expr's sum: overflow-checked for integers, and — unlike the builtin,
// which the optimizer turns into a closed form for ranges — it makes a range cost its size in
// the memory budget, so sum(1..1e8) is refused rather than special-cased.
func mathcomputeSum(ctx context.Context, v any) (any, error) {
	var items []any
	switch xs := v.(type) {
	case []int:
		total := 0
		for i, x := range xs {
			if i&4095 == 0 && ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s, err := mathcomputeArith("+", total, x)
			if err != nil {
				return nil, err
			}
			total = s.(int)
		}
		return total, nil
	case []float64:
		total := 0.0
		for _, x := range xs {
			total += x
		}
		return total, nil
	case []any:
		items = xs
	default:
		return nil, Failf("invalid_operand", "sum takes an array, got %s", mathcomputeKind(v))
	}
	var total any = 0
	for i, x := range items {
		if i&4095 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s, err := mathcomputeArith("+", total, x)
		if err != nil {
			return nil, err
		}
		total = s
	}
	return total, nil
}

// mathcomputeAggregate replaces expr's max, min, mean and median, with their results: each
// argument is a number or an array of numbers, max and min return the extreme number as it is
// (an integer stays one, the first of equals wins), mean and median a float (0 for no numbers).
// Unlike expr's, they count the numbers their arguments hold together against the memory
// budget before reading any (the VM counted a range once, however many times it is passed),
// and they watch ctx while they read.
func mathcomputeAggregate(ctx context.Context, name string, limit int, args []any) (any, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("not enough arguments to call %s", name)
	}
	total := 0
	for _, a := range args {
		switch x := a.(type) {
		case []int:
			total += len(x)
		case []float64:
			total += len(x)
		case []any:
			total += len(x)
		default:
			total++
		}
	}
	if total > limit {
		return nil, Failf("memory_budget_exceeded", "the arguments of %s hold %d numbers together, the limit is %d", name, total, limit)
	}
	var (
		best  any // max, min: the extreme so far, an int or a float64
		sum   float64
		count int
		all   []float64 // median
	)
	if name == "median" {
		all = make([]float64, 0, total)
	}
	add := func(v any, f float64) {
		count++
		switch name {
		case "mean":
			sum += f
		case "median":
			all = append(all, f)
		default:
			if best == nil || mathcomputeBetter(name, v, best) {
				best = v
			}
		}
	}
	seen := 0
	visit := func(v any) error {
		if seen++; seen&4095 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		switch x := v.(type) {
		case int:
			add(v, float64(x))
		case float64:
			add(v, x)
		default:
			return fmt.Errorf("invalid argument for %s (type %T)", name, v)
		}
		return nil
	}
	for _, a := range args {
		var err error
		switch xs := a.(type) {
		case []int:
			for i := 0; i < len(xs) && err == nil; i++ {
				err = visit(xs[i])
			}
		case []float64:
			for i := 0; i < len(xs) && err == nil; i++ {
				err = visit(xs[i])
			}
		case []any:
			for i := 0; i < len(xs) && err == nil; i++ {
				err = visit(xs[i])
			}
		case int, float64:
			err = visit(a)
		default:
			// An argument that is neither a number nor an array: expr's own aggregates refused
			// it when compiling, so the expression is wrong, not its evaluation.
			return nil, Failf("invalid_expression", "invalid argument for %s (%s)", name, mathcomputeKind(a))
		}
		if err != nil {
			return nil, err
		}
	}
	switch name {
	case "mean":
		if count == 0 {
			return 0.0, nil
		}
		return sum / float64(count), nil
	case "median":
		n := len(all)
		if n == 0 {
			return 0.0, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		slices.Sort(all)
		if n%2 == 1 {
			return all[n/2], nil
		}
		return (all[n/2-1] + all[n/2]) / 2, nil
	}
	return best, nil
}

// mathcomputeBetter reports whether v should replace best as max's or min's answer: integers
// compare exactly, an integer and a float as floats (as expr does).
func mathcomputeBetter(name string, v, best any) bool {
	vi, vInt := v.(int)
	bi, bInt := best.(int)
	if vInt && bInt {
		if name == "max" {
			return vi > bi
		}
		return vi < bi
	}
	vf, _ := mathcomputeFloat(v)
	bf, _ := mathcomputeFloat(best)
	if name == "max" {
		return vf > bf
	}
	return vf < bf
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
func mathcomputeClip(s string) string {
	const limit = 512
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

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
