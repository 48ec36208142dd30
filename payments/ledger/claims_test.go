package ledger

import (
	"context"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func newClaims(t *testing.T, rdb redis.UniversalClient, l *Ledger, prefix string) *Claims {
	t.Helper()
	c, err := NewClaims(rdb, l, ClaimsOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Two replicas (each its own Redis client, pgx pool and spool) and 50 concurrent claims of one
// credential: exactly one is granted, and Postgres records exactly that one.
func TestClaimExactlyOnceAcrossReplicas(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	rdbA, prefix := newRedis(t)
	rdbB := secondRedis(t)
	poolA, poolB := openPool(t, schema, ""), openPool(t, schema, "")
	claims := []*Claims{
		newClaims(t, rdbA, openLedger(t, poolA, ""), prefix),
		newClaims(t, rdbB, openLedger(t, poolB, ""), prefix),
	}
	for round := range 3 {
		key := "x402:8453:0xtoken:0xpayer:0x" + randomHex(32)
		expires := time.Now().Add(10 * time.Minute)
		var (
			wg                sync.WaitGroup
			mu                sync.Mutex
			won, used, others int
		)
		start := make(chan struct{})
		for g := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				err := claims[g%2].Claim(ctx, key, expires)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case errors.Is(err, ErrNonceUsed):
					used++
				default:
					others++
					t.Errorf("claim: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if won != 1 || used != 49 || others != 0 {
			t.Fatalf("round %d: %d granted, %d refused as used, %d other errors; want 1, 49, 0", round, won, used, others)
		}
		if n := countRows(t, poolA, `SELECT count(*) FROM payment_nonces WHERE key = $1`, key); n != 1 {
			t.Fatalf("round %d: %d nonce rows, want 1", round, n)
		}
	}
}

// Redis forgets a claim (flush, failover to a replica that never saw it): Postgres still
// refuses the credential, and the refusal puts the key back into Redis.
func TestClaimRefusedByPostgresWhenRedisForgot(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	rdb, prefix := newRedis(t)
	c := newClaims(t, rdb, openLedger(t, openPool(t, schema, ""), ""), prefix)
	ctx := context.Background()
	key := "x402:8453:flushed:" + randomHex(8)
	if err := c.Claim(ctx, key, time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if err := c.Claim(ctx, key, time.Now().Add(time.Hour)); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("second claim (Redis remembers) = %v, want ErrNonceUsed", err)
	}
	if n, err := rdb.Del(ctx, prefix+"nonce:"+key).Result(); err != nil || n != 1 {
		t.Fatalf("delete the Redis key: %d, %v", n, err)
	}
	err := c.Claim(ctx, key, time.Now().Add(time.Hour))
	if !errors.Is(err, ErrNonceUsed) || !strings.Contains(err.Error(), "Postgres") {
		t.Fatalf("claim after Redis forgot = %v, want ErrNonceUsed from Postgres", err)
	}
	if n, _ := rdb.Exists(ctx, prefix+"nonce:"+key).Result(); n != 1 {
		t.Fatalf("Redis key not restored by the refused claim")
	}
}

// Redis at a closed port: the claim fails fast with ErrUnavailable and records nothing.
func TestClaimRedisDown(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	dead := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{closedAddr(t)}, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = dead.Close() })
	c := newClaims(t, dead, openLedger(t, pool, ""), "ledgertest:"+randomHex(4)+":")
	begin := time.Now()
	err := c.Claim(context.Background(), "x402:down:"+randomHex(8), time.Now().Add(time.Hour))
	if !isUnavailable(err) {
		t.Fatalf("claim with Redis down = %v, want ErrUnavailable", err)
	}
	// A deadline, not a speed benchmark: a refused connection must not wait for anything.
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("claim with Redis down took %v", d)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM payment_nonces`); n != 0 {
		t.Fatalf("%d nonce rows after a refused claim", n)
	}
}

// Redis that accepts connections and never answers: the claim gives up at RedisTimeout.
func TestClaimRedisHangs(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range held {
			_ = c.Close()
		}
		mu.Unlock()
	})
	silent := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{ln.Addr().String()}, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = silent.Close() })
	c, err := NewClaims(silent, openLedger(t, openPool(t, schema, ""), ""), ClaimsOptions{RedisTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err = c.Claim(context.Background(), "x402:hang:"+randomHex(8), time.Now().Add(time.Hour))
	if !isUnavailable(err) {
		t.Fatalf("claim with a silent Redis = %v, want ErrUnavailable", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("claim with a silent Redis took %v, want about the 200ms RedisTimeout", d)
	}
}

// Postgres away: the claim stands on Redis's word, its row waits in the spool and reaches
// Postgres when it is back; meanwhile Redis alone refuses the credential's reuse.
func TestClaimPostgresDownIsSpooledAndReplayed(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	rdb, prefix := newRedis(t)
	px := newProxy(t, pgTarget(t))
	direct := openPool(t, schema, "")
	l := openLedger(t, openPool(t, schema, px.addr), "")
	c := newClaims(t, rdb, l, prefix)
	ctx := context.Background()

	if err := c.Claim(ctx, "x402:warm:"+randomHex(8), time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("claim with everything up: %v", err)
	}
	px.cut()
	key := "x402:outage:" + randomHex(8)
	if err := c.Claim(ctx, key, time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("claim with Postgres down = %v, want success on Redis's word", err)
	}
	if err := c.Claim(ctx, key, time.Now().Add(time.Hour)); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("reuse during the outage = %v, want ErrNonceUsed", err)
	}
	if s := l.Stats(); s.SpoolDepth != 1 || !s.Degraded {
		t.Fatalf("stats during the outage = %+v, want one spooled operation, degraded", s)
	}
	if n := countRows(t, direct, `SELECT count(*) FROM payment_nonces WHERE key = $1`, key); n != 0 {
		t.Fatalf("row reached Postgres through a cut proxy")
	}
	px.restore(t)
	waitFor(t, 10*time.Second, "the spooled claim to be replayed", func() bool {
		s := l.Stats()
		return s.SpoolDepth == 0 && s.Replayed == 1 && !s.Degraded
	})
	if n := countRows(t, direct, `SELECT count(*) FROM payment_nonces WHERE key = $1`, key); n != 1 {
		t.Fatalf("replayed nonce rows = %d, want 1", n)
	}
	if n := countRows(t, direct, `SELECT count(*) FROM payment_spool_log WHERE kind = 'nonce' AND subject = $1 AND outcome = 'applied'`, key); n != 1 {
		t.Fatalf("spool log rows = %d, want 1 applied", n)
	}
	// Redis forgets; Postgres, fed by the spool, still refuses.
	rdb.Del(ctx, prefix+"nonce:"+key)
	if err := c.Claim(ctx, key, time.Now().Add(time.Hour)); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("claim after replay and Redis flush = %v, want ErrNonceUsed", err)
	}
}

// The Redis key lives until the credential's expiry plus Grace (PXAT), capped by MaxLifetime,
// and the Postgres row is purged after the same moment.
func TestClaimExpiryAndPurge(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	rdb, prefix := newRedis(t)
	pool := openPool(t, schema, "")
	c := newClaims(t, rdb, openLedger(t, pool, ""), prefix)
	ctx := context.Background()
	now := time.Now()
	for _, tc := range []struct {
		name    string
		expires time.Time
		wantAt  time.Time // of the Redis key
	}{
		{"in ten minutes", now.Add(10 * time.Minute), now.Add(10*time.Minute + 24*time.Hour)},
		{"expired an hour ago, still within grace", now.Add(-time.Hour), now.Add(23 * time.Hour)},
		{"in a century: capped", now.AddDate(100, 0, 0), now.Add(90*24*time.Hour + 24*time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "x402:ttl:" + randomHex(8)
			if err := c.Claim(ctx, key, tc.expires); err != nil {
				t.Fatal(err)
			}
			at, err := rdb.Do(ctx, "pexpiretime", prefix+"nonce:"+key).Int64()
			if err != nil {
				t.Fatal(err)
			}
			if d := time.UnixMilli(at).Sub(tc.wantAt); d < -5*time.Second || d > 5*time.Second {
				t.Fatalf("Redis key expires at %v, want about %v", time.UnixMilli(at), tc.wantAt)
			}
		})
	}
	before := countRows(t, pool, `SELECT count(*) FROM payment_nonces`)
	// Two days on, the claim that expired an hour ago and the one in ten minutes are past grace.
	n, err := c.PurgeExpired(ctx, now.Add(48*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PurgeExpired = %d, %v; want 2", n, err)
	}
	if after := countRows(t, pool, `SELECT count(*) FROM payment_nonces`); after != before-2 {
		t.Fatalf("rows after purge = %d, want %d", after, before-2)
	}
}

func TestClaimRefusesBadInput(t *testing.T) {
	schema := newSchema(t)
	rdb, prefix := newRedis(t)
	c := newClaims(t, rdb, openLedger(t, openPool(t, schema, ""), ""), prefix)
	for _, tc := range []struct {
		name    string
		key     string
		expires time.Time
	}{
		{"empty key", "", time.Now().Add(time.Hour)},
		{"NUL in key", "x402:\x00", time.Now().Add(time.Hour)},
		{"invalid UTF-8", "x402:\xff", time.Now().Add(time.Hour)},
		{"oversized key", strings.Repeat("k", MaxKeyBytes+1), time.Now().Add(time.Hour)},
		{"no expiry", "x402:noexp", time.Time{}},
		{"expired beyond grace", "x402:old", time.Now().Add(-25 * time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.Claim(context.Background(), tc.key, tc.expires); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Claim = %v, want ErrInvalid", err)
			}
		})
	}
}

// A client that ignores context deadlines would let a hung Redis hold requests for seconds.
func TestNewClaimsRequiresContextDeadlines(t *testing.T) {
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	plain := redis.NewClient(&redis.Options{Addr: redisAddr()})
	defer plain.Close()
	if _, err := NewClaims(plain, l, ClaimsOptions{}); err == nil || !strings.Contains(err.Error(), "redis_context_timeout_disabled") {
		t.Fatalf("NewClaims with ContextTimeoutEnabled off = %v", err)
	}
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{redisAddr()}, ContextTimeoutEnabled: true})
	defer cluster.Close()
	if _, err := NewClaims(cluster, l, ClaimsOptions{}); err != nil {
		t.Fatalf("NewClaims with a cluster client: %v", err)
	}
}

// TestClaimHolding: the claim and the hold in one round trip give the answers Reserve and then
// Claim give: a hold that does not fit leaves the credential unclaimed (it can be sent again
// once funded), a used credential is refused, a fresh Redis without the script loaded works,
// and of 40 concurrent copies of one payment over two replicas exactly one is granted, holding
// its amount once.
func TestClaimHolding(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	rdb, prefix := newRedis(t)
	pool := openPool(t, schema, "")
	claims := newClaims(t, rdb, openLedger(t, pool, ""), prefix)
	book, err := NewReservations(rdb, prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	scope := "1337:token:" + randomHex(4)
	price := big.NewInt(10_000)
	expires := time.Now().Add(10 * time.Minute)
	hold := func(key string, balance int64) Hold {
		return Hold{Book: book, Scope: scope, ID: key, Amount: price, Balance: big.NewInt(balance), Expires: expires}
	}
	held := func() int64 {
		h, err := book.Held(ctx, scope)
		if err != nil {
			t.Fatal(err)
		}
		return h.Int64()
	}

	poor := "x402:poor:" + randomHex(8)
	if err := claims.ClaimHolding(ctx, poor, expires, hold(poor, 5_000)); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("a payment its payer cannot cover = %v, want ErrInsufficientFunds", err)
	}
	if h := held(); h != 0 {
		t.Fatalf("%d held after a refused hold", h)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM payment_nonces WHERE key = $1`, poor); n != 0 {
		t.Fatalf("a refused payment's nonce is recorded")
	}
	if err := claims.ClaimHolding(ctx, poor, expires, hold(poor, 50_000)); err != nil {
		t.Fatalf("the same payment once funded: %v", err)
	}
	if err := claims.ClaimHolding(ctx, poor, expires, hold(poor, 50_000)); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("the same payment again = %v, want ErrNonceUsed", err)
	}
	if err := claims.Claim(ctx, poor, expires); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("a plain claim of a held credential = %v, want ErrNonceUsed", err)
	}
	if h := held(); h != 10_000 {
		t.Fatalf("%d held, want the one payment's 10,000", h)
	}

	// A Redis that has not loaded the reserve script yet.
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := "x402:fresh:" + randomHex(8)
	if err := claims.ClaimHolding(ctx, fresh, expires, hold(fresh, 50_000)); err != nil {
		t.Fatalf("after SCRIPT FLUSH: %v", err)
	}
	if h := held(); h != 20_000 {
		t.Fatalf("%d held, want 20,000", h)
	}

	// Forty copies of one payment over two replicas.
	other := newClaims(t, secondRedis(t), openLedger(t, openPool(t, schema, ""), ""), prefix)
	otherBook, err := NewReservations(other.rdb, prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	key := "x402:copies:" + randomHex(8)
	var granted, used atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range 40 {
		wg.Go(func() {
			<-start
			c, h := claims, hold(key, 1_000_000)
			if g%2 == 1 {
				c, h.Book = other, otherBook
			}
			switch err := c.ClaimHolding(ctx, key, expires, h); {
			case err == nil:
				granted.Add(1)
			case errors.Is(err, ErrNonceUsed):
				used.Add(1)
			default:
				t.Errorf("copy %d: %v", g, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if granted.Load() != 1 || used.Load() != 39 {
		t.Fatalf("%d granted, %d refused as used; want 1 and 39", granted.Load(), used.Load())
	}
	if h := held(); h != 30_000 {
		t.Fatalf("%d held after 40 copies of one 10,000 payment, want 30,000", h)
	}
	if n := countRows(t, pool, `SELECT count(*) FROM payment_nonces WHERE key = $1`, key); n != 1 {
		t.Fatalf("%d nonce rows for one payment, want 1", n)
	}
}
