package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Entry)
		want   string // reason, "" for valid
	}{
		{"valid", nil, ""},
		{"zero timestamp means now", func(e *Entry) { e.Timestamp = time.Time{} }, ""},
		{"escaped backslash before u0000 is text", func(e *Entry) { e.Record = json.RawMessage(`{"a":"\\u0000"}`) }, ""},
		{"surrogate pair", func(e *Entry) { e.Record = json.RawMessage(`{"a":"\ud83d\ude80"}`) }, ""},
		{"repeated name, which jsonb keeps the last of", func(e *Entry) { e.Record = json.RawMessage(`{"a":1,"a":2}`) }, ""},
		{"upper-case job id", func(e *Entry) { e.JobID = strings.ToUpper(e.JobID) }, ""},
		{"job id not a uuid", func(e *Entry) { e.JobID = "job-1" }, ReasonInvalidJobID},
		{"job id uuid without hyphens", func(e *Entry) { e.JobID = strings.ReplaceAll(e.JobID, "-", "") }, ReasonInvalidJobID},
		{"job id 36 chars not hex", func(e *Entry) { e.JobID = strings.Repeat("z", 36) }, ReasonInvalidJobID},
		{"nul escape", func(e *Entry) { e.Record = json.RawMessage(`{"a":"\u0000"}`) }, ReasonRecordNULEscape},
		{"nul escape after escaped backslash", func(e *Entry) { e.Record = json.RawMessage(`{"a":"\\\u0000"}`) }, ReasonRecordNULEscape},
		{"nul escape in a key", func(e *Entry) { e.Record = json.RawMessage(`{"\u0000":1}`) }, ReasonRecordNULEscape},
		{"lone high surrogate", func(e *Entry) { e.Record = json.RawMessage(`["\ud83d"]`) }, ReasonRecordLoneSurrogate},
		{"lone low surrogate", func(e *Entry) { e.Record = json.RawMessage(`["\ude80"]`) }, ReasonRecordLoneSurrogate},
		{"high then text", func(e *Entry) { e.Record = json.RawMessage(`["\ud83dx"]`) }, ReasonRecordLoneSurrogate},
		{"high at end of one string, low in the next", func(e *Entry) { e.Record = json.RawMessage(`["\ud83d","\ude80"]`) }, ReasonRecordLoneSurrogate},
		{"empty record", func(e *Entry) { e.Record = nil }, ReasonInvalidRecordJSON},
		{"record not json", func(e *Entry) { e.Record = json.RawMessage(`{`) }, ReasonInvalidRecordJSON},
		{"record invalid utf-8", func(e *Entry) { e.Record = json.RawMessage("\"\xc3\x28\"") }, ReasonInvalidUTF8},
		{"text invalid utf-8", func(e *Entry) { e.Status = "\xff" }, ReasonInvalidUTF8},
		{"text with NUL", func(e *Entry) { e.ProofHash = "0x\x00" }, ReasonTextContainsNUL},
		{"text too long", func(e *Entry) { e.CallerAgentID = strings.Repeat("a", MaxTextBytes+1) }, ReasonTextTooLong},
		{"negative latency", func(e *Entry) { e.LatencyMs = -5 }, ReasonLatencyOutOfRange},
		{"latency over int32", func(e *Entry) { e.LatencyMs = math.MaxInt32 + 1 }, ReasonLatencyOutOfRange},
		{"timestamp past year 9999", func(e *Entry) { e.Timestamp = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, ReasonTimestampOutOfRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testEntry(1)
			if tc.mutate != nil {
				tc.mutate(&e)
			}
			err := Validate(e)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want valid", err)
				}
				return
			}
			var ie *InvalidEntryError
			if !errors.As(err, &ie) || ie.Reason != tc.want {
				t.Fatalf("Validate = %v, want reason %s", err, tc.want)
			}
		})
	}
}

// FuzzValidateRecord: whatever the bytes, validateRecord does not panic, and what it accepts
// is UTF-8 JSON with no NUL anywhere in its decoded strings and no escape jsonb refuses.
func FuzzValidateRecord(f *testing.F) {
	for _, s := range []string{`{"a":"\u0000"}`, `["\ud83d\ude80"]`, `{"a":"\\u0000"}`, `"\ud800"`, `{}`, `[1,2`, "\"\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		if validateRecord("x", rec) != nil {
			return
		}
		if !json.Valid(rec) || !utf8.Valid(rec) {
			t.Fatalf("accepted invalid record %q", rec)
		}
		if reason := scanEscapes(rec); reason != "" {
			t.Fatalf("accepted a record with an escape jsonb refuses (%s): %q", reason, rec)
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(rec))
		dec.UseNumber() // 1e700 is valid JSON, not a float64
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("accepted record does not decode: %v", err)
		}
		if hasNUL(v) {
			t.Fatalf("accepted record with a NUL: %q", rec)
		}
	})
}

func hasNUL(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.IndexByte(x, 0) >= 0
	case []any:
		for _, e := range x {
			if hasNUL(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range x {
			if strings.IndexByte(k, 0) >= 0 || hasNUL(e) {
				return true
			}
		}
	}
	return false
}

// BenchmarkValidate checks a record as the gateway writes it.
func BenchmarkValidate(b *testing.B) {
	e := Entry{
		JobID: "01a210d4-dba6-7794-8538-0a1e5444a854", Timestamp: time.Now(), CallerAgentID: "bench", ToolName: "json_parse",
		DryRun: true, Status: "completed", IAMApproved: true, ProofHash: "0xd3692cf3280117e8881328e3084725c7134dafa4913dfc1418b99c78b6337363",
		PaymentProtocol: "none", SchemaVersion: "v1",
		Record: json.RawMessage(`{"agentId":"bench","context":{"purpose":"load test"},"dryRun":true,"endpoint":"/exec/simulate","iam":{"approved":true,"decision":"approved","reason":"ep_disabled","source":"policy"},"jobId":"01a210d4-dba6-7794-8538-0a1e5444a854","payment":{"protocol":"none"},"result":{"exitCode":0,"output":{"bytes":27,"depth":2,"keys":["key","n"],"type":"object","valid":true,"value":{"key":"value","n":[1,2,3]}},"simulated":true},"schemaVersion":"v1","status":"completed","timestamp":"2026-11-25T03:51:55.046Z","tool":{"args":{"data":{"key":"value","n":[1,2,3]}},"name":"json_parse","timeoutMs":10000}}`),
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := Validate(e); err != nil {
			b.Fatal(err)
		}
	}
}
