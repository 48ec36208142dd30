package x402

// The form of a payment's fields: what a decoded payload, an authorization and a requirement
// must look like before any rule of verification is applied, and the strict parsers of their
// values (canonical decimals, uint256, fixed-length hex).

import (
	"encoding/hex"
	"fmt"
	"math/big"
	"strconv"

	"github.com/ethereum/go-ethereum/common"
)

// validate checks a decoded payment's form; see DecodePaymentPayload.
func (p *PaymentPayload) validate() error {
	var scheme string
	switch p.X402Version {
	case 2:
		if p.Accepted == nil {
			return refuse(ReasonInvalidPayload, "v2 payment without accepted")
		}
		scheme = p.Accepted.Scheme
		if p.Accepted.Network == "" {
			return refuse(ReasonInvalidPayload, "accepted.network is required")
		}
	case 1:
		scheme = p.Scheme
		if p.Network == "" {
			return refuse(ReasonInvalidPayload, "network is required")
		}
	default:
		return refuse(ReasonInvalidX402Version, fmt.Sprintf("x402Version %d", p.X402Version))
	}
	if scheme != SchemeExact {
		// The reference facilitator's rule 1 (x402.md §5), whatever the rest of the payload is.
		return refuse(ReasonScheme, fmt.Sprintf("scheme %q, only %q is supported", scheme, SchemeExact))
	}
	return checkExact(&p.Payload)
}

// checkExact is parseExact without building the values: the decoder checks form, the verifier
// parses once.
func checkExact(e *ExactEVMPayload) error {
	a := &e.Authorization
	switch {
	case !isHex(a.From, 20):
		return refuse(ReasonInvalidPayload, "authorization.from is not a 20-byte hex address")
	case !isHex(a.To, 20):
		return refuse(ReasonInvalidPayload, "authorization.to is not a 20-byte hex address")
	case !isUint256(a.Value):
		return refuse(ReasonInvalidPayload, "authorization.value is not a base-10 uint256")
	case !isUint256(a.ValidAfter):
		return refuse(ReasonInvalidPayload, "authorization.validAfter is not a base-10 uint256")
	case !isUint256(a.ValidBefore):
		return refuse(ReasonInvalidPayload, "authorization.validBefore is not a base-10 uint256")
	case !isHex(a.Nonce, 32):
		return refuse(ReasonInvalidPayload, "authorization.nonce is not 32 bytes of hex")
	}
	if n := (len(e.Signature) - 2) / 2; n < 65 || n > MaxSignatureBytes || !isHex(e.Signature, n) {
		return refuse(ReasonFailedToParseSignature, fmt.Sprintf("signature must be 0x-hex of 65 to %d bytes", MaxSignatureBytes))
	}
	return nil
}

// exactFields is an ExactEVMPayload parsed into values.
type exactFields struct {
	from, to                       common.Address
	value, validAfter, validBefore *big.Int
	nonce                          common.Hash
	signature                      []byte
}

// parseExact parses the scheme payload, refusing any field not in canonical form.
func parseExact(e *ExactEVMPayload) (exactFields, error) {
	f, err := parseAuthorization(&e.Authorization)
	if err != nil {
		return f, err
	}
	sig, ok := parseHex(e.Signature)
	if !ok || len(sig) < 65 || len(sig) > MaxSignatureBytes {
		return f, refuse(ReasonFailedToParseSignature, fmt.Sprintf("signature must be 0x-hex of 65 to %d bytes", MaxSignatureBytes))
	}
	f.signature = sig
	return f, nil
}

