package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/secureexec/secureexec/gateway"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/mpp"
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
	ToolMaxFree       int            // TOOL_MAX_FREE_CONCURRENT: 0, half of ToolMaxConcurrent
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
	MaxFeePerGas    *big.Int      // SETTLEMENT_MAX_FEE_PER_GAS_WEI: the most a settlement transaction offers per gas; nil: no cap
	Confirmations   uint64        // SETTLEMENT_CONFIRMATIONS: blocks on top of a settlement's before it counts
	FacilitatorURL  string        // X402_FACILITATOR_URL: settle through this remote facilitator instead of our own key
	FacilitatorKey  string        // X402_FACILITATOR_API_KEY: sent as "Authorization: Bearer <key>"
	FacilitatorWait time.Duration // X402_FACILITATOR_TIMEOUT_S: bound on one /settle
	DevAccountsFile string        // DEVCHAIN_ACCOUNTS_FILE: where the dev chain writes its accounts

	PolicyAllowReal  bool     // POLICY_ALLOW_REAL: real (non-dry-run) execution is allowed at all
	PolicyDenyAgents []string // POLICY_DENY_AGENTS: comma-separated agent ids refused outright
	PolicyRealAgents []string // POLICY_REAL_AGENTS: agents allowed real (non-dry-run) runs; empty = all

	StripeSecretKey      string                   // STRIPE_SECRET_KEY: "" turns the MPP rail off
	StripeLive           bool                     // the key is a live one (sk_live_, rk_live_)
	StripeAPIBase        string                   // STRIPE_API_BASE: "" is api.stripe.com
	StripePreviewVersion string                   // STRIPE_PREVIEW_VERSION: Stripe-Version of the SPT create+confirm
	StripeSPTParam       string                   // STRIPE_SPT_PARAM: form name the Shared Payment Token travels under
	StripeTimeout        time.Duration            // STRIPE_TIMEOUT_S: one Stripe operation, retries included
	StripeWebhookSecrets []string                 // STRIPE_WEBHOOK_SECRET: whsec_… signing secrets, current first
	MPPRealm             string                   // MPP_REALM: the challenges' realm (default: PUBLIC_URL's host)
	MPPSecret            []byte                   // MPP_CHALLENGE_SECRET: signs challenge ids; never logged
	MPPPreviousSecret    []byte                   // MPP_CHALLENGE_SECRET_PREVIOUS: still verifies after a rotation
	MPPSecretRotatedAt   time.Time                // MPP_SECRET_ROTATED_AT: when the previous secret was replaced
	MPPChallengeTTL      time.Duration            // MPP_CHALLENGE_TTL_S: how long a challenge may be paid
	MPPNetworkID         string                   // MPP_STRIPE_NETWORK_ID: the Stripe Business Network profile
	MPPCurrency          string                   // MPP_CURRENCY: the Stripe currency
	MPPPaymentMethods    []string                 // MPP_PAYMENT_METHOD_TYPES: offered in the challenge
	MPPAmounts           map[payments.Mode]uint64 // MPP_AMOUNT_*: fixed charges in minor units; absent = par
	MPPBindKey           string                   // MPP_BIND_METADATA_KEY: metadata binding a PaymentIntent to this gateway
	MPPBindValue         string                   // MPP_BIND_METADATA_VALUE: its value (default: the realm)
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
	{"TOOL_MAX_FREE_CONCURRENT", "0", "how many of them may be free (unpaid) calls, fewer than TOOL_MAX_CONCURRENT; the rest is kept for paid ones (0: half)"},
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
	{"SETTLEMENT_CONFIRMATIONS", "0", "blocks mined on top of a settlement's before it is recorded settled (a reorg that drops it is waited out); not on the dev chain"},
	{"SETTLEMENT_MAX_FEE_PER_GAS_WEI", "", "the most a settlement transaction offers per gas, in wei, also when it outbids a busy chain (empty: no cap)"},
	{"X402_FACILITATOR_URL", "", "settle through this remote x402 facilitator (/verify, /settle, /supported) instead of SETTLEMENT_PRIVATE_KEY; sync mode, needs ETH_RPC_URL"},
	{"X402_FACILITATOR_API_KEY", "", "sent to the facilitator as Authorization: Bearer <key>, when it needs one"},
	{"X402_FACILITATOR_TIMEOUT_S", "60", "bound on one facilitator /settle; past it the payment is pending and reconciled"},
	{"DEVCHAIN_ACCOUNTS_FILE", "", "where the dev chain writes its funded accounts (default: in SECUREEXEC_DATA_DIR)"},
	{"POLICY_ALLOW_REAL", "true", "allow real (non-dry-run) execution; false makes every call a dry run or a 403"},
	{"POLICY_DENY_AGENTS", "", "comma-separated agent ids that are always denied"},
	{"POLICY_REAL_AGENTS", "", "comma-separated agent ids allowed real runs (empty: every paying agent)"},
	{"STRIPE_SECRET_KEY", "", "Stripe secret or restricted key (sk_/rk_, test or live): turns the MPP rail on; unset is off"},
	{"STRIPE_API_BASE", "", "base URL of the Stripe API (default https://api.stripe.com; a fake or stripe-mock in tests)"},
	{"STRIPE_PREVIEW_VERSION", mpp.DefaultPreviewVersion, "Stripe-Version sent with the Shared Payment Token charge (a preview feature)"},
	{"STRIPE_SPT_PARAM", mpp.DefaultSPTParam, "form field the Shared Payment Token is sent in"},
	{"STRIPE_TIMEOUT_S", "15", "deadline of one Stripe operation, retries included"},
	{"STRIPE_WEBHOOK_SECRET", "", "comma-separated whsec_ signing secrets of POST /webhooks/stripe (current first); unset leaves it unmounted"},
	{"MPP_REALM", "", "realm of the MPP challenges (default: PUBLIC_URL's host name)"},
	{"MPP_CHALLENGE_SECRET", "", "HMAC secret of the MPP challenge ids, at least 32 bytes; required with STRIPE_SECRET_KEY"},
	{"MPP_CHALLENGE_SECRET_PREVIOUS", "", "the secret before the last rotation: its challenges stay payable until they expire"},
	{"MPP_SECRET_ROTATED_AT", "", "RFC 3339 time MPP_CHALLENGE_SECRET replaced the previous one; required with it"},
	{"MPP_CHALLENGE_TTL_S", "300", "how long an MPP challenge may be paid"},
	{"MPP_STRIPE_NETWORK_ID", "", "Stripe Business Network profile id (profile_…) payers grant their tokens to; required with STRIPE_SECRET_KEY"},
	{"MPP_CURRENCY", "usd", "Stripe currency of the MPP charges"},
	{"MPP_PAYMENT_METHOD_TYPES", "card", "comma-separated payment method types offered in the challenge"},
	{"MPP_AMOUNT_DRY_RUN", "", "MPP charge of a dry run, in the currency's minor units (cents); unset converts the USDC price at par"},
	{"MPP_AMOUNT_REAL", "", "MPP charge of a real run, in minor units; unset converts the USDC price at par"},
	{"MPP_AMOUNT_BATCH", "", "MPP charge of a batch call, in minor units; unset converts the USDC price at par"},
	{"MPP_BIND_METADATA_KEY", mpp.DefaultBindKey, "PaymentIntent metadata key that binds a payment to this gateway"},
	{"MPP_BIND_METADATA_VALUE", "", "its value (default: the realm)"},
}

