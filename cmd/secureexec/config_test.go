package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

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
		{env: map[string]string{"INTERNAL_API_KEY": "short"}, want: "INTERNAL_API_KEY"},
		{env: map[string]string{"HTTP_GET_ALLOW_CIDRS": "10.0.0.1"}, want: "HTTP_GET_ALLOW_CIDRS"},
		{env: map[string]string{"LOG_LEVEL": "loud"}, want: "LOG_LEVEL"},
		{env: map[string]string{"POLICY_ALLOW_REAL": "perhaps"}, want: "POLICY_ALLOW_REAL"},
		{file: `{"PROT": 1}`, want: `unknown setting "PROT"`},
		{file: `{not json`, want: "config file"},
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
