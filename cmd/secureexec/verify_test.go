package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gowebpki/jcs"

	"github.com/secureexec/secureexec/proof"
	"github.com/secureexec/secureexec/store"
)

const (
	verifyJobA = "0190f0a0-0000-7000-8000-00000000000a"
	verifyJobB = "0190f0a0-0000-7000-8000-00000000000b"
)

// verifyRecord is a call record of job id, sealed as the gateway seals it.
func verifyRecord(t *testing.T, id string) (record []byte, hash string) {
	t.Helper()
	record = []byte(`{"agentId":"alice","dryRun":true,"endpoint":"simulate","iam":{"approved":true},"jobId":"` + id +
		`","payment":{"amount":"0","currency":"USDC","protocol":"none"},"result":{"exitCode":0,"output":{"ok":true},"simulated":true},` +
		`"schemaVersion":"v1","status":"completed","timestamp":"2026-11-25T09:00:00.123Z","tool":{"args":{},"name":"hash_generate","timeoutMs":30000}}`)
	hash, err := proof.Hash(record)
	if err != nil {
		t.Fatal(err)
	}
	return record, hash
}

// verifyDocument is the job document GET /exec/jobs/{jobId} answers for that record.
func verifyDocument(id, hash string, record []byte) string {
	return fmt.Sprintf(`{"jobId":%q,"timestamp":"2026-11-25T09:00:00.123456Z","callerAgentId":"alice","toolName":"hash_generate",`+
		`"dryRun":true,"status":"completed","iamApproved":true,"proofHash":%q,"latencyMs":1,"paymentProtocol":"none",`+
		`"schemaVersion":"v1","record":%s}`, id, hash, record)
}

func runVerify(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetArgs(append([]string{"verify"}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestVerifyAcceptsAConsistentDocument(t *testing.T) {
	rec, hash := verifyRecord(t, verifyJobA)
	if _, _, err := verifyJobDocument([]byte(verifyDocument(verifyJobA, hash, rec)), strings.ToUpper(verifyJobA)); err != nil {
		t.Fatal(err)
	}
}

// A record that hashes to its proof hash proves only itself: served as another job's, or
// beside fields that contradict it, it must not verify.
func TestVerifyBindsTheRecordToTheJob(t *testing.T) {
	recB, hashB := verifyRecord(t, verifyJobB)
	docAwithB := verifyDocument(verifyJobA, hashB, recB)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, verifyJobA) {
			fmt.Fprint(w, docAwithB)
			return
		}
		fmt.Fprint(w, verifyDocument(verifyJobB, hashB, recB))
	}))
	defer srv.Close()
	if out, err := runVerify("--server", srv.URL, verifyJobA); err == nil {
		t.Errorf("verify %s passed a document holding job %s's record: %s", verifyJobA, verifyJobB, out)
	}
	if out, err := runVerify("--server", srv.URL, verifyJobB); err != nil {
		t.Errorf("verify %s (the true document): %v %s", verifyJobB, err, out)
	}

	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := verifyDocument(verifyJobB, hashB, recB)
	for name, doc := range map[string]string{
		"another job's record":                                   docAwithB,
		"a status not the record's":                              strings.Replace(good, `"status":"completed"`, `"status":"failed"`, 1),
		"an agent not the record's":                              strings.Replace(good, `"callerAgentId":"alice"`, `"callerAgentId":"bob"`, 1),
		"a tool not the record's":                                strings.Replace(good, `"toolName":"hash_generate"`, `"toolName":"http_get"`, 1),
		"a payment not the record's":                             strings.Replace(good, `"paymentProtocol":"none"`, `"paymentProtocol":"x402"`, 1),
		"iam not the record's":                                   strings.Replace(good, `"iamApproved":true`, `"iamApproved":false`, 1),
		"a time not the record's":                                strings.Replace(good, `09:00:00.123456Z`, `09:00:01.123456Z`, 1),
		"a forged record first, the true one under another case": fmt.Sprintf(`{"jobId":%q,"proofHash":%q,"record":{"forged":true},"Record":%s}`, verifyJobB, hashB, recB),
		"the true record first, a forged one repeated":           strings.Replace(good, `"record":`, `"record":{"forged":true},"record":`, 1),
	} {
		if out, err := runVerify("--file", write(strings.ReplaceAll(name, " ", "_")+".json", doc)); err == nil {
			t.Errorf("%s: verified: %s", name, out)
		}
	}
	if out, err := runVerify("--file", write("good.json", good)); err != nil {
		t.Errorf("the true document: %v %s", err, out)
	}
}

