package x402

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/secureexec/secureexec/payments"
)

// DefaultMaxTimeout is the payment window offered when none is configured. The reference client
// signs validBefore = now + maxTimeoutSeconds and verification wants validBefore >= now + 6, so
// a payment made with this window stays verifiable for about 54 s.
const DefaultMaxTimeout = 60 * time.Second

// Requirements is the v2 offer entry for paying price on network n to payTo. The amount is the
// price's atomic units as an integer string; addresses are checksummed; a non-positive timeout
// means DefaultMaxTimeout and a fractional one is rounded up to whole seconds.
func Requirements(n Network, price payments.Price, payTo common.Address, maxTimeout time.Duration) PaymentRequirements {
	if maxTimeout <= 0 {
		maxTimeout = DefaultMaxTimeout
	}
	secs := int64((maxTimeout + time.Second - 1) / time.Second)
	return PaymentRequirements{
		Scheme:            SchemeExact,
		Network:           n.CAIP2,
		Amount:            strconv.FormatUint(price.Amount, 10),
		Asset:             n.Asset.Hex(),
		PayTo:             payTo.Hex(),
		MaxTimeoutSeconds: secs,
		Extra:             Extra{Name: n.TokenName, Version: n.TokenVersion},
	}
}

// ResourceFor describes the resource a price is for, at its absolute URL.
func ResourceFor(price payments.Price, url string) ResourceInfo {
	r := ResourceInfo{URL: url, MimeType: "application/json"}
	if price.Tool != "" {
		r.Description = fmt.Sprintf("SecureExec %s (%s)", price.Tool, price.Mode)
	}
	return r
}

// NewPaymentRequired is the v2 offer (PAYMENT-REQUIRED) for a resource. errMsg is the
// human-readable reason for the 402, such as "PAYMENT-SIGNATURE header is required" or
// MessageNoMatchingRequirements.
func NewPaymentRequired(resource ResourceInfo, errMsg string, accepts ...PaymentRequirements) PaymentRequired {
	return PaymentRequired{X402Version: 2, Error: errMsg, Resource: resource, Accepts: accepts}
}

// RequirementsV1 is the v1 form of a v2 offer entry. It reports false when the entry's chain
// has no v1 network name, since v1 clients refuse any network they cannot name.
func RequirementsV1(r PaymentRequirements, resource ResourceInfo) (PaymentRequirementsV1, bool) {
	id, err := ParseCAIP2(r.Network)
	if err != nil {
		return PaymentRequirementsV1{}, false
	}
	name := V1NameForChainID(id)
	if name == "" {
		return PaymentRequirementsV1{}, false
	}
	return PaymentRequirementsV1{
		Scheme:            r.Scheme,
		Network:           name,
		MaxAmountRequired: r.Amount,
		Resource:          resource.URL,
		Description:       resource.Description,
		MimeType:          resource.MimeType,
		PayTo:             r.PayTo,
		MaxTimeoutSeconds: r.MaxTimeoutSeconds,
		Asset:             r.Asset,
		Extra:             r.Extra,
	}, true
}

// NewPaymentRequiredV1 is the v1 offer (the 402 body).
func NewPaymentRequiredV1(errMsg string, accepts ...PaymentRequirementsV1) PaymentRequiredV1 {
	return PaymentRequiredV1{X402Version: 1, Error: errMsg, Accepts: accepts}
}

// ExtensionPaymentIdentifier is the idempotency extension of x402.md §9.
const ExtensionPaymentIdentifier = "payment-identifier"

// paymentIdentifierSchema is the reference server's JSON Schema for the extension's info.
const paymentIdentifierSchema = `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object",` +
	`"properties":{"required":{"type":"boolean"},"id":{"type":"string","minLength":16,"maxLength":128,"pattern":"^[a-zA-Z0-9_-]+$"}},` +
	`"required":["required"]}`

// paymentIdentifier is the extension's value, as declared by a server or echoed by a client.
type paymentIdentifier struct {
	Info struct {
		Required bool   `json:"required"`
		ID       string `json:"id,omitempty"`
	} `json:"info"`
	Schema json.RawMessage `json:"schema,omitempty"`
}

// DeclarePaymentIdentifier adds the payment-identifier extension to an offer; with required, a
// payment without an id is to be refused (400).
func DeclarePaymentIdentifier(pr *PaymentRequired, required bool) {
	var d paymentIdentifier
	d.Info.Required = required
	d.Schema = json.RawMessage(paymentIdentifierSchema)
	b, _ := marshalCompact(d) // a fixed struct always encodes
	if pr.Extensions == nil {
		pr.Extensions = Extensions{}
	}
	pr.Extensions[ExtensionPaymentIdentifier] = b
}

// PaymentIdentifier returns the client's payment id (extensions["payment-identifier"].info.id),
// false when it sent none, and a refusal when the id is malformed (16 to 128 characters of
// [A-Za-z0-9_-]).
func (p *PaymentPayload) PaymentIdentifier() (string, bool, error) {
	raw, ok := p.Extensions[ExtensionPaymentIdentifier]
	if !ok {
		return "", false, nil
	}
	var v paymentIdentifier
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", false, refuse(ReasonInvalidPayload, "payment-identifier: "+jsonProblem(err))
	}
	if v.Info.ID == "" {
		return "", false, nil
	}
	if !validPaymentID(v.Info.ID) {
		return "", false, refuse(ReasonInvalidPayload, "payment-identifier id must be 16 to 128 characters of [A-Za-z0-9_-]")
	}
	return v.Info.ID, true, nil
}

// SetPaymentIdentifier echoes the extension with a payment id, as a client does.
func (p *PaymentPayload) SetPaymentIdentifier(id string) error {
	if !validPaymentID(id) {
		return fmt.Errorf("payment id %q: want 16 to 128 characters of [A-Za-z0-9_-]", id)
	}
	var v paymentIdentifier
	v.Info.ID = id
	b, err := marshalCompact(v)
	if err != nil {
		return err
	}
	if p.Extensions == nil {
		p.Extensions = Extensions{}
	}
	p.Extensions[ExtensionPaymentIdentifier] = b
	return nil
}

// validPaymentID reports 16 to 128 characters of [A-Za-z0-9_-].
func validPaymentID(id string) bool {
	if len(id) < 16 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
