package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp/syntax"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/secureexec/secureexec/internal/textcut"
)

// SchemaValidateConfig bounds schema_validate. Zero fields take the defaults in
// DefaultSchemaValidateConfig.
type SchemaValidateConfig struct {
	MaxSchemaBytes int // encoded size of the schema
	MaxSchemaDepth int // nesting of arrays and objects in the schema document
	MaxDataBytes   int // encoded size of the data
	MaxDataDepth   int // nesting of arrays and objects in the data
	MaxErrors      int // errors listed in the output; the count covers all of them
	MaxEvaluations int // (sub)schema evaluations per validation, fewer for deep data
	// MaxNumberLength bounds every number literal in the schema and the data, in characters.
	// The validator compares numbers (enum, const, uniqueItems, multipleOf, ...) by parsing
	// them into big.Rat again for every comparison, at a cost quadratic in the literal's
	// length that neither the budget nor ctx can interrupt; and maxLength bounds strings only.
	MaxNumberLength int
}

// DefaultSchemaValidateConfig is the configuration NewSchemaValidate uses for zero fields.
var DefaultSchemaValidateConfig = SchemaValidateConfig{
	MaxSchemaBytes: 64 << 10,
	MaxSchemaDepth: 32,
	MaxDataBytes:   256 << 10,
	MaxDataDepth:   64,
	MaxErrors:      50,
	// A failing evaluation keeps about 300 bytes of error tree, so a validation that fails
	// everywhere stops near 45 MB, in about a tenth of a second (measured). 128k evaluations,
	// a flat array as long as MaxDataBytes allows, still fit.
	MaxEvaluations:  150_000,
	MaxNumberLength: 128,
}

// SchemaValidate is the schema_validate tool: it validates data against a JSON Schema, draft
// 2020-12 unless the schema's $schema names another draft the library knows (4, 6, 7,
// 2019-09). Remote and file $refs are refused exactly as for argument schemas (the loader
// fails every load); internal $ref/$defs/$anchor work.
//
// The validator has no context and no work limit of its own, a few kilobytes of schema can
// ask for exponential work ($defs that each reference the previous one twice), and every
// failing evaluation adds to an error tree the validator keeps until it returns. So every
// object (sub)schema carries a budget hook that counts evaluations before they run and
// watches ctx, and aborts the validation when either runs out: the budget bounds both time
// and memory. The pattern and patternProperties regexes go through the same budget: they are
// compiled under regex_match's instruction cap, and each match costs one evaluation and reads
// its input through a reader that stops at the deadline; compiling a regex (also for format
// "regex") is charged by its size. const and enum are checked by the hook itself, by lookup
// rather than the library's scan, one evaluation per node of the value (schemavalidateValues).
// Compiled schemas are not cached: the hook and the regexes are bound to one call's budget.
type SchemaValidate struct {
	cfg SchemaValidateConfig
}

// NewSchemaValidate returns the schema_validate tool; zero config fields take the defaults.
func NewSchemaValidate(cfg ...SchemaValidateConfig) *SchemaValidate {
	c := DefaultSchemaValidateConfig
	if len(cfg) > 0 {
		o := cfg[0]
		for _, f := range []struct{ dst, src *int }{
			{&c.MaxSchemaBytes, &o.MaxSchemaBytes}, {&c.MaxSchemaDepth, &o.MaxSchemaDepth},
			{&c.MaxDataBytes, &o.MaxDataBytes}, {&c.MaxDataDepth, &o.MaxDataDepth},
			{&c.MaxErrors, &o.MaxErrors}, {&c.MaxEvaluations, &o.MaxEvaluations},
			{&c.MaxNumberLength, &o.MaxNumberLength},
		} {
			if *f.src > 0 {
				*f.dst = *f.src
			}
		}
	}
	return &SchemaValidate{cfg: c}
}

// SchemaValidateOutput is schema_validate's result.
type SchemaValidateOutput struct {
	Valid      bool                  `json:"valid"`
	Draft      string                `json:"draft"`               // the draft the schema was read as, e.g. "2020-12"
	Errors     []SchemaValidateError `json:"errors"`              // at most MaxErrors, in the "basic" output order
	ErrorCount int                   `json:"errorCount"`          // all errors, listed or not
	Truncated  bool                  `json:"truncated,omitempty"` // true when ErrorCount > len(Errors)
}

