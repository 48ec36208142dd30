package client

import (
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/x402"
	"github.com/secureexec/secureexec/proof"
)

func jsonParseCall() Call {
	return Call{AgentID: "agent-7", Tool: "json_parse", Args: json.RawMessage(`{"data":{"k":"v"}}`)}
}

// offerOn is an offer entry for price on n paying payTo anvil #1, edited by opts.
func offerOn(n x402.Network, price uint64, edit func(*x402.PaymentRequirements)) x402.PaymentRequirements {
	r := x402.Requirements(n, payments.Price{Amount: price}, common.HexToAddress(payToHex), time.Minute)
	if edit != nil {
		edit(&r)
	}
	return r
}

func withExtra(key, jsonValue string) func(*x402.PaymentRequirements) {
	return func(r *x402.PaymentRequirements) {
		if r.Extra.Other == nil {
			r.Extra.Other = map[string]json.RawMessage{}
		}
		r.Extra.Other[key] = json.RawMessage(jsonValue)
	}
}

func TestExecPaysOnceAndGetsTheResult(t *testing.T) {
	lowerPayTo := func(r *x402.PaymentRequirements) { r.PayTo = strings.ToLower(r.PayTo) }
	for _, tc := range []struct {
		name      string
		accepts   []x402.PaymentRequirements
		declareID bool
		want      int // index of the entry that must be paid
	}{
		{name: "one v2 offer", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, nil)}},
		{name: "payment-identifier declared: the id is echoed", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, nil)}, declareID: true},
		{name: "unsupported offers are skipped", accepts: []x402.PaymentRequirements{
			offerOn(localToken, testPrice, withExtra("assetTransferMethod", `"permit2"`)),
			offerOn(localToken, testPrice, func(r *x402.PaymentRequirements) { r.Network = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp" }),
			offerOn(localToken, testPrice, func(r *x402.PaymentRequirements) { r.Scheme = "upto" }),
			offerOn(localToken, testPrice, nil),
		}, want: 3},
		{name: "the authorization flow is preferred to upfront", accepts: []x402.PaymentRequirements{
			offerOn(localToken, 2*testPrice, withExtra("paymentFlow", `"upfront"`)),
			offerOn(localToken, testPrice, withExtra("paymentFlow", `"authorization"`)),
		}, want: 1},
		{name: "a lower-case payTo is signed checksummed and echoed verbatim", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, lowerPayTo)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, func(f *fakeGateway) { f.accepts, f.declareID = tc.accepts, tc.declareID })
			c := newTestClient(t, f)
			res, err := c.Exec(context.Background(), jsonParseCall())
			if err != nil {
				t.Fatalf("Exec: %v", err)
			}
			offered := tc.accepts[tc.want]
			seen := f.seen()
			if len(seen) != 2 {
				t.Fatalf("%d requests, want 2 (the call, then one paid retry)", len(seen))
			}
			if x402.HasCredential(seen[0].header) {
				t.Error("the first request carried a payment")
			}
			sig := seen[1].header.Get(x402.HeaderPaymentSignature)
			if sig == "" {
				t.Fatal("the retry carries no PAYMENT-SIGNATURE")
			}
			if string(seen[0].body) != string(seen[1].body) || seen[0].header.Get(HeaderRequestID) != seen[1].header.Get(HeaderRequestID) {
				t.Error("the retry is not the same request (body or X-Request-ID differ)")
			}

			// What the gateway's verifier accepted.
			verified, payloads := f.paid()
			if len(verified) != 1 {
				t.Fatalf("%d payments verified, want 1", len(verified))
			}
			v, p := verified[0], payloads[0]
			if v.Payer != common.HexToAddress(payerHex) || v.To != common.HexToAddress(payToHex) {
				t.Errorf("from %s to %s", v.Payer.Hex(), v.To.Hex())
			}
			if v.Value.String() != offered.Amount || v.ValidAfter.Sign() != 0 {
				t.Errorf("value %s validAfter %s, want %s and 0", v.Value, v.ValidAfter, offered.Amount)
			}
			if want := fixedNow.Unix() + offered.MaxTimeoutSeconds; v.ValidBefore.Int64() != want {
				t.Errorf("validBefore %s, want now+maxTimeoutSeconds = %d", v.ValidBefore, want)
			}
			if p.Payload.Authorization.To != payToHex {
				t.Errorf("authorization.to %q, want the checksummed %q", p.Payload.Authorization.To, payToHex)
			}
			if !reflect.DeepEqual(*p.Accepted, offered) {
				t.Errorf("accepted %+v is not the offer %+v echoed", *p.Accepted, offered)
			}
			if p.Resource == nil || p.Resource.URL != f.srv.URL+"/exec/tool" {
				t.Errorf("resource %+v not echoed", p.Resource)
			}
			id, hasID, err := p.PaymentIdentifier()
			if err != nil || hasID != tc.declareID {
				t.Errorf("payment id %q present=%v err=%v, want present=%v", id, hasID, err, tc.declareID)
			}
			if hasID && (!strings.HasPrefix(id, "pay_") || len(id) != 36) {
				t.Errorf("payment id %q, want pay_ and 32 hex digits", id)
			}

			// What the caller learns.
			if res.JobID == "" || res.PaymentProtocol != "x402" || string(res.Result.Output) != `{"parsed":true}` || len(res.Raw) == 0 {
				t.Errorf("result %+v", res)
			}
			pay := res.Payment
			if pay == nil || pay.Amount != v.Value.Uint64() || pay.Nonce != v.Nonce || pay.Payer != v.Payer || pay.PaymentID != id || pay.Network != offered.Network {
				t.Errorf("payment %+v does not describe what was verified", pay)
			}
			st := res.Settlement
			if st == nil || st.Status != SettlementSettled || !st.Success || st.Transaction != crypto.Keccak256Hash(v.Nonce[:]).Hex() ||
				st.Network != offered.Network || st.Payer != payerHex {
				t.Errorf("settlement %+v", st)
			}
		})
	}
}

