package main

import (
	"context"
	"testing"
	"time"
)

// payment_spool_log gains a row per operation a replica replayed from its spool: a running
// gateway purges the applied ones once no spool can replay them again, and keeps the recent
// ones and every rejected one.
func TestReplayedSpoolOperationsArePurged(t *testing.T) {
	dbURL, conn := freshSchema(t)
	env := func() map[string]string {
		return map[string]string{"DATABASE_URL": dbURL, "REDIS_URL": e2eRedisURL, "SECUREEXEC_DATA_DIR": t.TempDir()}
	}
	_, stop := startGateway(t, env()) // migrates
	stop()

	ctx := context.Background()
	if _, err := conn.Exec(ctx, `INSERT INTO payment_spool_log (op_id, kind, subject, outcome, reason, spooled_at, applied_at)
		VALUES (gen_random_uuid(), 'create', 'old-applied', 'applied', NULL, now() - interval '91 days', now() - interval '90 days'),
		       (gen_random_uuid(), 'transition', 'old-rejected', 'rejected', 'transition_not_applicable', now() - interval '91 days', now() - interval '90 days'),
		       (gen_random_uuid(), 'create', 'recent-applied', 'applied', NULL, now() - interval '2 days', now() - interval '1 day')`); err != nil {
		t.Fatal(err)
	}
	startGateway(t, env())

	deadline := time.Now().Add(15 * time.Second)
	for {
		var old, rejected, recent int
		if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE subject = 'old-applied'), count(*) FILTER (WHERE subject = 'old-rejected'),
			count(*) FILTER (WHERE subject = 'recent-applied') FROM payment_spool_log`).Scan(&old, &rejected, &recent); err != nil {
			t.Fatal(err)
		}
		if rejected != 1 || recent != 1 {
			t.Fatalf("purged what must stay: %d rejected, %d recently applied left", rejected, recent)
		}
		if old == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an operation applied 90 days ago is still kept")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
