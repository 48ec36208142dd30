package x402

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
	"github.com/secureexec/secureexec/payments"
)

func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.ID, func(t *testing.T) {
			p, err := DecodePaymentPayload(v.PaymentSignatureHeader)
			if err != nil {
				t.Fatalf("decode the vector's header: %v", err)
			}
			// Our encoding of the reference client's payload is byte-identical to its header.
			if got := mustEncode(t, p); got != v.PaymentSignatureHeader {
				t.Fatalf("re-encoded header differs:\n got %s\nwant %s", got, v.PaymentSignatureHeader)
			}
			want, err := marshalCompact(v.PaymentPayload)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := marshalCompact(p); !bytes.Equal(got, want) {
				t.Fatalf("decoded payload differs from the vector's:\n got %s\nwant %s", got, want)
			}
			ds := DomainSeparator(v.Domain.Name, v.Domain.Version, v.Domain.ChainID, common.HexToAddress(v.Domain.VerifyingContract))
			if ds.Hex() != v.DomainSeparator {
				t.Fatalf("domain separator %s, want %s", ds.Hex(), v.DomainSeparator)
			}
			digest, err := SigningDigest(v.PaymentRequirements, p.Payload.Authorization)
			if err != nil || digest.Hex() != v.Digest {
				t.Fatalf("digest %s (%v), want %s", digest.Hex(), err, v.Digest)
			}
			now := time.Unix(1_800_000_000, 0) // before the vectors' validBefore (1893456000)
			got, err := VerifyLocal(p, v.PaymentRequirements, now)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if got.Payer.Hex() != v.SignerAddress || got.Digest.Hex() != v.Digest {
				t.Fatalf("payer %s digest %s, want %s %s", got.Payer.Hex(), got.Digest.Hex(), v.SignerAddress, v.Digest)
			}
			// The same credential in the seed's Authorization header and in X-PAYMENT.
			q, err := ParseAuthorization("x402 " + v.PaymentSignatureHeader)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := VerifyLocal(q, v.PaymentRequirements, now); err != nil {
				t.Fatalf("verify the Authorization form: %v", err)
			}
			// A day after validBefore the same payment has expired.
			_, err = VerifyLocal(p, v.PaymentRequirements, time.Unix(1_893_456_000, 0))
			wantReason(t, err, ReasonValidBefore)
		})
	}
}

func TestTypehashes(t *testing.T) {
	if got := crypto.Keccak256Hash([]byte("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")); got != eip712DomainTypehash {
		t.Fatalf("EIP712Domain typehash %s", got.Hex())
	}
	if got := crypto.Keccak256Hash([]byte("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")); got != transferTypehash {
		t.Fatalf("TransferWithAuthorization typehash %s", got.Hex())
	}
}

// TestDigestMatchesAPITypes cross-checks the hand-packed digest against go-ethereum's generic
// EIP-712 encoder, including values that fill all 256 bits.
func TestDigestMatchesAPITypes(t *testing.T) {
	maxU256 := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))
	for _, tc := range []struct {
		name                           string
		network                        Network
		value, validAfter, validBefore string
	}{
		{"base", Base, "10000", "0", "1893456000"},
		{"base sepolia", BaseSepolia, "1", "1750000000", "1750000060"},
		{"dev chain, extreme values", CustomNetwork(1337, localToken, "Test Token With A Long Name", "10"), maxU256.String(), maxU256.String(), "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := Requirements(tc.network, payments.Price{Amount: 1}, addr1, time.Minute)
			auth := EIP3009Authorization{
				From: addr2.Hex(), To: addr3.Hex(), Value: tc.value, ValidAfter: tc.validAfter, ValidBefore: tc.validBefore,
				Nonce: "0x" + common.Bytes2Hex(crypto.Keccak256([]byte(tc.name))),
			}
			got, err := SigningDigest(req, auth)
			if err != nil {
				t.Fatal(err)
			}
			td := apitypes.TypedData{
				Types: apitypes.Types{
					"EIP712Domain": {{Name: "name", Type: "string"}, {Name: "version", Type: "string"}, {Name: "chainId", Type: "uint256"}, {Name: "verifyingContract", Type: "address"}},
					"TransferWithAuthorization": {{Name: "from", Type: "address"}, {Name: "to", Type: "address"}, {Name: "value", Type: "uint256"},
						{Name: "validAfter", Type: "uint256"}, {Name: "validBefore", Type: "uint256"}, {Name: "nonce", Type: "bytes32"}},
				},
				PrimaryType: "TransferWithAuthorization",
				Domain: apitypes.TypedDataDomain{
					Name: tc.network.TokenName, Version: tc.network.TokenVersion,
					ChainId: math.NewHexOrDecimal256(int64(tc.network.ChainID)), VerifyingContract: tc.network.Asset.Hex(),
				},
				Message: apitypes.TypedDataMessage{
					"from": auth.From, "to": auth.To, "value": auth.Value, "validAfter": auth.ValidAfter,
					"validBefore": auth.ValidBefore, "nonce": auth.Nonce,
				},
			}
			want, _, err := apitypes.TypedDataAndHash(td)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[:], want) {
				t.Fatalf("digest %x, apitypes %x", got, want)
			}
		})
	}
}

