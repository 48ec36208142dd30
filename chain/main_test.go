package chain

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"go.uber.org/goleak"
)

// TestMain fails the run if any goroutine outlives the tests (auto-miners, chains not closed).
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// A closed chain's in-memory leveldb (go-ethereum's p2p node database) keeps its drain
		// goroutine for up to 1 s after Close, longer than goleak's own retries: poll instead.
		// go-ethereum's transaction sender cache is a process-wide singleton by design.
		ignore := goleak.IgnoreTopFunction("github.com/ethereum/go-ethereum/core.(*txSenderCacher).cache")
		deadline := time.Now().Add(5 * time.Second)
		err := goleak.Find(ignore)
		for err != nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			err = goleak.Find(ignore)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// EIP-712 / EIP-3009 hashing written out by hand, independent of the contract and of
// payments/x402, so the tests cross-check both.
var (
	domainTypehash   = crypto.Keccak256Hash([]byte("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"))
	transferTypehash = crypto.Keccak256Hash([]byte("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"))
	receiveTypehash  = crypto.Keccak256Hash([]byte("ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"))
	cancelTypehash   = crypto.Keccak256Hash([]byte("CancelAuthorization(address authorizer,bytes32 nonce)"))
)

func word(b []byte) []byte { return common.LeftPadBytes(b, 32) }

func domainSeparator(name, version string, chainID uint64, verifying common.Address) common.Hash {
	return crypto.Keccak256Hash(
		domainTypehash.Bytes(),
		crypto.Keccak256([]byte(name)),
		crypto.Keccak256([]byte(version)),
		word(new(big.Int).SetUint64(chainID).Bytes()),
		word(verifying.Bytes()),
	)
}

func authStructHash(typehash common.Hash, a Authorization) common.Hash {
	return crypto.Keccak256Hash(
		typehash.Bytes(),
		word(a.From.Bytes()),
		word(a.To.Bytes()),
		word(a.Value.Bytes()),
		word(a.ValidAfter.Bytes()),
		word(a.ValidBefore.Bytes()),
		a.Nonce.Bytes(),
	)
}

func typedDigest(domain, structHash common.Hash) common.Hash {
	return crypto.Keccak256Hash([]byte{0x19, 0x01}, domain.Bytes(), structHash.Bytes())
}

// signDigest returns r‖s‖v with v in {27, 28}, as FiatTokenV2 expects.
func signDigest(t testing.TB, digest common.Hash, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	sig, err := crypto.Sign(digest.Bytes(), key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	sig[64] += 27
	return sig
}

// signTransfer fills a.Signature with key's signature of a under the TestUSDC domain at token.
func signTransfer(t testing.TB, a Authorization, key *ecdsa.PrivateKey, chainID uint64, token common.Address) Authorization {
	t.Helper()
	a.Signature = signDigest(t, typedDigest(domainSeparator("USD Coin", "2", chainID, token), authStructHash(transferTypehash, a)), key)
	return a
}

// testCtx bounds every chain interaction of a test.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startDev starts a dev chain closed at the end of the test.
func startDev(t testing.TB, opts DevChainOptions) *DevChain {
	t.Helper()
	d, err := StartSimulated(testCtx(t), opts)
	if err != nil {
		t.Fatalf("StartSimulated: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// call runs an eth_call and fails the test on error.
func call(t testing.TB, c Caller, to common.Address, data []byte) []byte {
	t.Helper()
	out, err := c.CallContract(testCtx(t), ethereum.CallMsg{To: &to, Data: data}, nil)
	if err != nil {
		t.Fatalf("eth_call %s: %v", to.Hex(), err)
	}
	return out
}

// mined sends data from s, mines on d until it is included and returns the successful receipt.
func mined(t testing.TB, d *DevChain, s *Sender, to common.Address, data []byte) *types.Receipt {
	t.Helper()
	h, err := s.Send(testCtx(t), to, data)
	if err != nil {
		t.Fatalf("send to %s: %v (revert reason %q)", to.Hex(), err, RevertReason(err))
	}
	return commitReceipt(t, d, h)
}

// commitReceipt mines until h is included and requires it to have succeeded.
func commitReceipt(t testing.TB, d *DevChain, h common.Hash) *types.Receipt {
	t.Helper()
	rs, err := d.CommitUntilMined(testCtx(t), h)
	if err != nil {
		t.Fatalf("receipt %s: %v", h.Hex(), err)
	}
	if rs[0].Status != types.ReceiptStatusSuccessful {
		t.Fatalf("tx %s reverted", h.Hex())
	}
	return rs[0]
}

func mustKey(t testing.TB, hexKey string) *ecdsa.PrivateKey {
	t.Helper()
	k, err := crypto.HexToECDSA(strings.TrimPrefix(hexKey, "0x"))
	if err != nil {
		t.Fatalf("key: %v", err)
	}
	return k
}

func newSender(t testing.TB, b Backend, key *ecdsa.PrivateKey, chainID *big.Int) *Sender {
	t.Helper()
	s, err := NewSender(b, key, chainID, SenderOptions{})
	if err != nil {
		t.Fatalf("NewSender: %v", err)
	}
	return s
}

func nonceOf(i byte) common.Hash {
	var n common.Hash
	for j := range n {
		n[j] = i
	}
	return n
}

// callerFrom sets the eth_call sender, for views that depend on msg.sender.
type callerFrom struct {
	c    Caller
	from common.Address
}

func (cf callerFrom) CallContract(ctx context.Context, msg ethereum.CallMsg, block *big.Int) ([]byte, error) {
	msg.From = cf.from
	return cf.c.CallContract(ctx, msg, block)
}
