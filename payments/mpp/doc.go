// Package mpp implements the Machine Payments Protocol's `Payment` HTTP authentication scheme
// (IETF draft-httpauth-payment -01; protocols/mpp.md) with its `stripe` method, intent
// `charge`, and the seed's older form `Authorization: MPP <PaymentIntent id>`.
//
// The flow: a 402 carries `WWW-Authenticate: Payment id=…, realm=…, method="stripe",
// intent="charge", request=…, expires=…`, where request is base64url(JCS(JSON)) of the amount
// in the currency's minor units, the currency, a description and methodDetails (networkId,
// paymentMethodTypes), and id is an HMAC-SHA256 over the other params (challenge.go), so the
// server keeps no state per challenge. The client answers with `Authorization: Payment
// <base64url JSON>` echoing the challenge and carrying a Shared Payment Token
// (credential.go). Verify recomputes the id in constant time, checks realm, method, intent,
// expiry and price, claims the challenge id once across replicas, records the payment, then
// creates and confirms a PaymentIntent with the token (stripe.go). The money moves in Verify,
// because the token is spent by the call that proves it: so Void refunds, and Settle records
// the payment and returns `Payment-Receipt` (receipt.go). The charge is written ahead
// (charge.go): a charge whose answer was lost is completed by a resend of the same credential,
// or refunded by Reconcile (reconcile.go). A `MPP pi_…` credential is a PaymentIntent the payer
// already paid (seedform.go): Verify retrieves it and requires succeeded, neither refunded nor disputed,
// this price, this currency, this gateway's binding metadata, this Stripe mode, a bounded
// age, and no earlier use.
//
// Prices are integer USDC atomic units; Stripe amounts are integer minor units (cents).
// Config.Amounts fixes the charge per mode; without it a USDC price converts at par, so
// 0.50 USDC is 50 cents, and prices below Stripe's minimum (50 cents) are not offered here.
//
// Every payment is recorded in the shared ledger (rail "mpp", network "stripe", asset the
// currency, reference the PaymentIntent id; nonce key "mpp:challenge:" + challenge id for a
// token, "mpp:" + PaymentIntent id for `MPP pi_…`), so GET /payments/{id} serves it: verified
// while charged (or while its charge had no answer), not_charged once refused or refunded,
// submitted then settled by Settle. Reconcile refunds charged payments whose call never
// completed.
//
// Refusals are *payments.PaymentError whose Reason is a draft problem slug (errors.go;
// Status gives the draft's HTTP status); Stripe, Redis or the database unreachable is
// payments.ErrUnavailable. The webhook handler (webhook.go) verifies Stripe's signature and
// records refunds and disputes through interfaces the gateway implements.
//
// `opaque` carries a random nonce, so that every challenge's id is unique (a challenge id pays
// once) and is covered by the id's HMAC. Not implemented on purpose: the `digest` param (never
// emitted; a credential echoing one fails the id check), the `header` param (the draft and mppx
// disagree on its HMAC slot), Connect parameters, and the `evm` and `tempo` methods.
package mpp
