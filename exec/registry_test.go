package exec

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// registryTestTool is a test-only tool with a given schema.
type registryTestTool struct {
	name   string
	schema string
}

func (t *registryTestTool) Name() string            { return t.name }
func (t *registryTestTool) Description() string     { return "schema test tool" }
func (t *registryTestTool) Schema() json.RawMessage { return json.RawMessage(t.schema) }
func (t *registryTestTool) Simulate(context.Context, json.RawMessage) (any, error) {
	return nil, nil
}
func (t *registryTestTool) Run(context.Context, json.RawMessage) (any, error) { return nil, nil }

// toolsAOwned are the tools this file's author owns; their schemas must compile and be closed.
func toolsAOwned() []Tool {
	return []Tool{NewHTTPGet(HTTPGetConfig{}), NewMockAPICall(), NewHashGenerate(), NewTimestampParse(), NewRegexMatch()}
}

func TestRegistryValidate(t *testing.T) {
	reg, err := NewRegistry(append(toolsAOwned(), &registryTestTool{name: "nested", schema: `{
		"type": "object", "additionalProperties": false,
		"properties": {"a/b": {"type": "object", "required": ["c~d"], "properties": {"c~d": {"type": "integer"}}}}
	}`})...)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	for _, tc := range []struct {
		name      string
		tool      string
		args      string
		wantField string // "" with wantOK false means the args object itself
		wantOK    bool
	}{
		{"valid", "http_get", `{"url":"https://example.com/x"}`, "", true},
		{"absent args are an empty object", "http_get", ``, "/url", false},
		{"null args are an empty object", "http_get", `null`, "/url", false},
		{"missing required url", "http_get", `{}`, "/url", false},
		{"url of the wrong type", "http_get", `{"url":42}`, "/url", false},
		{"url with another scheme", "http_get", `{"url":"file:///etc/passwd"}`, "/url", false},
		{"url too long", "http_get", `{"url":"https://e.com/` + strings.Repeat("a", 2100) + `"}`, "/url", false},
		{"unknown property", "http_get", `{"url":"https://example.com","proxy":"x"}`, "/proxy", false},
		{"header not on the allow-list", "http_get", `{"url":"https://example.com","headers":{"cookie":"a=b"}}`, "/headers/cookie", false},
		{"header value with CRLF", "http_get", `{"url":"https://example.com","headers":{"accept":"a\r\nX-Evil: 1"}}`, "/headers/accept", false},
		{"args not an object", "http_get", `[1,2]`, "", false},
		{"args not JSON", "http_get", `{"url":`, "", false},
		{"trailing garbage", "http_get", `{"url":"https://example.com"} {}`, "", false},
		{"hash: neither input nor value", "hash_generate", `{}`, "/input", false},
		{"hash: unknown algorithm", "hash_generate", `{"input":"x","algorithm":"crc32"}`, "/algorithm", false},
		{"regex: replace needs replacement", "regex_match", `{"pattern":"a","input":"b","mode":"replace"}`, "/replacement", false},
		{"regex: bad flag", "regex_match", `{"pattern":"a","input":"b","flags":"x"}`, "/flags", false},
		{"timestamp: format and layout together", "timestamp_parse", `{"input":"x","format":"rfc3339","layout":"2006"}`, "", false},
		{"mock: url and endpoint missing", "mock_api_call", `{}`, "/url", false},
		{"pointer escaping", "nested", `{"a/b":{}}`, "/a~1b/c~0d", false},
		{"nested type error", "nested", `{"a/b":{"c~d":"x"}}`, "/a~1b/c~0d", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := reg.Validate(tc.tool, json.RawMessage(tc.args))
			if tc.wantOK {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ae *ArgsError
			if !errors.As(err, &ae) || !errors.Is(err, ErrInvalidArgs) {
				t.Fatalf("err %v (%T), want *ArgsError wrapping ErrInvalidArgs", err, err)
			}
			if ae.Field != tc.wantField || ae.Tool != tc.tool || ae.Reason == "" {
				t.Errorf("ArgsError %+v, want field %q", ae, tc.wantField)
			}
		})
	}
}

