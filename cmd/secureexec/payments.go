package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/gateway"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
	"github.com/secureexec/secureexec/payments/mpp"
	"github.com/secureexec/secureexec/payments/x402"
)

// paymentStack is every enabled rail and what it runs in the background.
type paymentStack struct {
	rails      []payments.Rail
	reader     gateway.PaymentReader
	idem       gateway.IdempotencyStore
	webhook    http.Handler          // POST /webhooks/stripe; nil unless the MPP rail has STRIPE_WEBHOOK_SECRET
	flags      gateway.FlagChecker   // payers flagged by that webhook; nil without the MPP rail
	rdb        redis.UniversalClient // the claims' Redis; nil on the in-process ledger
	payTo      string
	network    string                 // shown in the 402's network field
	collectors []prometheus.Collector // the rails' background work, for /metrics
	closers    []func()
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
	ethereum.LogFilterer
	BlockNumber(ctx context.Context) (uint64, error)
}

// buildPayments opens the payments ledger when any rail is on, and wires the x402 rail for the
// configured network and the MPP rail when STRIPE_SECRET_KEY is set. pool is the audit
// database's pool, or nil on the embedded default.
func buildPayments(ctx context.Context, cfg Config, pool *pgxpool.Pool, log *slog.Logger) (*paymentStack, error) {
	st := &paymentStack{payTo: cfg.PaymentWallet}
	if cfg.X402Network == "off" && cfg.StripeSecretKey == "" {
		return st, nil
	}
	book, claims, err := openLedger(ctx, cfg, pool, log, st)
	if err != nil {
		st.Close()
		return nil, err
	}
	st.reader = book
	if _, inMemory := book.(*ledger.Memory); inMemory {
		st.idem = ledger.NewMemoryIdempotency()
	} else {
		// An entry in flight is taken over only once its call cannot be running any more.
		st.idem = ledger.NewIdempotency(pool, ledger.IdempotencyOptions{InFlightTTL: max(10*time.Minute, cfg.longestCall())})
	}
	if purges := purgesOf(st.idem, claims, book); len(purges) > 0 {
		pctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { runPurges(pctx, book, purges, purgeEvery, log) })
		st.closers = append(st.closers, func() { cancel(); wg.Wait() })
	}
	if cfg.X402Network != "off" {
		if err := buildX402(ctx, cfg, book, claims, st, log); err != nil {
			st.Close()
			return nil, err
		}
	}
	if cfg.StripeSecretKey != "" {
		if err := buildMPP(cfg, book, claims, st, log); err != nil {
			st.Close()
			return nil, err
		}
	}
	return st, nil
}

