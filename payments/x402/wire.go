package x402

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// HTTP header names (x402.md §1). v1 offers travel in the 402 body, not in a header.
const (
	HeaderPaymentRequired  = "PAYMENT-REQUIRED"   // v2 offer
	HeaderPaymentSignature = "PAYMENT-SIGNATURE"  // v2 payment
	HeaderXPayment         = "X-PAYMENT"          // v1 payment
	HeaderPaymentResponse  = "PAYMENT-RESPONSE"   // v2 settlement result
	HeaderXPaymentResponse = "X-PAYMENT-RESPONSE" // v1 settlement result
	HeaderAuthorization    = "Authorization"      // the seed's "Authorization: x402 <credential>"
)

// AuthScheme is the seed's Authorization scheme: "Authorization: x402 <credential>", where the
// credential is the same base64 payload a PAYMENT-SIGNATURE or X-PAYMENT header carries.
const AuthScheme = "x402"

// SchemeExact is the only payment scheme this package verifies.
const SchemeExact = "exact"

// Size limits on untrusted input, checked before anything is decoded.
const (
	MaxHeaderBytes    = 16 << 10 // an encoded header value; a 65-byte-signature payload is ~1.3 KiB
	MaxBodyBytes      = 64 << 10 // a v1 402 body read by a client
	MaxSignatureBytes = 2048     // room for ERC-1271 wallet signatures; EOAs use exactly 65
)

// ResourceInfo describes what is being paid for (v2 `resource`).
type ResourceInfo struct {
	URL         string `json:"url"`
	Description string `json:"description,omitempty"`
	MimeType    string `json:"mimeType,omitempty"`
}

// Extra is the `extra` object of a payment requirement: the EIP-712 domain name and version of
// the token, and any other keys kept verbatim (compact JSON) so that matching and re-encoding
// lose nothing.
type Extra struct {
	Name    string
	Version string
	Other   map[string]json.RawMessage // keys other than name and version; nil when none
}

// IsZero reports an absent extra, so that `omitzero` leaves it out.
func (e Extra) IsZero() bool { return e.Name == "" && e.Version == "" && len(e.Other) == 0 }

// MarshalJSON writes name, version, then the other keys in sorted order.
func (e Extra) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	member := func(k string, raw []byte) {
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeJSONString(&b, k)
		b.WriteByte(':')
		b.Write(raw)
	}
	if e.Name != "" {
		var s bytes.Buffer
		writeJSONString(&s, e.Name)
		member("name", s.Bytes())
	}
	if e.Version != "" {
		var s bytes.Buffer
		writeJSONString(&s, e.Version)
		member("version", s.Bytes())
	}
	keys := make([]string, 0, len(e.Other))
	for k := range e.Other {
		if k != "name" && k != "version" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !json.Valid(e.Other[k]) {
			return nil, fmt.Errorf("x402: extra.%s is not valid JSON", k)
		}
		member(k, e.Other[k])
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON accepts an object (or null); name and version, when present, must be strings.
func (e *Extra) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*e = Extra{}
		return nil
	}
	if fast, ok := plainExtra(b); ok {
		*e = fast
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("extra: %w", err)
	}
	out := Extra{}
	for k, v := range m {
		switch k {
		case "name":
			if err := unmarshalString(v, &out.Name); err != nil {
				return fmt.Errorf("extra.name: %w", err)
			}
		case "version":
			if err := unmarshalString(v, &out.Version); err != nil {
				return fmt.Errorf("extra.version: %w", err)
			}
		default:
			if out.Other == nil {
				out.Other = make(map[string]json.RawMessage, len(m))
			}
			out.Other[k] = compactJSON(v)
		}
	}
	*e = out
	return nil
}

// Contains reports whether e carries every key the server declared in server, with an equal
// value: the reference server's rule for `accepted.extra` (the client may add keys). Values of
// other keys are compared after RFC 8785 canonicalisation; nested objects must be equal, not
// merely contain the server's keys.
func (e Extra) Contains(server Extra) bool {
	if server.Name != "" && e.Name != server.Name {
		return false
	}
	if server.Version != "" && e.Version != server.Version {
		return false
	}
	for k, want := range server.Other {
		got, ok := e.Other[k]
		if !ok || !jsonEqual(want, got) {
			return false
		}
	}
	return true
}

// Extensions holds protocol extensions by name (`extensions`), each kept as compact JSON.
type Extensions map[string]json.RawMessage

