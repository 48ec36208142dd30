package chain

import (
	"encoding/json"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/secureexec/secureexec/contracts/bindings/settlementbatcher"
	"github.com/secureexec/secureexec/contracts/bindings/testusdc"
)

// vector is one entry of testdata/eip3009.json (a copy of shared/protocols/vectors/eip3009.json).
type vector struct {
	ID               string `json:"id"`
	SignerPrivateKey string `json:"signerPrivateKey"`
	SignerAddress    string `json:"signerAddress"`
	Domain           struct {
		Name              string `json:"name"`
		Version           string `json:"version"`
		ChainID           uint64 `json:"chainId"`
		VerifyingContract string `json:"verifyingContract"`
	} `json:"domain"`
	DomainSeparator string `json:"domainSeparator"`
	Digest          string `json:"digest"`
	PaymentPayload  struct {
		Payload struct {
			Signature     string `json:"signature"`
			Authorization struct {
				From        string `json:"from"`
				To          string `json:"to"`
				Value       string `json:"value"`
				ValidAfter  string `json:"validAfter"`
				ValidBefore string `json:"validBefore"`
				Nonce       string `json:"nonce"`
			} `json:"authorization"`
		} `json:"payload"`
	} `json:"paymentPayload"`
}

func loadVectors(t testing.TB) map[string]vector {
	t.Helper()
	b, err := os.ReadFile("testdata/eip3009.json")
	if err != nil {
		t.Fatalf("read vectors: %v", err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatalf("parse vectors: %v", err)
	}
	out := make(map[string]vector, len(vs))
	for _, v := range vs {
		out[v.ID] = v
	}
	return out
}

func bigDec(t testing.TB, s string) *big.Int {
	t.Helper()
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		t.Fatalf("not a decimal: %q", s)
	}
	return v
}

// vectorAuth turns a vector's authorization and signature into an Authorization.
func vectorAuth(t testing.TB, v vector) Authorization {
	t.Helper()
	a := v.PaymentPayload.Payload.Authorization
	return Authorization{
		From:        common.HexToAddress(a.From),
		To:          common.HexToAddress(a.To),
		Value:       bigDec(t, a.Value),
		ValidAfter:  bigDec(t, a.ValidAfter),
		ValidBefore: bigDec(t, a.ValidBefore),
		Nonce:       common.HexToHash(a.Nonce),
		Signature:   common.FromHex(v.PaymentPayload.Payload.Signature),
	}
}

// TestEIP712Vectors recomputes every vector's domain separator and digest by hand and
// recovers the signer from its signature, with no chain involved.
func TestEIP712Vectors(t *testing.T) {
	vs := loadVectors(t)
	for _, id := range []string{"base-mainnet-usdc", "base-sepolia-usdc", "local-31337-mock", "local-1337-mock"} {
		t.Run(id, func(t *testing.T) {
			v, ok := vs[id]
			if !ok {
				t.Fatalf("vector %s missing", id)
			}
			ds := domainSeparator(v.Domain.Name, v.Domain.Version, v.Domain.ChainID, common.HexToAddress(v.Domain.VerifyingContract))
			if ds != common.HexToHash(v.DomainSeparator) {
				t.Fatalf("domain separator %s, vector %s", ds.Hex(), v.DomainSeparator)
			}
			a := vectorAuth(t, v)
			digest := typedDigest(ds, authStructHash(transferTypehash, a))
			if digest != common.HexToHash(v.Digest) {
				t.Fatalf("digest %s, vector %s", digest.Hex(), v.Digest)
			}
			sig := append([]byte(nil), a.Signature...)
			sig[64] -= 27
			pub, err := crypto.SigToPub(digest.Bytes(), sig)
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			if got := crypto.PubkeyToAddress(*pub); got != common.HexToAddress(v.SignerAddress) || got != a.From {
				t.Fatalf("recovered %s, want %s", got.Hex(), v.SignerAddress)
			}
		})
	}
}

