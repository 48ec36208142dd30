package x402

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"go.uber.org/goleak"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/chain/chaintest"
	"github.com/secureexec/secureexec/contracts/bindings/testwallet"
	"github.com/secureexec/secureexec/contracts/bindings/x402lens"
	"github.com/secureexec/secureexec/payments"
)

// TestLensCalldata: the hand-packed constructor arguments are go-ethereum's ABI encoding.
func TestLensCalldata(t *testing.T) {
	for _, n := range []int{1, 2, 7, MaxLensBatch} {
		batch := make([]*lensWaiter, n)
		payers := make([]common.Address, n)
		nonces := make([][32]byte, n)
		for i := range batch {
			payers[i] = common.BytesToAddress(crypto.Keccak256([]byte{byte(i), 1}))
			nonces[i] = crypto.Keccak256Hash([]byte{byte(i), 2})
			batch[i] = &lensWaiter{token: localToken, payer: payers[i], nonce: nonces[i]}
		}
		want := append(common.FromHex(x402lens.X402LensMetaData.Bin), x402lens.NewX402Lens().PackConstructor(localToken, payers, nonces)...)
		if got := lensCalldata(batch); !bytes.Equal(got, want) {
			t.Fatalf("%d payments: calldata differs from the ABI encoder's", n)
		}
	}
}

// lensWorld is TestUSDC's runtime code at a token address with balances and used nonces
// written straight into its storage, so that every payer has its own answers: balanceOf[p]
// is slot keccak(p . 1), authorizationState[p][n] is slot keccak(n . keccak(p . 3)).
type lensWorld struct {
	token, noCode, wallet common.Address
	payers                []common.Address
	nonces                []common.Hash
	balances              []int64
	used                  []bool
}

func newLensWorld(t testing.TB, n int) *lensWorld {
	w := &lensWorld{
		token:  common.HexToAddress("0x00000000000000000000000000000000000070c0"),
		noCode: common.HexToAddress("0x00000000000000000000000000000000000070c1"),
		wallet: common.HexToAddress("0x00000000000000000000000000000000000070c2"),
	}
	for i := range n {
		w.payers = append(w.payers, common.BytesToAddress(crypto.Keccak256([]byte(fmt.Sprintf("payer %d", i)))))
		w.nonces = append(w.nonces, crypto.Keccak256Hash([]byte(fmt.Sprintf("nonce %d", i))))
		w.balances = append(w.balances, int64(i%7)*1_000_000+int64(i))
		w.used = append(w.used, i%3 == 0)
	}
	return w
}

func (w *lensWorld) tokenCode(t testing.TB) []byte {
	raw, err := os.ReadFile("../../contracts/artifacts/TestUSDC.bin-runtime")
	if err != nil {
		t.Fatal(err)
	}
	return common.FromHex(strings.TrimSpace(string(raw)))
}

func (w *lensWorld) storage() map[common.Hash]common.Hash {
	st := map[common.Hash]common.Hash{}
	word := func(b []byte) []byte { return common.LeftPadBytes(b, 32) }
	for i, p := range w.payers {
		st[crypto.Keccak256Hash(word(p[:]), word([]byte{1}))] = common.BigToHash(big.NewInt(w.balances[i]))
		if w.used[i] {
			inner := crypto.Keccak256(word(p[:]), word([]byte{3}))
			st[crypto.Keccak256Hash(w.nonces[i][:], inner)] = common.BigToHash(big.NewInt(1))
		}
	}
	return st
}

// walletCode is any code at all: the lens only asks whether the payer has some.
var walletCode = []byte{0x60, 0x00, 0x80, 0xfd}

func (w *lensWorld) simulated(t testing.TB) ContractCaller {
	b := simulated.NewBackend(types.GenesisAlloc{
		w.token:  {Code: w.tokenCode(t), Storage: w.storage(), Balance: big.NewInt(0)},
		w.wallet: {Code: walletCode, Balance: big.NewInt(0)},
	})
	t.Cleanup(func() { _ = b.Close() })
	return b.Client()
}

