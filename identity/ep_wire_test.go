package identity

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestAmountUSD(t *testing.T) {
	for _, tc := range []struct {
		atomic uint64
		want   string
	}{
		{0, ""},
		{1, "0.000001"},
		{10_000, "0.01"},
		{100_000, "0.1"},
		{1_000_000, "1"},
		{1_500_000, "1.5"},
		{100_000_001, "100.000001"},
		{123_456_789, "123.456789"},
		{math.MaxUint64, "18446744073709.551615"},
	} {
		if got := amountUSD(tc.atomic); string(got) != tc.want {
			t.Errorf("amountUSD(%d) = %q, want %q", tc.atomic, got, tc.want)
		}
	}
}

func TestDecodeEPResponse(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name    string
		body    string
		want    epAnswer
		wantErr bool
	}{
		{"live approve", `{"valid":true,"risk_score":"LOW","violations":[],"proof_hash":"` + hash + `","plan_summary":"AGENT:a | HTTP_GET EXECUTE $0.01","policy_set_id":"olympus-v1","chain":"base","timestamp":"2026-03-23T00:00:00.000Z","erc7710_delegation":{"valid":true}}`,
			epAnswer{Valid: true, RiskScore: "LOW", ProofHash: hash}, false},
		{"live deny", `{"valid":false,"risk_score":"HIGH","violations":["Single trade exceeds $100 policy limit","Leverage exceeds 3x policy limit"],"proof_hash":"` + hash + `"}`,
			epAnswer{Valid: false, RiskScore: "HIGH", ProofHash: hash, Violations: []string{"Single trade exceeds $100 policy limit", "Leverage exceeds 3x policy limit"}}, false},
		{"whitespace everywhere", " \n{ \"valid\" : true , \"risk_score\" : 73 }\n ", epAnswer{Valid: true, RiskScore: "73"}, false},
		{"0x proof hash", `{"valid":true,"proof_hash":"0x` + strings.ToUpper(hash) + `"}`, epAnswer{Valid: true, ProofHash: hash}, false},
		{"non-hex proof hash dropped", `{"valid":true,"proof_hash":"` + strings.Repeat("zz", 32) + `"}`, epAnswer{Valid: true}, false},
		{"numeric proof hash dropped", `{"valid":true,"proof_hash":12}`, epAnswer{Valid: true}, false},
		{"object risk dropped", `{"valid":true,"risk_score":{"level":"LOW"}}`, epAnswer{Valid: true}, false},
		{"risk with spaces dropped", `{"valid":true,"risk_score":"LOW RISK"}`, epAnswer{Valid: true}, false},
		{"non-string violations skipped", `{"valid":false,"violations":["a",1,null,{"x":1},"b",""]}`, epAnswer{Violations: []string{"a", "b"}}, false},
		{"violations not an array", `{"valid":false,"violations":"a"}`, epAnswer{}, false},
		{"violations capped", `{"valid":false,"violations":[` + strings.Repeat(`"v",`, 40) + `"v"]}`, epAnswer{Violations: repeatStr("v", maxViolations)}, false},
		{"long violation truncated", `{"valid":false,"violations":["` + strings.Repeat("é", 200) + `"]}`, epAnswer{Violations: []string{strings.Repeat("é", 128)}}, false},
		{"NUL in a violation replaced", `{"valid":false,"violations":["over\u0000limit"]}`, epAnswer{Violations: []string{"over\uFFFDlimit"}}, false},
		{"duplicate unrelated keys are fine", `{"x":1,"x":2,"valid":true}`, epAnswer{Valid: true}, false},
		{"empty body", ``, epAnswer{}, true},
		{"an error answer", `{"valid":true,"error":"Internal server error"}`, epAnswer{}, true},
		{"a denial carrying an error is still a denial", `{"valid":false,"error":"Internal server error","violations":["v"]}`, epAnswer{Violations: []string{"v"}}, false},
		{"valid with violations is a contradiction", `{"valid":true,"violations":["Leverage exceeds 3x policy limit"]}`,
			epAnswer{Contradictory: true, Violations: []string{"Leverage exceeds 3x policy limit"}}, false},
		{"valid with a violation as a bare string", `{"valid":true,"violations":"Single trade exceeds $100 policy limit"}`, epAnswer{Contradictory: true}, false},
		{"valid with violations as objects", `{"valid":true,"violations":[{"rule":"max_amount","message":"Single trade exceeds $100 policy limit"}]}`, epAnswer{Contradictory: true}, false},
		{"valid with an empty-string violation", `{"valid":true,"violations":[""]}`, epAnswer{Contradictory: true}, false},
		{"valid with violations as an object", `{"valid":true,"violations":{"amount":"over limit"}}`, epAnswer{Contradictory: true}, false},
		{"a second, non-empty violations is a contradiction", `{"valid":true,"violations":[],"violations":["v"]}`, epAnswer{Contradictory: true, Violations: []string{"v"}}, false},
		{"valid with null violations", `{"valid":true,"violations":null}`, epAnswer{Valid: true}, false},
		{"valid with no violations", `{"valid":true,"violations":[ ]}`, epAnswer{Valid: true}, false},
		{"not JSON", `<html>`, epAnswer{}, true},
		{"array", `[true]`, epAnswer{}, true},
		{"missing valid", `{"approved":true}`, epAnswer{}, true},
		{"valid string", `{"valid":"true"}`, epAnswer{}, true},
		{"valid number", `{"valid":1}`, epAnswer{}, true},
		{"valid null", `{"valid":null}`, epAnswer{}, true},
		{"valid upper-case key", `{"VALID":true}`, epAnswer{}, true},
		{"duplicate valid, true and false, is a contradiction", `{"valid":true,"valid":false}`, epAnswer{Contradictory: true}, false},
		{"duplicate valid, false and true, is a contradiction", `{"valid":false,"valid":true}`, epAnswer{Contradictory: true}, false},
		{"duplicate valid false is a denial", `{"valid":false,"valid":false}`, epAnswer{}, false},
		{"a false valid beside a malformed one is a denial", `{"valid":"true","valid":false}`, epAnswer{}, false},
		{"duplicate valid true", `{"valid":true,"valid":true}`, epAnswer{}, true},
		{"duplicate proof_hash", `{"valid":true,"proof_hash":"a","proof_hash":"b"}`, epAnswer{}, true},
		{"duplicate proof_hash in a denial is dropped", `{"valid":false,"proof_hash":"` + hash + `","proof_hash":"b","risk_score":"HIGH","risk_score":"LOW"}`, epAnswer{}, false},
		{"trailing data", `{"valid":true}{"valid":false}`, epAnswer{}, true},
		{"truncated", `{"valid":true,"risk_score":"LO`, epAnswer{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeEPResponse([]byte(tc.body))
			if tc.wantErr {
				if !errors.Is(err, errBadResponse) {
					t.Fatalf("err = %v, want errBadResponse", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decode =\n %#v\nwant\n %#v", got, tc.want)
			}
		})
	}
}

func repeatStr(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