func TestStartSimulated(t *testing.T) {
	d := startDev(t, DevChainOptions{})
	ctx := testCtx(t)
	c := d.Client()

	if id, err := c.ChainID(ctx); err != nil || id.Uint64() != SimulatedChainID || d.ChainID().Uint64() != SimulatedChainID {
		t.Fatalf("chain id %v (%v), want %d", id, err, SimulatedChainID)
	}
	addrs := d.Addresses()
	for name, a := range map[string]common.Address{"token": addrs.Token, "batcher": addrs.Batcher} {
		code, err := c.CodeAt(ctx, a, nil)
		if err != nil || len(code) == 0 {
			t.Fatalf("no code at %s %s (%v)", name, a.Hex(), err)
		}
	}
	op := crypto.PubkeyToAddress(DevOperatorKey().PublicKey)
	if addrs.Deployer != op || d.Operator().Address != op {
		t.Fatalf("deployer %s, operator %s, want %s", addrs.Deployer.Hex(), d.Operator().Address.Hex(), op.Hex())
	}
	b := settlementbatcher.NewSettlementBatcher()
	if got, _ := b.UnpackOperator(call(t, c, addrs.Batcher, b.PackOperator())); got != op {
		t.Fatalf("batcher operator %s, want %s", got.Hex(), op.Hex())
	}
	tok := testusdc.NewTestUSDC()
	if got, _ := tok.UnpackOwner(call(t, c, addrs.Token, tok.PackOwner())); got != op {
		t.Fatalf("token owner %s, want %s", got.Hex(), op.Hex())
	}

	accs := d.Accounts()
	if len(accs) != 5 {
		t.Fatalf("%d accounts, want 5", len(accs))
	}
	seen := map[common.Address]bool{op: true}
	total := new(big.Int)
	for i, a := range accs {
		if seen[a.Address] {
			t.Fatalf("account %d %s repeats an address", i, a.Address.Hex())
		}
		seen[a.Address] = true
		if crypto.PubkeyToAddress(mustKey(t, a.PrivateKeyHex).PublicKey) != a.Address || a.Address != crypto.PubkeyToAddress(DevKey(i).PublicKey) {
			t.Fatalf("account %d: key does not match address", i)
		}
		usdc, err := TokenBalance(ctx, c, addrs.Token, a.Address)
		if err != nil || usdc.Cmp(DefaultDevUSDC) != 0 || a.USDC.Cmp(DefaultDevUSDC) != 0 {
			t.Fatalf("account %d USDC %v (%v), listed %v, want %v", i, usdc, err, a.USDC, DefaultDevUSDC)
		}
		total.Add(total, usdc)
		wei, err := c.BalanceAt(ctx, a.Address, nil)
		if err != nil || wei.Cmp(DefaultDevWei) != 0 {
			t.Fatalf("account %d wei %v (%v), want %v", i, wei, err, DefaultDevWei)
		}
	}
	supply, err := tok.UnpackTotalSupply(call(t, c, addrs.Token, tok.PackTotalSupply()))
	if err != nil || supply.Cmp(total) != 0 {
		t.Fatalf("total supply %v (%v), want %v", supply, err, total)
	}

	js, err := json.Marshal(struct {
		Addresses Addresses    `json:"addresses"`
		Accounts  []DevAccount `json:"accounts"`
	}{addrs, accs})
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var back struct {
		Addresses Addresses `json:"addresses"`
	}
	if err := json.Unmarshal(js, &back); err != nil || back.Addresses != addrs {
		t.Fatalf("addresses JSON round trip: %+v (%v) from %s", back.Addresses, err, js)
	}
}