// loadConfig reads the optional JSON file, then the environment (which wins), then defaults.
// emptyMeansOff lists the settings for which a variable set to the empty string is a value
// ("no log file"), not "unset, use the default".
var emptyMeansOff = map[string]bool{"LOG_FILE": true}

// loadConfig reads settings through lookup (os.LookupEnv), which tells an unset variable
// from one set to "".
func loadConfig(lookup func(string) (string, bool), file string) (Config, error) {
	fromFile := map[string]string{}
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		var anyVals map[string]any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber() // 1048576 stays "1048576", not fmt's "1.048576e+06"
		if err := dec.Decode(&anyVals); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", file, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return Config{}, fmt.Errorf("config file %s: more than one JSON object", file)
		}
		known := map[string]bool{}
		for _, s := range settings {
			known[s.name] = true
		}
		for k, v := range anyVals {
			if !known[k] {
				return Config{}, fmt.Errorf("config file %s: unknown setting %q", file, k)
			}
			switch v := v.(type) {
			case string:
				fromFile[k] = v
			case json.Number:
				fromFile[k] = v.String()
			case bool:
				fromFile[k] = strconv.FormatBool(v)
			default: // null, an array or an object would otherwise be read as "<nil>" or "[a b]"
				return Config{}, fmt.Errorf("config file %s: %s: want a string, number or boolean", file, k)
			}
		}
	}
	get := func(name string) string {
		if v, set := lookup(name); v != "" || (set && emptyMeansOff[name]) {
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
	if !validHost(c.Host) {
		bad("HOST", fmt.Sprintf("want an IP address or a host name, got %q", c.Host))
	}
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
		} else if common.HexToAddress(c.PaymentWallet) == (common.Address{}) {
			bad("PAYMENT_WALLET", "is the zero address: no payment can be sent there")
		} else {
			c.PaymentWallet = common.HexToAddress(c.PaymentWallet).Hex() // stored checksummed
		}
	}
	c.InternalAgentID = get("ACHILLES_AGENT_ID")
	if !gateway.ValidAgentID(c.InternalAgentID) {
		bad("ACHILLES_AGENT_ID", "want an agentId: at most 256 bytes of UTF-8, no control, formatting or invisible character")
	}
	c.InternalAPIKey = get("INTERNAL_API_KEY")
	if c.InternalAPIKey != "" && len(c.InternalAPIKey) < 16 {
		bad("INTERNAL_API_KEY", "must be at least 16 characters")
	}
	c.MaxBodyBytes = num("MAX_BODY_BYTES", 1024, 64<<20)
	c.ToolMaxTimeout = time.Duration(num("TOOL_MAX_TIMEOUT_S", 1, 600)) * time.Second
	c.ToolMaxConcurrent = int(num("TOOL_MAX_CONCURRENT", 1, 100_000))
	// Below TOOL_MAX_CONCURRENT, or no slot would be kept for paid calls.
	c.ToolMaxFree = int(num("TOOL_MAX_FREE_CONCURRENT", 0, int64(max(c.ToolMaxConcurrent-1, 0))))
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
	c.Confirmations = uint64(num("SETTLEMENT_CONFIRMATIONS", 0, 64))
	if v := get("SETTLEMENT_MAX_FEE_PER_GAS_WEI"); v != "" {
		fee, ok := new(big.Int).SetString(v, 10)
		if !ok || fee.Sign() <= 0 || fee.BitLen() > 128 {
			bad("SETTLEMENT_MAX_FEE_PER_GAS_WEI", "want a positive whole number of wei")
		} else {
			c.MaxFeePerGas = fee
		}
	}
	c.FacilitatorURL, c.FacilitatorKey = get("X402_FACILITATOR_URL"), get("X402_FACILITATOR_API_KEY")
	c.FacilitatorWait = time.Duration(num("X402_FACILITATOR_TIMEOUT_S", 1, 600)) * time.Second
	c.DevAccountsFile = get("DEVCHAIN_ACCOUNTS_FILE")
	for _, a := range []struct{ name, v string }{{"X402_TOKEN_ADDRESS", c.X402Token}, {"X402_BATCHER_ADDRESS", c.X402Batcher}} {
		if a.v != "" && !common.IsHexAddress(a.v) {
			bad(a.name, "want a 0x-prefixed 20-byte hex address")
		}
	}
	if c.X402Mode != "sync" && c.X402Mode != "batch" {
		bad("X402_SETTLEMENT_MODE", "want sync or batch")
	}
	if c.X402Network == "dev" && !isLoopbackHost(c.Host) {
		// The dev chain's accounts and keys are printed and the same on every start: served
		// beyond this machine, anyone could pay with them. Only an explicit choice does that.
		if v, set := lookup("X402_NETWORK"); (!set || v == "") && fromFile["X402_NETWORK"] == "" {
			bad("X402_NETWORK", "unset, so the dev chain (test money whose keys are public) would take payments on HOST="+
				c.Host+", beyond this machine: set a real network, or X402_NETWORK=dev to mean it")
		}
	}
	if c.X402Network == "dev" && c.Confirmations > 0 {
		bad("SETTLEMENT_CONFIRMATIONS", "the dev chain mines only when there are transactions to mine; leave it 0 there")
	}
	switch c.X402Network {
	case "off", "dev":
	case "base", "base-sepolia", "custom":
		// Real money, or a chain in another process: everything must be explicit.
		if c.EthRPCURL == "" {
			bad("ETH_RPC_URL", "required with X402_NETWORK="+c.X402Network)
		}
		if c.SettlementKey == "" && c.FacilitatorURL == "" {
			bad("SETTLEMENT_PRIVATE_KEY", "required with X402_NETWORK="+c.X402Network+" unless X402_FACILITATOR_URL settles")
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
	if c.FacilitatorURL != "" {
		if u, err := url.Parse(c.FacilitatorURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("X402_FACILITATOR_URL", "want an http(s):// URL")
		}
		switch {
		case c.X402Network == "dev":
			bad("X402_FACILITATOR_URL", "the dev chain runs inside the gateway, where no facilitator can reach it: use X402_NETWORK=custom with ETH_RPC_URL (e.g. anvil)")
		case c.X402Network == "off":
			bad("X402_FACILITATOR_URL", "set, but X402_NETWORK=off")
		case c.X402Mode == "batch":
			bad("X402_SETTLEMENT_MODE", "batch settles many payments in one transaction of our SettlementBatcher with our own key; a facilitator settles one per call: use sync")
		}
	}
	if strings.ContainsAny(c.FacilitatorKey, "\r\n") {
		bad("X402_FACILITATOR_API_KEY", "contains a line break")
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
	loadMPP(&c, get, num, bad)
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

// Patterns of the MPP and Stripe settings.
var (
	stripeKeyPattern   = regexp.MustCompile(`^(sk|rk)_(test|live)_[A-Za-z0-9_]{4,250}$`)
	stripeTokenPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	sptParamPattern    = regexp.MustCompile(`^[a-z_]{1,64}(\[[a-z_]{1,64}\])*$`)
	lowerWordPattern   = regexp.MustCompile(`^[a-z_]{1,64}$`)
	metadataKeyPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)
)

// maxMPPAmount is Stripe's largest charge (eight digits of minor units).
const maxMPPAmount = 99_999_999

// loadMPP reads the settings of the MPP rail (the Payment scheme, stripe method) and of its
// Stripe client. With STRIPE_SECRET_KEY unset the rail is off and the others are not required.
func loadMPP(c *Config, get func(string) string, num func(string, int64, int64) int64, bad func(name, why string)) {
	c.StripeSecretKey = strings.TrimSpace(get("STRIPE_SECRET_KEY"))
	on := c.StripeSecretKey != ""
	if on && !stripeKeyPattern.MatchString(c.StripeSecretKey) {
		bad("STRIPE_SECRET_KEY", "want a Stripe secret or restricted key: sk_test_…, sk_live_…, rk_test_… or rk_live_…")
	}
	c.StripeLive = strings.HasPrefix(c.StripeSecretKey, "sk_live_") || strings.HasPrefix(c.StripeSecretKey, "rk_live_")
	c.StripeAPIBase = get("STRIPE_API_BASE")
	if c.StripeAPIBase != "" {
		u, err := url.Parse(c.StripeAPIBase)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "":
			bad("STRIPE_API_BASE", "want an http(s) base URL")
		case c.StripeLive && u.Scheme != "https":
			bad("STRIPE_API_BASE", "a live Stripe key is only ever sent over https")
		}
	}
	c.StripePreviewVersion = get("STRIPE_PREVIEW_VERSION")
	if !stripeTokenPattern.MatchString(c.StripePreviewVersion) {
		bad("STRIPE_PREVIEW_VERSION", "want a Stripe API version such as "+mpp.DefaultPreviewVersion)
	}
	c.StripeSPTParam = get("STRIPE_SPT_PARAM")
	if !sptParamPattern.MatchString(c.StripeSPTParam) {
		bad("STRIPE_SPT_PARAM", "want a Stripe form field name such as shared_payment_granted_token or payment_method_data[shared_payment_granted_token]")
	}
	c.StripeTimeout = time.Duration(num("STRIPE_TIMEOUT_S", 1, 120)) * time.Second
	c.StripeWebhookSecrets = splitList(get("STRIPE_WEBHOOK_SECRET"))
	for _, s := range c.StripeWebhookSecrets {
		if !strings.HasPrefix(s, "whsec_") || len(s) < 16 || strings.ContainsAny(s, " \t") {
			bad("STRIPE_WEBHOOK_SECRET", "want whsec_… signing secrets, comma-separated")
			break
		}
	}
	if len(c.StripeWebhookSecrets) > 0 && !on {
		bad("STRIPE_WEBHOOK_SECRET", "the Stripe webhook records MPP payments: it needs STRIPE_SECRET_KEY")
	}

	c.MPPRealm = get("MPP_REALM")
	if c.MPPRealm == "" {
		if u, err := url.Parse(c.PublicURL); err == nil {
			c.MPPRealm = u.Hostname()
		}
	}
	if on && !printableASCII(c.MPPRealm, 256) {
		bad("MPP_REALM", "want printable ASCII, at most 256 bytes (the gateway's host name)")
	}
	c.MPPSecret = []byte(get("MPP_CHALLENGE_SECRET"))
	switch {
	case on && len(c.MPPSecret) == 0:
		bad("MPP_CHALLENGE_SECRET", "required with STRIPE_SECRET_KEY: at least 32 random bytes, e.g. openssl rand -base64 32")
	case len(c.MPPSecret) > 0 && len(c.MPPSecret) < mpp.MinSecretBytes:
		bad("MPP_CHALLENGE_SECRET", fmt.Sprintf("must be at least %d bytes", mpp.MinSecretBytes))
	}
	c.MPPPreviousSecret = []byte(get("MPP_CHALLENGE_SECRET_PREVIOUS"))
	switch {
	case len(c.MPPPreviousSecret) > 0 && len(c.MPPPreviousSecret) < mpp.MinSecretBytes:
		bad("MPP_CHALLENGE_SECRET_PREVIOUS", fmt.Sprintf("must be at least %d bytes", mpp.MinSecretBytes))
	case len(c.MPPPreviousSecret) > 0 && string(c.MPPPreviousSecret) == string(c.MPPSecret):
		bad("MPP_CHALLENGE_SECRET_PREVIOUS", "is the current secret: remove it, or set the secret it replaced")
	}
	if v := get("MPP_SECRET_ROTATED_AT"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		switch {
		case err != nil:
			bad("MPP_SECRET_ROTATED_AT", "want an RFC 3339 time, e.g. 2026-03-23T12:00:00Z")
		case t.After(time.Now().Add(time.Minute)):
			bad("MPP_SECRET_ROTATED_AT", "is in the future")
		case len(c.MPPPreviousSecret) == 0:
			bad("MPP_SECRET_ROTATED_AT", "only means something with MPP_CHALLENGE_SECRET_PREVIOUS")
		}
		c.MPPSecretRotatedAt = t
	} else if len(c.MPPPreviousSecret) > 0 {
		// Without it, every restart would accept the old secret for another TTL.
		bad("MPP_SECRET_ROTATED_AT", "required with MPP_CHALLENGE_SECRET_PREVIOUS: when the secret was rotated")
	}
	c.MPPChallengeTTL = time.Duration(num("MPP_CHALLENGE_TTL_S", 30, 3600)) * time.Second
	c.MPPNetworkID = get("MPP_STRIPE_NETWORK_ID")
	switch {
	case on && c.MPPNetworkID == "":
		bad("MPP_STRIPE_NETWORK_ID", "required with STRIPE_SECRET_KEY: the Stripe Business Network profile id payers grant their tokens to")
	case c.MPPNetworkID != "" && (!printableASCII(c.MPPNetworkID, 256) || strings.ContainsAny(c.MPPNetworkID, " \"")):
		bad("MPP_STRIPE_NETWORK_ID", "want a Stripe profile id (profile_…)")
	}
	c.MPPCurrency = strings.ToLower(get("MPP_CURRENCY"))
	if len(c.MPPCurrency) != 3 || strings.Trim(c.MPPCurrency, "abcdefghijklmnopqrstuvwxyz") != "" {
		bad("MPP_CURRENCY", "want a three-letter ISO 4217 code, e.g. usd")
	}
	c.MPPPaymentMethods = splitList(get("MPP_PAYMENT_METHOD_TYPES"))
	if len(c.MPPPaymentMethods) == 0 {
		bad("MPP_PAYMENT_METHOD_TYPES", "want at least one payment method type, e.g. card")
	}
	for _, m := range c.MPPPaymentMethods {
		if !lowerWordPattern.MatchString(m) {
			bad("MPP_PAYMENT_METHOD_TYPES", fmt.Sprintf("%q is not a Stripe payment method type", m))
			break
		}
	}
	c.MPPAmounts = map[payments.Mode]uint64{}
	for _, a := range []struct {
		name string
		mode payments.Mode
	}{{"MPP_AMOUNT_DRY_RUN", payments.ModeDryRun}, {"MPP_AMOUNT_REAL", payments.ModeReal}, {"MPP_AMOUNT_BATCH", payments.ModeBatch}} {
		if get(a.name) == "" {
			continue
		}
		v := num(a.name, 1, maxMPPAmount)
		if v > 0 && v < mpp.DefaultMinAmount {
			bad(a.name, fmt.Sprintf("%d is below Stripe's minimum charge of %d minor units", v, mpp.DefaultMinAmount))
		}
		c.MPPAmounts[a.mode] = uint64(v)
	}
	if on && len(c.MPPAmounts) == 0 && !anyParChargeable(c.MPPCurrency) {
		bad("MPP_AMOUNT_DRY_RUN", fmt.Sprintf("at par no price (dry run %s, real %s, batch %s USDC) reaches Stripe's minimum charge of %d cents, "+
			"so the MPP rail would offer nothing: set MPP_AMOUNT_DRY_RUN, MPP_AMOUNT_REAL or MPP_AMOUNT_BATCH (minor units)",
			payments.FormatAtomic(payments.DefaultPrices.DryRun, payments.USDCDecimals), payments.FormatAtomic(payments.DefaultPrices.Real, payments.USDCDecimals),
			payments.FormatAtomic(payments.DefaultPrices.Batch, payments.USDCDecimals), mpp.DefaultMinAmount))
	}
	c.MPPBindKey = get("MPP_BIND_METADATA_KEY")
	if !metadataKeyPattern.MatchString(c.MPPBindKey) {
		bad("MPP_BIND_METADATA_KEY", "want 1-40 letters, digits, '_' or '-'")
	}
	c.MPPBindValue = get("MPP_BIND_METADATA_VALUE")
	if c.MPPBindValue == "" {
		c.MPPBindValue = c.MPPRealm
	}
	if on && !printableASCII(c.MPPBindValue, 500) {
		bad("MPP_BIND_METADATA_VALUE", "want printable ASCII, at most 500 bytes")
	}

	if c.StripeLive {
		// Real money: payments must survive restarts and be shared by every replica, and the
		// in-process test chain must not take free calls beside it.
		if c.DatabaseURL == "" {
			bad("DATABASE_URL", "required with a live STRIPE_SECRET_KEY: payments must survive restarts and replicas")
		}
		if c.RedisURL == "" {
			bad("REDIS_URL", "required with a live STRIPE_SECRET_KEY: challenges must be claimed once across replicas")
		}
		if c.X402Network == "dev" {
			bad("X402_NETWORK", "dev (a test chain, no real money) cannot run beside a live STRIPE_SECRET_KEY: set off or a real network")
		}
	}
}

// validHost reports whether HOST can be bound: an IP address (an IPv6 one with or without
// brackets) or a host name of letters, digits, dots and hyphens.
func validHost(host string) bool {
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return true
	}
	if host == "" || len(host) > 253 {
		return false
	}
	for _, r := range host {
		if !(r == '.' || r == '-' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return false
		}
	}
	return true
}

