package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// Config is every setting, read once from the environment (and optionally a JSON file
// whose keys are the same variable names) and validated before anything starts.
type Config struct {
	Host    string // HOST: interface to bind; 127.0.0.1 unless set
	Port    int    // PORT: 5091
	LogFile string // LOG_FILE: JSON logs are also appended here; "" for stderr only
	Level   string // LOG_LEVEL: debug|info|warn|error

	DatabaseURL string // DATABASE_URL: Postgres; "" selects the embedded file database
	DataDir     string // SECUREEXEC_DATA_DIR: embedded database and audit spool

	EPGuardURL string        // EP_GUARD_URL: "" disables EP (local policy only)
	EPFailMode string        // EP_FAIL_MODE: open (seed default) | closed
	EPTimeout  time.Duration // EP_TIMEOUT_MS: 3000

	PaymentWallet   string // PAYMENT_WALLET: shown as payTo in the 402
	InternalAgentID string // ACHILLES_AGENT_ID: achilles
	InternalAPIKey  string // INTERNAL_API_KEY: "" disables the internal credential

	MaxBodyBytes      int64          // MAX_BODY_BYTES: 1 MiB
	ToolMaxTimeout    time.Duration  // TOOL_MAX_TIMEOUT_S: 30
	ToolMaxConcurrent int            // TOOL_MAX_CONCURRENT: 256
	ToolMaxOutput     int            // TOOL_MAX_OUTPUT_BYTES: 1 MiB
	HTTPGetAllow      []netip.Prefix // HTTP_GET_ALLOW_CIDRS: private ranges http_get may reach anyway

	PublicURL string // PUBLIC_URL: the base URL payers reach the gateway at (x402 resource.url)
	RedisURL  string // REDIS_URL: nonce claims shared by every replica

	X402Network     string        // X402_NETWORK: dev (in-process chain) | base | base-sepolia | custom | off
	EthRPCURL       string        // ETH_RPC_URL: the chain for base, base-sepolia and custom
	X402Token       string        // X402_TOKEN_ADDRESS: the EIP-3009 token of a custom network
	X402TokenName   string        // X402_TOKEN_NAME: its EIP-712 name
	X402TokenVer    string        // X402_TOKEN_VERSION: its EIP-712 version
	X402Batcher     string        // X402_BATCHER_ADDRESS: the SettlementBatcher, for batch settlement and recovery
	X402Mode        string        // X402_SETTLEMENT_MODE: sync | batch
	X402MaxTimeout  time.Duration // X402_MAX_TIMEOUT_S: the offer's maxTimeoutSeconds
	SettlementKey   string        // SETTLEMENT_PRIVATE_KEY: signs settlement transactions (pays gas)
	ReceiptTimeout  time.Duration // SETTLEMENT_RECEIPT_TIMEOUT_S: past it a settlement is pending
	DevAccountsFile string        // DEVCHAIN_ACCOUNTS_FILE: where the dev chain writes its accounts

	PolicyAllowReal  bool     // POLICY_ALLOW_REAL: real (non-dry-run) execution is allowed at all
	PolicyDenyAgents []string // POLICY_DENY_AGENTS: comma-separated agent ids refused outright
	PolicyRealAgents []string // POLICY_REAL_AGENTS: agents allowed real (non-dry-run) runs; empty = all
}

