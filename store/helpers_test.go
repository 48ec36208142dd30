package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const defaultTestDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func testDatabaseURL() string {
	if u := os.Getenv("SECUREEXEC_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return defaultTestDatabaseURL
}

// testSchema creates a schema of its own for t (dropped at cleanup) so concurrent runs never
// see each other's rows. Without Postgres the test fails, unless SECUREEXEC_SKIP_PG=1.
func testSchema(t testing.TB) string {
	t.Helper()
	if os.Getenv("SECUREEXEC_SKIP_PG") == "1" {
		t.Skip("SECUREEXEC_SKIP_PG=1: skipping a test that needs Postgres")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testDatabaseURL())
	if err != nil {
		t.Fatalf("Postgres unreachable at %s (set SECUREEXEC_SKIP_PG=1 to skip): %v", testDatabaseURL(), err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "store_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testDatabaseURL())
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// schemaPool opens a pool whose sessions use schema, through addr (host:port) if not empty.
func schemaPool(t testing.TB, schema, addr string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testDatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	if addr != "" {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		var p uint16
		fmt.Sscanf(port, "%d", &p)
		cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, p
		cfg.ConnConfig.Fallbacks = nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// migratedPool is a pool on a fresh, migrated schema.
func migratedPool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	schema := testSchema(t)
	pool := schemaPool(t, schema, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pool, schema
}

// rowCounts returns count(*) and count(DISTINCT job_id) of the audit table.
func rowCounts(t testing.TB, pool *pgxpool.Pool) (rows, distinct int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT job_id) FROM secureexec_calls`).Scan(&rows, &distinct); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return rows, distinct
}

type testRecord struct {
	JobID    string            `json:"jobId"`
	Tool     string            `json:"tool"`
	Args     map[string]string `json:"args"`
	Result   []int             `json:"result"`
	Note     string            `json:"note"`
	Sequence int               `json:"sequence"`
}

// testEntry builds a realistic entry (a ~400-byte record) with a fresh job id.
func testEntry(i int) Entry {
	id := uuid.NewString()
	rec, err := json.Marshal(testRecord{
		JobID: id, Tool: "math_compute",
		Args:     map[string]string{"expression": fmt.Sprintf("%d * 7 + 3", i), "precision": "6"},
		Result:   []int{i, i * 7, i*7 + 3},
		Note:     "héllo <world> & \"quotes\" \\ backslash — ünïcødé 🚀",
		Sequence: i,
	})
	if err != nil {
		panic(err)
	}
	return Entry{
		JobID: id, Timestamp: time.Now().UTC().Truncate(time.Microsecond),
		CallerAgentID: fmt.Sprintf("agent-%d", i%17), ToolName: "math_compute", DryRun: i%2 == 0,
		Status: "completed", IAMApproved: true, ProofHash: "0x" + hex.EncodeToString([]byte(id[:8])),
		LatencyMs: i % 1000, PaymentProtocol: "x402", SchemaVersion: "v1", Record: rec,
	}
}

func testEntries(n int) []Entry {
	out := make([]Entry, n)
	for i := range out {
		out[i] = testEntry(i)
	}
	return out
}

// sameJSON reports whether two JSON documents are equal as values.
func sameJSON(t testing.TB, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("unmarshal %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; state: %s", timeout, what, state())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var errInjectedOutage = errors.New("injected_outage")

// flakyBackend fails every WriteBatch while failing is set, and after budget successful
// calls when budget is set (>0) — a database that goes away mid-replay.
type flakyBackend struct {
	Backend
	failing atomic.Bool
	budget  atomic.Int64 // 0: unlimited
	limited bool
	calls   atomic.Int64
	delay   time.Duration
}

func (f *flakyBackend) WriteBatch(ctx context.Context, entries []Entry) error {
	f.calls.Add(1)
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.failing.Load() {
		return errInjectedOutage
	}
	if f.limited && f.budget.Add(-1) < 0 {
		return errInjectedOutage
	}
	return f.Backend.WriteBatch(ctx, entries)
}

// Close leaves the wrapped backend to its owner.
func (f *flakyBackend) Close() error { return nil }

// tcpProxy forwards 127.0.0.1 connections to target and can be stopped and started on the
// same port: a Postgres outage, from the client's side, with a real socket.
type tcpProxy struct {
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.stop)
	return p
}

func (p *tcpProxy) start(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy restart on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

func (p *tcpProxy) serve(ln net.Listener) {
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
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(c)
			}()
		}
	}()
}

func (p *tcpProxy) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // stopped meanwhile
		p.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// stop closes the listener and every proxied connection, and waits for the goroutines.
func (p *tcpProxy) stop() {
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

// deadAddr is a 127.0.0.1 port with nothing listening.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// openTestEmbedded opens dir/audit.db, closed when the test ends (after the writers the test
// made, whose cleanups were registered later and run first).
func openTestEmbedded(t testing.TB, dir string) *Embedded {
	t.Helper()
	emb, err := OpenEmbedded(filepath.Join(dir, "audit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Close() })
	return emb
}
