package mpp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
	"github.com/secureexec/secureexec/store"
)

// These tests run the rail on the production ledger: the live Postgres and Redis (the
// ledger's own tests' settings and skip switches, SECUREEXEC_SKIP_PG / SECUREEXEC_SKIP_REDIS).

func testDatabaseURL() string {
	if u := os.Getenv("SECUREEXEC_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func testRedisAddr() string {
	if a := os.Getenv("SECUREEXEC_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func adminExec(t *testing.T, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testDatabaseURL())
	if err != nil {
		t.Fatalf("Postgres unreachable (SECUREEXEC_SKIP_PG=1 skips): %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func schemaPool(t *testing.T, schema string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testDatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// replica is one gateway replica's ledger: its own pool, spool, Redis client and claims.
type replica struct {
	book   *ledger.Ledger
	claims *ledger.Claims
}

func newReplicas(t *testing.T, n int) []replica {
	t.Helper()
	if os.Getenv("SECUREEXEC_SKIP_PG") == "1" || os.Getenv("SECUREEXEC_SKIP_REDIS") == "1" {
		t.Skip("SECUREEXEC_SKIP_PG or SECUREEXEC_SKIP_REDIS is set")
	}
	schema := "mpp_test_" + randomHex(6)
	adminExec(t, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { adminExec(t, "DROP SCHEMA "+schema+" CASCADE") })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := store.Migrate(ctx, schemaPool(t, schema)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	prefix := "mpptest:" + randomHex(6) + ":"
	var out []replica
	for i := range n {
		rdb := redis.NewClient(&redis.Options{Addr: testRedisAddr(), DialTimeout: 2 * time.Second, ContextTimeoutEnabled: true})
		if err := rdb.Ping(ctx).Err(); err != nil {
			_ = rdb.Close()
			t.Fatalf("Redis unreachable (SECUREEXEC_SKIP_REDIS=1 skips): %v", err)
		}
		l, err := ledger.Open(schemaPool(t, schema), ledger.Options{SpoolDir: filepath.Join(t.TempDir(), "spool", string(rune('a'+i))), Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		claims, err := ledger.NewClaims(rdb, l, ledger.ClaimsOptions{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = l.Close()
			dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer dcancel()
			iter := rdb.Scan(dctx, 0, prefix+"*", 500).Iterator()
			for iter.Next(dctx) {
				rdb.Del(dctx, iter.Val())
			}
			_ = rdb.Close()
		})
		out = append(out, replica{book: l, claims: claims})
	}
	return out
}

// TestRailOnPostgresAndRedis: two replicas receive the same credential at once; Stripe is
// asked once, one call is paid, and the payment is settled in Postgres. The PaymentIntent
// cannot then pay again on either replica in the seed form.
func TestRailOnPostgresAndRedis(t *testing.T) {
	reps := newReplicas(t, 2)
	f := newFakeStripe(t)
	st := newTestStripe(t, f.URL(), nil)
	var rails []*testRail
	for _, rep := range reps {
		c := &clock{now: time.Now().UTC().Truncate(time.Second)}
		r, err := NewRail(Config{Realm: "api.example.com", Secret: []byte(testSecret), NetworkID: "profile_test", Now: c.Now, Logger: testLogger(t)},
			st, rep.claims, rep.book)
		if err != nil {
			t.Fatal(err)
		}
		rails = append(rails, &testRail{Rail: r, fake: f, clock: c})
	}
	c := rails[0].challenge(t, dryRun)
	auth := credential(t, c, testSPT)

	type result struct {
		rail int
		a    *payments.Authorization
		err  error
	}
	results := make(chan result, 10)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := rails[i%2].Verify(context.Background(), requestWith(auth), dryRun)
			results <- result{i % 2, a, err}
		}()
	}
	wg.Wait()
	close(results)
	var won []result
	for r := range results {
		switch {
		case r.err == nil:
			won = append(won, r)
		case Reason(r.err) != ReasonInvalidChallenge:
			t.Fatalf("unexpected %v", r.err)
		}
	}
	if creates, _, _, _ := f.counts(); len(won) != 1 || creates != 1 {
		t.Fatalf("%d calls paid, %d creates", len(won), creates)
	}
	w := won[0]
	if _, err := rails[w.rail].Settle(context.Background(), w.a); err != nil {
		t.Fatal(err)
	}
	// Any replica reads the payment from Postgres: GET /payments/{id}.
	id := w.a.State.(*pendingPayment).ID
	p, err := reps[1-w.rail].book.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != ledger.StatusSettled || p.Rail != "mpp" || p.Network != "stripe" || p.Asset != "usd" || p.TxHash != "pi_fake1" || p.NonceKey != "mpp:challenge:"+c.ID {
		t.Fatalf("stored %+v", p)
	}
	f.setPI(boundPI("pi_fake1", 50, "usd", "succeeded", time.Now()))
	for _, r := range rails {
		if _, err := r.Verify(context.Background(), requestWith("MPP pi_fake1"), dryRun); Reason(err) != ReasonVerificationFailed {
			t.Fatalf("PaymentIntent paid twice: %v", err)
		}
	}
}