func TestExecNoncesAreFresh(t *testing.T) {
	f := newFake(t, nil)
	c := newTestClient(t, f)
	for range 3 {
		if _, err := c.Exec(context.Background(), jsonParseCall()); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[common.Hash]bool{}
	verified, _ := f.paid()
	for _, v := range verified {
		if seen[v.Nonce] {
			t.Fatalf("nonce %s reused", v.Nonce.Hex())
		}
		seen[v.Nonce] = true
	}
}

func TestExecRefusesToPayWithoutASecondRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		accepts []x402.PaymentRequirements
		opts    []Option
		noAllow bool // a client without the local token allowed
		call    func(*Call)
		fake    func(*fakeGateway)
		reason  string
	}{
		{name: "above WithMaxPayment", opts: []Option{WithMaxPayment(testPrice - 1)}, reason: ReasonMaxPaymentExceeded},
		{name: "above the default 1 USDC", accepts: []x402.PaymentRequirements{offerOn(localToken, 1_000_001, nil)}, reason: ReasonMaxPaymentExceeded},
		{name: "max payment 0 refuses everything", opts: []Option{WithMaxPayment(0)}, reason: ReasonMaxPaymentExceeded},
		{name: "amount beyond uint64", accepts: []x402.PaymentRequirements{offerOn(localToken, 0, func(r *x402.PaymentRequirements) { r.Amount = "18446744073709551616" })}, reason: ReasonMaxPaymentExceeded},
		{name: "an asset not allowed", noAllow: true, reason: ReasonAssetNotAllowed},
		{name: "an allowed asset under another EIP-712 name", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, func(r *x402.PaymentRequirements) { r.Extra.Name = "USD Coin (fake)" })}, reason: ReasonAssetNotAllowed},
		{name: "Base USDC at another address", accepts: []x402.PaymentRequirements{offerOn(x402.Base, testPrice, func(r *x402.PaymentRequirements) { r.Asset = "0x0000000000000000000000000000000000000bad" })}, reason: ReasonAssetNotAllowed},
		{name: "max beats asset when both reject", accepts: []x402.PaymentRequirements{
			offerOn(x402.Base, 2_000_000, nil), offerOn(localToken, testPrice, nil)}, noAllow: true, reason: ReasonMaxPaymentExceeded},
		{name: "permit2 only", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, withExtra("assetTransferMethod", `"permit2"`))}, reason: ReasonNoSupportedRequirements},
		{name: "unknown payment flow", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, withExtra("paymentFlow", `"escrow"`))}, reason: ReasonNoSupportedRequirements},
		{name: "no EIP-712 domain", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, func(r *x402.PaymentRequirements) { r.Extra = x402.Extra{} })}, reason: ReasonNoSupportedRequirements},
		{name: "a payment window of a year", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, func(r *x402.PaymentRequirements) { r.MaxTimeoutSeconds = 365 * 86400 })}, reason: ReasonInvalidPaymentRequired},
		{name: "a payment window of a day", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, func(r *x402.PaymentRequirements) { r.MaxTimeoutSeconds = 86400 })}, reason: ReasonInvalidPaymentRequired},
		{name: "a payment window just over an hour", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, func(r *x402.PaymentRequirements) { r.MaxTimeoutSeconds = 3601 })}, reason: ReasonInvalidPaymentRequired},
		{name: "pay to the zero address", accepts: []x402.PaymentRequirements{offerOn(localToken, testPrice, func(r *x402.PaymentRequirements) { r.PayTo = "0x0000000000000000000000000000000000000000" })}, reason: ReasonInvalidPaymentRequired},
		{name: "no signer", opts: []Option{WithSigner(nil)}, reason: "client"}, // New refuses a nil signer
		{name: "the internal key is refused", opts: []Option{WithInternalKey("wrong-key")}, fake: func(f *fakeGateway) { f.internalKey = "right-key" }, reason: ReasonInternalKeyRefused},
		{name: "the caller's own payment header", call: func(c *Call) { c.Header = http.Header{"Payment-Signature": {"eyJ4NDAyVmVyc2lvbiI6Mn0="}} }, reason: "invalid_payload"},
		{name: "a 402 without an x402 offer", call: func(c *Call) { c.Tool = "bare_402" }, reason: ReasonNoOffer},
		{name: "a PAYMENT-REQUIRED that does not decode", call: func(c *Call) { c.Tool = "garbled_402" }, reason: ReasonInvalidPaymentRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, func(f *fakeGateway) {
				if tc.accepts != nil {
					f.accepts = tc.accepts
				}
				if tc.fake != nil {
					tc.fake(f)
				}
			})
			opts := []Option{WithHTTPClient(f.srv.Client()), WithX402Signer(payerKey(t)), WithClock(func() time.Time { return fixedNow })}
			if !tc.noAllow {
				opts = append(opts, WithAllowedAssets(localToken))
			}
			c, err := New(f.srv.URL, append(opts, tc.opts...)...)
			if tc.reason == "client" {
				if err == nil {
					t.Fatal("New accepted a nil signer")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdleConnections()
			call := jsonParseCall()
			if tc.call != nil {
				tc.call(&call)
			}
			_, err = c.Exec(context.Background(), call)
			var pe *PaymentRefusedError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *PaymentRefusedError", err)
			}
			if pe.Reason != tc.reason || pe.Paid || pe.Status != http.StatusPaymentRequired || Reason(err) != tc.reason {
				t.Errorf("refusal %+v, want reason %s, not paid, status 402", pe, tc.reason)
			}
			if n := len(f.seen()); n != 1 {
				t.Errorf("%d requests, want 1: nothing may be sent after a refusal", n)
			}
		})
	}
}

