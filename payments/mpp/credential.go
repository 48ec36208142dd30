package mpp

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
)

// Limits on a credential. MaxHeaderBytes bounds the whole Authorization value.
const (
	maxCredentialJSON = 12 << 10 // decoded credential JSON
	maxSourceBytes    = 256      // the payer's DID
	maxChallengeID    = 64       // our ids are 43 characters (base64url of 32 bytes)
	maxSPTBytes       = 186      // so that "mpp_" + id + "_" + spt fits Stripe's 255-byte idempotency keys
	maxExternalID     = 255
)

// Credential is the decoded `Authorization: Payment <base64url JSON>`.
type Credential struct {
	Challenge Challenge       `json:"challenge"`
	Source    string          `json:"source,omitempty"` // the payer's DID, self-asserted
	Payload   json.RawMessage `json:"payload"`          // method-specific; see DecodeStripePayload
}

// Encode renders the credential as the token68 of an Authorization value (what a client sends).
func (c *Credential) Encode() (string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mpp: encode credential: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// strict is how every credential part is decoded: unknown members, duplicate names,
// invalid UTF-8 and trailing data are refused (json v2 does the last three by default; names
// match case-sensitively).
var strict = jsonv2.RejectUnknownMembers(true)

// DecodeCredential decodes the token68 of an `Authorization: Payment` value. Refusals are
// malformed-credential: over the size caps, not base64url, not one strict JSON object of the
// credential's shape, or without a challenge id, method or payload object.
func DecodeCredential(token string) (*Credential, error) {
	if len(token) > MaxHeaderBytes {
		return nil, refuse(ReasonMalformedCredential, fmt.Sprintf("the credential is longer than %d bytes", MaxHeaderBytes))
	}
	// The draft sends no padding; padding is tolerated, the standard alphabet is not.
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(token, "="))
	if err != nil {
		return nil, refuse(ReasonMalformedCredential, "the credential is not base64url")
	}
	if len(raw) > maxCredentialJSON {
		return nil, refuse(ReasonMalformedCredential, fmt.Sprintf("the credential JSON is longer than %d bytes", maxCredentialJSON))
	}
	var c Credential
	if err := jsonv2.Unmarshal(raw, &c, strict); err != nil {
		return nil, refuse(ReasonMalformedCredential, "the credential is not a valid credential JSON object: "+shortJSONError(err))
	}
	ch := c.Challenge
	switch {
	case ch.ID == "" || len(ch.ID) > maxChallengeID:
		return nil, refuse(ReasonMalformedCredential, "the credential's challenge has no valid id")
	case !validMethod(ch.Method):
		return nil, refuse(ReasonMalformedCredential, "the credential's challenge method is not lowercase a-z")
	case ch.Realm == "" || ch.Intent == "" || ch.Request == "":
		return nil, refuse(ReasonMalformedCredential, "the credential's challenge lacks realm, intent or request")
	case len(c.Payload) == 0 || c.Payload[0] != '{':
		return nil, refuse(ReasonMalformedCredential, "the credential has no payload object")
	case c.Source != "" && !validDID(c.Source):
		return nil, refuse(ReasonMalformedCredential, "the credential's source is not a DID")
	}
	return &c, nil
}

