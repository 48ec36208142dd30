package identity

import (
	"reflect"
	"strings"
	"testing"
)

func TestPolicyEvaluate(t *testing.T) {
	cfg := PolicyConfig{
		DenyAgents: []string{"evil", "\u03c3\u03bf\u03c6\u03bf\u03c2"}, // "evil", "σοφος" with a final sigma
		ToolAllow: map[string][]string{
			"reader":  {"http_get", "json_parse"},
			AnyAgent:  {"http_get", "json_parse", "hash"},
			"trusted": {"http_get", "json_parse", "hash", "dns_lookup"},
		},
		AllowReal:      true,
		RealAgents:     []string{"trusted", "Reader"},
		MaxPriceAtomic: usdc(1, 0),
	}
	p, err := NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		req        Request
		wantReason string // "" for allowed
		wantViol   int
	}{
		{"listed agent, listed tool, dry run", Request{AgentID: "reader", Tool: "http_get", DryRun: true}, "", 0},
		{"deny-listed agent", Request{AgentID: "evil", Tool: "http_get", DryRun: true}, ReasonAgentDenied, 1},
		{"deny list ignores case and space", Request{AgentID: "  EVIL ", Tool: "http_get", DryRun: true}, ReasonAgentDenied, 1},
		{"deny list ignores compatibility forms", Request{AgentID: "ｅｖｉｌ", Tool: "http_get", DryRun: true}, ReasonAgentDenied, 1},
		{"deny list ignores case beyond ASCII: a dotless i is an i", Request{AgentID: "ev\u0131l", Tool: "http_get", DryRun: true}, ReasonAgentDenied, 1},
		{"deny list ignores case beyond ASCII: upper-case of a final sigma", Request{AgentID: "\u03a3\u039f\u03a6\u039f\u03a3", Tool: "http_get", DryRun: true}, ReasonAgentDenied, 1},
		{"deny list ignores invisible characters", Request{AgentID: "e\u00advil\u200b\ufeff", Tool: "http_get", DryRun: true}, ReasonAgentDenied, 1},
		{"own allow-list is exclusive", Request{AgentID: "reader", Tool: "hash", DryRun: true}, ReasonToolNotAllowed, 1},
		{"default allow-list applies to unlisted agents", Request{AgentID: "stranger", Tool: "dns_lookup", DryRun: true}, ReasonToolNotAllowed, 1},
		{"default allow-list allows its tools", Request{AgentID: "stranger", Tool: "hash", DryRun: true}, "", 0},
		{"tool names match exactly", Request{AgentID: "reader", Tool: "HTTP_GET", DryRun: true}, ReasonToolNotAllowed, 1},
		{"real execution for a real agent", Request{AgentID: "trusted", Tool: "dns_lookup"}, "", 0},
		{"real agent ids ignore case", Request{AgentID: "READER", Tool: "http_get"}, "", 0},
		{"real execution for another agent", Request{AgentID: "stranger", Tool: "hash"}, ReasonRealNotAllowed, 1},
		{"price at the limit", Request{AgentID: "trusted", Tool: "hash", DryRun: true, PriceAtomic: usdc(1, 0)}, "", 0},
		{"price over the limit", Request{AgentID: "trusted", Tool: "hash", DryRun: true, PriceAtomic: usdc(1, 1)}, ReasonPriceOverLimit, 1},
		{"every violation is listed, first reason wins", Request{AgentID: "evil", Tool: "shell_exec", PriceAtomic: usdc(2, 0)}, ReasonAgentDenied, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason, viol := p.Evaluate(tc.req)
			if ok != (tc.wantReason == "") || reason != tc.wantReason || len(viol) != tc.wantViol {
				t.Errorf("Evaluate = %v, %q, %q; want reason %q with %d violations", ok, reason, viol, tc.wantReason, tc.wantViol)
			}
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	p, err := NewPolicy(PolicyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ok, reason, viol := p.Evaluate(Request{AgentID: "any", Tool: "anything", DryRun: true, PriceAtomic: 1 << 60})
	if !ok {
		t.Errorf("empty policy refused a dry run: %q %q", reason, viol)
	}
	ok, reason, viol = p.Evaluate(Request{AgentID: "any", Tool: "http_get"})
	want := []string{"real execution is disabled; use dry-run"}
	if ok || reason != ReasonRealDisabled || !reflect.DeepEqual(viol, want) {
		t.Errorf("empty policy on real execution = %v %q %q, want real_execution_disabled", ok, reason, viol)
	}
}

func TestNewPolicyRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  PolicyConfig
		want string
	}{
		{"empty deny entry", PolicyConfig{DenyAgents: []string{" "}}, "policy.denyAgents"},
		{"real agents without real execution", PolicyConfig{RealAgents: []string{"a"}}, "policy.allowReal"},
		{"empty real agent", PolicyConfig{AllowReal: true, RealAgents: []string{""}}, "policy.realAgents"},
		{"empty allow-list agent", PolicyConfig{ToolAllow: map[string][]string{"": {"hash"}}}, "policy.toolAllow"},
		{"agent listed twice by case", PolicyConfig{ToolAllow: map[string][]string{"a": {"hash"}, "A": {"hash"}}}, "twice"},
		{"padded tool name", PolicyConfig{ToolAllow: map[string][]string{"a": {" hash"}}}, "tool name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewPolicy(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewPolicy error = %v, want one naming %q", err, tc.want)
			}
		})
	}
}
