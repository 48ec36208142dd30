package x402

import (
	"crypto/ecdsa"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/secureexec/secureexec/payments"
)

// The anvil/hardhat public test keys (chain-tooling.md §8): #1 is payTo, #2 the payer.
var (
	key0 = mustKey("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
	key1 = mustKey("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
	key2 = mustKey("5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a")
	key3 = mustKey("7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6")

	addr1 = crypto.PubkeyToAddress(key1.PublicKey) // 0x70997970C51812dc3A010C7d01b50e0d17dc79C8
	addr2 = crypto.PubkeyToAddress(key2.PublicKey) // 0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC
	addr3 = crypto.PubkeyToAddress(key3.PublicKey)
)

// localToken is the first contract anvil key #0 deploys, where the dev chain's token lives.
var localToken = common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3")

// testNow is the fixed clock of the table tests.
var testNow = time.Unix(1_750_000_000, 0)

func mustKey(hexKey string) *ecdsa.PrivateKey {
	k, err := crypto.HexToECDSA(hexKey)
	if err != nil {
		panic(err)
	}
	return k
}

// vector is one entry of testdata/eip3009.json (x402.md §12).
type vector struct {
	ID                     string              `json:"id"`
	SignerAddress          string              `json:"signerAddress"`
	DomainSeparator        string              `json:"domainSeparator"`
	Digest                 string              `json:"digest"`
	PaymentRequirements    PaymentRequirements `json:"paymentRequirements"`
	PaymentPayload         json.RawMessage     `json:"paymentPayload"`
	PaymentSignatureHeader string              `json:"paymentSignatureHeader"`
	Domain                 struct {
		Name              string `json:"name"`
		Version           string `json:"version"`
		ChainID           uint64 `json:"chainId"`
		VerifyingContract string `json:"verifyingContract"`
	} `json:"domain"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	b, err := os.ReadFile("testdata/eip3009.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 4 {
		t.Fatalf("%d vectors, want 4", len(vs))
	}
	return vs
}

// localNetwork is a dev chain (31337) with the test token.
var localNetwork = CustomNetwork(31337, localToken, "USD Coin", "2")

// offer is the offer entry every table test pays: 0.01 USDC to key #1 on the dev chain.
func offer() PaymentRequirements {
	return Requirements(localNetwork, payments.Price{Amount: 10_000}, addr1, time.Minute)
}

// authFor is what the reference client signs for an offer at now.
func authFor(req PaymentRequirements, from common.Address, now time.Time) EIP3009Authorization {
	return EIP3009Authorization{
		From:        from.Hex(),
		To:          req.PayTo,
		Value:       req.Amount,
		ValidAfter:  "0",
		ValidBefore: strconv.FormatInt(now.Unix()+req.MaxTimeoutSeconds, 10),
		Nonce:       "0x" + common.Bytes2Hex(crypto.Keccak256([]byte(from.Hex()+req.Network))),
	}
}

// sign signs auth for the domain of req with key, as a client does (v = 27/28).
func sign(t testing.TB, key *ecdsa.PrivateKey, req PaymentRequirements, auth EIP3009Authorization) string {
	t.Helper()
	digest, err := SigningDigest(req, auth)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := crypto.Sign(digest[:], key)
	if err != nil {
		t.Fatal(err)
	}
	sig[64] += 27
	return "0x" + common.Bytes2Hex(sig)
}

// pay builds the v2 payment the reference client would send for req.
func pay(t testing.TB, key *ecdsa.PrivateKey, req PaymentRequirements, now time.Time) *PaymentPayload {
	t.Helper()
	auth := authFor(req, crypto.PubkeyToAddress(key.PublicKey), now)
	accepted := req
	return &PaymentPayload{
		X402Version: 2,
		Resource:    &ResourceInfo{URL: "http://127.0.0.1:4021/exec"},
		Accepted:    &accepted,
		Payload:     ExactEVMPayload{Signature: sign(t, key, req, auth), Authorization: auth},
	}
}

// payV1 builds the v1 payment for req, named by its v1 network.
func payV1(t testing.TB, key *ecdsa.PrivateKey, req PaymentRequirements, v1Network string, now time.Time) *PaymentPayload {
	t.Helper()
	auth := authFor(req, crypto.PubkeyToAddress(key.PublicKey), now)
	auth.ValidAfter = strconv.FormatInt(now.Unix()-600, 10) // the v1 client's choice
	return &PaymentPayload{
		X402Version: 1,
		Scheme:      SchemeExact,
		Network:     v1Network,
		Payload:     ExactEVMPayload{Signature: sign(t, key, req, auth), Authorization: auth},
	}
}

// mustEncode encodes a payment header.
func mustEncode(t testing.TB, p *PaymentPayload) string {
	t.Helper()
	h, err := EncodePaymentPayload(p)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// wantReason fails unless err is a refusal with reason want ("" means no error).
func wantReason(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("accepted, want refusal %s", want)
	}
	if got := Reason(err); got != want {
		t.Fatalf("reason %q (%v), want %q", got, err, want)
	}
}
