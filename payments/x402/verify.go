package x402

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/secureexec/secureexec/payments"
)

// ChainReader is what verification reads from the chain. A failed read is an outage
// (payments.ErrUnavailable), never a refusal; a call the node ran and that reverted is reported
// as an error wrapping ErrCallReverted (IsValidSignature1271 reports it as false instead).
type ChainReader interface {
	// CodeAt returns the code deployed at addr (empty for an EOA).
	CodeAt(ctx context.Context, addr common.Address) ([]byte, error)
	// IsValidSignature1271 asks an ERC-1271 wallet whether sig is its signature of digest.
	IsValidSignature1271(ctx context.Context, wallet common.Address, digest common.Hash, sig []byte) (bool, error)
	// BalanceOf returns owner's balance of token.
	BalanceOf(ctx context.Context, token, owner common.Address) (*big.Int, error)
	// AuthorizationState reports whether an EIP-3009 nonce of authorizer is used or canceled.
	AuthorizationState(ctx context.Context, token, authorizer common.Address, nonce common.Hash) (bool, error)
}

// PaymentStateReader is a ChainReader that can also read everything about one payment at
// once; Verify uses it when the reader has it (LensReader does, in one eth_call shared by
// concurrent verifications).
type PaymentStateReader interface {
	ChainReader
	// PaymentState reads the code sizes of payer and token, the payer's balance and the
	// nonce's authorizationState. An error is a failed read (an outage), never a refusal.
	PaymentState(ctx context.Context, token, payer common.Address, nonce common.Hash) (PaymentState, error)
}

// PaymentState is one read of the chain state a payment's verification depends on. A field
// the reader could not answer plainly (the call reverted, returned short or odd data) is left
// unknown, and Verify asks the ChainReader method, whose answer and errors are the rule.
type PaymentState struct {
	PayerHasCode bool
	AssetHasCode bool
	Balance      *big.Int // nil: unknown
	Used         bool     // meaningful when UsedKnown
	UsedKnown    bool
}

// Type hashes of EIP-712 and EIP-3009 (x402.md §4).
var (
	eip712DomainTypehash = common.HexToHash("0x8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f")
	transferTypehash     = common.HexToHash("0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267")
)

// eip6492Magic ends every ERC-6492 (counterfactual wallet) signature.
var eip6492Magic = common.FromHex("0x6492649264926492649264926492649264926492649264926492649264926492")

// validBeforeMargin is how long an authorization must still be valid when verified: the
// reference facilitators want validBefore >= now + 6 s, leaving room to mine the transfer.
const validBeforeMargin = 6

// Verified is a payment that passed verification, parsed into what settlement needs.
type Verified struct {
	X402Version    int
	Network        string         // as the payer named it (CAIP-2, or the v1 name): echo it in the SettlementResponse
	ChainID        uint64         // from the offer
	Asset          common.Address // the token (EIP-712 verifyingContract)
	Payer          common.Address // authorization.from
	To             common.Address // authorization.to, equal to the offer's payTo
	Value          *big.Int       // equal to the offer's amount
	ValidAfter     *big.Int
	ValidBefore    *big.Int
	Nonce          common.Hash
	Signature      []byte      // for an EOA: 65 bytes, v normalised to 27/28 as FiatToken requires
	Digest         common.Hash // the EIP-712 digest that was signed
	ContractWallet bool        // the signature was checked by the payer's ERC-1271 isValidSignature
	Balance        *big.Int    // the payer's token balance Verify read (nil from VerifyLocal)
	ReadAfter      time.Time   // Verify's now: the chain reads, Balance included, began after it
}

// NonceKey names the authorization for a nonce store: the token keys used nonces by
// (authorizer, nonce), so the key is scoped to chain and token as well. A claim must outlive
// ValidBefore; after it the token refuses the authorization by itself.
func (v *Verified) NonceKey() string {
	return "x402:" + strconv.FormatUint(v.ChainID, 10) + ":" + lowerHex(v.Asset[:]) + ":" + lowerHex(v.Payer[:]) + ":" + lowerHex(v.Nonce[:])
}

// ExpiresAt is when the authorization stops being valid (validBefore).
func (v *Verified) ExpiresAt() time.Time { return unixTime(v.ValidBefore) }

