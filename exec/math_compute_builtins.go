package exec

// math_compute's arithmetic: the checked operators and the functions it defines itself.

import (
	"context"
	"fmt"
	"math"
	"slices"
)

var mathcomputeUnary = map[string]func(float64) float64{
	"sqrt": math.Sqrt, "cbrt": math.Cbrt, "exp": math.Exp, "log": math.Log, "log2": math.Log2,
	"log10": math.Log10, "sin": math.Sin, "cos": math.Cos, "tan": math.Tan, "asin": math.Asin,
	"acos": math.Acos, "atan": math.Atan, "trunc": math.Trunc,
}

var mathcomputeBinary = map[string]func(float64, float64) float64{
	"pow": math.Pow, "atan2": math.Atan2, "hypot": math.Hypot,
}

// mathcomputeAggregates are the variadic functions of numbers and arrays of numbers.
var mathcomputeAggregates = map[string]bool{"max": true, "min": true, "mean": true, "median": true}

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
