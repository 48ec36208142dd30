package exec

// data_filter's conditions: preparing where and any, and matching a document against them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
)

type datafilterCond struct {
	path   []string
	op     string
	value  any
	num    *datafilterNum      // value as a number, for ordering
	set    map[string]struct{} // in, nin: canonical keys of the listed values
	re     *regexBounded       // regex
	exists bool                // exists
}

func (d *DataFilter) conditions(where []datafilterCondArgs, anyOf [][]datafilterCondArgs) ([]datafilterCond, [][]datafilterCond, error) {
	total := len(where)
	for _, g := range anyOf {
		total += len(g)
	}
	if total > d.cfg.MaxConditions {
		return nil, nil, Failf("too_many_conditions", "%d conditions, the limit is %d", total, d.cfg.MaxConditions)
	}
	prepared := func(cs []datafilterCondArgs) ([]datafilterCond, error) {
		out := make([]datafilterCond, 0, len(cs))
		for _, c := range cs {
			pc, err := datafilterPrepare(c)
			if err != nil {
				return nil, err
			}
			out = append(out, pc)
		}
		return out, nil
	}
	w, err := prepared(where)
	if err != nil {
		return nil, nil, err
	}
	groups := make([][]datafilterCond, 0, len(anyOf))
	for _, g := range anyOf {
		pg, err := prepared(g)
		if err != nil {
			return nil, nil, err
		}
		groups = append(groups, pg)
	}
	return w, groups, nil
}

func datafilterPrepare(c datafilterCondArgs) (datafilterCond, error) {
	path, err := datafilterPath(c.Field)
	if err != nil {
		return datafilterCond{}, err
	}
	pc := datafilterCond{path: path, op: c.Op}
	hasValue := len(bytes.TrimSpace(c.Value)) > 0
	if hasValue {
		if pc.value, err = datafilterDecode(c.Value); err != nil {
			return pc, Failf("invalid_args", "condition on %q: value is not JSON", c.Field)
		}
	}
	need := func(what string, ok bool) error {
		if !ok {
			return Failf("invalid_args", "condition on %q: %s needs %s", c.Field, c.Op, what)
		}
		return nil
	}
	switch c.Op {
	case "eq", "ne", "contains":
		err = need("a value", hasValue)
	case "gt", "gte", "lt", "lte":
		switch v := pc.value.(type) {
		case json.Number:
			n := datafilterParseNum(v)
			pc.num = &n
		case string:
		default:
			err = need("a number or string value", false)
		}
	case "in", "nin":
		list, ok := pc.value.([]any)
		if err = need("an array value", ok); err == nil {
			pc.set = make(map[string]struct{}, len(list))
			for _, v := range list {
				pc.set[datafilterCanon(v)] = struct{}{}
			}
		}
	case "prefix":
		_, ok := pc.value.(string)
		err = need("a string value", ok)
	case "regex":
		pattern, ok := pc.value.(string)
		if err = need("a string pattern", ok && len(pattern) <= 256); err == nil {
			// regex_match's compile: its instruction cap bounds the work per input byte.
			if pc.re, _, err = regexCompileBounded(pattern); err != nil {
				code, msg := "invalid_regex", err.Error()
				var te *ToolError
				if errors.As(err, &te) {
					msg = te.Message
					if te.Code != "invalid_pattern" {
						code = te.Code
					}
				}
				err = Failf(code, "condition on %q: %s", c.Field, msg)
			}
		}
	case "exists":
		pc.exists = true
		if hasValue {
			b, ok := pc.value.(bool)
			err = need("a boolean value", ok)
			pc.exists = b
		}
	default:
		err = Failf("invalid_args", "unknown operator %q", c.Op)
	}
	return pc, err
}

// datafilterMatch reports whether doc meets the conditions. Only a regex condition can fail:
// with ctx's error, once the deadline stops its match.
func datafilterMatch(ctx context.Context, doc any, where []datafilterCond, groups [][]datafilterCond) (bool, error) {
	for i := range where {
		if ok, err := where[i].matches(ctx, doc); !ok || err != nil {
			return false, err
		}
	}
	if len(groups) == 0 {
		return true, nil
	}
	for _, g := range groups {
		all := true
		for i := range g {
			ok, err := g[i].matches(ctx, doc)
			if err != nil {
				return false, err
			}
			if !ok {
				all = false
				break
			}
		}
		if all {
			return true, nil
		}
	}
	return false, nil
}

func (c *datafilterCond) matches(ctx context.Context, doc any) (bool, error) {
	if c.op == "regex" {
		v, present := datafilterLookup(doc, c.path)
		x, ok := v.(string)
		if !present || !ok {
			return false, nil
		}
		return c.re.match(ctx, x)
	}
	return c.matchesValue(doc), nil
}

func (c *datafilterCond) matchesValue(doc any) bool {
	v, present := datafilterLookup(doc, c.path)
	switch c.op {
	case "exists":
		return present == c.exists
	case "ne":
		return !present || !datafilterEqual(v, c.value)
	case "nin":
		return !present || !c.in(v)
	}
	if !present {
		return false
	}
	switch c.op {
	case "eq":
		return datafilterEqual(v, c.value)
	case "in":
		return c.in(v)
	case "gt", "gte", "lt", "lte":
		cmp, ok := c.order(v)
		if !ok {
			return false
		}
		switch c.op {
		case "gt":
			return cmp > 0
		case "gte":
			return cmp >= 0
		case "lt":
			return cmp < 0
		default:
			return cmp <= 0
		}
	case "contains":
		switch x := v.(type) {
		case string:
			s, ok := c.value.(string)
			return ok && strings.Contains(x, s)
		case []any:
			for _, e := range x {
				if datafilterEqual(e, c.value) {
					return true
				}
			}
		}
		return false
	case "prefix":
		x, ok1 := v.(string)
		p, ok2 := c.value.(string)
		return ok1 && ok2 && strings.HasPrefix(x, p)
	}
	return false
}

// in looks the value's canonical key up in the listed values': one pass over the value,
// where comparing it with each listed value in turn could cost its size times the list's.
func (c *datafilterCond) in(v any) bool {
	_, ok := c.set[datafilterCanon(v)]
	return ok
}

// order compares the field's value with the condition's; ok is false when they are not both
// numbers or both strings.
func (c *datafilterCond) order(v any) (int, bool) {
	switch x := v.(type) {
	case json.Number:
		if c.num == nil {
			return 0, false
		}
		return datafilterParseNum(x).cmp(*c.num), true
	case string:
		s, ok := c.value.(string)
		if !ok {
			return 0, false
		}
		return strings.Compare(x, s), true
	}
	return 0, false
}
