package identity

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const (
	testJob   = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
	testAgent = "agent-7"
)

// usdc converts whole and micro dollars to atomic units.
func usdc(dollars, micros uint64) uint64 { return dollars*1_000_000 + micros }

// TestEPOutcomes is the EP contract: every answer, or lack of one, in both fail modes.
func TestEPOutcomes(t *testing.T) {
	hash := olympusProof(testJob, testAgent)
	upperHash := "0X" + strings.ToUpper(hash)
	for _, tc := range []struct {
		name    string
		handler func(f *fakeEP) http.HandlerFunc // nil: EP is dead
		price   uint64
		want    Outcome // in fail-open mode; fail-closed differs only for unavailable outcomes
	}{
		{"approves a one-cent call", func(*fakeEP) http.HandlerFunc { return olympus }, usdc(0, 10_000),
			Outcome{Approved: true, Decision: DecisionApproved, Source: SourceEP, Reason: ReasonEPApproved,
				Violations: nil, RiskScore: "LOW", EPProofHash: hash}},
		{"approves a free call without amount_usd", func(*fakeEP) http.HandlerFunc { return olympus }, 0,
			Outcome{Approved: true, Decision: DecisionApproved, Source: SourceEP, Reason: ReasonEPApproved,
				RiskScore: "LOW", EPProofHash: hash}},
		{"approves over $50 with MEDIUM risk", func(*fakeEP) http.HandlerFunc { return olympus }, usdc(60, 0),
			Outcome{Approved: true, Decision: DecisionApproved, Source: SourceEP, Reason: ReasonEPApproved,
				RiskScore: "MEDIUM", EPProofHash: hash}},
		{"denies over $100 with olympus-v1 violation", func(*fakeEP) http.HandlerFunc { return olympus }, usdc(150, 0),
			Outcome{Approved: false, Decision: DecisionDenied, Source: SourceEP, Reason: ReasonEPDenied,
				Violations: []string{"Single trade exceeds $100 policy limit"}, RiskScore: "HIGH", EPProofHash: hash}},
		{"$100.000001 is over the limit", func(*fakeEP) http.HandlerFunc { return olympus }, usdc(100, 1),
			Outcome{Decision: DecisionDenied, Source: SourceEP, Reason: ReasonEPDenied,
				Violations: []string{"Single trade exceeds $100 policy limit"}, RiskScore: "HIGH", EPProofHash: hash}},
		{"swarm-style 0x uppercase proof hash is normalised", func(*fakeEP) http.HandlerFunc {
			return respond(200, `{"valid":true,"risk_score":"LOW","violations":[],"proof_hash":"`+upperHash+`"}`)
		}, 1, Outcome{Approved: true, Decision: DecisionApproved, Source: SourceEP, Reason: ReasonEPApproved,
			RiskScore: "LOW", EPProofHash: hash}},
		{"short proof hash is dropped, numeric risk kept", func(*fakeEP) http.HandlerFunc {
			return respond(200, `{"valid":true,"risk_score":0.42,"proof_hash":"abc123"}`)
		}, 1, Outcome{Approved: true, Decision: DecisionApproved, Source: SourceEP, Reason: ReasonEPApproved, RiskScore: "0.42"}},
		{"slow EP times out", func(f *fakeEP) http.HandlerFunc { return f.slow }, 1,
			Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPTimeout}},
		{"dead EP is unreachable", nil, 1,
			Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPUnreachable}},
		{"500 is a bad status", func(*fakeEP) http.HandlerFunc {
			return respond(500, `{"error":"Internal server error","message":"boom"}`)
		}, 1, Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadStatus}},
		{"400 is a bad status, not a denial", func(*fakeEP) http.HandlerFunc {
			return respond(400, `{"error":"amount_usd must be a positive number"}`)
		}, 1, Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadStatus}},
		{"206 is not an answer", func(*fakeEP) http.HandlerFunc { return respond(http.StatusPartialContent, `{"valid":true}`) }, 1,
			Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadStatus}},
		{"203 (a proxy changed the body) is not an answer", func(*fakeEP) http.HandlerFunc {
			return respond(http.StatusNonAuthoritativeInfo, `{"valid":true}`)
		}, 1, Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadStatus}},
		{"202 is not an answer", func(*fakeEP) http.HandlerFunc { return respond(http.StatusAccepted, `{"valid":true}`) }, 1,
			Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadStatus}},
		{"a 200 carrying an error is not an approval", func(*fakeEP) http.HandlerFunc {
			return respond(200, `{"valid":true,"error":"Internal server error","message":"db down"}`)
		}, 1, Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadResponse}},
		{"valid with violations is a denial, in either mode", func(*fakeEP) http.HandlerFunc {
			return respond(200, `{"valid":true,"violations":["Single trade exceeds $100 policy limit"],"risk_score":"HIGH"}`)
		}, 1, Outcome{Decision: DecisionDenied, Source: SourceEP, Reason: ReasonEPContradictory,
			Violations: []string{"Single trade exceeds $100 policy limit"}, RiskScore: "HIGH"}},
		{"valid with a bare-string violation is a denial", func(*fakeEP) http.HandlerFunc {
			return respond(200, `{"valid":true,"violations":"Single trade exceeds $100 policy limit"}`)
		}, 1, Outcome{Decision: DecisionDenied, Source: SourceEP, Reason: ReasonEPContradictory}},
		{"a denial carrying an error is still a denial", func(*fakeEP) http.HandlerFunc {
			return respond(200, `{"valid":false,"violations":["Leverage exceeds 3x policy limit"],"error":"Internal server error"}`)
		}, 1, Outcome{Decision: DecisionDenied, Source: SourceEP, Reason: ReasonEPDenied,
			Violations: []string{"Leverage exceeds 3x policy limit"}}},
		{"redirect is not followed", func(*fakeEP) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/elsewhere", http.StatusFound) }
		}, 1, Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadStatus}},
		{"non-JSON body", func(*fakeEP) http.HandlerFunc { return respond(200, `<html>Bad Gateway</html>`) }, 1,
			Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadResponse}},
		{"body over the cap", func(*fakeEP) http.HandlerFunc {
			return respond(200, `{"valid":true,"pad":"`+strings.Repeat("a", 70<<10)+`"}`)
		}, 1, Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadResponse}},
		{"missing valid (legacy shape)", func(*fakeEP) http.HandlerFunc {
			return respond(200, `{"decision_id":"d1","approved":true,"confidence":0.9,"fee_eth":"0","timestamp":"2026-03-23T00:00:00Z"}`)
		}, 1, Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadResponse}},
		{"valid as a string", func(*fakeEP) http.HandlerFunc { return respond(200, `{"valid":"true"}`) }, 1,
			Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadResponse}},
		{"valid is null", func(*fakeEP) http.HandlerFunc { return respond(200, `{"valid":null}`) }, 1,
			Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadResponse}},
		{"Valid in another case is not valid", func(*fakeEP) http.HandlerFunc { return respond(200, `{"Valid":true}`) }, 1,
			Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadResponse}},
		{"duplicate valid, false then true, is a denial", func(*fakeEP) http.HandlerFunc { return respond(200, `{"valid":false,"valid":true}`) }, 1,
			Outcome{Decision: DecisionDenied, Source: SourceEP, Reason: ReasonEPContradictory}},
		{"duplicate valid true is ambiguous", func(*fakeEP) http.HandlerFunc { return respond(200, `{"valid":true,"valid":true}`) }, 1,
			Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadResponse}},
		{"JSON array", func(*fakeEP) http.HandlerFunc { return respond(200, `[{"valid":true}]`) }, 1,
			Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPBadResponse}},
	} {
		for _, mode := range []FailMode{FailOpen, FailClosed} {
			t.Run(tc.name+"/fail_"+string(mode), func(t *testing.T) {
				url := ""
				var f *fakeEP
				if tc.handler == nil {
					url = deadURL(t)
				} else {
					f = newFakeEP(t, func(w http.ResponseWriter, r *http.Request) { tc.handler(f)(w, r) })
					url = f.URL()
				}
				g := newTestIAM(t, Config{EP: EPConfig{URL: url, Mode: mode}})
				got := g.Decide(context.Background(), Request{
					JobID: testJob, AgentID: testAgent, Tool: "http_get", DryRun: true, PriceAtomic: tc.price,
				})
				want := tc.want
				if mode == FailClosed && want.Decision == DecisionUnavailableFailedOpen {
					want.Decision, want.Approved = DecisionUnavailableFailedClosed, false
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("Decide =\n %+v\nwant\n %+v", got, want)
				}
				if f != nil && f.calls.Load() != 1 {
					t.Errorf("EP received %d calls, want 1", f.calls.Load())
				}
			})
		}
	}
}

