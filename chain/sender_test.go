package chain

import (
	"context"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

func TestSenderConcurrentSends(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 1, AutoMine: true})
	ctx := testCtx(t)
	c, token := d.Client(), d.Addresses().Token
	s := newSender(t, c, d.OperatorKey(), d.ChainID())
	start, err := c.PendingNonceAt(ctx, s.Address())
	if err != nil {
		t.Fatal(err)
	}

	const n = 20
	hashes := make([]common.Hash, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := common.BigToAddress(big.NewInt(int64(0x1000 + i)))
			hashes[i], errs[i] = s.Send(ctx, token, PackMint(to, big.NewInt(int64(i+1))))
		}()
	}
	wg.Wait()

	nonces := map[uint64]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("send %d: %v", i, errs[i])
		}
		// The auto-miner mines; the waiter does not know the chain is simulated.
		r, err := s.WaitReceipt(ctx, hashes[i], 0)
		if err != nil || r.Status != types.ReceiptStatusSuccessful {
			t.Fatalf("receipt %d: %v", i, err)
		}
		tx, _, err := c.TransactionByHash(ctx, hashes[i])
		if err != nil {
			t.Fatal(err)
		}
		if nonces[tx.Nonce()] {
			t.Fatalf("nonce %d used twice", tx.Nonce())
		}
		nonces[tx.Nonce()] = true
		to := common.BigToAddress(big.NewInt(int64(0x1000 + i)))
		if bal, _ := TokenBalance(ctx, c, token, to); bal.Int64() != int64(i+1) {
			t.Fatalf("mint %d landed %v", i, bal)
		}
	}
	for nonce := start; nonce < start+n; nonce++ {
		if !nonces[nonce] {
			t.Fatalf("nonce %d skipped (have %v)", nonce, nonces)
		}
	}
}

// TestSenderNonceResync runs two Senders on one key, as two gateway processes would: the one
// whose local nonce went stale resyncs from the node instead of failing.
func TestSenderNonceResync(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 1})
	c, token := d.Client(), d.Addresses().Token
	a := newSender(t, c, d.OperatorKey(), d.ChainID())
	b := newSender(t, c, d.OperatorKey(), d.ChainID())
	mint := func(i int64) []byte { return PackMint(common.BigToAddress(big.NewInt(0x2000+i)), big.NewInt(i)) }

	nonce := func(r *types.Receipt) uint64 {
		tx, _, err := c.TransactionByHash(testCtx(t), r.TxHash)
		if err != nil {
			t.Fatal(err)
		}
		return tx.Nonce()
	}
	first := nonce(mined(t, d, a, token, mint(1))) // a: nonce n, believes n+1 next
	mined(t, d, b, token, mint(2))                 // b syncs at n+1
	mined(t, d, b, token, mint(3))                 // n+2
	// a's n+1 is "nonce too low" now; it resyncs to n+3 and succeeds.
	if got := nonce(mined(t, d, a, token, mint(4))); got != first+3 {
		t.Fatalf("resynced nonce %d, want %d", got, first+3)
	}

	// Stale against the pool rather than the chain: "replacement transaction underpriced".
	h1, err := b.Send(testCtx(t), token, mint(5)) // b: nonce 4, pending
	if err != nil {
		t.Fatal(err)
	}
	h2, err := a.Send(testCtx(t), token, mint(6)) // a believes 4, pool holds 4: resync to 5
	if err != nil {
		t.Fatalf("send with a nonce taken in the pool: %v", err)
	}
	commitReceipt(t, d, h1)
	commitReceipt(t, d, h2)
}

func TestWaitReceiptTimeout(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 1})
	c, token := d.Client(), d.Addresses().Token
	s := newSender(t, c, d.OperatorKey(), d.ChainID())
	h, err := s.Send(testCtx(t), token, PackMint(common.Address{0x33}, big.NewInt(1)))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		hash common.Hash
		ctx  func() (context.Context, context.CancelFunc)
		also error
	}{
		{"sent but never mined, deadline", h, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 150*time.Millisecond)
		}, context.DeadlineExceeded},
		{"unknown hash, deadline", common.Hash{0x77}, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}, context.DeadlineExceeded},
		{"canceled", h, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			r, err := s.WaitReceipt(ctx, tc.hash, 5*time.Millisecond)
			if r != nil || !errors.Is(err, ErrReceiptTimeout) || !errors.Is(err, tc.also) {
				t.Fatalf("got %v, %v; want ErrReceiptTimeout wrapping %v", r, err, tc.also)
			}
		})
	}

	// Pending was the truth: once a block is mined, the same wait succeeds.
	commitReceipt(t, d, h)
	if r, err := s.WaitReceipt(testCtx(t), h, 0); err != nil || r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("after commit: %v", err)
	}
}

func TestSenderFeeCap(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 1})
	s, err := NewSender(d.Client(), d.OperatorKey(), d.ChainID(), SenderOptions{MaxFeePerGas: big.NewInt(1)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Send(testCtx(t), d.Addresses().Token, PackMint(common.Address{1}, big.NewInt(1)))
	if !errors.Is(err, ErrFeeCapExceeded) {
		t.Fatalf("got %v, want ErrFeeCapExceeded", err)
	}
	if _, err := NewSender(d.Client(), nil, d.ChainID(), SenderOptions{}); err == nil {
		t.Fatal("NewSender accepted a nil key")
	}
}

// TestDeployAutoMined runs the chain-agnostic Deploy against the simulated chain with the
// auto-miner on, exactly as it would run against anvil or geth --dev.
func TestDeployAutoMined(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 5, AutoMine: true, AutoMineEvery: 10 * time.Millisecond})
	ctx := testCtx(t)
	key := DevKey(4)
	addrs, err := Deploy(ctx, d.Client(), key, d.ChainID())
	if err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	if addrs.ChainID != SimulatedChainID || addrs.Deployer != d.Accounts()[4].Address || addrs.Token == d.Addresses().Token {
		t.Fatalf("addresses %+v", addrs)
	}
	for _, a := range []common.Address{addrs.Token, addrs.Batcher} {
		if code, err := d.Client().CodeAt(ctx, a, nil); err != nil || len(code) == 0 {
			t.Fatalf("no code at %s (%v)", a.Hex(), err)
		}
	}
}

