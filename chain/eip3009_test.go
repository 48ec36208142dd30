package chain

import (
	"errors"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/secureexec/secureexec/contracts/bindings/testusdc"
	"github.com/secureexec/secureexec/contracts/bindings/testwallet"
)

// secp256k1N is the curve order, used to build the high-s twin of a signature.
var secp256k1N, _ = new(big.Int).SetString("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16)

// simulate eth_calls data against to from `from` and returns the revert reason ("" = success).
func simulate(t *testing.T, c Caller, from, to common.Address, data []byte) string {
	t.Helper()
	_, err := c.CallContract(testCtx(t), ethereum.CallMsg{From: from, To: &to, Data: data}, nil)
	if err == nil {
		return ""
	}
	if r := RevertReason(err); r != "" {
		return r
	}
	t.Fatalf("eth_call failed without a revert reason: %v", err)
	return ""
}

func TestTransferWithAuthorization(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 3})
	ctx := testCtx(t)
	c, token := d.Client(), d.Addresses().Token
	accs := d.Accounts()
	payer, payee := DevKey(0), accs[1].Address
	relayer := newSender(t, c, DevKey(2), d.ChainID()) // anyone may relay
	base := func(nonce byte) Authorization {
		return Authorization{
			From: accs[0].Address, To: payee, Value: big.NewInt(10_000),
			ValidAfter: big.NewInt(0), ValidBefore: big.NewInt(1 << 40), Nonce: nonceOf(nonce),
		}
	}
	sign := func(a Authorization) Authorization { return signTransfer(t, a, payer, SimulatedChainID, token) }

	// One authorization is mined first; the table then replays it.
	used := sign(base(1))
	usedData, _ := PackTransferWithAuthorization(used)
	payerBefore, _ := TokenBalance(ctx, c, token, used.From)
	payeeBefore, _ := TokenBalance(ctx, c, token, used.To)
	r := mined(t, d, relayer, token, usedData)
	t.Logf("gas: transferWithAuthorization(bytes) = %d", r.GasUsed)
	payerAfter, _ := TokenBalance(ctx, c, token, used.From)
	payeeAfter, _ := TokenBalance(ctx, c, token, used.To)
	if new(big.Int).Sub(payerBefore, payerAfter).Cmp(used.Value) != 0 || new(big.Int).Sub(payeeAfter, payeeBefore).Cmp(used.Value) != 0 {
		t.Fatalf("balances moved payer %v->%v payee %v->%v, want exactly %v", payerBefore, payerAfter, payeeBefore, payeeAfter, used.Value)
	}
	if !HasTransfer(r, token, used.From, used.To, used.Value) {
		t.Fatal("receipt lacks the Transfer event")
	}
	if !hasAuthorizationUsed(r, token, used.From, used.Nonce) {
		t.Fatal("receipt lacks AuthorizationUsed(from, nonce)")
	}
	if st, err := AuthorizationState(ctx, c, token, used.From, used.Nonce); err != nil || !st {
		t.Fatalf("authorizationState after use = %v (%v)", st, err)
	}
	if HasTransfer(r, token, used.From, used.To, big.NewInt(9_999)) || HasTransfer(r, common.Address{1}, used.From, used.To, used.Value) {
		t.Fatal("HasTransfer matched a different value or token")
	}

	for _, tc := range []struct {
		name string
		auth func(now *big.Int) Authorization // now: the head block's timestamp, which eth_call runs at
		want string                           // revert reason, "" = succeeds
	}{
		{"valid", func(*big.Int) Authorization { return sign(base(2)) }, ""},
		{"replay of a used nonce", func(*big.Int) Authorization { return used }, "FiatTokenV2: authorization is used or canceled"},
		{"expired", func(now *big.Int) Authorization {
			a := base(3)
			a.ValidBefore = new(big.Int).Sub(now, big.NewInt(1))
			return sign(a)
		}, "FiatTokenV2: authorization is expired"},
		{"validBefore equals block time (strict)", func(now *big.Int) Authorization {
			a := base(4)
			a.ValidBefore = now
			return sign(a)
		}, "FiatTokenV2: authorization is expired"},
		{"not yet valid", func(now *big.Int) Authorization {
			a := base(5)
			a.ValidAfter = new(big.Int).Add(now, big.NewInt(3600))
			return sign(a)
		}, "FiatTokenV2: authorization is not yet valid"},
		{"validAfter equals block time (strict)", func(now *big.Int) Authorization {
			a := base(6)
			a.ValidAfter = now
			return sign(a)
		}, "FiatTokenV2: authorization is not yet valid"},
		{"validAfter one second before block time", func(now *big.Int) Authorization {
			a := base(7)
			a.ValidAfter = new(big.Int).Sub(now, big.NewInt(1))
			return sign(a)
		}, ""},
		{"wrong signer", func(*big.Int) Authorization { return signTransfer(t, base(8), DevKey(2), SimulatedChainID, token) }, "FiatTokenV2: invalid signature"},
		{"value raised after signing", func(*big.Int) Authorization {
			a := sign(base(9))
			a.Value = big.NewInt(10_001)
			return a
		}, "FiatTokenV2: invalid signature"},
		{"payee changed after signing", func(*big.Int) Authorization {
			a := sign(base(10))
			a.To = accs[2].Address
			return a
		}, "FiatTokenV2: invalid signature"},
		{"signed for another chain id", func(*big.Int) Authorization { return signTransfer(t, base(11), payer, 8453, token) }, "FiatTokenV2: invalid signature"},
		{"signed for another token", func(*big.Int) Authorization {
			return signTransfer(t, base(12), payer, SimulatedChainID, common.Address{0xaa})
		}, "FiatTokenV2: invalid signature"},
		{"high-s twin of a valid signature", func(*big.Int) Authorization {
			a := sign(base(13))
			s := new(big.Int).Sub(secp256k1N, new(big.Int).SetBytes(a.Signature[32:64]))
			sig := append([]byte(nil), a.Signature...)
			copy(sig[32:64], common.LeftPadBytes(s.Bytes(), 32))
			sig[64] ^= 1 // 27 <-> 28 keeps the same recovered key
			a.Signature = sig
			return a
		}, "FiatTokenV2: invalid signature"},
		{"v as 0/1", func(*big.Int) Authorization {
			a := sign(base(14))
			a.Signature[64] -= 27
			return a
		}, "FiatTokenV2: invalid signature"},
		{"64-byte signature", func(*big.Int) Authorization {
			a := sign(base(15))
			a.Signature = a.Signature[:64]
			return a
		}, "FiatTokenV2: invalid signature"},
		{"empty signature", func(*big.Int) Authorization {
			a := base(16)
			a.Signature = nil
			return a
		}, "FiatTokenV2: invalid signature"},
		{"more than the balance", func(*big.Int) Authorization {
			a := base(17)
			a.Value = new(big.Int).Add(DefaultDevUSDC, big.NewInt(1))
			return sign(a)
		}, "ERC20: transfer amount exceeds balance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head, err := c.HeaderByNumber(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			a := tc.auth(new(big.Int).SetUint64(head.Time))
			data, err := PackTransferWithAuthorization(a)
			if err != nil {
				t.Fatal(err)
			}
			if got := simulate(t, c, relayer.Address(), token, data); got != tc.want {
				t.Fatalf("revert %q, want %q", got, tc.want)
			}
			if tc.want == "" {
				mined(t, d, relayer, token, data)
				return
			}
			// The sender refuses a call that would revert, spending no gas and no nonce.
			_, err = relayer.Send(ctx, token, data)
			if !errors.Is(err, ErrExecutionReverted) || RevertReason(err) != tc.want {
				t.Fatalf("Send error %v (reason %q), want %v with %q", err, RevertReason(err), ErrExecutionReverted, tc.want)
			}
		})
	}
}

