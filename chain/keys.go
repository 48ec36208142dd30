package chain

import (
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
)

// devKeyPrefix seeds every dev key: key = keccak256(prefix + label). Public on purpose, so the
// same accounts come back on every run; anything sent to them on a real network is lost.
const devKeyPrefix = "secureexec-dev-"

// DevKey returns dev account i's private key, keccak256("secureexec-dev-<i>"). Test chains only.
func DevKey(i int) *ecdsa.PrivateKey { return devKey(strconv.Itoa(i)) }

// DevOperatorKey returns the dev chain's deployer, token minter and batcher operator (the
// settlement key), keccak256("secureexec-dev-operator"). Test chains only.
func DevOperatorKey() *ecdsa.PrivateKey { return devKey("operator") }

func devKey(label string) *ecdsa.PrivateKey {
	k, err := crypto.ToECDSA(crypto.Keccak256([]byte(devKeyPrefix + label)))
	if err != nil {
		// A keccak output is a valid secp256k1 scalar except with negligible probability, and
		// these labels are fixed: a failure is a programming error caught by the first test.
		panic(fmt.Sprintf("chain: dev key %q: %v", label, err))
	}
	return k
}

// DevAccount is one funded account of a dev chain, printable for humans and SDKs.
type DevAccount struct {
	Address       common.Address
	PrivateKeyHex string   // 0x-prefixed, 32 bytes
	USDC          *big.Int // atomic units (6 decimals) minted at start
	Wei           *big.Int // ETH balance at genesis
}

// MarshalJSON writes the address checksummed and amounts as decimal strings.
func (a DevAccount) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Address    string `json:"address"`
		PrivateKey string `json:"privateKey"`
		USDC       string `json:"usdc"`
		Wei        string `json:"wei"`
	}{a.Address.Hex(), a.PrivateKeyHex, bigString(a.USDC), bigString(a.Wei)})
}

func devAccount(key *ecdsa.PrivateKey, usdc, wei *big.Int) DevAccount {
	return DevAccount{
		Address:       crypto.PubkeyToAddress(key.PublicKey),
		PrivateKeyHex: hexutil.Encode(crypto.FromECDSA(key)),
		USDC:          new(big.Int).Set(usdc),
		Wei:           new(big.Int).Set(wei),
	}
}

func bigString(v *big.Int) string {
	if v == nil {
		return "0"
	}
	return v.String()
}
