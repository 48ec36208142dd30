package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestPostgresRoundTrip(t *testing.T) {
	pool, _ := migratedPool(t)
	pg := NewPostgres(pool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	records := []string{
		`{"a":1,"nested":{"list":[1,2.5,"x",null,true,{"k":"v"}]},"big":12345678901234567890123}`,
		`{"text":"line\nbreak \t tab \"quote\" \\u0000 is text, not NUL","emoji":"\ud83d\ude80","é":"ü"}`,
		`{"html":"<script>&amp;</script>","deep":[[[[[]]]]],"empty":{}}`,
		`[1,2,3]`,
		`"just a string"`,
	}
	var entries []Entry
	for i, r := range records {
		e := testEntry(i)
		e.Record = json.RawMessage(r)
		entries = append(entries, e)
	}
	defaults := testEntry(99)
	defaults.Timestamp, defaults.SchemaVersion = time.Time{}, ""
	entries = append(entries, defaults)

	before := time.Now().Add(-time.Second)
	if err := pg.WriteBatch(ctx, entries); err != nil {
		t.Fatalf("WriteBatch: %v", err)
	}
	for _, want := range entries {
		got, err := pg.Get(ctx, want.JobID)
		if err != nil {
			t.Fatalf("Get %s: %v", want.JobID, err)
		}
		if !sameJSON(t, got.Record, want.Record) {
			t.Errorf("record %s round trip: got %s, want %s", want.JobID, got.Record, want.Record)
		}
		wantTS, wantSV := want.Timestamp, want.SchemaVersion
		if want.Timestamp.IsZero() {
			if got.Timestamp.Before(before) || got.Timestamp.After(time.Now().Add(time.Second)) {
				t.Errorf("zero timestamp stored as %v, want about now", got.Timestamp)
			}
			wantTS, wantSV = got.Timestamp, DefaultSchemaVersion
		}
		got.Record, want.Record = nil, nil
		want.Timestamp, want.SchemaVersion = wantTS.UTC(), wantSV
		if !entriesEqual(got, want) {
			t.Errorf("entry round trip:\n got %+v\nwant %+v", got, want)
		}
	}

	upper := strings.ToUpper(entries[0].JobID)
	if got, err := pg.Get(ctx, upper); err != nil || got.JobID != entries[0].JobID {
		t.Errorf("Get(upper-case id) = %q, %v; want the canonical id", got.JobID, err)
	}
	for _, id := range []string{uuid.NewString(), "not-a-uuid", "", "'; DROP TABLE secureexec_calls; --"} {
		if _, err := pg.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) err = %v, want ErrNotFound", id, err)
		}
	}
}

// entriesEqual compares every field but Record (compared as JSON by sameJSON).
func entriesEqual(a, b Entry) bool {
	return a.JobID == b.JobID && a.Timestamp.Equal(b.Timestamp) && a.CallerAgentID == b.CallerAgentID &&
		a.ToolName == b.ToolName && a.DryRun == b.DryRun && a.Status == b.Status &&
		a.IAMApproved == b.IAMApproved && a.ProofHash == b.ProofHash && a.LatencyMs == b.LatencyMs &&
		a.PaymentProtocol == b.PaymentProtocol && a.SchemaVersion == b.SchemaVersion
}

