package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/gowebpki/jcs"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/proof"
	"github.com/secureexec/secureexec/store"
)

// TestRecordShapeKnown fails when a field is added to (or changed in) any type of the
// record: appendCanonicalRecord must then be taught it and recordShape updated, or every
// record takes the slow path.
func TestRecordShapeKnown(t *testing.T) {
	if !recordShapeKnown {
		t.Fatalf("record shape changed; the direct canonical encoding is off.\n now:  %q\n want: %q", shapeOf(reflect.TypeFor[Record](), reflect.TypeFor[RecordTool](), reflect.TypeFor[exec.Result](),
			reflect.TypeFor[exec.ToolError](), reflect.TypeFor[identity.Outcome](), reflect.TypeFor[PaymentRef]()), recordShape)
	}
}

// sealReference is seal as it was before the direct encoding: proof.Seal of the whole record.
func sealReference(rec *Record) (canonical []byte, hash string) {
	c, h, err := proof.Seal(rec)
	if err == nil && !hasNULEscape(c) {
		return c, h
	}
	code := "output_not_storable"
	if err != nil {
		code = "output_not_canonicalizable"
	}
	rec.Status = exec.StatusFailed
	rec.Result = exec.Result{Output: json.RawMessage("null"), ExitCode: exec.ExitFailed, Simulated: rec.Result.Simulated,
		Error: exec.Failf(code, "the tool's output cannot be sealed in a verifiable record")}
	c, h, err = proof.Seal(rec)
	if err != nil {
		panic(err)
	}
	return c, h
}

// recordSealAgrees requires canonicalRecord and seal to give exactly what proof.Seal gives.
func recordSealAgrees(t *testing.T, rec *Record) {
	t.Helper()
	want, _, wantErr := proof.Seal(rec)
	got, gotErr := canonicalRecord(rec)
	if (gotErr == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
		t.Fatalf("canonicalRecord(%+v)\n got  %q (%v)\n want %q (%v)", rec, got, gotErr, want, wantErr)
	}
	if direct, ok := appendCanonicalRecord(nil, rec); ok && (wantErr != nil || !bytes.Equal(direct, want)) {
		t.Fatalf("direct encoding of %+v\n got  %q\n want %q (%v)", rec, direct, want, wantErr)
	}
	r1, r2 := *rec, *rec
	c1, h1, p1 := recordTestSeal(seal, &r1)
	c2, h2, p2 := recordTestSeal(sealReference, &r2)
	if !bytes.Equal(c1, c2) || h1 != h2 || !reflect.DeepEqual(r1, r2) || p1 != p2 {
		t.Fatalf("seal(%+v)\n got  %q %s %v\n want %q %s %v", rec, c1, h1, p1, c2, h2, p2)
	}
}

// recordTestSeal runs a seal function and reports whether it panicked, as both do for a
// record whose args or context cannot be encoded (the gateway validates both first).
func recordTestSeal(f func(*Record) ([]byte, string), rec *Record) (c []byte, h string, panicked bool) {
	defer func() {
		if recover() != nil {
			panicked = true
		}
	}()
	c, h = f(rec)
	return c, h, false
}

func baseRecord() *Record {
	return &Record{
		SchemaVersion: SchemaVersion, JobID: "6f1c1f44-8b0e-4b8e-9c53-2a3c1e0b5d7a", Timestamp: "2026-01-02T03:04:05.678Z",
		Endpoint: endpointSimulate, AgentID: "agent", DryRun: true, Context: json.RawMessage(`{"purpose":"test"}`), Status: exec.StatusCompleted,
		Tool:    RecordTool{Name: "json_parse", Args: json.RawMessage(`{"data":{"b":1,"a":[1,2]}}`), TimeoutMs: 10000},
		Result:  exec.Result{Output: json.RawMessage(`{"valid":true}`), ExitCode: exec.ExitOK, Simulated: true},
		IAM:     identity.Outcome{Approved: true, Decision: identity.DecisionApproved, Source: identity.SourcePolicy, Reason: "allowed"},
		Payment: PaymentRef{Protocol: "none", Amount: "0", Currency: "USDC"},
	}
}

