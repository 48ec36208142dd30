package exec

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"regexp/syntax"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func regexMatchRun(t *testing.T, args string) (RegexMatchOutput, error) {
	t.Helper()
	reg, err := NewRegistry(NewRegexMatch())
	if err != nil {
		t.Fatal(err)
	}
	valid, err := reg.Validate("regex_match", json.RawMessage(args))
	if err != nil {
		t.Fatalf("Validate(%s): %v", args, err)
	}
	out, err := NewRegexMatch().Run(context.Background(), valid)
	if err != nil {
		return RegexMatchOutput{}, err
	}
	sim, err := NewRegexMatch().Simulate(context.Background(), valid)
	if err != nil {
		t.Fatalf("Simulate failed where Run succeeded: %v", err)
	}
	a, _ := json.Marshal(out)
	b, _ := json.Marshal(sim)
	if string(a) != string(b) {
		t.Fatalf("Simulate differs from Run:\n%s\n%s", a, b)
	}
	return out.(RegexMatchOutput), nil
}

func TestRegexMatchModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		args string
		want string // the JSON output
	}{
		{"named groups", `{"pattern":"(?P<year>\\d{4})-(?P<month>\\d{2})","input":"date: 2024-03 and 2025-04"}`,
			`{"matched":true,"mode":"match","count":1,"truncated":false,"matches":[{"text":"2024-03","start":6,"end":13,"groups":[{"index":1,"name":"year","matched":true,"text":"2024","start":6,"end":10},{"index":2,"name":"month","matched":true,"text":"03","start":11,"end":13}],"named":{"month":"03","year":"2024"}}]}`},
		{"no match", `{"pattern":"z+","input":"abc"}`,
			`{"matched":false,"mode":"match","count":0,"truncated":false,"matches":[]}`},
		{"unmatched group", `{"pattern":"(a)|(b)","input":"b"}`,
			`{"matched":true,"mode":"match","count":1,"truncated":false,"matches":[{"text":"b","start":0,"end":1,"groups":[{"index":1,"matched":false,"text":"","start":-1,"end":-1},{"index":2,"matched":true,"text":"b","start":0,"end":1}]}]}`},
		{"flag i", `{"pattern":"hello","input":"HeLLo","flags":"i"}`,
			`{"matched":true,"mode":"match","count":1,"truncated":false,"matches":[{"text":"HeLLo","start":0,"end":5,"groups":[]}]}`},
		{"without flag m", `{"pattern":"^b","input":"a\nb"}`,
			`{"matched":false,"mode":"match","count":0,"truncated":false,"matches":[]}`},
		{"flag m", `{"pattern":"^b","input":"a\nb","flags":"m"}`,
			`{"matched":true,"mode":"match","count":1,"truncated":false,"matches":[{"text":"b","start":2,"end":3,"groups":[]}]}`},
		{"flag s", `{"pattern":"a.b","input":"a\nb","flags":"s"}`,
			`{"matched":true,"mode":"match","count":1,"truncated":false,"matches":[{"text":"a\nb","start":0,"end":3,"groups":[]}]}`},
		{"find_all", `{"pattern":"\\d+","input":"1 22 333","mode":"find_all"}`,
			`{"matched":true,"mode":"find_all","count":3,"truncated":false,"matches":[{"text":"1","start":0,"end":1,"groups":[]},{"text":"22","start":2,"end":4,"groups":[]},{"text":"333","start":5,"end":8,"groups":[]}]}`},
		{"find_all capped", `{"pattern":"\\d+","input":"1 22 333","mode":"find_all","maxMatches":2}`,
			`{"matched":true,"mode":"find_all","count":2,"truncated":true,"matches":[{"text":"1","start":0,"end":1,"groups":[]},{"text":"22","start":2,"end":4,"groups":[]}]}`},
		{"find_all word boundaries", `{"pattern":"\\bfoo\\b","input":"foo foofoo foo","mode":"find_all"}`,
			`{"matched":true,"mode":"find_all","count":2,"truncated":false,"matches":[{"text":"foo","start":0,"end":3,"groups":[]},{"text":"foo","start":11,"end":14,"groups":[]}]}`},
		{"replace with groups", `{"pattern":"(\\w+)@(?P<host>\\w+)","input":"joe@x and ann@y","mode":"replace","replacement":"${host} at $1"}`,
			`{"matched":true,"mode":"replace","count":2,"truncated":false,"matches":[],"result":"x at joe and y at ann"}`},
		{"replace literal", `{"pattern":"o","input":"foo","mode":"replace","replacement":"$1","literal":true}`,
			`{"matched":true,"mode":"replace","count":2,"truncated":false,"matches":[],"result":"f$1$1"}`},
		{"replace capped", `{"pattern":"o","input":"foooo","mode":"replace","replacement":"0","maxMatches":2}`,
			`{"matched":true,"mode":"replace","count":2,"truncated":true,"matches":[],"result":"f00oo"}`},
		{"replace nothing", `{"pattern":"x","input":"foo","mode":"replace","replacement":"y"}`,
			`{"matched":false,"mode":"replace","count":0,"truncated":false,"matches":[],"result":"foo"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := regexMatchRun(t, tc.args)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			got, _ := json.Marshal(out)
			if string(got) != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestRegexMatchAgreesWithGo checks that the deadline-aware search finds exactly what
// regexp's own FindAll and ReplaceAll find, including the context-sensitive assertions that
// need the rune before the search position.
func TestRegexMatchAgreesWithGo(t *testing.T) {
	for _, tc := range []struct{ pattern, input string }{
		{`a*`, "baaac"},
		{`x*`, "héllo wörld"},
		{`\b`, "foo bar-baz"},
		{`\B`, "foo bar"},
		{`\bfoo\b`, "foo foofoo foo"},
		{`(?m)^\w`, "ab\ncd\n\nef"},
		{`(?m)$`, "ab\ncd\n"},
		{`^a`, "aaa"},
		{`\Aa|b`, "abab"},
		{`a|\z`, "aba"},
		{`(?i)straße`, "STRASSE straße Straße"},
		{`(\w)(\w)?`, "abcde"},
		{`.*x|a`, "aaaa"},
		{`(?s).`, "a\nb"},
		{`\pL+`, "日本語 text ünïcode"},
		{`(a|ab)(c|bcd)(d*)`, "abcd abcd"},
		{`(?U)a+`, "aaa"},
		{`\Qa.b`, "a.b axb a.b"},
		{`\b\Qa.b`, "a.b xa.b a.b"},
		{`\b\w+\b|\s`, "one two  three"},
		{``, "abc"},
		{`(?i)\bfoo\b`, "FOO foo xfoo Foo"},
		{`^(?P<n>a+)$`, "aaa"},
		{`(?m)^\s*#.*$`, "# a\n  # b\nc # d\n#"},
		{`\b[\p{L}]+\b`, "élan vital, über-cool"},
		{`(?s)^.+?\b`, "ab cd"},
		{`[^\n]*\bend`, "the end\nno end"},
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			prog, err := regexMatchCompile(tc.pattern, "")
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			var got [][]int
			if _, err := prog.each(context.Background(), tc.input, 1<<20, func(loc []int) error {
				got = append(got, slices.Clone(loc))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			re := regexp.MustCompile(tc.pattern)
			want := re.FindAllStringSubmatchIndex(tc.input, -1)
			if !slices.EqualFunc(got, want, slices.Equal[[]int]) {
				t.Errorf("matches %v, regexp finds %v", got, want)
			}
			res, _, _, err := prog.replace(context.Background(), regexMatchArgs{Input: tc.input, Replacement: "<$0>"}, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if w := re.ReplaceAllString(tc.input, "<$0>"); res != w {
				t.Errorf("replace %q, regexp gives %q", res, w)
			}
		})
	}
}

func TestRegexMatchRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, args, code string
	}{
		{"invalid pattern", `{"pattern":"(unclosed","input":"x"}`, "invalid_pattern"},
		{"repeat count too large", `{"pattern":"a{1001}","input":"x"}`, "invalid_pattern"},
		{"program too large", `{"pattern":"` + strings.Repeat(`[a-z]{1000}`, 11) + `","input":"x"}`, "pattern_too_complex"},
		// 4 MB: past the output cap (1 MiB by default) before result_too_large's 2 MiB.
		{"result too large", `{"pattern":"a+","input":"` + strings.Repeat("a", 2000) + `","mode":"replace","replacement":"` + strings.Repeat("$0", 2048) + `"}`, "output_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := regexMatchRun(t, tc.args)
			toolsAWantCode(t, err, tc.code, "")
		})
	}
	_, err := NewRegexMatch().Run(context.Background(), json.RawMessage(`{"pattern":"`+strings.Repeat("a", 1025)+`","input":""}`))
	toolsAWantCode(t, err, "pattern_too_long", "")
	// Under a cap above 2 MiB, the result's own limit applies.
	_, err = NewRegexMatch().Run(withOutputCap(context.Background(), 8<<20), json.RawMessage(`{"pattern":"a+","input":"`+
		strings.Repeat("a", 2000)+`","mode":"replace","replacement":"`+strings.Repeat("$0", 2048)+`"}`))
	toolsAWantCode(t, err, "result_too_large", "")
}

