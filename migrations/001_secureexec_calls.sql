-- The seed README's audit table, column for column, plus the two columns the gateway needs:
-- job_id makes every write idempotent (ON CONFLICT (job_id) DO NOTHING) and is what
-- GET /exec/jobs/{id} looks up; record is the full proof record whose canonical form
-- proof_hash commits to.
CREATE TABLE secureexec_calls (
  id SERIAL PRIMARY KEY,
  timestamp TIMESTAMPTZ DEFAULT NOW(),
  caller_agent_id TEXT,
  tool_name TEXT,
  dry_run BOOLEAN,
  status TEXT,
  iam_approved BOOLEAN,
  proof_hash TEXT,
  latency_ms INTEGER,
  payment_protocol TEXT,
  schema_version TEXT DEFAULT 'v1',
  job_id UUID NOT NULL UNIQUE,
  record JSONB NOT NULL
);

CREATE INDEX idx_secureexec_ts    ON secureexec_calls(timestamp);
CREATE INDEX idx_secureexec_agent ON secureexec_calls(caller_agent_id);
CREATE INDEX idx_secureexec_tool  ON secureexec_calls(tool_name);
