package main

import (
	"context"
	"testing"
	"time"
)

// Stored responses of payment identifiers (up to a MiB each, one per paid call that names an
// identifier, which the Go SDK always does), nonce claims (a row per paid call) and the
// records of operations replayed from a spool must not be kept forever: a running gateway
// purges the old ones, and keeps the recent ones (and every rejected spool operation).
func TestPaymentIdentifiersClaimsAndSpoolLogArePurged(t *testing.T) {
	dbURL, conn := freshSchema(t)
	env := func() map[string]string {
		return map[string]string{"DATABASE_URL": dbURL, "REDIS_URL": e2eRedisURL, "SECUREEXEC_DATA_DIR": t.TempDir()}
	}
	_, stop := startGateway(t, env()) // migrates
	stop()

	ctx := context.Background()
	if _, err := conn.Exec(ctx, `INSERT INTO payment_idempotency (id, fingerprint, state, status_code, headers, body, created_at, updated_at)
		VALUES ('x402:/exec/tool:pay_old0000000000000000', '0x01', 'done', 200, '{}', '\x7b7d', now() - interval '60 days', now() - interval '60 days'),
		       ('x402:/exec/tool:pay_new0000000000000000', '0x02', 'done', 200, '{}', '\x7b7d', now(), now())`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO payment_nonces (key, claim_id, claimed_at, expires_at)
		VALUES ('x402:old', gen_random_uuid(), now() - interval '60 days', now() - interval '59 days'),
		       ('x402:new', gen_random_uuid(), now(), now() + interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO payment_spool_log (op_id, kind, subject, outcome, reason, spooled_at, applied_at)
		VALUES (gen_random_uuid(), 'create', 'old-applied', 'applied', NULL, now() - interval '91 days', now() - interval '90 days'),
		       (gen_random_uuid(), 'transition', 'old-rejected', 'rejected', 'transition_not_applicable', now() - interval '91 days', now() - interval '90 days'),
		       (gen_random_uuid(), 'create', 'recent-applied', 'applied', NULL, now() - interval '2 days', now() - interval '1 day')`); err != nil {
		t.Fatal(err)
	}
	startGateway(t, env())

	deadline := time.Now().Add(15 * time.Second)
	for {
		var old, recent int
		if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE id LIKE '%pay_old%'), count(*) FILTER (WHERE id LIKE '%pay_new%') FROM payment_idempotency`).
			Scan(&old, &recent); err != nil {
			t.Fatal(err)
		}
		if recent != 1 {
			t.Fatalf("the recent entry was purged (%d left)", recent)
		}
		var oldClaims, newClaims int
		if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE key = 'x402:old'), count(*) FILTER (WHERE key = 'x402:new') FROM payment_nonces`).
			Scan(&oldClaims, &newClaims); err != nil {
			t.Fatal(err)
		}
		if newClaims != 1 {
			t.Fatal("a live nonce claim was purged")
		}
		var oldOps, rejectedOps, recentOps int
		if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE subject = 'old-applied'), count(*) FILTER (WHERE subject = 'old-rejected'),
			count(*) FILTER (WHERE subject = 'recent-applied') FROM payment_spool_log`).Scan(&oldOps, &rejectedOps, &recentOps); err != nil {
			t.Fatal(err)
		}
		if rejectedOps != 1 || recentOps != 1 {
			t.Fatalf("purged spool operations that must stay: %d rejected, %d recently applied left", rejectedOps, recentOps)
		}
		if old == 0 && oldClaims == 0 && oldOps == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still kept: %d payment identifiers stored 60 days ago, %d nonce claims expired 59 days ago, %d spool operations applied 90 days ago", old, oldClaims, oldOps)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