func TestExecWithoutSignerRefusesToPay(t *testing.T) {
	f := newFake(t, nil)
	c, err := New(f.srv.URL, WithHTTPClient(f.srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	_, err = c.Exec(context.Background(), jsonParseCall())
	if Reason(err) != ReasonNoSigner || len(f.seen()) != 1 {
		t.Fatalf("err = %v after %d requests, want %s after 1", err, len(f.seen()), ReasonNoSigner)
	}
}

func TestSecond402IsNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fake   func(*fakeGateway)
		clock  time.Time
		reason string
	}{
		{name: "the server refuses a valid payment", fake: func(f *fakeGateway) { f.refuseAfterPay = x402.ReasonNonceAlreadyUsed }, clock: fixedNow, reason: x402.ReasonNonceAlreadyUsed},
		// The verifier really runs: a client clock an hour slow signs an expired authorization.
		{name: "the verifier finds the authorization expired", clock: fixedNow.Add(-time.Hour), reason: x402.ReasonValidBefore},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.fake)
			c := newTestClient(t, f, WithClock(func() time.Time { return tc.clock }))
			_, err := c.Exec(context.Background(), jsonParseCall())
			var pe *PaymentRefusedError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *PaymentRefusedError", err)
			}
			if !pe.Paid || pe.Reason != tc.reason || pe.Payment == nil || pe.Status != http.StatusPaymentRequired {
				t.Errorf("refusal %+v, want paid with reason %s", pe, tc.reason)
			}
			if n := len(f.seen()); n != 2 {
				t.Errorf("%d requests, want 2: a second 402 is never retried", n)
			}
		})
	}
}