func (w *lensWorld) anvil(t testing.TB) ContractCaller {
	_, c := chaintest.StartAnvil(t, 31337)
	ctx := context.Background()
	rc := c.Client()
	for addr, code := range map[common.Address][]byte{w.token: w.tokenCode(t), w.wallet: walletCode} {
		if err := rc.CallContext(ctx, nil, "anvil_setCode", addr, hexutil.Bytes(code)); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range w.storage() {
		if err := rc.CallContext(ctx, nil, "anvil_setStorageAt", w.token, k, v); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// check asks the lens about every payer (and about the wallet and a codeless token) from as
// many goroutines, and compares each answer with the world and with the plain reads.
func (w *lensWorld) check(t *testing.T, c ContractCaller, opts LensOptions) {
	ctx := context.Background()
	calls := &countingCaller{ContractCaller: c}
	l := NewLensReader(calls, opts)
	plain := NewRPCReader(c, 0)
	var wg sync.WaitGroup
	errs := make(chan error, len(w.payers)+2)
	for i := range w.payers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, nonce := w.payers[i], w.nonces[i]
			s, err := l.PaymentState(ctx, w.token, p, nonce)
			if err != nil {
				errs <- err
				return
			}
			bal, err1 := plain.BalanceOf(ctx, w.token, p)
			used, err2 := plain.AuthorizationState(ctx, w.token, p, nonce)
			if err1 != nil || err2 != nil {
				errs <- errors.Join(err1, err2)
				return
			}
			if s.PayerHasCode || !s.AssetHasCode || s.Balance == nil || s.Balance.Int64() != w.balances[i] || bal.Int64() != w.balances[i] ||
				!s.UsedKnown || s.Used != w.used[i] || used != w.used[i] {
				errs <- fmt.Errorf("payer %d: lens %+v, plain balance %v used %v; want balance %d used %v", i, s, bal, used, w.balances[i], w.used[i])
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		s, err := l.PaymentState(ctx, w.token, w.wallet, w.nonces[0])
		if err != nil || !s.PayerHasCode || s.Balance == nil || s.Balance.Sign() != 0 || !s.UsedKnown || s.Used {
			errs <- fmt.Errorf("wallet: %+v %v", s, err)
		}
	}()
	go func() {
		defer wg.Done()
		// A token without code answers every call with nothing: all unknown but the code.
		s, err := l.PaymentState(ctx, w.noCode, w.payers[1], w.nonces[1])
		if err != nil || s.AssetHasCode || s.Balance != nil || s.UsedKnown {
			errs <- fmt.Errorf("codeless token: %+v %v", s, err)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitIdle(t, l)
	if n := calls.lens.Load(); n == 0 || n > int64(len(w.payers)+2) {
		t.Fatalf("%d lens calls for %d payments", n, len(w.payers)+2)
	}
	t.Logf("%d payments answered by %d lens calls, largest batch %d", len(w.payers)+2, calls.lens.Load(), calls.maxBatch.Load())
}

func TestLensSimulated(t *testing.T) {
	w := newLensWorld(t, 300)
	c := w.simulated(t)
	w.check(t, c, LensOptions{})
	w.check(t, c, LensOptions{MaxBatch: 5, MaxInFlight: 3})
}

// TestLensAnvil runs the lens against a node in another process, over HTTP.
func TestLensAnvil(t *testing.T) {
	if testing.Short() {
		t.Skip("starts anvil")
	}
	w := newLensWorld(t, 300)
	c := w.anvil(t)
	w.check(t, c, LensOptions{})
	w.check(t, c, LensOptions{MaxBatch: MaxLensBatch, MaxInFlight: 1})
}

// countingCaller counts lens calls (eth_call without `to`) and their largest batch.
type countingCaller struct {
	ContractCaller
	lens, maxBatch atomic.Int64
}

func (c *countingCaller) CallContract(ctx context.Context, m ethereum.CallMsg, block *big.Int) ([]byte, error) {
	if m.To == nil {
		c.lens.Add(1)
		n := int64(lensBatchSize(m.Data))
		for {
			cur := c.maxBatch.Load()
			if n <= cur || c.maxBatch.CompareAndSwap(cur, n) {
				break
			}
		}
	}
	return c.ContractCaller.CallContract(ctx, m, block)
}

// lensBatchSize reads the payers array length back from lens calldata.
func lensBatchSize(data []byte) int {
	args := data[len(lensInitCode):]
	return int(new(big.Int).SetBytes(args[96:128]).Int64())
}

// waitIdle waits until the reader has no lens call running: its goroutines are gone.
func waitIdle(t testing.TB, l *LensReader) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		l.mu.Lock()
		idle := l.inFlight == 0 && len(l.pending) == 0
		l.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("lens reader still busy")
		}
	}
}

// fakeLensNode answers lens calls from a table, each after gate opens, or fails them with
// err; plain calls it answers from the same table, or with plainErr.
type fakeLensNode struct {
	gate     chan struct{} // nil: answer at once
	entered  chan int      // batch sizes, as lens calls start (buffered; nil: not reported)
	err      error
	plainErr error
	balance  func(payer common.Address) int64
	calls    atomic.Int64
	plain    atomic.Int64
}

// CodeAt: the test token has code, nothing else has.
func (f *fakeLensNode) CodeAt(_ context.Context, a common.Address, _ *big.Int) ([]byte, error) {
	f.plain.Add(1)
	if f.plainErr != nil {
		return nil, f.plainErr
	}
	if a == localToken {
		return []byte{0x00}, nil
	}
	return nil, nil
}

func (f *fakeLensNode) CallContract(ctx context.Context, m ethereum.CallMsg, _ *big.Int) ([]byte, error) {
	if m.To != nil {
		f.plain.Add(1)
		if f.plainErr != nil {
			return nil, f.plainErr
		}
		switch [4]byte(m.Data[:4]) {
		case selectorBalanceOf:
			return sliceOf(f.balance(common.BytesToAddress(m.Data[16:36]))), nil
		case selectorAuthorizationState:
			return sliceOf(0), nil
		}
		return nil, errors.New("unexpected call")
	}
	f.calls.Add(1)
	n := lensBatchSize(m.Data)
	if f.entered != nil {
		f.entered <- n
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.err != nil {
		return nil, f.err
	}
	args := m.Data[len(lensInitCode):]
	out := make([]byte, 32+lensRecordSize*n)
	out[31] = 1 // the token has code
	for i := range n {
		payer := common.BytesToAddress(args[128+32*i : 160+32*i])
		rec := out[32+lensRecordSize*i:]
		rec[63] = 33
		big.NewInt(f.balance(payer)).FillBytes(rec[64:96])
		rec[127] = 33
	}
	return out, nil
}

func fakeBalance(p common.Address) int64 { return int64(p[19]) * 100 }

func payerN(i int) common.Address { return common.BigToAddress(big.NewInt(int64(1000 + i))) }

// TestLensRouting: under load, each caller gets its own payer's answer, batches respect
// MaxBatch, and at most MaxInFlight lens calls run at once.
func TestLensRouting(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f := &fakeLensNode{balance: fakeBalance, gate: make(chan struct{}), entered: make(chan int, 100)}
	l := NewLensReader(f, LensOptions{MaxBatch: 8, MaxInFlight: 2})
	const n = 60
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := l.PaymentState(context.Background(), localToken, payerN(i), common.Hash{byte(i)})
			if err != nil || s.Balance == nil || s.Balance.Int64() != fakeBalance(payerN(i)) {
				errs <- fmt.Errorf("payer %d: %+v %v", i, s, err)
			}
		}()
	}
	// Two calls start and hold; everyone else queues behind them.
	held := <-f.entered + <-f.entered
	if held > 16 {
		t.Errorf("the first two batches held %d payments, MaxBatch is 8", held)
	}
	waitPending(t, l, func(p int) bool { return p > 0 })
	select {
	case k := <-f.entered:
		t.Fatalf("a third lens call (of %d) started while two were running", k)
	case <-time.After(20 * time.Millisecond):
	}
	close(f.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	close(f.entered)
	total := held
	for k := range f.entered {
		if k > 8 {
			t.Errorf("a batch of %d, MaxBatch is 8", k)
		}
		total += k
	}
	if total != n {
		t.Errorf("batches held %d payments, want %d", total, n)
	}
	waitIdle(t, l)
	if calls := f.calls.Load(); calls >= n || calls < n/8 {
		t.Fatalf("%d lens calls for %d payments", calls, n)
	}
}

func waitPending(t testing.TB, l *LensReader, ok func(int) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		l.mu.Lock()
		p := len(l.pending)
		l.mu.Unlock()
		if ok(p) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d", p)
		}
	}
}