// TestRegexMatchStopsAtDeadline runs a find-all whose searches each rescan the whole input
// (quadratic in total, minutes of CPU) and checks that it stops at the deadline and leaves no
// goroutine behind.
func TestRegexMatchStopsAtDeadline(t *testing.T) {
	defer goleak.VerifyNone(t)
	args, _ := json.Marshal(regexMatchArgs{Pattern: `.*x|a`, Input: strings.Repeat("a", 1<<20), Mode: "find_all", MaxMatches: 10000})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := NewRegexMatch().Run(ctx, args)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the deadline", err)
	}

	r := toolsARunner(t, Limits{}, NewRegexMatch())
	res, status, err := r.Run(context.Background(), Call{Tool: "regex_match", Args: args, Timeout: 100 * time.Millisecond})
	if err != nil || status != StatusTimeout || res.ExitCode != ExitTimeout {
		t.Fatalf("status %q exit %d err %v, want timeout", status, res.ExitCode, err)
	}
}

// Every capture group of every hit repeats its text in the output. The output is measured as
// it is built and stops at the runner's cap: 500 nested groups over 30 kB made a 15 MB output,
// and 512 empty groups over 1000 matches 29 MB, that the runner then encoded only to refuse.
func TestRegexMatchOutputStopsAtCap(t *testing.T) {
	reg, err := NewRegistry(NewRegexMatch())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args map[string]any
	}{
		{"nested groups", map[string]any{"pattern": strings.Repeat("(", 500) + ".*" + strings.Repeat(")", 500), "input": strings.Repeat("a", 30000)}},
		{"many groups, many matches", map[string]any{"pattern": strings.Repeat("()", 512), "input": strings.Repeat("a", 1000), "mode": "find_all", "maxMatches": 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, _ := json.Marshal(tc.args)
			if _, err := reg.Validate("regex_match", args); err != nil {
				t.Fatalf("args should be valid: %v", err)
			}
			r := NewRunner(reg, Limits{}, nil) // MaxOutputBytes 1 MiB
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			res, status, err := r.Run(context.Background(), Call{Tool: "regex_match", Args: args, DryRun: true, Free: true})
			runtime.ReadMemStats(&m1)
			alloc := (m1.TotalAlloc - m0.TotalAlloc) >> 20
			if err != nil || status != StatusFailed || res.Error == nil || res.Error.Code != "output_too_large" {
				t.Fatalf("status %s, err %v, result error %+v; want output_too_large", status, err, res.Error)
			}
			if alloc > 8 {
				t.Errorf("a %d-byte call allocated %d MiB to produce an output refused at 1 MiB", len(args), alloc)
			}
		})
	}
	// The cap is the runner's: an output that fits a larger one is returned whole.
	args, _ := json.Marshal(map[string]any{"pattern": strings.Repeat("(", 20) + ".*" + strings.Repeat(")", 20), "input": strings.Repeat("a", 60000)})
	r := NewRunner(reg, Limits{MaxOutputBytes: 4 << 20}, nil)
	res, status, err := r.Run(context.Background(), Call{Tool: "regex_match", Args: args, DryRun: true})
	if err != nil || status != StatusCompleted {
		t.Fatalf("under a 4 MiB cap: status %s, err %v, result error %+v", status, err, res.Error)
	}
}

