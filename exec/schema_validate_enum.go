package exec

import (
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// schemavalidateValues is a schema's const or enum, checked by the budget hook instead of the
// library. The library compares the value with every entry in turn, parsing both sides of
// every number comparison into a big.Rat, and it does so before the hook runs: a failure
// there returned before anything was charged or ctx was looked at, so 15000 entries over
// 5000 items ran 87 s past a 50ms deadline. Here each entry is reduced once, at compile time,
// to a canonical key (numbers by their exact rational value, object members sorted), and a
// value is looked up by its own key: one walk of the value, charged one evaluation per node,
// whatever the number of entries.
type schemavalidateValues struct {
	want     []any               // the entries as written (const: its one value)
	shown    []any               // the entries the error's message can show: see schemavalidateEnumShown
	isConst  bool                // the keyword is const, not enum
	keys     map[string]struct{} // canonical keys of the entries that can equal anything
	maxNodes int                 // nodes of the largest entry: a larger value equals none
}

// newSchemavalidateValues keys the entries, charging the budget one evaluation per node.
func newSchemavalidateValues(b *schemavalidateBudget, want []any, isConst bool) *schemavalidateValues {
	vs := &schemavalidateValues{want: want, isConst: isConst, keys: make(map[string]struct{}, len(want))}
	vs.shown = want
	primitive := true
	for _, w := range want {
		switch w.(type) {
		case []any, map[string]any:
			primitive = false
		}
	}
	if primitive && len(want) > schemavalidateEnumShown {
		vs.shown = want[:schemavalidateEnumShown]
	}
	for _, w := range want {
		n := schemavalidateNodes(w, -1)
		b.charge(n)
		vs.maxNodes = max(vs.maxNodes, n)
		if key, ok := schemavalidateKey(nil, w); ok {
			vs.keys[string(key)] = struct{}{}
		}
	}
	return vs
}

// check returns nil if v equals an entry, as the library's equality has it, and otherwise the
// error the library would have reported.
func (vs *schemavalidateValues) check(b *schemavalidateBudget, v any) error {
	n := schemavalidateNodes(v, vs.maxNodes)
	b.charge(n)
	if n <= vs.maxNodes {
		if key, ok := schemavalidateKey(nil, v); ok {
			if _, found := vs.keys[string(key)]; found {
				return nil
			}
		}
	}
	if vs.isConst {
		return schemavalidateMoved{&kind.Const{Got: v, Want: vs.want[0]}}
	}
	return schemavalidateMoved{&kind.Enum{Got: v, Want: vs.shown}}
}

// schemavalidateEnumShown is how many entries an enum error keeps. The library's message
// lists every entry when all are primitive (at least 3 bytes each, with ", "), and the output
// keeps its first 512 bytes: 200 entries say all that is shown, and 50 errors over 15000
// entries no longer format 750,000 values only to cut them (a third of a second).
const schemavalidateEnumShown = 200

// schemavalidateMoved carries the error of a check the hook does in the library's place. The
// library reports any error of the hook as a format failure; schemavalidatePrune puts the
// original kind back, so the output names the keyword and says what the library would say.
type schemavalidateMoved struct{ kind jsonschema.ErrorKind }

func (m schemavalidateMoved) Error() string { return m.kind.LocalizedString(nil) }

// schemavalidateUnmove returns e with the kind of the check it carries, if it carries one.
func schemavalidateUnmove(e *jsonschema.ValidationError) *jsonschema.ValidationError {
	f, ok := e.ErrorKind.(*kind.Format)
	if !ok {
		return e
	}
	var m schemavalidateMoved
	if !errors.As(f.Err, &m) {
		return e
	}
	moved := *e
	moved.ErrorKind = m.kind
	return &moved
}

// schemavalidateNodes counts the values in v (itself, and every array item and object member
// value at any depth), stopping once the count passes limit (no limit if negative).
func schemavalidateNodes(v any, limit int) int {
	n := 0
	var walk func(v any)
	walk = func(v any) {
		if n++; limit >= 0 && n > limit {
			return
		}
		switch x := v.(type) {
		case []any:
			for _, c := range x {
				if walk(c); limit >= 0 && n > limit {
					return
				}
			}
		case map[string]any:
			for _, c := range x {
				if walk(c); limit >= 0 && n > limit {
					return
				}
			}
		}
	}
	walk(v)
	return n
}

// schemavalidateKey appends the canonical key of v to dst: two JSON values have the same key
// exactly when the library's equality holds between them. ok is false for a value that
// equals nothing, not even itself: one holding a number big.Rat cannot parse.
func schemavalidateKey(dst []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(dst, 'z'), true
	case bool:
		if x {
			return append(dst, 't'), true
		}
		return append(dst, 'f'), true
	case string:
		dst = append(strconv.AppendInt(append(dst, 's'), int64(len(x)), 10), ':')
		return append(dst, x...), true
	case []any:
		dst = append(strconv.AppendInt(append(dst, '['), int64(len(x)), 10), ':')
		for _, c := range x {
			var ok bool
			if dst, ok = schemavalidateKey(dst, c); !ok {
				return dst, false
			}
		}
		return append(dst, ']'), true
	case map[string]any:
		names := make([]string, 0, len(x))
		for k := range x {
			names = append(names, k)
		}
		slices.Sort(names)
		dst = append(strconv.AppendInt(append(dst, '{'), int64(len(x)), 10), ':')
		for _, k := range names {
			var ok bool
			if dst, ok = schemavalidateKey(dst, k); !ok {
				return dst, false
			}
			if dst, ok = schemavalidateKey(dst, x[k]); !ok {
				return dst, false
			}
		}
		return append(dst, '}'), true
	default: // a number: json.Number from the decoder, compared as the library does
		r, ok := new(big.Rat).SetString(fmt.Sprint(x))
		if !ok {
			return dst, false
		}
		return append(append(dst, 'n'), r.RatString()+";"...), true
	}
}