// buildX402 wires the x402 rail for the configured network on the shared ledger. What it
// starts is closed by st.Close, also when it fails.
func buildX402(ctx context.Context, cfg Config, book ledgerAll, claims claimer, st *paymentStack, log *slog.Logger) error {
	var (
		backend   chainBackend
		receipts  chain.ReceiptReader // nil: the backend's own (the simulated chain keeps its RPC client to itself)
		network   x402.Network
		batcher   common.Address
		settleKey = cfg.SettlementKey
	)
	switch cfg.X402Network {
	case "dev":
		dev, err := chain.StartSimulated(ctx, chain.DevChainOptions{AutoMine: true, Logger: log})
		if err != nil {
			return fmt.Errorf("dev chain: %w", err)
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
			return err
		}
	default:
		c, err := chain.Dial(ctx, cfg.EthRPCURL, chain.MaxRPCAnswerBytes)
		if err != nil {
			return fmt.Errorf("ETH_RPC_URL: %w", err)
		}
		st.closers = append(st.closers, c.Close)
		backend, receipts = c, chain.RPCReceipts{RPC: c.Client()}
		id, err := c.ChainID(ctx)
		if err != nil {
			return fmt.Errorf("ETH_RPC_URL: chain id: %w", err)
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
			return fmt.Errorf("ETH_RPC_URL serves chain %d, but X402_NETWORK=%s is chain %d", id, cfg.X402Network, network.ChainID)
		}
		if cfg.X402Batcher != "" {
			batcher = common.HexToAddress(cfg.X402Batcher)
		}
	}

	var (
		sender      *chain.Sender
		chainSettle *x402.ChainSettler
		settler     x402.Settler
		remote      *x402.FacilitatorClient
		remoteSet   *x402.FacilitatorSettler
	)
	if settleKey != "" {
		key, err := crypto.HexToECDSA(strings.TrimPrefix(settleKey, "0x"))
		if err != nil {
			return fmt.Errorf("SETTLEMENT_PRIVATE_KEY: %w", err)
		}
		// Every replica signs with the same settlement key: one lock per key serialises their
		// sends, so they never race for a nonce.
		lockName := "settlement-key:" + crypto.PubkeyToAddress(key.PublicKey).Hex()
		sender, err = chain.NewSender(backend, key, new(big.Int).SetUint64(network.ChainID), chain.SenderOptions{
			Logger: log, Receipts: receipts, MaxFeePerGas: cfg.MaxFeePerGas, Confirmations: cfg.Confirmations,
			Lock: func(ctx context.Context) (func(), error) { return book.Lock(ctx, lockName) },
		})
		if err != nil {
			return err
		}
		chainSettle = x402.NewChainSettler(book, sender, network.Asset, cfg.ReceiptTimeout, log)
		if batcher != (common.Address{}) {
			chainSettle.DeferToBatches() // the worker's batches settle what could not start now
		}
		settler = chainSettle
	}
	if cfg.FacilitatorURL != "" {
		var err error
		if remote, remoteSet, err = buildFacilitator(ctx, cfg, network, book, backend, log); err != nil {
			return err
		}
		settler = remoteSet
	}
	mode := x402.SettleSync
	if cfg.X402Mode == "batch" {
		mode = x402.SettleBatch
	}
	railCfg := x402.Config{
		Network: network, PayTo: common.HexToAddress(st.payTo), MaxTimeout: cfg.X402MaxTimeout, Mode: mode, Logger: log, PublicURL: cfg.PublicURL,
	}
	if remote != nil {
		railCfg.Facilitator = remote
	}
	railCfg.Backlog = book
	if st.rdb != nil {
		res, err := ledger.NewReservations(st.rdb, "", 0)
		if err != nil {
			return err
		}
		res.KeepSettled = x402.HoldAfterRelease
		railCfg.Reservations = res
	} else {
		res := ledger.NewMemoryReservations()
		res.KeepSettled = x402.HoldAfterRelease
		railCfg.Reservations = res
	}
	rail, err := x402.NewRail(railCfg,
		x402.NewLensReader(backend, x402.LensOptions{Timeout: 3 * time.Second}), claims, book, settler)
	if err != nil {
		return err
	}
	var workerSender x402.TxSender // nil without a settlement key: only the facilitator's work
	if sender != nil {
		workerSender = sender
	}
	// A payment still verified after the longest call the settings allow belongs to a call that
	// died: only then may the reconciler close it, never while its call still runs.
	worker := x402.NewWorker(x402.WorkerConfig{Network: network, Batcher: batcher, ReceiptTimeout: cfg.ReceiptTimeout, Facilitator: remoteSet,
		Reservations: railCfg.Reservations, Logger: log, StaleAfter: cfg.longestCall()},
		book, workerSender, chainSettle)
	worker.Start()
	st.closers = append(st.closers, worker.Close)
	st.collectors = append(st.collectors, worker.Collector())
	st.network = network.CAIP2
	if network.V1Name != "" {
		st.network = network.V1Name // "base", as the seed's 402 says
	}
	st.rails = append(st.rails, rail)
	settledBy := cfg.FacilitatorURL
	if sender != nil && remote == nil {
		settledBy = sender.Address().Hex()
	}
	log.Info("x402 rail enabled", "network", network.CAIP2, "asset", network.Asset.Hex(), "payTo", st.payTo,
		"settlement", mode, "settler", settledBy, "batcher", batcher.Hex())
	return nil
}