// TestVerifyLocal is the specification of the local rules, one case per rule.
func TestVerifyLocal(t *testing.T) {
	now := testNow
	unix := now.Unix()
	itoa := func(n int64) string { return strconv.FormatInt(n, 10) }
	otherChain := CustomNetwork(1337, localToken, "USD Coin", "2")
	otherAsset := CustomNetwork(31337, common.HexToAddress("0x00000000000000000000000000000000000000aa"), "USD Coin", "2")
	for _, tc := range []struct {
		name   string
		key    *ecdsa.PrivateKey                               // signer; key #2 when nil
		auth   func(*EIP3009Authorization)                     // applied before signing
		domain func(*PaymentRequirements)                      // the offer as the payer signed it
		mutate func(p *PaymentPayload, r *PaymentRequirements) // applied after signing
		want   string                                          // reason code, "" for valid
	}{
		{name: "valid", want: ""},
		{name: "v = 0 instead of 27", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { setV(p, -27) }},
		{name: "v = 29", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { setV(p, 2) }, want: ReasonSignature},
		{name: "validAfter = now is valid", auth: func(a *EIP3009Authorization) { a.ValidAfter = itoa(unix) }},
		{name: "validBefore = now+6 is valid", auth: func(a *EIP3009Authorization) { a.ValidBefore = itoa(unix + 6) }},
		{name: "accepted.extra may add keys", mutate: func(p *PaymentPayload, _ *PaymentRequirements) {
			p.Accepted.Extra.Other = map[string]json.RawMessage{"paymentFlow": json.RawMessage(`"authorization"`)}
		}},
		{name: "accepted addresses in another case", mutate: func(p *PaymentPayload, _ *PaymentRequirements) {
			p.Accepted.PayTo = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
		}},

		// 1-3: scheme, domain, network
		{name: "accepted scheme is not exact", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Accepted.Scheme = "upto" }, want: ReasonScheme},
		{name: "offer scheme is not exact", mutate: func(_ *PaymentPayload, r *PaymentRequirements) { r.Scheme = "upto" }, want: ReasonScheme},
		{name: "offer lacks extra.name", mutate: func(_ *PaymentPayload, r *PaymentRequirements) { r.Extra.Name = "" }, want: ReasonMissingEIP712Domain},
		{name: "offer lacks extra.version", mutate: func(_ *PaymentPayload, r *PaymentRequirements) { r.Extra.Version = "" }, want: ReasonMissingEIP712Domain},
		{name: "paid on another chain", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Accepted.Network = "eip155:1" }, want: ReasonNetworkMismatch},
		{name: "offer network not eip155", mutate: func(p *PaymentPayload, r *PaymentRequirements) {
			r.Network = "solana:mainnet"
			p.Accepted.Network = r.Network
		}, want: ReasonInvalidNetwork},
		{name: "version 3", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.X402Version = 3 }, want: ReasonInvalidX402Version},

		// 3b: the echoed offer is the offer
		{name: "accepted amount differs", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Accepted.Amount = "1" }, want: ReasonNoMatchingRequirements},
		{name: "accepted asset differs", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Accepted.Asset = otherAsset.Asset.Hex() }, want: ReasonNoMatchingRequirements},
		{name: "accepted payTo differs", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Accepted.PayTo = addr3.Hex() }, want: ReasonNoMatchingRequirements},
		{name: "accepted timeout differs", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Accepted.MaxTimeoutSeconds = 3600 }, want: ReasonNoMatchingRequirements},
		{name: "accepted.extra drops version", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Accepted.Extra.Version = "" }, want: ReasonNoMatchingRequirements},
		{name: "accepted.extra changes name", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Accepted.Extra.Name = "USDC" }, want: ReasonNoMatchingRequirements},
		{name: "accepted.extra lacks a server key", mutate: func(p *PaymentPayload, r *PaymentRequirements) {
			r.Extra.Other = map[string]json.RawMessage{"assetTransferMethod": json.RawMessage(`"eip3009"`)}
		}, want: ReasonNoMatchingRequirements},

		// 5: every signed field, tampered after signing
		{name: "tampered from", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Payload.Authorization.From = addr3.Hex() }, want: ReasonSignature},
		{name: "tampered to", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Payload.Authorization.To = addr3.Hex() }, want: ReasonSignature},
		{name: "tampered value", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Payload.Authorization.Value = "9999" }, want: ReasonSignature},
		{name: "tampered validAfter", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Payload.Authorization.ValidAfter = "1" }, want: ReasonSignature},
		{name: "tampered validBefore", mutate: func(p *PaymentPayload, _ *PaymentRequirements) {
			p.Payload.Authorization.ValidBefore = itoa(unix + 3600)
		}, want: ReasonSignature},
		{name: "tampered nonce", mutate: func(p *PaymentPayload, _ *PaymentRequirements) {
			p.Payload.Authorization.Nonce = "0x" + common.Bytes2Hex(make([]byte, 32))
		}, want: ReasonSignature},
		{name: "tampered signature byte", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { flipSigByte(p, 10) }, want: ReasonSignature},
		{name: "signed by another key", key: key3, auth: func(a *EIP3009Authorization) { a.From = addr2.Hex() }, want: ReasonSignature},
		{name: "signed for another chain", domain: func(r *PaymentRequirements) { r.Network = otherChain.CAIP2 }, want: ReasonSignature},
		{name: "signed for another asset", domain: func(r *PaymentRequirements) { r.Asset = otherAsset.Asset.Hex() }, want: ReasonSignature},
		{name: "signed for another token name", domain: func(r *PaymentRequirements) { r.Extra.Name = "USDC" }, want: ReasonSignature},
		{name: "high s (EIP-2)", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { toHighS(p) }, want: ReasonSignature},
		{name: "r = 0", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { zeroR(p) }, want: ReasonSignature},
		{name: "66-byte signature from an EOA", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Payload.Signature += "00" }, want: ReasonSignature},
		{name: "ERC-6492 signature", mutate: func(p *PaymentPayload, _ *PaymentRequirements) {
			p.Payload.Signature += common.Bytes2Hex(eip6492Magic)
		}, want: ReasonEIP6492FactoryNotAllowed},
		{name: "signature not hex", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Payload.Signature = "0xzz" }, want: ReasonFailedToParseSignature},
		{name: "nonce not 32 bytes", mutate: func(p *PaymentPayload, _ *PaymentRequirements) { p.Payload.Authorization.Nonce = "0x01" }, want: ReasonInvalidPayload},

		// 6: recipient
		{name: "signed for another recipient", auth: func(a *EIP3009Authorization) { a.To = addr3.Hex() }, want: ReasonRecipientMismatch},
		// 7: validity window
		{name: "expires within 6 s", auth: func(a *EIP3009Authorization) { a.ValidBefore = itoa(unix + 5) }, want: ReasonValidBefore},
		{name: "expired", auth: func(a *EIP3009Authorization) { a.ValidBefore = itoa(unix - 1) }, want: ReasonValidBefore},
		{name: "not yet valid", auth: func(a *EIP3009Authorization) { a.ValidAfter = itoa(unix + 1) }, want: ReasonValidAfter},
		{name: "validAfter beyond uint64", auth: func(a *EIP3009Authorization) { a.ValidAfter = "18446744073709551616" }, want: ReasonValidAfter},
		// 8: exact value
		{name: "value below price", auth: func(a *EIP3009Authorization) { a.Value = "9999" }, want: ReasonValueMismatch},
		{name: "value above price", auth: func(a *EIP3009Authorization) { a.Value = "10001" }, want: ReasonValueMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := offer()
			key := key2
			if tc.key != nil {
				key = tc.key
			}
			auth := authFor(req, addr2, now)
			if tc.auth != nil {
				tc.auth(&auth)
			}
			signed := req
			if tc.domain != nil {
				tc.domain(&signed)
			}
			accepted := req
			p := &PaymentPayload{X402Version: 2, Accepted: &accepted,
				Payload: ExactEVMPayload{Signature: sign(t, key, signed, auth), Authorization: auth}}
			if tc.mutate != nil {
				tc.mutate(p, &req)
			}
			v, err := VerifyLocal(p, req, now)
			wantReason(t, err, tc.want)
			if tc.want != "" {
				return
			}
			if v.Payer != addr2 || v.To != addr1 || v.Value.Cmp(big.NewInt(10_000)) != 0 || v.ChainID != 31337 || v.Asset != localToken {
				t.Fatalf("verified %+v", v)
			}
			if sv, _, _, ok := v.VRS(); !ok || (sv != 27 && sv != 28) {
				t.Fatalf("v = %d, want 27 or 28", sv)
			}
		})
	}
}

