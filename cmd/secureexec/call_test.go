package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/client"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/x402"
	"github.com/secureexec/secureexec/proof"
)

// Public anvil test keys (chain-tooling.md §8): #2 pays, #1 is paid.
const (
	callPayerKey   = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
	callPayerAddr  = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
	callPayTo      = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
	callLocalToken = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
	callInternal   = "call-test-internal-key"
)

// callFake is a gateway that asks 0.01 USDC on chain 31337 in a real PAYMENT-REQUIRED and
// checks the payment with the x402 package's decoder and verifier.
type callFake struct {
	srv      *httptest.Server
	pending  bool   // settle as settlement_pending
	refuse   string // refuse even a valid payment with this reason
	failPaid bool   // answer a valid payment with 503 payment_backend_unavailable
	offer    x402.PaymentRequirements
	// lose: declare payment-identifier, keep each paid answer under its id for a resend, and
	// lose this many of them (close the connection instead of answering).
	lose int

	mu       sync.Mutex
	requests []*http.Request
	bodies   [][]byte
	kept     map[string]keptCall
}

// keptCall is a paid answer kept under its payment identifier, with the payment's fingerprint.
type keptCall struct {
	fingerprint [32]byte
	rec         *httptest.ResponseRecorder
}

func newCallFake(t *testing.T, edit func(*callFake)) *callFake {
	t.Helper()
	f := &callFake{offer: x402.Requirements(x402.CustomNetwork(31337, common.HexToAddress(callLocalToken), "USD Coin", "2"),
		payments.Price{Amount: 10_000}, common.HexToAddress(callPayTo), time.Minute)}
	if edit != nil {
		edit(f)
	}
	if f.lose > 0 {
		f.kept = map[string]keptCall{}
	}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *callFake) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func (f *callFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	f.mu.Lock()
	f.requests, f.bodies = append(f.requests, r.Clone(context.Background())), append(f.bodies, body)
	f.mu.Unlock()
	problem := func(status int, code string) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "code": code, "detail": code, "error": code})
	}
	offer := func(code string) {
		pr := x402.NewPaymentRequired(x402.ResourceInfo{URL: f.srv.URL + r.URL.Path}, "PAYMENT-SIGNATURE header is required", f.offer)
		if f.kept != nil {
			x402.DeclarePaymentIdentifier(&pr, false)
		}
		v, _ := x402.EncodePaymentRequired(pr)
		w.Header().Set(x402.HeaderPaymentRequired, v)
		problem(http.StatusPaymentRequired, code)
	}
	var protocol string
	var settlement string
	switch {
	case r.URL.Path == "/exec/simulate":
		protocol = "none"
	case r.Header.Get("X-Internal-Key") == callInternal:
		protocol = "internal"
	case x402.HasCredential(r.Header):
		p, _, err := x402.PayloadFromRequest(r.Header)
		if err != nil {
			offer(x402.Reason(err))
			return
		}
		if id, ok, _ := p.PaymentIdentifier(); ok && f.kept != nil {
			if f.replay(w, id, p.Fingerprint()) {
				return
			}
			rec := httptest.NewRecorder()
			defer f.keep(w, rec, id, p.Fingerprint())
			w = rec
		}
		v, err := x402.VerifyLocal(p, f.offer, time.Now())
		if err != nil {
			offer(x402.Reason(err))
			return
		}
		if f.refuse != "" {
			offer(f.refuse)
			return
		}
		if f.failPaid {
			problem(http.StatusServiceUnavailable, "payment_backend_unavailable")
			return
		}
		sr := x402.SettlementResponse{Success: true, Transaction: "0x" + strings.Repeat("ab", 32), Network: v.Network, Payer: v.Payer.Hex()}
		if f.pending {
			sr.Success, sr.ErrorReason = false, x402.ReasonSettlementPending
		}
		settlement, _ = x402.EncodeSettlementResponse(sr)
		protocol = "x402"
	default:
		offer("payment_required")
		return
	}
	rec := map[string]any{"jobId": uuid.NewString(), "status": "completed", "paymentProtocol": protocol}
	_, hash, _ := proof.Seal(rec)
	if settlement != "" {
		w.Header().Set(x402.HeaderPaymentResponse, settlement)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"jobId": rec["jobId"], "tool": "json_parse", "dryRun": true, "status": "completed", "proofHash": hash,
		"paymentProtocol": protocol, "result": map[string]any{"output": map[string]string{"k": "v"}, "exitCode": 0, "simulated": true},
	})
}