// farFuture stands for a time past anything a clock here will show: validBefore may be any
// uint256, and time.Time holds about 292 billion years.
var farFuture = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// unixTime is the time sec seconds after the Unix epoch, saturating at farFuture.
func unixTime(sec *big.Int) time.Time {
	if !sec.IsInt64() || sec.Int64() > farFuture.Unix() {
		return farFuture
	}
	return time.Unix(sec.Int64(), 0)
}

// VRS splits an EOA signature into the v (27/28), r, s arguments of transferWithAuthorization;
// false for a contract-wallet signature, which goes to the bytes overload instead.
func (v *Verified) VRS() (uint8, [32]byte, [32]byte, bool) {
	var r, s [32]byte
	if v.ContractWallet || len(v.Signature) != 65 {
		return 0, r, s, false
	}
	copy(r[:], v.Signature[:32])
	copy(s[:], v.Signature[32:64])
	return v.Signature[64], r, s, true
}

// VerifyLocal checks a payment against the offer entry it claims to pay, without touching the
// chain, in the order of the reference facilitator (x402.md §5): scheme, EIP-712 domain present,
// network, `accepted` equal to the offer (v2), signature by `from` (as an EOA), recipient,
// validity window (validBefore >= now+6, validAfter <= now), exact value. It is pure: a payer
// that is a contract wallet fails here with invalid_exact_evm_signature, and Verify, which can
// ask the wallet, is the check that decides.
func VerifyLocal(p *PaymentPayload, req PaymentRequirements, now time.Time) (*Verified, error) {
	return verify(p, req, now, checkECDSA)
}