// parseAuthorization parses the signed message.
func parseAuthorization(a *EIP3009Authorization) (exactFields, error) {
	var f exactFields
	var ok bool
	if f.from, ok = ParseAddress(a.From); !ok {
		return f, refuse(ReasonInvalidPayload, "authorization.from is not a 20-byte hex address")
	}
	if f.to, ok = ParseAddress(a.To); !ok {
		return f, refuse(ReasonInvalidPayload, "authorization.to is not a 20-byte hex address")
	}
	if f.value, ok = parseUint256(a.Value); !ok {
		return f, refuse(ReasonInvalidPayload, "authorization.value is not a base-10 uint256")
	}
	if f.validAfter, ok = parseUint256(a.ValidAfter); !ok {
		return f, refuse(ReasonInvalidPayload, "authorization.validAfter is not a base-10 uint256")
	}
	if f.validBefore, ok = parseUint256(a.ValidBefore); !ok {
		return f, refuse(ReasonInvalidPayload, "authorization.validBefore is not a base-10 uint256")
	}
	if f.nonce, ok = parseBytes32(a.Nonce); !ok {
		return f, refuse(ReasonInvalidPayload, "authorization.nonce is not 32 bytes of hex")
	}
	return f, nil
}

// checkRequirementForm names what is wrong with an offer entry's common fields, "" if nothing.
func checkRequirementForm(scheme, network, amount, asset, payTo string, maxTimeout int64) string {
	switch {
	case scheme == "":
		return "scheme is required"
	case network == "":
		return "network is required"
	case !isUint256(amount):
		return fmt.Sprintf("amount %q is not a base-10 uint256", amount)
	case asset == "":
		return "asset is required"
	case payTo == "":
		return "payTo is required"
	case maxTimeout <= 0:
		return "maxTimeoutSeconds must be positive"
	}
	return ""
}

// isCanonicalDecimal reports a non-empty string of ASCII digits without a leading zero.
func isCanonicalDecimal(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// maxUint256 is 2^256-1 in decimal, 78 digits.
const maxUint256 = "115792089237316195423570985008687907853269984665640564039457584007913129639935"

// isUint256 reports a canonical base-10 integer below 2^256. Signs, hex, leading zeros and
// spaces are refused: the reference client never sends them.
func isUint256(s string) bool {
	// Canonical decimals of equal length compare as strings.
	return isCanonicalDecimal(s) && (len(s) < len(maxUint256) || len(s) == len(maxUint256) && s <= maxUint256)
}

// parseUint256 parses what isUint256 accepts.
func parseUint256(s string) (*big.Int, bool) {
	if !isUint256(s) {
		return nil, false
	}
	if len(s) <= 19 { // below 10^19 < 2^64: the common case, without big.Int's parser
		n, err := strconv.ParseUint(s, 10, 64)
		return new(big.Int).SetUint64(n), err == nil
	}
	n, ok := new(big.Int).SetString(s, 10)
	return n, ok
}

// isHex reports "0x" followed by exactly n bytes of hex, digits of any case.
func isHex(s string, n int) bool {
	if len(s) != 2+2*n || s[:2] != "0x" {
		return false
	}
	for i := 2; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// parseHex decodes "0x"-prefixed hex; the digits may be of any case, the prefix is lower case as
// the reference client (viem) writes and requires it.
func parseHex(s string) ([]byte, bool) {
	if len(s) < 2 || s[:2] != "0x" || len(s)%2 != 0 {
		return nil, false
	}
	b, err := hex.DecodeString(s[2:])
	return b, err == nil
}

// ParseAddress parses a 0x-prefixed 20-byte address of any case. Mixed-case checksums are not
// enforced: addresses compare by value.
func ParseAddress(s string) (common.Address, bool) {
	var a common.Address
	if len(s) != 42 || s[:2] != "0x" {
		return a, false
	}
	_, err := hex.Decode(a[:], []byte(s[2:]))
	return a, err == nil
}

// parseBytes32 parses a 0x-prefixed 32-byte hex string.
func parseBytes32(s string) (common.Hash, bool) {
	var h common.Hash
	if len(s) != 66 || s[:2] != "0x" {
		return h, false
	}
	_, err := hex.Decode(h[:], []byte(s[2:]))
	return h, err == nil
}

// sameAddress compares two address strings by value, falling back to exact text for strings
// that are not EVM addresses.
func sameAddress(a, b string) bool {
	x, okA := ParseAddress(a)
	y, okB := ParseAddress(b)
	if okA && okB {
		return x == y
	}
	return a == b
}
