package identity

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeEPResponse: EP's body is hostile input. The decoder must never panic, must accept
// only a JSON object holding a "valid", approve only on "valid": true, and what it keeps must be
// bounded and normalised.
func FuzzDecodeEPResponse(f *testing.F) {
	hash := strings.Repeat("0f", 32)
	for _, seed := range []string{
		`{"valid":true,"risk_score":"LOW","violations":[],"proof_hash":"` + hash + `","plan_summary":"AGENT:a | HTTP_GET EXECUTE $0.01","policy_set_id":"olympus-v1","chain":"base","timestamp":"2026-03-23T00:00:00.000Z","erc7710_delegation":{"valid":true,"delegation_found":false,"standard":"ERC-7710","fail_open":true}}`,
		`{"valid":false,"risk_score":"HIGH","violations":["Single trade exceeds $100 policy limit"],"proof_hash":"0x` + strings.ToUpper(hash) + `"}`,
		`{"valid":true,"risk_score":0.42}`,
		`{"valid":true,"risk_score":73,"proof_hash":null}`,
		`{"decision_id":"d","approved":true,"confidence":0.9}`,
		`{"valid":"true"}`,
		`{"valid":true,"valid":false}`,
		`{"valid":true,"violations":"over the limit"}`,
		`{"valid":false,"error":"x"}`,
		`{"VALID":true}`,
		`{"valid":true} x`,
		`{"error":"Internal server error"}`,
		`[]`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := decodeEPResponse(body)
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted a non-object %q: %v", body, err)
		}
		raw, ok := m["valid"]
		if !ok || (a.Valid && string(raw) != "true") {
			t.Fatalf("valid = %v, but body says %s", a.Valid, raw)
		}
		if a.Valid && (a.Contradictory || !noViolations(m["violations"])) {
			t.Fatalf("an approval with violations: %q", body)
		}
		if a.ProofHash != "" {
			if len(a.ProofHash) != 64 || strings.Trim(a.ProofHash, "0123456789abcdef") != "" {
				t.Fatalf("proof hash %q is not 64 lowercase hex", a.ProofHash)
			}
		}
		if len(a.RiskScore) > maxRiskScoreBytes {
			t.Fatalf("risk score %q too long", a.RiskScore)
		}
		if len(a.Violations) > maxViolations {
			t.Fatalf("%d violations kept", len(a.Violations))
		}
		for _, s := range a.Violations {
			if s == "" || len(s) > maxViolationBytes || !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
				t.Fatalf("violation %q not bounded valid UTF-8 without U+0000", s)
			}
		}
		again, err := decodeEPResponse(body)
		if err != nil || !reflect.DeepEqual(a, again) {
			t.Fatalf("decoding is not deterministic: %#v vs %#v (%v)", a, again, err)
		}
	})
}
