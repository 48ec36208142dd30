package gateway

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/identity"
)

// TestResponseShapeKnown fails when a field is added to (or changed in) any type of the 200
// answer: appendExecResponse must then be taught it and responseShape updated.
func TestResponseShapeKnown(t *testing.T) {
	got := shapeOf(reflect.TypeFor[execResponse](), reflect.TypeFor[settlementInfo](),
		reflect.TypeFor[exec.Result](), reflect.TypeFor[exec.ToolError](), reflect.TypeFor[identity.Outcome]())
	if !responseShapeKnown {
		t.Fatalf("response shape changed; the direct encoding is off.\n now:  %q\n want: %q", got, responseShape)
	}
}

// responseAgrees requires marshalResponse to give exactly what json.Marshal gives.
func responseAgrees(t *testing.T, v any) {
	t.Helper()
	want, wantErr := json.Marshal(v)
	got, gotErr := marshalResponse(v)
	if (gotErr == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
		t.Fatalf("marshalResponse(%+v)\n got  %q (%v)\n want %q (%v)", v, got, gotErr, want, wantErr)
	}
}

var responseTestRaws = []string{`{"a":"x y"}`, `"<"`, "\"\u2028\"", `{"a":"\u003c\u2028"}`, `{"a":"\"}{ "}`, `[1, 2]`,
	`{"valid":true,"type":"object","value":{"key":"value","n":[1,2,3]},"keys":["key","n"],"depth":2,"bytes":36}`,
	"\"\\\\\"", `"\""`, "\"é€😀\xe2\x80\"", `{"a":1,"a":2}`, "\"\xff\"", ``, `nul`, `1e400`}

func TestMarshalResponseMatchesJSON(t *testing.T) {
	full := execResponse{JobID: "j", Tool: "json_parse", DryRun: true, Status: exec.StatusCompleted,
		Result:      exec.Result{Output: json.RawMessage(`{"a":[1,"<b>"]}`), ExitCode: 0, Simulated: true, Error: &exec.ToolError{Code: "c", Message: "m <&>\u2028\xff"}},
		IAMApproved: true, IAM: identity.Outcome{Approved: true, Decision: "approved", Source: "policy", Reason: "r", Violations: []string{"v1", "v2"}, RiskScore: "LOW", EPProofHash: "ab"},
		ProofHash: "0x00", PaymentProtocol: "x402", LatencyMs: 12, Timestamp: "2026-01-02T03:04:05.678Z", SchemaVersion: SchemaVersion,
		Settlement: &settlementInfo{Status: "settled", ID: "p1", Transaction: "0xabc"}}
	responseAgrees(t, full)
	typical := full
	typical.Result.Output = json.RawMessage(`{"valid":true,"value":{"a b":"c d"},"depth":1}`)
	if _, ok := appendExecResponse(nil, &typical); !ok {
		t.Fatal("a typical answer did not take the direct encoding")
	}
	responseAgrees(t, execResponse{})
	responseAgrees(t, problem{Type: "urn:x", Title: "Bad Request", Status: 400, Code: "c", Error: "<e>"})
	for _, raw := range append(responseTestRaws, recordTestRaws...) {
		r := full
		r.Result.Output = json.RawMessage(raw)
		responseAgrees(t, r)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for range n {
		var r execResponse
		recordTestFill(rng, reflect.ValueOf(&r).Elem())
		if rng.IntN(2) == 0 {
			r.Result.Output = json.RawMessage(responseTestRaws[rng.IntN(len(responseTestRaws))])
		}
		responseAgrees(t, r)
	}
}

func FuzzMarshalResponseMatchesJSON(f *testing.F) {
	for _, raw := range responseTestRaws {
		f.Add("s<&>", "\u2028\xff", []byte(raw), int64(7))
	}
	f.Fuzz(func(t *testing.T, s1, s2 string, output []byte, n int64) {
		responseAgrees(t, execResponse{JobID: s1, Tool: s2, Status: s1, Result: exec.Result{Output: output, ExitCode: int(n), Error: &exec.ToolError{Code: s1, Message: s2}},
			IAM: identity.Outcome{Decision: s2, Violations: []string{s1, s2}, RiskScore: s1}, ProofHash: s2, LatencyMs: n, Settlement: &settlementInfo{Status: s1, ID: s2}})
	})
}