// regexMatchHitSize must never exceed the encoding, or output_too_large could refuse an output
// that fits.
func TestRegexMatchHitSizeBelowEncoding(t *testing.T) {
	for _, p := range []string{`a`, `()`, `(a)|(b)`, `(?P<name>a)(?P<x>)`, `(((a)))`, `(?P<n>\d+)-(x)?`} {
		prog, err := regexMatchCompile(p, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range []string{"a", "b", "12-", "12-x", ""} {
			loc, err := prog.search(context.Background(), in, 0)
			if err != nil || loc == nil {
				continue
			}
			h := prog.hit(in, loc)
			enc, _ := json.Marshal(h)
			if est := regexMatchHitSize(h); est > len(enc)+1 { // +1: the comma between hits
				t.Errorf("%q on %q: estimate %d, encoding %d bytes", p, in, est, len(enc))
			}
		}
	}
	for _, mode := range []string{"match", "find_all"} {
		enc, _ := json.Marshal(RegexMatchOutput{Mode: mode, Matches: []RegexMatchHit{}})
		if regexMatchOutputOverhead > len(enc) {
			t.Errorf("overhead %d, encoding of an empty %s output %d bytes", regexMatchOutputOverhead, mode, len(enc))
		}
	}
}

// replace stops at the runner's output cap, as find_all does, rather than building up to
// 2 MiB that the runner then refuses.
func TestRegexMatchReplaceStopsAtCap(t *testing.T) {
	reg, err := NewRegistry(NewRegexMatch())
	if err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal(map[string]any{"pattern": "a", "input": strings.Repeat("a", 200000), "mode": "replace",
		"replacement": strings.Repeat("b", 4096), "maxMatches": 10000})
	if _, err := reg.Validate("regex_match", args); err != nil {
		t.Fatalf("args should be valid: %v", err)
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	_, err = NewRegexMatch().Run(withOutputCap(context.Background(), 1<<20), args)
	runtime.ReadMemStats(&m1)
	if code := toolsBCode(err); code != "output_too_large" {
		t.Fatalf("error %v, want output_too_large", err)
	}
	if alloc := (m1.TotalAlloc - m0.TotalAlloc) >> 20; alloc > 8 {
		t.Errorf("allocated %d MiB to refuse an output at 1 MiB", alloc)
	}
	r := NewRunner(reg, Limits{}, nil)
	res, status, err := r.Run(context.Background(), Call{Tool: "regex_match", Args: args, DryRun: true})
	if err != nil || status != StatusFailed || res.Error == nil || res.Error.Code != "output_too_large" {
		t.Fatalf("status %s, err %v, result error %+v; want output_too_large", status, err, res.Error)
	}
	// Under a larger cap the same replace completes.
	args, _ = json.Marshal(map[string]any{"pattern": "a", "input": strings.Repeat("a", 1000), "mode": "replace",
		"replacement": strings.Repeat("b", 1500)})
	r = NewRunner(reg, Limits{MaxOutputBytes: 4 << 20}, nil)
	res, status, err = r.Run(context.Background(), Call{Tool: "regex_match", Args: args, DryRun: true})
	if err != nil || status != StatusCompleted {
		t.Fatalf("under a 4 MiB cap: status %s, err %v, result error %+v", status, err, res.Error)
	}
}

// A pattern far over the instruction cap is refused from its parse tree: compiling 78 ×
// (?:a{0,1000}), 156,002 instructions, took 110 ms only to be refused. The estimate is an
// upper bound of the program, so a pattern under the cap is never refused unseen.
func TestRegexCompileEstimatesFirst(t *testing.T) {
	heavy := strings.Repeat(`(?:a{0,1000})`, 78)
	start := time.Now()
	for i := 0; i < 10; i++ {
		if _, _, err := regexCompileBounded(heavy); toolsBCode(err) != "pattern_too_complex" {
			t.Fatalf("error %v, want pattern_too_complex", err)
		}
	}
	if took := time.Since(start) / 10; took > stretched(5*time.Millisecond) {
		t.Errorf("refusing took %v", took)
	}
	for _, p := range []string{`a`, `abc`, `(?i)straße`, `[a-z]+`, `(a|b|c)*d?`, `x{3}`, `x{2,5}`, `(?:ab){0,7}c+`, `\bfoo\b|^bar$`,
		`((a{2}){3}){4}`, `(?:[^x]{99}){3}`, `.*`, `(?s).+?`, `(a)(b)(c)(d)`, `a{5,}`, `(?:a|)*`, `\pL{9}\pN{3}`} {
		tree, err := syntax.Parse(p, syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		prog, err := syntax.Compile(tree.Simplify())
		if err != nil {
			t.Fatal(err)
		}
		if est := regexEstimateInsts(tree); est < int64(len(prog.Inst)) {
			t.Errorf("%s: estimated %d instructions, compiles to %d", p, est, len(prog.Inst))
		}
	}
}
