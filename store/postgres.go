package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the production Backend: the secureexec_calls table of migrations/, written with
// one COPY straight into the table. A batch that repeats a stored job id (a replay after a
// write whose outcome was unknown) is written again through a per-connection staging table
// and INSERT ... ON CONFLICT (job_id) DO NOTHING, so replays never store a record twice.
type Postgres struct {
	pool     *pgxpool.Pool
	ownsPool bool
}

var _ Backend = (*Postgres)(nil)

// NewPostgres wraps a pool the caller owns: Close leaves it open. Run Migrate first.
func NewPostgres(pool *pgxpool.Pool) *Postgres {
	return &Postgres{pool: pool}
}

// DefaultMaxConns is the pool size unless the URL sets pool_max_conns.
const DefaultMaxConns = 32

// OpenPostgres connects to databaseURL, checks the connection within ctx, and owns the pool it
// made: Close closes it.
func OpenPostgres(ctx context.Context, databaseURL string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("store: invalid_database_url: %w", err)
	}
	if !strings.Contains(databaseURL, "pool_max_conns") {
		// pgxpool's default (the number of CPUs) starves a gateway whose every paid call
		// makes a few short writes while the audit batchers hold connections of their own.
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: postgres_unreachable: %w", err)
	}
	return &Postgres{pool: pool, ownsPool: true}, nil
}

// Pool is the pool behind the backend, for Migrate and for readers of the audit table.
func (p *Postgres) Pool() *pgxpool.Pool { return p.pool }

// Close closes the pool if OpenPostgres made it.
func (p *Postgres) Close() error {
	if p.ownsPool {
		p.pool.Close()
	}
	return nil
}

const (
	// uniqueViolation is SQLSTATE 23505: here, a job id that is already stored.
	uniqueViolation = "23505"

	stageTable = "secureexec_calls_stage"
	// stageKey marks, in a connection's CustomData, that its staging table exists, which saves
	// a round trip per batch.
	stageKey = "secureexec/store.stage"

	createStage = `CREATE TEMP TABLE IF NOT EXISTS ` + stageTable + ` (
		job_id UUID, "timestamp" TIMESTAMPTZ, caller_agent_id TEXT, tool_name TEXT, dry_run BOOLEAN,
		status TEXT, iam_approved BOOLEAN, proof_hash TEXT, latency_ms INTEGER,
		payment_protocol TEXT, schema_version TEXT, record JSONB
	) ON COMMIT DELETE ROWS`

	// Duplicates inside one batch are fine: DO NOTHING skips a row that conflicts with one the
	// same statement inserted.
	insertFromStage = `INSERT INTO secureexec_calls (job_id, "timestamp", caller_agent_id, tool_name,
		dry_run, status, iam_approved, proof_hash, latency_ms, payment_protocol, schema_version, record)
	SELECT job_id, COALESCE("timestamp", NOW()), caller_agent_id, tool_name,
		dry_run, status, iam_approved, proof_hash, latency_ms, payment_protocol, schema_version, record
	FROM ` + stageTable + `
	ON CONFLICT (job_id) DO NOTHING`

	selectEntry = `SELECT job_id::text, "timestamp", COALESCE(caller_agent_id, ''), COALESCE(tool_name, ''),
		COALESCE(dry_run, false), COALESCE(status, ''), COALESCE(iam_approved, false),
		COALESCE(proof_hash, ''), COALESCE(latency_ms, 0), COALESCE(payment_protocol, ''),
		COALESCE(schema_version, ''), record
	FROM secureexec_calls WHERE job_id = $1`
)

var stageColumns = []string{"job_id", "timestamp", "caller_agent_id", "tool_name", "dry_run", "status",
	"iam_approved", "proof_hash", "latency_ms", "payment_protocol", "schema_version", "record"}

// stageRow is one validated entry, ready for COPY.
type stageRow struct {
	index  int
	jobID  string
	values []any
}

// WriteBatch stores entries, skipping job ids already stored. Entries that Validate refuses,
// and any single entry Postgres refuses for its content (a data or constraint error), are left
// out and reported in a *RejectError; everything else is written. Any other error means the
// batch may be partly written and should be retried whole, which is safe.
func (p *Postgres) WriteBatch(ctx context.Context, entries []Entry) error {
	rows := make([]stageRow, 0, len(entries))
	var rejected []Rejection
	for i, e := range entries {
		if err := Validate(e); err != nil {
			rejected = append(rejected, rejection(i, e.JobID, err))
			continue
		}
		id, _ := uuid.Parse(e.JobID) // Validate parsed it
		ts := e.Timestamp
		if ts.IsZero() {
			ts = time.Now() // what the column's DEFAULT NOW() would have said
		}
		sv := e.SchemaVersion
		if sv == "" {
			sv = DefaultSchemaVersion
		}
		rows = append(rows, stageRow{index: i, jobID: e.JobID, values: []any{
			pgtype.UUID{Bytes: id, Valid: true}, ts, e.CallerAgentID, e.ToolName, e.DryRun, e.Status,
			e.IAMApproved, e.ProofHash, int32(e.LatencyMs), e.PaymentProtocol, sv, e.Record,
		}})
	}
	if len(rows) > 0 {
		if err := p.insertSplitting(ctx, rows, &rejected); err != nil {
			return err
		}
	}
	if len(rejected) > 0 {
		sort.Slice(rejected, func(i, j int) bool { return rejected[i].Index < rejected[j].Index })
		return &RejectError{Rejected: rejected}
	}
	return nil
}