// TestVerifyArgumentsNameWhatIsMissing: no job id (or an empty one) asks for one; a job id and
// --file together are refused as both.
func TestVerifyArgumentsNameWhatIsMissing(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give the jobId to verify"},
		{[]string{""}, "give the jobId to verify"},
		{[]string{verifyJobA, "--file", "x.json"}, "not both"},
	} {
		if _, err := runVerify(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("verify %q: %v; want an error saying %q", tc.args, err, tc.want)
		}
	}
}

// TestLocalServerFollowsPORT: verify and call reach the gateway serve runs with the same
// environment, without --server.
func TestLocalServerFollowsPORT(t *testing.T) {
	for port, want := range map[string]string{
		"":      "http://127.0.0.1:5091",
		"5491":  "http://127.0.0.1:5491",
		"x":     "http://127.0.0.1:5091", // serve refuses it; the default is the best guess
		"70000": "http://127.0.0.1:5091",
	} {
		t.Setenv("PORT", port)
		if got := localServer(); got != want {
			t.Errorf("PORT=%q: %s, want %s", port, got, want)
		}
	}
}

// TestVerifyFileIsSizeCapped: --file reads at most --max-bytes bytes, as a fetch does, so
// that a pipe (verify --file <(curl ...)), a device or a huge file cannot make it read without
// end. The writer stops on its own once it has written far past the cap, so a reader that
// does not stop fails the test instead of hanging it.
func TestVerifyFileIsSizeCapped(t *testing.T) {
	const limit = 1 << 20
	fifo := filepath.Join(t.TempDir(), "doc.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no named pipes here: %v", err)
	}
	written := make(chan int64, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			written <- -1
			return
		}
		defer f.Close()
		chunk := bytes.Repeat([]byte(" "), 64<<10)
		var n int64
		for n <= 4*limit {
			k, err := f.Write(chunk)
			n += int64(k)
			if err != nil {
				break // the reader stopped and closed its end
			}
		}
		written <- n
	}()
	out, err := runVerify("--file", fifo, "--max-bytes", strconv.Itoa(limit))
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("verify --file of an endless pipe: %v %s; want a refusal naming the size", err, out)
	}
	for {
		select {
		case n := <-written:
			if n > 4*limit {
				t.Errorf("verify read %d bytes of the pipe, past the %d-byte cap", n, limit)
			}
			return
		default:
		}
		// Had verify not opened the pipe, the writer would wait for a reader: be one that
		// leaves at once, and its writes fail.
		if r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			r.Close()
		}
	}
}

