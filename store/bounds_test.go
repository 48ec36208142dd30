package store

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// sizedEntry is testEntry(i) with a record of exactly size bytes.
func sizedEntry(i, size int) Entry {
	e := testEntry(i)
	head := `{"jobId":"` + e.JobID + `","pad":"`
	e.Record = []byte(head + strings.Repeat("x", size-len(head)-2) + `"}`)
	return e
}

func TestIndexIsBoundedByBytes(t *testing.T) {
	x := newPendingIndex(100, 5000)
	var es []Entry
	for i := range 10 {
		es = append(es, sizedEntry(i, 1000))
		x.put(es[i])
	}
	for i, e := range es {
		if _, ok := x.get(e.JobID); ok != (i >= 5) {
			t.Errorf("entry %d found = %v; want only the newest 5 (5,000 bytes)", i, ok)
		}
	}
	// Removing gives its bytes back: two more fit without forgetting anyone.
	x.remove(es[5:7])
	x.put(sizedEntry(10, 1000))
	x.put(sizedEntry(11, 1000))
	for _, e := range es[7:] {
		if _, ok := x.get(e.JobID); !ok {
			t.Errorf("entry %s forgotten though the removals made room", e.JobID)
		}
	}
	if x.bytes != 5000 {
		t.Fatalf("bytes = %d, want 5000", x.bytes)
	}
	// The entry count still bounds it, whatever the bytes.
	y := newPendingIndex(3, 1<<30)
	ids := make([]string, 5)
	for i := range ids {
		e := sizedEntry(i, 100)
		ids[i] = e.JobID
		y.put(e)
	}
	if _, ok := y.get(ids[1]); ok {
		t.Fatal("kept more than 3 entries")
	}
	if _, ok := y.get(ids[4]); !ok {
		t.Fatal("forgot the newest")
	}
}

// TestWriterQueueIsBoundedByBytes: with the backend stalled, large records stop entering the
// queue once it holds QueueBytes; the rest go to the spool, and every one is written in the end.
func TestWriterQueueIsBoundedByBytes(t *testing.T) {
	leakCheck(t)
	emb := openTestEmbedded(t, t.TempDir())
	gate := make(chan struct{})
	opts := fastRetry(t, t.TempDir())
	opts.Workers, opts.BatchSize, opts.QueueBytes = 1, 2, 64<<10
	w := newTestWriter(t, &blockingBackend{Backend: emb, gate: gate}, opts)
	var entries []Entry
	for i := range 40 {
		entries = append(entries, sizedEntry(i, 8<<10))
		w.Submit(entries[i])
	}
	s := w.Stats()
	// One batch with the stalled writer, one waiting for it, 8 records in the queue: the other
	// 26 or more went to the spool. Without the byte bound all 36 would sit in the queue.
	if s.QueueDepth > 8 || s.Overflowed < 26 || w.queuedBytes.Load() > 64<<10 {
		t.Fatalf("queue %d entries, %d bytes, %d overflowed: the queue is not bounded by bytes", s.QueueDepth, w.queuedBytes.Load(), s.Overflowed)
	}
	close(gate)
	waitFor(t, 10*time.Second, "all written", drained(w, len(entries)), statsString(w))
	for _, e := range entries {
		if _, err := emb.Get(context.Background(), e.JobID); err != nil {
			t.Fatalf("%s: %v", e.JobID, err)
		}
	}
	if q := w.queuedBytes.Load(); q != 0 {
		t.Fatalf("queued bytes = %d after draining, want 0", q)
	}
}

// bytesBackend records the record bytes of every batch it is given.
type bytesBackend struct {
	sizesBackend
	bytes []int
}

func (b *bytesBackend) WriteBatch(ctx context.Context, entries []Entry) error {
	n := 0
	for _, e := range entries {
		n += len(e.Record)
	}
	b.mu.Lock()
	b.bytes = append(b.bytes, n)
	b.mu.Unlock()
	return nil
}

// TestWriterBatchesAreBoundedByBytes: a batch is handed over once its records reach
// BatchBytes, however few they are, so large records do not make a batch that outlasts
// WriteTimeout.
func TestWriterBatchesAreBoundedByBytes(t *testing.T) {
	leakCheck(t)
	b := &bytesBackend{}
	opts := fastRetry(t, t.TempDir())
	opts.Workers, opts.BatchSize, opts.BatchBytes, opts.FlushInterval = 1, 100, 32_000, time.Hour
	w := newTestWriter(t, b, opts)
	for i := range 10 {
		w.Submit(sizedEntry(i, 10_000))
	}
	waitFor(t, 5*time.Second, "two batches of 40,000 bytes", func() bool { return w.Stats().Written == 8 }, statsString(w))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Equal(b.bytes, []int{40_000, 40_000, 20_000}) {
		t.Fatalf("batch bytes %v, want [40000 40000 20000]", b.bytes)
	}
}
