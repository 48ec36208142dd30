package exec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Blocked lists the tools that v1 refuses outright, with the reason given to the caller.
// They need on-chain EP approval to unlock, which v1 does not offer.
var Blocked = map[string]string{
	"shell_exec":  "arbitrary shell commands are not sandboxable",
	"bash":        "arbitrary shell commands are not sandboxable",
	"python_exec": "arbitrary code execution is not sandboxable",
	"sql_write":   "writes to databases are side effects outside the sandbox",
	"file_write":  "writes to the host filesystem are side effects outside the sandbox",
	"metasploit":  "offensive security tooling is not permitted",
	"sqlmap":      "offensive security tooling is not permitted",
	"deploy":      "deployments are side effects outside the sandbox",
	"kubectl":     "cluster control is a side effect outside the sandbox",
	"docker_exec": "container execution is not sandboxable",
}

// Registry holds the allowed tools and their compiled argument schemas. It is immutable
// after construction and safe for concurrent use.
type Registry struct {
	tools   map[string]Tool
	schemas map[string]*jsonschema.Schema
	names   []string // sorted, for stable listings
}

// refuseLoader makes every $ref to a remote or file URL fail: argument schemas are
// self-contained, and the sandbox must not read files or the network while compiling them.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("loading %q is disabled", url)
}

// NewRegistry compiles each tool's schema. A tool whose schema does not compile is a
// programming error and is reported here, at start-up.
func NewRegistry(tools ...Tool) (*Registry, error) {
	r := &Registry{tools: map[string]Tool{}, schemas: map[string]*jsonschema.Schema{}}
	for _, t := range tools {
		name := t.Name()
		if _, dup := r.tools[name]; dup {
			return nil, fmt.Errorf("tool %q registered twice", name)
		}
		if _, blocked := Blocked[name]; blocked {
			return nil, fmt.Errorf("tool %q is on the blocked list", name)
		}
		sch, err := CompileSchema("tool:"+name, t.Schema())
		if err != nil {
			return nil, fmt.Errorf("tool %q: %w", name, err)
		}
		r.tools[name] = t
		r.schemas[name] = sch
		r.names = append(r.names, name)
	}
	sort.Strings(r.names)
	return r, nil
}

// newSchemaCompiler is the one compile policy for every schema in the sandbox: draft
// 2020-12 unless the schema names another, and every external $ref refused.
func newSchemaCompiler() *jsonschema.Compiler {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refuseLoader{})
	return c
}

// CompileSchema compiles a JSON Schema (default draft 2020-12) with every external $ref
// disabled. It is shared by the registry and the schema_validate tool.
func CompileSchema(url string, schema []byte) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, fmt.Errorf("schema is not JSON: %w", err)
	}
	c := newSchemaCompiler()
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// Lookup returns the tool by name: ErrToolBlocked for a blocked name, ErrUnknownTool for
// anything not registered.
func (r *Registry) Lookup(name string) (Tool, error) {
	if reason, blocked := Blocked[name]; blocked {
		return nil, fmt.Errorf("%w: %s: %s", ErrToolBlocked, name, reason)
	}
	t, ok := r.tools[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTool, name)
	}
	return t, nil
}

// Validate checks args against the tool's schema. Absent args are an empty object. The
// returned error is an *ArgsError naming the first offending field.
func (r *Registry) Validate(name string, args json.RawMessage) (json.RawMessage, error) {
	if _, err := r.Lookup(name); err != nil {
		return nil, err
	}
	args = bytes.TrimSpace(args)
	if len(args) == 0 || bytes.Equal(args, []byte("null")) {
		args = json.RawMessage("{}")
	}
	doc, ok := argsDocFast(args)
	if !ok {
		var err error
		if doc, err = jsonschema.UnmarshalJSON(bytes.NewReader(args)); err != nil {
			return nil, &ArgsError{Tool: name, Reason: "args are not valid JSON"}
		}
	}
	if err := r.schemas[name].Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			leaf := deepestCause(ve)
			return nil, &ArgsError{Tool: name, Field: argsErrorField(leaf), Reason: leaf.ErrorKind.LocalizedString(english)}
		}
		return nil, &ArgsError{Tool: name, Reason: err.Error()}
	}
	return args, nil
}

// argsDocFast builds the document jsonschema.UnmarshalJSON builds (map[string]any, []any,
// json.Number, string, bool, nil) for args that are I-JSON, checked in one pass: without
// duplicate names or invalid UTF-8, both decoders read the same tree. It reports false for
// anything else, which takes jsonschema.UnmarshalJSON, whose reflection costs several times
// as much.
func argsDocFast(args []byte) (any, bool) {
	if !jsontext.Value(args).IsValid() {
		return nil, false
	}
	// Strings and numbers without escapes are cut from one copy of the text.
	v, _ := argsDocValue(args, string(args), argsDocSpace(args, 0))
	return v, true
}