func TestCanonicalRecordMatchesSeal(t *testing.T) {
	deep := func(n int) json.RawMessage {
		return json.RawMessage(strings.Repeat("[", n) + strings.Repeat("]", n))
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Record)
	}{
		{"typical", nil},
		{"every optional field set", func(r *Record) {
			r.IAM.Violations = []string{"a", "b"}
			r.IAM.RiskScore, r.IAM.EPProofHash = "LOW", strings.Repeat("ab", 32)
			r.Payment.Payer, r.Payment.Reference = "0xAbC", "ref-1"
			r.Result.Error = &exec.ToolError{Code: "c", Message: "m"}
		}},
		{"empty violations are omitted", func(r *Record) { r.IAM.Violations = []string{} }},
		{"no context", func(r *Record) { r.Context = nil }},
		{"empty context", func(r *Record) { r.Context = json.RawMessage{} }},
		{"nil args and output", func(r *Record) { r.Tool.Args, r.Result.Output = nil, nil }},
		{"empty args do not encode", func(r *Record) { r.Tool.Args = json.RawMessage{} }},
		{"whitespace around raw values", func(r *Record) { r.Result.Output = json.RawMessage(" \n\t{ \"a\" : [ 1 , 2 ] }\r\n ") }},
		{"raw value needs reordering", func(r *Record) {
			r.Result.Output = json.RawMessage(`{"z":{"y":1,"x":2},"€":1,"é":2,"a":[{"b":1,"a":2}],"\ud83d\ude00":3,"\uff61":4}`)
		}},
		{"numbers are canonicalised", func(r *Record) {
			r.Result.Output = json.RawMessage(`[1e2,-0,0.1,1E21,1e-7,123456789012345678901234567890,5e-324,1.5e300]`)
		}},
		{"number out of range", func(r *Record) { r.Result.Output = json.RawMessage(`[1e400]`) }},
		{"duplicate names in output", func(r *Record) { r.Result.Output = json.RawMessage(`{"a":1,"a":2}`) }},
		{"lone surrogate in output", func(r *Record) { r.Result.Output = json.RawMessage(`"\ud800"`) }},
		{"invalid UTF-8 in output", func(r *Record) { r.Result.Output = json.RawMessage("\"\xff\"") }},
		{"invalid JSON in output", func(r *Record) { r.Result.Output = json.RawMessage(`{"a":`) }},
		{"two values in output", func(r *Record) { r.Result.Output = json.RawMessage(`1 2`) }},
		{"NUL in output", func(r *Record) { r.Result.Output = json.RawMessage(`"a\u0000"`) }},
		{"NUL in args", func(r *Record) { r.Tool.Args = json.RawMessage(`{"t":"\u0000"}`) }},
		{"escapes in raw strings", func(r *Record) {
			r.Result.Output = json.RawMessage(`"\u003c\u0026\u003e\/\u2028\u001f\u007f\ud83d\ude00 <&>` + "\u2028\x7f\"")
		}},
		{"strings with every kind of character", func(r *Record) {
			r.AgentID = "<a&b>\u2028\u2029\x7f\x00\x01\x1f\"\\/\b\f\n\r\té€😀\ufffd"
			r.Result.Error = &exec.ToolError{Code: "x", Message: "bad \xff\xfe bytes \xed\xa0\x80 and \xe2\x80"}
			r.IAM.Violations = []string{"\xc3", ""}
		}},
		{"depth near the limit in output", func(r *Record) { r.Result.Output = deep(9990) }},
		{"depth at the limit in output", func(r *Record) { r.Result.Output = deep(9998) }},
		{"depth one past the record's limit in output", func(r *Record) { r.Result.Output = deep(9999) }},
		{"depth at encoding/json's limit in context", func(r *Record) { r.Context = json.RawMessage(`{"a":` + string(deep(9999)) + `}`) }},
		{"depth past the limit in args", func(r *Record) { r.Tool.Args = deep(10001) }},
		{"large integers", func(r *Record) { r.Tool.TimeoutMs, r.Result.ExitCode = 1<<53+1, -(1 << 60) }},
		{"integers at the fast-path bound", func(r *Record) { r.Tool.TimeoutMs, r.Result.ExitCode = 1e15-1, -1e15+1 }},
		{"integers past the fast-path bound", func(r *Record) { r.Tool.TimeoutMs, r.Result.ExitCode = 1e15, -1e15 }},
		{"integers past 1e21", func(r *Record) { r.Tool.TimeoutMs = 1<<63 - 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := baseRecord()
			if tc.mutate != nil {
				tc.mutate(rec)
			}
			recordSealAgrees(t, rec)
		})
	}
}

var (
	recordTestStrings = []string{"", "a", "json_parse", "<&>", "\u2028", "\x7f", "\x00", "\x1f\"\\", "é€😀", "\xff", "\xed\xa0\x80",
		"0x" + strings.Repeat("f", 64), "line\nbreak\ttab", "\ufffd", strings.Repeat("long ", 100)}
	recordTestRaws = []string{"null", "{}", "[]", `{"b":1,"a":2}`, `[1,2.50,1e3,-0]`, `"x"`, `"\u00e9\u0000"`, "true", ` {"a" : null} `,
		`{"a":{"c":1,"b":[{"z":1,"y":2}]}}`, `{"a":1,"a":1}`, `1e999`, `{`, ``, "\"\xff\"", `"\udc00"`, `{"\u20ac":1,"\u00e9":2}`}
)