// replay answers a resend of a payment identifier with the answer kept for it; false when
// none was kept.
func (f *callFake) replay(w http.ResponseWriter, id string, fp [32]byte) bool {
	f.mu.Lock()
	k, ok := f.kept[id]
	f.mu.Unlock()
	if !ok || k.fingerprint != fp {
		return false
	}
	for h, vs := range k.rec.Header() {
		w.Header()[h] = vs
	}
	w.WriteHeader(k.rec.Code)
	_, _ = w.Write(k.rec.Body.Bytes())
	return true
}

// keep keeps a paid answer under its payment identifier, then sends it or loses it.
func (f *callFake) keep(w http.ResponseWriter, rec *httptest.ResponseRecorder, id string, fp [32]byte) {
	f.mu.Lock()
	f.kept[id] = keptCall{fingerprint: fp, rec: rec}
	lose := f.lose > 0
	f.lose--
	f.mu.Unlock()
	if lose {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
		}
		return
	}
	for h, vs := range rec.Header() {
		w.Header()[h] = vs
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// runCall runs `secureexec call` with the given environment and flags.
func runCall(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := callCmd(func(k string) string { return env[k] })
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func TestCallCommand(t *testing.T) {
	payer := map[string]string{envPayerKey: callPayerKey}
	allowLocal := "eip155:31337/" + callLocalToken
	for _, tc := range []struct {
		name     string
		fake     func(*callFake)
		env      map[string]string
		args     []string
		requests int
		errHas   string   // "" when the command must succeed
		outHas   []string // lines stdout must contain
		outLacks []string
		errOut   []string // lines stderr must contain
		errLacks []string
		check    func(t *testing.T, f *callFake)
	}{
		{
			name: "pays and prints the result and the settlement", env: payer,
			args:     []string{"--tool", "json_parse", "--args", `{"data":{"k":"v"}}`, "--allow-asset", allowLocal, "--max-payment", "0.05"},
			requests: 2,
			outHas: []string{`"jobId"`, "payment: 0.01 USDC (10000 atomic) on eip155:31337", "payer " + callPayerAddr,
				"settlement: settled, tx 0x" + strings.Repeat("ab", 32) + ", network eip155:31337, payer " + callPayerAddr},
		},
		{
			name: "a pending settlement is reported as pending", env: payer, fake: func(f *callFake) { f.pending = true },
			args:     []string{"--tool", "json_parse", "--allow-asset", "eip155:31337/erc20:" + callLocalToken},
			requests: 2, outHas: []string{"settlement: pending (submitted, not final yet)"},
		},
		{
			name: "above --max-payment: refused before paying", env: payer,
			args:     []string{"--tool", "json_parse", "--allow-asset", allowLocal, "--max-payment", "0.009999"},
			requests: 1, errHas: "max_payment_exceeded", errLacks: []string{"payment:", "settlement:"},
		},
		{
			name: "an asset not allowed: refused before paying", env: payer,
			args:     []string{"--tool", "json_parse"},
			requests: 1, errHas: "asset_not_allowed",
		},
		{
			name: "the server refuses the payment: not retried", env: payer, fake: func(f *callFake) { f.refuse = "invalid_exact_evm_insufficient_balance" },
			args:     []string{"--tool", "json_parse", "--allow-asset", allowLocal},
			requests: 2, errHas: "server refused the payment: invalid_exact_evm_insufficient_balance",
			errOut: []string{"payment: 0.01 USDC (10000 atomic) on eip155:31337", "settlement: not reported by the gateway"},
		},
		{
			name: "the answer to a paid call is lost: the same payment is sent again", env: payer, fake: func(f *callFake) { f.lose = 1 },
			args:     []string{"--tool", "json_parse", "--allow-asset", allowLocal},
			requests: 3, outHas: []string{"payment: 0.01 USDC (10000 atomic) on eip155:31337", "settlement: settled"},
			errOut: []string{"sending the same payment again"},
			check: func(t *testing.T, f *callFake) {
				sig := f.requests[1].Header.Get(x402.HeaderPaymentSignature)
				if sig == "" || f.requests[2].Header.Get(x402.HeaderPaymentSignature) != sig {
					t.Error("the resend does not carry the payment that was sent")
				}
			},
		},
		{
			name: "a paid call that fails says what was paid", env: payer, fake: func(f *callFake) { f.failPaid = true },
			args:     []string{"--tool", "json_parse", "--allow-asset", allowLocal},
			requests: 2, errHas: "payment_backend_unavailable",
			errOut: []string{"payment: 0.01 USDC (10000 atomic) on eip155:31337", "payer " + callPayerAddr, "settlement: not reported by the gateway"},
		},
		{
			name: "no payer key: refused", env: map[string]string{},
			args:     []string{"--tool", "json_parse", "--allow-asset", allowLocal},
			requests: 1, errHas: "no_signer",
		},
		{
			name: "the internal key skips payment", env: map[string]string{envInternalKey: callInternal},
			args:     []string{"--tool", "json_parse", "--real", "--agent-id", "ops", "--timeout-s", "2"},
			requests: 1, outHas: []string{`"paymentProtocol": "internal"`}, outLacks: []string{"payment:", "settlement:"},
			check: func(t *testing.T, f *callFake) {
				var body struct {
					AgentID string `json:"agentId"`
					DryRun  *bool  `json:"dryRun"`
					Tool    struct {
						TimeoutS float64 `json:"timeout_s"`
					} `json:"tool"`
				}
				if err := json.Unmarshal(f.bodies[0], &body); err != nil || body.AgentID != "ops" || body.DryRun == nil || *body.DryRun || body.Tool.TimeoutS != 2 {
					t.Errorf("request body %s", f.bodies[0])
				}
			},
		},
		{
			name: "--simulate posts to /exec/simulate", env: map[string]string{},
			args: []string{"--tool", "json_parse", "--simulate"}, requests: 1, outHas: []string{`"paymentProtocol": "none"`},
			check: func(t *testing.T, f *callFake) {
				if f.requests[0].URL.Path != "/exec/simulate" {
					t.Errorf("path %s", f.requests[0].URL.Path)
				}
			},
		},
		{name: "both keys set", env: map[string]string{envPayerKey: callPayerKey, envInternalKey: callInternal}, args: []string{"--tool", "json_parse"}, errHas: "unset one"},
		{name: "a bad payer key is not quoted", env: map[string]string{envPayerKey: "0xnot-a-key-secret"}, args: []string{"--tool", "json_parse"}, errHas: envPayerKey + " is not a hex"},
		{name: "more decimals than USDC has", env: payer, args: []string{"--tool", "json_parse", "--max-payment", "0.0000001"}, errHas: "--max-payment"},
		{name: "a float is not an amount", env: payer, args: []string{"--tool", "json_parse", "--max-payment", "1e3"}, errHas: "--max-payment"},
		{name: "--real and --simulate", env: payer, args: []string{"--tool", "json_parse", "--real", "--simulate"}, errHas: "exclude"},
		{name: "args not an object", env: payer, args: []string{"--tool", "json_parse", "--args", "[1]"}, errHas: "--args"},
		{name: "a bad --allow-asset", env: payer, args: []string{"--tool", "json_parse", "--allow-asset", "base/0x5FbDB2315678afecb367f032d93F642f64180aa3"}, errHas: "--allow-asset"},
		{name: "--tool is required", env: payer, args: []string{}, errHas: "tool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCallFake(t, tc.fake)
			out, errOut, err := runCall(t, tc.env, append([]string{"--server", f.srv.URL}, tc.args...)...)
			if tc.errHas == "" && err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err = %v, want one containing %q", err, tc.errHas)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("the error quotes the key: %v", err)
				}
				if out != "" {
					t.Errorf("stdout on failure: %q", out)
				}
			}
			if n := f.count(); n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
			for _, s := range tc.outHas {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tc.errOut {
				if !strings.Contains(errOut, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut)
				}
			}
			for _, s := range tc.errLacks {
				if strings.Contains(errOut, s) {
					t.Errorf("stderr has %q:\n%s", s, errOut)
				}
			}
			for _, s := range tc.outLacks {
				if strings.Contains(out, s) {
					t.Errorf("stdout has %q:\n%s", s, out)
				}
			}
			if tc.errHas == "" {
				var doc struct {
					JobID string `json:"jobId"`
				}
				if err := json.NewDecoder(strings.NewReader(out)).Decode(&doc); err != nil || doc.JobID == "" {
					t.Errorf("stdout does not start with the result JSON: %v\n%s", err, out)
				}
			}
			if tc.check != nil {
				tc.check(t, f)
			}
		})
	}
}

