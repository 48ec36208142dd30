package exec

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
)

// MockAPICall is the mock_api_call tool: it describes an API request and answers it with a
// canned response. It never touches the network, so it only exists in dry-run.
type MockAPICall struct{}

// NewMockAPICall returns the mock_api_call tool.
func NewMockAPICall() *MockAPICall { return &MockAPICall{} }

// Name implements Tool.
func (*MockAPICall) Name() string { return "mock_api_call" }

// Description implements Tool.
func (*MockAPICall) Description() string {
	return "Simulate an API call (dry-run only): returns the request it stands for and a mock response"
}

// DryRunOnly implements DryRunOnly: the runner refuses this tool in real mode.
func (*MockAPICall) DryRunOnly() bool { return true }

// Schema implements Tool.
func (*MockAPICall) Schema() json.RawMessage { return mockAPICallSchema }

// A JSON value of any type; size is bounded by the gateway's request body limit.
var mockAPICallSchema = json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "oneOf": [{"required": ["url"]}, {"required": ["endpoint"]}],
  "$defs": {
    "headers": {
      "type": "object",
      "maxProperties": 32,
      "propertyNames": {"maxLength": 64, "pattern": "^[!#$%&'*+.^_` + "`" + `|~0-9A-Za-z-]+$"},
      "additionalProperties": {"type": "string", "maxLength": 1024, "pattern": "^[^\\r\\n\\x00]*$"}
    },
    "value": {"type": ["object", "array", "string", "number", "boolean", "null"], "maxLength": 65536}
  },
  "properties": {
    "method":   {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], "default": "GET"},
    "url":      {"type": "string", "minLength": 8, "maxLength": 2048, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s]+$"},
    "endpoint": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": "^/[^\\s]*$"},
    "headers":  {"$ref": "#/$defs/headers"},
    "body":     {"$ref": "#/$defs/value"},
    "mockResponse": {
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "status":  {"type": "integer", "minimum": 100, "maximum": 599, "default": 200},
        "headers": {"$ref": "#/$defs/headers"},
        "body":    {"$ref": "#/$defs/value"}
      }
    }
  }
}`)

type mockAPICallArgs struct {
	Method       string            `json:"method"`
	URL          string            `json:"url"`
	Endpoint     string            `json:"endpoint"`
	Headers      map[string]string `json:"headers"`
	Body         json.RawMessage   `json:"body"`
	MockResponse *struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	} `json:"mockResponse"`
}

// MockAPICallOutput is what mock_api_call returns.
type MockAPICallOutput struct {
	Request  MockAPIRequest  `json:"request"`
	Response MockAPIResponse `json:"response"`
	Mocked   bool            `json:"mocked"` // always true: nothing was sent
}

// MockAPIRequest is the request the call stands for.
type MockAPIRequest struct {
	Method   string            `json:"method"`
	URL      string            `json:"url,omitempty"`
	Endpoint string            `json:"endpoint,omitempty"`
	Headers  map[string]string `json:"headers"`
	Body     json.RawMessage   `json:"body,omitempty"`
}

// MockAPIResponse is the canned answer: the caller's mockResponse, or 200 echoing the request.
type MockAPIResponse struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
}

// Simulate returns the request and its mock response.
func (*MockAPICall) Simulate(_ context.Context, raw json.RawMessage) (any, error) {
	var a mockAPICallArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, Failf("invalid_args", "%v", err)
	}
	req := MockAPIRequest{Method: a.Method, URL: a.URL, Endpoint: a.Endpoint, Headers: mockAPICallHeaders(a.Headers), Body: a.Body}
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	if mockAPICallIsNull(req.Body) {
		req.Body = nil
	}
	out := MockAPICallOutput{Request: req, Mocked: true}
	if m := a.MockResponse; m != nil {
		out.Response = MockAPIResponse{Status: m.Status, Headers: mockAPICallHeaders(m.Headers), Body: m.Body}
		if out.Response.Status == 0 {
			out.Response.Status = http.StatusOK
		}
		if len(out.Response.Body) == 0 {
			out.Response.Body = json.RawMessage("null")
		}
		return out, nil
	}
	echo, err := json.Marshal(req)
	if err != nil {
		return nil, Failf("output_not_encodable", "%v", err)
	}
	out.Response = MockAPIResponse{
		Status:  http.StatusOK,
		Headers: map[string]string{"content-type": "application/json"},
		Body:    json.RawMessage(`{"echo":` + string(echo) + `}`),
	}
	return out, nil
}

// Run always fails: a mock has nothing real to do. The runner refuses real mode before it
// gets here; this guards direct callers.
func (*MockAPICall) Run(context.Context, json.RawMessage) (any, error) {
	return nil, Failf("dry_run_only", "mock_api_call can only be simulated")
}

// mockAPICallHeaders lower-cases names, as HTTP treats them case-insensitively, and never
// returns nil so that the output always has an object.
func mockAPICallHeaders(in map[string]string) map[string]string {
	out := make(map[string]string, len(in))
	for k, v := range in {
		out[strings.ToLower(k)] = v
	}
	return out
}

func mockAPICallIsNull(b json.RawMessage) bool {
	return len(b) == 0 || string(b) == "null"
}
