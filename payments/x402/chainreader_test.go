package x402

import (
	"bytes"
	"context"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/secureexec/secureexec/payments"
)

// readerABI is the ABI of the calls RPCReader hand-packs, for go-ethereum's encoder to check it.
var readerABI = func() abi.ABI {
	a, err := abi.JSON(strings.NewReader(`[
	 {"type":"function","name":"balanceOf","stateMutability":"view","inputs":[{"name":"owner","type":"address"}],"outputs":[{"name":"","type":"uint256"}]},
	 {"type":"function","name":"authorizationState","stateMutability":"view","inputs":[{"name":"authorizer","type":"address"},{"name":"nonce","type":"bytes32"}],"outputs":[{"name":"","type":"bool"}]},
	 {"type":"function","name":"isValidSignature","stateMutability":"view","inputs":[{"name":"hash","type":"bytes32"},{"name":"signature","type":"bytes"}],"outputs":[{"name":"","type":"bytes4"}]}
	]`))
	if err != nil {
		panic(err)
	}
	return a
}()

func pack(t *testing.T, method string, args ...any) []byte {
	t.Helper()
	b, err := readerABI.Pack(method, args...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answer is what a test contract returns for one exact calldata.
type answer struct {
	calldata []byte
	word     [32]byte
	size     byte // bytes of word returned
}

func sliceOf(n int64) []byte { w := wordOf(n); return w[:] }

func wordOf(n int64) [32]byte {
	var w [32]byte
	big.NewInt(n).FillBytes(w[:])
	return w
}

var magicWord = func() (w [32]byte) { copy(w[:], selectorIsValidSignature[:]); return }()

// contractCode assembles EVM runtime code that returns answers[i] when keccak256(calldata)
// equals keccak256(answers[i].calldata) and reverts otherwise: a contract that accepts exactly
// the ABI encoding go-ethereum's encoder produces, byte for byte.
func contractCode(answers ...answer) []byte {
	const (
		header   = 10                 // CALLDATASIZE PUSH1 0 PUSH1 0 CALLDATACOPY CALLDATASIZE PUSH1 0 KECCAK256
		check    = 1 + 33 + 1 + 3 + 1 // DUP1 PUSH32 h EQ PUSH2 dest JUMPI
		fallback = 4                  // PUSH1 0 DUP1 REVERT
		target   = 1 + 33 + 2 + 1 + 2 + 2 + 1
	)
	code := []byte{0x36, 0x60, 0x00, 0x60, 0x00, 0x37, 0x36, 0x60, 0x00, 0x20}
	for i, a := range answers {
		dest := header + check*len(answers) + fallback + target*i
		code = append(code, 0x80, 0x7f)
		code = append(code, crypto.Keccak256(a.calldata)...)
		code = append(code, 0x14, 0x61, byte(dest>>8), byte(dest), 0x57)
	}
	code = append(code, 0x60, 0x00, 0x80, 0xfd)
	for _, a := range answers {
		code = append(code, 0x5b, 0x7f)
		code = append(code, a.word[:]...)
		code = append(code, 0x60, 0x00, 0x52, 0x60, a.size, 0x60, 0x00, 0xf3)
	}
	return code
}

// TestRPCReaderSimulated runs the reader and Verify against go-ethereum's simulated chain with
// a token and an ERC-1271 wallet whose code accepts only the exact expected calldata.
func TestRPCReaderSimulated(t *testing.T) {
	req := offer()
	wallet := common.HexToAddress("0x00000000000000000000000000000000000c0de1")
	shortWallet := common.HexToAddress("0x00000000000000000000000000000000000c0de2")

	eoaPay := pay(t, key2, req, testNow)
	eoaNonce := common.HexToHash(eoaPay.Payload.Authorization.Nonce)

	usedPay := pay(t, key2, req, testNow)
	usedPay.Payload.Authorization.Nonce = "0x" + strings.Repeat("11", 32)
	usedPay.Payload.Signature = sign(t, key2, req, usedPay.Payload.Authorization)

	walletAuth := authFor(req, wallet, testNow)
	walletSig := bytes.Repeat([]byte{0x5a}, 97) // not a multiple of 32: exercises the padding
	walletDigest, err := SigningDigest(req, walletAuth)
	if err != nil {
		t.Fatal(err)
	}
	walletPay := &PaymentPayload{X402Version: 2, Accepted: &req,
		Payload: ExactEVMPayload{Signature: "0x" + common.Bytes2Hex(walletSig), Authorization: walletAuth}}
	walletNonce := common.HexToHash(walletAuth.Nonce)

	token := contractCode(
		answer{pack(t, "balanceOf", addr2), wordOf(10_000), 32},
		answer{pack(t, "balanceOf", wallet), wordOf(1_000_000), 32},
		answer{pack(t, "balanceOf", addr3), wordOf(1_000_000), 32},
		answer{pack(t, "authorizationState", addr2, eoaNonce), wordOf(0), 32},
		answer{pack(t, "authorizationState", addr2, common.HexToHash(usedPay.Payload.Authorization.Nonce)), wordOf(1), 32},
		answer{pack(t, "authorizationState", wallet, walletNonce), wordOf(0), 32},
		// addr3's authorizationState is not answered: the call reverts, like a token without EIP-3009
	)
	alloc := types.GenesisAlloc{
		localToken:  {Code: token, Balance: big.NewInt(0)},
		wallet:      {Code: contractCode(answer{pack(t, "isValidSignature", walletDigest, walletSig), magicWord, 32}), Balance: big.NewInt(0)},
		shortWallet: {Code: contractCode(answer{pack(t, "isValidSignature", walletDigest, walletSig), magicWord, 4}), Balance: big.NewInt(0)},
	}
	backend := simulated.NewBackend(alloc)
	t.Cleanup(func() { _ = backend.Close() })
	r := NewRPCReader(backend.Client(), 5*time.Second)
	ctx := context.Background()

	t.Run("reads", func(t *testing.T) {
		if code, err := r.CodeAt(ctx, addr2); err != nil || len(code) != 0 {
			t.Fatalf("EOA code %x, %v", code, err)
		}
		if code, err := r.CodeAt(ctx, localToken); err != nil || !bytes.Equal(code, token) {
			t.Fatalf("token code %x, %v", code, err)
		}
		if bal, err := r.BalanceOf(ctx, localToken, addr2); err != nil || bal.Int64() != 10_000 {
			t.Fatalf("balance %v, %v", bal, err)
		}
		if used, err := r.AuthorizationState(ctx, localToken, addr2, eoaNonce); err != nil || used {
			t.Fatalf("fresh nonce: used %v, %v", used, err)
		}
		if _, err := r.AuthorizationState(ctx, localToken, addr3, eoaNonce); !errors.Is(err, ErrCallReverted) {
			t.Fatalf("unanswered call: %v, want ErrCallReverted", err)
		}
		if _, err := r.BalanceOf(ctx, localToken, common.Address{}); !errors.Is(err, ErrCallReverted) {
			t.Fatalf("unanswered balanceOf: %v, want ErrCallReverted", err)
		}
		if ok, err := r.IsValidSignature1271(ctx, wallet, walletDigest, walletSig); err != nil || !ok {
			t.Fatalf("wallet says %v, %v", ok, err)
		}
		if ok, err := r.IsValidSignature1271(ctx, wallet, eoaNonce, walletSig); err != nil || ok {
			t.Fatalf("wallet reverting on another digest says %v, %v", ok, err)
		}
		if ok, err := r.IsValidSignature1271(ctx, shortWallet, walletDigest, walletSig); err != nil || ok {
			t.Fatalf("4-byte answer says %v, %v", ok, err)
		}
		if ok, err := r.IsValidSignature1271(ctx, addr3, walletDigest, walletSig); err != nil || ok {
			t.Fatalf("an EOA says %v, %v", ok, err)
		}
	})

	// The same verdicts from the plain reads and from the lens, which must fall back to them
	// where the token answers oddly (addr3's authorizationState reverts).
	for _, rd := range []struct {
		name string
		r    ChainReader
	}{{"rpc", r}, {"lens", NewLensReader(backend.Client(), LensOptions{Timeout: 5 * time.Second})}} {
		for _, tc := range []struct {
			name string
			p    *PaymentPayload
			want string
		}{
			{"EOA payer", eoaPay, ""},
			{"nonce used on the token", usedPay, ReasonNonceAlreadyUsed},
			{"ERC-1271 wallet payer", walletPay, ""},
			{"token without EIP-3009", pay(t, key3, req, testNow), ReasonEIP3009NotSupported},
		} {
			t.Run(rd.name+"/"+tc.name, func(t *testing.T) {
				v, err := Verify(ctx, rd.r, tc.p, req, testNow)
				wantReason(t, err, tc.want)
				if err == nil && v.ContractWallet != (tc.p == walletPay) {
					t.Fatalf("ContractWallet = %v", v.ContractWallet)
				}
			})
		}
		t.Run(rd.name+"/asset without code", func(t *testing.T) {
			req := Requirements(CustomNetwork(31337, common.HexToAddress("0x00000000000000000000000000000000000000aa"), "USD Coin", "2"), payments.Price{Amount: 10_000}, addr1, time.Minute)
			_, err := Verify(ctx, rd.r, pay(t, key2, req, testNow), req, testNow)
			wantReason(t, err, ReasonAssetNotDeployed)
		})
	}
	t.Run("lens/balanceOf answering short", func(t *testing.T) {
		// A 4-byte balance is no balance: the plain read's error, an outage, decides.
		short := common.HexToAddress("0x00000000000000000000000000000000000000ab")
		req := Requirements(CustomNetwork(31337, short, "USD Coin", "2"), payments.Price{Amount: 10_000}, addr1, time.Minute)
		p := pay(t, key2, req, testNow)
		b := simulated.NewBackend(types.GenesisAlloc{short: {Code: contractCode(answer{pack(t, "balanceOf", addr2), wordOf(10_000), 4},
			answer{pack(t, "authorizationState", addr2, common.HexToHash(p.Payload.Authorization.Nonce)), wordOf(0), 32})}})
		defer b.Close()
		_, err := Verify(ctx, NewLensReader(b.Client(), LensOptions{}), p, req, testNow)
		if !errors.Is(err, payments.ErrUnavailable) || !errors.Is(err, ErrCallReverted) || Reason(err) != "" {
			t.Fatalf("err %v, want an outage from the plain balanceOf", err)
		}
	})
}

// recordingCaller answers every call with out and keeps the calldata it was sent.
type recordingCaller struct {
	data [][]byte
	out  []byte
	err  error
}

func (c *recordingCaller) CodeAt(context.Context, common.Address, *big.Int) ([]byte, error) {
	return nil, c.err
}

func (c *recordingCaller) CallContract(_ context.Context, m ethereum.CallMsg, _ *big.Int) ([]byte, error) {
	c.data = append(c.data, m.Data)
	return c.out, c.err
}

// TestRPCReaderCalldata compares the hand-packed calldata with go-ethereum's ABI encoder for
// signatures of several lengths, and checks how return data is read.
func TestRPCReaderCalldata(t *testing.T) {
	ctx := context.Background()
	digest := crypto.Keccak256Hash([]byte("digest"))
	for _, n := range []int{0, 1, 31, 32, 33, 65, 200} {
		c := &recordingCaller{out: magicWord[:]}
		sig := bytes.Repeat([]byte{0xee}, n)
		if ok, err := NewRPCReader(c, 0).IsValidSignature1271(ctx, addr2, digest, sig); err != nil || !ok {
			t.Fatalf("%d-byte signature: %v %v", n, ok, err)
		}
		if want := pack(t, "isValidSignature", digest, sig); !bytes.Equal(c.data[0], want) {
			t.Fatalf("%d-byte signature calldata\n got %x\nwant %x", n, c.data[0], want)
		}
	}
	c := &recordingCaller{out: sliceOf(1)}
	r := NewRPCReader(c, 0)
	if used, err := r.AuthorizationState(ctx, localToken, addr2, digest); err != nil || !used {
		t.Fatalf("used = %v, %v", used, err)
	}
	if _, err := r.BalanceOf(ctx, localToken, addr2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.data[0], pack(t, "authorizationState", addr2, digest)) || !bytes.Equal(c.data[1], pack(t, "balanceOf", addr2)) {
		t.Fatalf("calldata %x", c.data)
	}

	for _, tc := range []struct {
		name string
		out  []byte
	}{{"empty", nil}, {"short", []byte{1}}, {"not a bool", sliceOf(2)}, {"dirty high bytes", append([]byte{1}, make([]byte, 31)...)}} {
		c.out = tc.out
		if _, err := r.AuthorizationState(ctx, localToken, addr2, digest); !errors.Is(err, ErrCallReverted) {
			t.Fatalf("authorizationState returning %s: %v", tc.name, err)
		}
	}
	for _, tc := range []struct {
		name string
		out  []byte
	}{{"empty", nil}, {"magic with dirty padding", append(append([]byte{}, selectorIsValidSignature[:]...), bytes.Repeat([]byte{1}, 28)...)}, {"other value", sliceOf(1)}} {
		c.out = tc.out
		if ok, err := r.IsValidSignature1271(ctx, addr2, digest, nil); ok || err != nil {
			t.Fatalf("isValidSignature returning %s: %v %v", tc.name, ok, err)
		}
	}

	for _, tc := range []struct {
		err    error
		revert bool
	}{
		{errors.New("execution reverted"), true},
		{errors.New("execution reverted: FiatTokenV2: invalid signature"), true},
		{errors.New("dial tcp 127.0.0.1:8545: connection refused"), false},
		{context.DeadlineExceeded, false},
	} {
		c.err = tc.err
		_, err := r.BalanceOf(ctx, localToken, addr2)
		if errors.Is(err, ErrCallReverted) != tc.revert || !errors.Is(err, tc.err) {
			t.Fatalf("%v: reported as %v", tc.err, err)
		}
	}
}

// blockingCaller never answers before its context ends.
type blockingCaller struct{}

func (blockingCaller) CodeAt(ctx context.Context, _ common.Address, _ *big.Int) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (blockingCaller) CallContract(ctx context.Context, _ ethereum.CallMsg, _ *big.Int) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestRPCReaderDeadline: a node that does not answer costs one read timeout and yields
// ErrUnavailable, not a refusal.
func TestRPCReaderDeadline(t *testing.T) {
	req := offer()
	// The caller's context has no deadline: DeadlineExceeded can only come from the reader's.
	for _, r := range []ChainReader{NewRPCReader(blockingCaller{}, 50*time.Millisecond), NewLensReader(blockingCaller{}, LensOptions{Timeout: 50 * time.Millisecond})} {
		_, err := Verify(context.Background(), r, pay(t, key2, req, testNow), req, testNow)
		if !errors.Is(err, payments.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || Reason(err) != "" {
			t.Fatalf("%T: err %v", r, err)
		}
	}
}
