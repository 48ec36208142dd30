package main

// The x402 rail end to end, across processes: anvil (a chain in its own process), the real
// secureexec binary started as several gateway processes sharing Postgres and Redis, and payers
// in the test process (the Go SDK, hand-built payments) and in node (the official TypeScript
// client). Every money claim is checked against the token's balanceOf on the chain, to the
// atomic unit.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/chain/chaintest"
	"github.com/secureexec/secureexec/client"
	"github.com/secureexec/secureexec/payments/ledger"
	"github.com/secureexec/secureexec/payments/x402"
)

// Public anvil/hardhat test keys (chain-tooling.md §8), never used on a real network. Key #0
// (anvilKey0) deploys, mints and settles; #1 is paid; #2 pays from Go, #3 from TypeScript; #4
// never holds a token.
const (
	anvilKey1 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
	anvilKey2 = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
	anvilKey3 = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"
	anvilKey4 = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"
)

const (
	e2eChainID   = 31337
	e2eNetwork   = "eip155:31337"
	priceDryRun  = 10_000    // $0.01, the seed's dry-run price, in atomic units
	priceReal    = 50_000    // $0.05, a real run
	mintPerPayer = 1_000_000 // 1 USDC to each funded payer
	e2eRedisURL  = "redis://127.0.0.1:6379/0"
)

// e2eBinDir holds the gateway binary built for this test run; TestMain removes it.
var e2eBinDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "secureexec-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "secureexec e2e: temp dir:", err)
		os.Exit(1)
	}
	e2eBinDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var gatewayBuild struct {
	once sync.Once
	path string
	err  error
}

