package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"
)

// DataFilterConfig bounds data_filter. Zero fields take the defaults in DefaultDataFilterConfig.
type DataFilterConfig struct {
	MaxItems      int // items in data
	MaxConditions int // conditions over where and every any group together
	DefaultLimit  int // items returned when the call names no limit
	MaxLimit      int // largest limit a call may ask for
}

// DefaultDataFilterConfig is the configuration NewDataFilter uses for zero fields.
var DefaultDataFilterConfig = DataFilterConfig{
	MaxItems:      10_000,
	MaxConditions: 64,
	DefaultLimit:  100,
	MaxLimit:      1_000,
}

// datafilterMaxPathSegments bounds a dotted field path.
const datafilterMaxPathSegments = 16

// datafilterMaxIntDigits is the longest integer literal compared exactly (as a big.Int);
// longer ones are compared as float64, so a hostile literal cannot cost quadratic time.
const datafilterMaxIntDigits = 400

// DataFilter is the data_filter tool: it filters an array of objects by conditions, sorts it
// stably, projects fields and pages the result.
//
// Semantics, chosen to be deterministic for any JSON:
//   - a field is a dotted path ("a.b.0.c"); a numeric segment indexes an array;
//   - numbers compare as numbers, exactly (integers as big integers, 1 == 1.0), strings as
//     strings (byte order, which is code point order); gt/gte/lt/lte between other kinds, or
//     between a number and a string, do not match;
//   - a missing field matches only ne, nin and exists:false; null is a present value;
//   - where is a conjunction; any is a list of groups, each a conjunction, of which at least
//     one must match;
//   - sort orders kinds null < boolean < number < string < array < object, then by value
//     (arrays and objects tie); items missing the field come last in either order;
//   - select lists paths; each becomes a key of the projected object, as written; missing
//     ones are left out.
type DataFilter struct {
	cfg DataFilterConfig
}

// NewDataFilter returns the data_filter tool; zero config fields take the defaults.
func NewDataFilter(cfg ...DataFilterConfig) *DataFilter {
	c := DefaultDataFilterConfig
	if len(cfg) > 0 {
		o := cfg[0]
		if o.MaxItems > 0 {
			c.MaxItems = o.MaxItems
		}
		if o.MaxConditions > 0 {
			c.MaxConditions = o.MaxConditions
		}
		if o.DefaultLimit > 0 {
			c.DefaultLimit = o.DefaultLimit
		}
		if o.MaxLimit > 0 {
			c.MaxLimit = o.MaxLimit
		}
	}
	c.DefaultLimit = min(c.DefaultLimit, c.MaxLimit)
	return &DataFilter{cfg: c}
}

// DataFilterOutput is data_filter's result.
type DataFilterOutput struct {
	Items    []json.RawMessage `json:"items"`    // the page, each item as given or projected
	Total    int               `json:"total"`    // items that matched, before paging
	Returned int               `json:"returned"` // len(items)
	Offset   int               `json:"offset"`
	Limit    int               `json:"limit"`
}

type datafilterCondArgs struct {
	Field string          `json:"field"`
	Op    string          `json:"op"`
	Value json.RawMessage `json:"value"`
}

type datafilterSortArgs struct {
	Field string `json:"field"`
	Order string `json:"order"`
}

type datafilterArgs struct {
	Data   []json.RawMessage      `json:"data"`
	Where  []datafilterCondArgs   `json:"where"`
	Any    [][]datafilterCondArgs `json:"any"`
	Sort   []datafilterSortArgs   `json:"sort"`
	Select []string               `json:"select"`
	Offset *int                   `json:"offset"`
	Limit  *int                   `json:"limit"`
}

// Name implements Tool.
func (*DataFilter) Name() string { return "data_filter" }

// Description implements Tool.
func (*DataFilter) Description() string {
	return "Filter, sort, project and page an array of objects (eq, ne, gt, gte, lt, lte, in, nin, contains, prefix, exists, regex)"
}