// TestLensFailure: a lens call that fails fails every payment in it as an outage (503), never
// as a refusal, not even when the node says "reverted" about a transport problem's twin.
func TestLensFailure(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	boom := errors.New("dial tcp 127.0.0.1:8545: connection refused")
	f := &fakeLensNode{balance: fakeBalance, err: boom, gate: make(chan struct{}), entered: make(chan int, 100)}
	l := NewLensReader(f, LensOptions{MaxInFlight: 1})
	req := offer()
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Verify(context.Background(), l, pay(t, key2, req, testNow), req, testNow)
		}()
	}
	k := <-f.entered
	waitPending(t, l, func(p int) bool { return p == n-k })
	close(f.gate)
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, payments.ErrUnavailable) || !errors.Is(err, boom) || errors.Is(err, ErrCallReverted) || Reason(err) != "" {
			t.Fatalf("payment %d: %v", i, err)
		}
	}
	// The first call took the k payments queued when it started (all n, if every goroutine was
	// quicker than it); the rest went together in a second one.
	want := int64(2)
	if k == n {
		want = 1
	}
	if got := f.calls.Load(); got != want {
		t.Fatalf("%d lens calls, want %d (%d, then the other %d together)", got, want, k, n-k)
	}
	if f.plain.Load() != 0 {
		t.Fatalf("%d plain reads after a failed lens call", f.plain.Load())
	}
	waitIdle(t, l)

	// An answer of the wrong size is a failed read too.
	_, err := NewLensReader(truncatingCaller{&fakeLensNode{balance: fakeBalance}}, LensOptions{}).PaymentState(context.Background(), localToken, addr2, common.Hash{})
	if err == nil || errors.Is(err, ErrCallReverted) {
		t.Fatalf("truncated answer: %v", err)
	}
}