// TestVerifyTakesTheLargestDocumentsTheGatewayServes: with the gateway's default 1 MiB body
// limit, hash_generate hashes an input of a million characters; GET /exec/jobs/{jobId}
// answers with encoding/json, which writes each '<' of it as \u003c, six bytes. Such a
// document is genuine and verify must take it, fetched or saved.
func TestVerifyTakesTheLargestDocumentsTheGatewayServes(t *testing.T) {
	input := strings.Repeat("<", 1<<20-64)
	record := []byte(`{"agentId":"alice","dryRun":true,"endpoint":"simulate","iam":{"approved":true},"jobId":"` + verifyJobA +
		`","payment":{"amount":"0","currency":"USDC","protocol":"none"},"result":{"exitCode":0,"output":{"ok":true},"simulated":true},` +
		`"schemaVersion":"v1","status":"completed","timestamp":"2026-11-25T09:00:00.123Z","tool":{"args":{"input":"` + input +
		`"},"name":"hash_generate","timeoutMs":30000}}`)
	hash, err := proof.Hash(record)
	if err != nil {
		t.Fatal(err)
	}
	served, err := json.Marshal(store.Entry{
		JobID: verifyJobA, Timestamp: time.Date(2026, 11, 25, 9, 0, 0, 123456000, time.UTC), CallerAgentID: "alice",
		ToolName: "hash_generate", DryRun: true, Status: "completed", IAMApproved: true, ProofHash: hash, LatencyMs: 1,
		PaymentProtocol: "none", SchemaVersion: "v1", Record: record,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(served) < 6<<20 {
		t.Fatalf("the served document is only %d bytes", len(served))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(served) }))
	defer srv.Close()
	if out, err := runVerify("--server", srv.URL, verifyJobA); err != nil {
		t.Errorf("verify of a %d-byte document: %v %s", len(served), err, out)
	}
	file := filepath.Join(t.TempDir(), "doc.json")
	if err := os.WriteFile(file, served, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runVerify("--file", file); err != nil {
		t.Errorf("verify --file of a %d-byte document: %v %s", len(served), err, out)
	}
}

// TestVerifyHostileRecordsThroughPostgres: calls whose args and output hold what RFC 8785
// implementations most often get wrong go through the real gateway and Postgres (whose jsonb
// reorders members and spells numbers its own way); verify, and an independent RFC 8785
// implementation, must recompute each proof hash from what GET /exec/jobs/{jobId} serves
// from the database, after a restart has emptied the gateway's memory of them.
func TestVerifyHostileRecordsThroughPostgres(t *testing.T) {
	dbURL, _ := freshSchema(t)
	env := map[string]string{"DATABASE_URL": dbURL, "SECUREEXEC_DATA_DIR": t.TempDir()}
	base, stop := startGateway(t, env)
	text := `{"n":[1e21,1e-7,-0,-0.0,5e-324,1.7976931348623157e308,9007199254740993,123456789012345678901234567890,0.1,1E2,4.50],` +
		`"\ud83d\ude00":1,"\ue000":2,"\uffff":3,"\u00e9":4,"a":5,"\uff61":6,` +
		`"s":"\u2028\u2029\u007f\u0001\u001f\b\f\n\r\t\"\\\/<>&\ud83d\ude00\ufffd","lone":"\ud800"}`
	textJSON, _ := json.Marshal(text)
	sealed := map[string]string{} // job id -> proof hash
	for _, body := range []string{
		`{"agentId":"hostile","tool":{"name":"json_parse","args":{"text":` + string(textJSON) + `}}}`,
		`{"agentId":"hostile","tool":{"name":"json_parse","args":{"data":{"n":[1e21,1e-7,-0,5e-324,1e-400,18446744073709551617],` +
			`"\ud83d\ude00":1,"\ue000":2,"\uffff":3,"s":"\u2028<&>\u007f\u001f"}}},"context":{"\ud83d\ude00":"\ue000","a":-0}}`,
		`{"agentId":"hostile","tool":{"name":"hash_generate","args":{"input":"\u2028\u2029 <&> \u007f \ud83d\ude00"}}}`,
	} {
		code, res := post(t, base+"/exec/simulate", body)
		if code != 200 {
			t.Fatalf("%s: %d %v", body, code, res)
		}
		sealed[res["jobId"].(string)] = res["proofHash"].(string)
	}
	stop() // drains the audit log into Postgres

	base, stop = startGateway(t, env)
	defer stop()
	for id, hash := range sealed {
		raw, err := fetchJob(context.Background(), base, id)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := verifyJobDocument(raw, id); err != nil {
			t.Errorf("job %s: %v\n%s", id, err, raw)
		}
		var doc store.Entry
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		ref, err := jcs.Transform(doc.Record)
		if err != nil {
			t.Fatalf("job %s: gowebpki/jcs refuses the served record: %v", id, err)
		}
		if h := proof.HashCanonical(ref); h != hash {
			t.Errorf("job %s: an independent RFC 8785 implementation hashes the served record to %s, the gateway sealed %s", id, h, hash)
		}
	}
}

// TestVerifyGivesUpOnAServerThatNeverAnswers: the fetch, body included, is bounded by
// --timeout; a large document over a slow link needs more than the default, so it can be set.
func TestVerifyGivesUpOnAServerThatNeverAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the body never comes: only verify giving up ends this
	}))
	defer srv.Close()
	out, err := runVerify("--server", srv.URL, "--timeout", "200ms", verifyJobA)
	if err == nil || !strings.Contains(err.Error(), "200ms") {
		t.Errorf("verify of a server that never answers: %v %s; want it to give up after --timeout, saying so", err, out)
	}
	if _, err := runVerify("--server", srv.URL, "--timeout", "0s", verifyJobA); err == nil || !strings.Contains(err.Error(), "--timeout") {
		t.Errorf("--timeout 0s: %v; want it refused", err)
	}
}

