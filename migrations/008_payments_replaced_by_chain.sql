-- Two more ways a payment's recorded transaction may give way, both kept in replaced_txs as
-- 005's ReplaceTx keeps a dead one; the trigger still allows no other change of tx_hash or
-- raw_tx.
--
-- 1. A batch moved to a new batch (payments/ledger MoveBatch). Its transaction settled none of
--    its members (it reverted as a whole, it can never be mined, or it was never recorded), so
--    they are settled by a new batch's transaction. A member that went pending carries the old
--    batch's transaction (the receipt wait timed out): it gives it up as it moves, keeping the
--    status, so that the new batch's transaction can be recorded on it. Before, the ledger
--    refused that (a recorded transaction is immutable) and the member stayed pending forever,
--    its money moved.
--
-- 2. A payment settled or failed by the transaction the chain shows used its authorization,
--    when that is not the recorded one (payments/ledger TransitionReplacing): a facilitator's
--    transaction that was replaced (sped up) by another, or an authorization used by another
--    transaction than ours. The move to settled or failed records the transaction that used
--    it; the signed bytes, if any, stay as the record of what was sent.
--
-- payments/ledger/status.go's edges are unchanged; TestTransitionsMatchTrigger still checks
-- them, and TestTriggerAllowsOnlyTheseReplacements these replacements.

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
  -- A replacement appends the recorded hash to replaced_txs, and is one of three moves.
  replaced := NEW.replaced_txs IS DISTINCT FROM OLD.replaced_txs;
  IF replaced AND NOT (OLD.tx_hash IS NOT NULL AND NEW.replaced_txs = array_append(OLD.replaced_txs, OLD.tx_hash) AND (
       -- ReplaceTx: a dead signed transaction of our own gives way to a new one; the status stays.
       (OLD.status IN ('submitted', 'pending') AND NEW.status = OLD.status
        AND OLD.raw_tx IS NOT NULL AND NEW.raw_tx IS NOT NULL AND NEW.tx_hash IS NOT NULL
        AND NEW.tx_hash IS DISTINCT FROM OLD.tx_hash)
       -- MoveBatch: a batch member moves to a new batch and gives up the old batch's
       -- transaction; the status stays.
    OR (OLD.status IN ('submitted', 'pending') AND NEW.status = OLD.status
        AND OLD.raw_tx IS NULL AND NEW.raw_tx IS NULL AND NEW.tx_hash IS NULL
        AND NEW.batch_id IS NOT NULL AND NEW.batch_id IS DISTINCT FROM OLD.batch_id)
       -- TransitionReplacing: settled or failed by the transaction that used the authorization;
       -- the signed bytes stay.
    OR (OLD.status IN ('submitted', 'settling', 'pending') AND NEW.status IN ('settled', 'failed')
        AND NEW.raw_tx IS NOT DISTINCT FROM OLD.raw_tx AND NEW.tx_hash IS NOT NULL
        AND NEW.tx_hash IS DISTINCT FROM OLD.tx_hash)
  )) THEN
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
