package client

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Reasons the client itself gives for not paying, in the snake_case vocabulary of the server's
// reason codes. A refusal by the server carries the server's own code instead.
const (
	// ReasonMaxPaymentExceeded: every usable offer costs more than WithMaxPayment allows.
	ReasonMaxPaymentExceeded = "max_payment_exceeded"
	// ReasonAssetNotAllowed: every usable offer is in an asset outside the allowed list.
	ReasonAssetNotAllowed = "asset_not_allowed"
	// ReasonNoSupportedRequirements: no offer is an `exact` EIP-3009 payment on eip155:<n>.
	ReasonNoSupportedRequirements = "no_supported_payment_requirements"
	// ReasonInvalidPaymentRequired: the 402 carries an offer that does not decode.
	ReasonInvalidPaymentRequired = "invalid_payment_required"
	// ReasonNoOffer: the 402 carries no x402 offer at all (no PAYMENT-REQUIRED, no v1 body).
	ReasonNoOffer = "no_x402_offer"
	// ReasonNoSigner: payment is required and the client has no signer.
	ReasonNoSigner = "no_signer"
	// ReasonInternalKeyRefused: the client sends an internal key, so it never pays, and the
	// server still asked for payment.
	ReasonInternalKeyRefused = "internal_key_refused"
	// ReasonPaymentAlreadyAttached: the request already carried a payment header of the
	// caller's, so the client does not add another (the reference client's rule).
	ReasonPaymentAlreadyAttached = "payment_already_attached"
	// ReasonSigningFailed: the signer could not sign the authorization.
	ReasonSigningFailed = "signing_failed"
	// ReasonPaymentRequired is the server's code for a 402 that gives no other reason.
	ReasonPaymentRequired = "payment_required"
	// ReasonSimulateNotFree: /exec/simulate asked for payment; a simulation is free, so the
	// client does not pay for one.
	ReasonSimulateNotFree = "simulate_not_free"
	// ReasonInsecureTransport: the offer came over plain HTTP from a gateway that is not on
	// this machine, where anyone on the path could have rewritten its payTo (see
	// WithInsecureHTTP).
	ReasonInsecureTransport = "insecure_transport"
)

// ErrResponseTooLarge is returned when a response body exceeds the client's cap.
var ErrResponseTooLarge = errors.New("response_too_large")

// ErrInvalidResponse is returned when a 2xx response body is not what the endpoint answers.
var ErrInvalidResponse = errors.New("invalid_response")

// APIError is a non-2xx answer other than a payment refusal, read from its problem+json body.
type APIError struct {
	Status     int           // HTTP status
	Code       string        // snake_case reason, e.g. "unknown_tool", "iam_denied"; "" when the body is not problem+json
	Detail     string        // human-readable; for a body that is not problem+json, its start
	Field      string        // the request field at fault, e.g. "tool.args.url"
	JobID      string        // set for calls that were sealed although refused (iam_denied)
	ProofHash  string        // the proof hash of such a call
	RequestID  string        // the gateway's X-Request-ID, for its logs
	RetryAfter time.Duration // from Retry-After; 0 when absent
	Settlement *Settlement   // a PAYMENT-RESPONSE on the error, when the request was paid
	// Payment is what was signed and sent, when the request was paid: the gateway may have
	// kept it, and calling again signs and pays again; Client.Resend sends the same payment.
	Payment *Payment

	sent *paidRequest // the paid request, for Resend
}

// Error reads "gateway answered HTTP <status> <code> (<field>): <detail>".
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway answered HTTP %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Field != "" {
		b.WriteString(" (" + e.Field + ")")
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	return b.String()
}

// Temporary reports whether the same call may succeed later (503, 429 and other 5xx) at no
// further cost: never for a paid request (Payment set), whose retry would pay again.
func (e *APIError) Temporary() bool {
	return e.Payment == nil && (e.Status == 429 || e.Status >= 500)
}

// PaymentRefusedError is a payment that did not happen: the client refused to pay the offer
// (Paid false, Reason one of the Reason* constants), or the server refused the payment the
// client sent (Paid true, Reason the server's code, e.g. invalid_exact_evm_nonce_already_used).
type PaymentRefusedError struct {
	Reason     string      // snake_case
	Detail     string      // human-readable
	Status     int         // HTTP status of the refusing response (402), 0 if none was involved
	Paid       bool        // a signed payment was sent and refused
	Payment    *Payment    // what was sent, when Paid
	Settlement *Settlement // the server's PAYMENT-RESPONSE on the refusal, if any
}

// Error says who refused, and why.
func (e *PaymentRefusedError) Error() string {
	who := "client refused to pay"
	if e.Paid {
		who = "server refused the payment"
	}
	if e.Detail == "" {
		return who + ": " + e.Reason
	}
	return who + ": " + e.Reason + ": " + e.Detail
}

// PaymentInFlightError is a paid request whose answer never arrived (a timeout, a dropped
// connection) or was not an answer (a 2xx body that is not a result): the gateway may have
// run the call and settled the payment. Payment says what was signed; Client.Resend sends that
// same payment again, and its PaymentID, when set, lets the gateway recognise the resend and
// answer it with the answer it kept.
type PaymentInFlightError struct {
	Payment *Payment
	Err     error

	sent *paidRequest // the paid request, for Resend
}

// Error names the nonce of the payment that may have settled.
func (e *PaymentInFlightError) Error() string {
	return fmt.Sprintf("paid request failed in transit, the payment may have settled (nonce %s): %v",
		e.Payment.Nonce.Hex(), e.Err)
}

// Unwrap returns the transport error.
func (e *PaymentInFlightError) Unwrap() error { return e.Err }

// Reason returns the snake_case reason of a client error: the code of an *APIError, the
// reason of a *PaymentRefusedError, and "" for anything else.
func Reason(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	var pe *PaymentRefusedError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return ""
}