// TestEPRequestShape asserts the exact JSON EP receives (ep.md §6 item 2).
func TestEPRequestShape(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		want map[string]string // field -> raw JSON
	}{
		{"real one-cent call", Request{JobID: testJob, AgentID: testAgent, Tool: "http_get", PriceAtomic: 10_000},
			map[string]string{"agent_id": `"agent-7"`, "proposal_id": `"` + testJob + `"`, "asset": `"http_get"`,
				"direction": `"execute"`, "amount_usd": `0.01`, "chain": `"base"`}},
		{"dry run, whole dollars", Request{JobID: "j2", AgentID: testAgent, Tool: "json_parse", DryRun: true, PriceAtomic: usdc(50, 0)},
			map[string]string{"agent_id": `"agent-7"`, "proposal_id": `"j2"`, "asset": `"json_parse"`,
				"direction": `"dry_run"`, "amount_usd": `50`, "chain": `"base"`}},
		{"free call omits amount_usd", Request{JobID: "j3", AgentID: testAgent, Tool: "hash", DryRun: true},
			map[string]string{"agent_id": `"agent-7"`, "proposal_id": `"j3"`, "asset": `"hash"`,
				"direction": `"dry_run"`, "chain": `"base"`}},
		{"no agent id is anonymous", Request{JobID: "j4", Tool: "hash", DryRun: true, PriceAtomic: 1},
			map[string]string{"agent_id": `"anonymous"`, "proposal_id": `"j4"`, "asset": `"hash"`,
				"direction": `"dry_run"`, "amount_usd": `0.000001`, "chain": `"base"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEP(t, olympus)
			g := newTestIAM(t, Config{Policy: PolicyConfig{AllowReal: true}, EP: EPConfig{URL: f.URL()}})
			if out := g.Decide(context.Background(), tc.req); out.Decision != DecisionApproved || out.Source != SourceEP {
				t.Fatalf("Decide = %+v, want approved by EP", out)
			}
			got := map[string]string{}
			for k, v := range f.lastBody(t) {
				got[k] = string(v)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("EP received\n %v\nwant\n %v", got, tc.want)
			}
		})
	}
}

// TestEPBodyCap proves the client stops reading at the cap, whether or not EP declares a length.
func TestEPBodyCap(t *testing.T) {
	const limit = 1 << 10
	for _, tc := range []struct {
		name          string
		declareLength bool
	}{
		{"streamed without length", false},
		{"declared Content-Length", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const total = 1 << 20
			f := newFakeEP(t, func(w http.ResponseWriter, _ *http.Request) {
				if tc.declareLength {
					w.Header().Set("Content-Length", "1048576")
				}
				w.WriteHeader(http.StatusOK)
				chunk := []byte(`{"valid":true,"pad":"` + strings.Repeat("a", 4<<10-21))
				for sent := 0; sent < total; {
					n, err := w.Write(chunk[:min(len(chunk), total-sent)])
					sent += n
					if err != nil {
						return
					}
					w.(http.Flusher).Flush()
					chunk = []byte(strings.Repeat("a", 4<<10))
				}
			})
			ct := &countingTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
			g := newTestIAM(t, Config{EP: EPConfig{URL: f.URL(), MaxResponseBytes: limit, Transport: ct}})
			out := g.Decide(context.Background(), Request{JobID: testJob, AgentID: testAgent, Tool: "http_get", DryRun: true, PriceAtomic: 1})
			if out.Reason != ReasonEPBadResponse || out.Decision != DecisionUnavailableFailedOpen {
				t.Errorf("Decide = %+v, want unavailable_failed_open/ep_bad_response", out)
			}
			if n := ct.read.Load(); n > limit+1 {
				t.Errorf("client read %d body bytes, cap is %d", n, limit)
			}
			if tc.declareLength && ct.read.Load() != 0 {
				t.Errorf("client read %d bytes of a body declared over the cap", ct.read.Load())
			}
		})
	}
}