// SchemaValidateError is one unit of the JSON Schema "basic" output format.
type SchemaValidateError struct {
	InstanceLocation string `json:"instanceLocation"` // JSON pointer into the data
	KeywordLocation  string `json:"keywordLocation"`  // JSON pointer into the schema, through $refs
	Message          string `json:"message"`
}

type schemavalidateArgs struct {
	Schema json.RawMessage `json:"schema"`
	Data   json.RawMessage `json:"data"`
}

// Name implements Tool.
func (*SchemaValidate) Name() string { return "schema_validate" }

// Description implements Tool.
func (*SchemaValidate) Description() string {
	return "Validate data against a JSON Schema (draft 2020-12 by default; remote $refs refused)"
}

var schemavalidateSchema = json.RawMessage(`{
  "type": "object",
  "additionalProperties": false,
  "required": ["schema", "data"],
  "properties": {
    "schema": {"type": ["object", "boolean"], "maxProperties": 256,
      "description": "a JSON Schema; $schema may name draft 4, 6, 7, 2019-09 or 2020-12; number literals of at most 128 characters; pattern and patternProperties in RE2 syntax, at most 1024 bytes and 10000 compiled instructions each"},
    "data": {"description": "any JSON value to validate; number literals of at most 128 characters",
      "maxLength": 262144, "maxItems": 100000, "maxProperties": 10000}
  }
}`)

// Schema implements Tool.
func (*SchemaValidate) Schema() json.RawMessage { return schemavalidateSchema }

// Simulate validates for real: schema_validate is a pure computation with no side effect, so
// the dry run returns the actual answer, under exactly the bounds of Run.
func (s *SchemaValidate) Simulate(ctx context.Context, args json.RawMessage) (any, error) {
	return s.validate(ctx, args)
}

// Run validates the data.
func (s *SchemaValidate) Run(ctx context.Context, args json.RawMessage) (any, error) {
	return s.validate(ctx, args)
}

func (s *SchemaValidate) validate(ctx context.Context, raw json.RawMessage) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("schema_validate: %w", err)
	}
	var a schemavalidateArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, Failf("invalid_args", "args do not decode: %v", err)
	}
	if a.Schema == nil || a.Data == nil {
		return nil, Failf("invalid_args", "schema and data are both required")
	}
	if len(a.Schema) > s.cfg.MaxSchemaBytes {
		return nil, Failf("schema_too_large", "the schema is %d bytes, the limit is %d", len(a.Schema), s.cfg.MaxSchemaBytes)
	}
	if len(a.Data) > s.cfg.MaxDataBytes {
		return nil, Failf("data_too_large", "the data is %d bytes, the limit is %d", len(a.Data), s.cfg.MaxDataBytes)
	}
	schemaDoc, err := jsonschema.UnmarshalJSON(bytes.NewReader(a.Schema))
	if err != nil {
		return nil, Failf("invalid_schema", "the schema is not JSON: %v", err)
	}
	switch schemaDoc.(type) {
	case map[string]any, bool:
	default:
		return nil, Failf("invalid_schema", "a schema is an object or a boolean")
	}
	if schemavalidateDepth(schemaDoc, 0, s.cfg.MaxSchemaDepth) > s.cfg.MaxSchemaDepth {
		return nil, Failf("schema_too_deep", "the schema nests deeper than %d levels", s.cfg.MaxSchemaDepth)
	}
	data, err := jsonschema.UnmarshalJSON(bytes.NewReader(a.Data))
	if err != nil {
		return nil, Failf("invalid_args", "the data is not JSON: %v", err)
	}
	depth := schemavalidateDepth(data, 0, s.cfg.MaxDataDepth)
	if depth > s.cfg.MaxDataDepth {
		return nil, Failf("data_too_deep", "the data nests deeper than %d levels", s.cfg.MaxDataDepth)
	}
	// Both documents are known to be shallow by now, so these walks are bounded.
	for _, doc := range []struct {
		name string
		v    any
	}{{"schema", schemaDoc}, {"data", data}} {
		if at, num, found := schemavalidateOddNumber(doc.v, s.cfg.MaxNumberLength); found {
			where := "at " + strconv.Quote(schemavalidateClean(at, 256))
			if at == "" {
				where = "as its whole value"
			}
			if len(num) > s.cfg.MaxNumberLength {
				return nil, Failf("number_too_long", "the %s has a number of %d characters %s, the limit is %d",
					doc.name, len(num), where, s.cfg.MaxNumberLength)
			}
			return nil, Failf("number_out_of_range", "the %s has the number %s %s, whose exponent is beyond ±%d",
				doc.name, num, where, schemavalidateMaxExponent)
		}
	}

	budget := newSchemavalidateBudget(ctx, s.cfg.MaxEvaluations, depth)
	sch, err := schemavalidateCompile(schemaDoc, budget)
	if err != nil {
		var abort schemavalidateAbort
		if errors.As(err, &abort) {
			return nil, abort.err
		}
		return nil, schemavalidateCompileFailure(schemaDoc, err)
	}
	verr, err := budget.run(sch, data)
	if err != nil {
		return nil, err
	}
	out := SchemaValidateOutput{Valid: verr == nil, Draft: schemavalidateDraftName(sch.DraftVersion), Errors: []SchemaValidateError{}}
	if verr != nil {
		out.Errors, out.ErrorCount = schemavalidateErrors(verr, s.cfg.MaxErrors)
		out.Truncated = out.ErrorCount > len(out.Errors)
	}
	return out, nil
}

