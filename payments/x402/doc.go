// Package x402 implements the x402 payment protocol, versions 1 and 2, for the EVM `exact`
// scheme: USDC (or any EIP-3009 token) moved by a signed TransferWithAuthorization.
//
// The flow is the reference resource server's "authorization" flow (x402.md §7): a 402 offers
// PaymentRequirements (PAYMENT-REQUIRED header for v2, the JSON body for v1); the client retries
// with a signed PaymentPayload (PAYMENT-SIGNATURE, X-PAYMENT, or the seed's
// "Authorization: x402 <credential>"); the gateway verifies it — VerifyLocal for the pure rules,
// Verify for those plus the chain reads — claims the nonce, runs the call, settles with
// transferWithAuthorization, and answers with a SettlementResponse (PAYMENT-RESPONSE or
// X-PAYMENT-RESPONSE). Refusals are *payments.PaymentError carrying the reference reason codes
// listed in errors.go; a chain that cannot be read yields payments.ErrUnavailable.
//
// Wire format, verification order and reason codes follow the project's protocol notes
// (protocols/x402.md), which record @x402/core and @x402/evm 2.27.0. Headers are standard
// base64 of compact JSON; padding is optional on input, the URL-safe alphabet is refused, as by
// the reference server. Unknown JSON fields are ignored. Where this package differs on purpose:
// v1 payments must pay the amount exactly, as v2 ones; addresses in `accepted` compare by value,
// not by text; ERC-6492 signatures are refused, since no wallet factory is allowed.
package x402