// settings lists every variable with its default, so that docs and the loader agree.
var settings = []struct{ name, def, help string }{
	{"HOST", "127.0.0.1", "interface to bind; set 0.0.0.0 to serve beyond this machine"},
	{"PORT", "5091", "server port"},
	{"LOG_FILE", "/tmp/secureexec.log", "JSON logs are appended here as well as to stderr; empty for stderr only"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"DATABASE_URL", "", "Postgres connection string; unset uses the embedded file database"},
	{"SECUREEXEC_DATA_DIR", "./secureexec-data", "embedded database and the audit spool"},
	{"EP_GUARD_URL", "", "EP validation endpoint (POST /ep/validate); unset means local policy only"},
	{"EP_FAIL_MODE", "open", "what to do when EP does not answer: open (proceed) or closed (deny)"},
	{"EP_TIMEOUT_MS", "3000", "hard deadline for one EP call"},
	{"PAYMENT_WALLET", "", "USDC payment destination on Base, shown as payTo in the 402"},
	{"ACHILLES_AGENT_ID", "achilles", "agent id recorded for internal callers that name none"},
	{"INTERNAL_API_KEY", "", "internal callers send it in X-Internal-Key and skip payment; unset disables"},
	{"MAX_BODY_BYTES", "1048576", "request bodies larger than this answer 413"},
	{"TOOL_MAX_TIMEOUT_S", "30", "upper bound for tool.timeout_s"},
	{"TOOL_MAX_CONCURRENT", "256", "tools running at once; more wait briefly, then answer 503"},
	{"TOOL_MAX_OUTPUT_BYTES", "1048576", "a tool output larger than this is replaced by an error"},
	{"HTTP_GET_ALLOW_CIDRS", "", "comma-separated private CIDRs that http_get may reach (default: none)"},
	{"PUBLIC_URL", "", "the gateway's base URL as callers reach it, for x402's resource.url (default http://HOST:PORT)"},
	{"REDIS_URL", "", "Redis for nonce claims (redis:// URL); required with DATABASE_URL for real networks"},
	{"X402_NETWORK", "dev", "dev (an in-process test chain, no real money), base, base-sepolia, custom, or off"},
	{"ETH_RPC_URL", "", "JSON-RPC of the chain for base, base-sepolia and custom"},
	{"X402_TOKEN_ADDRESS", "", "custom network: the EIP-3009 token (e.g. from secureexec devchain deploy)"},
	{"X402_TOKEN_NAME", "USD Coin", "custom network: the token's EIP-712 name"},
	{"X402_TOKEN_VERSION", "2", "custom network: the token's EIP-712 version"},
	{"X402_BATCHER_ADDRESS", "", "the SettlementBatcher contract: batch mode and recovery of deferred payments"},
	{"X402_SETTLEMENT_MODE", "sync", "sync (settle before responding) or batch (queue, settle many per transaction)"},
	{"X402_MAX_TIMEOUT_S", "60", "maxTimeoutSeconds offered to x402 payers"},
	{"SETTLEMENT_PRIVATE_KEY", "", "hex key that sends settlement transactions (it pays gas, never receives payments)"},
	{"SETTLEMENT_RECEIPT_TIMEOUT_S", "30", "how long to wait for a settlement receipt before answering pending"},
	{"DEVCHAIN_ACCOUNTS_FILE", "", "where the dev chain writes its funded accounts (default: in SECUREEXEC_DATA_DIR)"},
	{"POLICY_ALLOW_REAL", "true", "allow real (non-dry-run) execution; false makes every call a dry run or a 403"},
	{"POLICY_DENY_AGENTS", "", "comma-separated agent ids that are always denied"},
	{"POLICY_REAL_AGENTS", "", "comma-separated agent ids allowed real runs (empty: every paying agent)"},
}