// schemavalidateURL names the caller's schema resource. Relative $refs resolve against it to
// https URLs, which the loader refuses like any other.
const schemavalidateURL = "https://schema-validate.secureexec.invalid/schema.json"

// schemavalidateVocab is the URL of the budget vocabulary. It introduces no keyword; it exists
// so that the compiler hands every object schema to schemavalidateBudget.
const schemavalidateVocab = "urn:secureexec:vocab:evaluation-budget"

// schemavalidateCompile compiles under the sandbox's schema policy (newSchemaCompiler) and
// adds the budget hook to every object schema.
func schemavalidateCompile(doc any, budget *schemavalidateBudget) (sch *jsonschema.Schema, err error) {
	// The compiler validates the schema against its metaschema, which may run the budget's
	// hooks: their abort is reported like the validation's.
	defer func() {
		if p := recover(); p != nil {
			abort, ok := p.(schemavalidateAbort)
			if !ok {
				panic(p)
			}
			sch, err = nil, abort
		}
	}()
	c := newSchemaCompiler()
	c.UseRegexpEngine(budget.regexp)
	c.RegisterVocabulary(&jsonschema.Vocabulary{URL: schemavalidateVocab, Compile: budget.compile})
	// Without this, drafts 2019-09 and 2020-12 would only run vocabularies their metaschema
	// lists, and ours is in none.
	c.AssertVocabs()
	if err := c.AddResource(schemavalidateURL, doc); err != nil {
		return nil, err
	}
	return c.Compile(schemavalidateURL)
}

func schemavalidateCompileFailure(doc any, err error) error {
	msg := strings.ReplaceAll(err.Error(), `"`+schemavalidateURL+`#"`, "the schema")
	msg = schemavalidateClean(strings.ReplaceAll(msg, schemavalidateURL, ""), 1024)
	var le *jsonschema.LoadURLError
	if errors.As(err, &le) {
		if obj, ok := doc.(map[string]any); ok {
			if meta, ok := obj["$schema"].(string); ok && strings.TrimSuffix(strings.SplitN(meta, "#", 2)[0], "/") == strings.TrimSuffix(strings.SplitN(le.URL, "#", 2)[0], "/") {
				return Failf("unsupported_schema_draft", "$schema %q is not a draft this validator knows (4, 6, 7, 2019-09, 2020-12)", schemavalidateClean(meta, 256))
			}
		}
		return Failf("schema_ref_not_allowed", "the schema refers to %q: only references inside the schema ($defs, $anchor, JSON pointers) are allowed", schemavalidateClean(le.URL, 256))
	}
	var ud *jsonschema.UnsupportedDraftError
	if errors.As(err, &ud) {
		return Failf("unsupported_schema_draft", "%s", msg)
	}
	// The library's message stops at "not valid against metaschema"; say where and why.
	var sve *jsonschema.SchemaValidationError
	var verr *jsonschema.ValidationError
	if errors.As(err, &sve) && errors.As(sve.Err, &verr) {
		if leaves, _ := schemavalidateErrors(verr, 1); len(leaves) > 0 {
			msg = schemavalidateClean(fmt.Sprintf("the schema is not valid against its metaschema: at %q: %s", leaves[0].InstanceLocation, leaves[0].Message), 1024)
		}
	}
	return Failf("invalid_schema", "%s", msg)
}

