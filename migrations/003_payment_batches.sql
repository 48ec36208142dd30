-- payment_batches: the one signed transaction that settles a batch of queued payments,
-- recorded before it is broadcast (payments/ledger RecordBatchTx). The payments of the batch
-- point here through payments.batch_id; recovery re-broadcasts these bytes and never signs a
-- second transaction for the same batch. A row is written once and never changed.
CREATE TABLE payment_batches (
  id         UUID PRIMARY KEY,
  raw_tx     BYTEA NOT NULL,
  tx_hash    TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE FUNCTION payment_batches_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'payment_tx_immutable: batch % already has a signed transaction', OLD.id
    USING ERRCODE = 'check_violation';
END
$$;

CREATE TRIGGER payment_batches_immutable BEFORE UPDATE ON payment_batches
  FOR EACH ROW EXECUTE FUNCTION payment_batches_immutable();
