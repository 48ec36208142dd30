package main

import (
	"context"
	"testing"
	"time"
)

// Stored responses of payment identifiers (up to a MiB each, one per paid call that names an
// identifier, which the Go SDK always does) must not be kept forever: a running gateway
// purges those older than idempotencyKeep, and keeps the recent ones.
func TestPaymentIdentifiersArePurged(t *testing.T) {
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
		if old == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a payment identifier stored 60 days ago is still kept: nothing purges payment_idempotency")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
