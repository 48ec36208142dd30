package client

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/ethereum/go-ethereum/common"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/payments/x402"
)

// maxPaymentWindow bounds maxTimeoutSeconds: an authorization stays spendable until its
// validBefore, so a per-call payment is valid for no longer than the longest a SecureExec
// gateway offers (X402_MAX_TIMEOUT_S ≤ 3600 s); a gateway asking for more is refused.
const maxPaymentWindow = 60 * 60

// v1ValidAfterSkew is how far back the v1 reference client dates validAfter (now − 600 s).
const v1ValidAfterSkew = 600

// offer is the x402 offer of a 402, in one form for both protocol versions.
type offer struct {
	version    int
	resource   x402.ResourceInfo // v2
	extensions x402.Extensions   // v2
	entries    []offerEntry
}

// offerEntry is one way to pay.
type offerEntry struct {
	req     x402.PaymentRequirements    // v2: as offered, and echoed verbatim; v1: its v2 form
	chainID uint64                      // 0 when the network is not eip155:<n> (or a known v1 name)
	v1      *x402.PaymentRequirementsV1 // the v1 entry; nil for v2
}

// parseOffer reads the offer of a 402 as the reference client does: the PAYMENT-REQUIRED
// header first, and the body only when it is JSON with x402Version 1.
func parseOffer(h http.Header, body []byte) (*offer, error) {
	if v := h.Get(x402.HeaderPaymentRequired); v != "" {
		pr, err := x402.DecodePaymentRequired(v)
		if err != nil {
			return nil, &PaymentRefusedError{Reason: ReasonInvalidPaymentRequired, Detail: clip(err.Error()), Status: http.StatusPaymentRequired}
		}
		o := &offer{version: 2, resource: pr.Resource, extensions: pr.Extensions}
		for _, r := range pr.Accepts {
			e := offerEntry{req: r}
			if id, err := x402.ParseCAIP2(r.Network); err == nil {
				e.chainID = id
			}
			o.entries = append(o.entries, e)
		}
		return o, nil
	}
	var probe struct {
		X402Version *int `json:"x402Version"`
	}
	if json.Unmarshal(body, &probe) == nil && probe.X402Version != nil && *probe.X402Version == 1 {
		pr, err := x402.DecodePaymentRequiredV1(body)
		if err != nil {
			return nil, &PaymentRefusedError{Reason: ReasonInvalidPaymentRequired, Detail: clip(err.Error()), Status: http.StatusPaymentRequired}
		}
		o := &offer{version: 1}
		for i := range pr.Accepts {
			r := &pr.Accepts[i]
			e := offerEntry{v1: r, req: x402.PaymentRequirements{
				Scheme: r.Scheme, Network: r.Network, Amount: r.MaxAmountRequired, Asset: r.Asset,
				PayTo: r.PayTo, MaxTimeoutSeconds: r.MaxTimeoutSeconds, Extra: r.Extra,
			}}
			if id, ok := x402.ChainIDForV1Name(r.Network); ok {
				e.chainID, e.req.Network = id, x402.CAIP2(id)
			}
			o.entries = append(o.entries, e)
		}
		return o, nil
	}
	return nil, &PaymentRefusedError{Reason: ReasonNoOffer, Status: http.StatusPaymentRequired,
		Detail: "the 402 has no PAYMENT-REQUIRED header and no x402 v1 body"}
}

// candidate is an offer entry that passed every check, parsed.
type candidate struct {
	entry        offerEntry
	asset, payTo common.Address
	amount       uint64
	flowRank     int // 0 for the default authorization flow, 1 for upfront
}

// choose picks the entry to pay: the first usable one in the server's order, preferring the
// default (authorization) flow. When none is usable, the refusal names the most actionable
// reason: a spend control the caller could relax before "nothing here is supported".
func (c *Client) choose(o *offer) (*candidate, error) {
	var best *candidate
	var rejected []string
	reasons := map[string]bool{}
	for i, e := range o.entries {
		cand, reason, detail := c.check(e)
		if reason != "" {
			reasons[reason] = true
			rejected = append(rejected, fmt.Sprintf("accepts[%d] (%s): %s", i, reason, detail))
			continue
		}
		if best == nil || cand.flowRank < best.flowRank {
			best = cand
		}
	}
	if best != nil {
		return best, nil
	}
	reason := ReasonNoSupportedRequirements
	for _, r := range []string{ReasonMaxPaymentExceeded, ReasonAssetNotAllowed, ReasonInvalidPaymentRequired} {
		if reasons[r] {
			reason = r
			break
		}
	}
	return nil, &PaymentRefusedError{Reason: reason, Detail: clip(strings.Join(rejected, "; ")), Status: http.StatusPaymentRequired}
}

