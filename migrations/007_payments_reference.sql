-- A payment's reference is its tx_hash: the settlement transaction of an x402 payment, the
-- PaymentIntent of an MPP one. An MPP payment paid with a Shared Payment Token is recorded
-- before its charge, keyed by its challenge (its PaymentIntent is not known yet), so the Stripe
-- webhook, which names only the PaymentIntent of a refund or dispute, finds the payment by its
-- reference (Ledger.GetByReference). Only recorded references are indexed.

CREATE INDEX idx_payments_reference ON payments(rail, tx_hash) WHERE tx_hash IS NOT NULL;