var datafilterSchema = json.RawMessage(`{
  "type": "object",
  "additionalProperties": false,
  "required": ["data"],
  "properties": {
    "data": {"type": "array", "maxItems": 10000, "items": {"type": "object", "maxProperties": 1000}},
    "where": {"type": "array", "maxItems": 32, "items": {"$ref": "#/$defs/cond"},
      "description": "conditions that must all hold"},
    "any": {"type": "array", "maxItems": 16,
      "items": {"type": "array", "minItems": 1, "maxItems": 32, "items": {"$ref": "#/$defs/cond"}},
      "description": "groups of conditions; at least one group must hold entirely"},
    "sort": {"type": "array", "maxItems": 8, "items": {
      "type": "object", "additionalProperties": false, "required": ["field"],
      "properties": {
        "field": {"$ref": "#/$defs/field"},
        "order": {"type": "string", "enum": ["asc", "desc"], "default": "asc"}
      }}},
    "select": {"type": "array", "maxItems": 64, "uniqueItems": true, "items": {"$ref": "#/$defs/field"}},
    "offset": {"type": "integer", "minimum": 0, "maximum": 10000, "default": 0},
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
  },
  "$defs": {
    "field": {"type": "string", "minLength": 1, "maxLength": 256,
      "description": "dotted path, e.g. \"user.address.city\" or \"tags.0\"; in an object a segment is a key, in an array an index written without sign or leading zero (\"tags.01\" names no element)"},
    "cond": {
      "type": "object",
      "additionalProperties": false,
      "required": ["field", "op"],
      "properties": {
        "field": {"$ref": "#/$defs/field"},
        "op": {"type": "string", "enum": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "prefix", "exists", "regex"]},
        "value": {"maxLength": 4096, "maxItems": 256, "maxProperties": 64}
      },
      "allOf": [
        {"if": {"required": ["op"], "properties": {"op": {"enum": ["eq", "ne", "contains"]}}},
         "then": {"required": ["value"]}},
        {"if": {"required": ["op"], "properties": {"op": {"enum": ["gt", "gte", "lt", "lte"]}}},
         "then": {"required": ["value"], "properties": {"value": {"type": ["number", "string"]}}}},
        {"if": {"required": ["op"], "properties": {"op": {"enum": ["in", "nin"]}}},
         "then": {"required": ["value"], "properties": {"value": {"type": "array"}}}},
        {"if": {"required": ["op"], "properties": {"op": {"const": "prefix"}}},
         "then": {"required": ["value"], "properties": {"value": {"type": "string"}}}},
        {"if": {"required": ["op"], "properties": {"op": {"const": "regex"}}},
         "then": {"required": ["value"], "properties": {"value": {"type": "string", "maxLength": 256, "description": "RE2 syntax, at most 10000 compiled instructions"}}}},
        {"if": {"required": ["op"], "properties": {"op": {"const": "exists"}}},
         "then": {"properties": {"value": {"type": "boolean"}}}}
      ]
    }
  }
}`)

// Schema implements Tool.
func (*DataFilter) Schema() json.RawMessage { return datafilterSchema }

// Simulate filters for real: data_filter is a pure computation with no side effect, so the
// dry run returns the actual answer, under exactly the bounds of Run.
func (d *DataFilter) Simulate(ctx context.Context, args json.RawMessage) (any, error) {
	return d.filter(ctx, args)
}

// Run filters the data.
func (d *DataFilter) Run(ctx context.Context, args json.RawMessage) (any, error) {
	return d.filter(ctx, args)
}

type datafilterCond struct {
	path   []string
	op     string
	value  any
	num    *datafilterNum      // value as a number, for ordering
	set    map[string]struct{} // in, nin: canonical keys of the listed values
	re     *regexBounded       // regex
	exists bool                // exists
}

type datafilterSort struct {
	path []string
	desc bool
}

type datafilterItem struct {
	raw  json.RawMessage
	doc  any
	keys []datafilterKey // sort keys, one per sort field
}