func TestTokenMetadata(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 1})
	c, token := d.Client(), d.Addresses().Token
	tok := testusdc.NewTestUSDC()

	name, _ := tok.UnpackName(call(t, c, token, tok.PackName()))
	version, _ := tok.UnpackVersion(call(t, c, token, tok.PackVersion()))
	symbol, _ := tok.UnpackSymbol(call(t, c, token, tok.PackSymbol()))
	decimals, _ := tok.UnpackDecimals(call(t, c, token, tok.PackDecimals()))
	if name != "USD Coin" || version != "2" || symbol != "USDC" || decimals != 6 {
		t.Fatalf("metadata %q %q %q %d", name, version, symbol, decimals)
	}
	ds, err := tok.UnpackDOMAINSEPARATOR(call(t, c, token, tok.PackDOMAINSEPARATOR()))
	if err != nil || common.Hash(ds) != domainSeparator("USD Coin", "2", SimulatedChainID, token) {
		t.Fatalf("DOMAIN_SEPARATOR %x (%v), want %s", ds, err, domainSeparator("USD Coin", "2", SimulatedChainID, token).Hex())
	}
	th, _ := tok.UnpackTRANSFERWITHAUTHORIZATIONTYPEHASH(call(t, c, token, tok.PackTRANSFERWITHAUTHORIZATIONTYPEHASH()))
	if common.Hash(th) != common.HexToHash("0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267") {
		t.Fatalf("typehash %x", th)
	}
}

// TestVector1337OnChain deploys from anvil's key #0 so the token lands at the vector's
// verifyingContract, then relays the vector's signature unchanged: the digest the shared
// vector was signed over is the one the contract checks. The vector expires (validBefore
// 2030-01-01), after which the chain refuses it whatever its signature: the same
// authorization, with a later validBefore and another nonce, signed with the vector's own key
// by our digest (which TestEIP712Vectors holds to the vector's), is relayed too, always.
func TestVector1337OnChain(t *testing.T) {
	v := loadVectors(t)["local-1337-mock"]
	anvil0 := mustKey(t, "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
	d := startDev(t, DevChainOptions{Accounts: 1, OperatorKey: anvil0})
	c, token := d.Client(), d.Addresses().Token
	if token != common.HexToAddress(v.Domain.VerifyingContract) {
		t.Fatalf("token at %s, vector expects %s", token.Hex(), v.Domain.VerifyingContract)
	}
	tok := testusdc.NewTestUSDC()
	ds, _ := tok.UnpackDOMAINSEPARATOR(call(t, c, token, tok.PackDOMAINSEPARATOR()))
	if common.Hash(ds) != common.HexToHash(v.DomainSeparator) {
		t.Fatalf("on-chain DOMAIN_SEPARATOR %x, vector %s", ds, v.DomainSeparator)
	}
	op := newSender(t, c, anvil0, d.ChainID())
	relay := func(t *testing.T, a Authorization) {
		mined(t, d, op, token, PackMint(a.From, a.Value))
		data, err := PackTransferWithAuthorization(a)
		if err != nil {
			t.Fatal(err)
		}
		r := mined(t, d, op, token, data)
		if !HasTransfer(r, token, a.From, a.To, a.Value) {
			t.Fatalf("no Transfer(%s, %s, %v) in receipt", a.From.Hex(), a.To.Hex(), a.Value)
		}
	}
	a := vectorAuth(t, v)
	t.Run("the vector's signature", func(t *testing.T) {
		if !time.Now().Add(time.Minute).Before(time.Unix(a.ValidBefore.Int64(), 0)) {
			t.Skipf("the vector's authorization expired at %s", time.Unix(a.ValidBefore.Int64(), 0).UTC())
		}
		relay(t, a)
	})
	t.Run("re-signed with the vector's key", func(t *testing.T) {
		again := a
		again.ValidBefore = big.NewInt(time.Now().Add(time.Hour).Unix())
		again.Nonce = crypto.Keccak256Hash([]byte("resigned:" + v.PaymentPayload.Payload.Authorization.Nonce))
		relay(t, signTransfer(t, again, mustKey(t, v.SignerPrivateKey), d.ChainID().Uint64(), token))
	})
}