// TestVerifyRefusesATamperedRecord: any change to the record, a missing proof hash and a
// number only this implementation would read as the sealed one all exit non-zero.
func TestVerifyRefusesATamperedRecord(t *testing.T) {
	rec, _ := verifyRecord(t, verifyJobA)
	rec = bytes.Replace(rec, []byte(`"output":{"ok":true}`), []byte(`"output":[1.7976931348623157e+308,9007199254740993]`), 1)
	hash, err := proof.Hash(rec)
	if err != nil {
		t.Fatal(err)
	}
	good := verifyDocument(verifyJobA, hash, rec)
	if _, _, err := verifyJobDocument([]byte(good), verifyJobA); err != nil {
		t.Fatalf("the true document: %v", err)
	}
	for name, doc := range map[string]string{
		"no proofHash":                  strings.Replace(good, `"proofHash":"`+hash+`",`, "", 1),
		"an empty proofHash":            strings.Replace(good, hash, "", 1),
		"a proofHash of another shape":  strings.Replace(good, hash, hash[2:], 1),
		"an extra member in the record": strings.Replace(good, `"record":{`, `"record":{"extra":null,`, 1),
		"a changed string":              strings.Replace(good, `"name":"hash_generate"`, `"name":"hash_generatE"`, 1),
		"a changed integer":             strings.Replace(good, `9007199254740993`, `9007199254740995`, 1),
		"a number past a double where the record has the largest": strings.Replace(good, `1.7976931348623157e+308`, `1e400`, 1),
		"a duplicated member in the record":                       strings.Replace(good, `"dryRun":true`, `"dryRun":true,"dryRun":true`, 1),
	} {
		if _, _, err := verifyJobDocument([]byte(doc), verifyJobA); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

// TestVerifyErrorsDoNotCarryControlCharacters: what a server or a saved file says reaches the
// user's terminal only quoted, and a refusal's body only in part: an answer or a document
// holding escape sequences must not rewrite the terminal (say, into "ok: ...") while verify
// fails.
func TestVerifyErrorsDoNotCarryControlCharacters(t *testing.T) {
	const spoof = "\x1b[1A\x1b[2K\rok: job " + verifyJobA + ": its record hashes to its proof hash\u2028\u202e"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, spoof+strings.Repeat("x", 1<<20))
	}))
	defer srv.Close()
	_, fetchErr := runVerify("--server", srv.URL, verifyJobA)

	rec, hash := verifyRecord(t, verifyJobA)
	good := verifyDocument(verifyJobA, hash, rec)
	spoofJSON, _ := json.Marshal(spoof)
	errs := map[string]error{"a refusal from the server": fetchErr}
	for name, doc := range map[string]string{
		"a jobId with escapes beside a tampered record": strings.Replace(strings.Replace(good, `"jobId":"`+verifyJobA+`"`, `"jobId":`+string(spoofJSON), 1), `"ok":true`, `"ok":false`, 1),
		"a jobId with escapes":                          strings.Replace(good, `"jobId":"`+verifyJobA+`"`, `"jobId":`+string(spoofJSON), 1),
		"a callerAgentId with escapes":                  strings.Replace(good, `"callerAgentId":"alice"`, `"callerAgentId":`+string(spoofJSON), 1),
		"a repeated member named with escapes":          strings.Replace(good, `"record":`, `"x`+spoof+`":1,"x`+spoof+`":1,"record":`, 1),
		"a record member named with escapes, repeated":  strings.Replace(good, `"record":{`, `"record":{"`+spoof+`":1,"`+spoof+`":1,`, 1),
		"a raw escape character":                        strings.Replace(good, `"alice"`, `"al`+spoof+`ice"`, 1),
	} {
		_, _, errs[name] = verifyJobDocument([]byte(doc), "")
	}
	// A record that hashes to its proof hash but holds what the document does not say.
	for name, field := range map[string]string{
		"a record timestamp with escapes":  `"timestamp":` + string(spoofJSON),
		"a record field of the wrong type": `"timestamp":{` + string(spoofJSON) + `:1}`,
		"a record status with escapes":     `"timestamp":"2026-11-25T09:00:00.123Z","status":` + string(spoofJSON),
	} {
		bad := bytes.Replace(rec, []byte(`"status":"completed","timestamp":"2026-11-25T09:00:00.123Z"`), []byte(field), 1)
		badHash, err := proof.Hash(bad)
		if err != nil {
			t.Fatal(err)
		}
		_, _, errs[name] = verifyJobDocument([]byte(verifyDocument(verifyJobA, badHash, bad)), "")
	}
	for name, err := range errs {
		if err == nil {
			t.Errorf("%s: verified", name)
			continue
		}
		if msg := err.Error(); strings.ContainsAny(msg, "\x1b\r\n\u2028\u202e") || len(msg) > 4<<10 {
			t.Errorf("%s: the error carries control characters or the whole body (%d bytes): %q", name, len(msg), msg[:min(len(msg), 300)])
		}
	}
}