// UnmarshalJSON compacts each value and leaves an empty object as nil, so that decoding is
// stable under re-encoding.
func (x *Extensions) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*x = nil
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("extensions: %w", err)
	}
	if len(m) == 0 {
		*x = nil
		return nil
	}
	for k, v := range m {
		m[k] = compactJSON(v)
	}
	*x = m
	return nil
}

// PaymentRequirements is one way to pay in a v2 offer (`accepts[]`), and what a v2 payment
// echoes as `accepted`.
type PaymentRequirements struct {
	Scheme            string `json:"scheme"`
	Network           string `json:"network"` // CAIP-2
	Amount            string `json:"amount"`  // atomic units, base-10 integer string
	Asset             string `json:"asset"`
	PayTo             string `json:"payTo"`
	MaxTimeoutSeconds int64  `json:"maxTimeoutSeconds"`
	Extra             Extra  `json:"extra,omitzero"`
}

// PaymentRequired is the v2 offer, sent base64-encoded in the PAYMENT-REQUIRED header.
type PaymentRequired struct {
	X402Version int                   `json:"x402Version"`
	Error       string                `json:"error,omitempty"`
	Resource    ResourceInfo          `json:"resource"`
	Accepts     []PaymentRequirements `json:"accepts"`
	Extensions  Extensions            `json:"extensions,omitempty"`
}

// PaymentRequirementsV1 is one way to pay in a v1 offer.
type PaymentRequirementsV1 struct {
	Scheme            string          `json:"scheme"`
	Network           string          `json:"network"` // v1 name, e.g. "base-sepolia"
	MaxAmountRequired string          `json:"maxAmountRequired"`
	Resource          string          `json:"resource"`
	Description       string          `json:"description"`
	MimeType          string          `json:"mimeType"`
	OutputSchema      json.RawMessage `json:"outputSchema"` // null unless set
	PayTo             string          `json:"payTo"`
	MaxTimeoutSeconds int64           `json:"maxTimeoutSeconds"`
	Asset             string          `json:"asset"`
	Extra             Extra           `json:"extra,omitzero"`
}

// PaymentRequiredV1 is the v1 offer, sent as the JSON body of the 402.
type PaymentRequiredV1 struct {
	X402Version int                     `json:"x402Version"`
	Error       string                  `json:"error,omitempty"`
	Accepts     []PaymentRequirementsV1 `json:"accepts"`
}

// EIP3009Authorization is the signed TransferWithAuthorization message; every number is a
// base-10 string and every byte string 0x-prefixed hex, as the reference client sends them.
type EIP3009Authorization struct {
	From        string `json:"from"`
	To          string `json:"to"`
	Value       string `json:"value"`
	ValidAfter  string `json:"validAfter"`
	ValidBefore string `json:"validBefore"`
	Nonce       string `json:"nonce"`
}

// ExactEVMPayload is the scheme-specific `payload` of an EVM `exact` payment (EIP-3009).
type ExactEVMPayload struct {
	Signature     string               `json:"signature"`
	Authorization EIP3009Authorization `json:"authorization"`
}

// PaymentPayload is a client's payment, v1 or v2 (by X402Version). v2 sets Accepted (and
// optionally Resource); v1 sets Scheme and Network instead.
type PaymentPayload struct {
	X402Version int                  `json:"x402Version"`
	Scheme      string               `json:"scheme,omitempty"`   // v1
	Network     string               `json:"network,omitempty"`  // v1 name
	Resource    *ResourceInfo        `json:"resource,omitempty"` // v2, optional
	Accepted    *PaymentRequirements `json:"accepted,omitempty"` // v2: the offer, echoed
	Payload     ExactEVMPayload      `json:"payload"`
	Extensions  Extensions           `json:"extensions,omitempty"`
}

// SettlementResponse is the result of settling a payment (PAYMENT-RESPONSE, X-PAYMENT-RESPONSE).
type SettlementResponse struct {
	Success      bool       `json:"success"`
	Transaction  string     `json:"transaction"` // tx hash, "" when there is none
	Network      string     `json:"network"`     // CAIP-2 (v2) or the v1 name (v1)
	Payer        string     `json:"payer,omitempty"`
	ErrorReason  string     `json:"errorReason,omitempty"`
	ErrorMessage string     `json:"errorMessage,omitempty"`
	Amount       string     `json:"amount,omitempty"`
	Extensions   Extensions `json:"extensions,omitempty"`
}

// ResponseHeader is the header a settlement result goes in for a payment of the given version.
func ResponseHeader(x402Version int) string {
	if x402Version == 1 {
		return HeaderXPaymentResponse
	}
	return HeaderPaymentResponse
}

