package chain

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/eth/ethconfig"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/ethereum/go-ethereum/node"
)

// SimulatedChainID is the chain id of go-ethereum's simulated backend (fixed by go-ethereum).
const SimulatedChainID = 1337

// Dev chain defaults.
var (
	// DefaultDevUSDC is minted to every dev account: 1,000,000 USDC in atomic units.
	DefaultDevUSDC = big.NewInt(1_000_000_000_000)
	// DefaultDevWei is every dev account's genesis ETH balance: 1,000 ETH.
	DefaultDevWei = new(big.Int).Mul(big.NewInt(1000), big.NewInt(1e18))
)

// DevChainOptions configure StartSimulated; the zero value gives 5 accounts, no auto-mining.
type DevChainOptions struct {
	// Accounts is the number of funded dev accounts (default 5); keys are DevKey(0..n-1).
	Accounts int
	// USDCPerAccount is minted to each account (default DefaultDevUSDC).
	USDCPerAccount *big.Int
	// OperatorKey deploys the contracts, owns them and operates the batcher (default
	// DevOperatorKey()). Passing anvil's key #0 reproduces the token address
	// 0x5FbDB2315678afecb367f032d93F642f64180aa3 used by the x402 test vectors.
	OperatorKey *ecdsa.PrivateKey
	// AutoMine starts a goroutine, stopped by Close, that mines a block shortly after
	// transactions are sent through Client(), so code that sends and then polls for receipts
	// works unchanged (as against anvil or a real node).
	AutoMine bool
	// AutoMineEvery is how long the auto-miner collects transactions into a block (default 50 ms).
	AutoMineEvery time.Duration
	// BogotaGas keeps go-ethereum's dev-chain "Bogota" gas repricing (first SSTORE ~133k gas).
	// By default it is switched off so gas matches Osaka-era chains such as Base.
	BogotaGas bool
	// Logger receives auto-miner diagnostics; nil means slog.Default().
	Logger *slog.Logger
}

