package x402

import (
	"errors"

	"github.com/secureexec/secureexec/payments"
)

// RailName is the name this rail reports in payments.PaymentError.Rail and Authorization.Rail.
const RailName = "x402"

// Reason codes, spelled as the reference implementation (@x402/evm 2.27.0) and the x402 v2
// specification put them on the wire (x402.md §6). One list, so that nothing invents a synonym.
const (
	// Decoding and protocol-level refusals (spec v2 §9).
	ReasonInvalidPayload             = "invalid_payload"
	ReasonInvalidX402Version         = "invalid_x402_version"
	ReasonInvalidNetwork             = "invalid_network"
	ReasonInvalidPaymentRequirements = "invalid_payment_requirements"
	ReasonUnsupportedPayloadType     = "unsupported_payload_type"
	ReasonUnexpectedVerifyError      = "unexpected_verify_error"
	ReasonUnexpectedSettleError      = "unexpected_settle_error"
	ReasonInvalidTransactionState    = "invalid_transaction_state"

	// ReasonNoMatchingRequirements is ours: the reference resource server has no code for an
	// `accepted` that matches none of its offers, it answers 402 with PAYMENT-REQUIRED.error set
	// to MessageNoMatchingRequirements. The gateway should do the same with this error's Detail.
	ReasonNoMatchingRequirements = "no_matching_payment_requirements"

	// EIP-3009 `exact` verification, in the order the checks run (x402.md §5).
	ReasonScheme                   = "invalid_exact_evm_scheme"
	ReasonMissingEIP712Domain      = "invalid_exact_evm_missing_eip712_domain"
	ReasonNetworkMismatch          = "invalid_exact_evm_network_mismatch"
	ReasonFailedToParseSignature   = "invalid_exact_evm_failed_to_parse_signature"
	ReasonEIP6492FactoryNotAllowed = "eip6492_factory_not_allowed"
	ReasonSignature                = "invalid_exact_evm_signature"
	ReasonRecipientMismatch        = "invalid_exact_evm_recipient_mismatch"
	ReasonValidBefore              = "invalid_exact_evm_payload_authorization_valid_before"
	ReasonValidAfter               = "invalid_exact_evm_payload_authorization_valid_after"
	ReasonValueMismatch            = "invalid_exact_evm_payload_authorization_value_mismatch"
	ReasonAuthorizationValue       = "invalid_exact_evm_authorization_value" // the same refusal of a v1 payment (ExactEvmSchemeV1)
	ReasonAssetNotDeployed         = "asset_not_deployed_contract"
	ReasonInsufficientBalance      = "invalid_exact_evm_insufficient_balance"
	ReasonNonceAlreadyUsed         = "invalid_exact_evm_nonce_already_used"
	ReasonEIP3009NotSupported      = "invalid_exact_evm_eip3009_not_supported"
	ReasonTokenNameMismatch        = "invalid_exact_evm_token_name_mismatch"
	ReasonTokenVersionMismatch     = "invalid_exact_evm_token_version_mismatch"

	// Settlement (x402.md §7), for the settler.
	ReasonTransactionSimulationFailed = "invalid_exact_evm_transaction_simulation_failed"
	ReasonTransactionFailed           = "invalid_exact_evm_transaction_failed"
	ReasonTransferEventMismatch       = "invalid_exact_evm_transfer_event_mismatch"
	ReasonSettlementPending           = "settlement_pending"
)

// MessageNoMatchingRequirements is the reference server's PAYMENT-REQUIRED.error text when the
// echoed `accepted` matches no offer.
const MessageNoMatchingRequirements = "No matching payment requirements"

// ErrCallReverted marks a contract call that the node executed and that reverted, or whose
// return data is not the ABI value asked for: an answer about the contract, not a failure to
// reach the chain.
var ErrCallReverted = errors.New("x402: contract call reverted")

// refuse builds the refusal every decoder and verifier returns.
func refuse(reason, detail string) *payments.PaymentError {
	return &payments.PaymentError{Rail: RailName, Reason: reason, Detail: detail}
}

// Reason returns the reason code of a refusal anywhere in err's chain, or "" when err is nil or
// not a refusal (for example a wrapped payments.ErrUnavailable).
func Reason(err error) string {
	var pe *payments.PaymentError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return ""
}
