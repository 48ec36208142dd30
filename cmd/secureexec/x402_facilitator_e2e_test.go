package main

// X402_FACILITATOR_URL end to end: the official x402 facilitator (@x402/core and @x402/evm
// 2.27.0 from npm, unmodified, scripts/x402-facilitator.mjs) in its own process settles for a
// gateway process that holds no settlement key, on anvil; the money is checked on the chain.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
