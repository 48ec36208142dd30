package exec

import (
	"context"
	"encoding/json"
	"testing"
)

func TestMockAPICall(t *testing.T) {
	m := NewMockAPICall()
	if !m.DryRunOnly() {
		t.Fatal("mock_api_call must be dry-run only")
	}
	if _, err := m.Run(context.Background(), json.RawMessage(`{"endpoint":"/x"}`)); err == nil {
		t.Fatal("Run succeeded")
	} else {
		toolsAWantCode(t, err, "dry_run_only", "")
	}
	for _, tc := range []struct {
		name string
		args string
		want string
	}{
		{
			"default echo",
			`{"url":"https://api.example.com/v1/orders","method":"POST","headers":{"X-Trace":"1"},"body":{"qty":2}}`,
			`{"request":{"method":"POST","url":"https://api.example.com/v1/orders","headers":{"x-trace":"1"},"body":{"qty":2}},` +
				`"response":{"status":200,"headers":{"content-type":"application/json"},"body":{"echo":{"method":"POST","url":"https://api.example.com/v1/orders","headers":{"x-trace":"1"},"body":{"qty":2}}}},"mocked":true}`,
		},
		{
			"method defaults to GET, endpoint instead of url",
			`{"endpoint":"/health"}`,
			`{"request":{"method":"GET","endpoint":"/health","headers":{}},` +
				`"response":{"status":200,"headers":{"content-type":"application/json"},"body":{"echo":{"method":"GET","endpoint":"/health","headers":{}}}},"mocked":true}`,
		},
		{
			"caller's mock response",
			`{"endpoint":"/pay","method":"DELETE","mockResponse":{"status":404,"headers":{"Retry-After":"5"},"body":{"error":"gone"}}}`,
			`{"request":{"method":"DELETE","endpoint":"/pay","headers":{}},"response":{"status":404,"headers":{"retry-after":"5"},"body":{"error":"gone"}},"mocked":true}`,
		},
		{
			"mock response without body or status",
			`{"endpoint":"/x","mockResponse":{}}`,
			`{"request":{"method":"GET","endpoint":"/x","headers":{}},"response":{"status":200,"headers":{},"body":null},"mocked":true}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, err := NewRegistry(m)
			if err != nil {
				t.Fatal(err)
			}
			args, err := reg.Validate("mock_api_call", json.RawMessage(tc.args))
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			out, err := m.Simulate(context.Background(), args)
			if err != nil {
				t.Fatalf("Simulate: %v", err)
			}
			got, _ := json.Marshal(out)
			if string(got) != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	reg, _ := NewRegistry(m)
	for _, bad := range []string{
		`{"url":"https://a.example","endpoint":"/x"}`,
		`{"endpoint":"x"}`,
		`{"endpoint":"/x","method":"CONNECT"}`,
		`{"endpoint":"/x","headers":{"X-A":"line\r\nbreak"}}`,
		`{"endpoint":"/x","headers":{"bad name":"v"}}`,
		`{"endpoint":"/x","mockResponse":{"status":99}}`,
		`{"endpoint":"/x","mockResponse":{"delay":5}}`,
	} {
		if _, err := reg.Validate("mock_api_call", json.RawMessage(bad)); err == nil {
			t.Errorf("Validate accepted %s", bad)
		}
	}
}
