package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
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

// datafilterOutputOverhead is the encoded size of DataFilterOutput without its items (the
// counts at their largest).
const datafilterOutputOverhead = 96

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