func TestCallHelpKeepsKeysOutOfFlags(t *testing.T) {
	cmd := callCmd(func(string) string { return "" })
	for _, name := range []string{"key", "payer-key", "private-key", "internal-key"} {
		if cmd.Flags().Lookup(name) != nil {
			t.Errorf("a --%s flag would put a secret in shell history", name)
		}
	}
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{envPayerKey, envInternalKey, "never from flags", "--max-payment"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help lacks %q", s)
		}
	}
}

// losingTransport delivers requests and loses the first answer to a paid one, as a dropped
// connection does after the gateway has run the call.
type losingTransport struct {
	base http.RoundTripper
	lost atomic.Bool
}

func (l *losingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.base.RoundTrip(r)
	if err != nil || !x402.HasCredential(r.Header) || !l.lost.CompareAndSwap(false, true) {
		return resp, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return nil, errors.New("test: the answer was lost")
}

// TestResendIsReplayedByTheGateway: against a real gateway process on a real chain, a paid
// call whose answer was lost is sent again with the same payment (Client.Resend, which `call`
// uses); the gateway answers with the answer it kept under the payment identifier, and the
// money moves once.
func TestResendIsReplayedByTheGateway(t *testing.T) {
	f := newX402Fixture(t)
	before := f.balances(t)
	c, err := client.New(f.a.base, client.WithX402Signer(f.keys["payer2"]), client.WithHTTPClient(&http.Client{Transport: &losingTransport{base: f.http.Transport}}),
		client.WithTimeout(30*time.Second), client.WithAllowedAssets(x402.CustomNetwork(e2eChainID, f.token, "USD Coin", "2")))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Exec(f.ctx, dryRunCall("resend"))
	var inFlight *client.PaymentInFlightError
	if !errors.As(err, &inFlight) || inFlight.Payment.PaymentID == "" {
		t.Fatalf("err = %v, want a payment in flight with a payment identifier", err)
	}
	res, err := c.Resend(f.ctx, err)
	if err != nil {
		t.Fatalf("Resend: %v", err)
	}
	if res.Payment.Nonce != inFlight.Payment.Nonce || res.Settlement == nil || !res.Settlement.Success {
		t.Fatalf("the resend was answered with payment %+v, settlement %+v", res.Payment, res.Settlement)
	}
	if rows := f.paymentRows(t, f.db, inFlight.Payment.Nonce); len(rows) != 1 || rows[0].JobID != res.JobID {
		t.Fatalf("ledger rows %+v, want one, for job %s", rows, res.JobID)
	}
	f.expectMoved(t, before, map[string]int64{"payer2": -priceDryRun, "payTo": priceDryRun})
}