func TestExecPaysAV1Offer(t *testing.T) {
	f := newFake(t, func(f *fakeGateway) {
		f.v1 = true
		f.accepts = []x402.PaymentRequirements{offerOn(x402.BaseSepolia, testPrice, nil)}
	})
	c := newTestClient(t, f) // Base Sepolia USDC is allowed by default
	res, err := c.Exec(context.Background(), jsonParseCall())
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	seen := f.seen()
	if len(seen) != 2 || seen[1].header.Get(x402.HeaderXPayment) == "" || seen[1].header.Get(x402.HeaderPaymentSignature) != "" {
		t.Fatalf("the v1 retry must carry X-PAYMENT only")
	}
	verified, payloads := f.paid()
	p, v := payloads[0], verified[0]
	if p.X402Version != 1 || p.Scheme != x402.SchemeExact || p.Network != "base-sepolia" || p.Accepted != nil {
		t.Errorf("v1 payload %+v", p)
	}
	if want := fixedNow.Unix() - 600; v.ValidAfter.Int64() != want {
		t.Errorf("validAfter %s, want now-600 as the v1 client signs", v.ValidAfter)
	}
	if res.Payment.X402Version != 1 || res.Payment.Network != "base-sepolia" || res.Payment.ChainID != 84532 {
		t.Errorf("payment %+v", res.Payment)
	}
	if res.Settlement == nil || res.Settlement.Status != SettlementSettled || res.Settlement.Network != "base-sepolia" {
		t.Errorf("settlement %+v (read from X-PAYMENT-RESPONSE)", res.Settlement)
	}
}

func TestSettlementStates(t *testing.T) {
	for _, tc := range []struct {
		settle  string
		pending bool
		tx      bool
	}{
		{SettlementSettled, false, true},
		{SettlementPending, true, true},
		{SettlementFailed, false, false},
	} {
		t.Run(tc.settle, func(t *testing.T) {
			f := newFake(t, func(f *fakeGateway) { f.settle = tc.settle })
			c := newTestClient(t, f)
			res, err := c.Exec(context.Background(), jsonParseCall())
			if err != nil {
				t.Fatalf("a %s settlement is not an error of the call: %v", tc.settle, err)
			}
			st := res.Settlement
			if st == nil || st.Status != tc.settle || st.Pending() != tc.pending || (st.Transaction != "") != tc.tx {
				t.Fatalf("settlement %+v, want status %s", st, tc.settle)
			}
			if tc.pending && st.ErrorReason != x402.ReasonSettlementPending {
				t.Errorf("pending settlement reason %q", st.ErrorReason)
			}
		})
	}
}

func TestInternalKeySkipsPayment(t *testing.T) {
	f := newFake(t, func(f *fakeGateway) { f.internalKey = "internal-key-0123456789" })
	c := newTestClient(t, f, WithInternalKey("internal-key-0123456789"))
	res, err := c.Exec(context.Background(), jsonParseCall())
	if err != nil {
		t.Fatal(err)
	}
	seen := f.seen()
	if len(seen) != 1 || seen[0].header.Get(HeaderInternalKey) != "internal-key-0123456789" || x402.HasCredential(seen[0].header) {
		t.Fatalf("want one unpaid request carrying X-Internal-Key, got %d", len(seen))
	}
	if res.PaymentProtocol != "internal" || res.Payment != nil || res.Settlement != nil {
		t.Errorf("result %+v", res)
	}
}

