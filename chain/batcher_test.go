package chain

import (
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/secureexec/secureexec/contracts/bindings/settlementbatcher"
)

func TestSettleBatch(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 4})
	ctx := testCtx(t)
	c, addrs := d.Client(), d.Addresses()
	accs := d.Accounts()
	payee := accs[3].Address
	op := newSender(t, c, d.OperatorKey(), d.ChainID())
	stranger := newSender(t, c, DevKey(3), d.ChainID())
	b := settlementbatcher.NewSettlementBatcher()

	auth := func(payer int, nonce byte, value int64) Authorization {
		a := Authorization{From: accs[payer].Address, To: payee, Value: big.NewInt(value), ValidAfter: big.NewInt(0), ValidBefore: big.NewInt(1 << 40), Nonce: nonceOf(nonce)}
		return signTransfer(t, a, DevKey(payer), SimulatedChainID, addrs.Token)
	}
	bad := auth(2, 0x43, 5_000)
	bad.Signature = signTransfer(t, bad, DevKey(1), SimulatedChainID, addrs.Token).Signature // signed by someone else
	items := []Authorization{auth(0, 0x41, 1_000), auth(1, 0x42, 2_000), bad, auth(2, 0x44, 3_000)}
	want := []bool{true, true, false, true}
	data, err := PackSettleBatch(addrs.Token, items)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("only the operator may call", func(t *testing.T) {
		if got := simulate(t, c, stranger.Address(), addrs.Batcher, data); got != "SettlementBatcher: caller is not the operator" {
			t.Fatalf("stranger: %q", got)
		}
		if got := simulate(t, c, stranger.Address(), addrs.Batcher, b.PackSetOperator(stranger.Address())); got != "SettlementBatcher: caller is not the owner" {
			t.Fatalf("stranger setOperator: %q", got)
		}
		noCode, _ := PackSettleBatch(common.Address{0xde, 0xad}, items)
		if got := simulate(t, c, op.Address(), addrs.Batcher, noCode); got != "SettlementBatcher: token has no code" {
			t.Fatalf("token without code: %q", got)
		}
	})

	t.Run("a gas limit too low for every item reverts the whole batch", func(t *testing.T) {
		// Starved items would otherwise fail like bad authorizations, silently.
		_, err := c.CallContract(ctx, ethereum.CallMsg{From: op.Address(), To: &addrs.Batcher, Data: data, Gas: 400_000}, nil)
		if got := RevertReason(err); got != "SettlementBatcher: out of gas" {
			t.Fatalf("low gas: %v (reason %q)", err, got)
		}
	})

	t.Run("eth_call previews per-item outcomes", func(t *testing.T) {
		out := call(t, callerFrom{c, op.Address()}, addrs.Batcher, data)
		got, err := b.UnpackSettleBatch(out)
		if err != nil || len(got) != len(want) {
			t.Fatalf("preview %v (%v)", got, err)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("preview item %d = %v, want %v", i, got[i], want[i])
			}
		}
	})

	t.Run("3 good and 1 bad settle in one transaction", func(t *testing.T) {
		before, _ := TokenBalance(ctx, c, addrs.Token, payee)
		r := mined(t, d, op, addrs.Batcher, data)
		res, err := ParseSettled(r, addrs.Batcher)
		if err != nil || len(res) != len(items) {
			t.Fatalf("Settled events %+v (%v)", res, err)
		}
		moved := new(big.Int)
		for i, it := range items {
			if res[i].Nonce != it.Nonce || res[i].From != it.From || res[i].Success != want[i] {
				t.Fatalf("item %d: %+v, want nonce %s from %s success %v", i, res[i], it.Nonce.Hex(), it.From.Hex(), want[i])
			}
			if want[i] {
				if res[i].Reason != "" || !HasTransfer(r, addrs.Token, it.From, it.To, it.Value) {
					t.Fatalf("item %d succeeded without a clean Transfer (reason %q)", i, res[i].Reason)
				}
				moved.Add(moved, it.Value)
			} else if res[i].Reason != "FiatTokenV2: invalid signature" || HasTransfer(r, addrs.Token, it.From, it.To, it.Value) {
				t.Fatalf("item %d: reason %q", i, res[i].Reason)
			}
		}
		after, _ := TokenBalance(ctx, c, addrs.Token, payee)
		if new(big.Int).Sub(after, before).Cmp(moved) != 0 {
			t.Fatalf("payee received %v, want %v", new(big.Int).Sub(after, before), moved)
		}
		if used, _ := AuthorizationState(ctx, c, addrs.Token, bad.From, bad.Nonce); used {
			t.Fatal("the failed item's nonce was consumed")
		}
	})

	t.Run("a replayed batch settles nothing and still succeeds", func(t *testing.T) {
		r := mined(t, d, op, addrs.Batcher, data)
		res, _ := ParseSettled(r, addrs.Batcher)
		for i, x := range res {
			if x.Success {
				t.Fatalf("item %d settled twice", i)
			}
			if i != 2 && x.Reason != "FiatTokenV2: authorization is used or canceled" {
				t.Fatalf("item %d reason %q", i, x.Reason)
			}
		}
	})

	t.Run("the owner can hand the operator role over", func(t *testing.T) {
		mined(t, d, op, addrs.Batcher, b.PackSetOperator(stranger.Address()))
		fresh, _ := PackSettleBatch(addrs.Token, []Authorization{auth(0, 0x45, 10)})
		if got := simulate(t, c, op.Address(), addrs.Batcher, fresh); got != "SettlementBatcher: caller is not the operator" {
			t.Fatalf("old operator: %q", got)
		}
		r := mined(t, d, stranger, addrs.Batcher, fresh)
		if res, _ := ParseSettled(r, addrs.Batcher); len(res) != 1 || !res[0].Success {
			t.Fatalf("new operator batch: %+v", res)
		}
	})
}

