package chain

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/secureexec/secureexec/chain/chaintest"
)

// sameReceipt reads h with RPCReceipts and with ethclient and requires the two receipts to be
// equal, field for field, logs included.
func sameReceipt(t *testing.T, fast, ethclient ReceiptReader, h common.Hash) *types.Receipt {
	t.Helper()
	ctx := testCtx(t)
	want, err := ethclient.TransactionReceipt(ctx, h)
	if err != nil {
		t.Fatalf("ethclient receipt %s: %v", h.Hex(), err)
	}
	got, err := fast.TransactionReceipt(ctx, h)
	if err != nil {
		t.Fatalf("RPCReceipts receipt %s: %v", h.Hex(), err)
	}
	if len(want.Logs) == 0 {
		t.Fatalf("receipt %s has no logs: nothing to compare", h.Hex())
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Fatalf("RPCReceipts read\n%s\nethclient read\n%s", g, w)
	}
	return got
}

// TestRPCReceiptsMatchEthclient reads a settled batch's receipt from anvil both ways.
func TestRPCReceiptsMatchEthclient(t *testing.T) {
	_, c := chaintest.StartAnvil(t, 31337)
	ctx := testCtx(t)
	chainID := big.NewInt(31337)
	operator := mustKey(t, "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80") // anvil's key #0
	addrs, err := Deploy(ctx, c, operator, chainID)
	if err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	fast := RPCReceipts{RPC: c.Client()}
	s := newSender(t, c, operator, chainID)
	payers := []*ecdsa.PrivateKey{
		mustKey(t, "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"), // anvil's key #1
		mustKey(t, "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"), // anvil's key #2
	}
	payTo := crypto.PubkeyToAddress(operator.PublicKey)
	var items []Authorization
	for i, key := range payers {
		from := crypto.PubkeyToAddress(key.PublicKey)
		h, err := s.Send(ctx, addrs.Token, PackMint(from, big.NewInt(1_000_000)))
		if err != nil {
			t.Fatal(err)
		}
		sameReceipt(t, fast, c, waitOK(t, s, h).TxHash)
		for j := range 3 {
			a := Authorization{From: from, To: payTo, Value: big.NewInt(int64(100 + j)), ValidAfter: big.NewInt(0), ValidBefore: big.NewInt(1 << 40), Nonce: nonceOf(byte(0x60 + 3*i + j))}
			items = append(items, signTransfer(t, a, key, 31337, addrs.Token))
		}
	}
	data, err := PackSettleBatch(addrs.Token, items)
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.Send(ctx, addrs.Batcher, data)
	if err != nil {
		t.Fatalf("settle batch: %v (revert reason %q)", err, RevertReason(err))
	}
	got := sameReceipt(t, fast, c, waitOK(t, s, h).TxHash)
	if res, err := ParseSettled(got, addrs.Batcher); err != nil || len(res) != len(items) {
		t.Fatalf("Settled events from the fast receipt: %d (%v), want %d", len(res), err, len(items))
	}
	for _, it := range items {
		if !HasTransfer(got, addrs.Token, it.From, it.To, it.Value) {
			t.Fatalf("the fast receipt lacks the Transfer of %v from %s", it.Value, it.From.Hex())
		}
	}
	if _, err := fast.TransactionReceipt(ctx, common.Hash{0x01}); !errors.Is(err, ethereum.NotFound) {
		t.Fatalf("unknown hash: %v, want ethereum.NotFound", err)
	}
}

// waitOK waits for h and requires it to have succeeded.
func waitOK(t *testing.T, s *Sender, h common.Hash) *types.Receipt {
	t.Helper()
	r, err := s.WaitReceipt(testCtx(t), h, 10*time.Millisecond)
	if err != nil || r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("receipt %s: %+v (%v)", h.Hex(), r, err)
	}
	return r
}

// rawRPC answers every call with one raw result.
type rawRPC string

func (r rawRPC) CallContext(_ context.Context, result any, _ string, _ ...any) error {
	return json.Unmarshal([]byte(r), result)
}