// schemavalidateBudget counts schema evaluations for one validation. The validator runs on a
// single goroutine, so the counter needs no lock.
type schemavalidateBudget struct {
	ctx context.Context
	max int
	n   int
}

// schemavalidateDepthWeight scales the budget to the data's depth: max × w / (w + depth).
// Every error the validator keeps carries its own copy of the instance location, about 300
// bytes plus 15 per level (measured), so deep data gets fewer evaluations for the same memory.
const schemavalidateDepthWeight = 20

func newSchemavalidateBudget(ctx context.Context, max, depth int) *schemavalidateBudget {
	return &schemavalidateBudget{ctx: ctx, max: max / (schemavalidateDepthWeight + depth) * schemavalidateDepthWeight}
}

// schemavalidateAbort unwinds the validator when the budget or ctx runs out.
type schemavalidateAbort struct{ err error }

func (a schemavalidateAbort) Error() string { return a.err.Error() }

// regexp is the compiler's regexp engine (pattern, patternProperties, format "regex"): Go's
// regexp as the library's default, but bounded like regex_match's patterns, with every match
// charged to the budget and stopped by ctx.
func (b *schemavalidateBudget) regexp(pattern string) (jsonschema.Regexp, error) {
	if len(pattern) > regexMatchMaxPattern {
		return nil, fmt.Errorf("the pattern is %d bytes, the limit is %d", len(pattern), regexMatchMaxPattern)
	}
	// Compiling costs about a microsecond per instruction (8 ms for 10,000): it is charged
	// before it starts, one evaluation per instruction regexEstimateInsts foresees (at most
	// twice the cap; beyond, the pattern is refused unseen). This is every compile: a schema's
	// pattern and patternProperties, the metaschema's format "regex" check of them (which
	// calls this engine directly, not the schema's format hook), and every string a format
	// "regex" checks in the data.
	if tree, err := syntax.Parse(pattern, syntax.Perl); err == nil {
		b.charge(int(min(regexEstimateInsts(tree), regexMatchMaxInsts*regexEstimateSlack)))
	} else {
		b.charge(1)
	}
	re, _, err := regexCompileBounded(pattern)
	if err != nil {
		var te *ToolError
		if errors.As(err, &te) {
			return nil, errors.New(te.Message)
		}
		return nil, err
	}
	return schemavalidateRegexp{re: re, budget: b}, nil
}

// schemavalidateRegexp implements jsonschema.Regexp for one validation.
type schemavalidateRegexp struct {
	re     *regexBounded
	budget *schemavalidateBudget
}

func (r schemavalidateRegexp) String() string { return r.re.re.String() }

// MatchString costs one evaluation; a match the deadline stops aborts the validation.
func (r schemavalidateRegexp) MatchString(s string) bool {
	r.budget.charge(1)
	ok, err := r.re.match(r.budget.ctx, s)
	if err != nil {
		panic(schemavalidateAbort{fmt.Errorf("schema_validate: %w", err)})
	}
	return ok
}

// compile adds the budget hook to the object schema being compiled, as a wrapper of its
// format check. The library calls a vocabulary's SchemaExt too late to bound anything: after
// the schema's subschemas have run, never after a type, const or enum failure, and not after
// any failure under not or if; by then the work and its error tree were done. The format
// check runs on every evaluation that gets past type, const and enum, before any subschema,
// so the hook charges there for every subschema evaluation the schema can start on this value;
// the subschemas that then stop at their own type check have been paid for.
func (b *schemavalidateBudget) compile(ctx *jsonschema.CompilerContext, obj map[string]any) (jsonschema.SchemaExt, error) {
	sch := ctx.Enqueue(nil) // the schema being compiled, queued at its own location
	inPlace, perItem, perProp := schemavalidateFanout(obj)
	own := sch.Format // set by now when the draft asserts formats, and maybe shared: wrap, never edit
	// const and enum move into the hook, which the library runs right after them: see
	// schemavalidateValues.
	var cnst, enum *schemavalidateValues
	if sch.Const != nil {
		cnst = newSchemavalidateValues(b, []any{*sch.Const}, true)
		sch.Const = nil
	}
	if sch.Enum != nil {
		enum = newSchemavalidateValues(b, sch.Enum.Values, false)
		sch.Enum = nil
	}
	hook := &jsonschema.Format{Validate: func(v any) error {
		if cnst != nil {
			if err := cnst.check(b, v); err != nil {
				return err
			}
		}
		if enum != nil {
			if err := enum.check(b, v); err != nil {
				return err
			}
		}
		n := inPlace
		switch x := v.(type) {
		case []any:
			n += perItem * len(x)
		case map[string]any:
			n += perProp * len(x)
		}
		b.charge(n)
		if own != nil {
			return own.Validate(v)
		}
		return nil
	}}
	if own != nil {
		hook.Name = own.Name
	}
	sch.Format = hook
	return nil, nil
}