// --max-bytes at the largest int64 is "no practical cap", not a cap of zero: reading one byte
// past it overflowed, and a genuine document was refused as "not a job document".
func TestVerifyMaxBytesAtItsLargest(t *testing.T) {
	rec, hash := verifyRecord(t, verifyJobA)
	path := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(path, []byte(verifyDocument(verifyJobA, hash, rec)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runVerify("--file", path, "--max-bytes", strconv.FormatInt(math.MaxInt64, 10)); err != nil {
		t.Fatalf("verify --max-bytes MaxInt64: %v %s", err, out)
	}
}

// A document that agrees with itself proves only that: anyone can write a record and its hash.
// --expect-hash holds it to the proof hash the call returned.
func TestVerifyExpectHash(t *testing.T) {
	rec, hash := verifyRecord(t, verifyJobA)
	path := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(path, []byte(verifyDocument(verifyJobA, hash, rec)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runVerify("--file", path, "--expect-hash", hash); err != nil || !strings.Contains(out, "expected proof hash") {
		t.Fatalf("the hash the call returned: %v %s", err, out)
	}
	other := "0x" + strings.Repeat("ab", 32)
	out, err := runVerify("--file", path, "--expect-hash", other)
	if !errors.Is(err, proof.ErrMismatch) || strings.Contains(out, "ok:") {
		t.Fatalf("a self-consistent document with another hash than the call returned: %v %s; want a mismatch", err, out)
	}
}