func TestSimulateIsFree(t *testing.T) {
	f := newFake(t, nil)
	c := newTestClient(t, f)
	res, err := c.Simulate(context.Background(), jsonParseCall())
	if err != nil {
		t.Fatal(err)
	}
	if seen := f.seen(); len(seen) != 1 || seen[0].path != "/exec/simulate" || !res.DryRun || res.Payment != nil {
		t.Fatalf("simulate: %d requests, result %+v", len(seen), res)
	}
}

// TestPaymentWindowOfAnHourIsPaid: the longest window a SecureExec gateway offers is paid,
// with validBefore exactly that far ahead.
func TestPaymentWindowOfAnHourIsPaid(t *testing.T) {
	f := newFake(t, func(f *fakeGateway) {
		f.accepts = []x402.PaymentRequirements{offerOn(localToken, testPrice, func(r *x402.PaymentRequirements) { r.MaxTimeoutSeconds = 3600 })}
	})
	if _, err := newTestClient(t, f).Exec(context.Background(), jsonParseCall()); err != nil {
		t.Fatal(err)
	}
	if verified, _ := f.paid(); len(verified) != 1 || verified[0].ValidBefore.Int64() != fixedNow.Unix()+3600 {
		t.Fatalf("payments %+v", verified)
	}
}

// TestSimulateNeverPays: a simulation is free; a 402 from /exec/simulate is refused, not paid.
func TestSimulateNeverPays(t *testing.T) {
	f := newFake(t, func(f *fakeGateway) { f.chargeSimulate = true })
	c := newTestClient(t, f)
	_, err := c.Simulate(context.Background(), jsonParseCall())
	var pe *PaymentRefusedError
	if !errors.As(err, &pe) || pe.Reason != ReasonSimulateNotFree || pe.Paid {
		t.Fatalf("Simulate answered with a 402: %v, want %s", err, ReasonSimulateNotFree)
	}
	if verified, _ := f.paid(); len(f.seen()) != 1 || len(verified) != 0 {
		t.Fatalf("%d requests, %d payments", len(f.seen()), len(verified))
	}
}

// TestPaidFailureSaysItWasPaid: a paid request answered with an error is never "temporary"
// (calling again signs and pays again) and carries what was paid; a paid request answered
// with a 2xx that is not a result may have settled.
func TestPaidFailureSaysItWasPaid(t *testing.T) {
	f := newFake(t, func(f *fakeGateway) {
		f.afterPay = func(w http.ResponseWriter) {
			writeProblem(w, http.StatusServiceUnavailable, "facilitator_unavailable", "", "try again")
		}
	})
	_, err := newTestClient(t, f).Exec(context.Background(), jsonParseCall())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 503 || ae.Payment == nil || ae.Payment.Amount != testPrice || ae.Temporary() {
		t.Fatalf("a paid 503: %v (%+v), want an APIError with its Payment, not temporary", err, ae)
	}

	g := newFake(t, func(f *fakeGateway) {
		f.afterPay = func(w http.ResponseWriter) {
			writeTestJSON(w, http.StatusOK, "application/json", map[string]string{"no": "result"})
		}
	})
	_, err = newTestClient(t, g).Exec(context.Background(), jsonParseCall())
	var inflight *PaymentInFlightError
	if !errors.As(err, &inflight) || inflight.Payment == nil || !errors.Is(err, ErrInvalidResponse) {
		t.Fatalf("a paid 200 that is not a result: %v, want PaymentInFlightError wrapping ErrInvalidResponse", err)
	}
}

// TestMaxPaymentZeroPaysNothing: WithMaxPayment(0) refuses every payment, a free offer too:
// nothing is signed.
func TestMaxPaymentZeroPaysNothing(t *testing.T) {
	f := newFake(t, func(f *fakeGateway) {
		f.accepts = []x402.PaymentRequirements{x402.Requirements(localToken, payments.Price{Amount: 0}, common.HexToAddress(payToHex), time.Minute)}
	})
	_, err := newTestClient(t, f, WithMaxPayment(0)).Exec(context.Background(), jsonParseCall())
	if Reason(err) != ReasonMaxPaymentExceeded {
		t.Fatalf("an offer of 0 with WithMaxPayment(0): %v, want %s", err, ReasonMaxPaymentExceeded)
	}
	if verified, _ := f.paid(); len(verified) != 0 || len(f.seen()) != 1 {
		t.Fatalf("%d payments, %d requests", len(verified), len(f.seen()))
	}
}

