package main

import (
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/secureexec/secureexec/payments"
)

func envOf(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestEmptyLogFileMeansStderrOnly(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{"LOG_FILE": "", "PORT": ""}), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.LogFile != "" {
		t.Fatalf("LOG_FILE set to empty must mean no log file, got %q", c.LogFile)
	}
	if c.Port != 5091 {
		t.Fatalf("other settings set to empty keep their default: port %d", c.Port)
	}
	if c, _ := loadConfig(envOf(nil), ""); c.LogFile != "/tmp/secureexec.log" {
		t.Fatalf("unset LOG_FILE keeps the seed's default, got %q", c.LogFile)
	}
}

func TestConfigDefaultsAreTheSeeds(t *testing.T) {
	c, err := loadConfig(envOf(nil), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 5091 || c.Host != "127.0.0.1" || c.InternalAgentID != "achilles" || c.LogFile != "/tmp/secureexec.log" ||
		c.DatabaseURL != "" || c.EPGuardURL != "" || c.EPFailMode != "open" || c.EPTimeout != 3*time.Second || !c.PolicyAllowReal {
		t.Fatalf("defaults: %+v", c)
	}
}

// TestLongestCall: what waits for a call to end (a refund of its charge, a takeover of its
// payment identifier) waits at least as long as the slowest call the settings allow.
func TestLongestCall(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want time.Duration
	}{
		{nil, 30*time.Second + 3*time.Second + 30*time.Second + 2*time.Minute},
		{map[string]string{"TOOL_MAX_TIMEOUT_S": "600", "SETTLEMENT_RECEIPT_TIMEOUT_S": "600", "EP_TIMEOUT_MS": "60000"},
			600*time.Second + 60*time.Second + 600*time.Second + 2*time.Minute},
		// A remote facilitator's /settle may take X402_FACILITATOR_TIMEOUT_S, then the receipt.
		{map[string]string{"X402_NETWORK": "custom", "ETH_RPC_URL": "http://127.0.0.1:8545", "PAYMENT_WALLET": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
			"X402_TOKEN_ADDRESS": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "X402_FACILITATOR_URL": "http://127.0.0.1:4022", "X402_FACILITATOR_TIMEOUT_S": "600"},
			30*time.Second + 3*time.Second + 600*time.Second + 30*time.Second + 2*time.Minute},
	} {
		c, err := loadConfig(envOf(tc.env), "")
		if err != nil {
			t.Fatal(err)
		}
		if got := c.longestCall(); got != tc.want {
			t.Errorf("%v: longest call %v, want %v", tc.env, got, tc.want)
		}
		// A call that ran (and maybe was paid for) gets its answer: neither the server's write
		// deadline nor a graceful stop cuts it, even when its request was read slowly.
		hs := newHTTPServer(c, http.NotFoundHandler(), slog.New(slog.DiscardHandler))
		if hs.WriteTimeout < hs.ReadTimeout+tc.want {
			t.Errorf("%v: write timeout %v, shorter than a slow read (%v) and the longest call", tc.env, hs.WriteTimeout, hs.ReadTimeout)
		}
		if g := c.shutdownGrace(); g < hs.ReadTimeout+tc.want {
			t.Errorf("%v: shutdown grace %v, shorter than a slow read (%v) and the longest call", tc.env, g, hs.ReadTimeout)
		}
	}
}

