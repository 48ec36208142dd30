-- What happened to payments after their calls, as the payment network reported it, and the
-- payers it made suspect (payments/ledger MarkPayment, FlagPayer). Both are written by the
-- Stripe webhook (POST /webhooks/stripe) and keyed by the network's event id, so that an event
-- delivered again (Stripe retries for days) records nothing twice. Rows are never updated.

-- payment_marks: a refund or dispute of a payment. A payment keeps its status (the state
-- machine of 002 ends at settled): the mark says that money later went back. payment_id has no
-- foreign key on purpose: a payment may still be in a replica's spool when its mark arrives.
CREATE TABLE payment_marks (
  event_id    TEXT PRIMARY KEY,
  payment_id  UUID NOT NULL,
  kind        TEXT NOT NULL CHECK (kind IN ('refunded', 'disputed')),
  reference   TEXT NOT NULL DEFAULT '',
  dispute     TEXT NOT NULL DEFAULT '',
  amount      NUMERIC(78,0) NOT NULL CHECK (amount >= 0),
  currency    TEXT NOT NULL DEFAULT '',
  reason      TEXT NOT NULL DEFAULT '',
  occurred_at TIMESTAMPTZ NOT NULL,
  recorded_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_payment_marks_payment ON payment_marks(payment_id, occurred_at);

-- agent_flags: a payer whose paid call's money was taken back outside the gateway (a refund
-- it did not make, a dispute). The IAM stage denies the calls of a flagged payer.
CREATE TABLE agent_flags (
  event_id   TEXT PRIMARY KEY,
  payer      TEXT NOT NULL CHECK (payer <> ''),
  payment_id UUID,
  job_id     UUID,
  reason     TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_agent_flags_payer ON agent_flags(payer, created_at);
