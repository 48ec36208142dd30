-- The payments ledger (payments/ledger): nonce claims, the state of every paid call, the
-- payment-identifier (idempotency) store, and the log of what the local spools replayed.

-- payment_nonces backs the Redis nonce claims: a key claimed once stays claimed here even if
-- Redis is flushed or fails over. claim_id tells a replayed claim (same id: harmless) from a
-- second claimant (another id: a double use to alarm on).
CREATE TABLE payment_nonces (
  key        TEXT PRIMARY KEY,
  claim_id   UUID NOT NULL,
  claimed_at TIMESTAMPTZ NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX idx_payment_nonces_expires ON payment_nonces(expires_at);

-- payments: one row per paid call. Money is NUMERIC(78,0) atomic units (2^256-1 has 78
-- digits), never a float. raw_tx is the signed transaction, stored before it is broadcast so
-- that recovery re-broadcasts that same transaction and never signs a second one.
CREATE TABLE payments (
  id           UUID PRIMARY KEY,
  rail         TEXT NOT NULL,
  status       TEXT NOT NULL CHECK (status IN
                 ('verified', 'not_charged', 'queued', 'submitted', 'pending', 'settled', 'failed')),
  network      TEXT NOT NULL DEFAULT '',
  asset        TEXT NOT NULL DEFAULT '',
  payer        TEXT NOT NULL DEFAULT '',
  pay_to       TEXT NOT NULL DEFAULT '',
  amount       NUMERIC(78,0) NOT NULL CHECK (amount >= 0),
  nonce_key    TEXT NOT NULL UNIQUE,
  job_id       UUID,
  payload      JSONB NOT NULL,
  tx_hash      TEXT,
  raw_tx       BYTEA,
  batch_id     UUID,
  error_reason TEXT,
  attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  created_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  settled_at   TIMESTAMPTZ,
  CHECK (status <> 'settled' OR settled_at IS NOT NULL),
  CHECK (status <> 'failed' OR error_reason IS NOT NULL),
  CHECK (status <> 'submitted' OR raw_tx IS NOT NULL OR batch_id IS NOT NULL)
);

-- The batch worker's queue, oldest first (ClaimQueued: FOR UPDATE SKIP LOCKED).
CREATE INDEX idx_payments_queued ON payments(created_at, id) WHERE status = 'queued';
-- Crash recovery scans the non-terminal states that nobody is moving (ListRecoverable).
CREATE INDEX idx_payments_recoverable ON payments(updated_at) WHERE status IN ('verified', 'submitted', 'pending');
CREATE INDEX idx_payments_job ON payments(job_id) WHERE job_id IS NOT NULL;
CREATE INDEX idx_payments_batch ON payments(batch_id) WHERE batch_id IS NOT NULL;

-- The state machine, a second time, in the database: whatever writes the table (a replica, a
-- replayed spool, an operator's psql), a payment only moves along these edges, a new payment
-- starts verified, a recorded transaction is never replaced and a payment's identity never
-- changes. payments/ledger/status.go holds the same table; a test checks they agree.
CREATE FUNCTION payments_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.status <> 'verified' THEN
      RAISE EXCEPTION 'illegal_payment_transition: a payment starts verified, not %', NEW.status
        USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
       (OLD.status = 'verified'  AND NEW.status IN ('not_charged', 'queued', 'submitted'))
    OR (OLD.status = 'queued'    AND NEW.status IN ('submitted', 'not_charged'))
    OR (OLD.status = 'submitted' AND NEW.status IN ('settled', 'pending', 'failed'))
    OR (OLD.status = 'pending'   AND NEW.status IN ('settled', 'failed'))
  ) THEN
    RAISE EXCEPTION 'illegal_payment_transition: % -> %', OLD.status, NEW.status
      USING ERRCODE = 'check_violation';
  END IF;
  IF OLD.raw_tx IS NOT NULL AND NEW.raw_tx IS DISTINCT FROM OLD.raw_tx THEN
    RAISE EXCEPTION 'payment_tx_immutable: payment % already has a signed transaction', OLD.id
      USING ERRCODE = 'check_violation';
  END IF;
  IF OLD.tx_hash IS NOT NULL AND NEW.tx_hash IS DISTINCT FROM OLD.tx_hash THEN
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

CREATE TRIGGER payments_guard BEFORE INSERT OR UPDATE ON payments
  FOR EACH ROW EXECUTE FUNCTION payments_guard();

-- payment_idempotency: the x402 payment-identifier extension. id is scoped by the caller
-- ("<route>:<id>"); fingerprint binds it to one PaymentPayload; a done row holds the response
-- to replay.
CREATE TABLE payment_idempotency (
  id          TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  state       TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
  status_code INTEGER CHECK (status_code BETWEEN 100 AND 599),
  headers     JSONB,
  body        BYTEA,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  CHECK (state <> 'done' OR status_code IS NOT NULL)
);

CREATE INDEX idx_payment_idempotency_updated ON payment_idempotency(updated_at);

-- payment_spool_log: every operation a replica spooled while Postgres was away, recorded in
-- the transaction that replays it, so a spool replayed twice (a crash between commit and
-- removing the file) applies nothing twice. A rejected row is an operation that could not be
-- applied (the payment had moved on, a nonce claimed twice, ...): op keeps it for an operator.
CREATE TABLE payment_spool_log (
  op_id      UUID PRIMARY KEY,
  kind       TEXT NOT NULL,
  subject    TEXT NOT NULL,
  outcome    TEXT NOT NULL CHECK (outcome IN ('applied', 'rejected')),
  reason     TEXT,
  detail     TEXT,
  op         JSONB,
  spooled_at TIMESTAMPTZ NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_payment_spool_log_applied ON payment_spool_log(applied_at);
CREATE INDEX idx_payment_spool_log_rejected ON payment_spool_log(applied_at) WHERE outcome = 'rejected';