func TestErrorsAreTyped(t *testing.T) {
	elsewhere := int32(0)
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { atomic.AddInt32(&elsewhere, 1) }))
	defer other.Close()
	f := newFake(t, func(f *fakeGateway) { f.redirectTo = other.URL + "/steal" })
	c := newTestClient(t, f)
	for _, tc := range []struct {
		tool       string
		status     int
		code       string
		field      string
		retryAfter time.Duration
		temporary  bool
	}{
		{tool: "no_such_tool", status: 400, code: "unknown_tool", field: "tool.name"},
		{tool: "busy", status: 503, code: "sandbox_busy", retryAfter: 2 * time.Second, temporary: true},
		{tool: "proxy_error", status: 502, temporary: true},
		{tool: "redirect", status: 307},
	} {
		t.Run(tc.tool, func(t *testing.T) {
			_, err := c.Exec(context.Background(), Call{Tool: tc.tool})
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want *APIError", err)
			}
			if ae.Status != tc.status || ae.Code != tc.code || ae.Field != tc.field || ae.RetryAfter != tc.retryAfter || ae.Temporary() != tc.temporary {
				t.Errorf("%+v", ae)
			}
			if strings.ContainsAny(ae.Error(), "\x1b\n") {
				t.Errorf("the error quotes control characters: %q", ae.Error())
			}
		})
	}
	if atomic.LoadInt32(&elsewhere) != 0 {
		t.Error("a redirect was followed to another host")
	}
	if _, err := c.Job(context.Background(), "7f1d3c9e-8a4b-4c2d-9e6f-0a1b2c3d4e5f"); Reason(err) != "job_not_found" {
		t.Errorf("missing job: %v", err)
	}
}

