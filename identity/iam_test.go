package identity

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

func TestDecideEPOff(t *testing.T) {
	g := newTestIAM(t, Config{})
	for _, tc := range []struct {
		name string
		req  Request
		want Outcome
	}{
		{"policy approves, EP off", Request{JobID: "j", AgentID: "a", Tool: "http_get", DryRun: true, PriceAtomic: 10_000},
			Outcome{Approved: true, Decision: DecisionApproved, Source: SourcePolicy, Reason: ReasonEPDisabled}},
		{"policy still denies real execution", Request{JobID: "j", AgentID: "a", Tool: "http_get"},
			Outcome{Decision: DecisionDenied, Source: SourcePolicy, Reason: ReasonRealDisabled,
				Violations: []string{"real execution is disabled; use dry-run"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := g.Decide(context.Background(), tc.req); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Decide = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestPolicyShortCircuitsEP: a local denial is final and EP never hears of the call.
func TestPolicyShortCircuitsEP(t *testing.T) {
	policy := PolicyConfig{
		DenyAgents:     []string{"evil"},
		ToolAllow:      map[string][]string{"reader": {"http_get"}},
		AllowReal:      true,
		RealAgents:     []string{"trusted"},
		MaxPriceAtomic: usdc(1, 0),
	}
	for _, tc := range []struct {
		name   string
		req    Request
		reason string
	}{
		{"deny-listed agent", Request{AgentID: "evil", Tool: "http_get", DryRun: true}, ReasonAgentDenied},
		{"tool not on allow-list", Request{AgentID: "reader", Tool: "hash", DryRun: true}, ReasonToolNotAllowed},
		{"real execution not allowed for agent", Request{AgentID: "reader", Tool: "http_get"}, ReasonRealNotAllowed},
		{"price over limit", Request{AgentID: "trusted", Tool: "hash", DryRun: true, PriceAtomic: usdc(5, 0)}, ReasonPriceOverLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEP(t, olympus)
			g := newTestIAM(t, Config{Policy: policy, EP: EPConfig{URL: f.URL()}})
			tc.req.JobID = testJob
			out := g.Decide(context.Background(), tc.req)
			if out.Approved || out.Decision != DecisionDenied || out.Source != SourcePolicy || out.Reason != tc.reason || len(out.Violations) == 0 {
				t.Errorf("Decide = %+v, want denied by policy with %q", out, tc.reason)
			}
			if n := f.calls.Load(); n != 0 {
				t.Errorf("EP received %d calls after a policy denial", n)
			}
		})
	}
}

func TestInternalAgents(t *testing.T) {
	for _, tc := range []struct {
		name      string
		skip      bool
		req       Request
		want      string
		wantCalls int64
	}{
		{"internal skips EP when configured", true, Request{AgentID: "achilles", Tool: "hash", DryRun: true, Internal: true}, DecisionSkipped, 0},
		{"internal goes to EP by default", false, Request{AgentID: "achilles", Tool: "hash", DryRun: true, Internal: true}, DecisionApproved, 1},
		{"external callers always go to EP", true, Request{AgentID: "achilles", Tool: "hash", DryRun: true}, DecisionApproved, 1},
		{"internal callers still obey policy", true, Request{AgentID: "achilles", Tool: "hash", Internal: true}, DecisionDenied, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEP(t, olympus)
			g := newTestIAM(t, Config{EP: EPConfig{URL: f.URL()}, InternalSkipsEP: tc.skip})
			tc.req.JobID = testJob
			out := g.Decide(context.Background(), tc.req)
			if out.Decision != tc.want || f.calls.Load() != tc.wantCalls {
				t.Errorf("Decide = %+v with %d EP calls, want %s with %d", out, f.calls.Load(), tc.want, tc.wantCalls)
			}
			if out.Decision == DecisionSkipped && (!out.Approved || out.Reason != ReasonInternalAgent || out.Source != SourcePolicy) {
				t.Errorf("skipped outcome %+v", out)
			}
		})
	}
}

func TestResolver(t *testing.T) {
	const global = "eip155:8453:0x8004A169FB4a3325136EB29fA0ceB6D2e539a432:22"
	const payer = "0x1111111111111111111111111111111111111111"
	resolver := ResolverFunc(func(_ context.Context, agentID, p string) (string, error) {
		if agentID == "22" && p == payer {
			return global, nil
		}
		if agentID == "blank" {
			return "", nil
		}
		return "", errors.New("payer is not the agent's wallet")
	})
	for _, tc := range []struct {
		name      string
		policy    PolicyConfig
		req       Request
		want      Outcome
		wantAgent string // agent_id EP received, "" for no call
	}{
		{"resolved id goes to EP", PolicyConfig{}, Request{AgentID: "22", Payer: payer, Tool: "hash", DryRun: true},
			Outcome{Approved: true, Decision: DecisionApproved, Source: SourceEP, Reason: ReasonEPApproved, RiskScore: "LOW",
				EPProofHash: olympusProof(testJob, global)}, global},
		{"unbound payer is denied before EP", PolicyConfig{}, Request{AgentID: "22", Payer: "0x2222222222222222222222222222222222222222", Tool: "hash", DryRun: true},
			Outcome{Decision: DecisionDenied, Source: SourceIdentity, Reason: ReasonIdentityUnresolved}, ""},
		{"empty resolution is denied", PolicyConfig{}, Request{AgentID: "blank", Payer: payer, Tool: "hash", DryRun: true},
			Outcome{Decision: DecisionDenied, Source: SourceIdentity, Reason: ReasonIdentityUnresolved}, ""},
		{"policy sees the resolved id", PolicyConfig{DenyAgents: []string{global}}, Request{AgentID: "22", Payer: payer, Tool: "hash", DryRun: true},
			Outcome{Decision: DecisionDenied, Source: SourcePolicy, Reason: ReasonAgentDenied,
				Violations: []string{`agent "` + global + `" is deny-listed`}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEP(t, olympus)
			g := newTestIAM(t, Config{Policy: tc.policy, EP: EPConfig{URL: f.URL()}}, WithResolver(resolver))
			tc.req.JobID = testJob
			if got := g.Decide(context.Background(), tc.req); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Decide = %+v, want %+v", got, tc.want)
			}
			if tc.wantAgent == "" {
				if f.calls.Load() != 0 {
					t.Errorf("EP received %d calls, want none", f.calls.Load())
				}
				return
			}
			if got := string(f.lastBody(t)["agent_id"]); got != `"`+tc.wantAgent+`"` {
				t.Errorf("EP agent_id = %s, want %q", got, tc.wantAgent)
			}
		})
	}
}

// TestDecideIsDeterministic: the same EP answer yields byte-identical outcomes.
func TestDecideIsDeterministic(t *testing.T) {
	f := newFakeEP(t, olympus)
	g := newTestIAM(t, Config{EP: EPConfig{URL: f.URL()}})
	req := Request{JobID: testJob, AgentID: testAgent, Tool: "http_get", DryRun: true, PriceAtomic: usdc(150, 0)}
	a, b := g.Decide(context.Background(), req), g.Decide(context.Background(), req)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("outcomes differ:\n %+v\n %+v", a, b)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{EP: EPConfig{URL: "ftp://127.0.0.1"}}); err == nil {
		t.Error("New accepted an ftp EP URL")
	}
	if _, err := New(Config{Policy: PolicyConfig{RealAgents: []string{"a"}}}); err == nil {
		t.Error("New accepted realAgents without allowReal")
	}
}