// check returns the entry parsed, or the reason it cannot or may not be paid.
func (c *Client) check(e offerEntry) (*candidate, string, string) {
	r := e.req
	if r.Scheme != x402.SchemeExact {
		return nil, ReasonNoSupportedRequirements, fmt.Sprintf("scheme %q, only %q is supported", r.Scheme, x402.SchemeExact)
	}
	if e.chainID == 0 {
		return nil, ReasonNoSupportedRequirements, fmt.Sprintf("network %q is not eip155:<chain id>", r.Network)
	}
	if m, ok := extraString(r.Extra, "assetTransferMethod"); ok && m != "eip3009" {
		return nil, ReasonNoSupportedRequirements, fmt.Sprintf("asset transfer method %q, only eip3009 is supported", m)
	}
	flowRank := 0
	if f, ok := extraString(r.Extra, "paymentFlow"); ok {
		switch f {
		case "authorization":
		case "upfront":
			flowRank = 1
		default:
			return nil, ReasonNoSupportedRequirements, fmt.Sprintf("payment flow %q", f)
		}
	}
	if r.Extra.Name == "" || r.Extra.Version == "" {
		return nil, ReasonNoSupportedRequirements, "extra.name and extra.version (the token's EIP-712 domain) are required"
	}
	asset, ok := x402.ParseAddress(r.Asset)
	if !ok {
		return nil, ReasonInvalidPaymentRequired, fmt.Sprintf("asset %q is not an address", r.Asset)
	}
	payTo, ok := x402.ParseAddress(r.PayTo)
	if !ok || payTo == (common.Address{}) {
		return nil, ReasonInvalidPaymentRequired, fmt.Sprintf("payTo %q is not a payable address", r.PayTo)
	}
	if r.MaxTimeoutSeconds <= 0 || r.MaxTimeoutSeconds > maxPaymentWindow {
		return nil, ReasonInvalidPaymentRequired, fmt.Sprintf("maxTimeoutSeconds %d is outside (0, %d]", r.MaxTimeoutSeconds, maxPaymentWindow)
	}
	allowed, ok := c.allowed[assetKey{e.chainID, asset}]
	if !ok {
		return nil, ReasonAssetNotAllowed, fmt.Sprintf("asset %s on %s is not in the allowed assets", asset.Hex(), r.Network)
	}
	if (allowed.TokenName != "" && allowed.TokenName != r.Extra.Name) || (allowed.TokenVersion != "" && allowed.TokenVersion != r.Extra.Version) {
		return nil, ReasonAssetNotAllowed, fmt.Sprintf("the offer names EIP-712 domain %q/%q, the allowed asset is %q/%q",
			r.Extra.Name, r.Extra.Version, allowed.TokenName, allowed.TokenVersion)
	}
	amount, err := strconv.ParseUint(r.Amount, 10, 64)
	if err != nil || amount > c.maxPayment || c.maxPayment == 0 {
		return nil, ReasonMaxPaymentExceeded, fmt.Sprintf("amount %s exceeds the maximum payment of %d", r.Amount, c.maxPayment)
	}
	return &candidate{entry: e, asset: asset, payTo: payTo, amount: amount, flowRank: flowRank}, "", ""
}

