package store

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestEmbeddedRoundTripAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "audit.db")
	ctx := context.Background()
	emb, err := OpenEmbedded(path)
	if err != nil {
		t.Fatal(err)
	}
	entries := testEntries(100)
	// Whitespace and key order are kept byte for byte, unlike jsonb.
	entries[3].Record = json.RawMessage("{ \"z\": 1,\n  \"a\": [1, 2] }")
	entries[4].Timestamp, entries[4].SchemaVersion = time.Time{}, ""
	if err := emb.WriteBatch(ctx, entries); err != nil {
		t.Fatal(err)
	}
	// Idempotent: the same ids again, in one batch and across batches, change nothing.
	dup := entries[5]
	dup.Status = "tampered"
	if err := emb.WriteBatch(ctx, append(entries[:10:10], dup, dup)); err != nil {
		t.Fatal(err)
	}
	if err := emb.Close(); err != nil {
		t.Fatal(err)
	}

	emb, err = OpenEmbedded(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer emb.Close()
	if n, err := emb.Count(); err != nil || n != 100 {
		t.Fatalf("Count after reopen = %d, %v; want 100", n, err)
	}
	for i, want := range entries {
		got, err := emb.Get(ctx, want.JobID)
		if err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
		if string(got.Record) != string(want.Record) {
			t.Errorf("record %d: got %s, want %s byte for byte", i, got.Record, want.Record)
		}
		if i == 4 {
			if got.Timestamp.IsZero() || got.SchemaVersion != DefaultSchemaVersion {
				t.Errorf("defaults not applied: %+v", got)
			}
			continue
		}
		if !entriesEqual(got, want) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	seen := 0
	if err := emb.ForEach(func(e Entry) error { seen++; return nil }); err != nil || seen != 100 {
		t.Fatalf("ForEach saw %d, %v", seen, err)
	}
	for _, id := range []string{uuid.NewString(), "nope", ""} {
		if _, err := emb.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) err = %v, want ErrNotFound", id, err)
		}
	}
}

func TestEmbeddedRejectsWhatPostgresWould(t *testing.T) {
	emb := openTestEmbedded(t, t.TempDir())
	bad := testEntry(1)
	bad.Record = json.RawMessage(`{"a":"\u0000"}`)
	err := emb.WriteBatch(context.Background(), []Entry{testEntry(0), bad, testEntry(2)})
	var rej *RejectError
	if !errors.As(err, &rej) || len(rej.Rejected) != 1 || rej.Rejected[0].Index != 1 || rej.Rejected[0].Reason != ReasonRecordNULEscape {
		t.Fatalf("err = %v, want one record_nul_escape rejection at index 1", err)
	}
	if n, _ := emb.Count(); n != 2 {
		t.Fatalf("Count = %d, want the 2 good entries", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := emb.WriteBatch(ctx, []Entry{testEntry(3)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteBatch(cancelled ctx) err = %v", err)
	}
}

func TestEmbeddedSecondOpenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	emb, err := OpenEmbedded(path)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	other, err := OpenEmbedded(path)
	if err == nil {
		_ = other.Close()
		t.Fatal("a second open of a locked database must fail, not share the file")
	}
	if !strings.Contains(err.Error(), "held by another process") {
		t.Fatalf("err = %v; want it to say another process holds the file", err)
	}
}