func TestDeadlines(t *testing.T) {
	t.Run("client timeout", func(t *testing.T) {
		f := newFake(t, func(f *fakeGateway) { f.internalKey = "k" })
		c := newTestClient(t, f, WithInternalKey("k"), WithTimeout(150*time.Millisecond))
		start := time.Now()
		_, err := c.Exec(context.Background(), Call{Tool: "slow"})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Fatalf("err = %v after %v", err, time.Since(start))
		}
	})
	t.Run("caller deadline", func(t *testing.T) {
		f := newFake(t, func(f *fakeGateway) { f.internalKey = "k" })
		c := newTestClient(t, f, WithInternalKey("k"))
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		if _, err := c.Exec(ctx, Call{Tool: "slow"}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("paid request lost in transit", func(t *testing.T) {
		f := newFake(t, nil)
		c := newTestClient(t, f, WithTimeout(300*time.Millisecond))
		_, err := c.Exec(context.Background(), Call{Tool: "slow_after_pay"})
		var inFlight *PaymentInFlightError
		if !errors.As(err, &inFlight) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want *PaymentInFlightError wrapping the deadline", err)
		}
		if verified, _ := f.paid(); len(verified) != 1 || inFlight.Payment.Nonce != verified[0].Nonce {
			t.Errorf("the error must name the payment that was sent")
		}
	})
}

func TestVerifyJob(t *testing.T) {
	for _, tc := range []struct {
		tamper string
		ok     bool
	}{{"", true}, {"record", false}, {"other", false}} {
		t.Run("tamper="+tc.tamper, func(t *testing.T) {
			f := newFake(t, func(f *fakeGateway) { f.tamper = tc.tamper })
			c := newTestClient(t, f)
			var last *Result
			for range 2 { // two jobs, so that "other" has another record to serve
				res, err := c.Exec(context.Background(), jsonParseCall())
				if err != nil {
					t.Fatal(err)
				}
				last = res
			}
			j, err := c.VerifyJob(context.Background(), last.JobID)
			if tc.ok {
				if err != nil || j.ProofHash != last.ProofHash {
					t.Fatalf("VerifyJob: %v", err)
				}
				return
			}
			if !errors.Is(err, proof.ErrMismatch) {
				t.Fatalf("err = %v, want proof.ErrMismatch", err)
			}
		})
	}
	t.Run("not a UUID", func(t *testing.T) {
		f := newFake(t, nil)
		c := newTestClient(t, f)
		for _, id := range []string{"", "../health", "7f1d3c9e8a4b4c2d9e6f0a1b2c3d4e5f", "urn:uuid:7f1d3c9e-8a4b-4c2d-9e6f-0a1b2c3d4e5f"} {
			if _, err := c.VerifyJob(context.Background(), id); err == nil {
				t.Errorf("%q accepted", id)
			}
		}
		if n := len(f.seen()); n != 0 {
			t.Errorf("%d requests for invalid ids", n)
		}
	})
}

func TestToolsAndHealth(t *testing.T) {
	f := newFake(t, nil)
	c := newTestClient(t, f)
	h, err := c.Health(context.Background())
	if err != nil || h.Status != "ok" || h.Service != "secureexec" {
		t.Fatalf("Health: %+v, %v", h, err)
	}
	tools, err := c.Tools(context.Background())
	if err != nil || len(tools.Allowed) != 1 || tools.Allowed[0].Name != "json_parse" || tools.Blocked[0].Name != "shell_exec" || tools.Prices[0].AmountAtomic != "10000" {
		t.Fatalf("Tools: %+v, %v", tools, err)
	}
}

func TestResponseBodiesAreCapped(t *testing.T) {
	f := newFake(t, nil)
	c := newTestClient(t, f, WithMaxBodyBytes(64))
	if _, err := c.Tools(context.Background()); !errors.Is(err, ErrResponseTooLarge) {
		t.Fatalf("err = %v, want ErrResponseTooLarge", err)
	}
}

// lowLevelSigner signs like some HSMs do: v as 0/1, and s in the high half of the order.
type lowLevelSigner struct{ Signer }

func (s lowLevelSigner) SignDigest(d common.Hash) ([]byte, error) {
	sig, err := s.Signer.SignDigest(d)
	if err != nil {
		return nil, err
	}
	hs := new(big.Int).Sub(secp256k1N, new(big.Int).SetBytes(sig[32:64]))
	hs.FillBytes(sig[32:64])
	sig[64] ^= 1
	return sig, nil
}

func TestRemoteSignerSignaturesAreNormalised(t *testing.T) {
	inner, err := NewKeySigner(payerKey(t))
	if err != nil {
		t.Fatal(err)
	}
	f := newFake(t, nil)
	c := newTestClient(t, f, WithSigner(lowLevelSigner{inner}))
	if _, err := c.Exec(context.Background(), jsonParseCall()); err != nil {
		t.Fatalf("a high-s, v=0/1 signature must be normalised: %v", err)
	}
	_, payloads := f.paid()
	if got := payloads[0].Payload.Signature; got[len(got)-2:] != "1b" && got[len(got)-2:] != "1c" {
		t.Errorf("v of %s is not 27/28", got)
	}
}

func TestNormaliseSignature(t *testing.T) {
	s := make([]byte, 65)
	s[0], s[63] = 1, 1
	high := append([]byte(nil), s...)
	new(big.Int).Sub(secp256k1N, big.NewInt(1)).FillBytes(high[32:64])
	with := func(b []byte, v byte) []byte { c := append([]byte(nil), b...); c[64] = v; return c }
	for _, tc := range []struct {
		name  string
		in    []byte
		wantV byte
		ok    bool
	}{
		{"v 0", with(s, 0), 27, true},
		{"v 1", with(s, 1), 28, true},
		{"v 27", with(s, 27), 27, true},
		{"v 28", with(s, 28), 28, true},
		{"high s flips v", with(high, 27), 28, true},
		{"v 5", with(s, 5), 0, false},
		{"zero s", make([]byte, 65), 0, false},
		{"short", s[:64], 0, false},
		{"contract wallet signature passes through", make([]byte, 100), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := normaliseSignature(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
			if err != nil || len(tc.in) != 65 {
				return
			}
			if out[64] != tc.wantV || new(big.Int).SetBytes(out[32:64]).Cmp(secp256k1HalfN) > 0 {
				t.Errorf("v %d s %x", out[64], out[32:64])
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		url  string
		opts []Option
	}{
		{url: "ftp://127.0.0.1"},
		{url: "127.0.0.1:5091"},
		{url: "http://user:pw@127.0.0.1"},
		{url: "http://127.0.0.1/?q=1"},
		{url: "http://127.0.0.1", opts: []Option{WithX402Signer(nil)}},
		{url: "http://127.0.0.1", opts: []Option{WithHTTPClient(nil)}},
		{url: "http://127.0.0.1", opts: []Option{WithInternalKey("a\r\nb")}},
		{url: "http://127.0.0.1", opts: []Option{WithTimeout(0)}},
		{url: "http://127.0.0.1", opts: []Option{WithAllowedAssets(x402.Network{CAIP2: "eip155:1"})}},
	} {
		if _, err := New(tc.url, tc.opts...); err == nil {
			t.Errorf("New(%q, %d options) accepted", tc.url, len(tc.opts))
		}
	}
	if _, err := New("http://127.0.0.1:5091/"); err != nil {
		t.Errorf("a plain base URL: %v", err)
	}
}

func TestEncodeCall(t *testing.T) {
	no := false
	for _, tc := range []struct {
		name string
		call Call
		want string // "" for an error
	}{
		{"raw args", Call{Tool: "json_parse", Args: json.RawMessage(`{"data": 1}`)}, `{"tool":{"name":"json_parse","args":{"data":1}}}`},
		{"struct args and options", Call{AgentID: "a", Tool: "t", Args: struct {
			X int `json:"x"`
		}{1}, DryRun: &no, TimeoutS: 2.5, Context: map[string]string{"k": "v"}},
			`{"agentId":"a","tool":{"name":"t","args":{"x":1},"timeout_s":2.5},"dryRun":false,"context":{"k":"v"}}`},
		{"nil args are an empty object", Call{Tool: "t"}, `{"tool":{"name":"t","args":{}}}`},
		{"array args", Call{Tool: "t", Args: []int{1}}, ""},
		{"no tool", Call{Args: json.RawMessage(`{}`)}, ""},
		{"negative timeout", Call{Tool: "t", TimeoutS: -1}, ""},
		{"invalid raw args", Call{Tool: "t", Args: json.RawMessage(`{`)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := encodeCall(tc.call)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("accepted: %s", b)
				}
				return
			}
			if err != nil || string(b) != tc.want {
				t.Fatalf("got %s, %v; want %s", b, err, tc.want)
			}
		})
	}
}

func TestClipMakesServerTextSafe(t *testing.T) {
	long := strings.Repeat("é", 1000)
	if got := clip(long); len(got) > maxDetail+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("clip kept %d bytes", len(got))
	}
	if got := clip("a\x1b[2Jb\xffc"); got != "a [2Jb?c" {
		t.Errorf("clip = %q", got)
	}
	if got := strconv.Quote(clip("\u0085x")); got != `" x"` {
		t.Errorf("C1 control kept: %s", got)
	}
}

// cancellingSigner signs, then cancels the call's context: the caller gave up while a remote
// signer was working.
type cancellingSigner struct {
	Signer
	cancel context.CancelFunc
}

func (s cancellingSigner) SignDigest(d common.Hash) ([]byte, error) {
	defer s.cancel()
	return s.Signer.SignDigest(d)
}

// TestCancelledBeforeSendingIsNotInFlight: a payment signed after the caller gave up never
// leaves the process, so the error must not say that it may have settled.
func TestCancelledBeforeSendingIsNotInFlight(t *testing.T) {
	inner, err := NewKeySigner(payerKey(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFake(t, nil)
	c := newTestClient(t, f, WithSigner(cancellingSigner{inner, cancel}))
	_, err = c.Exec(ctx, jsonParseCall())
	var inFlight *PaymentInFlightError
	if !errors.Is(err, context.Canceled) || errors.As(err, &inFlight) {
		t.Fatalf("err = %v, want context.Canceled, not a payment in flight", err)
	}
	if n := len(f.seen()); n != 1 {
		t.Errorf("%d requests, want 1: the payment was never sent", n)
	}
}
