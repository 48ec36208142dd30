-- A payment's reference is its tx_hash: the settlement transaction of an x402 payment, the
-- PaymentIntent of an MPP one. An MPP payment paid with a Shared Payment Token is recorded
-- before its charge, keyed by its challenge (its PaymentIntent is not known yet), so the Stripe
-- webhook, which names only the PaymentIntent of a refund or dispute, finds the payment by its
-- reference (Ledger.GetByReference, which asks with the rail). Only MPP references are indexed:
-- an x402 payment is looked up by its id, and an index of its settlement transactions would
-- cost every settled batch row an index entry (with one, Postgres CPU per paid call in
-- scripts/bench-x402.sh was 520 against 455-476 us without, in two noisy pairs).

CREATE INDEX idx_payments_mpp_reference ON payments(tx_hash) WHERE rail = 'mpp' AND tx_hash IS NOT NULL;