// TestEPHeaderCap: the body cap is worth little if EP may send megabytes of headers instead;
// an answer whose headers are over the cap is no answer.
func TestEPHeaderCap(t *testing.T) {
	f := newFakeEP(t, func(w http.ResponseWriter, r *http.Request) {
		for range 256 {
			w.Header().Add("X-Pad", strings.Repeat("a", 4<<10))
		}
		olympus(w, r)
	})
	g := newTestIAM(t, Config{EP: EPConfig{URL: f.URL(), Mode: FailClosed}})
	out := g.Decide(context.Background(), Request{JobID: testJob, AgentID: testAgent, Tool: "http_get", DryRun: true, PriceAtomic: 1})
	if out.Approved || out.Decision != DecisionUnavailableFailedClosed {
		t.Errorf("Decide = %+v, want unavailable_failed_closed for 1 MiB of headers", out)
	}
}

// TestEPCircuitBreaker drives the breaker with a fake clock: it opens after N consecutive
// failures, makes no calls while open, probes once after the cool-down, and closes on success.
func TestEPCircuitBreaker(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	f := newFakeEP(t, func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			respond(503, `{"error":"unavailable"}`)(w, r)
			return
		}
		olympus(w, r)
	})
	setFailing := failing.Store

	clock := newFakeClock()
	logs := &syncBuffer{}
	g := newTestIAM(t, Config{EP: EPConfig{
		URL: f.URL(), BreakerThreshold: 3, BreakerCooldown: time.Minute, Now: clock.Now,
		Logger: slogText(logs),
	}})
	req := Request{JobID: testJob, AgentID: testAgent, Tool: "http_get", DryRun: true, PriceAtomic: 1}

	steps := []struct {
		name      string
		before    func()
		wantRsn   string
		wantCalls int64
	}{
		{"failure 1", nil, ReasonEPBadStatus, 1},
		{"failure 2", nil, ReasonEPBadStatus, 2},
		{"failure 3 opens the breaker", nil, ReasonEPBadStatus, 3},
		{"open: no call", nil, ReasonEPCircuitOpen, 3},
		{"still open just before the cool-down ends", func() { clock.Advance(time.Minute - time.Nanosecond) }, ReasonEPCircuitOpen, 3},
		{"half-open probe fails", func() { clock.Advance(time.Nanosecond) }, ReasonEPBadStatus, 4},
		{"open again after the failed probe", nil, ReasonEPCircuitOpen, 4},
		{"probe succeeds after the next cool-down", func() { setFailing(false); clock.Advance(time.Minute) }, ReasonEPApproved, 5},
		{"closed: calls flow", nil, ReasonEPApproved, 6},
		{"a single failure does not reopen", func() { setFailing(true) }, ReasonEPBadStatus, 7},
		{"and the next call still reaches EP", nil, ReasonEPBadStatus, 8},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		out := g.Decide(context.Background(), req)
		if out.Reason != s.wantRsn || f.calls.Load() != s.wantCalls {
			t.Fatalf("%s: reason %q after %d EP calls, want %q after %d", s.name, out.Reason, f.calls.Load(), s.wantRsn, s.wantCalls)
		}
		if s.wantRsn == ReasonEPCircuitOpen && (out.Decision != DecisionUnavailableFailedOpen || !out.Approved) {
			t.Fatalf("%s: circuit-open outcome %+v, want unavailable_failed_open", s.name, out)
		}
	}
	for _, want := range []string{"ep circuit breaker opened", "ep skipped: circuit open", "reason=ep_bad_status"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestEPCallerCanceled: a caller that goes away is not EP's fault and must not trip the breaker.
func TestEPCallerCanceled(t *testing.T) {
	f := newFakeEP(t, olympus)
	g := newTestIAM(t, Config{EP: EPConfig{URL: f.URL(), BreakerThreshold: 1, Mode: FailClosed}})
	req := Request{JobID: testJob, AgentID: testAgent, Tool: "http_get", DryRun: true, PriceAtomic: 1}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := g.Decide(ctx, req)
	want := Outcome{Decision: DecisionUnavailableFailedClosed, Source: SourceEP, Reason: ReasonEPCanceled}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("canceled Decide = %+v, want %+v", out, want)
	}
	if out := g.Decide(context.Background(), req); out.Decision != DecisionApproved {
		t.Fatalf("after a canceled call Decide = %+v, want approved (breaker must stay closed)", out)
	}
	// The caller's own deadline, shorter than EP's, is the caller's, not an EP timeout.
	var slow *fakeEP
	slow = newFakeEP(t, func(w http.ResponseWriter, r *http.Request) { slow.slow(w, r) })
	g = newTestIAM(t, Config{EP: EPConfig{URL: slow.URL(), Timeout: 3 * time.Second, BreakerThreshold: 1, Mode: FailClosed}})
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if out := g.Decide(ctx, req); !reflect.DeepEqual(out, want) {
		t.Fatalf("Decide past the caller's deadline = %+v, want %+v", out, want)
	}
}