// buildFacilitator connects to X402_FACILITATOR_URL: it must settle the exact scheme on our
// network (GET /supported). A facilitator that cannot be reached at start is only a warning:
// each call asks it, and gets a 503 while it cannot answer.
func buildFacilitator(ctx context.Context, cfg Config, network x402.Network, book ledgerAll, backend chainBackend, log *slog.Logger) (*x402.FacilitatorClient, *x402.FacilitatorSettler, error) {
	opts := x402.FacilitatorOptions{SettleTimeout: cfg.FacilitatorWait, VerifyTimeout: min(10*time.Second, cfg.FacilitatorWait), Logger: log}
	if cfg.FacilitatorKey != "" {
		opts.AuthHeader = "Bearer " + cfg.FacilitatorKey
	}
	c, err := x402.NewFacilitatorClient(cfg.FacilitatorURL, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("X402_FACILITATOR_URL: %w", err)
	}
	sup, err := c.Supported(ctx)
	switch {
	case err != nil:
		log.Warn("x402: the facilitator did not answer GET /supported at start: whether it settles this network is not checked; paid calls get 503 while it cannot answer", "url", loggableURL(cfg.FacilitatorURL), "err", err)
	case !sup.Settles(2, network.CAIP2):
		return nil, nil, fmt.Errorf("X402_FACILITATOR_URL: %s does not settle x402 v2 exact payments on %s (GET /supported lists %d other kinds)",
			cfg.FacilitatorURL, network.CAIP2, len(sup.Kinds))
	}
	settler := x402.NewFacilitatorSettler(x402.FacilitatorSettlerConfig{Token: network.Asset, ReceiptWait: cfg.ReceiptTimeout, Confirmations: cfg.Confirmations, Logger: log}, book, c, backend, x402.NewRPCReader(backend, 3*time.Second))
	return c, settler, nil
}

// mppReconcileEvery is how often the MPP reconciler looks for charges whose call never
// completed.
const mppReconcileEvery = time.Minute