func TestPostgresIdempotentOnJobID(t *testing.T) {
	pool, _ := migratedPool(t)
	pg := NewPostgres(pool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	batch := testEntries(50)
	first := batch[7]
	dup := first
	dup.Status, dup.Record = "tampered", json.RawMessage(`{"tampered":true}`)
	// The same id three times inside one batch, and the first copy must win.
	withDups := append(append([]Entry{}, batch...), dup, batch[7], batch[0])
	if err := pg.WriteBatch(ctx, withDups); err != nil {
		t.Fatalf("batch with duplicates: %v", err)
	}
	// Across batches: the whole batch again, plus a few new ones.
	more := testEntries(5)
	if err := pg.WriteBatch(ctx, append(append([]Entry{}, batch...), more...)); err != nil {
		t.Fatalf("second batch: %v", err)
	}
	rows, distinct := rowCounts(t, pool)
	if rows != 55 || distinct != 55 {
		t.Fatalf("rows = %d (distinct %d), want 55", rows, distinct)
	}
	got, err := pg.Get(ctx, first.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != first.Status || !sameJSON(t, got.Record, first.Record) {
		t.Errorf("duplicate overwrote the first copy: %+v", got)
	}
}

// TestPostgresPoisonEntries: entries Postgres would refuse never take their batch down with
// them; they come back in a RejectError and everything else is written.
func TestPostgresPoisonEntries(t *testing.T) {
	pool, _ := migratedPool(t)
	pg := NewPostgres(pool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	good := testEntries(20)
	type poison struct {
		mutate func(*Entry)
		reason string
	}
	poisons := []poison{
		{func(e *Entry) { e.Record = json.RawMessage(`{"arg":"a\u0000b"}`) }, ReasonRecordNULEscape},
		{func(e *Entry) { e.Record = json.RawMessage(`{"a\u0000":1}`) }, ReasonRecordNULEscape},
		{func(e *Entry) { e.Record = json.RawMessage(`{"s":"\ud83d"}`) }, ReasonRecordLoneSurrogate},
		{func(e *Entry) { e.Record = json.RawMessage(`{"unterminated":`) }, ReasonInvalidRecordJSON},
		{func(e *Entry) { e.Record = nil }, ReasonInvalidRecordJSON},
		{func(e *Entry) { e.Record = json.RawMessage("{\"s\":\"\xff\"}") }, ReasonInvalidUTF8},
		{func(e *Entry) { e.CallerAgentID = "agent\x00" }, ReasonTextContainsNUL},
		{func(e *Entry) { e.ToolName = strings.Repeat("t", MaxTextBytes+1) }, ReasonTextTooLong},
		{func(e *Entry) { e.JobID = "job-1" }, ReasonInvalidJobID},
		{func(e *Entry) { e.LatencyMs = -1 }, ReasonLatencyOutOfRange},
		// Valid to Validate, refused by Postgres itself: found by bisecting the batch.
		{func(e *Entry) { e.Record = json.RawMessage(`{"n":1e1000000}`) }, ReasonRefusedByDatabase},
	}
	var batch []Entry
	wantReason := map[int]string{}
	for i, g := range good {
		batch = append(batch, g)
		if i < len(poisons) {
			p := testEntry(1000 + i)
			poisons[i].mutate(&p)
			wantReason[len(batch)] = poisons[i].reason
			batch = append(batch, p)
		}
	}
	err := pg.WriteBatch(ctx, batch)
	var rej *RejectError
	if !errors.As(err, &rej) {
		t.Fatalf("WriteBatch err = %v, want *RejectError", err)
	}
	if len(rej.Rejected) != len(poisons) {
		t.Fatalf("rejected %d entries (%v), want %d", len(rej.Rejected), rej, len(poisons))
	}
	for _, r := range rej.Rejected {
		if want, ok := wantReason[r.Index]; !ok || r.Reason != want {
			t.Errorf("rejection at %d = %s (%s), want %q", r.Index, r.Reason, r.Detail, want)
		}
	}
	rows, _ := rowCounts(t, pool)
	if rows != len(good) {
		t.Fatalf("rows = %d, want the %d good entries", rows, len(good))
	}
	// The table is not left unusable: the next batch goes through.
	if err := pg.WriteBatch(ctx, testEntries(3)); err != nil {
		t.Fatalf("next batch: %v", err)
	}
}

// TestValidateAgreesWithPostgres asks the live Postgres itself which records jsonb accepts
// and checks that Validate draws the line at the same place.
func TestValidateAgreesWithPostgres(t *testing.T) {
	pool, _ := migratedPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, rec := range []string{
		`{"a":"plain"}`,
		`{"a":"\u0000"}`,
		`{"a":"x\u0000y"}`,
		`{"\u0000":1}`,
		`{"a":"\\u0000"}`,
		`{"a":"\\\u0000"}`,
		`{"a":"\\\\u0000"}`,
		`{"a":"\u0001\u001f"}`,
		`{"a":"\ud83d\ude80"}`,
		`{"a":"\uD83D\uDE80"}`,
		`{"a":"\ud83d"}`,
		`{"a":"\ude80"}`,
		`{"a":"\ud83dx"}`,
		`{"a":"\ud83d\n"}`,
		`{"a":"\ud83d\u0041"}`,
		`{"a":"\ud83d\ud83d\ude80"}`,
		`{"a":"\ude80\ud83d"}`,
		`{"a":"\u00e9\u20ac"}`,
		`["\ud83d\ude80","\ud83d"]`,
	} {
		_, pgErr := pool.Exec(ctx, `SELECT $1::text::jsonb`, rec)
		vErr := validateRecord("x", json.RawMessage(rec))
		if (pgErr == nil) != (vErr == nil) {
			t.Errorf("%s: Postgres says %v, Validate says %v", rec, pgErr, vErr)
		}
	}
}

func TestOpenPostgres(t *testing.T) {
	_ = testSchema(t) // fails or skips exactly like the other Postgres tests
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pg, err := OpenPostgres(ctx, testDatabaseURL())
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	if err := pg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPostgres(ctx, "postgres://postgres@"+deadAddr(t)+"/test?sslmode=disable&connect_timeout=2"); err == nil ||
		!strings.Contains(err.Error(), "postgres_unreachable") {
		t.Fatalf("OpenPostgres(dead port) err = %v, want postgres_unreachable", err)
	}
	if _, err := OpenPostgres(ctx, "://nope"); err == nil || !strings.Contains(err.Error(), "invalid_database_url") {
		t.Fatalf("OpenPostgres(bad url) err = %v, want invalid_database_url", err)
	}
}

// BenchmarkPostgresWriteBatch writes batches of ~400-byte records through the COPY + INSERT
// ... ON CONFLICT path (500 is the writer's batch size, 2048 its replay chunk) and reports
// rows/s.
func BenchmarkPostgresWriteBatch(b *testing.B) {
	for _, size := range []int{500, 2048} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			pool, _ := migratedPool(b)
			pg := NewPostgres(pool)
			ctx := context.Background()
			batches := make([][]Entry, b.N)
			for i := range batches {
				batches[i] = testEntries(size)
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := pg.WriteBatch(ctx, batches[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "rows/s")
		})
	}
}