// loadConfig reads the optional JSON file, then the environment (which wins), then defaults.
func loadConfig(getenv func(string) string, file string) (Config, error) {
	fromFile := map[string]string{}
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		var anyVals map[string]any
		if err := json.Unmarshal(raw, &anyVals); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", file, err)
		}
		known := map[string]bool{}
		for _, s := range settings {
			known[s.name] = true
		}
		for k, v := range anyVals {
			if !known[k] {
				return Config{}, fmt.Errorf("config file %s: unknown setting %q", file, k)
			}
			fromFile[k] = fmt.Sprint(v)
		}
	}
	get := func(name string) string {
		if v := getenv(name); v != "" {
			return v
		}
		if v, ok := fromFile[name]; ok {
			return v
		}
		for _, s := range settings {
			if s.name == name {
				return s.def
			}
		}
		panic("unknown setting " + name)
	}

	var c Config
	var errs []string
	bad := func(name, why string) { errs = append(errs, name+": "+why) }
	num := func(name string, min, max int64) int64 {
		v, err := strconv.ParseInt(strings.TrimSpace(get(name)), 10, 64)
		if err != nil || v < min || v > max {
			bad(name, fmt.Sprintf("want an integer from %d to %d, got %q", min, max, get(name)))
		}
		return v
	}
	c.Host = get("HOST")
	c.Port = int(num("PORT", 1, 65535))
	c.LogFile = get("LOG_FILE")
	c.Level = get("LOG_LEVEL")
	switch c.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "want debug, info, warn or error")
	}
	c.DatabaseURL = get("DATABASE_URL")
	if c.DatabaseURL != "" {
		if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			bad("DATABASE_URL", "want a postgres:// URL")
		}
	}
	c.DataDir = get("SECUREEXEC_DATA_DIR")
	c.EPGuardURL = get("EP_GUARD_URL")
	if c.EPGuardURL != "" {
		if u, err := url.Parse(c.EPGuardURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("EP_GUARD_URL", "want an http(s) URL")
		}
	}
	c.EPFailMode = get("EP_FAIL_MODE")
	if c.EPFailMode != "open" && c.EPFailMode != "closed" {
		bad("EP_FAIL_MODE", "want open or closed")
	}
	c.EPTimeout = time.Duration(num("EP_TIMEOUT_MS", 1, 60_000)) * time.Millisecond
	c.PaymentWallet = get("PAYMENT_WALLET")
	if c.PaymentWallet != "" {
		if !common.IsHexAddress(c.PaymentWallet) {
			bad("PAYMENT_WALLET", "want a 0x-prefixed 20-byte hex address")
		} else {
			c.PaymentWallet = common.HexToAddress(c.PaymentWallet).Hex() // stored checksummed
		}
	}
	c.InternalAgentID = get("ACHILLES_AGENT_ID")
	c.InternalAPIKey = get("INTERNAL_API_KEY")
	if c.InternalAPIKey != "" && len(c.InternalAPIKey) < 16 {
		bad("INTERNAL_API_KEY", "must be at least 16 characters")
	}
	c.MaxBodyBytes = num("MAX_BODY_BYTES", 1024, 64<<20)
	c.ToolMaxTimeout = time.Duration(num("TOOL_MAX_TIMEOUT_S", 1, 600)) * time.Second
	c.ToolMaxConcurrent = int(num("TOOL_MAX_CONCURRENT", 1, 100_000))
	c.ToolMaxOutput = int(num("TOOL_MAX_OUTPUT_BYTES", 1024, 64<<20))
	for _, s := range splitList(get("HTTP_GET_ALLOW_CIDRS")) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			bad("HTTP_GET_ALLOW_CIDRS", fmt.Sprintf("%q is not a CIDR", s))
			continue
		}
		c.HTTPGetAllow = append(c.HTTPGetAllow, p.Masked())
	}
	c.PublicURL = get("PUBLIC_URL")
	if c.PublicURL == "" {
		c.PublicURL = "http://" + net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	} else if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("PUBLIC_URL", "want an http(s) URL")
	}
	c.RedisURL = get("REDIS_URL")
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			bad("REDIS_URL", "want a redis:// or rediss:// URL")
		}
	}
	c.X402Network = strings.ToLower(get("X402_NETWORK"))
	c.EthRPCURL = get("ETH_RPC_URL")
	c.X402Token, c.X402TokenName, c.X402TokenVer = get("X402_TOKEN_ADDRESS"), get("X402_TOKEN_NAME"), get("X402_TOKEN_VERSION")
	c.X402Batcher = get("X402_BATCHER_ADDRESS")
	c.X402Mode = get("X402_SETTLEMENT_MODE")
	c.X402MaxTimeout = time.Duration(num("X402_MAX_TIMEOUT_S", 10, 3600)) * time.Second
	c.SettlementKey = get("SETTLEMENT_PRIVATE_KEY")
	c.ReceiptTimeout = time.Duration(num("SETTLEMENT_RECEIPT_TIMEOUT_S", 1, 600)) * time.Second
	c.DevAccountsFile = get("DEVCHAIN_ACCOUNTS_FILE")
	for _, a := range []struct{ name, v string }{{"X402_TOKEN_ADDRESS", c.X402Token}, {"X402_BATCHER_ADDRESS", c.X402Batcher}} {
		if a.v != "" && !common.IsHexAddress(a.v) {
			bad(a.name, "want a 0x-prefixed 20-byte hex address")
		}
	}
	if c.X402Mode != "sync" && c.X402Mode != "batch" {
		bad("X402_SETTLEMENT_MODE", "want sync or batch")
	}
	switch c.X402Network {
	case "off", "dev":
	case "base", "base-sepolia", "custom":
		// Real money, or a chain in another process: everything must be explicit.
		if c.EthRPCURL == "" {
			bad("ETH_RPC_URL", "required with X402_NETWORK="+c.X402Network)
		}
		if c.SettlementKey == "" {
			bad("SETTLEMENT_PRIVATE_KEY", "required with X402_NETWORK="+c.X402Network)
		}
		if c.PaymentWallet == "" {
			bad("PAYMENT_WALLET", "required with X402_NETWORK="+c.X402Network+" (where payments go)")
		}
		if c.X402Network == "custom" && c.X402Token == "" {
			bad("X402_TOKEN_ADDRESS", "required with X402_NETWORK=custom")
		}
		if c.X402Network != "custom" && (c.DatabaseURL == "" || c.RedisURL == "") {
			bad("X402_NETWORK", "a real network needs DATABASE_URL and REDIS_URL: payments must survive restarts and replicas")
		}
	default:
		bad("X402_NETWORK", "want dev, base, base-sepolia, custom or off")
	}
	if c.X402Mode == "batch" && c.X402Network != "dev" && c.X402Network != "off" && c.X402Batcher == "" {
		bad("X402_BATCHER_ADDRESS", "required with X402_SETTLEMENT_MODE=batch")
	}
	switch v := strings.ToLower(get("POLICY_ALLOW_REAL")); v {
	case "true", "1", "yes":
		c.PolicyAllowReal = true
	case "false", "0", "no":
	default:
		bad("POLICY_ALLOW_REAL", "want true or false")
	}
	c.PolicyDenyAgents = splitList(get("POLICY_DENY_AGENTS"))
	c.PolicyRealAgents = splitList(get("POLICY_REAL_AGENTS"))
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