// buildMPP wires the MPP rail (the Payment scheme, stripe method) on the shared ledger: its
// Stripe client, the reconciler that refunds charges whose call never completed (a goroutine
// st.Close stops and waits for), and, with STRIPE_WEBHOOK_SECRET, the Stripe webhook.
func buildMPP(cfg Config, book ledgerAll, claims claimer, st *paymentStack, log *slog.Logger) error {
	client, err := mpp.NewStripe(mpp.StripeConfig{
		SecretKey: cfg.StripeSecretKey, BaseURL: cfg.StripeAPIBase, PreviewVersion: cfg.StripePreviewVersion,
		SPTParam: cfg.StripeSPTParam, Timeout: cfg.StripeTimeout, AttemptTimeout: min(8*time.Second, cfg.StripeTimeout), Logger: log,
	})
	if err != nil {
		return fmt.Errorf("STRIPE_SECRET_KEY: %w", err)
	}
	rail, err := mpp.NewRail(mpp.Config{
		Realm: cfg.MPPRealm, Secret: cfg.MPPSecret, PreviousSecret: cfg.MPPPreviousSecret, SecretRotatedAt: cfg.MPPSecretRotatedAt,
		ChallengeTTL: cfg.MPPChallengeTTL, Currency: cfg.MPPCurrency, Amounts: cfg.MPPAmounts, NetworkID: cfg.MPPNetworkID,
		PaymentMethodTypes: cfg.MPPPaymentMethods, BindKey: cfg.MPPBindKey, BindValue: cfg.MPPBindValue,
		Livemode: client.Livemode(), Logger: log,
	}, client, claims, book)
	if err != nil {
		return err
	}
	offered := map[payments.Mode]string{}
	for _, mode := range []payments.Mode{payments.ModeDryRun, payments.ModeReal, payments.ModeBatch} {
		amount, err := rail.AmountFor(payments.DefaultPrices.Price("", mode, "/exec/tool"))
		if err != nil {
			log.Warn("mpp: this mode is not offered on the MPP rail; the other rails still offer it", "mode", mode, "reason", err)
			continue
		}
		offered[mode] = payments.FormatAtomic(amount, 2) + " " + cfg.MPPCurrency
	}
	st.rails = append(st.rails, rail)
	st.flags = book

	// A charge is refunded only when its call has had every chance to finish.
	staleAfter := cfg.longestCall()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runMPPReconciler(ctx, rail, book, mppReconcileEvery, staleAfter, log)
	}()
	st.closers = append(st.closers, func() { cancel(); wg.Wait() })

	if len(cfg.StripeWebhookSecrets) > 0 {
		marks := gateway.NewStripeMarks(book, log)
		h, err := mpp.NewWebhookHandler(mpp.WebhookConfig{Secrets: cfg.StripeWebhookSecrets, Livemode: client.Livemode(), Logger: log}, st.idem, marks, marks)
		if err != nil {
			return fmt.Errorf("STRIPE_WEBHOOK_SECRET: %w", err)
		}
		st.webhook = h
	} else {
		log.Warn("mpp: STRIPE_WEBHOOK_SECRET is not set: refunds and disputes made in Stripe are not recorded and flag nobody")
	}
	log.Info("mpp rail enabled", "realm", cfg.MPPRealm, "network_id", cfg.MPPNetworkID, "livemode", client.Livemode(),
		"charges", offered, "stripe", orDefault(cfg.StripeAPIBase, "https://api.stripe.com"), "webhook", st.webhook != nil)
	return nil
}

// runMPPReconciler runs the MPP rail's Reconcile every interval until ctx is done, under a
// lease (Postgres advisory lock) so that one replica at a time refunds abandoned charges.
func runMPPReconciler(ctx context.Context, rail *mpp.Rail, book ledgerAll, every, staleAfter time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := book.RunExclusive(ctx, "mpp-reconcile", func(ctx context.Context) error { return rail.Reconcile(ctx, book, staleAfter) })
		if err != nil && ctx.Err() == nil {
			log.Warn("mpp: reconciliation", "err", err)
		}
	}
}

// A payment identifier's stored response is kept for idempotencyKeep after it was last
// written, then purged: long past any resend of its payment (an authorization is valid for an
// hour at most) and of a Stripe webhook event (retried for up to three days), which share the
// store. A nonce claim's row goes once its credential expired (plus the claims' grace): a
// replay is refused by its expiry from then on. A spooled operation's record of having been
// applied is kept for spoolLogKeep, longer than a replica whose spool still held it stays down
// (Ledger.PurgeSpoolLog; rejected ones are kept). One replica at a time purges, at start and
// every purgeEvery.
const (
	idempotencyKeep = 7 * 24 * time.Hour
	spoolLogKeep    = 30 * 24 * time.Hour
	purgeEvery      = time.Hour
)

// A purge deletes rows that nothing needs any more, and says how many.
type purge struct {
	what string
	run  func(ctx context.Context) (int64, error)
}

