-- A payment handed to a remote x402 facilitator (X402_FACILITATOR_URL) is 'settling' until the
-- facilitator's answer is recorded: the gateway holds no signed transaction of its own to
-- re-broadcast, so recovery asks the chain whether the authorization was used and otherwise
-- asks the facilitator again (one EIP-3009 nonce moves the money at most once).
-- payments/ledger/status.go holds the same edges; TestTransitionsMatchTrigger checks they agree.
--
-- replaced_txs: a signed settlement transaction the node refused as "nonce too low" (another
-- transaction of the settlement key took its nonce) can never be mined. It is the one case in
-- which a payment's recorded transaction may be replaced by a new one (Ledger.ReplaceTx), and
-- the dead hash is kept here: the trigger allows no other change of raw_tx or tx_hash.

ALTER TABLE payments ADD COLUMN replaced_txs TEXT[] NOT NULL DEFAULT '{}';

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN
  ('verified', 'not_charged', 'queued', 'submitted', 'settling', 'pending', 'settled', 'failed'));

DROP INDEX idx_payments_recoverable;
CREATE INDEX idx_payments_recoverable ON payments(updated_at)
  WHERE status IN ('verified', 'submitted', 'settling', 'pending');

CREATE OR REPLACE FUNCTION payments_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  replaced BOOLEAN;
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.status <> 'verified' THEN
      RAISE EXCEPTION 'illegal_payment_transition: a payment starts verified, not %', NEW.status
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
