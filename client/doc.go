// Package client is the Go SDK an agent uses to call a SecureExec gateway.
//
// A Client posts tool calls (Exec, Simulate), reads the tool list (Tools), the gateway's
// health (Health) and stored jobs (Job), and recomputes a job's proof hash (VerifyJob).
//
// When the gateway answers 402, the client pays with x402 the way the reference client
// (@x402/fetch 2.27.0) does: it reads the v2 PAYMENT-REQUIRED header (or a v1 body), picks an
// `exact` EIP-3009 offer on an `eip155:<n>` network that passes its spend controls (an allowed
// asset, at most WithMaxPayment per call), signs a TransferWithAuthorization with its Signer,
// and retries the request exactly once with PAYMENT-SIGNATURE (X-PAYMENT for v1). A second 402
// is never retried: it becomes a *PaymentRefusedError carrying the server's reason code. The
// settlement the gateway reports (PAYMENT-RESPONSE) is in Result.Settlement; a settlement that
// is still pending on chain is reported as pending, not as a failure.
//
// The client starts no goroutines. Every method is bounded by a deadline (WithTimeout, 60 s by
// default), every response body is size-capped, redirects are never followed (a payment header
// must not travel to another host), and every failure is typed: *APIError for problem+json
// answers, *PaymentRefusedError for payments refused by either side, *PaymentInFlightError when
// a paid request failed in transit and the money may have moved. Resend sends such a call again
// with the payment it carried, never a new one, so that a gateway honouring the x402
// payment-identifier extension answers it with the answer it kept.
package client