// validDID accepts what a DID can be without resolving it: "did:", printable ASCII, bounded.
func validDID(s string) bool {
	if len(s) > maxSourceBytes || !strings.HasPrefix(s, "did:") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// shortJSONError keeps a decoder's message short and free of the input's bytes.
func shortJSONError(err error) string {
	msg := err.Error()
	if len(msg) > 160 {
		msg = msg[:160]
	}
	return msg
}

// StripePayload is the `stripe` method's credential payload: a Shared Payment Token.
type StripePayload struct {
	SPT        string `json:"spt"`
	ExternalID string `json:"externalId,omitempty"`
}

// DecodeStripePayload decodes and checks a stripe/charge payload; refusals are invalid-payload.
func DecodeStripePayload(raw json.RawMessage) (StripePayload, error) {
	var p StripePayload
	if err := jsonv2.Unmarshal(raw, &p, strict); err != nil {
		return p, refuse(ReasonInvalidPayload, "the stripe payload is not {\"spt\": …}: "+shortJSONError(err))
	}
	if !validStripeID(p.SPT, "spt_", maxSPTBytes) {
		return p, refuse(ReasonInvalidPayload, "the stripe payload's spt is not a Shared Payment Token id")
	}
	if len(p.ExternalID) > maxExternalID {
		return p, refuse(ReasonInvalidPayload, "the stripe payload's externalId is too long")
	}
	if strings.ContainsFunc(p.ExternalID, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		// The payment record (JSONB) cannot hold a NUL: refused here, before the challenge
		// is claimed, rather than failing the record and using the challenge up.
		return p, refuse(ReasonInvalidPayload, "the stripe payload's externalId contains a control character")
	}
	return p, nil
}

// validStripeID accepts prefix followed by 1+ ASCII letters, digits or underscores, at most
// max bytes in all: the shape of Stripe object ids.
func validStripeID(s, prefix string, max int) bool {
	if len(s) <= len(prefix) || len(s) > max || !strings.HasPrefix(s, prefix) {
		return false
	}
	for i := len(prefix); i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Credential forms this package accepts.
const (
	formPayment = "payment" // Authorization: Payment <base64url JSON>
	formMPP     = "mpp"     // Authorization: MPP <pi_…>, the seed's form
)

// presented is the credential a request carries: its form and its raw value.
type presented struct {
	form  string
	value string
}

// authorizationScheme returns the scheme of an Authorization value and what follows it.
func authorizationScheme(v string) (scheme, rest string) {
	v = strings.TrimLeft(v, " \t")
	scheme, rest, _ = strings.Cut(v, " ")
	return scheme, strings.Trim(rest, " \t")
}

func ourScheme(scheme string) string {
	switch {
	case strings.EqualFold(scheme, SchemePayment):
		return formPayment
	case strings.EqualFold(scheme, SchemeMPP):
		return formMPP
	}
	return ""
}

// hasCredential reports whether any Authorization field is of a scheme of this rail.
func hasCredential(h http.Header) bool {
	for _, v := range h.Values(HeaderAuthorization) {
		if s, _ := authorizationScheme(v); ourScheme(s) != "" {
			return true
		}
	}
	return false
}

// credentialFrom finds this rail's credential in the request headers. Authorization is a
// singleton field: a request that carries it more than once, with one of ours among them, is
// refused (bad-request) rather than guessed at.
func credentialFrom(h http.Header) (presented, error) {
	values := h.Values(HeaderAuthorization)
	var found []presented
	for _, v := range values {
		s, rest := authorizationScheme(v)
		if f := ourScheme(s); f != "" {
			found = append(found, presented{form: f, value: rest})
		}
	}
	switch {
	case len(found) == 0:
		return presented{}, refuse(ReasonMalformedCredential, "no Payment or MPP Authorization header")
	case len(values) > 1:
		return presented{}, refuse(ReasonBadRequest, "more than one Authorization header field")
	}
	p := found[0]
	if p.value == "" {
		return presented{}, refuse(ReasonMalformedCredential, "the Authorization header has no credential after its scheme")
	}
	if len(p.value) > MaxHeaderBytes {
		return presented{}, refuse(ReasonMalformedCredential, fmt.Sprintf("the credential is longer than %d bytes", MaxHeaderBytes))
	}
	if p.form == formPayment && strings.ContainsAny(p.value, " \t,") {
		// A list of credentials in one field, or params instead of a token68.
		return presented{}, refuse(ReasonBadRequest, "the Authorization header must carry exactly one Payment credential")
	}
	return p, nil
}

// maxPaymentIntentID bounds the seed form's PaymentIntent id.
const maxPaymentIntentID = 255

// parsePaymentIntentID checks the seed form's `MPP pi_…` value.
func parsePaymentIntentID(v string) (string, error) {
	if !validStripeID(v, "pi_", maxPaymentIntentID) {
		return "", refuse(ReasonMalformedCredential, "an MPP credential is a PaymentIntent id (pi_…)")
	}
	return v, nil
}