// charge spends n evaluations, aborting the validation when the budget or ctx runs out.
func (b *schemavalidateBudget) charge(n int) {
	b.n += n
	if b.n > b.max {
		panic(schemavalidateAbort{Failf("evaluation_budget_exceeded", "validation needs more than %d schema evaluations (the budget for data of this depth)", b.max)})
	}
	if err := b.ctx.Err(); err != nil {
		panic(schemavalidateAbort{fmt.Errorf("schema_validate: %w", err)})
	}
}

// schemavalidateFanout counts the subschemas a schema object applies to the value itself and
// to each array item or object property. It is an upper bound: a keyword the draft ignores,
// or a pattern that does not match, counts all the same.
func schemavalidateFanout(obj map[string]any) (inPlace, perItem, perProp int) {
	for k, v := range obj {
		switch k {
		case "allOf", "anyOf", "oneOf", "dependentSchemas", "dependencies":
			inPlace += schemavalidateLen(v)
		case "not", "if", "then", "else", "$ref", "$dynamicRef", "$recursiveRef":
			inPlace++
		case "items", "prefixItems", "additionalItems", "contains", "unevaluatedItems":
			perItem++ // once even as an array of schemas: an item meets one of them at most
		case "patternProperties":
			perProp += schemavalidateLen(v)
		case "properties", "additionalProperties", "propertyNames", "unevaluatedProperties":
			perProp++
		}
	}
	return inPlace, perItem, perProp
}

func schemavalidateLen(v any) int {
	switch x := v.(type) {
	case []any:
		return len(x)
	case map[string]any:
		return len(x)
	}
	return 1
}

// run validates, turning the budget's abort into an error. Any other panic is not ours and
// keeps unwinding to the runner.
func (b *schemavalidateBudget) run(sch *jsonschema.Schema, data any) (verr *jsonschema.ValidationError, err error) {
	defer func() {
		if p := recover(); p != nil {
			abort, ok := p.(schemavalidateAbort)
			if !ok {
				panic(p)
			}
			verr, err = nil, abort.err
		}
	}()
	if e := sch.Validate(data); e != nil {
		if !errors.As(e, &verr) {
			return nil, Failf("validation_error", "%s", schemavalidateClean(e.Error(), 1024))
		}
	}
	if err := b.ctx.Err(); err != nil {
		return nil, fmt.Errorf("schema_validate: %w", err)
	}
	return verr, nil
}

// schemavalidateErrors lists the leaves of the "detailed" output tree: the failures a caller
// can act on ("got string, want integer"), not the wrappers above them ("allOf failed").
// The library's flat "basic" output is not used because it relabels an error reached
// through $ref with the reference's generic message. Only the listed leaves are turned into
// output: the output tree of a validation that failed everywhere would take more memory than
// the validation did.
func schemavalidateErrors(verr *jsonschema.ValidationError, limit int) ([]SchemaValidateError, int) {
	out := []SchemaValidateError{}
	count := 0
	listed := schemavalidatePrune(verr, limit, &count)
	if listed == nil {
		return out, count
	}
	var walk func(u *jsonschema.OutputUnit)
	walk = func(u *jsonschema.OutputUnit) {
		if len(u.Errors) > 0 {
			for i := range u.Errors {
				walk(&u.Errors[i])
			}
			return
		}
		if u.Error == nil {
			return
		}
		out = append(out, SchemaValidateError{
			InstanceLocation: schemavalidateClean(u.InstanceLocation, 1024),
			KeywordLocation:  schemavalidateClean(u.KeywordLocation, 1024),
			Message:          schemavalidateClean(u.Error.String(), 512),
		})
	}
	walk(listed.DetailedOutput())
	return out, count
}