func TestRegistryLookup(t *testing.T) {
	reg, err := NewRegistry(toolsAOwned()...)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	for name := range Blocked {
		if _, err := reg.Lookup(name); !errors.Is(err, ErrToolBlocked) {
			t.Errorf("Lookup(%q) = %v, want ErrToolBlocked", name, err)
		}
		if _, err := reg.Validate(name, nil); !errors.Is(err, ErrToolBlocked) {
			t.Errorf("Validate(%q) = %v, want ErrToolBlocked", name, err)
		}
	}
	for _, name := range []string{"", "HTTP_GET", "json_parse ", "unknown"} {
		if _, err := reg.Lookup(name); !errors.Is(err, ErrUnknownTool) {
			t.Errorf("Lookup(%q) = %v, want ErrUnknownTool", name, err)
		}
	}
	list := reg.List()
	if len(list) != 5 {
		t.Fatalf("List has %d tools, want 5", len(list))
	}
	for i, info := range list {
		if i > 0 && list[i-1].Name >= info.Name {
			t.Errorf("List is not sorted: %q before %q", list[i-1].Name, info.Name)
		}
		if info.DryRunOnly != (info.Name == "mock_api_call") {
			t.Errorf("%s: DryRunOnly = %v", info.Name, info.DryRunOnly)
		}
	}
	if got := len(BlockedList()); got != len(Blocked) {
		t.Errorf("BlockedList has %d entries, want %d", got, len(Blocked))
	}
}

func TestRegistryRefusesTools(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tools []Tool
	}{
		{"blocked name", []Tool{&registryTestTool{name: "bash", schema: `{"type":"object"}`}}},
		{"duplicate", []Tool{NewRegexMatch(), NewRegexMatch()}},
		{"schema not JSON", []Tool{&registryTestTool{name: "x", schema: `{`}}},
		{"invalid schema", []Tool{&registryTestTool{name: "x", schema: `{"type":"no-such-type"}`}}},
		{"remote $ref", []Tool{&registryTestTool{name: "x", schema: `{"$ref":"https://example.com/schema.json"}`}}},
		{"file $ref", []Tool{&registryTestTool{name: "x", schema: `{"$ref":"file:///etc/passwd"}`}}},
		{"relative $ref resolved to a file", []Tool{&registryTestTool{name: "x", schema: `{"$id":"file:///tmp/s.json","$ref":"other.json"}`}}},
		{"remote $schema", []Tool{&registryTestTool{name: "x", schema: `{"$schema":"https://example.com/meta.json"}`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewRegistry(tc.tools...); err == nil {
				t.Fatal("NewRegistry accepted the tools")
			}
		})
	}
	// A local $ref still works.
	local := &registryTestTool{name: "local", schema: `{"$defs":{"n":{"type":"integer"}},"type":"object","properties":{"n":{"$ref":"#/$defs/n"}}}`}
	reg, err := NewRegistry(local)
	if err != nil {
		t.Fatalf("local $ref: %v", err)
	}
	if _, err := reg.Validate("local", json.RawMessage(`{"n":"x"}`)); err == nil {
		t.Error("local $ref was not applied")
	}
}

// TestToolsASchemasAreClosed checks the schema conventions: the args object and every nested
// object reject unknown properties, and every string has a maximum length.
func TestToolsASchemasAreClosed(t *testing.T) {
	for _, tool := range toolsAOwned() {
		var doc any
		if err := json.Unmarshal(tool.Schema(), &doc); err != nil {
			t.Fatalf("%s: %v", tool.Name(), err)
		}
		registrySchemaWalk(t, tool.Name(), "", doc)
	}
}

func registrySchemaWalk(t *testing.T, tool, path string, node any) {
	m, ok := node.(map[string]any)
	if !ok {
		return
	}
	if typ, _ := m["type"].(string); typ == "object" {
		if _, ok := m["additionalProperties"]; !ok {
			t.Errorf("%s%s: object without additionalProperties", tool, path)
		}
	}
	if typ, _ := m["type"].(string); typ == "string" {
		_, hasMax := m["maxLength"]
		_, hasEnum := m["enum"]
		if !hasMax && !hasEnum {
			t.Errorf("%s%s: string without maxLength", tool, path)
		}
	}
	for k, v := range m {
		switch vv := v.(type) {
		case map[string]any:
			registrySchemaWalk(t, tool, path+"/"+k, vv)
		case []any:
			for _, e := range vv {
				registrySchemaWalk(t, tool, path+"/"+k, e)
			}
		}
	}
}
