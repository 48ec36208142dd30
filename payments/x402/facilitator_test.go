package x402

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// fakeFacilitator is a facilitator over the dev chain that really settles (its own key sends
// transferWithAuthorization), and can be told to misbehave the ways a remote service does.
type fakeFacilitator struct {
	t      *testing.T
	rig    *recoveryRig
	sender *chain.Sender
	srv    *httptest.Server

	mu       sync.Mutex
	behavior string // "ok", "lose-answer", "refuse", "lie", "other-network", "down", "invalid"
	settles  int
	verifies int
}

func newFakeFacilitator(t *testing.T, rig *recoveryRig) *fakeFacilitator {
	t.Helper()
	key, err := crypto.HexToECDSA(rig.dev.Accounts()[4].PrivateKeyHex[2:])
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFacilitator{t: t, rig: rig, behavior: "ok"}
	if f.sender, err = chain.NewSender(rig.dev.Client(), key, rig.dev.ChainID(), chain.SenderOptions{}); err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeFacilitator) set(b string) { f.mu.Lock(); f.behavior = b; f.mu.Unlock() }

func (f *fakeFacilitator) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	behavior := f.behavior
	if r.URL.Path == "/settle" {
		f.settles++ // every /settle asked, answered or not
	}
	f.mu.Unlock()
	if behavior == "down" {
		http.Error(w, "upstream unavailable", http.StatusBadGateway)
		return
	}
	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	if r.URL.Path == "/supported" {
		reply(200, Supported{Kinds: []SupportedKind{{X402Version: 2, Scheme: "exact", Network: f.rig.net.CAIP2}}})
		return
	}
	var req struct {
		X402Version         int                 `json:"x402Version"`
		PaymentPayload      PaymentPayload      `json:"paymentPayload"`
		PaymentRequirements PaymentRequirements `json:"paymentRequirements"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil || req.X402Version != 2 || req.PaymentRequirements.Network != f.rig.net.CAIP2 {
		reply(400, map[string]any{"isValid": false, "invalidReason": "invalid_payload"})
		return
	}
	payer := req.PaymentPayload.Payload.Authorization.From
	if r.URL.Path == "/verify" {
		f.mu.Lock()
		f.verifies++
		f.mu.Unlock()
		if behavior == "invalid" {
			reply(400, VerifyResponse{IsValid: false, InvalidReason: "invalid_exact_evm_insufficient_balance", Payer: payer})
			return
		}
		reply(200, VerifyResponse{IsValid: true, Payer: payer})
		return
	}
	switch behavior {
	case "refuse":
		reply(200, SettlementResponse{Success: false, ErrorReason: ReasonTransactionSimulationFailed, Network: f.rig.net.CAIP2, Payer: payer})
		return
	case "lie":
		reply(200, SettlementResponse{Success: true, Transaction: common.Hash{1, 2, 3}.Hex(), Network: f.rig.net.CAIP2, Payer: payer})
		return
	case "other-network":
		reply(200, SettlementResponse{Success: true, Transaction: common.Hash{4, 5, 6}.Hex(), Network: "eip155:1", Payer: payer})
		return
	}
	f2, err := parseExact(&req.PaymentPayload.Payload)
	if err != nil {
		reply(400, SettlementResponse{ErrorReason: "invalid_payload"})
		return
	}
	data, err := chain.PackTransferWithAuthorization(chain.Authorization{From: f2.from, To: f2.to, Value: f2.value, ValidAfter: f2.validAfter,
		ValidBefore: f2.validBefore, Nonce: f2.nonce, Signature: f2.signature})
	if err != nil {
		f.t.Error(err)
		return
	}
	hash, err := f.sender.Send(r.Context(), f.rig.net.Asset, data)
	if err != nil {
		reply(200, SettlementResponse{ErrorReason: ReasonTransactionSimulationFailed, Network: f.rig.net.CAIP2, ErrorMessage: err.Error()})
		return
	}
	if _, err := f.sender.WaitReceipt(r.Context(), hash, 10*time.Millisecond); err != nil {
		reply(200, SettlementResponse{ErrorReason: ReasonSettlementPending, Transaction: hash.Hex(), Network: f.rig.net.CAIP2})
		return
	}
	if behavior == "lose-answer" {
		http.Error(w, "gateway timeout", http.StatusGatewayTimeout) // sent and mined, answer lost
		return
	}
	reply(200, SettlementResponse{Success: true, Transaction: hash.Hex(), Network: f.rig.net.CAIP2, Payer: payer})
}

// facilitatorRail is the rig's rail settling through f.
func (r *recoveryRig) facilitatorRail(t *testing.T, f *fakeFacilitator, now func() time.Time) (*Rail, *FacilitatorSettler, *Worker) {
	t.Helper()
	c, err := NewFacilitatorClient(f.srv.URL, FacilitatorOptions{SettleTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reader := NewRPCReader(r.dev.Client(), rigReadTimeout)
	s := NewFacilitatorSettler(FacilitatorSettlerConfig{Token: r.net.Asset, ReceiptWait: time.Second, Now: now}, r.book, c, r.dev.Client(), reader)
	rail, err := NewRail(Config{Network: r.net, PayTo: r.payTo, Facilitator: c}, reader, r.book, r.book, s)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWorker(WorkerConfig{Network: r.net, StaleAfter: time.Nanosecond, Facilitator: s}, r.book, nil, nil)
	return rail, s, w
}

func (r *recoveryRig) payment(t *testing.T, a *payments.Authorization) ledger.Payment {
	t.Helper()
	p, err := r.book.Get(context.Background(), uuid.MustParse(a.Reference))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFacilitatorSettlement(t *testing.T) {
	ctx := context.Background()
	rig := newRecoveryRig(t)
	fac := newFakeFacilitator(t, rig)
	clock := struct {
		sync.Mutex
		now time.Time
	}{now: time.Now()}
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.now }
	rail, _, worker := rig.facilitatorRail(t, fac, now)

	t.Run("settled by the facilitator, checked on our node", func(t *testing.T) {
		before := rig.balance(t)
		a := rig.verify(t, rail)
		s, err := rail.Settle(ctx, a)
		if err != nil || s.Status != payments.SettlementSettled || s.TxHash == "" {
			t.Fatalf("Settle = %+v, %v", s, err)
		}
		if got := new(big.Int).Sub(rig.balance(t), before); got.Int64() != 10_000 {
			t.Fatalf("payTo gained %v, want 10000", got)
		}
		p := rig.payment(t, a)
		if p.Status != ledger.StatusSettled || p.TxHash != s.TxHash {
			t.Fatalf("ledger: %s %s, want settled %s", p.Status, p.TxHash, s.TxHash)
		}
		tx, _, err := rig.dev.Client().TransactionByHash(ctx, common.HexToHash(s.TxHash))
		if err != nil {
			t.Fatal(err)
		}
		if from, _ := typesSender(tx); from != fac.sender.Address() {
			t.Fatalf("the transaction was sent by %s, want the facilitator %s", from.Hex(), fac.sender.Address().Hex())
		}
	})

	t.Run("the facilitator refuses at /verify: a 402 with its reason, nothing claimed", func(t *testing.T) {
		hreq, price := rig.request(t, rail)
		fac.set("invalid")
		_, err := rail.Verify(ctx, hreq, price)
		fac.set("ok")
		wantReason(t, err, ReasonInsufficientBalance)
		if _, err := rail.Verify(ctx, hreq, price); err != nil {
			t.Fatalf("the nonce was claimed by a refused payment: %v", err)
		}
	})

	t.Run("the facilitator is down at /verify: 503, and the same payment works once it is back", func(t *testing.T) {
		hreq, price := rig.request(t, rail)
		fac.set("down")
		if _, err := rail.Verify(ctx, hreq, price); !errors.Is(err, payments.ErrUnavailable) || !errors.Is(err, ErrFacilitator) {
			t.Fatalf("Verify with the facilitator down = %v, want ErrUnavailable", err)
		}
		fac.set("ok")
		if _, err := rail.Verify(ctx, hreq, price); err != nil {
			t.Fatalf("the same payment after the facilitator came back: %v", err)
		}
	})

	t.Run("refused at /settle with nothing sent: not charged, a 402 with the reason", func(t *testing.T) {
		before := rig.balance(t)
		a := rig.verify(t, rail)
		fac.set("refuse")
		defer fac.set("ok")
		_, err := rail.Settle(ctx, a)
		wantReason(t, err, ReasonTransactionSimulationFailed)
		if p := rig.payment(t, a); p.Status != ledger.StatusNotCharged || p.ErrorReason != ReasonTransactionSimulationFailed {
			t.Fatalf("ledger: %s %q", p.Status, p.ErrorReason)
		}
		if rig.balance(t).Cmp(before) != 0 {
			t.Fatal("money moved on a refused settlement")
		}
	})

	t.Run("sent and mined, answer lost: pending, then recovery finds the transaction on chain", func(t *testing.T) {
		before := rig.balance(t)
		a := rig.verify(t, rail)
		fac.set("lose-answer")
		s, err := rail.Settle(ctx, a)
		fac.set("ok")
		if err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("Settle = %+v, %v, want pending", s, err)
		}
		if st := rig.status(t, a); st != ledger.StatusSettling {
			t.Fatalf("status %s, want settling", st)
		}
		settlesBefore := fac.count()
		if err := worker.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		p := rig.payment(t, a)
		if p.Status != ledger.StatusSettled || p.TxHash == "" {
			t.Fatalf("after recovery: %s %q, want settled with the transaction", p.Status, p.TxHash)
		}
		if fac.count() != settlesBefore {
			t.Fatal("recovery asked the facilitator again although the chain showed the payment settled")
		}
		if got := new(big.Int).Sub(rig.balance(t), before); got.Int64() != 10_000 {
			t.Fatalf("payTo gained %v, want exactly one payment", got)
		}
	})

	t.Run("never reached the facilitator: recovery asks it again, and it settles once", func(t *testing.T) {
		before := rig.balance(t)
		a := rig.verify(t, rail)
		fac.set("down")
		s, err := rail.Settle(ctx, a)
		if err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("Settle = %+v, %v, want pending", s, err)
		}
		fac.set("ok")
		for range 2 { // a second round finds nothing more to do
			if err := worker.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if p := rig.payment(t, a); p.Status != ledger.StatusSettled {
			t.Fatalf("after recovery: %s, want settled", p.Status)
		}
		if got := new(big.Int).Sub(rig.balance(t), before); got.Int64() != 10_000 {
			t.Fatalf("payTo gained %v, want exactly one payment", got)
		}
	})

	t.Run("a success on another network is no answer: recovery asks again, and it settles once", func(t *testing.T) {
		before := rig.balance(t)
		a := rig.verify(t, rail)
		fac.set("other-network")
		s, err := rail.Settle(ctx, a)
		fac.set("ok")
		if err != nil || s.Status != payments.SettlementPending {
			t.Fatalf("Settle = %+v, %v, want pending", s, err)
		}
		if p := rig.payment(t, a); p.Status != ledger.StatusSettling || p.TxHash != "" {
			t.Fatalf("ledger: %s %q, want settling with no transaction", p.Status, p.TxHash)
		}
		if err := worker.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if p := rig.payment(t, a); p.Status != ledger.StatusSettled {
			t.Fatalf("after recovery: %s %q, want settled", p.Status, p.TxHash)
		}
		if got := new(big.Int).Sub(rig.balance(t), before); got.Int64() != 10_000 {
			t.Fatalf("payTo gained %v, want exactly one payment", got)
		}
	})

	t.Run("a facilitator that reports a transaction that never lands: pending, failed after expiry", func(t *testing.T) {
		a := rig.verify(t, rail)
		fac.set("lie")
		s, err := rail.Settle(ctx, a)
		fac.set("ok")
		if err != nil || s.Status != payments.SettlementPending || s.TxHash == "" {
			t.Fatalf("Settle = %+v, %v, want pending with the claimed transaction", s, err)
		}
		before := rig.payment(t, a)
		if err := worker.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if p := rig.payment(t, a); p.Status != ledger.StatusPending || p.Attempts != before.Attempts+1 || !p.UpdatedAt.After(before.UpdatedAt) {
			// Unrecorded, the payment stays stale, and every tick of the worker waits ReceiptWait
			// for the receipt again.
			t.Fatalf("before expiry: %s, attempts %d -> %d; want pending, the look recorded", p.Status, before.Attempts, p.Attempts)
		}
		clock.Lock()
		clock.now = clock.now.Add(2 * time.Hour) // past validBefore, on our clock and on the chain's
		clock.Unlock()
		// The last subtest: the chain's time does not go back.
		if err := rig.dev.AdjustTime(2 * time.Hour); err != nil {
			t.Fatal(err)
		}
		defer func() { clock.Lock(); clock.now = time.Now(); clock.Unlock() }()
		if err := worker.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if p := rig.payment(t, a); p.Status != ledger.StatusFailed || !strings.Contains(p.ErrorReason, "never landed") {
			t.Fatalf("after expiry: %s %q", p.Status, p.ErrorReason)
		}
	})
}

func (f *fakeFacilitator) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.settles }

// TestFacilitatorClientAnswers: what a facilitator answers is network input; only the
// protocol's answers are believed, everything else is a fault (unknown outcome), never a
// refusal or a success the gateway made up.
func TestFacilitatorClientAnswers(t *testing.T) {
	ctx := context.Background()
	tx := "0x" + strings.Repeat("ab", 32)
	payer := "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
	// request is what the gateway asks about: a payment from payer on eip155:8453.
	request := []byte(`{"x402Version":2,"paymentPayload":{"x402Version":2,"payload":{"authorization":{"from":"` + payer + `"}}},` +
		`"paymentRequirements":{"scheme":"exact","network":"eip155:8453"}}`)
	for _, tc := range []struct {
		name    string
		status  int
		body    string
		settle  bool
		fault   bool
		success bool
		reason  string
	}{
		{name: "verify ok", status: 200, body: `{"isValid":true,"payer":"` + payer + `"}`},
		{name: "verify ok, payer in lower case", status: 200, body: `{"isValid":true,"payer":"` + strings.ToLower(payer) + `"}`},
		{name: "verify ok without payer", status: 200, body: `{"isValid":true}`},
		{name: "verify valid for another payer", status: 200, body: `{"isValid":true,"payer":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8"}`, fault: true},
		{name: "verify payer not an address", status: 200, body: `{"isValid":true,"payer":"0x1"}`, fault: true},
		{name: "verify refusal in a 400", status: 400, body: `{"isValid":false,"invalidReason":"invalid_exact_evm_signature"}`, reason: "invalid_exact_evm_signature"},
		{name: "verify refusal without a reason", status: 200, body: `{"isValid":false}`, fault: true},
		{name: "verify failed inside the facilitator", status: 200, body: `{"isValid":false,"invalidReason":"unexpected_verify_error"}`, fault: true},
		{name: "verify reason not a code", status: 200, body: `{"isValid":false,"invalidReason":"<script>"}`, fault: true},
		{name: "verify isValid true in a 400", status: 400, body: `{"isValid":true}`, fault: true},
		{name: "verify 500", status: 500, body: `{"isValid":true}`, fault: true},
		{name: "verify rate limited", status: 429, body: `{"isValid":false,"invalidReason":"rate_limited"}`, fault: true},
		{name: "verify request timeout", status: 408, body: `{"isValid":false,"invalidReason":"timeout"}`, fault: true},
		{name: "verify redirect", status: 302, body: ``, fault: true},
		{name: "verify not JSON", status: 200, body: `<html>`, fault: true},
		{name: "verify array", status: 200, body: `[]`, fault: true},
		{name: "verify trailing data", status: 200, body: `{"isValid":true}{}`, fault: true},
		{name: "verify oversized", status: 200, body: `{"isValid":true,"x":"` + strings.Repeat("a", maxFacilitatorBody) + `"}`, fault: true},
		{name: "settle ok", status: 200, body: `{"success":true,"transaction":"` + tx + `","network":"eip155:8453"}`, settle: true, success: true},
		{name: "settle success on another network", status: 200, body: `{"success":true,"transaction":"` + tx + `","network":"eip155:1"}`, settle: true, fault: true},
		{name: "settle success without network", status: 200, body: `{"success":true,"transaction":"` + tx + `"}`, settle: true, fault: true},
		{name: "settle pending on another network", status: 200, body: `{"success":false,"errorReason":"settlement_pending","transaction":"` + tx + `","network":"eip155:1"}`, settle: true, fault: true},
		{name: "settle refusal about another network", status: 200, body: `{"success":false,"errorReason":"invalid_exact_evm_insufficient_balance","network":"eip155:1"}`, settle: true, fault: true},
		{name: "settle success without transaction", status: 200, body: `{"success":true,"transaction":""}`, settle: true, fault: true},
		{name: "settle bad transaction", status: 200, body: `{"success":true,"transaction":"0x12"}`, settle: true, fault: true},
		{name: "settle zero transaction", status: 200, body: `{"success":true,"transaction":"0x` + strings.Repeat("00", 32) + `","network":"eip155:8453"}`, settle: true, fault: true},
		{name: "settle pending", status: 200, body: `{"success":false,"errorReason":"settlement_pending","transaction":"` + tx + `","network":"eip155:8453"}`, settle: true, reason: "settlement_pending"},
		{name: "settle refusal", status: 400, body: `{"success":false,"errorReason":"invalid_exact_evm_nonce_already_used","transaction":""}`, settle: true, reason: "invalid_exact_evm_nonce_already_used"},
		{name: "settle success in a 400", status: 400, body: `{"success":true,"transaction":"` + tx + `"}`, settle: true, fault: true},
		{name: "settle 503", status: 503, body: ``, settle: true, fault: true},
		{name: "settle rate limited", status: 429, body: `{"success":false,"errorReason":"rate_limited","network":"eip155:8453"}`, settle: true, fault: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.status == 302 {
					http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusFound)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			c, err := NewFacilitatorClient(srv.URL, FacilitatorOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var ok bool
			var reason string
			if tc.settle {
				var res SettlementResponse
				res, err = c.Settle(ctx, request)
				ok, reason = res.Success, res.ErrorReason
			} else {
				var res VerifyResponse
				res, err = c.Verify(ctx, request)
				ok, reason = res.IsValid, res.InvalidReason
			}
			if tc.fault {
				if !errors.Is(err, ErrFacilitator) || !errors.Is(err, payments.ErrUnavailable) {
					t.Fatalf("err = %v, want a facilitator fault", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantOK := tc.success || (!tc.settle && tc.reason == "")
			if ok != wantOK || reason != tc.reason {
				t.Fatalf("ok=%v reason=%q, want %v %q", ok, reason, wantOK, tc.reason)
			}
		})
	}

	t.Run("a facilitator that does not answer in time is a fault", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(release)
		c, _ := NewFacilitatorClient(srv.URL, FacilitatorOptions{SettleTimeout: 200 * time.Millisecond})
		if _, err := c.Settle(ctx, []byte(`{}`)); !errors.Is(err, ErrFacilitator) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("an answer whose body never ends is a fault once the deadline passes", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `{"isValid":true,"payer":"`)
			w.(http.Flusher).Flush()
			<-r.Context().Done() // the rest never comes
		}))
		defer srv.Close()
		c, _ := NewFacilitatorClient(srv.URL, FacilitatorOptions{VerifyTimeout: 200 * time.Millisecond})
		if _, err := c.Verify(ctx, request); !errors.Is(err, ErrFacilitator) || !errors.Is(err, payments.ErrUnavailable) {
			t.Fatalf("err = %v", err)
		}
	})

	for _, status := range []int{http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(fmt.Sprintf("a %d to a loopback address is not followed", status), func(t *testing.T) {
			followed := make(chan struct{}, 1)
			elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed <- struct{}{} }))
			defer elsewhere.Close()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, elsewhere.URL+"/settle", status)
			}))
			defer srv.Close()
			c, _ := NewFacilitatorClient(srv.URL, FacilitatorOptions{})
			if _, err := c.Settle(ctx, request); !errors.Is(err, ErrFacilitator) {
				t.Fatalf("err = %v", err)
			}
			select {
			case <-followed:
				t.Fatal("the /settle was re-sent where the redirect pointed")
			default:
			}
		})
	}

	t.Run("an unreachable facilitator's address is not in the error the payer sees", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		base := srv.URL + "/key-0123456789abcdef"
		host := strings.TrimPrefix(srv.URL, "http://")
		srv.Close() // connection refused from now on
		c, err := NewFacilitatorClient(base, FacilitatorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, verr := c.Verify(ctx, request)
		_, serr := c.Settle(ctx, request)
		for _, err := range []error{verr, serr} {
			if !errors.Is(err, ErrFacilitator) || !errors.Is(err, payments.ErrUnavailable) {
				t.Fatalf("err = %v, want a facilitator fault", err)
			}
			if msg := err.Error(); strings.Contains(msg, "key-0123456789abcdef") || strings.Contains(msg, host) {
				t.Fatalf("the error, which the 503 shows, names the facilitator's URL or address: %s", msg)
			}
		}
	})

	for _, bad := range []string{"ftp://x", "http://", "http://u:p@h", "http://h/?q=1", "://"} {
		if _, err := NewFacilitatorClient(bad, FacilitatorOptions{}); err == nil {
			t.Errorf("NewFacilitatorClient(%q) accepted", bad)
		}
	}
}