// Verify is VerifyLocal with the chain: the signature is checked with ERC-1271 when `from` has
// code, and then the token must be deployed (asset_not_deployed_contract), the nonce must be
// unused on the token (invalid_exact_evm_nonce_already_used) and the payer's balance must cover
// the value (invalid_exact_evm_insufficient_balance). A failed read returns an error wrapping
// payments.ErrUnavailable. Where the reference facilitator simulates transferWithAuthorization,
// Verify reads balance and nonce state directly, as x402-rs does: the same refusals with three
// eth_calls and no Multicall3, or with one PaymentState read when r is a PaymentStateReader
// (the reads happen at the same point, before the signature is checked, and the refusals come
// in the same order). Verify claims nothing: the caller's nonce store does.
func Verify(ctx context.Context, r ChainReader, p *PaymentPayload, req PaymentRequirements, now time.Time) (*Verified, error) {
	sr, _ := r.(PaymentStateReader)
	var st *PaymentState
	v, err := verify(p, req, now, func(v *Verified) error {
		var payerHasCode bool
		if sr != nil {
			s, err := sr.PaymentState(ctx, v.Asset, v.Payer, v.Nonce)
			if err != nil {
				return unavailable("read the payment's chain state", err)
			}
			st, payerHasCode = &s, s.PayerHasCode
		} else {
			code, err := r.CodeAt(ctx, v.Payer)
			if err != nil {
				return unavailable("read the payer's code", err)
			}
			payerHasCode = len(code) > 0
		}
		if !payerHasCode {
			return checkECDSA(v)
		}
		ok, err := r.IsValidSignature1271(ctx, v.Payer, v.Digest, v.Signature)
		if err != nil {
			return unavailable("ask the payer's wallet (ERC-1271)", err)
		}
		if !ok {
			return refuse(ReasonSignature, "the payer's wallet rejects the signature (ERC-1271)")
		}
		v.ContractWallet = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st == nil {
		code, err := r.CodeAt(ctx, v.Asset)
		if err != nil {
			return nil, unavailable("read the token's code", err)
		}
		st = &PaymentState{AssetHasCode: len(code) > 0}
	}
	if !st.AssetHasCode {
		return nil, refuse(ReasonAssetNotDeployed, "no contract at asset "+v.Asset.Hex())
	}
	// The nonce before the balance, as the reference's diagnosis (x402.md §5 step 10).
	used := st.Used
	if !st.UsedKnown {
		used, err = r.AuthorizationState(ctx, v.Asset, v.Payer, v.Nonce)
		if errors.Is(err, ErrCallReverted) {
			return nil, refuse(ReasonEIP3009NotSupported, "authorizationState reverted: the token does not implement EIP-3009")
		}
		if err != nil {
			return nil, unavailable("read the nonce's state", err)
		}
	}
	if used {
		return nil, refuse(ReasonNonceAlreadyUsed, "the nonce is used or canceled on the token")
	}
	bal := st.Balance
	if bal == nil {
		if bal, err = r.BalanceOf(ctx, v.Asset, v.Payer); err != nil {
			return nil, unavailable("read the payer's balance", err)
		}
	}
	if bal.Cmp(v.Value) < 0 {
		return nil, refuse(ReasonInsufficientBalance, fmt.Sprintf("balance %s is below %s", bal, v.Value))
	}
	v.Balance, v.ReadAfter = bal, now
	return v, nil
}

// SigningDigest is the EIP-712 digest a payer signs to pay the offer entry req with auth: the
// domain is (extra.name, extra.version, chain id of req.Network, req.Asset).
func SigningDigest(req PaymentRequirements, auth EIP3009Authorization) (common.Hash, error) {
	chainID, err := ParseCAIP2(req.Network)
	if err != nil {
		return common.Hash{}, refuse(ReasonInvalidNetwork, err.Error())
	}
	asset, ok := ParseAddress(req.Asset)
	if !ok {
		return common.Hash{}, refuse(ReasonInvalidPaymentRequirements, "asset is not an address")
	}
	if req.Extra.Name == "" || req.Extra.Version == "" {
		return common.Hash{}, refuse(ReasonMissingEIP712Domain, "extra.name and extra.version are required")
	}
	f, err := parseAuthorization(&auth)
	if err != nil {
		return common.Hash{}, err
	}
	return authorizationDigest(DomainSeparator(req.Extra.Name, req.Extra.Version, chainID, asset), &f), nil
}

// DomainSeparator is the EIP-712 domain separator of an EIP-3009 token.
func DomainSeparator(name, version string, chainID uint64, token common.Address) common.Hash {
	var buf [5 * 32]byte
	copy(buf[0:32], eip712DomainTypehash[:])
	nameHash := crypto.Keccak256Hash([]byte(name))
	copy(buf[32:64], nameHash[:])
	versionHash := crypto.Keccak256Hash([]byte(version))
	copy(buf[64:96], versionHash[:])
	binary.BigEndian.PutUint64(buf[120:128], chainID)
	copy(buf[140:160], token[:])
	return crypto.Keccak256Hash(buf[:])
}

// domainKey identifies one token's EIP-712 domain.
type domainKey struct {
	name, version string
	chainID       uint64
	token         common.Address
}

// domainCache remembers the domain separators of the offers being verified: three of the five
// hashes of a verification. Offers come from configuration, so there are few; the cache holds
// at most maxDomains all the same.
type domainCache struct {
	m sync.Map // domainKey -> common.Hash
	n atomic.Int32
}

const maxDomains = 64

var domainSeparators domainCache

func (c *domainCache) get(name, version string, chainID uint64, token common.Address) common.Hash {
	k := domainKey{name, version, chainID, token}
	if h, ok := c.m.Load(k); ok {
		return h.(common.Hash)
	}
	h := DomainSeparator(name, version, chainID, token)
	if c.n.Add(1) > maxDomains {
		c.n.Add(-1)
		return h
	}
	if _, loaded := c.m.LoadOrStore(k, h); loaded {
		c.n.Add(-1)
	}
	return h
}

// authorizationDigest hashes TransferWithAuthorization(from,to,value,validAfter,validBefore,
// nonce) under a domain, packing the ABI words by hand: it is on every request's path.
func authorizationDigest(domain common.Hash, f *exactFields) common.Hash {
	var buf [7 * 32]byte
	copy(buf[0:32], transferTypehash[:])
	copy(buf[44:64], f.from[:])
	copy(buf[76:96], f.to[:])
	f.value.FillBytes(buf[96:128]) // parseUint256 bounds all three to 256 bits
	f.validAfter.FillBytes(buf[128:160])
	f.validBefore.FillBytes(buf[160:192])
	copy(buf[192:224], f.nonce[:])
	structHash := crypto.Keccak256Hash(buf[:])
	var msg [2 + 32 + 32]byte
	msg[0], msg[1] = 0x19, 0x01
	copy(msg[2:34], domain[:])
	copy(msg[34:66], structHash[:])
	return crypto.Keccak256Hash(msg[:])
}

// verify runs the local rules in the reference order, with the signature rule supplied.
func verify(p *PaymentPayload, req PaymentRequirements, now time.Time, checkSig func(*Verified) error) (*Verified, error) {
	if p == nil {
		return nil, refuse(ReasonInvalidPayload, "no payment")
	}
	var scheme, network string
	switch p.X402Version {
	case 2:
		if p.Accepted == nil {
			return nil, refuse(ReasonInvalidPayload, "v2 payment without accepted")
		}
		scheme, network = p.Accepted.Scheme, p.Accepted.Network
	case 1:
		scheme, network = p.Scheme, p.Network
	default:
		return nil, refuse(ReasonInvalidX402Version, fmt.Sprintf("x402Version %d", p.X402Version))
	}

	// 1. scheme
	if scheme != SchemeExact || req.Scheme != SchemeExact {
		return nil, refuse(ReasonScheme, fmt.Sprintf("scheme %q, offer %q: want %q", scheme, req.Scheme, SchemeExact))
	}
	// 2. the offer names the EIP-712 domain
	if req.Extra.Name == "" || req.Extra.Version == "" {
		return nil, refuse(ReasonMissingEIP712Domain, "the offer lacks extra.name or extra.version")
	}
	// 3. network: v2 compares identifiers as the reference does, v1 by the chain its name stands for
	chainID, err := ParseCAIP2(req.Network)
	if err != nil {
		return nil, refuse(ReasonInvalidNetwork, "offer: "+err.Error())
	}
	if p.X402Version == 2 && network != req.Network {
		return nil, refuse(ReasonNetworkMismatch, fmt.Sprintf("payment on %q, offer on %q", network, req.Network))
	}
	if p.X402Version == 1 {
		if id, ok := ChainIDForV1Name(network); !ok || id != chainID {
			return nil, refuse(ReasonNetworkMismatch, fmt.Sprintf("payment on %q, offer on %q", network, req.Network))
		}
	}
	// 3b. the echoed offer is the offer (reference server's paymentRequirementsMatchAccepted)
	if p.X402Version == 2 && !matchesOffer(p.Accepted, &req) {
		return nil, refuse(ReasonNoMatchingRequirements, MessageNoMatchingRequirements)
	}

	f, err := parseExact(&p.Payload)
	if err != nil {
		return nil, err
	}
	asset, ok := ParseAddress(req.Asset)
	if !ok {
		return nil, refuse(ReasonInvalidPaymentRequirements, "offer: asset is not an address")
	}
	payTo, ok := ParseAddress(req.PayTo)
	if !ok {
		return nil, refuse(ReasonInvalidPaymentRequirements, "offer: payTo is not an address")
	}
	amount, ok := parseUint256(req.Amount)
	if !ok {
		return nil, refuse(ReasonInvalidPaymentRequirements, "offer: amount is not a base-10 uint256")
	}
	// 4. counterfactual wallets need an allowed factory, and we allow none (fail closed)
	if len(f.signature) >= len(eip6492Magic) && bytes.HasSuffix(f.signature, eip6492Magic) {
		return nil, refuse(ReasonEIP6492FactoryNotAllowed, "ERC-6492 signatures are not accepted")
	}

	v := &Verified{
		X402Version: p.X402Version,
		Network:     network,
		ChainID:     chainID,
		Asset:       asset,
		Payer:       f.from,
		To:          f.to,
		Value:       f.value,
		ValidAfter:  f.validAfter,
		ValidBefore: f.validBefore,
		Nonce:       f.nonce,
		Signature:   f.signature,
		Digest:      authorizationDigest(domainSeparators.get(req.Extra.Name, req.Extra.Version, chainID, asset), &f),
	}
	// 5. signature
	if err := checkSig(v); err != nil {
		return nil, err
	}
	// 6. recipient
	if v.To != payTo {
		return nil, refuse(ReasonRecipientMismatch, fmt.Sprintf("authorization pays %s, offer pays %s", v.To.Hex(), payTo.Hex()))
	}
	// 7. validity window
	unix := now.Unix()
	if lessThan(v.ValidBefore, unix+validBeforeMargin) {
		return nil, refuse(ReasonValidBefore, fmt.Sprintf("validBefore %s is before now+%d (%d)", v.ValidBefore, validBeforeMargin, unix+validBeforeMargin))
	}
	if !lessThan(v.ValidAfter, unix+1) {
		return nil, refuse(ReasonValidAfter, fmt.Sprintf("validAfter %s is after now (%d)", v.ValidAfter, unix))
	}
	// 8. exact value (the v2 rule; we apply it to v1 too, whose clients send the amount verbatim,
	// as the reference's v1 facilitator does, with its own reason code)
	if v.Value.Cmp(amount) != 0 {
		reason := ReasonValueMismatch
		if p.X402Version == 1 {
			reason = ReasonAuthorizationValue
		}
		return nil, refuse(reason, fmt.Sprintf("authorization value %s, price %s", v.Value, amount))
	}
	return v, nil
}

// matchesOffer is the reference server's paymentRequirementsMatchAccepted: every field equal
// except extra, which must contain the server's keys. Addresses compare by value (the reference
// compares text, and the reference client echoes it verbatim); fields we do not model are not
// compared.
func matchesOffer(a, req *PaymentRequirements) bool {
	return a.Scheme == req.Scheme &&
		a.Network == req.Network &&
		a.Amount == req.Amount &&
		a.MaxTimeoutSeconds == req.MaxTimeoutSeconds &&
		sameAddress(a.Asset, req.Asset) &&
		sameAddress(a.PayTo, req.PayTo) &&
		a.Extra.Contains(req.Extra)
}

// secp256k1 group order n and n/2, big-endian.
var (
	secp256k1N     = common.FromHex("0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
	secp256k1HalfN = common.FromHex("0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0")
)

// checkECDSA requires a 65-byte secp256k1 signature by v.Payer over v.Digest with v in
// {0,1,27,28}, r in [1,n) and a low s (EIP-2; FiatToken's ECRecover refuses high s as well),
// and normalises v to 27/28.
func checkECDSA(v *Verified) error {
	sig := v.Signature
	if len(sig) != 65 {
		return refuse(ReasonSignature, fmt.Sprintf("a %d-byte signature from an address without code", len(sig)))
	}
	var recID byte
	switch sig[64] {
	case 0, 1:
		recID = sig[64]
	case 27, 28:
		recID = sig[64] - 27
	default:
		return refuse(ReasonSignature, fmt.Sprintf("signature v = %d", sig[64]))
	}
	r, s := sig[:32], sig[32:64]
	if isZero(r) || bytes.Compare(r, secp256k1N) >= 0 || isZero(s) || bytes.Compare(s, secp256k1HalfN) > 0 {
		return refuse(ReasonSignature, "signature r or s out of range (high s is refused)")
	}
	var rsv [65]byte
	copy(rsv[:64], sig[:64])
	rsv[64] = recID
	pub, err := crypto.Ecrecover(v.Digest[:], rsv[:])
	if err != nil {
		return refuse(ReasonSignature, "signature does not recover: "+err.Error())
	}
	h := crypto.Keccak256Hash(pub[1:])
	signer := common.BytesToAddress(h[12:])
	if signer != v.Payer {
		return refuse(ReasonSignature, fmt.Sprintf("signed by %s, not by from %s", signer.Hex(), v.Payer.Hex()))
	}
	sig[64] = recID + 27 // v.Signature was decoded for this verification alone
	return nil
}

// unavailable wraps a failed chain read: the call is refused with 503, nothing is decided.
func unavailable(what string, err error) error {
	return fmt.Errorf("x402: %s: %w: %w", what, payments.ErrUnavailable, err)
}

// lessThan reports x < y for a non-negative x and any y.
func lessThan(x *big.Int, y int64) bool {
	if y <= 0 {
		return false
	}
	return x.IsUint64() && x.Uint64() < uint64(y)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func lowerHex(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 2+2*len(b))
	out[0], out[1] = '0', 'x'
	for i, c := range b {
		out[2+2*i], out[3+2*i] = digits[c>>4], digits[c&0xf]
	}
	return string(out)
}