// gatewayBinary builds this package into e2eBinDir once per run, on first use, so that tests
// that start no process do not pay for the build. Under -race the binary is race-built too
// (it then links the packages the test binary already compiled), and a race in any gateway
// process fails the test that stops it.
func gatewayBinary(t *testing.T) string {
	t.Helper()
	gatewayBuild.once.Do(func() {
		goTool, err := osexec.LookPath("go")
		if err != nil {
			gatewayBuild.err = fmt.Errorf("the go tool is not on PATH: %w", err)
			return
		}
		out := filepath.Join(e2eBinDir, "secureexec")
		args := []string{"build", "-o", out}
		if raceBuild() {
			args = append(args, "-race")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := osexec.CommandContext(ctx, goTool, append(args, ".")...)
		cmd.Env = os.Environ()
		start := time.Now()
		if b, err := cmd.CombinedOutput(); err != nil {
			gatewayBuild.err = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
			return
		}
		t.Logf("built the gateway binary in %v (race: %v)", time.Since(start).Round(time.Millisecond), raceBuild())
		gatewayBuild.path = out
	})
	if gatewayBuild.err != nil {
		t.Fatal(gatewayBuild.err)
	}
	return gatewayBuild.path
}

func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// procOutput keeps the first 256 KiB of a child's output, for failure messages.
type procOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *procOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := 256<<10 - o.buf.Len(); room > 0 {
		o.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (o *procOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// gatewayProc is one `secureexec serve` process.
type gatewayProc struct {
	name    string
	base    string
	cmd     *osexec.Cmd
	out     *procOutput
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

// startGatewayProc runs the binary with exactly env (plus HOST, PORT, LOG_FILE, LOG_LEVEL and a
// fresh SECUREEXEC_DATA_DIR), waits until /health answers, and stops it by its PID when t ends.
func startGatewayProc(t *testing.T, name string, env map[string]string) *gatewayProc {
	t.Helper()
	bin := gatewayBinary(t)
	port := freePort(t)
	env["HOST"] = "127.0.0.1"
	env["PORT"] = strconv.Itoa(port)
	// An empty LOG_FILE reads as unset (and so as its default, /tmp/secureexec.log): give each
	// process a file of its own instead.
	env["LOG_FILE"] = filepath.Join(t.TempDir(), name+".log")
	env["LOG_LEVEL"] = "warn"
	env["SECUREEXEC_DATA_DIR"] = t.TempDir()
	vars := []string{"PATH=" + os.Getenv("PATH")} // nothing else leaks in from the developer's shell
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	g := &gatewayProc{name: name, base: fmt.Sprintf("http://127.0.0.1:%d", port), out: &procOutput{}, exited: make(chan struct{})}
	g.cmd = osexec.Command(bin, "serve")
	g.cmd.Env = vars
	g.cmd.Stdout, g.cmd.Stderr = g.out, g.out
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { g.waitErr = g.cmd.Wait(); close(g.exited) }()
	t.Cleanup(func() { g.stop(t) })

	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(g.base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g
			}
		}
		select {
		case <-g.exited:
			t.Fatalf("%s exited before serving (%v):\n%s", name, g.waitErr, g.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not serving on %s after 30 s (%v):\n%s", name, g.base, err, g.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM (the gateway finishes requests in flight and drains its audit queue),
// waits, and kills after a deadline. It fails t on an unclean exit or a reported data race.
func (g *gatewayProc) stop(t *testing.T) {
	g.once.Do(func() {
		_ = syscall.Kill(g.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-g.exited:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(g.cmd.Process.Pid, syscall.SIGKILL)
			<-g.exited
			t.Errorf("%s did not exit within 20 s of SIGTERM: killed", g.name)
		}
		out := g.out.String()
		switch {
		case strings.Contains(out, "WARNING: DATA RACE"):
			t.Errorf("%s reported a data race:\n%s", g.name, out)
		case g.waitErr != nil:
			t.Errorf("%s exited with %v:\n%s", g.name, g.waitErr, out)
		case t.Failed():
			t.Logf("%s output:\n%s", g.name, out)
		}
	})
}

// x402Fixture is the chain, the contracts and the first gateway every scenario shares.
type x402Fixture struct {
	ctx     context.Context
	eth     *ethclient.Client
	rpcURL  string
	token   common.Address
	batcher common.Address
	payTo   common.Address
	keys    map[string]*ecdsa.PrivateKey // payer2, payer3, payer4
	dbURL   string                       // schema of gateway A, B1, B2 (and D)
	db      *pgx.Conn                    // the same schema, for the tables
	http    *http.Client
	a       *gatewayProc
}

func mustKey(t *testing.T, hexKey string) *ecdsa.PrivateKey {
	t.Helper()
	k, err := crypto.HexToECDSA(strings.TrimPrefix(hexKey, "0x"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func addr(k *ecdsa.PrivateKey) common.Address { return crypto.PubkeyToAddress(k.PublicKey) }

// env is the gateway configuration for the anvil chain; the caller adds the database.
func (f *x402Fixture) env(dbURL, redisURL string) map[string]string {
	return map[string]string{
		"X402_NETWORK":           "custom",
		"ETH_RPC_URL":            f.rpcURL,
		"X402_TOKEN_ADDRESS":     f.token.Hex(),
		"X402_BATCHER_ADDRESS":   f.batcher.Hex(),
		"SETTLEMENT_PRIVATE_KEY": anvilKey0,
		"PAYMENT_WALLET":         f.payTo.Hex(),
		"DATABASE_URL":           dbURL,
		"REDIS_URL":              redisURL,
	}
}

func newX402Fixture(t *testing.T) *x402Fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	dbURL, db := freshSchema(t) // fails without Postgres unless SECUREEXEC_SKIP_PG=1
	rpcURL, eth := chaintest.StartAnvil(t, e2eChainID)

	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", DialTimeout: 2 * time.Second, MaxRetries: -1})
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	err := rdb.Ping(pctx).Err()
	pcancel()
	rdb.Close()
	if err != nil {
		t.Fatalf("Redis unreachable at 127.0.0.1:6379 (set SECUREEXEC_SKIP_PG=1 to skip the tests that need the services): %v", err)
	}

	deployer := mustKey(t, anvilKey0)
	addrs, err := chain.Deploy(ctx, eth, deployer, big.NewInt(e2eChainID))
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	f := &x402Fixture{
		ctx: ctx, eth: eth, rpcURL: rpcURL, token: addrs.Token, batcher: addrs.Batcher,
		payTo: addr(mustKey(t, anvilKey1)), dbURL: dbURL, db: db,
		keys: map[string]*ecdsa.PrivateKey{"payer2": mustKey(t, anvilKey2), "payer3": mustKey(t, anvilKey3), "payer4": mustKey(t, anvilKey4)},
	}
	tr := &http.Transport{DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext, MaxIdleConnsPerHost: 64}
	f.http = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)

	minter, err := chain.NewSender(eth, deployer, big.NewInt(e2eChainID), chain.SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"payer2", "payer3"} {
		h, err := minter.Send(ctx, f.token, chain.PackMint(addr(f.keys[name]), big.NewInt(mintPerPayer)))
		if err != nil {
			t.Fatalf("mint to %s: %v", name, err)
		}
		if r, err := minter.WaitReceipt(ctx, h, 10*time.Millisecond); err != nil || r.Status != types.ReceiptStatusSuccessful {
			t.Fatalf("mint to %s: %v", name, err)
		}
	}
	for name, want := range map[string]int64{"payer2": mintPerPayer, "payer3": mintPerPayer, "payer4": 0} {
		if got := f.balance(t, addr(f.keys[name])); got.Cmp(big.NewInt(want)) != 0 {
			t.Fatalf("%s holds %v after minting, want %d", name, got, want)
		}
	}
	f.a = startGatewayProc(t, "gateway-A", f.env(dbURL, e2eRedisURL))
	return f
}

func (f *x402Fixture) balance(t *testing.T, who common.Address) *big.Int {
	t.Helper()
	b, err := chain.TokenBalance(f.ctx, f.eth, f.token, who)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// balances snapshots every account a scenario could move money between.
func (f *x402Fixture) balances(t *testing.T) map[string]*big.Int {
	t.Helper()
	m := map[string]*big.Int{"payTo": f.balance(t, f.payTo)}
	for name, k := range f.keys {
		m[name] = f.balance(t, addr(k))
	}
	return m
}

// expectMoved checks that, since before, each account moved by exactly the delta given (in
// atomic units) and every other account did not move at all.
func (f *x402Fixture) expectMoved(t *testing.T, before map[string]*big.Int, deltas map[string]int64) {
	t.Helper()
	after := f.balances(t)
	for name, b := range before {
		got := new(big.Int).Sub(after[name], b)
		if want := big.NewInt(deltas[name]); got.Cmp(want) != 0 {
			t.Errorf("%s balance moved by %v, want exactly %v (before %v, after %v)", name, got, want, b, after[name])
		}
	}
}

// reply is one HTTP answer, read whole (capped at 1 MiB).
type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]json.RawMessage
}

func (r reply) str(key string) string {
	var s string
	_ = json.Unmarshal(r.body[key], &s)
	return s
}

func (f *x402Fixture) send(t *testing.T, method, url string, body []byte, hdr map[string]string) reply {
	t.Helper()
	r, err := f.sendErr(method, url, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sendErr is send without t, for use from goroutines.
func (f *x402Fixture) sendErr(method, url string, body []byte, hdr map[string]string) (reply, error) {
	req, err := http.NewRequestWithContext(f.ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: body: %w", method, url, err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		return reply{}, fmt.Errorf("%s %s: %d with a body that is not a JSON object: %q", method, url, resp.StatusCode, raw)
	}
	return r, nil
}

// offer is what a payer learns from an unpaid call's 402.
type offer struct {
	req      x402.PaymentRequirements
	resource x402.ResourceInfo
}

func (f *x402Fixture) offer(t *testing.T, base string, body []byte) offer {
	t.Helper()
	r := f.send(t, "POST", base+"/exec/tool", body, nil)
	if r.status != http.StatusPaymentRequired {
		t.Fatalf("unpaid call: %d %s", r.status, r.raw)
	}
	pr, err := x402.DecodePaymentRequired(r.header.Get(x402.HeaderPaymentRequired))
	if err != nil {
		t.Fatalf("PAYMENT-REQUIRED: %v", err)
	}
	for _, a := range pr.Accepts {
		if a.Network == e2eNetwork {
			if a.Asset != f.token.Hex() || a.PayTo != f.payTo.Hex() || a.Extra.Name != "USD Coin" || a.Extra.Version != "2" {
				t.Fatalf("offer %+v: not the deployed token, the configured payTo and the token's EIP-712 domain", a)
			}
			return offer{req: a, resource: pr.Resource}
		}
	}
	t.Fatalf("no %s entry in %+v", e2eNetwork, pr.Accepts)
	return offer{}
}

// payment is a hand-made x402 v2 payment of an offer: the default authorization is what the
// reference client signs (x402.md §3); edit changes what is signed (offer echo included),
// tamper changes the payload after signing.
type payment struct {
	header string
	nonce  common.Hash
	from   common.Address
}

func pay(t *testing.T, o offer, signer *ecdsa.PrivateKey, edit func(*x402.PaymentRequirements, *x402.EIP3009Authorization), tamper func(*x402.PaymentPayload)) payment {
	t.Helper()
	var nonce common.Hash
	if _, err := rand.Read(nonce[:]); err != nil {
		t.Fatal(err)
	}
	req := o.req
	auth := x402.EIP3009Authorization{
		From: addr(signer).Hex(), To: req.PayTo, Value: req.Amount, ValidAfter: "0",
		ValidBefore: strconv.FormatInt(time.Now().Unix()+req.MaxTimeoutSeconds, 10), Nonce: nonce.Hex(),
	}
	if edit != nil {
		edit(&req, &auth)
	}
	digest, err := x402.SigningDigest(req, auth)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := crypto.Sign(digest[:], signer)
	if err != nil {
		t.Fatal(err)
	}
	sig[64] += 27 // FiatToken's v
	res := o.resource
	p := &x402.PaymentPayload{X402Version: 2, Resource: &res, Accepted: &req,
		Payload: x402.ExactEVMPayload{Signature: "0x" + hex.EncodeToString(sig), Authorization: auth}}
	if tamper != nil {
		tamper(p)
	}
	h, err := x402.EncodePaymentPayload(p)
	if err != nil {
		t.Fatal(err)
	}
	return payment{header: h, nonce: common.HexToHash(p.Payload.Authorization.Nonce), from: common.HexToAddress(p.Payload.Authorization.From)}
}

// expectRefused checks a 402 that names reason and carries a fresh offer and no tool result.
func expectRefused(t *testing.T, r reply, reason string) {
	t.Helper()
	if r.status != http.StatusPaymentRequired || r.str("code") != reason {
		t.Fatalf("got %d %q, want 402 %s: %s", r.status, r.str("code"), reason, r.raw)
	}
	for _, k := range []string{"result", "jobId", "proofHash", "settlement"} {
		if _, ok := r.body[k]; ok {
			t.Errorf("a refused payment's 402 carries %q: %s", k, r.raw)
		}
	}
	if r.header.Get(x402.HeaderPaymentRequired) == "" || r.header.Get(x402.HeaderPaymentResponse) != "" {
		t.Errorf("402 headers: PAYMENT-REQUIRED %q, PAYMENT-RESPONSE %q", r.header.Get(x402.HeaderPaymentRequired), r.header.Get(x402.HeaderPaymentResponse))
	}
	// The offer says why, as the reference server does (x402.md §5, §7).
	want := reason
	if reason == x402.ReasonNoMatchingRequirements {
		want = x402.MessageNoMatchingRequirements
	}
	if pr, err := x402.DecodePaymentRequired(r.header.Get(x402.HeaderPaymentRequired)); err != nil || pr.Error != want {
		t.Errorf("PAYMENT-REQUIRED of a %s refusal: %+v, %v; want error %q", reason, pr, err, want)
	}
}

type settlementBody struct {
	Status      string `json:"status"`
	ID          string `json:"id"`
	Transaction string `json:"transaction"`
}

func settlementOf(t *testing.T, raw []byte) *settlementBody {
	t.Helper()
	s, err := parseSettlement(raw)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// parseSettlement reads the response body's settlement, nil when it has none.
func parseSettlement(raw []byte) (*settlementBody, error) {
	var b struct {
		Settlement *settlementBody `json:"settlement"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("response body: %w", err)
	}
	return b.Settlement, nil
}

type paymentDoc struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	Payer       string `json:"payer"`
	PayTo       string `json:"payTo"`
	Amount      string `json:"amount"`
	JobID       string `json:"jobId"`
	Transaction string `json:"transaction"`
	BatchID     string `json:"batchId"`
	ErrorReason string `json:"errorReason"`
}

func (f *x402Fixture) payment(t *testing.T, base, id string) paymentDoc {
	t.Helper()
	p, err := f.paymentErr(base, id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// paymentErr is GET /payments/{id} without t: the batch lease callback must return, not
// Goexit, so that the lease is released.
func (f *x402Fixture) paymentErr(base, id string) (paymentDoc, error) {
	r, err := f.sendErr("GET", base+"/payments/"+id, nil, nil)
	if err != nil {
		return paymentDoc{}, err
	}
	if r.status != http.StatusOK {
		return paymentDoc{}, fmt.Errorf("GET /payments/%s: %d %s", id, r.status, r.raw)
	}
	var p paymentDoc
	err = json.Unmarshal(r.raw, &p)
	return p, err
}

// expectTransfers checks that tx is mined, succeeded, and carries n transfers of value from
// payer to payTo emitted by the token.
func (f *x402Fixture) expectTransfers(t *testing.T, tx string, payer common.Address, value int64, n int) *types.Receipt {
	t.Helper()
	r, err := f.eth.TransactionReceipt(f.ctx, common.HexToHash(tx))
	if err != nil || r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("settlement tx %s: receipt %v (%v)", tx, r, err)
	}
	got := 0
	for _, l := range r.Logs {
		if l.Address == f.token && len(l.Topics) == 3 && l.Topics[0] == chain.TransferTopic && len(l.Data) == 32 &&
			common.BytesToAddress(l.Topics[1].Bytes()) == payer && common.BytesToAddress(l.Topics[2].Bytes()) == f.payTo &&
			new(big.Int).SetBytes(l.Data).Cmp(big.NewInt(value)) == 0 {
			got++
		}
	}
	if got != n {
		t.Fatalf("tx %s carries %d Transfer(%s -> %s, %d), want %d", tx, got, payer.Hex(), f.payTo.Hex(), value, n)
	}
	return r
}

// paymentRows reads the ledger's rows of a payment by its authorization nonce.
func (f *x402Fixture) paymentRows(t *testing.T, db *pgx.Conn, nonce common.Hash) []paymentDoc {
	t.Helper()
	rows, err := db.Query(f.ctx, `SELECT id::text, status, payer, amount::text, COALESCE(job_id::text, ''), COALESCE(tx_hash, ''), COALESCE(error_reason, '')
		FROM payments WHERE payload->>'nonce' = $1`, nonce.Hex())
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (paymentDoc, error) {
		var p paymentDoc
		err := r.Scan(&p.ID, &p.Status, &p.Payer, &p.Amount, &p.JobID, &p.Transaction, &p.ErrorReason)
		return p, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f *x402Fixture) goClient(t *testing.T, base string, key *ecdsa.PrivateKey) *client.Client {
	t.Helper()
	c, err := client.New(base, client.WithX402Signer(key), client.WithHTTPClient(f.http), client.WithTimeout(30*time.Second),
		client.WithAllowedAssets(x402.CustomNetwork(e2eChainID, f.token, "USD Coin", "2")))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dryRunCall(marker string) client.Call {
	yes := true
	return client.Call{AgentID: "x402-e2e", Tool: "json_parse", Args: map[string]any{"data": map[string]any{"marker": marker}}, DryRun: &yes}
}

func dryRunBody(marker string) []byte {
	return []byte(`{"agentId":"x402-e2e","tool":{"name":"json_parse","args":{"data":{"marker":"` + marker + `"}}}}`)
}

// TestX402AcrossProcesses is issue 3's proof that the x402 rail works: real processes, a real
// chain, shared Postgres and Redis, and balances read from the token.
func TestX402AcrossProcesses(t *testing.T) {
	f := newX402Fixture(t)
	// Gateway A settles only before B1, B2 and C send with the same settlement key: a replica that
	// settles after another one used the key strands the payment (TestX402SharedSettlementKey).
	t.Run("go_client_pays_a_dry_run", f.goClientPaysADryRun)
	t.Run("bad_payments_are_refused_without_a_result_or_a_charge", f.badPaymentsAreRefused)
	t.Run("sequential_resend_is_refused", f.sequentialResendIsRefused)
	t.Run("a_failed_tool_is_not_charged", f.failedToolIsNotCharged)
	t.Run("redis_unreachable_is_503_and_charges_nothing", f.redisUnreachable)
	t.Run("typescript_client_interop", f.typescriptClientInterop)
	t.Run("50_concurrent_copies_on_two_replicas", f.concurrentCopiesOnTwoReplicas)
	t.Run("batch_settlement", f.batchSettlement)
}

// TestX402SharedSettlementKey checks that a replica settles after another replica used the same
// SETTLEMENT_PRIVATE_KEY. Replicas share that key (batch settlement needs the batcher's one
// operator key on every replica), so under load most settlements follow another replica's
// transaction.
func TestX402SharedSettlementKey(t *testing.T) {
	f := newX402Fixture(t)
	b := startGatewayProc(t, "gateway-B", f.env(f.dbURL, e2eRedisURL))
	payer2 := addr(f.keys["payer2"])
	before := f.balances(t)
	for i, base := range []string{f.a.base, b.base, f.a.base} { // A, then B with the same key, then A again
		res, err := f.goClient(t, base, f.keys["payer2"]).Exec(f.ctx, dryRunCall(fmt.Sprintf("shared-key-%d", i)))
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		st := settlementOf(t, res.Raw)
		if st == nil || st.Status != "settled" {
			rows := f.paymentRows(t, f.db, res.Payment.Nonce)
			onChain := "no transaction recorded"
			if len(rows) == 1 && rows[0].Transaction != "" {
				_, err := f.eth.TransactionReceipt(f.ctx, common.HexToHash(rows[0].Transaction))
				onChain = fmt.Sprintf("receipt of the recorded transaction: %v", err)
			}
			t.Fatalf("call %d (to %s) was answered with settlement %+v, want settled; ledger: %+v; %s", i, base, st, rows, onChain)
		}
		f.expectTransfers(t, st.Transaction, payer2, priceDryRun, 1)
	}
	f.expectMoved(t, before, map[string]int64{"payer2": -3 * priceDryRun, "payTo": 3 * priceDryRun})
}

// goClientPaysADryRun (1): the Go SDK pays a dry run; the money moves once, on chain, and the
// job verifies.
func (f *x402Fixture) goClientPaysADryRun(t *testing.T) {
	payer2 := addr(f.keys["payer2"])
	before := f.balances(t)
	c := f.goClient(t, f.a.base, f.keys["payer2"])
	res, err := c.Exec(f.ctx, dryRunCall("go-client"))
	if err != nil {
		t.Fatal(err)
	}
	st := settlementOf(t, res.Raw)
	if res.Status != "completed" || res.PaymentProtocol != "x402" || st == nil || st.Status != "settled" || st.ID == "" ||
		!strings.HasPrefix(st.Transaction, "0x") || len(st.Transaction) != 66 {
		t.Fatalf("result %s", res.Raw)
	}
	if res.Settlement == nil || !res.Settlement.Success || res.Settlement.Transaction != st.Transaction ||
		res.Settlement.Network != e2eNetwork || !strings.EqualFold(res.Settlement.Payer, payer2.Hex()) {
		t.Fatalf("PAYMENT-RESPONSE %+v, body settlement %+v", res.Settlement, st)
	}
	f.expectMoved(t, before, map[string]int64{"payer2": -priceDryRun, "payTo": priceDryRun})
	f.expectTransfers(t, st.Transaction, payer2, priceDryRun, 1)

	p := f.payment(t, f.a.base, st.ID)
	if p.Status != "settled" || p.Transaction != st.Transaction || p.Amount != strconv.Itoa(priceDryRun) ||
		p.JobID != res.JobID || !strings.EqualFold(p.Payer, payer2.Hex()) || !strings.EqualFold(p.PayTo, f.payTo.Hex()) {
		t.Fatalf("GET /payments/%s = %+v, want settled by %s for job %s", st.ID, p, st.Transaction, res.JobID)
	}
	// The audit log is written asynchronously (within ~20 ms): poll for the job briefly.
	deadline := time.Now().Add(10 * time.Second)
	for {
		j, err := c.VerifyJob(f.ctx, res.JobID)
		if err == nil {
			if j.ProofHash != res.ProofHash || j.PaymentProtocol != "x402" {
				t.Fatalf("job %+v", j)
			}
			break
		}
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || time.Now().After(deadline) {
			t.Fatalf("VerifyJob(%s): %v", res.JobID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// badPaymentsAreRefused (2): every malformed, tampered, mis-addressed or unpayable payment is a
// 402 naming its reason, with no result and no charge.
func (f *x402Fixture) badPaymentsAreRefused(t *testing.T) {
	payer2 := addr(f.keys["payer2"])
	body := dryRunBody("refused")
	o := f.offer(t, f.a.base, body)
	k2, k3, k4 := f.keys["payer2"], f.keys["payer3"], f.keys["payer4"]
	now := time.Now().Unix()
	at := func(secs int64) string { return strconv.FormatInt(secs, 10) }
	var rows int
	if err := f.db.QueryRow(f.ctx, `SELECT count(*) FROM payments`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	before := f.balances(t)
	for _, tc := range []struct {
		name   string
		header func() string
		want   string
	}{
		{"malformed base64", func() string { return "eyJ4NDAyVmVyc2lvbiI6Mn0*not base64*" }, x402.ReasonInvalidPayload},
		{"oversized header", func() string { return strings.Repeat("QUFB", (x402.MaxHeaderBytes/4)+256) }, x402.ReasonInvalidPayload},
		{"base64 of something that is not a payment", func() string { return base64.StdEncoding.EncodeToString([]byte(`{"hello":1}`)) }, x402.ReasonInvalidX402Version},
		{"wrong chain (eip155:1)", func() string {
			return pay(t, o, k2, func(r *x402.PaymentRequirements, _ *x402.EIP3009Authorization) { r.Network = "eip155:1" }, nil).header
		}, x402.ReasonNetworkMismatch},
		{"wrong asset in the echoed offer", func() string {
			return pay(t, o, k2, func(r *x402.PaymentRequirements, _ *x402.EIP3009Authorization) {
				r.Asset = x402.BaseSepolia.Asset.Hex()
			}, nil).header
		}, x402.ReasonNoMatchingRequirements},
		{"signed for another token's domain", func() string {
			return pay(t, o, k2, nil, func(p *x402.PaymentPayload) {
				other := *p.Accepted
				other.Asset = f.batcher.Hex()
				d, _ := x402.SigningDigest(other, p.Payload.Authorization)
				sig, _ := crypto.Sign(d[:], k2)
				sig[64] += 27
				p.Payload.Signature = "0x" + hex.EncodeToString(sig)
			}).header
		}, x402.ReasonSignature},
		{"value tampered after signing", func() string {
			return pay(t, o, k2, nil, func(p *x402.PaymentPayload) { p.Payload.Authorization.Value = "1" }).header
		}, x402.ReasonSignature},
		{"to tampered after signing", func() string {
			return pay(t, o, k2, nil, func(p *x402.PaymentPayload) { p.Payload.Authorization.To = addr(k3).Hex() }).header
		}, x402.ReasonSignature},
		{"validBefore tampered after signing", func() string {
			return pay(t, o, k2, nil, func(p *x402.PaymentPayload) { p.Payload.Authorization.ValidBefore = at(now + 3600) }).header
		}, x402.ReasonSignature},
		{"nonce tampered after signing", func() string {
			return pay(t, o, k2, nil, func(p *x402.PaymentPayload) {
				n := common.HexToHash(p.Payload.Authorization.Nonce)
				n[31] ^= 1
				p.Payload.Authorization.Nonce = n.Hex()
			}).header
		}, x402.ReasonSignature},
		{"expired", func() string {
			return pay(t, o, k2, func(_ *x402.PaymentRequirements, a *x402.EIP3009Authorization) { a.ValidBefore = at(now - 1) }, nil).header
		}, x402.ReasonValidBefore},
		{"expires within the 6 s margin", func() string {
			return pay(t, o, k2, func(_ *x402.PaymentRequirements, a *x402.EIP3009Authorization) { a.ValidBefore = at(now + 3) }, nil).header
		}, x402.ReasonValidBefore},
		{"not yet valid", func() string {
			return pay(t, o, k2, func(_ *x402.PaymentRequirements, a *x402.EIP3009Authorization) {
				a.ValidAfter, a.ValidBefore = at(now+600), at(now+3600)
			}, nil).header
		}, x402.ReasonValidAfter},
		{"unfunded payer (anvil #4)", func() string { return pay(t, o, k4, nil, nil).header }, x402.ReasonInsufficientBalance},
		{"signed by another key than from", func() string {
			return pay(t, o, k3, func(_ *x402.PaymentRequirements, a *x402.EIP3009Authorization) { a.From = payer2.Hex() }, nil).header
		}, x402.ReasonSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectRefused(t, f.send(t, "POST", f.a.base+"/exec/tool", body, map[string]string{x402.HeaderPaymentSignature: tc.header()}), tc.want)
		})
	}
	f.expectMoved(t, before, nil)
	var after int
	if err := f.db.QueryRow(f.ctx, `SELECT count(*) FROM payments`).Scan(&after); err != nil || after != rows {
		t.Fatalf("refusals recorded payments: %d rows before, %d after (%v)", rows, after, err)
	}
}

// sequentialResendIsRefused (3a): the same PAYMENT-SIGNATURE twice is paid once, then refused as
// used.
func (f *x402Fixture) sequentialResendIsRefused(t *testing.T) {
	payer2 := addr(f.keys["payer2"])
	body := dryRunBody("resend")
	p := pay(t, f.offer(t, f.a.base, body), f.keys["payer2"], nil, nil)
	hdr := map[string]string{x402.HeaderPaymentSignature: p.header}
	before := f.balances(t)
	first := f.send(t, "POST", f.a.base+"/exec/tool", body, hdr)
	st := settlementOf(t, first.raw)
	if first.status != http.StatusOK || st == nil || st.Status != "settled" {
		t.Fatalf("first: %d %s", first.status, first.raw)
	}
	f.expectTransfers(t, st.Transaction, payer2, priceDryRun, 1)
	expectRefused(t, f.send(t, "POST", f.a.base+"/exec/tool", body, hdr), x402.ReasonNonceAlreadyUsed)
	f.expectMoved(t, before, map[string]int64{"payer2": -priceDryRun, "payTo": priceDryRun})
}

// concurrentCopiesOnTwoReplicas (3b): of 50 concurrent copies of one payment spread over two
// replicas, one runs and pays and 49 are refused.
func (f *x402Fixture) concurrentCopiesOnTwoReplicas(t *testing.T) {
	payer2 := addr(f.keys["payer2"])
	b1 := startGatewayProc(t, "gateway-B1", f.env(f.dbURL, e2eRedisURL))
	b2 := startGatewayProc(t, "gateway-B2", f.env(f.dbURL, e2eRedisURL))
	marker := "replay-" + uuid.NewString()
	body := dryRunBody(marker)
	p := pay(t, f.offer(t, b1.base, body), f.keys["payer2"], nil, nil)
	before := f.balances(t)

	const copies = 50
	replies := make([]reply, copies)
	errs := make([]error, copies)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range copies {
		base := b1.base
		if i%2 == 1 {
			base = b2.base
		}
		wg.Go(func() {
			<-start
			replies[i], errs[i] = f.sendErr("POST", base+"/exec/tool", body, map[string]string{x402.HeaderPaymentSignature: p.header})
		})
	}
	close(start)
	wg.Wait()
	var ok []reply
	for i, r := range replies {
		switch {
		case errs[i] != nil:
			t.Fatalf("copy %d: %v", i, errs[i])
		case r.status == http.StatusOK:
			ok = append(ok, r)
		default:
			expectRefused(t, r, x402.ReasonNonceAlreadyUsed)
		}
	}
	if len(ok) != 1 {
		t.Fatalf("%d of %d copies answered 200, want exactly 1", len(ok), copies)
	}
	st := settlementOf(t, ok[0].raw)
	if st == nil || st.Status != "settled" {
		t.Fatalf("the one paid call: %s", ok[0].raw)
	}
	f.expectMoved(t, before, map[string]int64{"payer2": -priceDryRun, "payTo": priceDryRun})
	f.expectTransfers(t, st.Transaction, payer2, priceDryRun, 1)

	// Stopping drains both replicas' audit queues: every call that ran is then in Postgres.
	b1.stop(t)
	b2.stop(t)
	var runs int
	var jobID string
	err := f.db.QueryRow(f.ctx, `SELECT count(*), COALESCE(min(job_id::text), '') FROM secureexec_calls
		WHERE record->'tool'->'args'->'data'->>'marker' = $1`, marker).Scan(&runs, &jobID)
	if err != nil || runs != 1 || jobID != ok[0].str("jobId") {
		t.Fatalf("the tool ran %d times (job %s, answered job %s, %v), want once", runs, jobID, ok[0].str("jobId"), err)
	}
	if rows := f.paymentRows(t, f.db, p.nonce); len(rows) != 1 || rows[0].Status != "settled" || rows[0].Transaction != st.Transaction {
		t.Fatalf("ledger rows for the nonce: %+v", rows)
	}
}

// failedToolIsNotCharged (4): a paid call whose tool fails answers 200 "failed" and charges
// nothing.
func (f *x402Fixture) failedToolIsNotCharged(t *testing.T) {
	payer2 := addr(f.keys["payer2"])
	before := f.balances(t)
	c := f.goClient(t, f.a.base, f.keys["payer2"])
	no := false
	// Real mode ($0.05): http_get to a loopback address, which the SSRF guard refuses at run time.
	res, err := c.Exec(f.ctx, client.Call{AgentID: "x402-e2e", Tool: "http_get", Args: map[string]any{"url": "http://127.0.0.1:1/"}, DryRun: &no})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "failed" || res.DryRun || res.Payment == nil || res.Payment.Payer != payer2 || res.Payment.Amount != priceReal ||
		res.Settlement != nil || settlementOf(t, res.Raw) != nil {
		t.Fatalf("result %s (settlement header %+v)", res.Raw, res.Settlement)
	}
	f.expectMoved(t, before, nil)
	rows := f.paymentRows(t, f.db, res.Payment.Nonce)
	if len(rows) != 1 || rows[0].Status != "not_charged" || rows[0].JobID != res.JobID || rows[0].Transaction != "" || rows[0].ErrorReason == "" {
		t.Fatalf("ledger rows for the payment: %+v, want one not_charged for job %s", rows, res.JobID)
	}
}

// batchSettlement (5): batch mode answers "pending", then settles the queued payments in one
// transaction.
func (f *x402Fixture) batchSettlement(t *testing.T) {
	payer2 := addr(f.keys["payer2"])
	dbC, _ := freshSchema(t)
	env := f.env(dbC, e2eRedisURL)
	env["X402_SETTLEMENT_MODE"] = "batch"
	gc := startGatewayProc(t, "gateway-C-batch", env)
	c := f.goClient(t, gc.base, f.keys["payer2"])
	before := f.balances(t)

	// Hold the batch lease, as another replica mid-batch would, while the calls come in:
	// the worker then finds all five queued at once and settles them in one transaction.
	pool, err := pgxpool.New(f.ctx, dbC)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	lease, err := ledger.Open(pool, ledger.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Close()
	// A payer holding exactly two payments: batch mode answers before any money moves, so
	// only the reservations stop a third call from being answered and never paid.
	shortKey, _ := crypto.GenerateKey()
	short := addr(shortKey)
	minter, err := chain.NewSender(f.eth, mustKey(t, anvilKey0), big.NewInt(e2eChainID), chain.SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := minter.Send(f.ctx, f.token, chain.PackMint(short, big.NewInt(2*priceDryRun))); err != nil {
		t.Fatal(err)
	} else if _, err := minter.WaitReceipt(f.ctx, h, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	const calls = 5
	var ids []string
	var shortAnswers []int
	var shortRefusal string
	held := func(ctx context.Context) error {
		for i := range 3 {
			body := dryRunBody(fmt.Sprintf("short-%d", i))
			p := pay(t, f.offer(t, gc.base, body), shortKey, nil, nil)
			r, err := f.sendErr("POST", gc.base+"/exec/tool", body, map[string]string{x402.HeaderPaymentSignature: p.header})
			if err != nil {
				return err
			}
			shortAnswers = append(shortAnswers, r.status)
			if r.status != http.StatusOK {
				shortRefusal = r.str("code")
			}
		}
		for i := range calls {
			res, err := c.Exec(ctx, dryRunCall(fmt.Sprintf("batch-%d", i)))
			if err != nil {
				return err
			}
			st, err := parseSettlement(res.Raw)
			if err != nil {
				return err
			}
			if res.Status != "completed" || st == nil || st.Status != "pending" || st.ID == "" || st.Transaction != "" || !res.Settlement.Pending() {
				return fmt.Errorf("call %d: %s (PAYMENT-RESPONSE %+v)", i, res.Raw, res.Settlement)
			}
			ids = append(ids, st.ID)
		}
		for _, id := range ids {
			p, err := f.paymentErr(gc.base, id)
			if err != nil {
				return err
			}
			if p.Status != "queued" {
				return fmt.Errorf("payment %s is %s while the batch lease is held, want queued", id, p.Status)
			}
		}
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ran, err := lease.RunExclusive(f.ctx, "x402-batch", held)
		if err != nil {
			t.Fatal(err)
		}
		if ran {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("could not take the x402-batch lease in 5 s")
		}
		time.Sleep(20 * time.Millisecond) // the worker holds it for one short tick
	}
	f.expectMoved(t, before, nil) // nothing moves before the batch

	var docs []paymentDoc
	deadline = time.Now().Add(20 * time.Second)
	for {
		docs = docs[:0]
		for _, id := range ids {
			docs = append(docs, f.payment(t, gc.base, id))
		}
		if !slices.ContainsFunc(docs, func(p paymentDoc) bool { return p.Status != "settled" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all settled within 20 s: %+v", docs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tx, batch := docs[0].Transaction, docs[0].BatchID
	for _, p := range docs {
		if p.Transaction != tx || p.BatchID != batch || tx == "" || batch == "" {
			t.Fatalf("payments settled by different transactions or batches: %+v", docs)
		}
	}
	r := f.expectTransfers(t, tx, payer2, priceDryRun, calls)
	if to := mustTx(t, f, tx).To(); to == nil || *to != f.batcher {
		t.Fatalf("batch tx %s (receipt block %v) is not a call to the batcher %s", tx, r.BlockNumber, f.batcher.Hex())
	}
	if !slices.Equal(shortAnswers, []int{200, 200, 402}) || shortRefusal != x402.ReasonInsufficientBalance {
		t.Fatalf("a payer holding two payments got %v (%q) for three, want 200 200 402 %s", shortAnswers, shortRefusal, x402.ReasonInsufficientBalance)
	}
	deadline = time.Now().Add(20 * time.Second)
	for f.balance(t, short).Sign() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the short payer still holds %v: its two answered payments did not both settle", f.balance(t, short))
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.expectMoved(t, before, map[string]int64{"payer2": -calls * priceDryRun, "payTo": (calls + 2) * priceDryRun})

	// The worker's counters reach /metrics: batches were sent, none needed replacing.
	mresp, err := http.Get(gc.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := io.ReadAll(io.LimitReader(mresp.Body, 1<<20))
	mresp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	sent := regexp.MustCompile(`(?m)^secureexec_x402_batches_sent_total ([0-9.e+]+)$`).FindSubmatch(metrics)
	if sent == nil || string(sent[1]) == "0" {
		t.Fatalf("/metrics: secureexec_x402_batches_sent_total %q; want at least one batch", sent)
	}
	if !regexp.MustCompile(`(?m)^secureexec_x402_settlements_replaced_total 0$`).Match(metrics) {
		t.Fatal("/metrics: want secureexec_x402_settlements_replaced_total 0")
	}
}

// redisUnreachable (6): without Redis no nonce can be claimed, so a paid call is a 503 with
// Retry-After and nothing is charged.
func (f *x402Fixture) redisUnreachable(t *testing.T) {
	payer2 := addr(f.keys["payer2"])
	closed := fmt.Sprintf("redis://127.0.0.1:%d/0", freePort(t)) // nothing listens there
	gd := startGatewayProc(t, "gateway-D-no-redis", f.env(f.dbURL, closed))
	body := dryRunBody("no-redis")
	p := pay(t, f.offer(t, gd.base, body), f.keys["payer2"], nil, nil)
	hdr := map[string]string{x402.HeaderPaymentSignature: p.header}
	before := f.balances(t)
	r := f.send(t, "POST", gd.base+"/exec/tool", body, hdr)
	retry, err := strconv.Atoi(r.header.Get("Retry-After"))
	if r.status != http.StatusServiceUnavailable || err != nil || retry <= 0 || r.str("code") != "payment_backend_unavailable" ||
		!strings.Contains(r.header.Get("Content-Type"), "json") {
		t.Fatalf("got %d, Retry-After %q, %s; want 503 payment_backend_unavailable with Retry-After", r.status, r.header.Get("Retry-After"), r.raw)
	}
	if _, ok := r.body["result"]; ok {
		t.Fatalf("a 503 carries a result: %s", r.raw)
	}
	f.expectMoved(t, before, nil)
	if rows := f.paymentRows(t, f.db, p.nonce); len(rows) != 0 {
		t.Fatalf("an unclaimed payment was recorded: %+v", rows)
	}
	// Nothing was claimed, so the same credential still pays, once, on a healthy replica.
	ok := f.send(t, "POST", f.a.base+"/exec/tool", body, hdr)
	st := settlementOf(t, ok.raw)
	if ok.status != http.StatusOK || st == nil || st.Status != "settled" {
		t.Fatalf("the same payment on a healthy replica: %d %s", ok.status, ok.raw)
	}
	f.expectTransfers(t, st.Transaction, payer2, priceDryRun, 1)
	f.expectMoved(t, before, map[string]int64{"payer2": -priceDryRun, "payTo": priceDryRun})
}

// typescriptClientInterop (7): the official TypeScript client (@x402/fetch 2.27.0), unmodified,
// pays through scripts/x402-pay.mjs.
func (f *x402Fixture) typescriptClientInterop(t *testing.T) { f.typeScriptPays(t, f.a.base) }

// typeScriptPays runs the official TypeScript client against the gateway at base, as payer #3,
// and checks the answer, the PAYMENT-RESPONSE and the chain.
func (f *x402Fixture) typeScriptPays(t *testing.T, base string) {
	root := moduleRoot(t)
	for _, pkg := range []string{"@x402/fetch", "@x402/evm", "viem"} {
		if _, err := os.Stat(filepath.Join(root, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("%s is not installed (%v): run `npm ci` in %s", pkg, err, root)
		}
	}
	node, err := osexec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH (%v): the TypeScript interop test needs Node.js 20+", err)
	}
	payer3 := addr(f.keys["payer3"])
	before := f.balances(t)
	ctx, cancel := context.WithTimeout(f.ctx, 90*time.Second)
	defer cancel()
	cmd := osexec.CommandContext(ctx, node, filepath.Join(root, "scripts", "x402-pay.mjs"), base, anvilKey3, f.token.Hex())
	cmd.Dir = root
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr procOutput
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("node scripts/x402-pay.mjs took %v", time.Since(start).Round(time.Millisecond))
	var out struct {
		Status          int             `json:"status"`
		Body            json.RawMessage `json:"body"`
		PaymentResponse *struct {
			Success     bool   `json:"success"`
			Transaction string `json:"transaction"`
			Network     string `json:"network"`
			Payer       string `json:"payer"`
		} `json:"paymentResponse"`
	}
	if err := json.Unmarshal(bytes.TrimSpace([]byte(stdout.String())), &out); err != nil || runErr != nil {
		t.Fatalf("node: %v; stdout %q (%v); stderr:\n%s", runErr, stdout.String(), err, stderr.String())
	}
	var body struct {
		Status          string          `json:"status"`
		ProofHash       string          `json:"proofHash"`
		PaymentProtocol string          `json:"paymentProtocol"`
		Settlement      *settlementBody `json:"settlement"`
	}
	if err := json.Unmarshal(out.Body, &body); err != nil {
		t.Fatal(err)
	}
	pr := out.PaymentResponse
	if out.Status != http.StatusOK || body.Status != "completed" || len(body.ProofHash) != 66 || !strings.HasPrefix(body.ProofHash, "0x") || body.PaymentProtocol != "x402" ||
		body.Settlement == nil || body.Settlement.Status != "settled" {
		t.Fatalf("TS client got %d %s", out.Status, out.Body)
	}
	if pr == nil || !pr.Success || pr.Transaction != body.Settlement.Transaction || pr.Network != e2eNetwork || !strings.EqualFold(pr.Payer, payer3.Hex()) {
		t.Fatalf("PAYMENT-RESPONSE as the TS client decoded it: %+v, body settlement %+v", pr, body.Settlement)
	}
	f.expectMoved(t, before, map[string]int64{"payer3": -priceDryRun, "payTo": priceDryRun})
	f.expectTransfers(t, pr.Transaction, payer3, priceDryRun, 1)
	if p := f.payment(t, base, body.Settlement.ID); p.Status != "settled" || !strings.EqualFold(p.Payer, payer3.Hex()) {
		t.Fatalf("GET /payments/%s = %+v", body.Settlement.ID, p)
	}
}

func mustTx(t *testing.T, f *x402Fixture, hash string) *types.Transaction {
	t.Helper()
	tx, _, err := f.eth.TransactionByHash(f.ctx, common.HexToHash(hash))
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// moduleRoot is the folder holding go.mod, where node_modules and scripts live.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}