type truncatingCaller struct{ *fakeLensNode }

func (c truncatingCaller) CallContract(ctx context.Context, m ethereum.CallMsg, b *big.Int) ([]byte, error) {
	out, err := c.fakeLensNode.CallContract(ctx, m, b)
	return out[:len(out)-1], err
}

// TestLensRefused: a node that runs the lens and reports it failed (reverted, out of gas) is
// asked the same questions one by one, and verification goes on; an outage of those plain
// reads is still an outage.
func TestLensRefused(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	req := offer()
	for _, lensErr := range []error{errors.New("execution reverted"), errors.New("out of gas: gas required exceeds allowance")} {
		f := &fakeLensNode{balance: func(common.Address) int64 { return 1_000_000 }, err: lensErr}
		l := NewLensReader(f, LensOptions{})
		if _, err := Verify(context.Background(), l, pay(t, key2, req, testNow), req, testNow); err != nil {
			t.Fatalf("%v: %v", lensErr, err)
		}
		if f.calls.Load() != 1 || f.plain.Load() != 4 {
			t.Fatalf("%v: %d lens calls, %d plain reads, want 1 and 4", lensErr, f.calls.Load(), f.plain.Load())
		}
		f.plainErr = errors.New("connection reset")
		if _, err := Verify(context.Background(), l, pay(t, key2, req, testNow), req, testNow); !errors.Is(err, payments.ErrUnavailable) {
			t.Fatalf("plain reads failing after a refused lens: %v", err)
		}
		waitIdle(t, l)
	}
}

// TestLensCancel: a caller whose context ends leaves at once; the rest of its batch, and the
// callers queued with it, still get their answers.
func TestLensCancel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f := &fakeLensNode{balance: fakeBalance, gate: make(chan struct{}), entered: make(chan int, 100)}
	l := NewLensReader(f, LensOptions{MaxInFlight: 1})

	// The first caller's call is running when it gives up.
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := l.PaymentState(ctx1, localToken, payerN(1), common.Hash{})
		first <- err
	}()
	sizes := []int{<-f.entered}
	// Queued callers: one of them gives up before its batch starts.
	ctx2, cancel2 := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	results := make([]error, 10)
	for i := range 10 {
		ctx := context.Background()
		if i == 3 {
			ctx = ctx2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := l.PaymentState(ctx, localToken, payerN(i), common.Hash{})
			if err == nil && (s.Balance == nil || s.Balance.Int64() != fakeBalance(payerN(i))) {
				err = fmt.Errorf("wrong answer %+v", s)
			}
			results[i] = err
		}()
	}
	waitPending(t, l, func(p int) bool { return p == 10 })
	cancel1()
	cancel2()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled caller: %v", err)
	}
	close(f.gate)
	wg.Wait()
	for i, err := range results {
		if i == 3 {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("canceled queued caller: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	close(f.entered)
	for k := range f.entered {
		sizes = append(sizes, k)
	}
	if len(sizes) != 2 || sizes[0] != 1 || sizes[1] != 9 {
		t.Fatalf("batches %v, want [1 9]: the canceled queued caller is left out", sizes)
	}
	waitIdle(t, l)
}

// BenchmarkLensPaymentState measures the lens against the simulated chain from many
// goroutines: the per-payment cost of verification's chain reads.
//
//	go test -run '^$' -bench LensPaymentState -benchtime 20000x ./payments/x402/
func BenchmarkLensPaymentState(b *testing.B) {
	w := newLensWorld(b, 64)
	c := w.simulated(b)
	for _, tc := range []struct {
		name string
		r    func() ChainReader
	}{
		{"plain", func() ChainReader { return NewRPCReader(c, 0) }},
		{"lens", func() ChainReader { return NewLensReader(c, LensOptions{}) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := tc.r()
			var i atomic.Int64
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					k := int(i.Add(1)) % len(w.payers)
					if l, ok := r.(*LensReader); ok {
						if _, err := l.PaymentState(ctx, w.token, w.payers[k], w.nonces[k]); err != nil {
							b.Error(err)
						}
						continue
					}
					if _, err := r.CodeAt(ctx, w.payers[k]); err != nil {
						b.Error(err)
					}
					if _, err := r.CodeAt(ctx, w.token); err != nil {
						b.Error(err)
					}
					if _, err := r.BalanceOf(ctx, w.token, w.payers[k]); err != nil {
						b.Error(err)
					}
					if _, err := r.AuthorizationState(ctx, w.token, w.payers[k], w.nonces[k]); err != nil {
						b.Error(err)
					}
				}
			})
		})
	}
}

