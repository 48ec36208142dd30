package x402

import (
	"strconv"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/secureexec/secureexec/payments"
)

func TestNetworkByName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		chainID uint64
		asset   string
		token   string
		ok      bool
	}{
		{"base", 8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", true},
		{"eip155:8453", 8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", true},
		{"base-sepolia", 84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", true},
		{"eip155:84532", 84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", true},
		{"Base", 0, "", "", false},
		{"eip155:1", 0, "", "", false},
		{"", 0, "", "", false},
	} {
		n, ok := NetworkByName(tc.name)
		if ok != tc.ok {
			t.Fatalf("%q: ok = %v", tc.name, ok)
		}
		if !ok {
			continue
		}
		if n.ChainID != tc.chainID || n.Asset.Hex() != tc.asset || n.TokenName != tc.token || n.TokenVersion != "2" || n.Validate() != nil {
			t.Fatalf("%q: %+v", tc.name, n)
		}
	}
}

func TestCustomNetwork(t *testing.T) {
	dev := CustomNetwork(31337, localToken, "USD Coin", "2")
	if dev.CAIP2 != "eip155:31337" || dev.V1Name != "" || dev.Validate() != nil {
		t.Fatalf("dev chain %+v", dev)
	}
	asSepolia := CustomNetwork(84532, localToken, "USD Coin", "2")
	if asSepolia.V1Name != "base-sepolia" {
		t.Fatalf("a chain run as 84532 is offered to v1 clients as base-sepolia, got %q", asSepolia.V1Name)
	}
	for _, bad := range []Network{
		CustomNetwork(0, localToken, "USD Coin", "2"),
		CustomNetwork(1, common.Address{}, "USD Coin", "2"),
		CustomNetwork(1, localToken, "", "2"),
		CustomNetwork(1, localToken, "USD Coin", ""),
		{ChainID: 1, CAIP2: "eip155:2", Asset: localToken, TokenName: "a", TokenVersion: "1"},
	} {
		if bad.Validate() == nil {
			t.Fatalf("%+v validated", bad)
		}
	}
}

func TestParseCAIP2(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"eip155:8453", 8453, true},
		{"eip155:1", 1, true},
		{"eip155:18446744073709551615", 18446744073709551615, true},
		{"eip155:18446744073709551616", 0, false},
		{"eip155:0", 0, false},
		{"eip155:08453", 0, false},
		{"eip155:", 0, false},
		{"eip155:-1", 0, false},
		{"eip155:84 53", 0, false},
		{"EIP155:8453", 0, false},
		{"base", 0, false},
		{"solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", 0, false},
	} {
		got, err := ParseCAIP2(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Fatalf("ParseCAIP2(%q) = %d, %v", tc.in, got, err)
		}
		if tc.ok && CAIP2(got) != tc.in {
			t.Fatalf("CAIP2(%d) = %q", got, CAIP2(got))
		}
	}
}

func TestV1Names(t *testing.T) {
	for name, id := range map[string]uint64{"base": 8453, "base-sepolia": 84532, "ethereum": 1, "sepolia": 11155111,
		"avalanche": 43114, "avalanche-fuji": 43113, "polygon": 137, "polygon-amoy": 80002,
		// the rest of @x402/evm 2.27.0's EVM_NETWORK_CHAIN_ID_MAP (dist/cjs/v1/index.js), the map
		// its v1 client and v1 facilitator name chains by (x402.md §2)
		"abstract": 2741, "abstract-testnet": 11124, "iotex": 4689, "sei": 1329, "sei-testnet": 1328,
		"peaq": 3338, "story": 1514, "educhain": 41923, "skale-base-sepolia": 324705682,
		"megaeth": 4326, "monad": 143, "stable": 988, "stable-testnet": 2201, "celo": 42220, "flare": 14} {
		got, ok := ChainIDForV1Name(name)
		if !ok || got != id || V1NameForChainID(id) != name {
			t.Fatalf("%s: %d %v, back %q", name, got, ok, V1NameForChainID(id))
		}
	}
	if _, ok := ChainIDForV1Name("eip155:8453"); ok {
		t.Fatal("a CAIP-2 identifier is not a v1 name")
	}
	if V1NameForChainID(31337) != "" {
		t.Fatal("31337 has no v1 name")
	}
}

func TestRequirements(t *testing.T) {
	for _, tc := range []struct {
		timeout time.Duration
		want    int64
	}{{0, 60}, {-time.Second, 60}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {time.Nanosecond, 1}, {5 * time.Minute, 300}} {
		if got := Requirements(Base, payments.Price{Amount: 1}, addr1, tc.timeout).MaxTimeoutSeconds; got != tc.want {
			t.Fatalf("timeout %v: %d s, want %d", tc.timeout, got, tc.want)
		}
	}
	r := Requirements(Base, payments.Price{Amount: 18446744073709551615}, common.HexToAddress("0x70997970c51812dc3a010c7d01b50e0d17dc79c8"), time.Minute)
	if r.Amount != "18446744073709551615" || r.PayTo != "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" || r.Asset != Base.Asset.Hex() {
		t.Fatalf("%+v", r)
	}
	if r.Extra.Name != "USD Coin" || r.Extra.Version != "2" || r.Network != "eip155:8453" || r.Scheme != "exact" {
		t.Fatalf("%+v", r)
	}
}

// TestDomainCacheBounded: the cache returns the separator it was asked for, and stops growing.
func TestDomainCacheBounded(t *testing.T) {
	for i := range 3 * maxDomains {
		name := "Token " + strconv.Itoa(i)
		if got, want := domainSeparators.get(name, "1", 1, localToken), DomainSeparator(name, "1", 1, localToken); got != want {
			t.Fatalf("%s: %x, want %x", name, got, want)
		}
	}
	n := 0
	domainSeparators.m.Range(func(_, _ any) bool { n++; return true })
	if n > maxDomains || int(domainSeparators.n.Load()) != n {
		t.Fatalf("%d entries (counted %d), bound %d", n, domainSeparators.n.Load(), maxDomains)
	}
}