func TestVerifyLocalV1(t *testing.T) {
	sepolia := CustomNetwork(84532, localToken, "USD Coin", "2") // a dev chain run as 84532 for v1 clients
	signedValue := func(value string) func(*PaymentPayload) {
		return func(p *PaymentPayload) {
			p.Payload.Authorization.Value = value
			p.Payload.Signature = sign(t, key2, Requirements(sepolia, payments.Price{Amount: 10_000}, addr1, time.Minute), p.Payload.Authorization)
		}
	}
	for _, tc := range []struct {
		name    string
		network string
		mutate  func(*PaymentPayload)
		want    string
	}{
		{"valid", "base-sepolia", nil, ""},
		{"network named for another chain", "base", nil, ReasonNetworkMismatch},
		{"unknown network name", "base-goerli", nil, ReasonNetworkMismatch},
		{"CAIP-2 in a v1 payment", "eip155:84532", nil, ReasonNetworkMismatch},
		{"scheme", "base-sepolia", func(p *PaymentPayload) { p.Scheme = "upto" }, ReasonScheme},
		{"tampered value", "base-sepolia", func(p *PaymentPayload) { p.Payload.Authorization.Value = "20000" }, ReasonSignature},
		// The v1 facilitator of @x402/evm 2.27.0 (ExactEvmSchemeV1) names a wrong value with its
		// own code (x402.md §6), not the v2 one.
		{"value above the price, signed", "base-sepolia", signedValue("20000"), ReasonAuthorizationValue},
		{"value below the price, signed", "base-sepolia", signedValue("9999"), ReasonAuthorizationValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := Requirements(sepolia, payments.Price{Amount: 10_000}, addr1, time.Minute)
			p := payV1(t, key2, req, tc.network, testNow)
			if tc.mutate != nil {
				tc.mutate(p)
			}
			// Through the wire, as X-PAYMENT.
			if tc.want == "" {
				q, err := DecodePaymentPayload(mustEncode(t, p))
				if err != nil {
					t.Fatal(err)
				}
				p = q
			}
			v, err := VerifyLocal(p, req, testNow)
			wantReason(t, err, tc.want)
			if err == nil && (v.X402Version != 1 || v.Network != "base-sepolia" || v.Payer != addr2) {
				t.Fatalf("verified %+v", v)
			}
		})
	}
}