// TestLensDevChainVerify: Verify through the lens against the real TestUSDC and a deployed
// TestWallet (ERC-1271) on the dev chain: an EOA and a contract wallet pay, a payer without
// USDC and a nonce already used on the token are refused, as with the plain reads.
func TestLensDevChainVerify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev, err := chain.StartSimulated(ctx, chain.DevChainOptions{Accounts: 3, AutoMine: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	c, token, accs := dev.Client(), dev.Addresses().Token, dev.Accounts()
	owner := chain.DevKey(1)
	opts := bind.NewKeyedTransactor(owner, dev.ChainID())
	opts.Context = ctx
	wallet, tx, err := bind.DeployContract(opts, common.FromHex(testwallet.TestWalletMetaData.Bin), c, testwallet.NewTestWallet().PackConstructor(accs[1].Address))
	if err != nil {
		t.Fatal(err)
	}
	op, err := chain.NewSender(c, dev.OperatorKey(), dev.ChainID(), chain.SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mint, err := op.Send(ctx, token, chain.PackMint(wallet, big.NewInt(1_000_000)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.CommitUntilMined(ctx, tx.Hash(), mint); err != nil {
		t.Fatal(err)
	}

	net := CustomNetwork(dev.ChainID().Uint64(), token, "USD Coin", "2")
	req := Requirements(net, payments.Price{Amount: 10_000}, accs[0].Address, time.Minute)
	now := time.Now()
	payFrom := func(from common.Address, signer *ecdsa.PrivateKey) *PaymentPayload {
		var nonce [32]byte
		_, _ = rand.Read(nonce[:])
		auth := authFor(req, from, now)
		auth.Nonce = "0x" + common.Bytes2Hex(nonce[:])
		accepted := req
		return &PaymentPayload{X402Version: 2, Accepted: &accepted, Payload: ExactEVMPayload{Signature: sign(t, signer, req, auth), Authorization: auth}}
	}
	eoa := payFrom(accs[2].Address, chain.DevKey(2))
	walletPay := payFrom(wallet, owner)
	broke, _ := crypto.GenerateKey()
	brokePay := payFrom(crypto.PubkeyToAddress(broke.PublicKey), broke)

	// Settle one authorization on the token: its nonce is then used.
	used := payFrom(accs[2].Address, chain.DevKey(2))
	v, err := VerifyLocal(used, req, now)
	if err != nil {
		t.Fatal(err)
	}
	data, err := chain.PackTransferWithAuthorization(chain.Authorization{From: v.Payer, To: v.To, Value: v.Value,
		ValidAfter: v.ValidAfter, ValidBefore: v.ValidBefore, Nonce: v.Nonce, Signature: v.Signature})
	if err != nil {
		t.Fatal(err)
	}
	settled, err := op.Send(ctx, token, data)
	if err != nil {
		t.Fatal(err)
	}
	if rs, err := dev.CommitUntilMined(ctx, settled); err != nil || rs[0].Status != 1 {
		t.Fatalf("settle: %v", err)
	}

	lens := NewLensReader(c, LensOptions{})
	for _, tc := range []struct {
		name   string
		p      *PaymentPayload
		want   string
		wallet bool
	}{
		{"EOA", eoa, "", false},
		{"TestWallet (ERC-1271)", walletPay, "", true},
		{"no USDC", brokePay, ReasonInsufficientBalance, false},
		{"nonce used on the token", used, ReasonNonceAlreadyUsed, false},
	} {
		for _, r := range []ChainReader{NewRPCReader(c, 0), lens} {
			t.Run(fmt.Sprintf("%T/%s", r, tc.name), func(t *testing.T) {
				v, err := Verify(ctx, r, tc.p, req, now)
				wantReason(t, err, tc.want)
				if err == nil && v.ContractWallet != tc.wallet {
					t.Fatalf("ContractWallet = %v", v.ContractWallet)
				}
			})
		}
	}
	waitIdle(t, lens)
}
