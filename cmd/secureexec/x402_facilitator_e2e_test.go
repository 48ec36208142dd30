package main

// X402_FACILITATOR_URL end to end: the official x402 facilitator (@x402/core and @x402/evm
// 2.27.0 from npm, unmodified, scripts/x402-facilitator.mjs) in its own process settles for a
// gateway process that holds no settlement key, on anvil; the money is checked on the chain.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/secureexec/secureexec/payments/x402"
)

// anvilKey6 sends the facilitator's transactions: a public anvil test key, funded with ETH only.
const anvilKey6 = "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e"

// facilitatorProc is one scripts/x402-facilitator.mjs process.
type facilitatorProc struct {
	url    string
	signer common.Address
	cmd    *osexec.Cmd
	out    *procOutput
	exited chan struct{}
}

// startFacilitator runs the reference facilitator for chainID on 127.0.0.1:port and waits for
// it to listen; it is stopped by its PID when t ends (or earlier with stop).
func startFacilitator(t *testing.T, rpcURL string, chainID, port int) *facilitatorProc {
	t.Helper()
	root := moduleRoot(t)
	for _, pkg := range []string{"@x402/core", "@x402/evm", "viem"} {
		if _, err := os.Stat(filepath.Join(root, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("%s is not installed (%v): run `npm ci` in %s", pkg, err, root)
		}
	}
	node, err := osexec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH (%v): the facilitator test needs Node.js 20+", err)
	}
	p := &facilitatorProc{out: &procOutput{}, exited: make(chan struct{})}
	p.cmd = osexec.Command(node, filepath.Join(root, "scripts", "x402-facilitator.mjs"), rpcURL, anvilKey6, strconv.Itoa(chainID), strconv.Itoa(port))
	p.cmd.Dir = root
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		for sc.Scan() {
		}
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	select {
	case line := <-lines:
		var hello struct {
			URL    string `json:"url"`
			Signer string `json:"signer"`
		}
		if err := json.Unmarshal([]byte(line), &hello); err != nil || !strings.HasPrefix(hello.URL, "http://127.0.0.1:") {
			t.Fatalf("facilitator said %q (%v)", line, err)
		}
		p.url, p.signer = hello.URL, common.HexToAddress(hello.Signer)
	case <-p.exited:
		t.Fatalf("facilitator exited before listening:\n%s", p.out)
	case <-time.After(30 * time.Second):
		t.Fatalf("facilitator not listening after 30 s:\n%s", p.out)
	}
	return p
}

