package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/proof"
	"github.com/secureexec/secureexec/store"
)

// newEPHarness is a gateway whose IAM asks the EP served by ep, failing closed.
func newEPHarness(t *testing.T, ep http.HandlerFunc) *harness {
	t.Helper()
	srv := httptest.NewServer(ep)
	t.Cleanup(srv.Close)
	iam, err := identity.New(identity.Config{
		EP:     identity.EPConfig{URL: srv.URL + "/ep/validate", Mode: identity.FailClosed},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iam.Close() })
	h := newHarness(t)
	h.srv.iam = iam
	return h
}

// TestEPDenialWithNULIsStillAudited: EP is unauthenticated and its violations are untrusted
// text. A denial whose violation holds U+0000 must still be sealed as a denial and be storable,
// or the audit writer dead-letters it and GET /exec/jobs/{jobId} never finds it.
func TestEPDenialWithNULIsStillAudited(t *testing.T) {
	h := newEPHarness(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"valid":false,"risk_score":"HIGH","violations":["over\u0000limit"]}`)
	})

	w := h.do("POST", "/exec/simulate", `{"agentId":"alice","tool":{"name":"echo","args":{"text":"x"}}}`)
	if w.Code != 403 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	p := decode[problem](t, w)
	if p.Code != "iam_denied" || p.JobID == "" || p.ProofHash == "" {
		t.Fatalf("problem %+v", p)
	}
	e, err := h.audit.Get(context.Background(), p.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != statusDenied || e.IAMApproved {
		t.Errorf("a denial sealed as status %q, iamApproved %v", e.Status, e.IAMApproved)
	}
	if err := store.Validate(e); err != nil {
		t.Errorf("the denial's audit entry cannot be stored: %v", err)
	}
	if err := proof.Verify(e.Record, p.ProofHash); err != nil {
		t.Error(err)
	}
}

// EP down in fail-closed mode is a refusal for now, not a verdict: 503 iam_unavailable with
// Retry-After (a 403 told clients never to retry), still sealed and audited as a denial, and
// an answer EP actually gave ("no") stays a 403.
func TestEPUnavailableFailClosedIs503(t *testing.T) {
	h := newEPHarness(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "upstream down", http.StatusBadGateway)
	})

	w := h.do("POST", "/exec/simulate", `{"agentId":"alice","tool":{"name":"echo","args":{"text":"x"}}}`)
	p := decode[problem](t, w)
	if w.Code != 503 || p.Code != "iam_unavailable" || w.Header().Get("Retry-After") == "" || p.JobID == "" || p.ProofHash == "" {
		t.Fatalf("EP down, fail-closed: %d %v %s", w.Code, w.Header(), w.Body)
	}
	e, err := h.audit.Get(context.Background(), p.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != statusDenied || e.IAMApproved {
		t.Errorf("sealed as status %q, iamApproved %v; want a denial", e.Status, e.IAMApproved)
	}
}
