package exec

// math_compute's static checks: the names and constructs an expression may use.

import (
	"context"
	"fmt"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/parser"
)

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

var mathcomputeBinaryOps = map[string]bool{
	"+": true, "-": true, "*": true, "/": true, "%": true, "**": true, "^": true,
	"==": true, "!=": true, "<": true, ">": true, "<=": true, ">=": true,
	"and": true, "or": true, "&&": true, "||": true, "in": true, "..": true, "??": true,
}

var mathcomputeUnaryOps = map[string]bool{"-": true, "+": true, "!": true, "not": true}

// mathcomputeKeywords cannot be variable names: the expr lexer reads them as operators.
var mathcomputeKeywords = map[string]bool{
	"true": true, "false": true, "nil": true, "let": true, "if": true, "else": true, "in": true,
	"not": true, "and": true, "or": true, "matches": true, "contains": true, "startsWith": true,
	"endsWith": true,
}

// mathcomputeCallable reports whether name is one of the functions this tool defines (as
// opposed to an expr builtin).
func mathcomputeCallable(name string) bool {
	return mathcomputeUnary[name] != nil || mathcomputeBinary[name] != nil || name == "sum" || name == "abs" ||
		mathcomputeAggregates[name]
}

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