func TestConfigFileAndEnvironment(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(f, []byte(`{"PORT": 6000, "EP_FAIL_MODE": "closed", "PAYMENT_WALLET": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(envOf(map[string]string{"PORT": "7000", "HTTP_GET_ALLOW_CIDRS": "10.1.2.3/8, 192.168.0.0/16"}), f)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 7000 {
		t.Errorf("the environment must win over the file: port %d", c.Port)
	}
	if c.EPFailMode != "closed" {
		t.Errorf("file value lost: %q", c.EPFailMode)
	}
	if c.PaymentWallet != "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" {
		t.Errorf("wallet must be stored checksummed: %s", c.PaymentWallet)
	}
	if len(c.HTTPGetAllow) != 2 || c.HTTPGetAllow[0].String() != "10.0.0.0/8" {
		t.Errorf("allow list: %v", c.HTTPGetAllow)
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		file string
		want string
	}{
		{env: map[string]string{"PORT": "99999"}, want: "PORT"},
		{env: map[string]string{"PORT": "abc"}, want: "PORT"},
		{env: map[string]string{"DATABASE_URL": "mysql://x"}, want: "DATABASE_URL"},
		{env: map[string]string{"EP_GUARD_URL": "ftp://x"}, want: "EP_GUARD_URL"},
		{env: map[string]string{"EP_FAIL_MODE": "maybe"}, want: "EP_FAIL_MODE"},
		{env: map[string]string{"PAYMENT_WALLET": "0x1234"}, want: "PAYMENT_WALLET"},
		{env: map[string]string{"PAYMENT_WALLET": "0x0000000000000000000000000000000000000000"}, want: "PAYMENT_WALLET: is the zero address"},
		{env: map[string]string{"PAYMENT_WALLET": "0x0000000000000000000000000000000000000000", "X402_NETWORK": "off"}, want: "PAYMENT_WALLET: is the zero address"},
		{env: map[string]string{"INTERNAL_API_KEY": "short"}, want: "INTERNAL_API_KEY"},
		{env: map[string]string{"ACHILLES_AGENT_ID": "achilles\n"}, want: "ACHILLES_AGENT_ID: want an agentId"},
		{env: map[string]string{"ACHILLES_AGENT_ID": "achil\u200bles"}, want: "ACHILLES_AGENT_ID: want an agentId"},
		{env: map[string]string{"ACHILLES_AGENT_ID": strings.Repeat("a", 257)}, want: "ACHILLES_AGENT_ID: want an agentId"},
		{env: map[string]string{"ACHILLES_AGENT_ID": "achilles\xff"}, want: "ACHILLES_AGENT_ID: want an agentId"},
		{env: map[string]string{"HTTP_GET_ALLOW_CIDRS": "10.0.0.1"}, want: "HTTP_GET_ALLOW_CIDRS"},
		{env: map[string]string{"LOG_LEVEL": "loud"}, want: "LOG_LEVEL"},
		{env: map[string]string{"TOOL_MAX_FREE_CONCURRENT": "256"}, want: "TOOL_MAX_FREE_CONCURRENT: want an integer from 0 to 255"},
		{env: map[string]string{"TOOL_MAX_CONCURRENT": "1", "TOOL_MAX_FREE_CONCURRENT": "1"}, want: "TOOL_MAX_FREE_CONCURRENT: want an integer from 0 to 0"},
		{env: map[string]string{"POLICY_ALLOW_REAL": "perhaps"}, want: "POLICY_ALLOW_REAL"},
		{env: map[string]string{"SETTLEMENT_MAX_FEE_PER_GAS_WEI": "1.5"}, want: "SETTLEMENT_MAX_FEE_PER_GAS_WEI: want a positive whole number of wei"},
		{env: map[string]string{"SETTLEMENT_MAX_FEE_PER_GAS_WEI": "0"}, want: "SETTLEMENT_MAX_FEE_PER_GAS_WEI"},
		{env: map[string]string{"SETTLEMENT_CONFIRMATIONS": "65"}, want: "SETTLEMENT_CONFIRMATIONS: want an integer from 0 to 64"},
		{env: map[string]string{"SETTLEMENT_CONFIRMATIONS": "2"}, want: "SETTLEMENT_CONFIRMATIONS: the dev chain mines only"},
		{env: map[string]string{"SETTLEMENT_MAX_FEE_PER_GAS_WEI": "-5"}, want: "SETTLEMENT_MAX_FEE_PER_GAS_WEI"},
		{env: mppEnv(map[string]string{"STRIPE_SECRET_KEY": "pk_test_publishable"}), want: "STRIPE_SECRET_KEY"},
		{env: mppEnv(map[string]string{"STRIPE_SECRET_KEY": "sk_test_has space"}), want: "STRIPE_SECRET_KEY"},
		{env: mppEnv(map[string]string{"MPP_CHALLENGE_SECRET": ""}), want: "MPP_CHALLENGE_SECRET: required"},
		{env: mppEnv(map[string]string{"MPP_CHALLENGE_SECRET": "too-short-0123456789"}), want: "MPP_CHALLENGE_SECRET: must be at least 32"},
		{env: mppEnv(map[string]string{"MPP_CHALLENGE_SECRET_PREVIOUS": "short"}), want: "MPP_CHALLENGE_SECRET_PREVIOUS"},
		{env: mppEnv(map[string]string{"MPP_CHALLENGE_SECRET_PREVIOUS": mppTestChallengeSecret, "MPP_SECRET_ROTATED_AT": "2026-01-01T00:00:00Z"}), want: "MPP_CHALLENGE_SECRET_PREVIOUS: is the current secret"},
		{env: mppEnv(map[string]string{"MPP_CHALLENGE_SECRET_PREVIOUS": "previous-secret-0123456789abcdef0123"}), want: "MPP_SECRET_ROTATED_AT: required"},
		{env: mppEnv(map[string]string{"MPP_SECRET_ROTATED_AT": "2026-01-01T00:00:00Z"}), want: "MPP_SECRET_ROTATED_AT: only"},
		{env: mppEnv(map[string]string{"MPP_CHALLENGE_SECRET_PREVIOUS": "previous-secret-0123456789abcdef0123", "MPP_SECRET_ROTATED_AT": "yesterday"}), want: "MPP_SECRET_ROTATED_AT: want"},
		{env: mppEnv(map[string]string{"MPP_CHALLENGE_SECRET_PREVIOUS": "previous-secret-0123456789abcdef0123", "MPP_SECRET_ROTATED_AT": "2999-01-01T00:00:00Z"}), want: "MPP_SECRET_ROTATED_AT: is in the future"},
		{env: mppEnv(map[string]string{"MPP_CHALLENGE_TTL_S": "5"}), want: "MPP_CHALLENGE_TTL_S"},
		{env: mppEnv(map[string]string{"MPP_STRIPE_NETWORK_ID": ""}), want: "MPP_STRIPE_NETWORK_ID: required"},
		{env: mppEnv(map[string]string{"MPP_STRIPE_NETWORK_ID": "profile with space"}), want: "MPP_STRIPE_NETWORK_ID"},
		{env: mppEnv(map[string]string{"MPP_CURRENCY": "dollars"}), want: "MPP_CURRENCY"},
		{env: mppEnv(map[string]string{"MPP_PAYMENT_METHOD_TYPES": "card,Link!"}), want: "MPP_PAYMENT_METHOD_TYPES"},
		{env: mppEnv(map[string]string{"MPP_PAYMENT_METHOD_TYPES": " , "}), want: "MPP_PAYMENT_METHOD_TYPES"},
		{env: mppEnv(map[string]string{"MPP_AMOUNT_DRY_RUN": "10"}), want: "MPP_AMOUNT_DRY_RUN: 10 is below"},
		{env: mppEnv(map[string]string{"MPP_AMOUNT_REAL": "100000000"}), want: "MPP_AMOUNT_REAL"},
		{env: mppEnv(map[string]string{"MPP_AMOUNT_BATCH": "1.5"}), want: "MPP_AMOUNT_BATCH"},
		{env: mppEnv(map[string]string{"MPP_AMOUNT_DRY_RUN": ""}), want: "MPP_AMOUNT_DRY_RUN: at par no price"},
		{env: mppEnv(map[string]string{"MPP_REALM": "bad\trealm"}), want: "MPP_REALM"},
		{env: mppEnv(map[string]string{"MPP_BIND_METADATA_KEY": "a key with spaces"}), want: "MPP_BIND_METADATA_KEY"},
		{env: mppEnv(map[string]string{"MPP_BIND_METADATA_VALUE": strings.Repeat("v", 501)}), want: "MPP_BIND_METADATA_VALUE"},
		{env: mppEnv(map[string]string{"STRIPE_API_BASE": "ftp://stripe.example"}), want: "STRIPE_API_BASE"},
		{env: mppEnv(map[string]string{"STRIPE_PREVIEW_VERSION": "2026-07-29 preview"}), want: "STRIPE_PREVIEW_VERSION"},
		{env: mppEnv(map[string]string{"STRIPE_SPT_PARAM": "spt=1"}), want: "STRIPE_SPT_PARAM"},
		{env: mppEnv(map[string]string{"STRIPE_TIMEOUT_S": "0"}), want: "STRIPE_TIMEOUT_S"},
		{env: mppEnv(map[string]string{"STRIPE_WEBHOOK_SECRET": "whsec_ok_0123456789abcdef,not-a-secret"}), want: "STRIPE_WEBHOOK_SECRET"},
		{env: map[string]string{"STRIPE_WEBHOOK_SECRET": "whsec_ok_0123456789abcdef"}, want: "STRIPE_WEBHOOK_SECRET: the Stripe webhook records MPP payments"},
		{env: mppEnv(map[string]string{"STRIPE_SECRET_KEY": "sk_live_0123456789abcdef", "X402_NETWORK": "off"}), want: "DATABASE_URL: required with a live"},
		{env: mppEnv(map[string]string{"STRIPE_SECRET_KEY": "rk_live_0123456789abcdef", "X402_NETWORK": "off", "DATABASE_URL": "postgres://x/y"}), want: "REDIS_URL: required with a live"},
		{env: mppEnv(map[string]string{"STRIPE_SECRET_KEY": "sk_live_0123456789abcdef", "DATABASE_URL": "postgres://x/y", "REDIS_URL": "redis://x:6379/0"}), want: "X402_NETWORK: dev"},
		{env: mppEnv(map[string]string{"STRIPE_SECRET_KEY": "sk_live_0123456789abcdef", "X402_NETWORK": "off", "DATABASE_URL": "postgres://x/y",
			"REDIS_URL": "redis://x:6379/0", "STRIPE_API_BASE": "http://stripe.internal"}), want: "STRIPE_API_BASE: a live Stripe key"},
		{file: `{"PROT": 1}`, want: `unknown setting "PROT"`},
		{file: `{not json`, want: "config file"},
		{file: `{"PORT": 6000} {"PORT": 7000}`, want: "config file"},
	} {
		var f string
		if tc.file != "" {
			f = filepath.Join(t.TempDir(), "c.json")
			_ = os.WriteFile(f, []byte(tc.file), 0o600)
		}
		_, err := loadConfig(envOf(tc.env), f)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %s: error %v, want it to name %s", tc.env, tc.file, err, tc.want)
		}
	}
}

const mppTestChallengeSecret = "config-test-challenge-secret-0123456789"

// mppEnv is a valid MPP configuration (test mode) with overrides; "" removes a setting.
func mppEnv(over map[string]string) map[string]string {
	env := map[string]string{
		"STRIPE_SECRET_KEY": "sk_test_0123456789abcdef", "MPP_CHALLENGE_SECRET": mppTestChallengeSecret,
		"MPP_STRIPE_NETWORK_ID": "profile_test_0123", "MPP_AMOUNT_DRY_RUN": "50",
	}
	for k, v := range over {
		env[k] = v
	}
	return env
}

func TestConfigMPP(t *testing.T) {
	c, err := loadConfig(envOf(nil), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.StripeSecretKey != "" || c.MPPCurrency != "usd" || c.MPPChallengeTTL != 5*time.Minute || c.StripeTimeout != 15*time.Second ||
		c.StripePreviewVersion != "2026-07-29.preview" || c.StripeSPTParam != "shared_payment_granted_token" || c.MPPBindKey != "secureexec_gateway" {
		t.Fatalf("the MPP rail is off by default, with the documented defaults: %+v", c)
	}

	c, err = loadConfig(envOf(mppEnv(map[string]string{"PUBLIC_URL": "https://gw.example.com:8443/base", "MPP_AMOUNT_REAL": "120",
		"MPP_PAYMENT_METHOD_TYPES": "card, link", "STRIPE_WEBHOOK_SECRET": "whsec_current_0123456789, whsec_rolled_0123456789",
		"MPP_CHALLENGE_SECRET_PREVIOUS": "previous-secret-0123456789abcdef0123", "MPP_SECRET_ROTATED_AT": "2026-03-23T12:00:00Z",
		"STRIPE_SPT_PARAM": "payment_method_data[shared_payment_granted_token]", "MPP_CURRENCY": "USD"})), "")
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case c.MPPRealm != "gw.example.com" || c.MPPBindValue != "gw.example.com":
		t.Errorf("realm %q, binding %q: want PUBLIC_URL's host name, without its port", c.MPPRealm, c.MPPBindValue)
	case c.MPPAmounts[payments.ModeDryRun] != 50 || c.MPPAmounts[payments.ModeReal] != 120 || len(c.MPPAmounts) != 2:
		t.Errorf("amounts %v", c.MPPAmounts)
	case strings.Join(c.MPPPaymentMethods, "|") != "card|link" || len(c.StripeWebhookSecrets) != 2 || c.MPPCurrency != "usd":
		t.Errorf("lists %v %d, currency %q", c.MPPPaymentMethods, len(c.StripeWebhookSecrets), c.MPPCurrency)
	case c.StripeLive || !c.MPPSecretRotatedAt.Equal(time.Date(2026, 3, 23, 12, 0, 0, 0, time.UTC)):
		t.Errorf("live %v, rotated at %v", c.StripeLive, c.MPPSecretRotatedAt)
	}

	// A live key with everything a live key needs.
	c, err = loadConfig(envOf(mppEnv(map[string]string{"STRIPE_SECRET_KEY": "sk_live_0123456789abcdef", "X402_NETWORK": "off",
		"DATABASE_URL": "postgres://x/y", "REDIS_URL": "redis://x:6379/0", "MPP_REALM": "api.example.com"})), "")
	if err != nil || !c.StripeLive || c.MPPRealm != "api.example.com" {
		t.Fatalf("live configuration: %v (live %v)", err, c.StripeLive)
	}
}

func TestConfigFacilitator(t *testing.T) {
	base := map[string]string{
		"X402_NETWORK": "custom", "ETH_RPC_URL": "http://127.0.0.1:8545", "PAYMENT_WALLET": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
		"X402_TOKEN_ADDRESS": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "X402_FACILITATOR_URL": "http://127.0.0.1:4022",
	}
	with := func(kv map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range kv {
			if v == "-" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	c, err := loadConfig(envOf(base), "")
	if err != nil {
		t.Fatalf("a facilitator instead of a settlement key: %v", err)
	}
	if c.FacilitatorURL != "http://127.0.0.1:4022" || c.FacilitatorWait != 60*time.Second {
		t.Fatalf("facilitator settings: %q %v", c.FacilitatorURL, c.FacilitatorWait)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"X402_SETTLEMENT_MODE": "batch", "X402_BATCHER_ADDRESS": "0x5FbDB2315678afecb367f032d93F642f64180aa3"}, "X402_SETTLEMENT_MODE"},
		{map[string]string{"X402_NETWORK": "dev"}, "X402_FACILITATOR_URL"},
		{map[string]string{"X402_FACILITATOR_URL": "ftp://127.0.0.1"}, "X402_FACILITATOR_URL"},
		{map[string]string{"X402_FACILITATOR_URL": "-"}, "SETTLEMENT_PRIVATE_KEY"},
		{map[string]string{"X402_FACILITATOR_API_KEY": "a\nb"}, "X402_FACILITATOR_API_KEY"},
		{map[string]string{"X402_FACILITATOR_TIMEOUT_S": "0"}, "X402_FACILITATOR_TIMEOUT_S"},
	} {
		if _, err := loadConfig(envOf(with(tc.env)), ""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want one naming %s", tc.env, err, tc.want)
		}
	}
}

// TestConfigSettlementFeeCap: the cap is read in wei, whole, and absent means no cap.
func TestConfigSettlementFeeCap(t *testing.T) {
	c, err := loadConfig(envOf(nil), "")
	if err != nil || c.MaxFeePerGas != nil {
		t.Fatalf("default cap %v (%v); want none", c.MaxFeePerGas, err)
	}
	c, err = loadConfig(envOf(map[string]string{"SETTLEMENT_MAX_FEE_PER_GAS_WEI": "250000000000"}), "")
	if err != nil || c.MaxFeePerGas == nil || c.MaxFeePerGas.String() != "250000000000" {
		t.Fatalf("cap %v (%v); want 250000000000 wei", c.MaxFeePerGas, err)
	}
}

// TestConfigSettlementConfirmations: read as a block count off the dev chain.
func TestConfigSettlementConfirmations(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{"X402_NETWORK": "off", "SETTLEMENT_CONFIRMATIONS": "3"}), "")
	if err != nil || c.Confirmations != 3 {
		t.Fatalf("confirmations %d (%v); want 3", c.Confirmations, err)
	}
	if c, err = loadConfig(envOf(nil), ""); err != nil || c.Confirmations != 0 {
		t.Fatalf("default confirmations %d (%v); want 0", c.Confirmations, err)
	}
}

// TestConfigFileValues: a JSON file holds numbers as JSON numbers, and the README's own
// defaults (MAX_BODY_BYTES 1048576) must read back as written, not as 1.048576e+06; a value
// that is no string, number or boolean (null, an array) is refused naming the setting, never
// read as the text "<nil>".
func TestConfigFileValues(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(f, []byte(`{"MAX_BODY_BYTES": 1048576, "TOOL_MAX_OUTPUT_BYTES": 2097152, "TOOL_MAX_CONCURRENT": 100000,
		"SETTLEMENT_MAX_FEE_PER_GAS_WEI": 100000000000000000000000, "POLICY_ALLOW_REAL": false, "LOG_FILE": ""}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(envOf(nil), f)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxBodyBytes != 1048576 || c.ToolMaxOutput != 2097152 || c.ToolMaxConcurrent != 100000 || c.PolicyAllowReal || c.LogFile != "" ||
		c.MaxFeePerGas == nil || c.MaxFeePerGas.String() != "100000000000000000000000" {
		t.Fatalf("file values: body %d, output %d, concurrent %d, allow real %v, log %q, fee cap %v",
			c.MaxBodyBytes, c.ToolMaxOutput, c.ToolMaxConcurrent, c.PolicyAllowReal, c.LogFile, c.MaxFeePerGas)
	}
	for _, file := range []string{`{"LOG_FILE": null}`, `{"POLICY_DENY_AGENTS": ["a", "b"]}`, `{"ACHILLES_AGENT_ID": {"id": "x"}}`} {
		if err := os.WriteFile(f, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadConfig(envOf(nil), f)
		if err == nil || !strings.Contains(err.Error(), "want a string, number or boolean") {
			t.Errorf("%s: error %v, want it refused naming the setting", file, err)
		}
	}
}

// TestDevChainStaysOnThisMachineUnlessChosen: the dev chain's keys are public, so a gateway
// told to serve beyond loopback with no network chosen refuses to start; naming the dev chain
// (or a real network) is a choice, and loopback needs none.
func TestDevChainStaysOnThisMachineUnlessChosen(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		file string
		ok   bool
	}{
		{map[string]string{"HOST": "0.0.0.0"}, "", false},
		{map[string]string{"HOST": ""}, "", true}, // empty keeps the default, 127.0.0.1
		{map[string]string{"HOST": "10.1.2.3"}, "", false},
		{map[string]string{"HOST": "0.0.0.0", "X402_NETWORK": "dev"}, "", true},
		{map[string]string{"HOST": "0.0.0.0"}, `{"X402_NETWORK": "dev"}`, true},
		{map[string]string{"HOST": "0.0.0.0", "X402_NETWORK": "off"}, "", true},
		{map[string]string{"HOST": "127.0.0.1"}, "", true},
		{map[string]string{"HOST": "::1"}, "", true},
		{map[string]string{"HOST": "[::1]"}, "", true},
		{map[string]string{"HOST": "localhost"}, "", true},
	} {
		file := ""
		if tc.file != "" {
			file = filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(file, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := loadConfig(envOf(tc.env), file)
		if tc.ok && err != nil {
			t.Errorf("%v %s: %v", tc.env, tc.file, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "X402_NETWORK: unset, so the dev chain")) {
			t.Errorf("%v %s: err = %v, want the dev chain refused beyond loopback", tc.env, tc.file, err)
		}
	}
}

// TestHostIsCheckedAtStart: a HOST that cannot be bound is refused naming the setting, before
// anything starts (it used to fail only at listen, after the dev chain's banner).
func TestHostIsCheckedAtStart(t *testing.T) {
	for host, ok := range map[string]bool{
		"127.0.0.1": true, "::1": true, "[::1]": true, "localhost": true, "gw.internal": true,
		"0.0.0.0 ": false, "127.0.0.1:80": false, "host name": false, "exa_mple": false,
	} {
		env := map[string]string{"HOST": host, "X402_NETWORK": "off"}
		_, err := loadConfig(envOf(env), "")
		if ok != (err == nil) || (!ok && !strings.Contains(err.Error(), "HOST:")) {
			t.Errorf("HOST=%q: err = %v, want ok=%v", host, err, ok)
		}
	}
}

// The start-up log names the EP and facilitator endpoints, never the credentials or keys a
// URL may carry.
func TestLoggableURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                                    "",
		"https://ep.example/ep/validate":      "https://ep.example/ep/validate",
		"https://user:s3cret@ep.example/x":    "https://ep.example/x (credentials or query not shown)",
		"https://ep.example/x?api_key=s3cret": "https://ep.example/x (credentials or query not shown)",
		"http://127.0.0.1:4022#s3cret":        "http://127.0.0.1:4022 (credentials or query not shown)",
		"http://[::1]:bad":                    "(not a URL)",
	} {
		if got := loggableURL(in); got != want {
			t.Errorf("loggableURL(%q) = %q, want %q", in, got, want)
		}
	}
}
