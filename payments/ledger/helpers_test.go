package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/store"
)

// The tests run against the live Postgres and Redis, and fail when either is missing unless
// told to skip (SECUREEXEC_SKIP_PG=1, SECUREEXEC_SKIP_REDIS=1).

func databaseURL() string {
	if u := os.Getenv("SECUREEXEC_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func redisAddr() string {
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

// leakCheck must be the first cleanup a test registers, so that it runs last, after the
// ledgers, pools, clients and proxies are closed.
func leakCheck(t *testing.T) {
	t.Helper()
	opts := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opts) })
}

// adminExec runs one statement on a connection of its own (not bound to any test schema).
func adminExec(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL())
	if err != nil {
		t.Fatalf("Postgres unreachable at %s (SECUREEXEC_SKIP_PG=1 skips): %v", databaseURL(), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// newSchema makes a schema for this test alone, migrated, and drops it at cleanup.
func newSchema(t *testing.T) string {
	t.Helper()
	if os.Getenv("SECUREEXEC_SKIP_PG") == "1" {
		t.Skip("SECUREEXEC_SKIP_PG=1")
	}
	schema := "ledger_test_" + randomHex(6)
	adminExec(t, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { adminExec(t, "DROP SCHEMA "+schema+" CASCADE") })
	pool := openPool(t, schema, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := store.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	pool.Close()
	return schema
}

// openPool opens a pool whose sessions live in schema, through addr (host:port) when given:
// each pool is one gateway replica's.
func openPool(t testing.TB, schema, addr string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(databaseURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.MaxConns = 8
	if addr != "" {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = host, uint16(p), nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// newRedis returns a client of the live Redis and a key prefix of this test's own; the keys
// under it are deleted at cleanup.
func newRedis(t *testing.T) (redis.UniversalClient, string) {
	t.Helper()
	if os.Getenv("SECUREEXEC_SKIP_REDIS") == "1" {
		t.Skip("SECUREEXEC_SKIP_REDIS=1")
	}
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{redisAddr()}, DialTimeout: 2 * time.Second, ContextTimeoutEnabled: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		t.Fatalf("Redis unreachable at %s (SECUREEXEC_SKIP_REDIS=1 skips): %v", redisAddr(), err)
	}
	prefix := "ledgertest:" + randomHex(6) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		_ = rdb.Close()
	})
	return rdb, prefix
}

// secondRedis is another client of the same Redis: another replica's.
func secondRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{redisAddr()}, DialTimeout: 2 * time.Second, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openLedger opens a ledger on pool with a spool in dir ("" for a fresh one) and quick
// retries, closed at cleanup.
func openLedger(t *testing.T, pool *pgxpool.Pool, dir string, tweak ...func(*Options)) *Ledger {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	opts := Options{SpoolDir: dir, DBTimeout: 2 * time.Second, RetryMin: 10 * time.Millisecond,
		RetryMax: 50 * time.Millisecond, LeaseCheck: 50 * time.Millisecond, Logger: testLogger(t)}
	for _, f := range tweak {
		f(&opts)
	}
	l, err := Open(pool, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func bigPow2(n uint) *big.Int { return new(big.Int).Lsh(big.NewInt(1), n) }

// newPayment is a realistic x402 payment with a fresh id and nonce key.
func newPayment(amount *big.Int) Payment {
	id := uuid.New()
	nonce := "0x" + randomHex(32)
	payload := fmt.Sprintf(`{"x402Version":2,"scheme":"exact","network":"eip155:8453","payload":{"signature":"0x%s",`+
		`"authorization":{"from":"0x857b06519E91e3A54538791bDbb0E22373e36b66","to":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C",`+
		`"value":"%s","validAfter":"0","validBefore":"1893456000","nonce":"%s"}},"note":"héllo <&> ü"}`, randomHex(65), amount, nonce)
	return Payment{
		ID: id, Rail: "x402", Network: "eip155:8453", Asset: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
		Payer: "0x857b06519E91e3A54538791bDbb0E22373e36b66", PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		Amount: amount, NonceKey: "x402:8453:" + nonce, Payload: []byte(payload),
	}
}

func mustCreate(t testing.TB, l *Ledger, p Payment) Payment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Create(ctx, p); err != nil {
		t.Fatalf("Create %s: %v", p.ID, err)
	}
	got, err := l.Get(ctx, p.ID)
	if err != nil {
		t.Fatalf("Get %s: %v", p.ID, err)
	}
	return got
}

func rawTx(label string) ([]byte, string) {
	raw := []byte("signed-tx:" + label + ":" + randomHex(40))
	return raw, "0x" + randomHex(32)
}

// patchFor is a patch that satisfies what a move to `to` needs.
func patchFor(to Status) Patch {
	switch to {
	case StatusSubmitted:
		raw, hash := rawTx("sync")
		return Patch{RawTx: raw, TxHash: hash, Attempt: true}
	case StatusFailed:
		return Patch{ErrorReason: "invalid_exact_evm_transaction_failed"}
	case StatusNotCharged:
		return Patch{ErrorReason: "tool_failed"}
	}
	return Patch{}
}

// pathTo lists the moves that bring a new payment to status s.
func pathTo(s Status) []Status {
	switch s {
	case StatusNotCharged, StatusQueued, StatusSubmitted, StatusSettling:
		return []Status{s}
	case StatusPending, StatusSettled, StatusFailed:
		return []Status{StatusSubmitted, s}
	}
	return nil
}

// driveTo creates a payment and moves it to s along legal edges.
func driveTo(t testing.TB, l *Ledger, s Status) Payment {
	t.Helper()
	p := mustCreate(t, l, newPayment(big.NewInt(10_000)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, next := range pathTo(s) {
		var err error
		if p, err = l.Transition(ctx, p.ID, []Status{p.Status}, next, patchFor(next)); err != nil {
			t.Fatalf("drive %s to %s: %v", p.ID, next, err)
		}
	}
	return p
}

func isUnavailable(err error) bool { return errors.Is(err, payments.ErrUnavailable) }

// loseConnection makes l notice that Postgres is gone: the first write after a cut breaks on
// a pooled connection, after which nobody can tell whether it reached the server, so the
// payment it spools is not this replica's alone to move. Later writes go straight to the spool.
func loseConnection(t testing.TB, l *Ledger) {
	t.Helper()
	if err := l.Create(context.Background(), newPayment(big.NewInt(1))); err != nil {
		t.Fatalf("Create on a lost connection = %v, want spooled", err)
	}
	// The replayer of an earlier, empty spool may clear the mark just after the Create set it
	// (it found nothing to replay); it sets it again when the spooled create fails to reach
	// Postgres, which the woken replayer tries at once.
	waitFor(t, 10*time.Second, "the ledger to notice Postgres is gone", func() bool { return l.Stats().Degraded })
}

// waitFor polls cond until it holds, or fails the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxy forwards TCP on a 127.0.0.1 port to a target, and can be cut (listener and every
// connection closed) and restored on the same port: an outage as a client sees it.
type proxy struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{target: target, addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
	p.accept(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) accept(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !p.track(c) {
				_ = c.Close()
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.forward(c)
			}()
		}
	}()
}

// track registers c unless the proxy has been cut.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *proxy) forward(c net.Conn) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		p.untrack(c)
		return
	}
	if !p.track(up) {
		_ = up.Close()
		p.untrack(c)
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
	p.untrack(c, up)
}

// cut closes the listener and every forwarded connection, and waits for the goroutines.
func (p *proxy) cut() {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// restore listens on the same port again.
func (p *proxy) restore(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy restore on %s: %v", p.addr, err)
	}
	p.accept(ln)
}

// pgTarget is host:port of the test database.
func pgTarget(t testing.TB) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(databaseURL())
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// closedAddr is a 127.0.0.1 port nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// countRows runs a count query on pool.
func countRows(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int
	if err := pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
