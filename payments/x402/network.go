package x402

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ethereum/go-ethereum/common"
)

// Network is one EVM chain and the EIP-3009 token this rail is paid in on it.
type Network struct {
	ChainID      uint64
	CAIP2        string         // "eip155:<ChainID>", the v2 network identifier
	V1Name       string         // the v1 network name ("base"), "" when v1 clients cannot name this chain
	Asset        common.Address // the token, and the EIP-712 verifyingContract
	TokenName    string         // EIP-712 domain name: must equal the token's name()
	TokenVersion string         // EIP-712 domain version: must equal the token's version()
}

// Base is USDC on Base mainnet.
var Base = Network{
	ChainID:      8453,
	CAIP2:        "eip155:8453",
	V1Name:       "base",
	Asset:        common.HexToAddress("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
	TokenName:    "USD Coin",
	TokenVersion: "2",
}

// BaseSepolia is USDC on the Base Sepolia testnet. Its EIP-712 name is "USDC", not "USD Coin".
var BaseSepolia = Network{
	ChainID:      84532,
	CAIP2:        "eip155:84532",
	V1Name:       "base-sepolia",
	Asset:        common.HexToAddress("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
	TokenName:    "USDC",
	TokenVersion: "2",
}

// knownNetworks are the networks NetworkByName resolves.
var knownNetworks = []Network{Base, BaseSepolia}

// NetworkByName returns a built-in network by its v1 name ("base", "base-sepolia") or its
// CAIP-2 identifier ("eip155:8453", "eip155:84532").
func NetworkByName(name string) (Network, bool) {
	for _, n := range knownNetworks {
		if name == n.V1Name || name == n.CAIP2 {
			return n, true
		}
	}
	return Network{}, false
}

// CustomNetwork describes any other chain, such as a dev chain with a test token. Its v1 name is
// the reference client's name for chainID, if it has one (a dev chain run with chain id 84532
// is offered to v1 clients as "base-sepolia", x402.md §11).
func CustomNetwork(chainID uint64, asset common.Address, tokenName, tokenVersion string) Network {
	return Network{
		ChainID:      chainID,
		CAIP2:        CAIP2(chainID),
		V1Name:       V1NameForChainID(chainID),
		Asset:        asset,
		TokenName:    tokenName,
		TokenVersion: tokenVersion,
	}
}

// Validate reports a network that cannot be offered: no chain id, no token, or an EIP-712
// domain the reference client would refuse to sign for.
func (n Network) Validate() error {
	switch {
	case n.ChainID == 0:
		return fmt.Errorf("x402 network: chain id is 0")
	case n.CAIP2 != CAIP2(n.ChainID):
		return fmt.Errorf("x402 network: CAIP-2 %q does not name chain %d", n.CAIP2, n.ChainID)
	case n.Asset == (common.Address{}):
		return fmt.Errorf("x402 network %s: no token address", n.CAIP2)
	case n.TokenName == "" || n.TokenVersion == "":
		return fmt.Errorf("x402 network %s: token EIP-712 name and version are both required", n.CAIP2)
	}
	return nil
}

// CAIP2 returns the CAIP-2 identifier of an EVM chain.
func CAIP2(chainID uint64) string { return "eip155:" + strconv.FormatUint(chainID, 10) }

// ParseCAIP2 returns the chain id of an "eip155:<id>" network, as the v2 client's
// `^eip155:(\d+)$` does, refusing leading zeros, zero, and ids beyond uint64.
func ParseCAIP2(network string) (uint64, error) {
	digits, ok := strings.CutPrefix(network, "eip155:")
	if !ok || !isCanonicalDecimal(digits) || len(digits) > 20 {
		return 0, fmt.Errorf("network %q: want eip155:<chain id>", network)
	}
	id, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("network %q: chain id out of range", network)
	}
	return id, nil
}

// v1ChainIDs is the v1 client's map from network names to chain ids (@x402/evm 2.27.0
// EVM_NETWORK_CHAIN_ID_MAP); v1 clients reject any other name.
var v1ChainIDs = map[string]uint64{
	"ethereum":           1,
	"sepolia":            11155111,
	"abstract":           2741,
	"abstract-testnet":   11124,
	"base":               8453,
	"base-sepolia":       84532,
	"avalanche":          43114,
	"avalanche-fuji":     43113,
	"iotex":              4689,
	"sei":                1329,
	"sei-testnet":        1328,
	"polygon":            137,
	"polygon-amoy":       80002,
	"peaq":               3338,
	"story":              1514,
	"educhain":           41923,
	"skale-base-sepolia": 324705682,
	"megaeth":            4326,
	"monad":              143,
	"stable":             988,
	"stable-testnet":     2201,
	"celo":               42220,
	"flare":              14,
}

// ChainIDForV1Name returns the chain id a v1 network name stands for.
func ChainIDForV1Name(name string) (uint64, bool) {
	id, ok := v1ChainIDs[name]
	return id, ok
}

// V1NameForChainID returns the v1 network name of a chain id, or "" when v1 has none.
func V1NameForChainID(chainID uint64) string {
	for name, id := range v1ChainIDs {
		if id == chainID {
			return name
		}
	}
	return ""
}