// purgesOf returns the purges the stores in use need: *ledger.Idempotency and
// *ledger.MemoryIdempotency keep every stored response, *ledger.Claims a row per claim,
// *ledger.Ledger a row per operation it replayed from its spool.
func purgesOf(idem any, claims any, book any) []purge {
	var out []purge
	if p, ok := idem.(interface {
		Purge(ctx context.Context, before time.Time) (int64, error)
	}); ok {
		out = append(out, purge{"stored payment identifiers", func(ctx context.Context) (int64, error) {
			return p.Purge(ctx, time.Now().Add(-idempotencyKeep))
		}})
	}
	if c, ok := claims.(interface {
		PurgeExpired(ctx context.Context, now time.Time) (int64, error)
	}); ok {
		out = append(out, purge{"expired nonce claims", func(ctx context.Context) (int64, error) {
			return c.PurgeExpired(ctx, time.Now())
		}})
	}
	if b, ok := book.(interface {
		PurgeSpoolLog(ctx context.Context, before time.Time) (int64, error)
	}); ok {
		out = append(out, purge{"replayed spool operations", func(ctx context.Context) (int64, error) {
			return b.PurgeSpoolLog(ctx, time.Now().Add(-spoolLogKeep))
		}})
	}
	return out
}

// runPurges runs every purge at once and then every interval until ctx is done, under a lease
// so that one replica at a time does it.
func runPurges(ctx context.Context, book ledgerAll, purges []purge, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		_, err := book.RunExclusive(ctx, "purge", func(ctx context.Context) error {
			var errs []error
			for _, p := range purges {
				n, err := p.run(ctx)
				if n > 0 {
					log.Info("purged "+p.what, "count", n)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("purging %s: %w", p.what, err))
				}
			}
			return errors.Join(errs...)
		})
		if err != nil && ctx.Err() == nil {
			log.Warn("purge", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ledgerAll is what the rail, its worker and GET /payments/{id} need from a ledger; both
// *ledger.Ledger and *ledger.Memory provide it.
type ledgerAll interface {
	Create(ctx context.Context, p ledger.Payment) error
	Transition(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) (ledger.Payment, error)
	Get(ctx context.Context, id uuid.UUID) (ledger.Payment, error)
	ClaimQueued(ctx context.Context, limit int, batchID uuid.UUID, scope ledger.Scope) ([]ledger.Payment, error)
	ClaimQueuedSettling(ctx context.Context, limit int, scope ledger.Scope) ([]ledger.Payment, error)
	ReplaceTx(ctx context.Context, id uuid.UUID, deadHash string, raw []byte, hash string) (ledger.Payment, error)
	MoveBatch(ctx context.Context, from, to uuid.UUID) ([]ledger.Payment, error)
	TransitionReplacing(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, replaced string, patch ledger.Patch) (ledger.Payment, error)
	OldestUnsettled(ctx context.Context, scope ledger.Scope) (time.Time, bool, error)
	RecordBatchTx(ctx context.Context, batchID uuid.UUID, rawTx []byte, txHash string) error
	TransitionBatch(ctx context.Context, batchID uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) ([]ledger.Payment, error)
	ListRecoverable(ctx context.Context, olderThan time.Duration, limit int) ([]ledger.Payment, error)
	ListStale(ctx context.Context, age ledger.Staleness, limit int) ([]ledger.Payment, error)
	RecordAttempt(ctx context.Context, id uuid.UUID, status ledger.Status) (ledger.Payment, error)
	RecordReference(ctx context.Context, id uuid.UUID, status ledger.Status, ref string, payload json.RawMessage) (ledger.Payment, error)
	GetBatch(ctx context.Context, batchID uuid.UUID) (ledger.Batch, error)
	RunExclusive(ctx context.Context, name string, fn func(context.Context) error) (bool, error)
	Lock(ctx context.Context, name string) (unlock func(), err error)
	// The Stripe webhook's records (refunds, disputes, flagged payers).
	GetByNonceKey(ctx context.Context, key string) (ledger.Payment, error)
	GetByReference(ctx context.Context, rail, ref string) (ledger.Payment, error)
	MarkPayment(ctx context.Context, m ledger.Mark) (bool, error)
	FlagPayer(ctx context.Context, f ledger.Flag) (bool, error)
	Flagged(ctx context.Context, payer string) (ledger.Flag, bool, error)
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
	st.rdb = rdb
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