// EncodePaymentRequired returns the PAYMENT-REQUIRED header value of a v2 offer.
func EncodePaymentRequired(pr PaymentRequired) (string, error) { return encodeHeader(pr) }

// EncodePaymentPayload returns the PAYMENT-SIGNATURE (v2) or X-PAYMENT (v1) header value of a
// payment; the same string is the credential of "Authorization: x402 <credential>".
func EncodePaymentPayload(p *PaymentPayload) (string, error) { return encodeHeader(p) }

// EncodeSettlementResponse returns the PAYMENT-RESPONSE / X-PAYMENT-RESPONSE header value.
func EncodeSettlementResponse(r SettlementResponse) (string, error) { return encodeHeader(r) }

// EncodePaymentRequiredV1 returns the JSON body of a v1 402.
func EncodePaymentRequiredV1(pr PaymentRequiredV1) ([]byte, error) { return marshalCompact(pr) }

// AuthorizationValue is the seed's Authorization header value for an encoded payment.
func AuthorizationValue(credential string) string { return AuthScheme + " " + credential }

// DecodePaymentPayload decodes and validates a PAYMENT-SIGNATURE or X-PAYMENT header value (or
// an Authorization credential). Either version is accepted in either header, as the reference
// server does; X402Version says which one it is. Every field the verifier reads is checked for
// form here: numbers are canonical base-10 integers below 2^256, addresses 20 bytes of hex, the
// nonce 32 bytes, the signature 65 to MaxSignatureBytes bytes. Unknown fields are ignored.
func DecodePaymentPayload(value string) (*PaymentPayload, error) {
	raw, err := decodeHeader(value)
	if err != nil {
		return nil, err
	}
	p, ok := fastPayload(raw)
	if !ok {
		p = &PaymentPayload{}
		if err := json.Unmarshal(raw, p); err != nil {
			if v, ok := peekVersion(raw); ok && v != 1 && v != 2 {
				return nil, refuse(ReasonInvalidX402Version, fmt.Sprintf("x402Version %d", v))
			}
			return nil, refuse(ReasonInvalidPayload, "payment payload: "+jsonProblem(err))
		}
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// ParseAuthorization decodes the seed's "Authorization: x402 <credential>" header value.
func ParseAuthorization(value string) (*PaymentPayload, error) {
	cred, ok := cutAuthScheme(value)
	if !ok {
		return nil, refuse(ReasonInvalidPayload, "authorization header is not of the x402 scheme")
	}
	return DecodePaymentPayload(cred)
}

// Credential is an encoded x402 payment found in a request, and the header it came in.
type Credential struct {
	Header string // HeaderPaymentSignature, HeaderXPayment or HeaderAuthorization
	Value  string // the base64 payload, without the "x402 " scheme
}

// HasCredential reports whether a request carries an x402 payment in any of its three forms.
func HasCredential(h http.Header) bool {
	_, ok, _ := FindCredential(h)
	return ok
}

// FindCredential returns the request's x402 payment: PAYMENT-SIGNATURE first, then X-PAYMENT
// (the reference server's order), then "Authorization: x402". A header repeated with several
// values is refused rather than guessed at.
func FindCredential(h http.Header) (Credential, bool, error) {
	for _, name := range []string{HeaderPaymentSignature, HeaderXPayment} {
		switch vs := h.Values(name); len(vs) {
		case 0:
		case 1:
			return Credential{Header: name, Value: vs[0]}, true, nil
		default:
			return Credential{Header: name}, true, refuse(ReasonInvalidPayload, name+" header repeated")
		}
	}
	var found []string
	for _, v := range h.Values(HeaderAuthorization) {
		if cred, ok := cutAuthScheme(v); ok {
			found = append(found, cred)
		}
	}
	switch len(found) {
	case 0:
		return Credential{}, false, nil
	case 1:
		return Credential{Header: HeaderAuthorization, Value: found[0]}, true, nil
	default:
		return Credential{Header: HeaderAuthorization}, true, refuse(ReasonInvalidPayload, "several x402 authorization headers")
	}
}

// PayloadFromRequest finds and decodes the x402 payment of a request. A request without one is
// refused with invalid_payload: call HasCredential first to tell "no payment" from "bad payment".
func PayloadFromRequest(h http.Header) (*PaymentPayload, Credential, error) {
	c, ok, err := FindCredential(h)
	if err != nil {
		return nil, c, err
	}
	if !ok {
		return nil, c, refuse(ReasonInvalidPayload, "no x402 payment in the request")
	}
	p, err := DecodePaymentPayload(c.Value)
	return p, c, err
}

// DecodePaymentRequired decodes and validates a PAYMENT-REQUIRED header value (a client reading
// a v2 402). Entries are checked for form only, since an offer may list non-EVM networks.
func DecodePaymentRequired(value string) (*PaymentRequired, error) {
	raw, err := decodeHeader(value)
	if err != nil {
		return nil, err
	}
	var pr PaymentRequired
	if err := json.Unmarshal(raw, &pr); err != nil {
		return nil, refuse(ReasonInvalidPaymentRequirements, "payment required: "+jsonProblem(err))
	}
	if pr.X402Version != 2 {
		return nil, refuse(ReasonInvalidX402Version, fmt.Sprintf("PAYMENT-REQUIRED carries x402Version %d, want 2", pr.X402Version))
	}
	if pr.Resource.URL == "" {
		return nil, refuse(ReasonInvalidPaymentRequirements, "resource.url is required")
	}
	if len(pr.Accepts) == 0 {
		return nil, refuse(ReasonInvalidPaymentRequirements, "accepts is empty")
	}
	for i, r := range pr.Accepts {
		if problem := checkRequirementForm(r.Scheme, r.Network, r.Amount, r.Asset, r.PayTo, r.MaxTimeoutSeconds); problem != "" {
			return nil, refuse(ReasonInvalidPaymentRequirements, fmt.Sprintf("accepts[%d]: %s", i, problem))
		}
		if !strings.Contains(r.Network, ":") {
			return nil, refuse(ReasonInvalidPaymentRequirements, fmt.Sprintf("accepts[%d]: network %q is not CAIP-2", i, r.Network))
		}
	}
	return &pr, nil
}

// DecodePaymentRequiredV1 decodes and validates the JSON body of a v1 402.
func DecodePaymentRequiredV1(body []byte) (*PaymentRequiredV1, error) {
	if len(body) > MaxBodyBytes {
		return nil, refuse(ReasonInvalidPaymentRequirements, fmt.Sprintf("body of %d bytes exceeds %d", len(body), MaxBodyBytes))
	}
	if !utf8.Valid(body) {
		return nil, refuse(ReasonInvalidPaymentRequirements, "body is not UTF-8 JSON")
	}
	var pr PaymentRequiredV1
	if err := json.Unmarshal(body, &pr); err != nil {
		return nil, refuse(ReasonInvalidPaymentRequirements, "payment required: "+jsonProblem(err))
	}
	if pr.X402Version != 1 {
		return nil, refuse(ReasonInvalidX402Version, fmt.Sprintf("402 body carries x402Version %d, want 1", pr.X402Version))
	}
	if len(pr.Accepts) == 0 {
		return nil, refuse(ReasonInvalidPaymentRequirements, "accepts is empty")
	}
	for i, r := range pr.Accepts {
		if problem := checkRequirementForm(r.Scheme, r.Network, r.MaxAmountRequired, r.Asset, r.PayTo, r.MaxTimeoutSeconds); problem != "" {
			return nil, refuse(ReasonInvalidPaymentRequirements, fmt.Sprintf("accepts[%d]: %s", i, problem))
		}
		if string(r.OutputSchema) == "null" {
			pr.Accepts[i].OutputSchema = nil // as built, so that decoding is stable under re-encoding
		} else if r.OutputSchema != nil {
			pr.Accepts[i].OutputSchema = compactJSON(r.OutputSchema)
		}
	}
	return &pr, nil
}

// DecodeSettlementResponse decodes a PAYMENT-RESPONSE or X-PAYMENT-RESPONSE header value.
func DecodeSettlementResponse(value string) (*SettlementResponse, error) {
	raw, err := decodeHeader(value)
	if err != nil {
		return nil, err
	}
	var r SettlementResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, refuse(ReasonInvalidPayload, "settlement response: "+jsonProblem(err))
	}
	if r.Network == "" {
		return nil, refuse(ReasonInvalidPayload, "settlement response: network is required")
	}
	if r.Success && r.Transaction == "" {
		return nil, refuse(ReasonInvalidPayload, "settlement response: success without a transaction")
	}
	return &r, nil
}

// Fingerprint identifies a payment by the SHA-256 of its canonical encoding, for binding a
// payment-identifier to the exact payload it first arrived with (x402.md §9). Fields this
// package does not model do not count.
func (p *PaymentPayload) Fingerprint() [32]byte {
	b, err := marshalCompact(p)
	if err != nil {
		// Only Extra/Extensions values that are not JSON can fail, and decoding never makes one.
		return sha256.Sum256([]byte(err.Error()))
	}
	return sha256.Sum256(b)
}

// encodeHeader is standard base64, with padding, of compact JSON: what the reference client
// and server send.
func encodeHeader(v any) (string, error) {
	b, err := marshalCompact(v)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Strict decoders refuse non-zero trailing bits; built once, as Strict copies the encoding.
var (
	stdStrict    = base64.StdEncoding.Strict()
	rawStdStrict = base64.RawStdEncoding.Strict()
)

// decodeHeader undoes encodeHeader for untrusted input. It takes what the reference server
// takes (`^[A-Za-z0-9+/]*={0,2}$`, so padding is optional) and nothing else: the URL-safe
// alphabet is refused, since no reference client produces it, and so are non-canonical
// trailing bits, so that one payload has one encoding.
func decodeHeader(value string) ([]byte, error) {
	value = strings.TrimSpace(value)
	if len(value) > MaxHeaderBytes {
		return nil, refuse(ReasonInvalidPayload, fmt.Sprintf("header of %d bytes exceeds %d", len(value), MaxHeaderBytes))
	}
	if value == "" {
		return nil, refuse(ReasonInvalidPayload, "empty header")
	}
	// The strict decoders refuse every character outside the alphabet and misplaced padding,
	// except CR and LF, which encoding/base64 skips. (Two IndexByte scans: ContainsAny's set
	// lookup was 2% of a whole verification.)
	if strings.IndexByte(value, '\r') >= 0 || strings.IndexByte(value, '\n') >= 0 {
		return nil, refuse(ReasonInvalidPayload, "header is not base64")
	}
	enc := rawStdStrict
	if value[len(value)-1] == '=' {
		enc = stdStrict
	}
	raw, err := enc.DecodeString(value)
	if err != nil {
		return nil, refuse(ReasonInvalidPayload, "header is not base64: "+err.Error())
	}
	if !utf8.Valid(raw) {
		return nil, refuse(ReasonInvalidPayload, "header is not UTF-8 JSON")
	}
	return raw, nil
}

// cutAuthScheme returns the credential of an "x402 <credential>" Authorization value; the
// scheme name is case-insensitive (RFC 9110 §11.1). The scheme alone is ours too, with an
// empty credential (RFC 9110 §11.4), which decoding refuses.
func cutAuthScheme(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if len(v) < len(AuthScheme) || !strings.EqualFold(v[:len(AuthScheme)], AuthScheme) {
		return "", false
	}
	rest := v[len(AuthScheme):]
	if rest == "" {
		return "", true
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false
	}
	return strings.TrimLeft(rest, " \t"), true
}

// peekVersion reads x402Version from a payload that failed to decode as a whole.
func peekVersion(raw []byte) (int, bool) {
	var probe struct {
		X402Version *int `json:"x402Version"`
	}
	if json.Unmarshal(raw, &probe) != nil || probe.X402Version == nil {
		return 0, false
	}
	return *probe.X402Version, true
}

// jsonProblem shortens a decoding error to what a client can act on.
func jsonProblem(err error) string {
	if _, ok := err.(*json.SyntaxError); ok {
		return "not JSON"
	}
	return err.Error()
}

// marshalCompact is json.Marshal without HTML escaping, like JavaScript's JSON.stringify, so
// that our encoding of a reference payload is byte-identical to the reference's.
func marshalCompact(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}

// writeJSONString appends s as a JSON string, without HTML escaping.
func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Truncate(b.Len() - 1)
}

// unmarshalString decodes a JSON string, taking the common case (no escapes, valid UTF-8)
// without a second pass of the JSON decoder.
func unmarshalString(raw json.RawMessage, dst *string) error {
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' {
		body := raw[1 : len(raw)-1]
		if bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
			*dst = string(body)
			return nil
		}
	}
	return json.Unmarshal(raw, dst)
}

// compactJSON removes insignificant whitespace from valid JSON.
func compactJSON(v json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return v
	}
	return b.Bytes()
}

// jsonEqual compares two JSON values by their RFC 8785 canonical forms.
func jsonEqual(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	ca, errA := jcs.Transform(a)
	cb, errB := jcs.Transform(b)
	return errA == nil && errB == nil && bytes.Equal(ca, cb)
}