// argsDocValue decodes the value starting at b[i] (valid I-JSON, whose string form is s)
// and returns it with the offset just past it. Recursion is bounded by jsontext's nesting
// limit.
func argsDocValue(b []byte, s string, i int) (any, int) {
	switch b[i] {
	case '{':
		// Members are gathered first so that the map is made at its final size.
		var nameBuf [8]string
		var valueBuf [8]any
		names, values := nameBuf[:0], valueBuf[:0]
		i = argsDocSpace(b, i+1)
		for b[i] != '}' {
			name, end := argsDocString(b, s, i)
			var v any
			v, i = argsDocValue(b, s, argsDocSpace(b, argsDocSpace(b, end)+1)) // past the colon
			names, values = append(names, name), append(values, v)
			if i = argsDocSpace(b, i); b[i] == ',' {
				i = argsDocSpace(b, i+1)
			}
		}
		m := make(map[string]any, len(names))
		for k, name := range names {
			m[name] = values[k]
		}
		return m, i + 1
	case '[':
		var itemBuf [8]any
		items := itemBuf[:0]
		i = argsDocSpace(b, i+1)
		for b[i] != ']' {
			var v any
			v, i = argsDocValue(b, s, i)
			items = append(items, v)
			if i = argsDocSpace(b, i); b[i] == ',' {
				i = argsDocSpace(b, i+1)
			}
		}
		return append(make([]any, 0, len(items)), items...), i + 1
	case '"':
		return argsDocString(b, s, i)
	case 't':
		return true, i + len("true")
	case 'f':
		return false, i + len("false")
	case 'n':
		return nil, i + len("null")
	default:
		end := i
		for end < len(b) && strings.IndexByte("0123456789+-.eE", b[end]) >= 0 {
			end++
		}
		return json.Number(s[i:end]), end
	}
}

// argsDocString decodes the string starting at the quote b[i].
func argsDocString(b []byte, s string, i int) (string, int) {
	end, escaped := i+1, false
	for ; b[end] != '"'; end++ {
		if b[end] == '\\' {
			escaped = true
			end++
		}
	}
	end++
	if !escaped {
		return s[i+1 : end-1], end
	}
	text, _ := jsontext.AppendUnquote(nil, b[i:end])
	return string(text), end
}

func argsDocSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// english renders schema errors; the library needs a printer to format them.
var english = message.NewPrinter(language.English)

// deepestCause follows the first cause down to the most specific failure, which names the
// field a user has to fix.
func deepestCause(ve *jsonschema.ValidationError) *jsonschema.ValidationError {
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	return ve
}

// argsErrorField is the JSON pointer (RFC 6901) of the value a caller has to fix. For a
// missing or unexpected property the library reports the enclosing object; pointing at the
// property itself ("/url", not "") tells the caller which one.
func argsErrorField(ve *jsonschema.ValidationError) string {
	loc := ve.InstanceLocation
	var prop []string
	switch k := ve.ErrorKind.(type) {
	case *kind.Required:
		prop = k.Missing
	case *kind.DependentRequired:
		prop = k.Missing
	case *kind.Dependency:
		prop = k.Missing
	case *kind.AdditionalProperties:
		prop = k.Properties
	}
	if len(prop) > 0 {
		loc = append(loc[:len(loc):len(loc)], prop[0])
	}
	var b strings.Builder
	for _, tok := range loc {
		b.WriteByte('/')
		b.WriteString(argsPointerEscaper.Replace(tok))
	}
	return b.String()
}

// argsPointerEscaper escapes a JSON pointer token; "~" first, as RFC 6901 requires.
var argsPointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// ToolInfo is a tool's entry in GET /exec/tools.
type ToolInfo struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	DryRunOnly  bool            `json:"dryRunOnly"`
	ArgsSchema  json.RawMessage `json:"argsSchema"`
}

// BlockedInfo is a blocked tool's entry in GET /exec/tools.
type BlockedInfo struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// List describes the allowed tools, sorted by name.
func (r *Registry) List() []ToolInfo {
	out := make([]ToolInfo, 0, len(r.names))
	for _, n := range r.names {
		t := r.tools[n]
		out = append(out, ToolInfo{Name: n, Description: t.Description(), DryRunOnly: isDryRunOnly(t), ArgsSchema: t.Schema()})
	}
	return out
}

// BlockedList describes the blocked tools, sorted by name.
func BlockedList() []BlockedInfo {
	out := make([]BlockedInfo, 0, len(Blocked))
	for n, why := range Blocked {
		out = append(out, BlockedInfo{Name: n, Reason: why})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func isDryRunOnly(t Tool) bool {
	d, ok := t.(DryRunOnly)
	return ok && d.DryRunOnly()
}