// recordTestFill sets every field reachable from v to a random value, so that a field added
// to any record type is exercised without this test knowing its name.
func recordTestFill(rng *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(recordTestStrings[rng.IntN(len(recordTestStrings))])
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 1)
	case reflect.Int, reflect.Int64, reflect.Int32:
		for _, n := range []int64{0, 1, -1, 30000, 1e15 - 1, 1e15, 1<<53 + 1, -1 << 62} {
			if rng.IntN(3) == 0 {
				v.SetInt(n)
				return
			}
		}
		v.SetInt(rng.Int64N(1<<40) - 1<<39)
	case reflect.Slice:
		if v.Type() == reflect.TypeFor[json.RawMessage]() {
			if rng.IntN(8) == 0 {
				v.SetZero()
				return
			}
			v.SetBytes([]byte(recordTestRaws[rng.IntN(len(recordTestRaws))]))
			return
		}
		n := rng.IntN(4)
		if n == 0 && rng.IntN(2) == 0 {
			v.SetZero()
			return
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			recordTestFill(rng, s.Index(i))
		}
		v.Set(s)
	case reflect.Pointer:
		if rng.IntN(3) == 0 {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		recordTestFill(rng, p.Elem())
		v.Set(p)
	case reflect.Struct:
		for i := range v.NumField() {
			recordTestFill(rng, v.Field(i))
		}
	default:
		panic("recordTestFill: no generator for " + v.Type().String())
	}
}

func TestCanonicalRecordMatchesSealRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for range n {
		var rec Record
		recordTestFill(rng, reflect.ValueOf(&rec).Elem())
		recordSealAgrees(t, &rec)
	}
}

func FuzzCanonicalRecordMatchesSeal(f *testing.F) {
	f.Add("agent", "msg", []byte(`{"a":1}`), []byte(`[1,2]`), []byte(`{"p":1}`), int64(5000))
	f.Add("\xff<&>", "\u2028\x00", []byte(`{"b":1,"a":"\u0000"}`), []byte(`1e400`), []byte(``), int64(1)<<60)
	f.Add("", "", []byte(` "x" `), []byte(`{"a":1,"a":2}`), []byte(`{`), int64(-7))
	f.Fuzz(func(t *testing.T, s1, s2 string, args, output, context []byte, n int64) {
		rec := baseRecord()
		rec.AgentID, rec.Status = s1, s2
		rec.IAM.Violations = []string{s2, s1}
		rec.Result.Error = &exec.ToolError{Code: s1, Message: s2}
		rec.Tool.Args, rec.Result.Output, rec.Context = args, output, context
		rec.Tool.TimeoutMs, rec.Result.ExitCode = n, int(-n)
		recordSealAgrees(t, rec)
	})
}

// TestSealRefusesOnlyNUL: only U+0000 makes a record unstorable, not the text "\u0000"
// after a backslash, wherever the call put it.
func TestSealRefusesOnlyNUL(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Record)
		want   string // the error code of the sealed result, "" for none
	}{
		{"backslash then u0000 in agentId", func(r *Record) { r.AgentID = `C:\u0000` }, ""},
		{"backslash then u0000 in context", func(r *Record) { r.Context = json.RawMessage(`{"path":"C:\\u0000"}`) }, ""},
		{"backslash then u0000 in args", func(r *Record) { r.Tool.Args = json.RawMessage(`{"data":"C:\\u0000"}`) }, ""},
		{"backslash then u0000 in output", func(r *Record) { r.Result.Output = json.RawMessage(`{"parsed":"C:\\u0000"}`) }, ""},
		{"three backslashes then u0000 in output", func(r *Record) { r.Result.Output = json.RawMessage(`"\\\\u0000"`) }, ""},
		{"U+0000 in output", func(r *Record) { r.Result.Output = json.RawMessage(`{"parsed":"a\u0000"}`) }, "output_not_storable"},
		{"backslash then U+0000 in output", func(r *Record) { r.Result.Output = json.RawMessage(`"\\\u0000"`) }, "output_not_storable"},
		{"U+0000 in a tool error", func(r *Record) { r.Result.Error = &exec.ToolError{Code: "x", Message: "a\x00b"} }, "output_not_storable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := baseRecord()
			tc.mutate(rec)
			c, hash := seal(rec)
			got := ""
			if rec.Result.Error != nil && rec.Status == exec.StatusFailed {
				got = rec.Result.Error.Code
			}
			if got != tc.want {
				t.Fatalf("sealed with %q (status %s), want %q: %s", got, rec.Status, tc.want, c)
			}
			if err := proof.Verify(c, hash); err != nil {
				t.Fatalf("the sealed record does not verify: %v", err)
			}
		})
	}
}