func (p *facilitatorProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// facilitatorEnv is the configuration of a gateway that settles through url: no settlement key.
func (f *x402Fixture) facilitatorEnv(dbURL, url string) map[string]string {
	env := f.env(dbURL, e2eRedisURL)
	delete(env, "SETTLEMENT_PRIVATE_KEY")
	delete(env, "X402_BATCHER_ADDRESS")
	env["X402_FACILITATOR_URL"] = url
	return env
}

func TestX402RemoteFacilitator(t *testing.T) {
	f := newX402Fixture(t)
	port := freePort(t)
	fac := startFacilitator(t, f.rpcURL, e2eChainID, port)
	dbURL, db := freshSchema(t) // a ledger of its own: gateway A settles with its key
	gw := startGatewayProc(t, "gateway-F", f.facilitatorEnv(dbURL, fac.url))
	payer2 := addr(f.keys["payer2"])

	t.Run("go_client_pays_and_the_facilitator_settles", func(t *testing.T) {
		before := f.balances(t)
		res, err := f.goClient(t, gw.base, f.keys["payer2"]).Exec(f.ctx, dryRunCall("facilitator-go"))
		if err != nil {
			t.Fatal(err)
		}
		st := settlementOf(t, res.Raw)
		if st == nil || st.Status != "settled" || st.Transaction == "" {
			t.Fatalf("settlement %+v, want settled: %s", st, res.Raw)
		}
		f.expectTransfers(t, st.Transaction, payer2, priceDryRun, 1)
		f.expectMoved(t, before, map[string]int64{"payer2": -priceDryRun, "payTo": priceDryRun})
		tx := mustTx(t, f, st.Transaction)
		if from, err := types.Sender(types.LatestSignerForChainID(tx.ChainId()), tx); err != nil || from != fac.signer {
			t.Fatalf("the settlement was sent by %s (%v), want the facilitator's %s", from.Hex(), err, fac.signer.Hex())
		}
		rows := f.paymentRows(t, db, res.Payment.Nonce)
		if len(rows) != 1 || rows[0].Status != "settled" || rows[0].Transaction != st.Transaction {
			t.Fatalf("ledger rows %+v", rows)
		}
	})

	t.Run("typescript_client_pays_through_the_facilitator", func(t *testing.T) { f.typeScriptPays(t, gw.base) })

	t.Run("resend_is_refused_and_nothing_moves", func(t *testing.T) {
		body := dryRunBody("facilitator-resend")
		p := pay(t, f.offer(t, gw.base, body), f.keys["payer2"], nil, nil)
		hdr := map[string]string{x402.HeaderPaymentSignature: p.header}
		if r := f.send(t, "POST", gw.base+"/exec/tool", body, hdr); r.status != http.StatusOK {
			t.Fatalf("first: %d %s", r.status, r.raw)
		}
		before := f.balances(t)
		expectRefused(t, f.send(t, "POST", gw.base+"/exec/tool", body, hdr), x402.ReasonNonceAlreadyUsed)
		f.expectMoved(t, before, nil)
	})

	t.Run("unfunded_payer_is_refused", func(t *testing.T) {
		body := dryRunBody("facilitator-unfunded")
		p := pay(t, f.offer(t, gw.base, body), f.keys["payer4"], nil, nil)
		before := f.balances(t)
		expectRefused(t, f.send(t, "POST", gw.base+"/exec/tool", body, map[string]string{x402.HeaderPaymentSignature: p.header}), x402.ReasonInsufficientBalance)
		f.expectMoved(t, before, nil)
	})

	t.Run("facilitator_down_is_503_and_the_same_payment_pays_once_it_is_back", func(t *testing.T) {
		body := dryRunBody("facilitator-down")
		p := pay(t, f.offer(t, gw.base, body), f.keys["payer2"], nil, nil)
		hdr := map[string]string{x402.HeaderPaymentSignature: p.header}
		fac.stop()
		before := f.balances(t)
		r := f.send(t, "POST", gw.base+"/exec/tool", body, hdr)
		if retry, err := strconv.Atoi(r.header.Get("Retry-After")); r.status != http.StatusServiceUnavailable || err != nil || retry <= 0 {
			t.Fatalf("with the facilitator down: %d, Retry-After %q: %s", r.status, r.header.Get("Retry-After"), r.raw)
		}
		if _, ok := r.body["result"]; ok {
			t.Fatalf("a 503 carries a result: %s", r.raw)
		}
		f.expectMoved(t, before, nil)
		if rows := f.paymentRows(t, db, p.nonce); len(rows) != 0 {
			t.Fatalf("a payment refused for a facilitator outage was recorded: %+v", rows)
		}
		fac = startFacilitator(t, f.rpcURL, e2eChainID, port) // back, at the same address
		r = f.send(t, "POST", gw.base+"/exec/tool", body, hdr)
		if st := settlementOf(t, r.raw); r.status != http.StatusOK || st == nil || st.Status != "settled" {
			t.Fatalf("the same payment after the facilitator came back: %d %s", r.status, r.raw)
		}
		f.expectMoved(t, before, map[string]int64{"payer2": -priceDryRun, "payTo": priceDryRun})
	})

	t.Run("a_facilitator_that_does_not_settle_our_network_is_refused_at_start", func(t *testing.T) {
		other := startFacilitator(t, f.rpcURL, 8453, freePort(t)) // lists eip155:8453, not ours
		defer other.stop()
		out, err := runGatewayToExit(t, f.facilitatorEnv(dbURL, other.url))
		if err == nil || !strings.Contains(out, "X402_FACILITATOR_URL") || !strings.Contains(out, e2eNetwork) {
			t.Fatalf("gateway with a facilitator for another network: %v\n%s", err, out)
		}
	})
}

// facilitatorProxy stands between the gateway and the reference facilitator, and answers as a
// misbehaving facilitator does when told to.
type facilitatorProxy struct {
	t    *testing.T
	to   string
	srv  *httptest.Server
	mu   sync.Mutex
	mode string // "" forwards; see serve for the others
}

func newFacilitatorProxy(t *testing.T, to string) *facilitatorProxy {
	p := &facilitatorProxy{t: t, to: to}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *facilitatorProxy) set(mode string) { p.mu.Lock(); p.mode = mode; p.mu.Unlock() }

func (p *facilitatorProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	mode := p.mode
	p.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	answer := func(status int, v string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, v)
	}
	switch {
	case mode == "refuse-verify" && r.URL.Path == "/verify":
		answer(http.StatusOK, `{"isValid":false,"invalidReason":"invalid_exact_evm_token_name_mismatch","invalidMessage":"name() is not USD Coin"}`)
		return
	case mode == "rate-limited":
		answer(http.StatusTooManyRequests, `{"isValid":false,"invalidReason":"rate_limited","success":false,"errorReason":"rate_limited"}`)
		return
	case mode == "refuse-settle" && r.URL.Path == "/settle":
		answer(http.StatusOK, `{"success":false,"errorReason":"invalid_exact_evm_transaction_simulation_failed","transaction":"","network":"`+e2eNetwork+`"}`)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.to+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		p.t.Error(err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	if mode == "lose-settle-answer" && r.URL.Path == "/settle" {
		http.Error(w, "gateway timeout", http.StatusGatewayTimeout) // settled, answer lost
		return
	}
	w.Header().Set("Content-Type", res.Header.Get("Content-Type"))
	w.WriteHeader(res.StatusCode)
	_, _ = w.Write(out)
}

// TestX402RemoteFacilitatorMisbehaving: what a facilitator answers reaches the payer as the
// protocol says: its refusal at /verify is a 402 with its reason; a facilitator that asks us to
// come back later is a 503 with Retry-After; a refusal at /settle withholds the result and
// charges nothing; a lost /settle answer is pending, never failed, and charged once.
func TestX402RemoteFacilitatorMisbehaving(t *testing.T) {
	f := newX402Fixture(t)
	fac := startFacilitator(t, f.rpcURL, e2eChainID, freePort(t))
	proxy := newFacilitatorProxy(t, fac.url)
	dbURL, db := freshSchema(t)
	gw := startGatewayProc(t, "gateway-FM", f.facilitatorEnv(dbURL, proxy.srv.URL))

	// paid sends one fresh payment of payer2 for a dry run marked marker.
	paid := func(t *testing.T, marker string) (payment, []byte, map[string]string) {
		body := dryRunBody(marker)
		p := pay(t, f.offer(t, gw.base, body), f.keys["payer2"], nil, nil)
		return p, body, map[string]string{x402.HeaderPaymentSignature: p.header}
	}

	t.Run("refusal_at_verify_is_a_402_with_the_facilitators_reason", func(t *testing.T) {
		p, body, hdr := paid(t, "facilitator-refuses-verify")
		before := f.balances(t)
		proxy.set("refuse-verify")
		r := f.send(t, "POST", gw.base+"/exec/tool", body, hdr)
		proxy.set("")
		expectRefused(t, r, "invalid_exact_evm_token_name_mismatch")
		f.expectMoved(t, before, nil)
		if rows := f.paymentRows(t, db, p.nonce); len(rows) != 0 {
			t.Fatalf("a payment the facilitator refused was recorded: %+v", rows)
		}
	})

	t.Run("rate_limited_facilitator_is_a_503_with_retry_after_and_the_payment_pays_later", func(t *testing.T) {
		p, body, hdr := paid(t, "facilitator-rate-limited")
		before := f.balances(t)
		proxy.set("rate-limited")
		r := f.send(t, "POST", gw.base+"/exec/tool", body, hdr)
		proxy.set("")
		if retry, err := strconv.Atoi(r.header.Get("Retry-After")); r.status != http.StatusServiceUnavailable || err != nil || retry <= 0 || r.body == nil {
			t.Fatalf("rate limited: %d, Retry-After %q: %s", r.status, r.header.Get("Retry-After"), r.raw)
		}
		f.expectMoved(t, before, nil)
		if rows := f.paymentRows(t, db, p.nonce); len(rows) != 0 {
			t.Fatalf("a payment refused for a rate limit was recorded: %+v", rows)
		}
		r = f.send(t, "POST", gw.base+"/exec/tool", body, hdr)
		if st := settlementOf(t, r.raw); r.status != http.StatusOK || st == nil || st.Status != "settled" {
			t.Fatalf("the same payment once the facilitator takes it: %d %s", r.status, r.raw)
		}
		f.expectMoved(t, before, map[string]int64{"payer2": -priceDryRun, "payTo": priceDryRun})
	})

	t.Run("refusal_at_settle_withholds_the_result_and_charges_nothing", func(t *testing.T) {
		p, body, hdr := paid(t, "facilitator-refuses-settle")
		before := f.balances(t)
		proxy.set("refuse-settle")
		r := f.send(t, "POST", gw.base+"/exec/tool", body, hdr)
		proxy.set("")
		if r.status != http.StatusPaymentRequired || r.str("code") != x402.ReasonTransactionSimulationFailed {
			t.Fatalf("refused at /settle: %d %q: %s", r.status, r.str("code"), r.raw)
		}
		if _, ok := r.body["result"]; ok {
			t.Fatalf("a refused settlement's 402 carries the result: %s", r.raw)
		}
		if pr, err := x402.DecodePaymentRequired(r.header.Get(x402.HeaderPaymentRequired)); err != nil || pr.Error != x402.ReasonTransactionSimulationFailed {
			t.Fatalf("PAYMENT-REQUIRED %+v, %v; want error %s", pr, err, x402.ReasonTransactionSimulationFailed)
		}
		f.expectMoved(t, before, nil)
		if rows := f.paymentRows(t, db, p.nonce); len(rows) != 1 || rows[0].Status != "not_charged" {
			t.Fatalf("ledger rows %+v, want one not_charged", rows)
		}
	})

	t.Run("lost_settle_answer_is_pending_never_failed_and_charged_once", func(t *testing.T) {
		p, body, hdr := paid(t, "facilitator-loses-settle-answer")
		before := f.balances(t)
		proxy.set("lose-settle-answer")
		r := f.send(t, "POST", gw.base+"/exec/tool", body, hdr)
		proxy.set("")
		if st := settlementOf(t, r.raw); r.status != http.StatusOK || st == nil || st.Status != "pending" {
			t.Fatalf("settled with the answer lost: %d %s; want 200, pending", r.status, r.raw)
		}
		f.expectMoved(t, before, map[string]int64{"payer2": -priceDryRun, "payTo": priceDryRun})
		if rows := f.paymentRows(t, db, p.nonce); len(rows) != 1 || rows[0].Status != "settling" {
			t.Fatalf("ledger rows %+v, want one settling (left to reconciliation)", rows)
		}
		expectRefused(t, f.send(t, "POST", gw.base+"/exec/tool", body, hdr), x402.ReasonNonceAlreadyUsed)
		f.expectMoved(t, before, map[string]int64{"payer2": -priceDryRun, "payTo": priceDryRun})
	})
}

// runGatewayToExit runs `secureexec serve` with env and returns its output and exit error; it
// must exit by itself within 30 s (a start-up refusal).
func runGatewayToExit(t *testing.T, env map[string]string) (string, error) {
	t.Helper()
	env["HOST"], env["PORT"] = "127.0.0.1", strconv.Itoa(freePort(t))
	env["LOG_FILE"] = filepath.Join(t.TempDir(), "refused.log")
	env["SECUREEXEC_DATA_DIR"] = t.TempDir()
	vars := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := osexec.CommandContext(ctx, gatewayBinary(t), "serve")
	cmd.Env = vars
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("did not exit within 30 s: %w", ctx.Err())
	}
	return string(out), err
}
