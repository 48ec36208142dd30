package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// datafilterTestData mixes kinds on purpose: p is a number, a string, null, missing, a huge
// integer and an exponent literal.
const datafilterTestData = `[
 {"n": "a", "p": 10, "t": ["x", "y"], "u": {"c": "Paris"}},
 {"n": "b", "p": 2.5, "t": []},
 {"n": "c", "p": "10"},
 {"n": "d"},
 {"n": "e", "p": 12345678901234567890},
 {"n": "f", "p": null},
 {"n": "g", "p": 1e2, "u": {"c": "Lyon"}},
 {"n": "h", "p": 10.0, "ok": true}
]`

func TestDataFilter(t *testing.T) {
	tool := NewDataFilter()
	reg := toolsBRegistry(t, tool)
	for _, tc := range []struct {
		name  string
		query string // args after "data"
		names string // the n of the returned items, in order
		total int
	}{
		{"no conditions keeps everything", ``, "abcdefgh", 8},
		{"eq compares numbers by value", `"where": [{"field": "p", "op": "eq", "value": 10}]`, "ah", 2},
		{"eq does not mix numbers and strings", `"where": [{"field": "p", "op": "eq", "value": "10"}]`, "c", 1},
		{"exponent literals are numbers", `"where": [{"field": "p", "op": "eq", "value": 100}]`, "g", 1},
		{"huge integers compare exactly", `"where": [{"field": "p", "op": "eq", "value": 12345678901234567891}]`, "", 0},
		{"huge integer equal to itself", `"where": [{"field": "p", "op": "eq", "value": 12345678901234567890}]`, "e", 1},
		{"eq null matches null, not missing", `"where": [{"field": "p", "op": "eq", "value": null}]`, "f", 1},
		{"ne matches missing fields", `"where": [{"field": "p", "op": "ne", "value": 10}]`, "bcdefg", 6},
		{"gt over numbers only", `"where": [{"field": "p", "op": "gt", "value": 5}]`, "aegh", 4},
		{"gte", `"where": [{"field": "p", "op": "gte", "value": 100}]`, "eg", 2},
		{"lt", `"where": [{"field": "p", "op": "lt", "value": 10}]`, "b", 1},
		{"lte mixes integer and float literals", `"where": [{"field": "p", "op": "lte", "value": 10.0}]`, "abh", 3},
		{"string order", `"where": [{"field": "n", "op": "gte", "value": "f"}]`, "fgh", 3},
		{"in", `"where": [{"field": "n", "op": "in", "value": ["a", "c", "z"]}]`, "ac", 2},
		{"in with numbers by value", `"where": [{"field": "p", "op": "in", "value": [100, 2.50]}]`, "bg", 2},
		{"eq on an array", `"where": [{"field": "t", "op": "eq", "value": ["x", "y"]}]`, "a", 1},
		{"eq on an empty array", `"where": [{"field": "t", "op": "eq", "value": []}]`, "b", 1},
		{"eq on an object", `"where": [{"field": "u", "op": "eq", "value": {"c": "Lyon"}}]`, "g", 1},
		{"eq on a boolean", `"where": [{"field": "ok", "op": "eq", "value": true}]`, "h", 1},
		{"eq never matches across kinds", `"where": [{"field": "ok", "op": "eq", "value": 1}]`, "", 0},
		{"in with arrays and objects, key order aside", `"where": [{"field": "t", "op": "in", "value": [["x", "y"], {"c": "Paris"}]}]`, "a", 1},
		{"in with an object", `"where": [{"field": "u", "op": "in", "value": [{"c": "Lyon"}]}]`, "g", 1},
		{"nin matches missing fields", `"where": [{"field": "p", "op": "nin", "value": [10, "10", null]}]`, "bdeg", 4},
		{"contains on a string", `"where": [{"field": "u.c", "op": "contains", "value": "ar"}]`, "a", 1},
		{"contains on an array", `"where": [{"field": "t", "op": "contains", "value": "y"}]`, "a", 1},
		{"prefix", `"where": [{"field": "u.c", "op": "prefix", "value": "Ly"}]`, "g", 1},
		{"exists", `"where": [{"field": "u", "op": "exists"}]`, "ag", 2},
		{"exists counts null as present", `"where": [{"field": "p", "op": "exists", "value": true}]`, "abcefgh", 7},
		{"exists false", `"where": [{"field": "p", "op": "exists", "value": false}]`, "d", 1},
		{"regex", `"where": [{"field": "n", "op": "regex", "value": "^[a-c]$"}]`, "abc", 3},
		{"regex ignores non-strings", `"where": [{"field": "p", "op": "regex", "value": "1"}]`, "c", 1},
		{"array index in a path", `"where": [{"field": "t.0", "op": "eq", "value": "x"}]`, "a", 1},
		{"path through a scalar is missing", `"where": [{"field": "n.x", "op": "exists"}]`, "", 0},
		{"where is a conjunction", `"where": [{"field": "p", "op": "gt", "value": 5}, {"field": "p", "op": "lt", "value": 50}]`, "ah", 2},
		{"any is a disjunction of groups", `"any": [[{"field": "n", "op": "eq", "value": "b"}], [{"field": "p", "op": "gte", "value": 100}, {"field": "u", "op": "exists"}]]`, "bg", 2},
		{"where and any together", `"where": [{"field": "p", "op": "exists"}], "any": [[{"field": "n", "op": "eq", "value": "d"}], [{"field": "n", "op": "eq", "value": "f"}]]`, "f", 1},
		{"sort ascending: kinds, then values, missing last", `"sort": [{"field": "p"}]`, "fbahgecd", 8},
		{"sort descending keeps missing last", `"sort": [{"field": "p", "order": "desc"}]`, "cegahbfd", 8},
		{"sort is stable", `"sort": [{"field": "ok"}]`, "habcdefg", 8},
		{"multi-key sort", `"sort": [{"field": "u.c"}, {"field": "n", "order": "desc"}]`, "gahfedcb", 8},
		{"offset and limit page after sorting", `"sort": [{"field": "n", "order": "desc"}], "offset": 2, "limit": 3`, "fed", 8},
		{"offset past the end", `"offset": 20`, "", 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := `{"data": ` + datafilterTestData
			if tc.query != "" {
				args += ", " + tc.query
			}
			out, err := toolsBCall(t, reg, tool, args+`, "select": ["n"]}`)
			if err != nil {
				t.Fatalf("error %v", err)
			}
			var got DataFilterOutput
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			var names strings.Builder
			for _, it := range got.Items {
				var v struct{ N string }
				if err := json.Unmarshal(it, &v); err != nil {
					t.Fatal(err)
				}
				names.WriteString(v.N)
			}
			if names.String() != tc.names || got.Total != tc.total || got.Returned != len(got.Items) {
				t.Fatalf("got %q total %d returned %d, want %q total %d", names.String(), got.Total, got.Returned, tc.names, tc.total)
			}
		})
	}
}

