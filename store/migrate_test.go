package store

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/secureexec/secureexec/migrations"
)

func TestMigrateTwiceIsNoOp(t *testing.T) {
	schema := testSchema(t)
	pool := schemaPool(t, schema, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	first, err := Migrate(ctx, pool)
	if err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	if len(first) != len(all) || first[0] != "001_secureexec_calls" {
		t.Fatalf("first migrate applied %v, want all %d migrations starting with 001_secureexec_calls", first, len(all))
	}
	second, err := Migrate(ctx, pool)
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(second) != 0 {
		t.Fatalf("second migrate applied %v, want nothing", second)
	}
	var recorded int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != len(all) {
		t.Fatalf("schema_migrations has %d rows, want %d", recorded, len(all))
	}

	// The seed's table, column for column, plus job_id and record.
	want := map[string]string{
		"id": "integer NO", "timestamp": "timestamp with time zone YES", "caller_agent_id": "text YES",
		"tool_name": "text YES", "dry_run": "boolean YES", "status": "text YES", "iam_approved": "boolean YES",
		"proof_hash": "text YES", "latency_ms": "integer YES", "payment_protocol": "text YES",
		"schema_version": "text YES", "job_id": "uuid NO", "record": "jsonb NO",
	}
	rows, err := pool.Query(ctx, `SELECT column_name, data_type || ' ' || is_nullable FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = 'secureexec_calls'`, schema)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			t.Fatal(err)
		}
		got[name] = typ
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("columns = %v, want %v", got, want)
	}
	for name, typ := range want {
		if got[name] != typ {
			t.Errorf("column %s = %q, want %q", name, got[name], typ)
		}
	}
	for _, idx := range []string{"idx_secureexec_ts", "idx_secureexec_agent", "idx_secureexec_tool", "secureexec_calls_job_id_key"} {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = $2`, schema, idx).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("index %s missing", idx)
		}
	}
}

func TestMigrateConcurrentFromTwoPools(t *testing.T) {
	schema := testSchema(t)
	pools := []*pgxpool.Pool{schemaPool(t, schema, ""), schemaPool(t, schema, "")}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const runners = 6 // three per pool, all released at once
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		applied []string
		errs    []error
	)
	for i := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got, err := Migrate(ctx, pools[i%2])
			mu.Lock()
			defer mu.Unlock()
			applied = append(applied, got...)
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("concurrent migrate errors: %v", errs)
	}
	all, _ := migrations.All()
	if len(applied) != len(all) {
		t.Fatalf("migrations applied %v across %d runners, want each of %d exactly once", applied, runners, len(all))
	}
}

func TestMigrateWith(t *testing.T) {
	base, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		then    []migrations.Migration
		wantErr string
		check   string // a query that must return true afterwards
	}{
		{
			name:  "a new migration file is applied once",
			then:  []migrations.Migration{{Version: 900, Name: "900_payments", SQL: `CREATE TABLE fixture_payments (id BIGSERIAL PRIMARY KEY, nonce TEXT UNIQUE NOT NULL);`}},
			check: `SELECT to_regclass('fixture_payments') IS NOT NULL AND EXISTS (SELECT 1 FROM schema_migrations WHERE version = '900_payments')`,
		},
		{
			name: "a failing migration rolls back whole and is not recorded",
			then: []migrations.Migration{{Version: 901, Name: "901_broken", SQL: `CREATE TABLE half_done (id INT);
				SELECT 1/0;`}},
			wantErr: "migration_failed",
			check:   `SELECT to_regclass('half_done') IS NULL AND NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = '901_broken')`,
		},
		{
			name:    "an edited released migration is refused",
			then:    []migrations.Migration{{Version: base[0].Version, Name: base[0].Name, SQL: base[0].SQL + "\n-- edited"}},
			wantErr: "migration_checksum_mismatch",
			check:   `SELECT true`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			schema := testSchema(t)
			pool := schemaPool(t, schema, "")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := Migrate(ctx, pool); err != nil {
				t.Fatal(err)
			}
			applied, err := MigrateWith(ctx, pool, tc.then)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("migrate: %v", err)
				}
				if len(applied) != len(tc.then) {
					t.Fatalf("applied %v, want %d", applied, len(tc.then))
				}
				again, err := MigrateWith(ctx, pool, append(base, tc.then...))
				if err != nil || len(again) != 0 {
					t.Fatalf("re-run applied %v, err %v; want nothing", again, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %s", err, tc.wantErr)
			}
			var ok bool
			if err := pool.QueryRow(ctx, tc.check).Scan(&ok); err != nil || !ok {
				t.Fatalf("check %q = %v, %v", tc.check, ok, err)
			}
		})
	}
}
