package identity

import (
	"errors"
	"fmt"
)

// Reason codes an Outcome carries, in one list. They are stable: dashboards and the proof
// record depend on them.
const (
	// Local policy denials (Source "policy").
	ReasonAgentDenied    = "agent_denied"            // agent id is deny-listed
	ReasonToolNotAllowed = "tool_not_allowed"        // tool is not on the agent's allow-list
	ReasonRealDisabled   = "real_execution_disabled" // real (non-dry-run) execution is off
	ReasonRealNotAllowed = "real_execution_not_allowed"
	ReasonPriceOverLimit = "price_over_limit"

	// Identity (Source "identity").
	ReasonIdentityUnresolved = "identity_unresolved" // the Resolver could not bind the caller to an agent

	// Approvals without EP (Source "policy").
	ReasonEPDisabled    = "ep_disabled"    // no EP URL configured: local policy alone decided
	ReasonInternalAgent = "internal_agent" // EP skipped for an authenticated internal caller

	// EP answered (Source "ep").
	ReasonEPApproved = "ep_approved"
	ReasonEPDenied   = "ep_denied"
	// EP's answer both approved and denied (valid true beside violations, or beside a
	// second "valid" that is false): taken as a denial in either fail mode.
	ReasonEPContradictory = "ep_contradictory"

	// EP gave no usable answer (Source "ep"); the fail mode decides Approved.
	ReasonEPTimeout     = "ep_timeout"      // EP did not answer within the deadline
	ReasonEPUnreachable = "ep_unreachable"  // connection refused, reset, DNS failure…
	ReasonEPBadStatus   = "ep_bad_status"   // EP answered with a non-2xx status
	ReasonEPBadResponse = "ep_bad_response" // not JSON, no boolean "valid", over the size cap…
	ReasonEPCircuitOpen = "ep_circuit_open" // breaker open: no call was made
	ReasonEPCanceled    = "ep_canceled"     // the caller's context ended first; not counted by the breaker
)

// epError is why one EP call produced no usable answer. Reason is one of the ep_* codes.
type epError struct {
	Reason string
	Err    error
}

func (e *epError) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *epError) Unwrap() error { return e.Err }

func epErrorf(reason, format string, args ...any) *epError {
	return &epError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// reasonOf extracts the ep_* reason from err; anything unclassified is EP being unreachable.
func reasonOf(err error) string {
	var e *epError
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonEPUnreachable
}