// TestVerifyThroughHeaders pays through each of the three request headers.
func TestVerifyThroughHeaders(t *testing.T) {
	req := offer()
	enc := mustEncode(t, pay(t, key2, req, testNow))
	for _, h := range []struct{ name, value string }{
		{HeaderPaymentSignature, enc},
		{HeaderXPayment, enc},
		{HeaderAuthorization, AuthorizationValue(enc)},
		{HeaderAuthorization, "X402   " + enc},
	} {
		hdr := http.Header{}
		hdr.Set(h.name, h.value)
		p, c, err := PayloadFromRequest(hdr)
		if err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
		if c.Header != h.name {
			t.Fatalf("found in %s, want %s", c.Header, h.name)
		}
		if _, err := VerifyLocal(p, req, testNow); err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
	}
}

// fakeChain is a ChainReader with a scripted chain state.
type fakeChain struct {
	code      map[common.Address][]byte
	balance   *big.Int
	used      bool
	wallet    bool // the 1271 answer
	failOn    string
	revertOn  string
	gotDigest common.Hash
	calls     []string
}

var errRPCDown = errors.New("dial tcp 127.0.0.1:8545: connection refused")

func (f *fakeChain) step(name string) error {
	f.calls = append(f.calls, name)
	switch name {
	case f.failOn:
		return errRPCDown
	case f.revertOn:
		return ErrCallReverted
	}
	return nil
}

