package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// flakyIdem is the in-process store whose writes fail as unavailable while down is set, like
// Postgres going away for a moment; every write that reaches the store is named on wrote.
type flakyIdem struct {
	*ledger.MemoryIdempotency
	down  atomic.Bool
	wrote chan string
}

func newFlakyIdem() *flakyIdem {
	return &flakyIdem{MemoryIdempotency: ledger.NewMemoryIdempotency(), wrote: make(chan string, 16)}
}

func (f *flakyIdem) Complete(ctx context.Context, key string, resp ledger.Response) error {
	if f.down.Load() {
		return fmt.Errorf("complete %s: %w", key, payments.ErrUnavailable)
	}
	err := f.MemoryIdempotency.Complete(ctx, key, resp)
	f.wrote <- "complete " + key
	return err
}

func (f *flakyIdem) Abandon(ctx context.Context, key string) error {
	if f.down.Load() {
		return fmt.Errorf("abandon %s: %w", key, payments.ErrUnavailable)
	}
	err := f.MemoryIdempotency.Abandon(ctx, key)
	f.wrote <- "abandon " + key
	return err
}

// waitWrite waits for the store to take the write named want.
func (f *flakyIdem) waitWrite(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-f.wrote:
		if got != want {
			t.Fatalf("the store took %q, want %q", got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the store never took %q", want)
	}
}

// A paid call whose response could not be stored (the store away when the call ended) must
// be neither processed again nor refused as in flight for the store's InFlightTTL: the resend
// is answered with the response the call gave, and the store gets it once it is back.
func TestPaymentIdentifierOutlivesAStoreOutageAtComplete(t *testing.T) {
	h := newHarness(t)
	defer h.srv.Close()
	h.srv.pay.rails = []payments.Rail{idemRail{h.rail}}
	idem := newFlakyIdem()
	h.srv.idem = idem
	call := `{"tool":{"name":"echo","args":{"text":"x"}}}`
	pay := []string{"Authorization", "Fake good", "X-Pay-Id", "pay_1"}

	idem.down.Store(true)
	first := h.do("POST", "/exec/tool", call, pay...)
	if first.Code != 200 {
		t.Fatalf("first: %d %s", first.Code, first.Body)
	}
	again := h.do("POST", "/exec/tool", call, pay...)
	if again.Code != 200 || again.Body.String() != first.Body.String() || again.Header().Get("X-Idempotent-Replay") != "true" {
		t.Fatalf("resend while the store is away: %d %v %s", again.Code, again.Header(), again.Body)
	}
	if again.Header().Get("X-Fake-Receipt") != "tx-1" {
		t.Fatalf("the replay lacks the settlement's header: %v", again.Header())
	}
	if w := h.do("POST", "/exec/tool", call, "Authorization", "Fake other", "X-Pay-Id", "pay_1"); w.Code != 409 || decode[problem](t, w).Code != "payment_identifier_conflict" {
		t.Fatalf("another payment under the held identifier: %d %s", w.Code, w.Body)
	}

	idem.down.Store(false)
	idem.waitWrite(t, "complete fake:pay_1")
	stored, err := idem.MemoryIdempotency.Begin(context.Background(), "fake:pay_1", "Fake good")
	if err != nil || !stored.Found || string(stored.Response.Body) != first.Body.String() {
		t.Fatalf("the store has %+v, %v; want the first response", stored, err)
	}
	if w := h.do("POST", "/exec/tool", call, pay...); w.Code != 200 || w.Body.String() != first.Body.String() {
		t.Fatalf("resend once the store is back: %d %s", w.Code, w.Body)
	}
	if len(h.rail.verified) != 1 || len(h.rail.settled) != 1 {
		t.Fatalf("verified %v settled %v: the call was processed again", h.rail.verified, h.rail.settled)
	}
}

// A refused payment frees its identifier for the corrected retry; the store being away at that
// moment must not keep the identifier in flight (409) until the store's InFlightTTL.
func TestPaymentIdentifierOutlivesAStoreOutageAtAbandon(t *testing.T) {
	h := newHarness(t)
	defer h.srv.Close()
	h.srv.pay.rails = []payments.Rail{idemRail{h.rail}}
	idem := newFlakyIdem()
	h.srv.idem = idem
	call := `{"tool":{"name":"echo","args":{"text":"x"}}}`
	pay := []string{"Authorization", "Fake bad", "X-Pay-Id", "pay_2"}

	idem.down.Store(true)
	if w := h.do("POST", "/exec/tool", call, pay...); w.Code != 402 {
		t.Fatalf("refused: %d %s", w.Code, w.Body)
	}
	idem.down.Store(false)
	idem.waitWrite(t, "abandon fake:pay_2")
	if w := h.do("POST", "/exec/tool", call, pay...); w.Code != 402 || w.Header().Get("X-Idempotent-Replay") != "" {
		t.Fatalf("resend once the store is back: %d %s", w.Code, w.Body)
	}
	if got := len(h.rail.refused); got != 2 {
		t.Fatalf("the rail refused %d payments, want both sends", got)
	}
}

// bigTool answers with a string of n bytes.
type bigTool struct{ n int }

func (bigTool) Name() string            { return "big" }
func (bigTool) Description() string     { return "returns a large output" }
func (bigTool) Schema() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (b bigTool) Simulate(context.Context, json.RawMessage) (any, error) {
	return strings.Repeat("a", b.n), nil
}
func (b bigTool) Run(ctx context.Context, a json.RawMessage) (any, error) { return b.Simulate(ctx, a) }

// A paid call whose response is too large to keep for replay must still keep its identifier:
// freed, the resend was processed again (a second verification, which a real rail answers
// with 402 nonce-already-used, inviting the client to pay twice). The resend is told instead
// that the call was answered, with its job and proof, and the settlement's headers.
func TestPaymentIdentifierOfATooLargeResponseIsNotProcessedAgain(t *testing.T) {
	lim := exec.DefaultLimits
	lim.MaxTimeout = 200 * time.Millisecond
	h := newHarnessWith(t, lim, bigTool{n: lim.MaxOutputBytes - 16})
	defer h.srv.Close()
	h.srv.pay.rails = []payments.Rail{idemRail{h.rail}}
	h.srv.idem = ledger.NewMemoryIdempotency()
	call := `{"tool":{"name":"big","args":{}}}`
	pay := []string{"Authorization", "Fake good", "X-Pay-Id", "pay_3"}

	first := h.do("POST", "/exec/tool", call, pay...)
	if first.Code != 200 || first.Body.Len() <= maxReplayBody {
		t.Fatalf("first: %d, %d bytes; want 200 and more than %d", first.Code, first.Body.Len(), maxReplayBody)
	}
	answered := decode[execResponse](t, first)
	again := h.do("POST", "/exec/tool", call, pay...)
	if len(h.rail.verified) != 1 || len(h.rail.settled) != 1 {
		t.Fatalf("verified %v settled %v: the resend was processed again (%d %s)", h.rail.verified, h.rail.settled, again.Code, again.Body)
	}
	p := decode[problem](t, again)
	if again.Code != 409 || p.Code != "payment_identifier_response_too_large" || p.JobID != answered.JobID || p.ProofHash != answered.ProofHash {
		t.Fatalf("resend: %d %s", again.Code, again.Body)
	}
	if again.Header().Get("X-Fake-Receipt") != "tx-1" || again.Header().Get("X-Idempotent-Replay") != "true" {
		t.Fatalf("resend's headers %v: want the settlement's, marked as a replay", again.Header())
	}
}

// A client that hangs up while its paid call runs, and resends the same payment under the same
// identifier (what the identifier is for), gets the call's result: the call runs to its end
// (its own deadline still bounds it), is settled once, and its answer is stored for the resend.
// Cancelling it with the client's context stored a "cancelled" answer under the identifier for
// good, and the payer had to pay again under another one.
func TestPaymentIdentifierCallOutlivesTheClientsHangUp(t *testing.T) {
	gate := gateTool{started: make(chan struct{}, 1), open: make(chan struct{})}
	h := newHarnessWith(t, exec.Limits{MaxConcurrent: 2, MaxFreeConcurrent: 1, QueueWait: time.Second, MaxTimeout: 30 * time.Second}, gate)
	defer h.srv.Close()
	h.srv.pay.rails = []payments.Rail{idemRail{h.rail}}
	h.srv.idem = ledger.NewMemoryIdempotency()
	call := `{"tool":{"name":"gate","args":{}}}`

	reqCtx, hangUp := context.WithCancel(context.Background())
	defer hangUp()
	req := httptest.NewRequestWithContext(reqCtx, "POST", "/exec/tool", strings.NewReader(call))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Fake good")
	req.Header.Set("X-Pay-Id", "pay_hangup_1")
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		w := httptest.NewRecorder()
		h.srv.Handler().ServeHTTP(w, req)
		first <- w
	}()
	<-gate.started
	hangUp()
	// The tool sees no cancellation: it returns once its gate opens.
	time.Sleep(50 * time.Millisecond) // give a cancellation, if any, the time to arrive
	close(gate.open)
	if w := <-first; w.Code != 200 || decode[execResponse](t, w).Status != exec.StatusCompleted {
		t.Fatalf("the call whose client hung up: %d %s", w.Code, w.Body)
	}
	again := h.do("POST", "/exec/tool", call, "Authorization", "Fake good", "X-Pay-Id", "pay_hangup_1")
	if again.Code != 200 || again.Header().Get("X-Idempotent-Replay") != "true" || decode[execResponse](t, again).Status != exec.StatusCompleted {
		t.Fatalf("the resend: %d %v %s", again.Code, again.Header(), again.Body)
	}
	if len(h.rail.settled) != 1 || len(h.rail.voided) != 0 || len(h.rail.verified) != 1 {
		t.Fatalf("verified %v, settled %v, voided %v: want one verify and one settlement", h.rail.verified, h.rail.settled, h.rail.voided)
	}
}