func TestDecodeReceiptRefusesWhatEthclientRefuses(t *testing.T) {
	full := `{"status":"0x1","cumulativeGasUsed":"0x5208","logsBloom":"0x` + zeros512 + `","logs":[{"address":"0x5fbdb2315678afecb367f032d93f642f64180aa3","topics":[],"data":"0x"}],"transactionHash":"0x0100000000000000000000000000000000000000000000000000000000000000","gasUsed":"0x5208","blockNumber":"0x2"}`
	r, err := RPCReceipts{RPC: rawRPC(full)}.TransactionReceipt(context.Background(), common.Hash{})
	if err != nil || r.Status != 1 || r.GasUsed != 0x5208 || r.BlockNumber.Int64() != 2 || len(r.Logs) != 1 || r.Logs[0].BlockNumber != 2 || r.Logs[0].TxHash != r.TxHash {
		t.Fatalf("minimal receipt: %+v (%v)", r, err)
	}
	if _, err := (RPCReceipts{RPC: rawRPC(`null`)}).TransactionReceipt(context.Background(), common.Hash{}); !errors.Is(err, ethereum.NotFound) {
		t.Fatalf("null: %v, want ethereum.NotFound", err)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"no gasUsed", `"gasUsed":"0x5208",`, ``, "missing gasUsed"},
		{"no cumulativeGasUsed", `"cumulativeGasUsed":"0x5208",`, ``, "missing cumulativeGasUsed"},
		{"no transactionHash", `"transactionHash"`, `"otherHash"`, "missing transactionHash"},
		{"no logs", `"logs"`, `"other"`, "missing logs"},
		{"no logsBloom", `"logsBloom"`, `"other"`, "missing logsBloom"},
		{"a log without address", `"address"`, `"other"`, "missing a log's address"},
		{"a log without data", `"data":"0x"`, `"other":"0x"`, "missing a log's data"},
		{"a log without topics", `"topics":[]`, `"other":[]`, "missing a log's topics"},
		{"a bad hex number", `"gasUsed":"0x5208"`, `"gasUsed":"5208"`, "decode receipt"},
		{"a short hash", `"transactionHash":"0x01`, `"transactionHash":"0x1`, "decode receipt"},
		{"a repeated name", `"status":"0x1"`, `"status":"0x1","status":"0x0"`, "duplicate"},
		{"not JSON", `{`, `[`, "decode receipt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := strings.Replace(full, tc.from, tc.to, 1)
			if raw == full {
				t.Fatalf("the case changes nothing")
			}
			if _, err := decodeReceipt([]byte(raw)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
		})
	}
}

var zeros512 = strings.Repeat("0", 512)

// FuzzDecodeReceipt: whatever a node sends, decoding never panics, and a receipt it accepts,
// encoded as go-ethereum encodes receipts, decodes to a receipt with that same encoding.
func FuzzDecodeReceipt(f *testing.F) {
	f.Add([]byte(`{"status":"0x1","cumulativeGasUsed":"0x1","logsBloom":"0x` + zeros512 + `","logs":[],"transactionHash":"0x0100000000000000000000000000000000000000000000000000000000000000","gasUsed":"0x1"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"logs":[{"address":"0x00","topics":["0x"],"data":"0x"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := decodeReceipt(raw)
		if err != nil {
			return
		}
		enc, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := decodeReceipt(enc)
		if err != nil {
			t.Fatalf("decode of the re-encoded receipt %s: %v", enc, err)
		}
		if enc2, _ := json.Marshal(again); string(enc2) != string(enc) {
			t.Fatalf("round trip changed the receipt:\n%s\n%s", enc, enc2)
		}
	})
}

// BenchmarkDecodeReceipt decodes the receipt of a settled batch of 100 payments (300 logs),
// as ethclient decodes it and as RPCReceipts does.
func BenchmarkDecodeReceipt(b *testing.B) {
	r := &types.Receipt{Status: 1, CumulativeGasUsed: 9_000_000, GasUsed: 9_000_000, EffectiveGasPrice: big.NewInt(1e9), BlockNumber: big.NewInt(100), BlockHash: common.Hash{0x0b}, TxHash: common.Hash{0x0a}}
	for i := range 300 {
		r.Logs = append(r.Logs, &types.Log{
			Address: common.Address{0x05}, Topics: []common.Hash{TransferTopic, {0x01}, {0x02}}, Data: common.LeftPadBytes([]byte{0x27, 0x10}, 32),
			BlockNumber: 100, BlockHash: r.BlockHash, TxHash: r.TxHash, Index: uint(i),
		})
	}
	raw, err := json.Marshal(r)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("ethclient", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			var got types.Receipt
			if err := json.Unmarshal(raw, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("RPCReceipts", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if _, err := decodeReceipt(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// fixedHead is a chain whose head is block head, for ever.
type fixedHead uint64

func (h fixedHead) BlockNumber(context.Context) (uint64, error) { return uint64(h), nil }

// TestAReceiptWithoutABlockIsNotMined: some nodes answer eth_getTransactionReceipt for a
// transaction still in their pool with a receipt whose blockNumber and blockHash are null, and
// a hostile node can send one. Such a receipt proves nothing was mined: the waits keep waiting
// (and time out as pending) rather than returning it or panicking on its missing block.
func TestAReceiptWithoutABlockIsNotMined(t *testing.T) {
	pending := `{"status":"0x1","cumulativeGasUsed":"0x5208","logsBloom":"0x` + zeros512 + `","logs":[],"transactionHash":"0x0100000000000000000000000000000000000000000000000000000000000000","gasUsed":"0x5208","blockNumber":null,"blockHash":null}`
	r := RPCReceipts{RPC: rawRPC(pending)}
	h := common.Hash{0x01}
	for _, tc := range []struct {
		name string
		wait func(ctx context.Context) (*types.Receipt, error)
	}{
		{"WaitReceipt", func(ctx context.Context) (*types.Receipt, error) { return WaitReceipt(ctx, r, h, time.Millisecond) }},
		{"WaitConfirmed", func(ctx context.Context) (*types.Receipt, error) {
			return WaitConfirmed(ctx, r, fixedHead(100), h, 2, time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			got, err := tc.wait(ctx)
			if !errors.Is(err, ErrReceiptTimeout) {
				t.Fatalf("got %+v, %v; want ErrReceiptTimeout", got, err)
			}
		})
	}
}
