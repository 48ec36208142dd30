package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/secureexec/secureexec/contracts/bindings/testusdc"
)

// cappedBuffer keeps the first bytes of a child's output for failure messages.
type cappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 64<<10 - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startAnvil runs the npm-pinned anvil on a free loopback port and returns a client for it;
// both are stopped (anvil by its PID) when the test ends.
func startAnvil(t *testing.T, chainID uint64) *ethclient.Client {
	t.Helper()
	if os.Getenv("SECUREEXEC_SKIP_ANVIL") == "1" {
		t.Skip("SECUREEXEC_SKIP_ANVIL=1")
	}
	bin, err := filepath.Abs(filepath.Join("..", "node_modules", "@foundry-rs", fmt.Sprintf("anvil-%s-%s", runtime.GOOS, runtime.GOARCH), "bin", "anvil"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("anvil binary missing (%v): run `make anvil` (or `npm ci`) in the repo root, or set SECUREEXEC_SKIP_ANVIL=1 to skip", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	var out cappedBuffer
	cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", port, "--chain-id", strconv.FormatUint(chainID, 10), "--silent")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start anvil: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	// A private transport: no proxy from the environment, and idle connections closed at the end.
	tr := &http.Transport{DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}
	rc, err := rpc.DialOptions(context.Background(), "http://127.0.0.1:"+port, rpc.WithHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}))
	if err != nil {
		t.Fatalf("dial anvil: %v", err)
	}
	c := ethclient.NewClient(rc)
	t.Cleanup(func() { c.Close(); tr.CloseIdleConnections() })

	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		id, err := c.ChainID(ctx)
		cancel()
		if err == nil {
			if id.Uint64() != chainID {
				t.Fatalf("anvil chain id %v, want %d", id, chainID)
			}
			return c
		}
		select {
		case werr := <-exited:
			exited <- werr // let the cleanup see it too
			t.Fatalf("anvil exited before serving: %v; output:\n%s", werr, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("anvil not ready on port %s: %v; output:\n%s", port, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAnvilDeployAndSettle deploys to a real node in another process with the chain-agnostic
// Deploy, then settles the shared local-31337 vector's signature there unchanged.
func TestAnvilDeployAndSettle(t *testing.T) {
	v := loadVectors(t)["local-31337-mock"]
	c := startAnvil(t, 31337)
	ctx := testCtx(t)
	chainID := big.NewInt(31337)
	anvil0 := mustKey(t, "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")

	start := time.Now()
	addrs, err := Deploy(ctx, c, anvil0, chainID)
	if err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	t.Logf("anvil: Deploy took %v: %+v", time.Since(start), addrs)
	if addrs.Token != common.HexToAddress(v.Domain.VerifyingContract) {
		t.Fatalf("token at %s, vector expects %s (first contract of anvil key #0)", addrs.Token.Hex(), v.Domain.VerifyingContract)
	}
	tok := testusdc.NewTestUSDC()
	if ds, err := tok.UnpackDOMAINSEPARATOR(call(t, c, addrs.Token, tok.PackDOMAINSEPARATOR())); err != nil || common.Hash(ds) != common.HexToHash(v.DomainSeparator) {
		t.Fatalf("DOMAIN_SEPARATOR %x (%v), vector %s", ds, err, v.DomainSeparator)
	}

	s := newSender(t, c, anvil0, chainID)
	a := vectorAuth(t, v)
	h, err := s.Send(ctx, addrs.Token, PackMint(a.From, new(big.Int).Mul(a.Value, big.NewInt(2)))) // one for the vector, one after the fork
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.WaitReceipt(ctx, h, 10*time.Millisecond); err != nil || r.Status != 1 {
		t.Fatalf("mint: %v", err)
	}

	data, err := PackTransferWithAuthorization(a)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	h, err = s.Send(ctx, addrs.Token, data)
	if err != nil {
		t.Fatalf("send transferWithAuthorization: %v", err)
	}
	r, err := s.WaitReceipt(ctx, h, 10*time.Millisecond)
	if err != nil {
		t.Fatalf("receipt: %v", err)
	}
	t.Logf("anvil: transferWithAuthorization sent and mined in %v, gas %d", time.Since(start), r.GasUsed)
	if !HasTransfer(r, addrs.Token, a.From, a.To, a.Value) {
		t.Fatalf("receipt lacks Transfer(%s, %s, %v)", a.From.Hex(), a.To.Hex(), a.Value)
	}
	if bal, err := TokenBalance(ctx, c, addrs.Token, a.To); err != nil || bal.Cmp(a.Value) != 0 {
		t.Fatalf("payee balance %v (%v), want %v", bal, err, a.Value)
	}

	_, err = s.Send(ctx, addrs.Token, data)
	if !errors.Is(err, ErrExecutionReverted) || RevertReason(err) != "FiatTokenV2: authorization is used or canceled" {
		t.Fatalf("replay on anvil: %v (reason %q)", err, RevertReason(err))
	}

	// A chain fork changes block.chainid: the token must rebuild its domain separator, so a
	// signature made for the old chain id no longer verifies.
	if err := c.Client().CallContext(ctx, nil, "anvil_setChainId", 31338); err != nil {
		t.Fatalf("anvil_setChainId: %v", err)
	}
	ds, _ := tok.UnpackDOMAINSEPARATOR(call(t, c, addrs.Token, tok.PackDOMAINSEPARATOR()))
	if common.Hash(ds) != domainSeparator("USD Coin", "2", 31338, addrs.Token) {
		t.Fatalf("after fork DOMAIN_SEPARATOR %x, want the chain-31338 separator", ds)
	}
	fresh := a
	fresh.Nonce = nonceOf(0x51)
	fresh = signTransfer(t, fresh, mustKey(t, v.SignerPrivateKey), 31337, addrs.Token)
	forked, _ := PackTransferWithAuthorization(fresh)
	if got := simulate(t, c, s.Address(), addrs.Token, forked); got != "FiatTokenV2: invalid signature" {
		t.Fatalf("old-chain signature after fork: %q", got)
	}
	fresh = signTransfer(t, fresh, mustKey(t, v.SignerPrivateKey), 31338, addrs.Token)
	forked, _ = PackTransferWithAuthorization(fresh)
	if got := simulate(t, c, s.Address(), addrs.Token, forked); got != "" {
		t.Fatalf("new-chain signature after fork: %q", got)
	}
}