func TestFormatTimestampMatchesTimeFormat(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	times := []time.Time{{}, time.Unix(0, 0), time.Unix(0, 999_999_999), time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(0, 1, 1, 0, 0, 0, 1_500_000, time.UTC),
		time.Date(2026, 3, 29, 1, 30, 0, 0, time.FixedZone("x", 5*3600+1800)), time.Now()}
	for range 100_000 {
		times = append(times, time.Unix(rng.Int64N(1<<40)-1<<39, rng.Int64N(1e9)).In(time.FixedZone("z", rng.IntN(50_000)-25_000)))
	}
	for _, tm := range times {
		if got, want := formatTimestamp(tm), tm.UTC().Format(timestampLayout); got != want {
			t.Fatalf("formatTimestamp(%v) = %q, want %q", tm, got, want)
		}
	}
}

// FuzzSealedRecordVerifies is the round trip a user makes: the gateway seals a call's record,
// GET /exec/jobs/{jobId} serves it inside the job document, and verify (or any RFC 8785
// implementation) recomputes the proof hash from what was served. Args and context reach a
// record only as the request decoder lets them through; the output and the strings are the
// tool's and the caller's, anything at all.
func FuzzSealedRecordVerifies(f *testing.F) {
	f.Add("agent", "msg", []byte(`{"a":1}`), []byte(`[1,2]`), []byte(`{"p":1}`))
	f.Add("\xff<&>\u2028", "\x00\x7f", []byte(`{"n":[1e21,1e-7,-0,5e-324,9007199254740993,1e-400]}`), []byte(`[1e400,1.7976931348623157e308]`), []byte(``))
	f.Add("\ud7ff\ue000", "\U0001F600", []byte(`{"\ud83d\ude00":1,"\ue000":2,"\uffff":3}`), []byte(`{"\u2028":"\ud800","a":"\u0000"}`), []byte(`{"\ud83d\ude00":"\ue000"}`))
	f.Add("", "", []byte(`"\u001f\"\\\/"`), []byte(`{"a":1,"a":2}`), []byte(`{"b":-0.0,"a":1E2}`))
	f.Fuzz(func(t *testing.T, s1, s2 string, args, output, context []byte) {
		for _, raw := range [][]byte{args, context} {
			if c, err := proof.Canonicalize(raw); len(raw) > 0 && (err != nil || hasNULEscape(c)) {
				t.Skip("the request decoder refuses it")
			}
		}
		rec := baseRecord()
		rec.AgentID, rec.Result.Error = s1, &exec.ToolError{Code: s2, Message: s1 + s2}
		rec.IAM.Violations = []string{s2}
		rec.Tool.Args, rec.Result.Output, rec.Context = args, output, context
		if len(args) == 0 {
			rec.Tool.Args = nil
		}
		canonical, hash := seal(rec)

		w := httptest.NewRecorder()
		writeJSON(w, http.StatusOK, "application/json", store.Entry{JobID: rec.JobID, ProofHash: hash, Record: canonical})
		var doc store.Entry
		if err := jsonv2.Unmarshal(w.Body.Bytes(), &doc); err != nil {
			t.Fatalf("the served document does not decode: %v\n%s", err, w.Body.Bytes())
		}
		if err := proof.Verify(doc.Record, doc.ProofHash); err != nil {
			t.Fatalf("the served record does not verify: %v\n%s", err, doc.Record)
		}
		ref, err := jcs.Transform(doc.Record)
		if err != nil {
			t.Fatalf("an independent RFC 8785 implementation refuses the served record: %v\n%s", err, doc.Record)
		}
		if h := proof.HashCanonical(ref); h != hash {
			t.Fatalf("an independent RFC 8785 implementation hashes the served record to %s, sealed %s\n ours %s\n  ref %s", h, hash, canonical, ref)
		}
	})
}

