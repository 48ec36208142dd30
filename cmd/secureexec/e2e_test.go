package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/secureexec/secureexec/proof"
)

const internalKey = "e2e-internal-key-0123456789"

func testDatabaseURL() string {
	if u := os.Getenv("SECUREEXEC_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// freshSchema creates a schema of its own in the test database and returns a DATABASE_URL
// whose connections use it. Without Postgres the test fails: CI must not pass silently.
func freshSchema(t *testing.T) (url string, conn *pgx.Conn) {
	t.Helper()
	if os.Getenv("SECUREEXEC_SKIP_PG") == "1" {
		t.Skip("SECUREEXEC_SKIP_PG=1")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testDatabaseURL())
	if err != nil {
		t.Fatalf("Postgres unreachable at %s (set SECUREEXEC_SKIP_PG=1 to skip): %v", testDatabaseURL(), err)
	}
	schema := fmt.Sprintf("e2e_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		conn.Close(context.Background())
	})
	if _, err := conn.Exec(ctx, "SET search_path TO "+schema); err != nil {
		t.Fatal(err)
	}
	return testDatabaseURL() + "&search_path=" + schema, conn
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startGateway runs the real serve() and returns its base URL and a stop function that
// shuts it down gracefully and waits.
func startGateway(t *testing.T, env map[string]string) (string, func()) {
	t.Helper()
	port := freePort(t)
	env["PORT"] = strconv.Itoa(port)
	env["LOG_FILE"] = ""
	env["LOG_LEVEL"] = "warn"
	env["INTERNAL_API_KEY"] = internalKey
	cfg, err := loadConfig(envOf(env), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg) }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := 0; ; i++ {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 100 {
			cancel()
			t.Fatalf("gateway did not start: %v (serve: %v)", err, <-done)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return base, stop
}

func post(t *testing.T, url, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %q", url, b)
	}
	return resp.StatusCode, m
}

// The "done when": a call's row lands in Postgres and its proof hash verifies from
// what GET /exec/jobs returns.
func TestEndToEndWithPostgres(t *testing.T) {
	dbURL, conn := freshSchema(t)
	base, stop := startGateway(t, map[string]string{"DATABASE_URL": dbURL, "SECUREEXEC_DATA_DIR": t.TempDir()})

	code, sim := post(t, base+"/exec/simulate", `{"agentId":"e2e","tool":{"name":"hash_generate","args":{"input":"hello"}}}`)
	if code != 200 || sim["status"] != "completed" {
		t.Fatalf("simulate: %d %v", code, sim)
	}
	code, unpaid := post(t, base+"/exec/tool", `{"tool":{"name":"json_parse","args":{"data":{"k":"v"}}}}`)
	if code != 402 || unpaid["amount"] != "0.01" {
		t.Fatalf("unpaid: %d %v", code, unpaid)
	}
	code, real := post(t, base+"/exec/tool", `{"tool":{"name":"math_compute","args":{"expression":"6 * 7"}},"dryRun":false}`, "X-Internal-Key", internalKey)
	if code != 200 || real["paymentProtocol"] != "internal" || real["dryRun"] != false {
		t.Fatalf("internal real run: %d %v", code, real)
	}

	for _, r := range []map[string]any{sim, real} {
		raw, err := fetchJob(context.Background(), base, r["jobId"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := verifyJobDocument(raw, r["jobId"].(string)); err != nil || !bytes.Contains(raw, []byte(`"proofHash":"`+r["proofHash"].(string)+`"`)) {
			t.Fatalf("job %v does not verify: %v", r["jobId"], err)
		}
	}
	stop() // graceful: drains the audit queue

	rows, err := conn.Query(context.Background(), "SELECT job_id::text, proof_hash, tool_name, payment_protocol, record FROM secureexec_calls ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for rows.Next() {
		var id, hash, tool, protocol string
		var record []byte
		if err := rows.Scan(&id, &hash, &tool, &protocol, &record); err != nil {
			t.Fatal(err)
		}
		if err := proof.Verify(record, hash); err != nil {
			t.Fatalf("row %s: the record stored in Postgres does not verify: %v", id, err)
		}
		n++
	}
	if rows.Err() != nil || n != 2 {
		t.Fatalf("%d rows (%v), want the 2 answered calls (a 402 is not a call)", n, rows.Err())
	}
}

// The embedded default keeps history across restarts.
func TestEmbeddedDefaultKeepsHistory(t *testing.T) {
	dir := t.TempDir()
	base, stop := startGateway(t, map[string]string{"SECUREEXEC_DATA_DIR": dir})
	_, sim := post(t, base+"/exec/simulate", `{"tool":{"name":"regex_match","args":{"pattern":"a+","input":"caaab"}}}`)
	stop()

	base, _ = startGateway(t, map[string]string{"SECUREEXEC_DATA_DIR": dir})
	raw, err := fetchJob(context.Background(), base, sim["jobId"].(string))
	if err != nil {
		t.Fatalf("job lost across a restart: %v", err)
	}
	if _, _, err := verifyJobDocument(raw, sim["jobId"].(string)); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCommandExitsNonZeroOnMismatch(t *testing.T) {
	dir := t.TempDir()
	base, _ := startGateway(t, map[string]string{"SECUREEXEC_DATA_DIR": dir})
	_, sim := post(t, base+"/exec/simulate", `{"tool":{"name":"hash_generate","args":{"input":"x"}}}`)
	id := sim["jobId"].(string)

	run := func(args ...string) error {
		cmd := rootCmd()
		cmd.SetArgs(args)
		cmd.SetOut(io.Discard)
		return cmd.ExecuteContext(context.Background())
	}
	if err := run("verify", "--server", base, id); err != nil {
		t.Fatalf("verify by job id: %v", err)
	}
	raw, _ := fetchJob(context.Background(), base, id)
	good := dir + "/good.json"
	_ = os.WriteFile(good, raw, 0o600)
	if err := run("verify", "--file", good); err != nil {
		t.Fatalf("verify a saved file: %v", err)
	}
	bad := dir + "/bad.json"
	_ = os.WriteFile(bad, bytes.Replace(raw, []byte(`"name":"hash_generate"`), []byte(`"name":"json_parse"`), 1), 0o600)
	if err := run("verify", "--file", bad); err == nil {
		t.Fatal("a tampered record verified")
	}
	if err := run("verify", "--server", base, "6f1c1f44-8b0e-4b8e-9c53-2a3c1e0b5d7a"); err == nil {
		t.Fatal("an unknown job verified")
	}
}

func TestTamperTargetsTheRecord(t *testing.T) {
	// Guards the test above: the replaced text must be inside the record, not a column.
	raw := []byte(`{"toolName":"hash_generate","record":{"tool":{"name":"hash_generate"}}}`)
	out := bytes.Replace(raw, []byte(`"name":"hash_generate"`), []byte(`"name":"json_parse"`), 1)
	if !bytes.Contains(out, []byte(`"toolName":"hash_generate"`)) || bytes.Equal(out, raw) {
		t.Fatalf("%s", out)
	}
}

// TestServeRefusesADatabaseItCannotMigrate: Postgres answers, but the migrations cannot run
// (here: the search_path names no schema, so there is nowhere to create the tables). Serving
// anyway would spool every record for ever; serve says why and stops.
func TestServeRefusesADatabaseItCannotMigrate(t *testing.T) {
	freshSchema(t) // fails, not skips, without Postgres
	url := testDatabaseURL() + "&search_path=" + fmt.Sprintf("missing_%d", time.Now().UnixNano())
	cfg, err := loadConfig(envOf(map[string]string{"DATABASE_URL": url}), "")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = openAudit(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "migrations not applied") {
		t.Fatalf("openAudit = %v, want the migrations' failure", err)
	}
}