// TestGasFigures measures (never asserts) what settlement costs, and checks that switching
// off go-ethereum's dev-only "Bogota" repricing makes the same work cheaper.
func TestGasFigures(t *testing.T) {
	measure := func(t *testing.T, bogota bool) (single, batch10 uint64) {
		d := startDev(t, DevChainOptions{Accounts: 2, BogotaGas: bogota})
		c, addrs := d.Client(), d.Addresses()
		op := newSender(t, c, d.OperatorKey(), d.ChainID())
		payee := d.Accounts()[1].Address
		auth := func(nonce byte) Authorization {
			a := Authorization{From: d.Accounts()[0].Address, To: payee, Value: big.NewInt(10_000), ValidAfter: big.NewInt(0), ValidBefore: big.NewInt(1 << 40), Nonce: nonceOf(nonce)}
			return signTransfer(t, a, DevKey(0), SimulatedChainID, addrs.Token)
		}
		one, _ := PackTransferWithAuthorization(auth(1))
		single = mined(t, d, op, addrs.Token, one).GasUsed
		var items []Authorization
		for i := range 10 {
			items = append(items, auth(byte(0x10+i)))
		}
		data, _ := PackSettleBatch(addrs.Token, items)
		r := mined(t, d, op, addrs.Batcher, data)
		if res, _ := ParseSettled(r, addrs.Batcher); len(res) != 10 || !res[9].Success {
			t.Fatalf("batch of 10: %+v", res)
		}
		return single, r.GasUsed
	}
	single, batch := measure(t, false)
	t.Logf("gas (Osaka rules): transferWithAuthorization %d, settleBatch of 10 %d (%d per item)", single, batch, batch/10)
	bSingle, bBatch := measure(t, true)
	t.Logf("gas (go-ethereum dev \"Bogota\" rules): transferWithAuthorization %d, settleBatch of 10 %d", bSingle, bBatch)
	if bSingle <= single {
		t.Fatalf("BogotaGas=false did not change gas: %d vs %d", single, bSingle)
	}
}

// TestBatchItemGasMatchesTheContract: the reserve a caller adds for a batch's last item
// (BatchItemReserve) follows the deployed batcher's ITEM_GAS.
func TestBatchItemGasMatchesTheContract(t *testing.T) {
	d := startDev(t, DevChainOptions{})
	b := settlementbatcher.NewSettlementBatcher()
	batcher := d.Addresses().Batcher
	out, err := d.Client().CallContract(testCtx(t), ethereum.CallMsg{To: &batcher, Data: b.PackITEMGAS()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.UnpackITEMGAS(out)
	if err != nil || got.Cmp(big.NewInt(BatchItemGas)) != 0 {
		t.Fatalf("the batcher's ITEM_GAS is %v (%v); chain.BatchItemGas is %d", got, err, BatchItemGas)
	}
}
