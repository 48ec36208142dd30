package payments

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// A Rail is one way to pay. The gateway never knows which one it is talking to.
type Rail interface {
	// Name is the payment protocol reported to the caller: "x402", "mpp", "erc7710".
	Name() string
	// Offer returns what this rail adds to a 402 for the given price. refused is this rail's
	// refusal of the credential the request carried, when the 402 answers one (nil otherwise):
	// a rail may say why in its own terms (x402's PAYMENT-REQUIRED.error).
	Offer(ctx context.Context, price Price, refused *PaymentError) (Challenge, error)
	// Accepts reports whether the request carries this rail's credential.
	Accepts(r *http.Request) bool
	// Verify proves that payment is possible and claims the credential's nonce, so that the
	// same credential can never pay twice. No money moves.
	Verify(ctx context.Context, r *http.Request, price Price) (*Authorization, error)
	// Settle moves the money for a verified authorization, exactly once.
	Settle(ctx context.Context, a *Authorization) (*Settlement, error)
}

// Challenge is one rail's part of a 402 response.
type Challenge struct {
	Header http.Header                // e.g. PAYMENT-REQUIRED, WWW-Authenticate
	Body   map[string]json.RawMessage // fields merged into the problem+json body
}

// Authorization is a verified, claimed credential: payment is possible and cannot be reused.
type Authorization struct {
	Rail      string // the rail that issued it, and the only one that may settle it
	Payer     string // checksummed address, or the rail's customer reference
	Amount    uint64 // atomic units
	Reference string // the rail's reference for the record (nonce, PaymentIntent id, ...)
	JobID     string // set by the gateway once the call has a job id
	State     any    // rail-private; only the issuing rail reads it
}

// A Voider is a rail whose verified authorizations must be marked as never charged when the
// call does not complete (the tool failed, IAM denied it). Rails without one need nothing.
type Voider interface {
	Void(ctx context.Context, a *Authorization, reason string) error
}

// Settlement statuses.
const (
	SettlementSettled = "settled"
	SettlementPending = "pending" // submitted or queued, outcome not yet final: never "failed"
)

// Settlement is the outcome of Settle.
type Settlement struct {
	Status    string      // SettlementSettled or SettlementPending
	ID        string      // the gateway's settlement id (GET /payments/{id})
	TxHash    string      // on-chain transaction, when there is one
	Reference string      // the rail's receipt reference
	Header    http.Header // e.g. PAYMENT-RESPONSE, Payment-Receipt
}

// PaymentError is a refusal to accept a credential. It answers 402 with its reason.
type PaymentError struct {
	Rail   string // which rail refused
	Reason string // snake_case, the rail's own vocabulary (e.g. invalid_exact_evm_signature)
	Detail string // human-readable
	// Header goes into the 402 besides the offers: x402's PAYMENT-RESPONSE when a settlement
	// was refused.
	Header http.Header
}

func (e *PaymentError) Error() string { return e.Rail + ": " + e.Reason + ": " + e.Detail }

// ErrUnavailable marks a failure of something a rail depends on (Redis, an RPC node,
// Stripe): the call is refused with 503 and Retry-After, and nothing is charged.
var ErrUnavailable = errors.New("payment_backend_unavailable")

// ErrNotRecorded marks a settlement that could not even be recorded (a rail that writes a
// payment's row only once its call is done, with Postgres and the local spool both failing):
// nothing will ever settle it, so the gateway withholds the result (503, like ErrUnavailable)
// instead of answering it as pending. Nothing is charged; the credential stays used.
var ErrNotRecorded = errors.New("payment_not_recorded")

// An Idempotent rail lets a credential name its request (x402's payment-identifier): the
// gateway then answers a resend with the stored response instead of processing it again.
// ok is false when the request names nothing; fingerprint binds the key to the exact payment.
type Idempotent interface {
	IdempotencyKey(r *http.Request) (key, fingerprint string, ok bool, err error)
}
