package chain

import (
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/secureexec/secureexec/chain/chaintest"
	"github.com/secureexec/secureexec/contracts/bindings/testusdc"
)

// TestAnvilDeployAndSettle deploys to a real node in another process with the chain-agnostic
// Deploy, then settles the shared local-31337 vector's signature there unchanged.
func TestAnvilDeployAndSettle(t *testing.T) {
	v := loadVectors(t)["local-31337-mock"]
	_, c := chaintest.StartAnvil(t, 31337)
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