// FuzzCallRecordVerifies runs the whole path on any request body: the gateway answers (never
// 500), and for every call it answered 200 GET /exec/jobs/{jobId} serves a document whose
// record hashes, by proof.Verify and by gowebpki/jcs alike, to the proof hash the call
// answered with.
func FuzzCallRecordVerifies(f *testing.F) {
	for _, s := range []string{
		`{"agentId":"a","tool":{"name":"json_parse","args":{"text":"{\"n\":[1e21,1e-7,-0,5e-324,9007199254740993,1e-400],\"\\ud83d\\ude00\":1,\"\\ue000\":2,\"s\":\"\\u2028\\u007f\\ud800\"}"}}}`,
		`{"tool":{"name":"json_parse","args":{"data":{"\ud83d\ude00":1,"\uffff":[18446744073709551617,-0.0]}}},"context":{"\u2028":"<&>"}}`,
		`{"tool":{"name":"data_filter","args":{"data":[{"a":1e308,"b":"\u001f"},{"a":-1e-320}],"where":[{"field":"a","op":"gt","value":0}]}}}`,
		`{"tool":{"name":"hash_generate","args":{"input":"\u2028\u2029<&>\u007f\ud83d\ude00"}},"agentId":"\u00e9"}`,
		`{"tool":{"name":"json_parse","args":{"text":"[1e400]"}}}`,
	} {
		f.Add(s)
	}
	reg, err := exec.NewRegistry(exec.NewJSONParse(), exec.NewDataFilter(), exec.NewHashGenerate())
	if err != nil {
		f.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(DefaultConfig, Deps{Runner: exec.NewRunner(reg, exec.DefaultLimits, quiet), IAM: &fakeIAM{},
		Audit: &memAudit{entries: map[string]store.Entry{}}, Logger: quiet})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		w := postSimulate(srv, strings.NewReader(body))
		if w.Code >= 500 {
			t.Fatalf("%q: %d %s", body, w.Code, w.Body.Bytes())
		}
		if w.Code != http.StatusOK {
			return
		}
		var res struct {
			JobID     string `json:"jobId"`
			ProofHash string `json:"proofHash"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
			t.Fatalf("%q: the answer does not decode: %v", body, err)
		}
		r := httptest.NewRequest("GET", "/exec/jobs/"+res.JobID, nil)
		got := httptest.NewRecorder()
		srv.Handler().ServeHTTP(got, r)
		var doc store.Entry
		if err := jsonv2.Unmarshal(got.Body.Bytes(), &doc); err != nil || got.Code != http.StatusOK {
			t.Fatalf("%q: GET /exec/jobs/%s: %d %v %s", body, res.JobID, got.Code, err, got.Body.Bytes())
		}
		if doc.ProofHash != res.ProofHash {
			t.Fatalf("%q: the job document claims %s, the call answered %s", body, doc.ProofHash, res.ProofHash)
		}
		if err := proof.Verify(doc.Record, res.ProofHash); err != nil {
			t.Fatalf("%q: the served record does not verify: %v\n%s", body, err, doc.Record)
		}
		ref, err := jcs.Transform(doc.Record)
		if err != nil || proof.HashCanonical(ref) != res.ProofHash {
			t.Fatalf("%q: an independent RFC 8785 implementation gives %q (%v), the call answered %s", body, ref, err, res.ProofHash)
		}
	})
}

// Postgres keeps the record as jsonb, which reorders members and writes numbers out in full
// (5e-324 as 326 digits): GET /exec/jobs/{jobId} serves the record in its canonical form, the
// bytes the proof hash was computed over, not jsonb's spelling of it.
func TestJobServesTheRecordInItsCanonicalForm(t *testing.T) {
	h := newHarness(t)
	sealed := []byte(`{"a":5e-324,"b":[1e+21,"x"],"jobId":"0190f0a0-0000-7000-8000-00000000000b"}`)
	asJSONB := []byte(`{"b": [1000000000000000000000, "x"], "a": 0.` + strings.Repeat("0", 323) + `4940656458412465441765687928682213723651, "jobId": "0190f0a0-0000-7000-8000-00000000000b"}`)
	canonical, err := proof.Canonicalize(asJSONB)
	if err != nil || !bytes.Equal(canonical, sealed) {
		t.Fatalf("the premise: jsonb's spelling canonicalises to %s (%v), want %s", canonical, err, sealed)
	}
	id := "0190f0a0-0000-7000-8000-00000000000b"
	h.audit.Submit(store.Entry{JobID: id, ProofHash: proof.HashCanonical(sealed), Record: asJSONB})
	w := h.do("GET", "/exec/jobs/"+id, "")
	if w.Code != 200 {
		t.Fatalf("job: %d %s", w.Code, w.Body)
	}
	if got := decode[store.Entry](t, w).Record; !bytes.Equal(got, sealed) {
		t.Fatalf("served record %s, want the sealed bytes %s", got, sealed)
	}
}