// schemavalidatePrune counts the leaves of e into *count and returns a copy of e that keeps
// only the paths to the first limit of them (nil if none). A leaf's output depends only on
// the errors above it, so it is the same in the copy.
func schemavalidatePrune(e *jsonschema.ValidationError, limit int, count *int) *jsonschema.ValidationError {
	if len(e.Causes) == 0 {
		*count++
		if *count > limit {
			return nil
		}
		return schemavalidateUnmove(e)
	}
	var causes []*jsonschema.ValidationError
	for _, c := range e.Causes {
		if kept := schemavalidatePrune(c, limit, count); kept != nil {
			causes = append(causes, kept)
		}
	}
	if causes == nil {
		return nil
	}
	kept := *e
	kept.Causes = causes
	return &kept
}

// schemavalidateClean bounds a string for the output and removes U+0000, which the audit store
// (PostgreSQL jsonb) refuses; messages quote data, and data may contain it.
func schemavalidateClean(s string, limit int) string {
	return textcut.Clip(strings.ReplaceAll(s, "\x00", "\uFFFD"), limit)
}

// schemavalidateDepth returns the nesting depth of v, stopping once it exceeds limit so that
// the walk itself stays bounded.
func schemavalidateDepth(v any, depth, limit int) int {
	if depth > limit {
		return depth
	}
	deepest := depth
	switch x := v.(type) {
	case map[string]any:
		deepest = depth + 1
		for _, c := range x {
			if d := schemavalidateDepth(c, depth+1, limit); d > deepest {
				deepest = d
			}
			if deepest > limit {
				return deepest
			}
		}
	case []any:
		deepest = depth + 1
		for _, c := range x {
			if d := schemavalidateDepth(c, depth+1, limit); d > deepest {
				deepest = d
			}
			if deepest > limit {
				return deepest
			}
		}
	}
	return deepest
}

// schemavalidateMaxExponent bounds a number's decimal exponent: the validator compares numbers
// as exact fractions, and 1e-999999, a short literal, is a fraction whose denominator has a
// million digits (about 40 ms to parse, every time a keyword looks at it). float64 reaches
// neither end of this range.
const schemavalidateMaxExponent = 400

// schemavalidateOddNumber finds a number literal in v longer than limit or with an exponent
// beyond ±schemavalidateMaxExponent, and returns its JSON pointer and the literal. Of several,
// it finds the same one every time (the smallest key at each level), so that the error does
// not depend on map order.
func schemavalidateOddNumber(v any, limit int) (string, json.Number, bool) {
	switch x := v.(type) {
	case json.Number:
		if len(x) > limit || schemavalidateHugeExponent(string(x)) {
			return "", x, true
		}
	case []any:
		for i, c := range x {
			if at, num, ok := schemavalidateOddNumber(c, limit); ok {
				return "/" + strconv.Itoa(i) + at, num, true
			}
		}
	case map[string]any:
		key, at, num, found := "", "", json.Number(""), false
		for k, c := range x {
			if found && k >= key {
				continue
			}
			if a, m, ok := schemavalidateOddNumber(c, limit); ok {
				key, at, num, found = k, a, m, true
			}
		}
		if found {
			return "/" + strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1") + at, num, true
		}
	}
	return "", "", false
}

// schemavalidateHugeExponent reports whether the JSON number n has an exponent beyond
// ±schemavalidateMaxExponent (n is at most MaxNumberLength characters by then, or reported
// for that first).
func schemavalidateHugeExponent(n string) bool {
	i := strings.IndexAny(n, "eE")
	if i < 0 {
		return false
	}
	e, err := strconv.Atoi(strings.TrimPrefix(n[i+1:], "+"))
	return err != nil || e > schemavalidateMaxExponent || e < -schemavalidateMaxExponent
}

func schemavalidateDraftName(v int) string {
	switch v {
	case 2020:
		return "2020-12"
	case 2019:
		return "2019-09"
	case 0:
		return "2020-12"
	default:
		return fmt.Sprintf("draft-%02d", v)
	}
}
