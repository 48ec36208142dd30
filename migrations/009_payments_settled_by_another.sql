-- A payment settled by a transaction that is not ours. Our first send of a payment's
-- authorization can find it already used: its payer (or anyone holding the payment header)
-- sent it to the token first, and the money reached payTo then. Before, the payment was closed
-- not_charged and the call refused, though paid. Now, when the chain shows the transaction that
-- used it and that transaction moved the price to payTo, the payment goes straight from
-- verified (or queued) to settled, recording that transaction (payments/x402 ChainSettler.send).
-- The guard below is 008's with those two edges, and a move to settled from them must name its
-- transaction. payments/ledger/status.go has the same edges (TestTransitionsMatchTrigger).

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
       (OLD.status = 'verified'  AND NEW.status IN ('not_charged', 'queued', 'submitted', 'settling', 'settled'))
    OR (OLD.status = 'queued'    AND NEW.status IN ('submitted', 'settling', 'not_charged', 'settled'))
    OR (OLD.status = 'submitted' AND NEW.status IN ('settled', 'pending', 'failed'))
    OR (OLD.status = 'settling'  AND NEW.status IN ('settled', 'pending', 'failed', 'not_charged'))
    OR (OLD.status = 'pending'   AND NEW.status IN ('settled', 'failed'))
  ) THEN
    RAISE EXCEPTION 'illegal_payment_transition: % -> %', OLD.status, NEW.status
      USING ERRCODE = 'check_violation';
  END IF;
  IF OLD.status IN ('verified', 'queued') AND NEW.status = 'settled' AND NEW.tx_hash IS NULL THEN
    RAISE EXCEPTION 'illegal_payment_transition: % -> settled needs the transaction that moved the money', OLD.status
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