func hasAuthorizationUsed(r *types.Receipt, token, authorizer common.Address, nonce common.Hash) bool {
	for _, l := range r.Logs {
		if l.Address == token && len(l.Topics) == 3 && l.Topics[0] == AuthorizationUsedTopic &&
			common.BytesToAddress(l.Topics[1].Bytes()) == authorizer && l.Topics[2] == nonce {
			return true
		}
	}
	return false
}

// TestAuthorizationVariants covers the v,r,s overload, receiveWithAuthorization and
// cancelAuthorization, each through the generated bindings.
func TestAuthorizationVariants(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 3})
	ctx := testCtx(t)
	c, token := d.Client(), d.Addresses().Token
	accs := d.Accounts()
	payer := DevKey(0)
	relayer := newSender(t, c, DevKey(2), d.ChainID())
	payeeSender := newSender(t, c, DevKey(1), d.ChainID())
	tok := testusdc.NewTestUSDC()
	ds := domainSeparator("USD Coin", "2", SimulatedChainID, token)
	auth := func(nonce byte) Authorization {
		return Authorization{From: accs[0].Address, To: accs[1].Address, Value: big.NewInt(777), ValidAfter: big.NewInt(0), ValidBefore: big.NewInt(1 << 40), Nonce: nonceOf(nonce)}
	}

	t.Run("transferWithAuthorization v,r,s (0xe3ee160e)", func(t *testing.T) {
		a := auth(0x21)
		sig := signDigest(t, typedDigest(ds, authStructHash(transferTypehash, a)), payer)
		data := tok.PackTransferWithAuthorization0(a.From, a.To, a.Value, a.ValidAfter, a.ValidBefore, a.Nonce, sig[64], [32]byte(sig[:32]), [32]byte(sig[32:64]))
		if got := common.Bytes2Hex(data[:4]); got != "e3ee160e" {
			t.Fatalf("selector %s", got)
		}
		r := mined(t, d, relayer, token, data)
		if !HasTransfer(r, token, a.From, a.To, a.Value) {
			t.Fatal("no Transfer")
		}
		bytesData, _ := PackTransferWithAuthorization(a)
		if got := common.Bytes2Hex(bytesData[:4]); got != "cf092995" {
			t.Fatalf("bytes overload selector %s", got)
		}
	})

	t.Run("receiveWithAuthorization needs the payee as caller", func(t *testing.T) {
		a := auth(0x22)
		a.Signature = signDigest(t, typedDigest(ds, authStructHash(receiveTypehash, a)), payer)
		data := tok.PackReceiveWithAuthorization(a.From, a.To, a.Value, a.ValidAfter, a.ValidBefore, a.Nonce, a.Signature)
		if got := simulate(t, c, relayer.Address(), token, data); got != "FiatTokenV2: caller must be the payee" {
			t.Fatalf("relayer call: %q", got)
		}
		// A transfer signature is not a receive signature.
		wrong := signDigest(t, typedDigest(ds, authStructHash(transferTypehash, a)), payer)
		if got := simulate(t, c, a.To, token, tok.PackReceiveWithAuthorization(a.From, a.To, a.Value, a.ValidAfter, a.ValidBefore, a.Nonce, wrong)); got != "FiatTokenV2: invalid signature" {
			t.Fatalf("transfer-typed signature: %q", got)
		}
		r := mined(t, d, payeeSender, token, data)
		if !HasTransfer(r, token, a.From, a.To, a.Value) {
			t.Fatal("no Transfer")
		}
	})

	t.Run("cancelAuthorization burns the nonce", func(t *testing.T) {
		a := auth(0x23)
		cancelHash := crypto.Keccak256Hash(cancelTypehash.Bytes(), word(a.From.Bytes()), a.Nonce.Bytes())
		csig := signDigest(t, typedDigest(ds, cancelHash), payer)
		if got := simulate(t, c, relayer.Address(), token, tok.PackCancelAuthorization0(a.From, a.Nonce, signDigest(t, typedDigest(ds, cancelHash), DevKey(2)))); got != "FiatTokenV2: invalid signature" {
			t.Fatalf("cancel by a stranger: %q", got)
		}
		r := mined(t, d, relayer, token, tok.PackCancelAuthorization0(a.From, a.Nonce, csig))
		var canceled bool
		for _, l := range r.Logs {
			if ev, err := tok.UnpackAuthorizationCanceledEvent(l); err == nil && ev.Authorizer == a.From && common.Hash(ev.Nonce) == a.Nonce {
				canceled = true
			}
		}
		if !canceled {
			t.Fatal("no AuthorizationCanceled event")
		}
		if st, err := AuthorizationState(ctx, c, token, a.From, a.Nonce); err != nil || !st {
			t.Fatalf("authorizationState after cancel = %v (%v)", st, err)
		}
		a = signTransfer(t, a, payer, SimulatedChainID, token)
		data, _ := PackTransferWithAuthorization(a)
		if got := simulate(t, c, relayer.Address(), token, data); got != "FiatTokenV2: authorization is used or canceled" {
			t.Fatalf("transfer after cancel: %q", got)
		}
		if got := simulate(t, c, relayer.Address(), token, tok.PackCancelAuthorization0(a.From, a.Nonce, csig)); got != "FiatTokenV2: authorization is used or canceled" {
			t.Fatalf("second cancel: %q", got)
		}
	})

	t.Run("mint is owner only", func(t *testing.T) {
		if got := simulate(t, c, relayer.Address(), token, PackMint(relayer.Address(), big.NewInt(1))); got != "TestUSDC: caller is not the owner" {
			t.Fatalf("mint by stranger: %q", got)
		}
	})
}

