package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
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

// datafilterSlowPattern compiles to 9903 instructions, just under regex_match's cap: over a
// 14 kB string, one regexp search runs for seconds and cannot be interrupted.
var datafilterSlowPattern = strings.Repeat(`[^x]{990}`, 10) + "x"

// A regex condition is compiled under regex_match's instruction cap, and matched through a
// reader that watches ctx: data_filter checks ctx only between items, and one item was
// enough to keep the tool (and its sandbox slot) busy long past its deadline.
func TestDataFilterRegexBoundedByDeadline(t *testing.T) {
	reg := toolsBRegistry(t, NewDataFilter())
	long := strings.Repeat("a", 14000)
	run := func(pattern string) (error, time.Duration, bool) {
		t.Helper()
		args, _ := json.Marshal(map[string]any{
			"data":  []any{map[string]any{"s": long}},
			"where": []any{map[string]any{"field": "s", "op": "regex", "value": pattern}},
		})
		if _, err := reg.Validate("data_filter", args); err != nil {
			t.Fatalf("args should be valid: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		var err error
		took, ok := runWithin(stretched(3*time.Second), func() { _, err = NewDataFilter().Run(ctx, args) })
		return err, took, ok
	}

	// 101 bytes, 10003 instructions: refused before any matching, naming the condition.
	err, took, ok := run(strings.Repeat(`[^x]{1000}`, 10) + "x")
	if !ok || took > stretched(time.Second) {
		t.Fatalf("over the instruction cap: ran %v (finished: %v) with a 50ms deadline", took, ok)
	}
	var te *ToolError
	if !errors.As(err, &te) || te.Code != "pattern_too_complex" || !strings.Contains(te.Message, `condition on "s"`) {
		t.Fatalf("over the instruction cap: error %v, want pattern_too_complex naming the condition", err)
	}

	// Under the cap: the match stops at the deadline.
	err, took, ok = run(datafilterSlowPattern)
	if !ok || took > stretched(time.Second) {
		t.Fatalf("under the instruction cap: ran %v (finished: %v) with a 50ms deadline", took, ok)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("under the instruction cap: error %v, want the deadline", err)
	}
}

// Through the runner: a free call that times out must not keep the free share after the
// caller got "timeout", or the next free caller is refused with sandbox_busy.
func TestDataFilterTimedOutRegexReleasesFreeShare(t *testing.T) {
	bomb, _ := json.Marshal(map[string]any{
		"data":  []any{map[string]any{"s": strings.Repeat("a", 14000)}},
		"where": []any{map[string]any{"field": "s", "op": "regex", "value": datafilterSlowPattern}},
	})
	reg := toolsBRegistry(t, NewDataFilter(), NewHashGenerate())
	r := NewRunner(reg, Limits{MaxConcurrent: 4, MaxFreeConcurrent: 1, QueueWait: 100 * time.Millisecond}, nil)
	_, status, err := r.Run(context.Background(), Call{Tool: "data_filter", Args: bomb, DryRun: true, Free: true, Timeout: 50 * time.Millisecond})
	if err != nil || status != StatusTimeout {
		t.Fatalf("bomb: %s %v", status, err)
	}
	time.Sleep(stretched(200 * time.Millisecond)) // well past the bomb's 50 ms timeout
	_, _, err = r.Run(context.Background(), Call{Tool: "hash_generate", Args: json.RawMessage(`{"input":"x"}`), DryRun: true, Free: true})
	if err != nil {
		t.Fatalf("a free call 250ms after a 50ms-timeout call was refused: %v", err)
	}
}

// An array element has one name: "a.00", "a.+1" or "a.-0" name no element of an array (so a
// select list cannot repeat one value under 64 spellings), while the same strings are keys of
// an object like any other.
func TestDataFilterSelectCanonicalIndices(t *testing.T) {
	reg := toolsBRegistry(t, NewDataFilter())
	args := `{"data": [{"a": [{"b": 1}, 2], "o": {"01": 5, "-5": "x", "+1": 6, "007": 7, "-": 3, "+x": 4, "1e3": 8}}],
		"select": ["a.0.b", "a.1", "a.2", "a.00", "a.01", "a.+1", "a.-0", "a.00.b", "o.01", "o.-5", "o.+1", "o.007", "o.-", "o.+x", "o.1e3"]}`
	out, err := toolsBCall(t, reg, NewDataFilter(), args)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"items":[{"a.0.b":1,"a.1":2,"o.01":5,"o.-5":"x","o.+1":6,"o.007":7,"o.-":3,"o.+x":4,"o.1e3":8}],"total":1,"returned":1,"offset":0,"limit":100}`; string(out) != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
	// Conditions read object keys of digits too.
	out, err = toolsBCall(t, reg, NewDataFilter(), `{"data": [{"m": {"01": 5}}, {"m": {"01": 7}}], "where": [{"field": "m.01", "op": "eq", "value": 5}]}`)
	if err != nil || !strings.Contains(string(out), `"total":1`) {
		t.Fatalf("where m.01 = 5: %s %v", out, err)
	}
	// 64 spellings of one element: one copy in the output.
	sel := []string{}
	for i := 1; i <= 64; i++ {
		sel = append(sel, "a."+strings.Repeat("0", i))
	}
	selJSON, _ := json.Marshal(sel)
	out, err = toolsBCall(t, reg, NewDataFilter(), `{"data":[{"a":["`+strings.Repeat("x", 10000)+`"]}],"select":`+string(selJSON)+`}`)
	if err != nil || len(out) > 11000 {
		t.Fatalf("64 spellings of a.0: %d bytes of output, %v", len(out), err)
	}
}

// Canonical paths can still repeat a value ("a", "a.0", "a.0.0", ... each hold the innermost
// string): the projection is measured as it is built, and stops at the runner's output cap
// instead of building sixteen copies for the runner to refuse.
func TestDataFilterSelectStopsAtOutputCap(t *testing.T) {
	value := toolsBQuote(strings.Repeat("<", 100000)) // 600 kB encoded
	for i := 0; i < 15; i++ {
		value = "[" + value + "]"
	}
	sel := []string{"a"}
	for i := 1; i <= 15; i++ {
		sel = append(sel, "a"+strings.Repeat(".0", i))
	}
	selJSON, _ := json.Marshal(sel)
	args := json.RawMessage(`{"data":[{"a":` + value + `}],"select":` + string(selJSON) + `}`)
	reg := toolsBRegistry(t, NewDataFilter())
	if _, err := reg.Validate("data_filter", args); err != nil {
		t.Fatalf("args should be valid: %v", err)
	}
	r := NewRunner(reg, Limits{}, nil) // MaxOutputBytes 1 MiB
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	res, status, err := r.Run(context.Background(), Call{Tool: "data_filter", Args: args, DryRun: true, Free: true})
	runtime.ReadMemStats(&m1)
	alloc := (m1.TotalAlloc - m0.TotalAlloc) >> 20
	if err != nil || status != StatusFailed || res.Error == nil || res.Error.Code != "output_too_large" {
		t.Fatalf("status %s, err %v, result error %+v; want output_too_large", status, err, res.Error)
	}
	if alloc > 24 { // 9 MiB measured; 37 MiB without the running estimate
		t.Errorf("a %d-byte call allocated %d MiB to produce an output refused at 1 MiB", len(args), alloc)
	}
}

// Items sent with whitespace are measured against the output cap as they will be encoded,
// compacted: an answer that fits is not refused for the spaces of its request.
func TestDataFilterOutputCapCountsItemsCompacted(t *testing.T) {
	item := "{\n    \"name\":    \"" + strings.Repeat("x", 200) + "\",\n    \"n\":    1\n" + strings.Repeat(" ", 600) + "}"
	items := make([]string, 100)
	for i := range items {
		items[i] = item
	}
	args := json.RawMessage(`{"data": [` + strings.Join(items, ",\n") + `], "limit": 100}`)
	reg := toolsBRegistry(t, NewDataFilter())
	if _, err := reg.Validate("data_filter", args); err != nil {
		t.Fatalf("args should be valid: %v", err)
	}
	r := NewRunner(reg, Limits{MaxOutputBytes: 48 << 10}, nil) // as sent: ~90 kB; compacted: ~23 kB
	res, status, err := r.Run(context.Background(), Call{Tool: "data_filter", Args: args, DryRun: true, Free: true})
	if err != nil || status != StatusCompleted {
		t.Fatalf("status %s, err %v, result error %+v; want the 100 items", status, err, res.Error)
	}
	if !strings.Contains(string(res.Output), `"returned":100`) {
		t.Fatalf("output %.200s", res.Output)
	}
}