func (d *DataFilter) filter(ctx context.Context, raw json.RawMessage) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("data_filter: %w", err)
	}
	var a datafilterArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, Failf("invalid_args", "args do not decode: %v", err)
	}
	if len(a.Data) > d.cfg.MaxItems {
		return nil, Failf("too_many_items", "data has %d items, the limit is %d", len(a.Data), d.cfg.MaxItems)
	}
	offset, limit := 0, d.cfg.DefaultLimit
	if a.Offset != nil {
		if *a.Offset < 0 {
			return nil, Failf("invalid_args", "offset must not be negative")
		}
		offset = *a.Offset
	}
	if a.Limit != nil {
		if *a.Limit < 1 || *a.Limit > d.cfg.MaxLimit {
			return nil, Failf("invalid_args", "limit must be between 1 and %d", d.cfg.MaxLimit)
		}
		limit = *a.Limit
	}

	where, groups, err := d.conditions(a.Where, a.Any)
	if err != nil {
		return nil, err
	}
	sorts := make([]datafilterSort, 0, len(a.Sort))
	for _, s := range a.Sort {
		path, err := datafilterPath(s.Field)
		if err != nil {
			return nil, err
		}
		sorts = append(sorts, datafilterSort{path: path, desc: s.Order == "desc"})
	}
	selects := make([][]string, 0, len(a.Select))
	for _, f := range a.Select {
		path, err := datafilterPath(f)
		if err != nil {
			return nil, err
		}
		selects = append(selects, path)
	}

	matched := make([]datafilterItem, 0, min(len(a.Data), 1024))
	for i, rawItem := range a.Data {
		if i&255 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("data_filter: %w", err)
			}
		}
		doc, err := datafilterDecode(rawItem)
		if err != nil {
			return nil, Failf("invalid_args", "data item %d is not JSON: %v", i, err)
		}
		if _, ok := doc.(map[string]any); !ok {
			return nil, Failf("invalid_args", "data item %d is not an object", i)
		}
		ok, err := datafilterMatch(ctx, doc, where, groups)
		if err != nil {
			return nil, fmt.Errorf("data_filter: %w", err)
		}
		if !ok {
			continue
		}
		item := datafilterItem{raw: rawItem, doc: doc}
		for _, s := range sorts {
			item.keys = append(item.keys, datafilterKeyOf(datafilterLookup(doc, s.path)))
		}
		matched = append(matched, item)
	}

	if len(sorts) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("data_filter: %w", err)
		}
		sort.SliceStable(matched, func(i, j int) bool {
			for k, s := range sorts {
				c := datafilterCompareKeys(matched[i].keys[k], matched[j].keys[k], s.desc)
				if c != 0 {
					return c < 0
				}
			}
			return false
		})
	}

	out := DataFilterOutput{Items: []json.RawMessage{}, Total: len(matched), Offset: offset, Limit: limit}
	if offset < len(matched) {
		// Projections can repeat a value (select "a" and "a.b" both hold a.b), so the output is
		// measured as it is built, against the runner's cap.
		limitBytes, size := outputCap(ctx), datafilterOutputOverhead
		exact := false // items counted as they will be encoded (compacted), not as sent
		page := matched[offset:min(len(matched), offset+limit)]
		for _, it := range page {
			item := it.raw
			if len(selects) > 0 {
				proj, err := datafilterProject(it.doc, a.Select, selects, limitBytes-size)
				if err != nil {
					return nil, err
				}
				item = proj
			}
			if exact {
				size += datafilterCompactLen(item) + 1
			} else if size += len(item) + 1; size > limitBytes {
				// An item as sent may hold whitespace its encoding will not: count what is
				// in the output compacted before refusing it, and so from now on.
				exact, size = true, datafilterOutputOverhead
				for _, prev := range append(out.Items, item) {
					size += datafilterCompactLen(prev) + 1
				}
			}
			if size > limitBytes {
				return nil, errOutputTooLarge(limitBytes)
			}
			out.Items = append(out.Items, item)
		}
	}
	out.Returned = len(out.Items)
	return out, nil
}

// datafilterCompactLen is the length of the valid JSON v without whitespace outside strings.
func datafilterCompactLen(v []byte) int {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return len(v)
	}
	return b.Len()
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

func datafilterPath(field string) ([]string, error) {
	if field == "" || len(field) > 256 {
		return nil, Failf("invalid_field", "a field path has 1 to 256 characters")
	}
	path := strings.Split(field, ".")
	if len(path) > datafilterMaxPathSegments {
		return nil, Failf("invalid_field", "field %q has more than %d segments", field, datafilterMaxPathSegments)
	}
	for _, seg := range path {
		if seg == "" {
			return nil, Failf("invalid_field", "field %q has an empty segment", field)
		}
	}
	return path, nil
}

// datafilterIndex reads a path segment as an array index: only the canonical decimal form
// ("0", "7", "12"), so that each element has exactly one name ("a.01", "a.+1" name no element
// of an array, though they may be keys of an object): otherwise a select list (uniqueItems)
// could repeat one value under 64 spellings. An index too large for an int names no element.
func datafilterIndex(seg string) (int, bool) {
	if seg == "" || (seg[0] == '0' && len(seg) > 1) || strings.Trim(seg, "0123456789") != "" {
		return 0, false
	}
	i, err := strconv.Atoi(seg)
	if err != nil {
		return math.MaxInt, true
	}
	return i, true
}

func datafilterDecode(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// datafilterLookup follows path through objects and arrays.
func datafilterLookup(doc any, path []string) (any, bool) {
	cur := doc
	for _, seg := range path {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[seg]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, ok := datafilterIndex(seg)
			if !ok || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
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

// datafilterOutputOverhead is the encoded size of DataFilterOutput without its items (the
// counts at their largest).
const datafilterOutputOverhead = 96

// datafilterProject builds an object with one key per selected path, in select order; it stops
// with output_too_large once the object passes room bytes.
func datafilterProject(doc any, names []string, paths [][]string, room int) (json.RawMessage, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	for i, path := range paths {
		v, ok := datafilterLookup(doc, path)
		if !ok {
			continue
		}
		k, err := json.Marshal(names[i])
		if err != nil {
			return nil, Failf("output_not_encodable", "%v", err)
		}
		val, err := json.Marshal(v)
		if err != nil {
			return nil, Failf("output_not_encodable", "%v", err)
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.Write(k)
		b.WriteByte(':')
		b.Write(val)
		if b.Len() > room {
			return nil, errOutputTooLarge(room)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
