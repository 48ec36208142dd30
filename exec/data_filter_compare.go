package exec

// data_filter's comparison of JSON values: numbers, equality, canonical keys and sort keys.

import (
	"encoding/json"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"
)

// datafilterMaxIntDigits is the longest integer literal compared exactly (as a big.Int);
// longer ones are compared as float64, so a hostile literal cannot cost quadratic time.
const datafilterMaxIntDigits = 400

// datafilterCanon encodes a value so that two values have the same key exactly when
// datafilterEqual holds: numbers by value (an integral float as its exact integer), object
// keys sorted.
func datafilterCanon(v any) string {
	var b strings.Builder
	datafilterWriteCanon(&b, v)
	return b.String()
}

func datafilterWriteCanon(b *strings.Builder, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		b.WriteString(strconv.Quote(x))
	case json.Number:
		b.WriteString(datafilterParseNum(x).canon())
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			datafilterWriteCanon(b, e)
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Quote(k))
			b.WriteByte(':')
			datafilterWriteCanon(b, x[k])
		}
		b.WriteByte('}')
	}
}

// datafilterNum is a JSON number: an exact integer when the literal is one (and not absurdly
// long), a float64 otherwise. JSON has no NaN, and overflow gives ±Inf, which orders fine.
type datafilterNum struct {
	i *big.Int
	f float64
}

func datafilterParseNum(n json.Number) datafilterNum {
	s := n.String()
	if len(s) <= datafilterMaxIntDigits && !strings.ContainsAny(s, ".eE") {
		if i, ok := new(big.Int).SetString(s, 10); ok {
			return datafilterNum{i: i}
		}
	}
	f, _ := strconv.ParseFloat(s, 64) // a range error still yields ±Inf or 0, which is what we want
	return datafilterNum{f: f}
}

func (a datafilterNum) cmp(b datafilterNum) int {
	switch {
	case a.i != nil && b.i != nil:
		return a.i.Cmp(b.i)
	case a.i == nil && b.i == nil:
		switch {
		case a.f < b.f:
			return -1
		case a.f > b.f:
			return 1
		}
		return 0
	}
	return a.big().Cmp(b.big())
}

// canon is the number's key for datafilterCanon: equal numbers give equal strings.
func (a datafilterNum) canon() string {
	switch {
	case a.i != nil:
		return a.i.String()
	case math.IsInf(a.f, 0):
		if a.f > 0 {
			return "+inf"
		}
		return "-inf"
	case a.f == math.Trunc(a.f):
		i, _ := new(big.Float).SetFloat64(a.f).Int(nil) // exact: the float is an integer
		return i.String()
	}
	return strconv.FormatFloat(a.f, 'g', -1, 64)
}

// big converts exactly: a float64 is a binary fraction a big.Float holds without rounding.
func (a datafilterNum) big() *big.Float {
	if a.i != nil {
		return new(big.Float).SetInt(a.i)
	}
	if math.IsInf(a.f, 0) {
		return new(big.Float).SetInf(a.f < 0)
	}
	return new(big.Float).SetFloat64(a.f)
}

// datafilterEqual is JSON equality with numbers compared by value.
func datafilterEqual(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	case json.Number:
		y, ok := b.(json.Number)
		return ok && (x == y || datafilterParseNum(x).cmp(datafilterParseNum(y)) == 0)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !datafilterEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, xv := range x {
			yv, ok := y[k]
			if !ok || !datafilterEqual(xv, yv) {
				return false
			}
		}
		return true
	}
	return false
}

// datafilterKey is a precomputed sort key.
type datafilterKey struct {
	rank int // 0 missing, 1 null, 2 boolean, 3 number, 4 string, 5 array, 6 object
	b    bool
	num  datafilterNum
	s    string
}

func datafilterKeyOf(v any, present bool) datafilterKey {
	if !present {
		return datafilterKey{rank: 0}
	}
	switch x := v.(type) {
	case nil:
		return datafilterKey{rank: 1}
	case bool:
		return datafilterKey{rank: 2, b: x}
	case json.Number:
		return datafilterKey{rank: 3, num: datafilterParseNum(x)}
	case string:
		return datafilterKey{rank: 4, s: x}
	case []any:
		return datafilterKey{rank: 5}
	default:
		return datafilterKey{rank: 6}
	}
}

// datafilterCompareKeys orders two keys; missing values come last whatever the direction.
func datafilterCompareKeys(a, b datafilterKey, desc bool) int {
	if a.rank == 0 || b.rank == 0 {
		switch {
		case a.rank == b.rank:
			return 0
		case a.rank == 0:
			return 1
		default:
			return -1
		}
	}
	c := 0
	switch {
	case a.rank != b.rank:
		c = a.rank - b.rank
	case a.rank == 2 && a.b != b.b:
		c = 1
		if !a.b {
			c = -1
		}
	case a.rank == 3:
		c = a.num.cmp(b.num)
	case a.rank == 4:
		c = strings.Compare(a.s, b.s)
	}
	if desc {
		c = -c
	}
	return c
}
