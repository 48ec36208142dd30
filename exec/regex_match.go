package exec

import (
	"context"
	"encoding/json"
	"io"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"
)

// Limits of regex_match. Go's regexp (RE2) runs in time linear in the input for one search,
// but a find-all or replace runs many searches, and a search cannot be interrupted; so the
// input is fed through a reader that stops at the deadline, and every size is capped.
const (
	regexMatchMaxPattern = 1024    // pattern, bytes
	regexMatchMaxInsts   = 10000   // compiled program size
	regexMatchMaxResult  = 2 << 20 // replace output, bytes
	regexMatchCheckEvery = 1024    // runes between deadline checks
	regexMatchFindAllDef = 100     // default maxMatches for find_all
	regexMatchReplaceDef = 1000    // default maxMatches for replace
)

// RegexMatch is the regex_match tool. Matching is pure, so dry-run returns the real answer.
type RegexMatch struct{}

// NewRegexMatch returns the regex_match tool.
func NewRegexMatch() *RegexMatch { return &RegexMatch{} }

// Name implements Tool.
func (*RegexMatch) Name() string { return "regex_match" }

// Description implements Tool.
func (*RegexMatch) Description() string {
	return "Test a regular expression (RE2 syntax, linear time) against input: first match, all matches, or replace"
}

// Schema implements Tool.
func (*RegexMatch) Schema() json.RawMessage { return regexMatchSchema }

