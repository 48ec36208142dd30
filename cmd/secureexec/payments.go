package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/gateway"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
	"github.com/secureexec/secureexec/payments/x402"
)

// paymentStack is every enabled rail and what it runs in the background.
type paymentStack struct {
	rails   []payments.Rail
	reader  gateway.PaymentReader
	idem    gateway.IdempotencyStore
	payTo   string
	network string // shown in the 402's network field
	closers []func()
}

func (p *paymentStack) Close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// chainBackend is the chain as the rail uses it: reads for verification, a sender for
// settlement. The simulated client and ethclient both satisfy it.
type chainBackend interface {
	chain.Backend
	x402.ContractCaller
}

// buildPayments wires the x402 rail for the configured network. pool is the audit
// database's pool, or nil on the embedded default.
func buildPayments(ctx context.Context, cfg Config, pool *pgxpool.Pool, log *slog.Logger) (*paymentStack, error) {
	st := &paymentStack{payTo: cfg.PaymentWallet}
	if cfg.X402Network == "off" {
		return st, nil
	}
	var (
		backend   chainBackend
		network   x402.Network
		batcher   common.Address
		settleKey = cfg.SettlementKey
	)
	switch cfg.X402Network {
	case "dev":
		dev, err := chain.StartSimulated(ctx, chain.DevChainOptions{AutoMine: true, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("dev chain: %w", err)
		}
		st.closers = append(st.closers, func() { _ = dev.Close() })
		addrs := dev.Addresses()
		backend, batcher = dev.Client(), addrs.Batcher
		network = x402.CustomNetwork(dev.ChainID().Uint64(), addrs.Token, "USD Coin", "2")
		accounts := dev.Accounts()
		if st.payTo == "" {
			st.payTo = accounts[0].Address.Hex()
		}
		settleKey = "0x" + common.Bytes2Hex(crypto.FromECDSA(dev.OperatorKey()))
		if err := announceDevChain(cfg, dev, st.payTo, log); err != nil {
			st.Close()
			return nil, err
		}
	default:
		c, err := ethclient.DialContext(ctx, cfg.EthRPCURL)
		if err != nil {
			return nil, fmt.Errorf("ETH_RPC_URL: %w", err)
		}
		st.closers = append(st.closers, c.Close)
		backend = c
		id, err := c.ChainID(ctx)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("ETH_RPC_URL: chain id: %w", err)
		}
		switch cfg.X402Network {
		case "base":
			network = x402.Base
		case "base-sepolia":
			network = x402.BaseSepolia
		default:
			network = x402.CustomNetwork(id.Uint64(), common.HexToAddress(cfg.X402Token), cfg.X402TokenName, cfg.X402TokenVer)
		}
		if id.Uint64() != network.ChainID {
			st.Close()
			return nil, fmt.Errorf("ETH_RPC_URL serves chain %d, but X402_NETWORK=%s is chain %d", id, cfg.X402Network, network.ChainID)
		}
		if cfg.X402Batcher != "" {
			batcher = common.HexToAddress(cfg.X402Batcher)
		}
	}

	key, err := crypto.HexToECDSA(strings.TrimPrefix(settleKey, "0x"))
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("SETTLEMENT_PRIVATE_KEY: %w", err)
	}
	book, claims, err := openLedger(ctx, cfg, pool, log, st)
	if err != nil {
		st.Close()
		return nil, err
	}
	// Every replica signs with the same settlement key: one lock per key serialises their
	// sends, so they never race for a nonce.
	lockName := "settlement-key:" + crypto.PubkeyToAddress(key.PublicKey).Hex()
	sender, err := chain.NewSender(backend, key, new(big.Int).SetUint64(network.ChainID), chain.SenderOptions{
		Logger: log, Lock: func(ctx context.Context) (func(), error) { return book.Lock(ctx, lockName) },
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	if _, inMemory := book.(*ledger.Memory); inMemory {
		st.idem = ledger.NewMemoryIdempotency()
	} else {
		st.idem = ledger.NewIdempotency(pool, ledger.IdempotencyOptions{})
	}
	settler := x402.NewChainSettler(book, sender, network.Asset, cfg.ReceiptTimeout, log)
	mode := x402.SettleSync
	if cfg.X402Mode == "batch" {
		mode = x402.SettleBatch
	}
	rail, err := x402.NewRail(x402.Config{
		Network: network, PayTo: common.HexToAddress(st.payTo), MaxTimeout: cfg.X402MaxTimeout, Mode: mode, Logger: log, PublicURL: cfg.PublicURL,
	}, x402.NewRPCReader(backend, 3*time.Second), claims, book, settler)
	if err != nil {
		st.Close()
		return nil, err
	}
	worker := x402.NewWorker(x402.WorkerConfig{Network: network, Batcher: batcher, ReceiptTimeout: cfg.ReceiptTimeout, Logger: log}, book, sender, settler)
	worker.Start()
	st.closers = append(st.closers, worker.Close)
	st.network = network.CAIP2
	if network.V1Name != "" {
		st.network = network.V1Name // "base", as the seed's 402 says
	}
	st.rails = append(st.rails, rail)
	st.reader = book
	log.Info("x402 rail enabled", "network", network.CAIP2, "asset", network.Asset.Hex(), "payTo", st.payTo,
		"settlement", mode, "settler", sender.Address().Hex(), "batcher", batcher.Hex())
	return st, nil
}

// ledgerAll is what the rail, its worker and GET /payments/{id} need from a ledger; both
// *ledger.Ledger and *ledger.Memory provide it.
type ledgerAll interface {
	Create(ctx context.Context, p ledger.Payment) error
	Transition(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) (ledger.Payment, error)
	Get(ctx context.Context, id uuid.UUID) (ledger.Payment, error)
	ClaimQueued(ctx context.Context, limit int, batchID uuid.UUID, scope ledger.Scope) ([]ledger.Payment, error)
	RecordBatchTx(ctx context.Context, batchID uuid.UUID, rawTx []byte, txHash string) error
	TransitionBatch(ctx context.Context, batchID uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) ([]ledger.Payment, error)
	ListRecoverable(ctx context.Context, olderThan time.Duration, limit int) ([]ledger.Payment, error)
	GetBatch(ctx context.Context, batchID uuid.UUID) (ledger.Batch, error)
	RunExclusive(ctx context.Context, name string, fn func(context.Context) error) (bool, error)
	Lock(ctx context.Context, name string) (unlock func(), err error)
}

// claimer claims a credential's nonce once across every replica.
type claimer interface {
	Claim(ctx context.Context, key string, expiresAt time.Time) error
}

// openLedger returns the Postgres ledger with Redis claims when both are configured, and the
// in-process ledger otherwise (which configuration allows only for dev and custom chains).
func openLedger(ctx context.Context, cfg Config, pool *pgxpool.Pool, log *slog.Logger, st *paymentStack) (ledgerAll, claimer, error) {
	if pool == nil || cfg.RedisURL == "" {
		log.Warn("payments are kept in memory: one replica only, lost at exit; set DATABASE_URL and REDIS_URL to keep them")
		m := ledger.NewMemory()
		return m, m, nil
	}
	l, err := ledger.Open(pool, ledger.Options{SpoolDir: filepath.Join(cfg.DataDir, "payments-spool"), Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("payments ledger: %w", err)
	}
	st.closers = append(st.closers, func() { _ = l.Close() })
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	opts.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opts)
	st.closers = append(st.closers, func() { _ = rdb.Close() })
	claims, err := ledger.NewClaims(rdb, l, ledger.ClaimsOptions{})
	if err != nil {
		return nil, nil, err
	}
	return l, claims, nil
}

// announceDevChain says, loudly, that this is a test chain, and writes its funded accounts
// where a developer can find them.
func announceDevChain(cfg Config, dev *chain.DevChain, payTo string, log *slog.Logger) error {
	path := cfg.DevAccountsFile
	if path == "" {
		path = filepath.Join(cfg.DataDir, "devchain-accounts.json")
	}
	doc := struct {
		Warning  string             `json:"warning"`
		ChainID  uint64             `json:"chainId"`
		Network  string             `json:"network"`
		Token    string             `json:"token"`
		Batcher  string             `json:"batcher"`
		PayTo    string             `json:"payTo"`
		Accounts []chain.DevAccount `json:"accounts"`
	}{"TEST CHAIN: in-process, in-memory, reset at every start. These keys are public; no real money exists here.",
		dev.ChainID().Uint64(), x402.CAIP2(dev.ChainID().Uint64()), dev.Addresses().Token.Hex(), dev.Addresses().Batcher.Hex(), payTo, dev.Accounts()}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("DEVCHAIN_ACCOUNTS_FILE: %w", err)
	}
	var lines []string
	for i, a := range dev.Accounts() {
		lines = append(lines, fmt.Sprintf("  #%d %s  key %s  %s USDC", i, a.Address.Hex(), a.PrivateKeyHex, payments.FormatAtomic(a.USDC.Uint64(), payments.USDCDecimals)))
	}
	fmt.Fprintf(os.Stderr, "\n"+
		"  ===================================================================\n"+
		"  DEV CHAIN - a test chain inside this process. NO REAL MONEY.\n"+
		"  Set X402_NETWORK=base (with ETH_RPC_URL, SETTLEMENT_PRIVATE_KEY,\n"+
		"  PAYMENT_WALLET, DATABASE_URL, REDIS_URL) for real payments.\n"+
		"  ===================================================================\n"+
		"  chain %d, USDC %s, payTo %s\n%s\n  accounts written to %s\n\n",
		dev.ChainID(), dev.Addresses().Token.Hex(), payTo, strings.Join(lines, "\n"), path)
	log.Warn("dev chain: a test chain with no real money", "chain_id", dev.ChainID(), "accounts_file", path)
	return nil
}