// DevChain is go-ethereum's in-process simulated chain with TestUSDC and SettlementBatcher
// deployed and dev accounts funded with ETH and USDC. It is a test chain: no real money.
type DevChain struct {
	backend  *simulated.Backend
	addrs    Addresses
	accounts []DevAccount
	operator DevAccount
	opKey    *ecdsa.PrivateKey
	log      *slog.Logger

	mineMu sync.Mutex    // go-ethereum's simulated beacon does not serialise Commit/AdjustTime
	sent   chan struct{} // one-slot wake-up for the auto-miner, filled by Client().SendTransaction

	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// StartSimulated starts a simulated chain, deploys the contracts from the operator key,
// mints USDC to every dev account and, if asked, starts the auto-miner. ctx bounds the setup.
func StartSimulated(ctx context.Context, opts DevChainOptions) (*DevChain, error) {
	n := opts.Accounts
	if n == 0 {
		n = 5
	}
	if n < 0 || n > 1000 {
		return nil, fmt.Errorf("chain: dev accounts %d out of range 1..1000", n)
	}
	usdc := opts.USDCPerAccount
	if usdc == nil {
		usdc = DefaultDevUSDC
	}
	if usdc.Sign() < 0 {
		return nil, errors.New("chain: negative USDCPerAccount")
	}
	opKey := opts.OperatorKey
	if opKey == nil {
		opKey = DevOperatorKey()
	}
	every := opts.AutoMineEvery
	if every <= 0 {
		every = 50 * time.Millisecond
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.Default()
	}

	keys := make([]*ecdsa.PrivateKey, n)
	alloc := types.GenesisAlloc{crypto.PubkeyToAddress(opKey.PublicKey): {Balance: DefaultDevWei}}
	for i := range keys {
		keys[i] = DevKey(i)
		alloc[crypto.PubkeyToAddress(keys[i].PublicKey)] = types.Account{Balance: DefaultDevWei}
	}
	var simOpts []func(*node.Config, *ethconfig.Config)
	if !opts.BogotaGas {
		simOpts = append(simOpts, withoutBogota)
	}
	d := &DevChain{
		backend:  simulated.NewBackend(alloc, simOpts...),
		operator: devAccount(opKey, new(big.Int), DefaultDevWei),
		opKey:    opKey,
		log:      lg,
		sent:     make(chan struct{}, 1),
	}
	if err := d.setup(ctx, keys, usdc); err != nil {
		_ = d.backend.Close()
		return nil, err
	}
	if opts.AutoMine {
		loopCtx, cancel := context.WithCancel(context.Background())
		d.stop = cancel
		d.wg.Add(1)
		go d.autoMine(loopCtx, every)
	}
	lg.Warn("chain: simulated dev chain started: TEST CHAIN, NO REAL MONEY",
		"chain_id", SimulatedChainID, "token", d.addrs.Token.Hex(), "batcher", d.addrs.Batcher.Hex(), "accounts", n)
	return d, nil
}

// withoutBogota disables go-ethereum's dev-only "Bogota" fork (EIP-8037/8038 state-gas
// repricing) so gas figures match production chains; the config is copied, not mutated,
// because params.AllDevChainProtocolChanges is shared.
func withoutBogota(_ *node.Config, ec *ethconfig.Config) {
	cfg := *ec.Genesis.Config
	cfg.BogotaTime = nil
	ec.Genesis.Config = &cfg
}

// setup deploys and funds; it mines explicitly because the auto-miner is not running yet.
func (d *DevChain) setup(ctx context.Context, keys []*ecdsa.PrivateKey, usdc *big.Int) error {
	chainID := big.NewInt(SimulatedChainID)
	s, err := NewSender(d.backend.Client(), d.opKey, chainID, SenderOptions{Logger: d.log})
	if err != nil {
		return err
	}
	tokenTx, batcherTx, err := sendDeployment(ctx, s)
	if err != nil {
		return err
	}
	if _, err := d.CommitUntilMined(ctx, tokenTx, batcherTx); err != nil {
		return fmt.Errorf("chain: deploy: %w", err)
	}
	if d.addrs, err = deploymentAddresses(ctx, s, chainID, tokenTx, batcherTx); err != nil {
		return err
	}
	d.accounts = make([]DevAccount, len(keys))
	var mints []common.Hash
	for i, k := range keys {
		d.accounts[i] = devAccount(k, usdc, DefaultDevWei)
		if usdc.Sign() == 0 {
			continue
		}
		h, err := s.Send(ctx, d.addrs.Token, PackMint(d.accounts[i].Address, usdc))
		if err != nil {
			return fmt.Errorf("chain: mint to dev account %d: %w", i, err)
		}
		mints = append(mints, h)
	}
	if len(mints) == 0 {
		return nil
	}
	rs, err := d.CommitUntilMined(ctx, mints...)
	if err != nil {
		return fmt.Errorf("chain: mint to dev accounts: %w", err)
	}
	for _, r := range rs {
		if r.Status != types.ReceiptStatusSuccessful {
			return fmt.Errorf("chain: mint tx %s: %w", r.TxHash.Hex(), ErrTxReverted)
		}
	}
	return nil
}

// autoMine commits a block after transactions were sent through Client, batching what arrives
// within one tick. Every block must be at least 1 s newer than its parent, so mining on every
// tick under load would push block.timestamp far ahead of the wall clock and expire
// authorizations that are valid by it: once the head is more than 1 s ahead, it mines at most
// one block per second.
func (d *DevChain) autoMine(ctx context.Context, every time.Duration) {
	defer d.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	var last time.Time
	dirty := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.sent:
			dirty = true
			continue
		case <-t.C:
		}
		if !dirty {
			continue
		}
		if ahead, err := d.headAhead(ctx, every); err != nil || (ahead && time.Since(last) < time.Second) {
			continue
		}
		d.Commit()
		last = time.Now()
		// A transaction can reach the pool too late for the block just sealed. The pending
		// block is rebuilt for the new head, so this count is fresh (it is cached for 2 s
		// otherwise, which is why sends signal d.sent instead of the loop polling it).
		cctx, cancel := context.WithTimeout(ctx, 4*every)
		n, err := d.backend.Client().PendingTransactionCount(cctx)
		cancel()
		dirty = err != nil || n > 0
	}
}