// The persisted transaction is the one broadcast, and re-broadcasting it after a "crash"
// neither fails nor executes twice.
func TestSendPersistedAndRebroadcast(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 1, AutoMine: true})
	ctx := testCtx(t)
	c, token := d.Client(), d.Addresses().Token
	s := newSender(t, c, d.OperatorKey(), d.ChainID())
	to := common.BigToAddress(big.NewInt(0x2000))

	// A failing persist broadcasts nothing and leaves the nonce for the next send.
	before, _ := c.PendingNonceAt(ctx, s.Address())
	if _, err := s.SendPersisted(ctx, token, PackMint(to, big.NewInt(1)), 0, func(*types.Transaction) error { return errors.New("disk full") }); err == nil {
		t.Fatal("a failed persist must fail the send")
	}
	var raw []byte
	hash, err := s.SendPersisted(ctx, token, PackMint(to, big.NewInt(5)), 0, func(tx *types.Transaction) (err error) {
		raw, err = tx.MarshalBinary()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var persisted types.Transaction
	if err := persisted.UnmarshalBinary(raw); err != nil || persisted.Hash() != hash || persisted.Nonce() != before {
		t.Fatalf("persisted %s nonce %d, sent %s, want nonce %d (%v)", persisted.Hash(), persisted.Nonce(), hash, before, err)
	}
	if r, err := s.WaitReceipt(ctx, hash, 0); err != nil || r.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("receipt: %v", err)
	}
	again, err := s.Rebroadcast(ctx, raw)
	if err != nil || again != hash {
		t.Fatalf("rebroadcast: %s %v", again, err)
	}
	if bal, _ := TokenBalance(ctx, c, token, to); bal.Int64() != 5 {
		t.Fatalf("balance %v: the mint must land exactly once", bal)
	}
}

// staleNonce answers one PendingNonceAt with a nonce that is already mined, as a lagging node
// behind a load balancer can.
// staleNonce answers the first PendingNonceAt with nonce 0, mined when the dev chain deployed
// its contracts. Not the nonce mined just before: the simulated node's pool forgets a mined
// transaction a moment after its receipt, and meanwhile refuses that nonce as "replacement
// transaction underpriced" instead of "nonce too low" (this test failed so once in CI).
type staleNonce struct {
	Backend
	once bool
}

func (s *staleNonce) PendingNonceAt(ctx context.Context, a common.Address) (uint64, error) {
	n, err := s.Backend.PendingNonceAt(ctx, a)
	if err == nil && !s.once && n > 0 {
		s.once = true
		return 0, nil
	}
	return n, err
}

// TestPersistedSendReplacesADeadTransaction: a persisted send whose transaction the node refuses
// as "nonce too low" persists a second one (the first can never be mined), and Rebroadcast
// reports such a dead transaction as ErrTxDead, but a mined one as fine.
func TestPersistedSendReplacesADeadTransaction(t *testing.T) {
	d := startDev(t, DevChainOptions{Accounts: 1, AutoMine: true})
	ctx := testCtx(t)
	c, token := d.Client(), d.Addresses().Token
	to := common.BigToAddress(big.NewInt(0x3000))
	warm := newSender(t, c, d.OperatorKey(), d.ChainID())
	mined(t, d, warm, token, PackMint(to, big.NewInt(1)))
	next, err := c.PendingNonceAt(ctx, d.Operator().Address)
	if err != nil || next == 0 {
		t.Fatalf("pending nonce %d, %v: the key needs mined nonces to be stale about", next, err)
	}

	s, err := NewSender(&staleNonce{Backend: c}, d.OperatorKey(), d.ChainID(), SenderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var persisted []*types.Transaction
	hash, err := s.SendPersisted(ctx, token, PackMint(to, big.NewInt(5)), 0, func(tx *types.Transaction) error {
		persisted = append(persisted, tx)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(persisted) != 2 || persisted[1].Hash() != hash || persisted[0].Nonce() != 0 || persisted[1].Nonce() != next {
		t.Fatalf("persisted %d transactions, want the refused one and its replacement (sent %s)", len(persisted), hash.Hex())
	}
	if _, err := s.WaitReceipt(ctx, hash, 0); err != nil {
		t.Fatal(err)
	}
	dead, _ := persisted[0].MarshalBinary()
	if _, err := s.Rebroadcast(ctx, dead); !errors.Is(err, ErrTxDead) {
		t.Fatalf("rebroadcast of a transaction whose nonce another one took = %v, want ErrTxDead", err)
	}
	live, _ := persisted[1].MarshalBinary()
	if _, err := s.Rebroadcast(ctx, live); err != nil {
		t.Fatalf("rebroadcast of the mined transaction = %v, want nil", err)
	}
	if bal, _ := TokenBalance(ctx, c, token, to); bal.Int64() != 6 {
		t.Fatalf("balance %v, want 1+5: the replaced mint must land exactly once", bal)
	}
}