var regexMatchSchema = json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["pattern", "input"],
  "properties": {
    "pattern":     {"type": "string", "minLength": 1, "maxLength": 1024, "description": "RE2 syntax"},
    "input":       {"type": "string", "maxLength": 1048576},
    "flags":       {"type": "string", "maxLength": 3, "pattern": "^[ims]*$", "description": "i: case-insensitive, m: ^ and $ match at lines, s: . matches newline"},
    "mode":        {"type": "string", "enum": ["match", "find_all", "replace"], "default": "match"},
    "replacement": {"type": "string", "maxLength": 4096, "description": "for replace; $1, ${name} expand unless literal is true"},
    "literal":     {"type": "boolean", "default": false},
    "maxMatches":  {"type": "integer", "minimum": 1, "maximum": 10000, "description": "find_all: default 100; replace: default 1000"}
  },
  "if": {"properties": {"mode": {"const": "replace"}}, "required": ["mode"]},
  "then": {"required": ["replacement"]}
}`)

type regexMatchArgs struct {
	Pattern     string `json:"pattern"`
	Input       string `json:"input"`
	Flags       string `json:"flags"`
	Mode        string `json:"mode"`
	Replacement string `json:"replacement"`
	Literal     bool   `json:"literal"`
	MaxMatches  int    `json:"maxMatches"`
}

// RegexMatchOutput is the answer. Offsets are byte offsets into the UTF-8 input.
type RegexMatchOutput struct {
	Matched   bool            `json:"matched"`
	Mode      string          `json:"mode"`
	Count     int             `json:"count"`     // matches found (replace: replacements made)
	Truncated bool            `json:"truncated"` // more matches existed beyond maxMatches
	Matches   []RegexMatchHit `json:"matches"`   // empty in replace mode
	Result    *string         `json:"result,omitempty"`
}

// RegexMatchHit is one match with its capture groups.
type RegexMatchHit struct {
	Text   string            `json:"text"`
	Start  int               `json:"start"`
	End    int               `json:"end"`
	Groups []RegexMatchGroup `json:"groups"`
	Named  map[string]string `json:"named,omitempty"` // named groups that took part in the match
}

// RegexMatchGroup is one capture group; an unmatched group has matched false and offsets -1.
type RegexMatchGroup struct {
	Index   int    `json:"index"`
	Name    string `json:"name,omitempty"`
	Matched bool   `json:"matched"`
	Text    string `json:"text"`
	Start   int    `json:"start"`
	End     int    `json:"end"`
}

// Simulate returns the real answer: matching has no side effect.
func (r *RegexMatch) Simulate(ctx context.Context, raw json.RawMessage) (any, error) {
	return r.Run(ctx, raw)
}

// Run matches under ctx.
func (*RegexMatch) Run(ctx context.Context, raw json.RawMessage) (any, error) {
	var a regexMatchArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, Failf("invalid_args", "%v", err)
	}
	prog, err := regexMatchCompile(a.Pattern, a.Flags)
	if err != nil {
		return nil, err
	}
	mode := a.Mode
	if mode == "" {
		mode = "match"
	}
	out := RegexMatchOutput{Mode: mode, Matches: []RegexMatchHit{}}
	// Every group of every hit repeats its text in the output, so 500 nested groups make an
	// output 500 times the input: it is measured as it is built, against the runner's cap.
	capBytes, size := outputCap(ctx), regexMatchOutputOverhead
	add := func(loc []int) error {
		h := prog.hit(a.Input, loc)
		if size += regexMatchHitSize(h); size > capBytes {
			return errOutputTooLarge(capBytes)
		}
		out.Matches = append(out.Matches, h)
		return nil
	}
	switch mode {
	case "match":
		loc, err := prog.search(ctx, a.Input, 0)
		if err != nil {
			return nil, err
		}
		if loc != nil {
			if err := add(loc); err != nil {
				return nil, err
			}
		}
	case "find_all":
		limit := regexMatchLimit(a.MaxMatches, regexMatchFindAllDef)
		truncated, err := prog.each(ctx, a.Input, limit, add)
		if err != nil {
			return nil, err
		}
		out.Truncated = truncated
	case "replace":
		res, n, truncated, err := prog.replace(ctx, a, regexMatchLimit(a.MaxMatches, regexMatchReplaceDef))
		if err != nil {
			return nil, err
		}
		out.Result, out.Count, out.Truncated = &res, n, truncated
	default:
		return nil, Failf("invalid_args", "mode %q is not supported", mode)
	}
	if mode != "replace" {
		out.Count = len(out.Matches)
	}
	out.Matched = out.Count > 0
	return out, nil
}

func regexMatchLimit(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// regexMatchProgram is a compiled pattern plus what it needs to search from any offset.
type regexMatchProgram struct {
	re *regexp.Regexp
	// wrapped is "(?s:.)(P)", used to search from pos > 0 one rune early, so that the rune
	// before pos gives ^, \A, \b and \B the same context they have in a whole-string search.
	// Nil when P has none of those assertions: then searching input[pos:] is already exact.
	wrapped *regexp.Regexp
}

func regexMatchCompile(pattern, flags string) (*regexMatchProgram, error) {
	if len(pattern) > regexMatchMaxPattern {
		return nil, Failf("pattern_too_long", "the pattern is %d bytes, the limit is %d", len(pattern), regexMatchMaxPattern)
	}
	var set []byte
	for _, f := range "ims" {
		if strings.ContainsRune(flags, f) {
			set = append(set, byte(f))
		}
	}
	if strings.Trim(flags, "ims") != "" {
		return nil, Failf("invalid_args", "flags may contain only i, m and s")
	}
	if len(set) > 0 {
		pattern = "(?" + string(set) + ")" + pattern
	}
	b, tree, err := regexCompileBounded(pattern)
	if err != nil {
		return nil, err
	}
	p := &regexMatchProgram{re: b.re}
	if !regexMatchNeedsContext(tree) {
		return p, nil
	}
	// Wrap the normalised form, not the caller's text: a trailing \Q would swallow the ")".
	// The normalised form is used only if it parses back to the same tree.
	norm := tree.String()
	if back, err := syntax.Parse(norm, syntax.Perl); err != nil || !back.Equal(tree) {
		return nil, Failf("unsupported_pattern", "the pattern cannot be searched incrementally; simplify it")
	}
	if p.wrapped, err = regexp.Compile(`(?s:.)(` + norm + `)`); err != nil {
		return nil, Failf("unsupported_pattern", "%v", err)
	}
	return p, nil
}

// regexBounded is a pattern whose program is at most regexMatchMaxInsts instructions,
// matched under a ctx. data_filter's regex conditions and schema_validate's pattern keywords
// use it, so that every regex a caller supplies costs what regex_match's do.
type regexBounded struct {
	re    *regexp.Regexp
	insts int
}

// regexCompileBounded parses a pattern (RE2 syntax) and compiles it, refusing a program of more
// than regexMatchMaxInsts instructions: a search costs up to the input's length times the
// program's size. Callers bound the pattern's length themselves.
func regexCompileBounded(pattern string) (*regexBounded, *syntax.Regexp, error) {
	tree, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, nil, Failf("invalid_pattern", "%v", err)
	}
	// Compiling is what the cap bounds, and a 1 kB pattern can ask for 150,000 instructions
	// (78 × (?:a{0,1000})), 110 ms of compiling only to be refused: estimate the size first.
	if n := regexEstimateInsts(tree); n > regexMatchMaxInsts*regexEstimateSlack {
		return nil, nil, Failf("pattern_too_complex", "the pattern compiles to about %d instructions, the limit is %d", n, regexMatchMaxInsts)
	}
	prog, err := syntax.Compile(tree.Simplify())
	if err != nil {
		return nil, nil, Failf("invalid_pattern", "%v", err)
	}
	if len(prog.Inst) > regexMatchMaxInsts {
		return nil, nil, Failf("pattern_too_complex", "the pattern compiles to %d instructions, the limit is %d", len(prog.Inst), regexMatchMaxInsts)
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, nil, Failf("invalid_pattern", "%v", err)
	}
	return &regexBounded{re: re, insts: len(prog.Inst)}, tree, nil
}

// regexEstimateSlack is how far regexEstimateInsts may overshoot the compiled size before a
// pattern is refused unseen: the estimate is an upper bound (as regexp/syntax's own size check
// computes it), within a few instructions of the program for the patterns that matter here.
const regexEstimateSlack = 2

// regexEstimateInsts bounds from above the instructions tree compiles to (with the program's
// fail and match instructions), in time linear in the tree, saturating rather than overflowing.
func regexEstimateInsts(t *syntax.Regexp) int64 {
	return 2 + regexEstimateSize(t)
}

func regexEstimateSize(t *syntax.Regexp) int64 {
	const limit = 1 << 40
	var size int64
	switch t.Op {
	case syntax.OpLiteral:
		size = int64(len(t.Rune))
	case syntax.OpCapture, syntax.OpStar:
		size = 2 + regexEstimateSize(t.Sub[0])
	case syntax.OpPlus, syntax.OpQuest:
		size = 1 + regexEstimateSize(t.Sub[0])
	case syntax.OpConcat, syntax.OpAlternate:
		for _, sub := range t.Sub {
			size += regexEstimateSize(sub)
		}
		size += int64(len(t.Sub))
	case syntax.OpRepeat:
		sub := regexEstimateSize(t.Sub[0])
		n := int64(max(t.Max, t.Min))
		size = 2 + (n+1)*sub + n
	default:
		size = 1
	}
	return min(max(size, 1), limit)
}

// regexDirectWork is the most work (input bytes × instructions) a match may do without
// looking at ctx: below it, regexp's own fast matchers run on the string; above it, the
// input goes through regexMatchReader, which is slower but stops at the deadline.
const regexDirectWork = 1 << 20

// match reports whether the pattern matches somewhere in s, or ctx's error once ctx is done.
func (b *regexBounded) match(ctx context.Context, s string) (bool, error) {
	var ok bool
	if len(s) <= regexDirectWork/max(b.insts, 1) {
		ok = b.re.MatchString(s)
	} else {
		ok = b.re.MatchReader(&regexMatchReader{ctx: ctx, s: s})
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return ok, nil
}

// regexMatchNeedsContext reports whether the tree has an assertion that looks at the rune
// before the current position.
func regexMatchNeedsContext(t *syntax.Regexp) bool {
	switch t.Op {
	case syntax.OpBeginLine, syntax.OpBeginText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return true
	}
	for _, s := range t.Sub {
		if regexMatchNeedsContext(s) {
			return true
		}
	}
	return false
}

// search finds the leftmost match starting at or after pos, as absolute offsets, reading
// the input through a reader that gives up when ctx is done.
func (p *regexMatchProgram) search(ctx context.Context, s string, pos int) ([]int, error) {
	re, base, skip := p.re, pos, 0
	if pos > 0 && p.wrapped != nil {
		_, w := utf8.DecodeLastRuneInString(s[:pos])
		re, base, skip = p.wrapped, pos-w, 2
	}
	rd := &regexMatchReader{ctx: ctx, s: s[base:]}
	loc := re.FindReaderSubmatchIndex(rd)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if loc == nil {
		return nil, nil
	}
	loc = loc[skip:]
	for i, v := range loc {
		if v >= 0 {
			loc[i] = v + base
		}
	}
	return loc, nil
}

// each calls fn for up to limit successive non-overlapping matches, with exactly the rules
// of regexp's FindAll (an empty match right after a match is skipped). It reports whether
// more matches existed.
func (p *regexMatchProgram) each(ctx context.Context, s string, limit int, fn func(loc []int) error) (bool, error) {
	n := 0
	for pos, prevEnd := 0, -1; pos <= len(s); {
		loc, err := p.search(ctx, s, pos)
		if err != nil || loc == nil {
			return false, err
		}
		accept := true
		if loc[1] == pos { // empty match
			if loc[0] == prevEnd {
				accept = false
			}
			if _, w := utf8.DecodeRuneInString(s[pos:]); w > 0 {
				pos += w
			} else {
				pos = len(s) + 1
			}
		} else {
			pos = loc[1]
		}
		prevEnd = loc[1]
		if !accept {
			continue
		}
		if n == limit {
			return true, nil
		}
		if err := fn(loc); err != nil {
			return false, err
		}
		n++
	}
	return false, nil
}

// replace stops, like find_all, once the result alone would make the output larger than the
// runner's cap (output_too_large), and in any case at regexMatchMaxResult (result_too_large).
func (p *regexMatchProgram) replace(ctx context.Context, a regexMatchArgs, limit int) (string, int, bool, error) {
	var b []byte
	last, n := 0, 0
	capBytes := outputCap(ctx)
	tooLarge := func() error {
		// The result is encoded as a JSON string, never shorter than itself.
		if regexMatchOutputOverhead+len(b) > capBytes {
			return errOutputTooLarge(capBytes)
		}
		if len(b) > regexMatchMaxResult {
			return Failf("result_too_large", "the result exceeds %d bytes", regexMatchMaxResult)
		}
		return nil
	}
	truncated, err := p.each(ctx, a.Input, limit, func(loc []int) error {
		b = append(b, a.Input[last:loc[0]]...)
		if a.Literal {
			b = append(b, a.Replacement...)
		} else {
			b = p.re.ExpandString(b, a.Replacement, a.Input, loc)
		}
		last, n = loc[1], n+1
		return tooLarge()
	})
	if err != nil {
		return "", 0, false, err
	}
	b = append(b, a.Input[last:]...)
	if err := tooLarge(); err != nil {
		return "", 0, false, err
	}
	return string(b), n, truncated, nil
}

func (p *regexMatchProgram) hit(s string, loc []int) RegexMatchHit {
	h := RegexMatchHit{Text: s[loc[0]:loc[1]], Start: loc[0], End: loc[1], Groups: []RegexMatchGroup{}}
	names := p.re.SubexpNames()
	for i := 1; i < len(names) && 2*i+1 < len(loc); i++ {
		g := RegexMatchGroup{Index: i, Name: names[i], Start: loc[2*i], End: loc[2*i+1]}
		if g.Start >= 0 && g.End >= g.Start {
			g.Matched, g.Text = true, s[g.Start:g.End]
			if g.Name != "" {
				if h.Named == nil {
					h.Named = map[string]string{}
				}
				h.Named[g.Name] = g.Text
			}
		} else {
			g.Start, g.End = -1, -1
		}
		h.Groups = append(h.Groups, g)
	}
	return h
}

// Sizes of RegexMatchOutput's encoding without its texts and names, at their smallest: the
// estimate never exceeds the encoding, so output_too_large is never claimed for an output that
// fits (the runner measures the encoding exactly).
const (
	regexMatchOutputOverhead = 64 // {"matched":false,"mode":"match","count":0,...,"matches":[]}
	regexMatchHitOverhead    = 42 // {"text":"","start":0,"end":0,"groups":[]},
	regexMatchGroupOverhead  = 50 // {"index":1,"matched":true,"text":"","start":0,"end":0},
	regexMatchNamedOverhead  = 6  // "name":"text", in named
)

// regexMatchHitSize estimates the encoded size of h, from below.
func regexMatchHitSize(h RegexMatchHit) int {
	n := regexMatchHitOverhead + len(h.Text)
	for _, g := range h.Groups {
		n += regexMatchGroupOverhead + len(g.Name) + len(g.Text)
	}
	for name, text := range h.Named {
		n += regexMatchNamedOverhead + len(name) + len(text)
	}
	return n
}

// regexMatchReader feeds a string to the matcher rune by rune and reports end of input once
// ctx is done, so that a long search stops at the deadline instead of running on unseen.
type regexMatchReader struct {
	ctx context.Context
	s   string
	i   int
	n   int
}

func (r *regexMatchReader) ReadRune() (rune, int, error) {
	if r.i >= len(r.s) {
		return 0, 0, io.EOF
	}
	r.n++
	if r.n%regexMatchCheckEvery == 0 && r.ctx.Err() != nil {
		return 0, 0, r.ctx.Err()
	}
	c, w := utf8.DecodeRuneInString(r.s[r.i:])
	r.i += w
	return c, w, nil
}
