package mpp

import (
	"errors"
	"net/http"

	"github.com/secureexec/secureexec/payments"
)

// RailName is the name this rail reports in payments.PaymentError.Rail and Authorization.Rail.
const RailName = "mpp"

// ProblemBase is the prefix of the draft's problem types: ProblemBase + reason.
const ProblemBase = "https://paymentauth.org/problems/"

// Reasons, spelled as the draft's problem-type slugs (draft -01, mpp.md §1). A refusal's
// payments.PaymentError.Reason is always one of these, so a client can build the problem type
// as ProblemBase + Reason. One list, so that nothing invents a synonym.
const (
	ReasonPaymentRequired       = "payment-required"
	ReasonPaymentInsufficient   = "payment-insufficient"
	ReasonPaymentExpired        = "payment-expired"
	ReasonVerificationFailed    = "verification-failed"
	ReasonMethodUnsupported     = "method-unsupported"
	ReasonMalformedCredential   = "malformed-credential"
	ReasonInvalidChallenge      = "invalid-challenge"
	ReasonBadRequest            = "bad-request"
	ReasonInvalidPayload        = "invalid-payload"
	ReasonInternalPaymentError  = "internal-payment-error"
	ReasonPaymentActionRequired = "payment-action-required"
)

// Status is the HTTP status the draft gives a reason: 400 for method-unsupported and
// bad-request, 500 for internal-payment-error, 402 for every other refusal.
func Status(reason string) int {
	switch reason {
	case ReasonMethodUnsupported, ReasonBadRequest:
		return http.StatusBadRequest
	case ReasonInternalPaymentError:
		return http.StatusInternalServerError
	}
	return http.StatusPaymentRequired
}

// ProblemType is the problem+json "type" URI of a reason.
func ProblemType(reason string) string { return ProblemBase + reason }

// refuse builds the refusal every decoder and verifier returns.
func refuse(reason, detail string) *payments.PaymentError {
	return &payments.PaymentError{Rail: RailName, Reason: reason, Detail: detail}
}

// Reason returns the reason of a refusal anywhere in err's chain, or "" when err is nil or not
// a refusal (for example a wrapped payments.ErrUnavailable).
func Reason(err error) string {
	var pe *payments.PaymentError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return ""
}