// sign builds and signs the payment for a candidate exactly as the 2.27.0 reference client
// does, and returns the header to send it in, its value, and what was signed.
func (c *Client) sign(o *offer, cand *candidate) (name, value string, pay *Payment, err error) {
	refused := func(reason, format string, args ...any) (string, string, *Payment, error) {
		return "", "", nil, &PaymentRefusedError{Reason: reason, Detail: fmt.Sprintf(format, args...), Status: http.StatusPaymentRequired}
	}
	from := c.signer.Address()
	if from == (common.Address{}) {
		return refused(ReasonSigningFailed, "the signer has no address")
	}
	var nonce common.Hash
	if _, err := rand.Read(nonce[:]); err != nil {
		return refused(ReasonSigningFailed, "no randomness for the nonce: %v", err)
	}
	now := c.now().Unix()
	validAfter := "0"
	if o.version == 1 {
		validAfter = strconv.FormatInt(max(now-v1ValidAfterSkew, 0), 10)
	}
	validBefore := now + cand.entry.req.MaxTimeoutSeconds
	auth := x402.EIP3009Authorization{
		From:        from.Hex(),
		To:          cand.payTo.Hex(), // checksummed, as the reference client's getAddress(payTo)
		Value:       cand.entry.req.Amount,
		ValidAfter:  validAfter,
		ValidBefore: strconv.FormatInt(validBefore, 10),
		Nonce:       "0x" + hex.EncodeToString(nonce[:]),
	}
	digest, err := x402.SigningDigest(cand.entry.req, auth)
	if err != nil {
		return refused(ReasonInvalidPaymentRequired, "%v", err)
	}
	sig, err := c.signer.SignDigest(digest)
	if err != nil {
		return refused(ReasonSigningFailed, "%v", err)
	}
	if sig, err = normaliseSignature(sig); err != nil {
		return refused(ReasonSigningFailed, "%v", err)
	}

	p := &x402.PaymentPayload{
		X402Version: o.version,
		Payload:     x402.ExactEVMPayload{Signature: "0x" + hex.EncodeToString(sig), Authorization: auth},
	}
	pay = &Payment{X402Version: o.version, Network: cand.entry.req.Network, ChainID: cand.entry.chainID, Asset: cand.asset,
		PayTo: cand.payTo, Payer: from, Amount: cand.amount, Nonce: nonce, ValidBefore: validBefore}
	name = x402.HeaderPaymentSignature
	if o.version == 1 {
		name = x402.HeaderXPayment
		p.Scheme, p.Network = x402.SchemeExact, cand.entry.v1.Network
		pay.Network = cand.entry.v1.Network
	} else {
		res, acc := o.resource, cand.entry.req
		p.Resource, p.Accepted = &res, &acc
		ext, id, err := withPaymentID(o.extensions)
		if err != nil {
			return refused(ReasonInvalidPaymentRequired, "payment-identifier: %v", err)
		}
		p.Extensions, pay.PaymentID = ext, id
	}
	value, err = x402.EncodePaymentPayload(p)
	if err != nil {
		return refused(ReasonSigningFailed, "encoding the payment: %v", err)
	}
	return name, value, pay, nil
}

// withPaymentID echoes the server's extensions, as the reference client does, and when the
// server declares payment-identifier, fills in info.id with a fresh pay_<uuid>, keeping every
// key the server declared.
func withPaymentID(ext x402.Extensions) (x402.Extensions, string, error) {
	if len(ext) == 0 {
		return nil, "", nil
	}
	out := make(x402.Extensions, len(ext))
	for k, v := range ext {
		out[k] = v
	}
	raw, ok := ext[x402.ExtensionPaymentIdentifier]
	if !ok {
		return out, "", nil
	}
	var decl map[string]json.RawMessage
	if json.Unmarshal(raw, &decl) != nil || decl == nil {
		decl = map[string]json.RawMessage{} // not an object: replace it with a well-formed echo
	}
	var info map[string]json.RawMessage
	if json.Unmarshal(decl["info"], &info) != nil || info == nil {
		info = map[string]json.RawMessage{}
	}
	id := "pay_" + strings.ReplaceAll(uuid.NewString(), "-", "")
	var err error
	if info["id"], err = marshalNoEscape(id); err != nil {
		return nil, "", err
	}
	if decl["info"], err = marshalNoEscape(info); err != nil {
		return nil, "", err
	}
	if out[x402.ExtensionPaymentIdentifier], err = marshalNoEscape(decl); err != nil {
		return nil, "", err
	}
	// Read it back the way the gateway will.
	check := x402.PaymentPayload{Extensions: out}
	if got, ok, err := check.PaymentIdentifier(); err != nil || !ok || got != id {
		return nil, "", fmt.Errorf("the echoed id does not read back (%v)", err)
	}
	return out, id, nil
}

// extraString returns a string member of extra's other keys.
func extraString(e x402.Extra, key string) (string, bool) {
	raw, ok := e.Other[key]
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return string(raw), true // present and not a string: reported as unsupported
	}
	return s, true
}

// marshalNoEscape is json.Marshal without HTML escaping, so that echoed values stay as sent.
func marshalNoEscape(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}