func (f *fakeChain) CodeAt(_ context.Context, addr common.Address) ([]byte, error) {
	if err := f.step("code:" + addr.Hex()); err != nil {
		return nil, err
	}
	return f.code[addr], nil
}

func (f *fakeChain) IsValidSignature1271(_ context.Context, _ common.Address, digest common.Hash, _ []byte) (bool, error) {
	f.gotDigest = digest
	if err := f.step("1271"); err != nil {
		return false, err
	}
	return f.wallet, nil
}

func (f *fakeChain) BalanceOf(_ context.Context, _, _ common.Address) (*big.Int, error) {
	if err := f.step("balance"); err != nil {
		return nil, err
	}
	return f.balance, nil
}

func (f *fakeChain) AuthorizationState(_ context.Context, _, _ common.Address, _ common.Hash) (bool, error) {
	if err := f.step("nonce"); err != nil {
		return false, err
	}
	return f.used, nil
}

func TestVerifyOnChain(t *testing.T) {
	token := []byte{0x60, 0x00}
	payerCode := "code:" + addr2.Hex()
	for _, tc := range []struct {
		name            string
		chain           fakeChain
		walletSignature bool // the payment carries a 100-byte contract-wallet signature
		want            string
		unavailable     bool
	}{
		{name: "valid", chain: fakeChain{balance: big.NewInt(10_000)}},
		{name: "balance short", chain: fakeChain{balance: big.NewInt(9_999)}, want: ReasonInsufficientBalance},
		{name: "nonce used", chain: fakeChain{balance: big.NewInt(1e6), used: true}, want: ReasonNonceAlreadyUsed},
		{name: "no code at asset", chain: fakeChain{balance: big.NewInt(1e6), code: map[common.Address][]byte{}}, want: ReasonAssetNotDeployed},
		{name: "token without EIP-3009", chain: fakeChain{balance: big.NewInt(1e6), revertOn: "nonce"}, want: ReasonEIP3009NotSupported},
		// The reference diagnoses authorizationState before the balance (x402.md §5 step 10): a
		// settled payment sent again by a payer it emptied is a used nonce, not a short balance.
		{name: "nonce used and balance short", chain: fakeChain{balance: big.NewInt(0), used: true}, want: ReasonNonceAlreadyUsed},
		{name: "token without EIP-3009 and balance short", chain: fakeChain{balance: big.NewInt(0), revertOn: "nonce"}, want: ReasonEIP3009NotSupported},
		{name: "payer code unreadable", chain: fakeChain{failOn: payerCode}, unavailable: true},
		{name: "asset code unreadable", chain: fakeChain{failOn: "code:" + localToken.Hex()}, unavailable: true},
		{name: "balance unreadable", chain: fakeChain{failOn: "balance"}, unavailable: true},
		{name: "balance reverts", chain: fakeChain{revertOn: "balance"}, unavailable: true},
		{name: "nonce unreadable", chain: fakeChain{balance: big.NewInt(1e6), failOn: "nonce"}, unavailable: true},
		{name: "contract wallet accepts", walletSignature: true,
			chain: fakeChain{balance: big.NewInt(1e6), wallet: true, code: map[common.Address][]byte{addr2: {1}}}},
		{name: "contract wallet rejects", walletSignature: true,
			chain: fakeChain{balance: big.NewInt(1e6), code: map[common.Address][]byte{addr2: {1}}}, want: ReasonSignature},
		{name: "contract wallet unreachable", walletSignature: true,
			chain: fakeChain{failOn: "1271", code: map[common.Address][]byte{addr2: {1}}}, unavailable: true},
		{name: "wallet signature from an EOA", walletSignature: true, chain: fakeChain{balance: big.NewInt(1e6)}, want: ReasonSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain := tc.chain
			if chain.code == nil {
				chain.code = map[common.Address][]byte{}
			}
			if tc.name != "no code at asset" {
				chain.code[localToken] = token
			}
			req := offer()
			p := pay(t, key2, req, testNow)
			if tc.walletSignature {
				p.Payload.Signature = "0x" + common.Bytes2Hex(bytes.Repeat([]byte{0xab}, 100))
			}
			v, err := Verify(context.Background(), &chain, p, req, testNow)
			if tc.unavailable {
				if !errors.Is(err, payments.ErrUnavailable) || !errors.Is(err, errRPCDown) && !errors.Is(err, ErrCallReverted) || Reason(err) != "" {
					t.Fatalf("err %v, want ErrUnavailable wrapping the cause", err)
				}
				return
			}
			wantReason(t, err, tc.want)
			if err != nil {
				return
			}
			if v.ContractWallet != tc.walletSignature {
				t.Fatalf("ContractWallet %v", v.ContractWallet)
			}
			if tc.walletSignature && chain.gotDigest != v.Digest {
				t.Fatalf("wallet asked about %x, want %x", chain.gotDigest, v.Digest)
			}
		})
	}
}