func FuzzFacilitatorAnswer(f *testing.F) {
	f.Add([]byte(`{"isValid":false,"invalidReason":"invalid_exact_evm_signature"}`))
	f.Add([]byte(`{"success":true,"transaction":"0x` + strings.Repeat("ab", 32) + `"}`))
	f.Add([]byte(`{"success":false,"errorReason":"settlement_pending","errorMessage":"\u0000\ud800"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var v VerifyResponse
		if decodeFacilitatorJSON(raw, &v) == nil && v.check() == nil {
			if !v.IsValid && !isReasonCode(v.InvalidReason) {
				t.Fatalf("a refusal without a reason code passed: %q", v.InvalidReason)
			}
			if len(v.InvalidMessage) > maxFacilitatorText {
				t.Fatal("message not clipped")
			}
		}
		var s SettlementResponse
		if decodeFacilitatorJSON(raw, &s) == nil && checkSettlementAnswer(&s) == nil {
			if s.Success && s.Transaction == "" {
				t.Fatal("success without a transaction passed")
			}
			if s.Transaction != "" {
				if _, ok := parseBytes32(s.Transaction); !ok {
					t.Fatalf("transaction %q passed", s.Transaction)
				}
			}
		}
	})
}

func typesSender(tx *types.Transaction) (common.Address, error) {
	return types.Sender(types.LatestSignerForChainID(tx.ChainId()), tx)
}

// TestFacilitatorSettlementWaitsForConfirmations: with Confirmations set, the facilitator's
// mined transaction does not settle the payment until that many blocks are on top of it: the
// call is answered pending, and recovery records it settled once the chain has grown.
func TestFacilitatorSettlementWaitsForConfirmations(t *testing.T) {
	ctx := context.Background()
	rig := newRecoveryRig(t)
	fac := newFakeFacilitator(t, rig)
	c, err := NewFacilitatorClient(fac.srv.URL, FacilitatorOptions{SettleTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reader := NewRPCReader(rig.dev.Client(), rigReadTimeout)
	s := NewFacilitatorSettler(FacilitatorSettlerConfig{Token: rig.net.Asset, ReceiptWait: 500 * time.Millisecond, Confirmations: 2},
		rig.book, c, rig.dev.Client(), reader)
	rail, err := NewRail(Config{Network: rig.net, PayTo: rig.payTo, Facilitator: c}, reader, rig.book, rig.book, s)
	if err != nil {
		t.Fatal(err)
	}
	worker := NewWorker(WorkerConfig{Network: rig.net, StaleAfter: time.Nanosecond, Facilitator: s}, rig.book, nil, nil)

	a := rig.verify(t, rail)
	st, err := rail.Settle(ctx, a)
	if err != nil || st.Status != payments.SettlementPending || st.TxHash == "" {
		t.Fatalf("Settle with the transaction at depth 0 = %+v, %v; want pending with its transaction", st, err)
	}
	if err := worker.Reconcile(ctx); err != nil && !errors.Is(err, errUseUnconfirmed) {
		t.Fatal(err)
	}
	if p := rig.payment(t, a); p.Status != ledger.StatusPending {
		t.Fatalf("still at depth 0 after recovery: %s; want pending", p.Status)
	}
	rig.dev.Commit()
	rig.dev.Commit()
	if err := worker.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if p := rig.payment(t, a); p.Status != ledger.StatusSettled || p.TxHash != st.TxHash {
		t.Fatalf("two blocks on top: %s by %s; want settled by %s", p.Status, p.TxHash, st.TxHash)
	}
}

// TestFacilitatorExpiryIsTheChainsNotOurClock: a payment whose /settle answer was lost while
// the facilitator's transaction waits in the pool is not closed as never charged because the
// gateway's clock (or a node that lags) says its authorization expired: only a chain whose
// head is past validBefore can no longer include the transaction. When it lands, recovery
// records it settled.
func TestFacilitatorExpiryIsTheChainsNotOurClock(t *testing.T) {
	ctx := context.Background()
	rig := newRecoveryRig(t, chain.DevChainOptions{}) // no auto-mining: the transaction waits in the pool
	fac := newFakeFacilitator(t, rig)
	c, err := NewFacilitatorClient(fac.srv.URL, FacilitatorOptions{SettleTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	reader := NewRPCReader(rig.dev.Client(), rigReadTimeout)
	s := NewFacilitatorSettler(FacilitatorSettlerConfig{Token: rig.net.Asset, ReceiptWait: 100 * time.Millisecond, Now: now},
		rig.book, c, rig.dev.Client(), reader)
	rail, err := NewRail(Config{Network: rig.net, PayTo: rig.payTo, Facilitator: c}, reader, rig.book, rig.book, s)
	if err != nil {
		t.Fatal(err)
	}
	worker := NewWorker(WorkerConfig{Network: rig.net, StaleAfter: time.Nanosecond, Facilitator: s}, rig.book, nil, nil)

	before := rig.balance(t)
	a := rig.verify(t, rail) // valid for an hour
	// The facilitator sends the transaction and waits for a receipt that does not come in our
	// /settle's time: the answer is lost, the transaction is in the pool.
	if st, err := rail.Settle(ctx, a); err != nil || st.Status != payments.SettlementPending {
		t.Fatalf("Settle = %+v, %v; want pending", st, err)
	}
	fac.set("down")
	clock.Add(int64(2 * time.Hour)) // our clock says validBefore has passed; the chain's does not
	if err := worker.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if p := rig.payment(t, a); p.Status != ledger.StatusSettling {
		t.Fatalf("with the chain before validBefore: %s %q; want still settling", p.Status, p.ErrorReason)
	}
	rig.dev.Commit() // the facilitator's transaction lands, before validBefore on chain
	if got := new(big.Int).Sub(rig.balance(t), before); got.Int64() != 10_000 {
		t.Fatalf("payTo gained %v, want the payment", got)
	}
	if err := worker.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if p := rig.payment(t, a); p.Status != ledger.StatusSettled || p.TxHash == "" {
		t.Fatalf("the money moved, and the payment is %s %q", p.Status, p.TxHash)
	}
}

// TestFacilitatorRecoveryAsksOncePerStaleAfter: while the facilitator cannot answer, recovery
// asks it again about a settling payment once per pass over stale payments, and records the
// attempt, which makes the payment young again: the next ask waits StaleAfter, instead of one
// /settle per payment on every tick of the worker (four a second) at a facilitator that is
// down or rate-limiting.
func TestFacilitatorRecoveryAsksOncePerStaleAfter(t *testing.T) {
	ctx := context.Background()
	rig := newRecoveryRig(t)
	fac := newFakeFacilitator(t, rig)
	rail, _, worker := rig.facilitatorRail(t, fac, time.Now)
	a := rig.verify(t, rail)
	fac.set("down")
	if st, err := rail.Settle(ctx, a); err != nil || st.Status != payments.SettlementPending {
		t.Fatalf("Settle = %+v, %v; want pending", st, err)
	}
	before := rig.payment(t, a)
	asked := fac.count()
	if err := worker.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	after := rig.payment(t, a)
	if after.Status != ledger.StatusSettling || fac.count() != asked+1 {
		t.Fatalf("recovery: %s, asked %d more times; want settling, asked once", after.Status, fac.count()-asked)
	}
	if after.Attempts != before.Attempts+1 || !after.UpdatedAt.After(before.UpdatedAt) {
		t.Fatalf("attempts %d -> %d, updated %s -> %s: the ask was not recorded, and the next tick asks again",
			before.Attempts, after.Attempts, before.UpdatedAt, after.UpdatedAt)
	}
}