// TestERC1271Wallet pays from a contract wallet: the token asks the wallet, which accepts its
// owner's signature over the EIP-712 digest.
func TestERC1271Wallet(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 3})
	ctx := testCtx(t)
	c, token := d.Client(), d.Addresses().Token
	accs := d.Accounts()
	owner := DevKey(1)
	op := newSender(t, c, d.OperatorKey(), d.ChainID())

	initcode := append(common.FromHex(testwallet.TestWalletMetaData.Bin), testwallet.NewTestWallet().PackConstructor(accs[1].Address)...)
	h, err := op.send(ctx, nil, initcode, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	wallet := commitReceipt(t, d, h).ContractAddress
	mined(t, d, op, token, PackMint(wallet, big.NewInt(1_000_000)))

	relayer := newSender(t, c, DevKey(2), d.ChainID())
	ds := domainSeparator("USD Coin", "2", SimulatedChainID, token)
	auth := func(nonce byte) Authorization {
		return Authorization{From: wallet, To: accs[0].Address, Value: big.NewInt(250_000), ValidAfter: big.NewInt(0), ValidBefore: big.NewInt(1 << 40), Nonce: nonceOf(nonce)}
	}
	digestOf := func(a Authorization) common.Hash { return typedDigest(ds, authStructHash(transferTypehash, a)) }
	for _, tc := range []struct {
		name  string
		nonce byte
		sign  func(a Authorization) []byte
		want  string
	}{
		{"owner signature", 0x31, func(a Authorization) []byte { return signDigest(t, digestOf(a), owner) }, ""},
		{"stranger signature", 0x32, func(a Authorization) []byte { return signDigest(t, digestOf(a), DevKey(2)) }, "FiatTokenV2: invalid signature"},
		{"garbage signature", 0x33, func(Authorization) []byte { return []byte{1, 2, 3} }, "FiatTokenV2: invalid signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := auth(tc.nonce)
			a.Signature = tc.sign(a)
			data, _ := PackTransferWithAuthorization(a)
			if got := simulate(t, c, relayer.Address(), token, data); got != tc.want {
				t.Fatalf("revert %q, want %q", got, tc.want)
			}
			if tc.want != "" {
				return
			}
			r := mined(t, d, relayer, token, data)
			if !HasTransfer(r, token, wallet, a.To, a.Value) {
				t.Fatal("no Transfer from the wallet")
			}
			t.Logf("gas: transferWithAuthorization from an ERC-1271 wallet = %d", r.GasUsed)
			if bal, _ := TokenBalance(ctx, c, token, wallet); bal.Cmp(big.NewInt(750_000)) != 0 {
				t.Fatalf("wallet balance %v, want 750000", bal)
			}
		})
	}
}