func TestDataFilterOutputShape(t *testing.T) {
	tool := NewDataFilter()
	reg := toolsBRegistry(t, tool)
	for _, tc := range []struct {
		name, args, want string
	}{
		{"items are returned as given", `{"data": [{"b": 1, "a": {"x": [1.50]}}]}`,
			`{"items":[{"b":1,"a":{"x":[1.50]}}],"total":1,"returned":1,"offset":0,"limit":100}`},
		{"select projects paths as keys, in select order, skipping missing", `{"data": [{"a": {"b": 2}, "c": [7, 8], "d": 1}], "select": ["d", "a.b", "c.1", "zz"]}`,
			`{"items":[{"d":1,"a.b":2,"c.1":8}],"total":1,"returned":1,"offset":0,"limit":100}`},
		{"empty data", `{"data": []}`, `{"items":[],"total":0,"returned":0,"offset":0,"limit":100}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := toolsBCall(t, reg, tool, tc.args)
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if string(out) != tc.want {
				t.Fatalf("got  %s\nwant %s", out, tc.want)
			}
		})
	}
}

func TestDataFilterLimits(t *testing.T) {
	items := make([]string, 12)
	for i := range items {
		items[i] = fmt.Sprintf(`{"i": %d}`, i)
	}
	data := "[" + strings.Join(items, ",") + "]"
	cond := `{"field": "i", "op": "gte", "value": 0}`
	for _, tc := range []struct {
		name string
		cfg  DataFilterConfig
		args string
		code string
	}{
		{"too many items", DataFilterConfig{MaxItems: 10}, `{"data": ` + data + `}`, "too_many_items"},
		{"too many conditions over where and any", DataFilterConfig{MaxConditions: 2}, `{"data": [], "where": [` + cond + `], "any": [[` + cond + `, ` + cond + `]]}`, "too_many_conditions"},
		{"limit above the configured maximum", DataFilterConfig{MaxLimit: 5}, `{"data": [], "limit": 6}`, "invalid_args"},
		{"default limit pages", DataFilterConfig{DefaultLimit: 5}, `{"data": ` + data + `}`, ""},
		{"invalid regex", DataFilterConfig{}, `{"data": [], "where": [{"field": "i", "op": "regex", "value": "(["}]}`, "invalid_regex"},
		{"empty path segment", DataFilterConfig{}, `{"data": [], "where": [{"field": "a..b", "op": "exists"}]}`, "invalid_field"},
		{"too many path segments", DataFilterConfig{}, `{"data": [], "sort": [{"field": "` + strings.Repeat("a.", 16) + `a"}]}`, "invalid_field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tool := NewDataFilter(tc.cfg)
			_, err := toolsBCall(t, toolsBRegistry(t, tool), tool, tc.args)
			if got := toolsBCode(err); got != tc.code {
				t.Fatalf("code %q, want %q (%v)", got, tc.code, err)
			}
		})
	}
	out, err := NewDataFilter(DataFilterConfig{DefaultLimit: 5}).Run(context.Background(), json.RawMessage(`{"data": `+data+`}`))
	if err != nil {
		t.Fatal(err)
	}
	if o := out.(DataFilterOutput); o.Returned != 5 || o.Total != 12 || o.Limit != 5 {
		t.Fatalf("default limit: %+v", o)
	}
}

func TestDataFilterArgsRejected(t *testing.T) {
	reg := toolsBRegistry(t, NewDataFilter())
	for _, tc := range []struct {
		name, args, field string
	}{
		{"missing data", `{}`, "/data"},
		{"data not an array", `{"data": {}}`, "/data"},
		{"item not an object", `{"data": [1]}`, "/data/0"},
		{"too many items", `{"data": [` + strings.TrimSuffix(strings.Repeat("{},", 10001), ",") + `]}`, "/data"},
		{"unknown operator", `{"data": [], "where": [{"field": "a", "op": "like", "value": 1}]}`, "/where/0/op"},
		{"missing field", `{"data": [], "where": [{"op": "eq", "value": 1}]}`, "/where/0/field"},
		{"eq without value", `{"data": [], "where": [{"field": "a", "op": "eq"}]}`, "/where/0/value"},
		{"in without an array", `{"data": [], "where": [{"field": "a", "op": "in", "value": 1}]}`, "/where/0/value"},
		{"gt with an array", `{"data": [], "where": [{"field": "a", "op": "gt", "value": [1]}]}`, "/where/0/value"},
		{"regex pattern too long", `{"data": [], "where": [{"field": "a", "op": "regex", "value": "` + strings.Repeat("a", 257) + `"}]}`, "/where/0/value"},
		{"exists with a string", `{"data": [], "where": [{"field": "a", "op": "exists", "value": "yes"}]}`, "/where/0/value"},
		{"empty any group", `{"data": [], "any": [[]]}`, "/any/0"},
		{"bad sort order", `{"data": [], "sort": [{"field": "a", "order": "up"}]}`, "/sort/0/order"},
		{"duplicate select", `{"data": [], "select": ["a", "a"]}`, "/select"},
		{"limit too large", `{"data": [], "limit": 1001}`, "/limit"},
		{"negative offset", `{"data": [], "offset": -1}`, "/offset"},
		{"unknown property", `{"data": [], "groupBy": "a"}`, "/groupBy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := toolsBArgsField(t, reg, "data_filter", tc.args); got != tc.field {
				t.Fatalf("field %q, want %q", got, tc.field)
			}
		})
	}
}

func TestDataFilterContext(t *testing.T) {
	tool := NewDataFilter()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, call := range []func(context.Context, json.RawMessage) (any, error){tool.Simulate, tool.Run} {
		if _, err := call(ctx, json.RawMessage(`{"data": [{"a": 1}]}`)); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	}
}

func TestDataFilterNumbers(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1", "1.0", 0},
		{"1e2", "100", 0},
		{"-0", "0", 0},
		{"12345678901234567890", "12345678901234567891", -1},
		{"9007199254740993", "9007199254740992.0", 1}, // 2^53+1 exactly vs the float 2^53
		{"1e400", "12345678901234567890", 1},          // out of range is +Inf
		{"-1e400", "-5", -1},
		{"0.1", "0.10000000000000001", 0}, // the same float64
		{"2.5", "3", -1},
		{"100000000000000000000", "1e20", 0},
		{"0.5", "5e-1", 0},
	} {
		a, b := datafilterParseNum(json.Number(tc.a)), datafilterParseNum(json.Number(tc.b))
		if got := a.cmp(b); got != tc.want {
			t.Errorf("cmp(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		// in uses canonical keys; they must agree with the comparison.
		if sameKey := a.canon() == b.canon(); sameKey != (tc.want == 0) {
			t.Errorf("canon(%s) = %q, canon(%s) = %q, but cmp = %d", tc.a, a.canon(), tc.b, b.canon(), tc.want)
		}
	}
}
