-- Batch settlement at load: two changes measured with scripts/bench-x402.sh.
--
-- 1. Where a payment starts. In batch mode the gateway records a payment once its call is done:
--    queued (the tool ran and the answer carries its pending settlement) or not_charged (the
--    call failed). Its nonce is claimed, in Redis and in payment_nonces, before any work, as
--    before; only the row of the payment waits for the call, which saves one row version and one
--    round trip per paid call. A crash before that row is written leaves no payment to charge,
--    which is what recovery made of a 'verified' row before: not charged. Every other mode still
--    starts verified. payments/ledger/status.go lists the same entry statuses (entryStatuses) and
--    TestTransitionsMatchTrigger checks they agree.
--
-- 2. The queue's index leads with the scope the worker and the backlog read (rail, network,
--    asset): with idx_payments_queued (created_at, id) and its filter, Postgres read every queued
--    row and sorted them for each batch (17 ms with 6,000 queued), which made the queue slower the
--    longer it grew. Now a batch reads its 100 rows in order from the index.

DROP INDEX idx_payments_queued;
CREATE INDEX idx_payments_queue ON payments(rail, network, asset, created_at, id) WHERE status = 'queued';

CREATE OR REPLACE FUNCTION payments_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  replaced BOOLEAN;
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.status NOT IN ('verified', 'queued', 'not_charged') THEN
      RAISE EXCEPTION 'illegal_payment_transition: a payment starts verified, queued or not_charged, not %', NEW.status
        USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
       (OLD.status = 'verified'  AND NEW.status IN ('not_charged', 'queued', 'submitted', 'settling'))
    OR (OLD.status = 'queued'    AND NEW.status IN ('submitted', 'settling', 'not_charged'))
    OR (OLD.status = 'submitted' AND NEW.status IN ('settled', 'pending', 'failed'))
    OR (OLD.status = 'settling'  AND NEW.status IN ('settled', 'pending', 'failed', 'not_charged'))
    OR (OLD.status = 'pending'   AND NEW.status IN ('settled', 'failed'))
  ) THEN
    RAISE EXCEPTION 'illegal_payment_transition: % -> %', OLD.status, NEW.status
      USING ERRCODE = 'check_violation';
  END IF;
  -- A replacement keeps the status, swaps a recorded transaction of our own for a new one,
  -- and appends the old hash to replaced_txs; nothing else may touch those three columns.
  replaced := NEW.replaced_txs IS DISTINCT FROM OLD.replaced_txs;
  IF replaced AND NOT (OLD.status IN ('submitted', 'pending') AND NEW.status = OLD.status
            AND OLD.raw_tx IS NOT NULL AND NEW.raw_tx IS NOT NULL AND NEW.tx_hash IS NOT NULL
            AND NEW.tx_hash IS DISTINCT FROM OLD.tx_hash
            AND NEW.replaced_txs = array_append(OLD.replaced_txs, OLD.tx_hash)) THEN
    RAISE EXCEPTION 'payment_tx_immutable: payment % replaced_txs changed outside a replacement', OLD.id
      USING ERRCODE = 'check_violation';
  END IF;
  IF NOT replaced AND OLD.raw_tx IS NOT NULL AND NEW.raw_tx IS DISTINCT FROM OLD.raw_tx THEN
    RAISE EXCEPTION 'payment_tx_immutable: payment % already has a signed transaction', OLD.id
      USING ERRCODE = 'check_violation';
  END IF;
  IF NOT replaced AND OLD.tx_hash IS NOT NULL AND NEW.tx_hash IS DISTINCT FROM OLD.tx_hash THEN
    RAISE EXCEPTION 'payment_tx_immutable: payment % already has transaction %', OLD.id, OLD.tx_hash
      USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.id <> OLD.id OR NEW.rail <> OLD.rail OR NEW.nonce_key <> OLD.nonce_key
     OR NEW.amount <> OLD.amount OR NEW.payer <> OLD.payer OR NEW.pay_to <> OLD.pay_to
     OR NEW.network <> OLD.network OR NEW.asset <> OLD.asset OR NEW.created_at <> OLD.created_at THEN
    RAISE EXCEPTION 'payment_identity_immutable: payment %', OLD.id
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END
$$;
