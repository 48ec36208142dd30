package exec

// math_compute's bounded run: the step and charge counters and the rewrites that inject them.

import (
	"context"
	"reflect"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
)

// mathcomputeOperators are the operators replaced by checked functions; the name is internal
// ("__" names are refused in user input).
var mathcomputeOperators = map[string]string{
	"+": "__add", "-": "__sub", "*": "__mul", "/": "__div", "%": "__mod",
}

const mathcomputeStepFn = "__step"

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