// TestOutcomeJSON pins the record shape: camelCase keys, empty fields omitted, no timing data.
func TestOutcomeJSON(t *testing.T) {
	for _, tc := range []struct {
		in   Outcome
		want string
	}{
		{Outcome{Approved: true, Decision: DecisionUnavailableFailedOpen, Source: SourceEP, Reason: ReasonEPTimeout},
			`{"approved":true,"decision":"unavailable_failed_open","source":"ep","reason":"ep_timeout"}`},
		{Outcome{Decision: DecisionDenied, Source: SourceEP, Reason: ReasonEPDenied, Violations: []string{"v"}, RiskScore: "HIGH", EPProofHash: "ab"},
			`{"approved":false,"decision":"denied","source":"ep","reason":"ep_denied","violations":["v"],"riskScore":"HIGH","epProofHash":"ab"}`},
		{Outcome{Decision: DecisionDenied, Source: SourcePolicy, Reason: ReasonAgentDenied, Violations: []string{}},
			`{"approved":false,"decision":"denied","source":"policy","reason":"agent_denied"}`},
	} {
		b, err := json.Marshal(tc.in)
		if err != nil || string(b) != tc.want {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", tc.in, b, err, tc.want)
		}
	}
}

func TestNewEPClientRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  EPConfig
		want string
	}{
		{"not a URL", EPConfig{URL: "://x"}, "EP_GUARD_URL"},
		{"ftp scheme", EPConfig{URL: "ftp://127.0.0.1/ep"}, "EP_GUARD_URL"},
		{"no host", EPConfig{URL: "http:///ep/validate"}, "EP_GUARD_URL"},
		{"unknown mode", EPConfig{URL: "http://127.0.0.1/ep", Mode: "maybe"}, "fail mode"},
		{"negative timeout", EPConfig{URL: "http://127.0.0.1/ep", Timeout: -1}, "timeout"},
		{"negative cap", EPConfig{URL: "http://127.0.0.1/ep", MaxResponseBytes: -1}, "max response"},
		{"negative threshold", EPConfig{URL: "http://127.0.0.1/ep", BreakerThreshold: -1}, "threshold"},
		{"negative cooldown", EPConfig{URL: "http://127.0.0.1/ep", BreakerCooldown: -1}, "cooldown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewEPClient(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewEPClient error = %v, want one naming %q", err, tc.want)
			}
		})
	}
}