// TestVerifyLocalRefusalsSkipChain: a payment that fails the pure rules before the signature
// costs no chain read.
func TestVerifyLocalRefusalsSkipChain(t *testing.T) {
	req := offer()
	p := pay(t, key2, req, testNow)
	p.Accepted.Amount = "1"
	chain := fakeChain{balance: big.NewInt(1e6)}
	_, err := Verify(context.Background(), &chain, p, req, testNow)
	wantReason(t, err, ReasonNoMatchingRequirements)
	if len(chain.calls) != 0 {
		t.Fatalf("chain reads %v", chain.calls)
	}
}

func TestVerifiedNonceKey(t *testing.T) {
	req := offer()
	v, err := VerifyLocal(pay(t, key2, req, testNow), req, testNow)
	if err != nil {
		t.Fatal(err)
	}
	want := "x402:31337:0x5fbdb2315678afecb367f032d93f642f64180aa3:0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc:" + lowerHex(v.Nonce[:])
	if got := v.NonceKey(); got != want {
		t.Fatalf("nonce key %s, want %s", got, want)
	}
}

func setV(p *PaymentPayload, delta int) {
	sig := common.FromHex(p.Payload.Signature)
	sig[64] = byte(int(sig[64]) + delta)
	p.Payload.Signature = "0x" + common.Bytes2Hex(sig)
}

func flipSigByte(p *PaymentPayload, i int) {
	sig := common.FromHex(p.Payload.Signature)
	sig[i] ^= 0x01
	p.Payload.Signature = "0x" + common.Bytes2Hex(sig)
}

// toHighS replaces (r, s, v) by the equally valid (r, n-s, v^1): only EIP-2 tells them apart.
func toHighS(p *PaymentPayload) {
	sig := common.FromHex(p.Payload.Signature)
	n := new(big.Int).SetBytes(secp256k1N)
	s := new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:64]))
	s.FillBytes(sig[32:64])
	sig[64] = 27 + ((sig[64] - 27) ^ 1)
	p.Payload.Signature = "0x" + common.Bytes2Hex(sig)
}

func zeroR(p *PaymentPayload) {
	sig := common.FromHex(p.Payload.Signature)
	clear(sig[:32])
	p.Payload.Signature = "0x" + common.Bytes2Hex(sig)
}

// TestHighSIsOtherwiseValid makes sure the high-s case tests EIP-2 and not a broken signature:
// without the range check the mirrored signature recovers the payer.
func TestHighSIsOtherwiseValid(t *testing.T) {
	req := offer()
	p := pay(t, key2, req, testNow)
	toHighS(p)
	sig := common.FromHex(p.Payload.Signature)
	sig[64] -= 27
	digest, err := SigningDigest(req, p.Payload.Authorization)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.SigToPub(digest[:], sig)
	if err != nil || crypto.PubkeyToAddress(*pub) != addr2 {
		t.Fatalf("high-s signature recovers %v (%v), want %s", pub, err, addr2.Hex())
	}
	_, err = VerifyLocal(p, req, testNow)
	var pe *payments.PaymentError
	if !errors.As(err, &pe) || pe.Reason != ReasonSignature || !strings.Contains(pe.Detail, "high s") {
		t.Fatalf("high s refused as %v", err)
	}
}