// headAhead reports whether the head block's timestamp is more than 1 s past the wall clock.
func (d *DevChain) headAhead(ctx context.Context, every time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*every)
	defer cancel()
	head, err := d.backend.Client().HeaderByNumber(ctx, nil)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Debug("chain: auto-miner: head", "err", err)
		}
		return false, err
	}
	return head.Time > uint64(time.Now().Unix())+1, nil
}

// notifyingClient tells the auto-miner about every accepted transaction.
type notifyingClient struct {
	simulated.Client
	sent chan<- struct{}
}

// SendTransaction submits tx and, once the pool accepted it, wakes the auto-miner.
func (c notifyingClient) SendTransaction(ctx context.Context, tx *types.Transaction) error {
	if err := c.Client.SendTransaction(ctx, tx); err != nil {
		return err
	}
	select {
	case c.sent <- struct{}{}:
	default: // a wake-up is already queued
	}
	return nil
}

// Client is the chain's ethclient-compatible client (bind.ContractBackend, receipts, chain id…).
// Transactions sent through it wake the auto-miner.
func (d *DevChain) Client() simulated.Client {
	return notifyingClient{Client: d.backend.Client(), sent: d.sent}
}

// ChainID is always 1337 on the simulated backend.
func (d *DevChain) ChainID() *big.Int { return big.NewInt(SimulatedChainID) }

// Addresses locates the deployed TestUSDC and SettlementBatcher.
func (d *DevChain) Addresses() Addresses { return d.addrs }

// Accounts are the funded dev accounts, in key order (DevKey(0), DevKey(1), …).
func (d *DevChain) Accounts() []DevAccount {
	out := make([]DevAccount, len(d.accounts))
	copy(out, d.accounts)
	return out
}

// Operator is the deployer, token minter and batcher operator (the settlement key).
func (d *DevChain) Operator() DevAccount { return d.operator }

// OperatorKey returns the operator's private key, for building the gateway's settlement Sender.
func (d *DevChain) OperatorKey() *ecdsa.PrivateKey { return d.opKey }

// Commit mines one block with the pending transactions and returns its hash.
func (d *DevChain) Commit() common.Hash {
	d.mineMu.Lock()
	defer d.mineMu.Unlock()
	return d.backend.Commit()
}

// CommitUntilMined mines blocks until every hash has a receipt and returns the receipts in
// order. A single Commit is not always enough: go-ethereum's simulated beacon only logs a
// failed seal, and a transaction that reached the pool too late waits for the next block.
// When ctx ends first the error wraps ErrReceiptTimeout.
func (d *DevChain) CommitUntilMined(ctx context.Context, hashes ...common.Hash) ([]*types.Receipt, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultSendTimeout)
	defer cancel()
	out := make([]*types.Receipt, len(hashes))
	for {
		d.Commit()
		missing := 0
		for i, h := range hashes {
			if out[i] != nil {
				continue
			}
			r, err := d.backend.Client().TransactionReceipt(ctx, h)
			if err != nil || r == nil {
				missing++
				continue
			}
			out[i] = r
		}
		if missing == 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("chain: %d of %d transactions not mined: %w: %w", missing, len(hashes), ErrReceiptTimeout, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// AdjustTime mines an empty block dt later than the head; it fails while transactions are
// pending. Used to test expiries and validity windows.
func (d *DevChain) AdjustTime(dt time.Duration) error {
	d.mineMu.Lock()
	defer d.mineMu.Unlock()
	return d.backend.AdjustTime(dt)
}

// Close stops the auto-miner, waits for it, and shuts the chain down. Safe to call twice.
func (d *DevChain) Close() error {
	d.closeOnce.Do(func() {
		if d.stop != nil {
			d.stop()
		}
		d.wg.Wait()
		d.closeErr = d.backend.Close()
	})
	return d.closeErr
}