// isLoopbackHost reports whether HOST binds this machine's loopback interface only.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.IsLoopback()
}

// longestCall bounds how long one call can take, with room to spare: the longest tool run, EP,
// and the longest settlement (a Stripe charge, a receipt wait, or a remote facilitator's
// /settle and then the receipt). Work that waits for a call to finish (a refund of its charge,
// taking over its payment identifier) waits this long, and so does its answer's write deadline.
func (c Config) longestCall() time.Duration {
	settle := max(c.StripeTimeout, c.ReceiptTimeout)
	if c.FacilitatorURL != "" {
		settle = max(settle, c.FacilitatorWait+c.ReceiptTimeout)
	}
	return c.ToolMaxTimeout + c.EPTimeout + settle + 2*time.Minute
}

// shutdownGrace is how long a graceful stop waits for requests in flight: a request whose
// headers arrived just before the stop may still be read and then run the longest call.
// Whatever runs the process should allow it this long before killing it.
func (c Config) shutdownGrace() time.Duration {
	return requestReadTimeout + c.longestCall()
}

// anyParChargeable reports whether any of the default prices, converted at par, reaches
// Stripe's minimum: the rail's own rule (mpp.Rail.AmountFor) without a fixed amount.
func anyParChargeable(currency string) bool {
	if currency != mpp.DefaultCurrency {
		return false
	}
	const perCent = 10_000 // USDC atomic units in a cent
	for _, p := range []uint64{payments.DefaultPrices.DryRun, payments.DefaultPrices.Real, payments.DefaultPrices.Batch} {
		if p%perCent == 0 && p/perCent >= mpp.DefaultMinAmount {
			return true
		}
	}
	return false
}

func printableASCII(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