// insertSplitting inserts rows; when Postgres refuses the batch for the content of some row,
// it bisects until the refused rows are isolated, so they cost O(log n) extra round trips each
// and never block the rows around them.
func (p *Postgres) insertSplitting(ctx context.Context, rows []stageRow, rejected *[]Rejection) error {
	err := p.insert(ctx, rows)
	if err == nil {
		return nil
	}
	pgErr, refused := refusedByDatabase(err)
	if !refused {
		return err
	}
	if len(rows) == 1 {
		*rejected = append(*rejected, Rejection{
			Index: rows[0].index, JobID: rows[0].jobID, Reason: ReasonRefusedByDatabase,
			Detail: pgErr.Code + ": " + pgErr.Message,
		})
		return nil
	}
	mid := len(rows) / 2
	if err := p.insertSplitting(ctx, rows[:mid], rejected); err != nil {
		return err
	}
	return p.insertSplitting(ctx, rows[mid:], rejected)
}

// refusedByDatabase reports whether err is Postgres refusing the data itself (SQLSTATE classes
// 22 data exception, 23 integrity violation, 54 program limit such as an oversized index row),
// which no retry can fix, as opposed to the database being unreachable or busy.
func refusedByDatabase(err error) (*pgconn.PgError, bool) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 {
		return nil, false
	}
	switch pgErr.Code[:2] {
	case "22", "23", "54":
		return pgErr, true
	}
	return nil, false
}

// insert writes rows with one COPY into the table: the common case, a batch of new records,
// costs one round trip and no second pass over the rows. A batch that repeats a stored job id
// fails as a whole with a unique violation and is written again through insertDedup.
func (p *Postgres) insert(ctx context.Context, rows []stageRow) error {
	_, err := p.pool.CopyFrom(ctx, pgx.Identifier{"secureexec_calls"}, stageColumns,
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return rows[i].values, nil }))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
		return p.insertDedup(ctx, rows)
	}
	if err != nil {
		return fmt.Errorf("store: postgres copy: %w", err)
	}
	return nil
}

// insertDedup writes rows skipping job ids already stored (and repeated within rows): COPY into
// the connection's staging table, then INSERT ... ON CONFLICT DO NOTHING, in one transaction.
func (p *Postgres) insertDedup(ctx context.Context, rows []stageRow) (err error) {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("store: postgres acquire: %w", err)
	}
	defer conn.Release()
	custom := conn.Conn().PgConn().CustomData()
	defer func() {
		if err != nil {
			// The staging table may be gone with a rolled-back or reset session: recreate it
			// (IF NOT EXISTS) next time rather than trust the mark.
			delete(custom, stageKey)
		}
	}()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store: postgres begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }() // a no-op after Commit
	if _, ok := custom[stageKey]; !ok {
		if _, err := tx.Exec(ctx, createStage); err != nil {
			return fmt.Errorf("store: postgres create staging table: %w", err)
		}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{stageTable}, stageColumns,
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return rows[i].values, nil })); err != nil {
		return fmt.Errorf("store: postgres copy: %w", err)
	}
	if _, err := tx.Exec(ctx, insertFromStage); err != nil {
		return fmt.Errorf("store: postgres insert: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: postgres commit: %w", err)
	}
	custom[stageKey] = true
	return nil
}

// Get reads one entry back; the job id comes back in canonical lower-case form and the record
// as Postgres' jsonb renders it (equal as JSON, not byte for byte).
func (p *Postgres) Get(ctx context.Context, jobID string) (Entry, error) {
	id, err := uuid.Parse(jobID)
	if err != nil {
		return Entry{}, fmt.Errorf("store: get %q: %w", jobID, ErrNotFound)
	}
	var (
		e       Entry
		ts      pgtype.Timestamptz
		latency int32
		record  []byte
	)
	err = p.pool.QueryRow(ctx, selectEntry, pgtype.UUID{Bytes: id, Valid: true}).Scan(
		&e.JobID, &ts, &e.CallerAgentID, &e.ToolName, &e.DryRun, &e.Status, &e.IAMApproved,
		&e.ProofHash, &latency, &e.PaymentProtocol, &e.SchemaVersion, &record)
	if errors.Is(err, pgx.ErrNoRows) {
		return Entry{}, fmt.Errorf("store: get %q: %w", jobID, ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("store: postgres get %q: %w", jobID, err)
	}
	if ts.Valid {
		e.Timestamp = ts.Time.UTC()
	}
	e.LatencyMs = int(latency)
	e.Record = json.RawMessage(record)
	return e, nil
}

// rejection turns a Validate error into a Rejection at batch position i.
func rejection(i int, jobID string, err error) Rejection {
	var ie *InvalidEntryError
	if errors.As(err, &ie) {
		return Rejection{Index: i, JobID: jobID, Reason: ie.Reason, Detail: ie.Detail}
	}
	return Rejection{Index: i, JobID: jobID, Reason: ReasonInvalidRecordJSON, Detail: err.Error()}
}

// normalizeTime gives both backends the same precision: Postgres keeps microseconds.
func normalizeTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}
