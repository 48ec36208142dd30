package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/secureexec/secureexec/migrations"
)

// migrationLockKey is the first half of the advisory lock that serialises migration runs; the
// second half is the current schema's hash, so runs against different schemas of one
// database (tests, tenants) do not wait for each other.
const migrationLockKey = 0x5EC0E7

// Migrate applies every embedded migration that the database has not seen yet and returns the
// names it applied, in order. It is safe to run from several processes at once: each migration
// runs in its own transaction holding a Postgres advisory lock, and re-checks
// schema_migrations under that lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	all, err := migrations.All()
	if err != nil {
		return nil, err
	}
	return MigrateWith(ctx, pool, all)
}

// MigrateWith is Migrate over an explicit list (in application order). A migration already
// recorded with a different checksum is an error: released migration files never change.
func MigrateWith(ctx context.Context, pool *pgxpool.Pool, list []migrations.Migration) ([]string, error) {
	var applied []string
	for _, m := range list {
		did, err := applyOne(ctx, pool, m)
		if err != nil {
			return applied, err
		}
		if did {
			applied = append(applied, m.Name)
		}
	}
	return applied, nil
}

func applyOne(ctx context.Context, pool *pgxpool.Pool, m migrations.Migration) (applied bool, err error) {
	sum := sha256.Sum256([]byte(m.SQL))
	checksum := hex.EncodeToString(sum[:])
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(COALESCE(current_schema(), '')))`, migrationLockKey); err != nil {
			return fmt.Errorf("migration_lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    TEXT PRIMARY KEY,
			checksum   TEXT NOT NULL,
			applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
		)`); err != nil {
			return fmt.Errorf("migration_table: %w", err)
		}
		var have string
		switch err := tx.QueryRow(ctx, `SELECT checksum FROM schema_migrations WHERE version = $1`, m.Name).Scan(&have); {
		case err == nil:
			if have != checksum {
				return fmt.Errorf("migration_checksum_mismatch: %s was applied with checksum %s, the file now has %s", m.Name, have, checksum)
			}
			return nil
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("migration_status: %w", err)
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("migration_failed: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)`, m.Name, checksum); err != nil {
			return fmt.Errorf("migration_record: %w", err)
		}
		applied = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: migrate %s: %w", m.Name, err)
	}
	return applied, nil
}
