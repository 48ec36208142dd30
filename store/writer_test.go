package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakCheck registers the goroutine-leak check first, so it runs after every other cleanup
// (writers, pools, proxies) of the test.
func leakCheck(t *testing.T) {
	before := goleak.IgnoreCurrent() // goroutines of earlier tests are not this test's leaks
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// fastRetry makes outage tests quick: replay probes every 10-50 ms.
func fastRetry(t testing.TB, spool string) WriterOptions {
	return WriterOptions{
		SpoolPath: spool, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, WriteTimeout: 3 * time.Second,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

func newTestWriter(t *testing.T, b Backend, opts WriterOptions) *Writer {
	t.Helper()
	w, err := NewWriter(b, opts)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// submitAll submits entries from several goroutines, as concurrent requests would.
func submitAll(w *Writer, entries []Entry, goroutines int) {
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < len(entries); i += goroutines {
				w.Submit(entries[i])
			}
		}()
	}
	wg.Wait()
}

func statsString(w *Writer) func() string {
	return func() string { return fmt.Sprintf("%+v", w.Stats()) }
}

// drained reports whether all n entries have reached the backend and the spool is empty.
func drained(w *Writer, n int) func() bool {
	return func() bool {
		s := w.Stats()
		return s.Written+s.Replayed >= uint64(n) && s.SpoolDepth == 0 && s.QueueDepth == 0
	}
}

func TestWriterLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	leakCheck(t)
	pool, _ := migratedPool(t)
	for _, tc := range []struct {
		name string
		opts WriterOptions
	}{
		{"default queue", WriterOptions{}},
		// A queue far too small for the load: most entries overflow into the spool and come
		// back through replay, and still each is stored exactly once.
		{"tiny queue overflows to the spool", WriterOptions{QueueSize: 8, BatchSize: 64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pool.Exec(context.Background(), `TRUNCATE secureexec_calls`); err != nil {
				t.Fatal(err)
			}
			const n = 20000
			opts := tc.opts
			opts.SpoolPath = t.TempDir()
			opts.Logger = fastRetry(t, "").Logger
			w := newTestWriter(t, NewPostgres(pool), opts)
			submitAll(w, testEntries(n), 8)
			waitFor(t, 60*time.Second, "all entries written", drained(w, n), statsString(w))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if rows, distinct := rowCounts(t, pool); rows != n || distinct != n {
				t.Fatalf("rows = %d (distinct %d), want %d; %+v", rows, distinct, n, w.Stats())
			}
			s := w.Stats()
			if s.Submitted != n || s.Lost != 0 || s.Rejected != 0 || s.Written+s.Replayed != n {
				t.Fatalf("stats %+v", s)
			}
			if tc.opts.QueueSize == 8 && s.Overflowed == 0 {
				t.Fatalf("expected overflow with an 8-entry queue: %+v", s)
			}
		})
	}
}

func TestWriterOutageFlakyBackend(t *testing.T) {
	leakCheck(t)
	pool, _ := migratedPool(t)
	fb := &flakyBackend{Backend: NewPostgres(pool)}
	w := newTestWriter(t, fb, fastRetry(t, t.TempDir()))
	ctx := context.Background()

	first := testEntries(1000)
	submitAll(w, first, 4)
	waitFor(t, 20*time.Second, "first entries written", drained(w, 1000), statsString(w))

	fb.failing.Store(true)
	during := testEntries(3000)
	submitAll(w, during, 4)
	waitFor(t, 20*time.Second, "outage entries spooled", func() bool { return w.Stats().Spooled >= 3000 }, statsString(w))
	if s := w.Stats(); !s.Degraded || s.SpoolDepth < 3000 {
		t.Fatalf("during the outage: %+v", s)
	}
	// A job is readable right after its call even while the database is away.
	if got, err := w.Get(ctx, during[1234].JobID); err != nil || got.JobID != during[1234].JobID {
		t.Fatalf("Get during outage = %+v, %v", got, err)
	}

	fb.failing.Store(false)
	waitFor(t, 30*time.Second, "spool replayed", drained(w, 4000), statsString(w))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if rows, distinct := rowCounts(t, pool); rows != 4000 || distinct != 4000 {
		t.Fatalf("rows = %d (distinct %d), want 4000", rows, distinct)
	}
	if s := w.Stats(); s.Degraded || s.Lost != 0 || s.Replayed < 3000 {
		t.Fatalf("after recovery: %+v", s)
	}
	if got, err := w.Get(ctx, during[1234].JobID); err != nil || !sameJSON(t, got.Record, during[1234].Record) {
		t.Fatalf("Get after replay = %+v, %v", got, err)
	}
	if left, _ := filepath.Glob(filepath.Join(w.opts.SpoolPath, segmentPrefix+"*")); len(left) != 0 {
		t.Fatalf("replayed segments left on disk: %v", left)
	}
}

// TestWriterOutageRealSocket cuts a real TCP path to Postgres (a proxy on 127.0.0.1 that is
// stopped and started on the same port): the writer spools, then replays by itself when the
// port answers again.
func TestWriterOutageRealSocket(t *testing.T) {
	leakCheck(t)
	pool, schema := migratedPool(t)
	proxy := newTCPProxy(t, "127.0.0.1:5432")
	viaProxy := schemaPool(t, schema, proxy.addr)
	w := newTestWriter(t, NewPostgres(viaProxy), fastRetry(t, t.TempDir()))

	before := testEntries(500)
	submitAll(w, before, 2)
	waitFor(t, 20*time.Second, "written through the proxy", drained(w, 500), statsString(w))

	proxy.stop()
	during := testEntries(2000)
	submitAll(w, during, 4)
	waitFor(t, 20*time.Second, "spooled while the port is closed", func() bool { return w.Stats().Spooled >= 2000 }, statsString(w))

	proxy.start(t)
	waitFor(t, 30*time.Second, "replayed after the port reopened", drained(w, 2500), statsString(w))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if rows, distinct := rowCounts(t, pool); rows != 2500 || distinct != 2500 {
		t.Fatalf("rows = %d (distinct %d), want 2500; %+v", rows, distinct, w.Stats())
	}
}

// TestWriterDeadPortThenRestart: a writer whose database port has nothing listening spools
// everything; Close keeps it on disk; the next process (a new writer on the same spool, a
// working database) replays it at start.
func TestWriterDeadPortThenRestart(t *testing.T) {
	leakCheck(t)
	pool, schema := migratedPool(t)
	spool := t.TempDir()
	dead := schemaPool(t, schema, deadAddr(t))
	entries := testEntries(1500)

	w1 := newTestWriter(t, NewPostgres(dead), fastRetry(t, spool))
	submitAll(w1, entries, 4)
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	if s := w1.Stats(); s.Spooled != 1500 || s.Written != 0 || s.Lost != 0 {
		t.Fatalf("dead-port writer: %+v", s)
	}

	w2 := newTestWriter(t, NewPostgres(pool), fastRetry(t, spool))
	if d := w2.Stats().SpoolDepth; d != 1500 {
		t.Fatalf("restarted writer sees %d spooled entries, want 1500", d)
	}
	waitFor(t, 30*time.Second, "leftovers replayed at start", drained(w2, 1500), statsString(w2))
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if rows, distinct := rowCounts(t, pool); rows != 1500 || distinct != 1500 {
		t.Fatalf("rows = %d (distinct %d), want 1500", rows, distinct)
	}
}

// TestWriterCrashMidReplay: the database dies after taking part of a segment; the segment
// stays, and the next run replays all of it without writing anything twice.
func TestWriterCrashMidReplay(t *testing.T) {
	leakCheck(t)
	pool, _ := migratedPool(t)
	spool := t.TempDir()
	entries := testEntries(1000)

	down := &flakyBackend{Backend: NewPostgres(pool)}
	down.failing.Store(true)
	w1 := newTestWriter(t, down, fastRetry(t, spool))
	submitAll(w1, entries, 2)
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}

	// Two 100-entry chunks get in, then the database is gone again.
	partial := &flakyBackend{Backend: NewPostgres(pool), limited: true}
	partial.budget.Store(2)
	opts := fastRetry(t, spool)
	opts.ReplayBatchSize = 100
	w2 := newTestWriter(t, partial, opts)
	waitFor(t, 20*time.Second, "partial replay", func() bool { return w2.Stats().Replayed == 200 && partial.calls.Load() > 3 }, statsString(w2))
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if rows, _ := rowCounts(t, pool); rows != 200 {
		t.Fatalf("rows after partial replay = %d, want 200", rows)
	}

	w3 := newTestWriter(t, NewPostgres(pool), fastRetry(t, spool))
	waitFor(t, 20*time.Second, "full replay", func() bool { return w3.Stats().SpoolDepth == 0 }, statsString(w3))
	if err := w3.Close(); err != nil {
		t.Fatal(err)
	}
	if rows, distinct := rowCounts(t, pool); rows != 1000 || distinct != 1000 {
		t.Fatalf("rows = %d (distinct %d), want 1000", rows, distinct)
	}
}

// TestWriterTornSpool: a crash in the middle of an append leaves a torn last line; the
// complete lines are replayed and the torn one is set aside in the dead-letter file.
func TestWriterTornSpool(t *testing.T) {
	leakCheck(t)
	pool, _ := migratedPool(t)
	spool := t.TempDir()
	entries := testEntries(300)
	var buf strings.Builder
	for _, e := range entries {
		b, _ := json.Marshal(e)
		buf.Write(b)
		buf.WriteByte('\n')
	}
	buf.WriteString("not json at all\n")
	torn, _ := json.Marshal(testEntry(9999))
	buf.Write(torn[:len(torn)/2])
	if err := os.WriteFile(filepath.Join(spool, segmentPrefix+"00000000000000000007"+segmentSuffix), []byte(buf.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	w := newTestWriter(t, NewPostgres(pool), fastRetry(t, spool))
	waitFor(t, 20*time.Second, "replay", func() bool { return w.Stats().SpoolDepth == 0 }, statsString(w))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if rows, _ := rowCounts(t, pool); rows != 300 {
		t.Fatalf("rows = %d, want 300", rows)
	}
	reasons := deadLetterReasons(t, spool)
	if strings.Join(reasons, ",") != "corrupt_spool_line,torn_spool_line" {
		t.Fatalf("dead letters = %v", reasons)
	}
	// That new appends never reuse a leftover segment's number is internal/segspool's
	// TestSegments.
}

// TestWriterDeadLettersOnceAcrossFailedReplays: a replay that fails after setting a bad line
// aside resumes past that line, so the line is in the dead-letter file once however often the
// backend fails; the good lines around it are still all written.
func TestWriterDeadLettersOnceAcrossFailedReplays(t *testing.T) {
	leakCheck(t)
	pool, _ := migratedPool(t)
	spool := t.TempDir()
	var buf strings.Builder
	for i, line := range []string{"", "not json at all", ""} {
		if line == "" {
			b, _ := json.Marshal(testEntry(i))
			line = string(b)
		}
		buf.WriteString(line + "\n")
	}
	torn, _ := json.Marshal(testEntry(99))
	buf.Write(torn) // a complete record whose newline a crash lost
	if err := os.WriteFile(filepath.Join(spool, segmentPrefix+"00000000000000000007"+segmentSuffix), []byte(buf.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	backend := &flakyBackend{Backend: NewPostgres(pool)}
	backend.failing.Store(true)
	w := newTestWriter(t, backend, fastRetry(t, spool))
	waitFor(t, 20*time.Second, "several failed replays", func() bool { return backend.calls.Load() >= 5 }, statsString(w))
	backend.failing.Store(false)
	waitFor(t, 20*time.Second, "replay", func() bool { return w.Stats().SpoolDepth == 0 }, statsString(w))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if rows, _ := rowCounts(t, pool); rows != 2 {
		t.Fatalf("rows = %d, want 2", rows)
	}
	if reasons := deadLetterReasons(t, spool); strings.Join(reasons, ",") != "corrupt_spool_line,torn_spool_line" {
		t.Fatalf("dead letters = %v, want each bad line once", reasons)
	}
	if s := w.Stats(); s.Rejected != 2 {
		t.Fatalf("stats = %+v, want 2 rejected", s)
	}
}

func deadLetterReasons(t *testing.T, spool string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(spool, deadLetterFile))
	if err != nil {
		t.Fatalf("dead-letter file: %v", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var d deadLetter
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatalf("dead-letter line %q: %v", sc.Text(), err)
		}
		out = append(out, d.Reason)
	}
	return out
}

// TestWriterPoisonEntries: entries no backend can store are dead-lettered, with their exact
// bytes, and never hold up the valid ones, whether they meet the backend directly or come
// back from the spool.
func TestWriterPoisonEntries(t *testing.T) {
	leakCheck(t)
	pool, _ := migratedPool(t)
	for _, outage := range []bool{false, true} {
		t.Run(fmt.Sprintf("through the spool=%v", outage), func(t *testing.T) {
			if _, err := pool.Exec(context.Background(), `TRUNCATE secureexec_calls`); err != nil {
				t.Fatal(err)
			}
			spool := t.TempDir()
			fb := &flakyBackend{Backend: NewPostgres(pool)}
			fb.failing.Store(outage)
			w := newTestWriter(t, fb, fastRetry(t, spool))
			good := testEntries(200)
			nul, notJSON := testEntry(1), testEntry(2)
			nul.Record = json.RawMessage(`{"args":"x\u0000y"}`)
			notJSON.Record = json.RawMessage(`{"args":`)
			w.Submit(nul)
			submitAll(w, good[:100], 1)
			w.Submit(notJSON)
			submitAll(w, good[100:], 1)
			if outage {
				waitFor(t, 10*time.Second, "spooled", func() bool { return w.Stats().Spooled+w.Stats().Rejected >= 202 }, statsString(w))
				fb.failing.Store(false)
			}
			waitFor(t, 20*time.Second, "written", func() bool {
				s := w.Stats()
				return s.Written+s.Replayed == 200 && s.Rejected == 2 && s.SpoolDepth == 0
			}, statsString(w))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if rows, _ := rowCounts(t, pool); rows != 200 {
				t.Fatalf("rows = %d, want 200", rows)
			}
			got := deadLetterReasons(t, spool)
			if len(got) != 2 {
				t.Fatalf("dead letters %v, want 2", got)
			}
			for _, want := range []string{ReasonRecordNULEscape, ReasonInvalidRecordJSON} {
				if !strings.Contains(strings.Join(got, ","), want) {
					t.Errorf("dead letters %v lack %s", got, want)
				}
			}
			if _, err := w.Get(context.Background(), nul.JobID); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get(rejected) err = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestWriterCloseDrains: everything submitted before Close is in the backend when Close
// returns, even with a slow backend and a full queue.
func TestWriterCloseDrains(t *testing.T) {
	leakCheck(t)
	pool, _ := migratedPool(t)
	slow := &flakyBackend{Backend: NewPostgres(pool), delay: 30 * time.Millisecond}
	opts := fastRetry(t, t.TempDir())
	opts.QueueSize = 1 << 14
	w := newTestWriter(t, slow, opts)
	const n = 5000
	submitAll(w, testEntries(n), 4)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s := w.Stats()
	rows, _ := rowCounts(t, pool)
	if rows+int(s.SpoolDepth) != n || s.Lost != 0 {
		t.Fatalf("after Close: %d rows + %d spooled, want %d; %+v", rows, s.SpoolDepth, n, s)
	}
	if rows != n {
		t.Fatalf("rows = %d, want all %d written by Close with a working backend; %+v", rows, n, s)
	}
	// A late Submit is not dropped: it waits in the spool for the next run.
	late := testEntry(n + 1)
	w.Submit(late)
	w2 := newTestWriter(t, NewPostgres(pool), fastRetry(t, opts.SpoolPath))
	waitFor(t, 10*time.Second, "late entry replayed", func() bool {
		_, err := NewPostgres(pool).Get(context.Background(), late.JobID)
		return err == nil
	}, statsString(w2))
}

// TestWriterGetInFlight: GET /exec/jobs/{id} right after the call finds the job, before the
// backend has it.
func TestWriterGetInFlight(t *testing.T) {
	leakCheck(t)
	emb := openTestEmbedded(t, t.TempDir())
	gate := make(chan struct{})
	blocked := &blockingBackend{Backend: emb, gate: gate}
	w := newTestWriter(t, blocked, fastRetry(t, t.TempDir()))
	e := testEntry(1)
	w.Submit(e)
	got, err := w.Get(context.Background(), strings.ToUpper(e.JobID))
	if err != nil || got.JobID != e.JobID || !sameJSON(t, got.Record, e.Record) {
		t.Fatalf("Get in flight = %+v, %v", got, err)
	}
	if _, err := emb.Get(context.Background(), e.JobID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("backend already has the entry (%v): the test proves nothing", err)
	}
	close(gate)
	waitFor(t, 10*time.Second, "written", drained(w, 1), statsString(w))
	if _, err := emb.Get(context.Background(), e.JobID); err != nil {
		t.Fatal(err)
	}
	if got, err := w.Get(context.Background(), e.JobID); err != nil || got.JobID != e.JobID {
		t.Fatalf("Get after write = %+v, %v", got, err)
	}
	if _, err := w.Get(context.Background(), testEntry(2).JobID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(unknown) err = %v", err)
	}
}

// blockingBackend holds every WriteBatch until gate closes.
type blockingBackend struct {
	Backend
	gate chan struct{}
}

func (b *blockingBackend) WriteBatch(ctx context.Context, entries []Entry) error {
	select {
	case <-b.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Backend.WriteBatch(ctx, entries)
}

func TestWriterEmbeddedSurvivesRestart(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.db")
	entries := testEntries(2000)
	for run := range 2 {
		emb, err := OpenEmbedded(path)
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWriter(emb, fastRetry(t, filepath.Join(dir, "spool")))
		if err != nil {
			t.Fatal(err)
		}
		submitAll(w, entries[run*1000:(run+1)*1000], 4)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := emb.Close(); err != nil {
			t.Fatal(err)
		}
	}
	emb, err := OpenEmbedded(path)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	if n, err := emb.Count(); err != nil || n != 2000 {
		t.Fatalf("Count = %d, %v; want 2000", n, err)
	}
}

func TestNewWriterNeedsSpool(t *testing.T) {
	if _, err := NewWriter(nil, WriterOptions{SpoolPath: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "backend_required") {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewWriter(discardBackend{}, WriterOptions{}); err == nil || !strings.Contains(err.Error(), "spool_path_required") {
		t.Fatalf("err = %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWriter(discardBackend{}, WriterOptions{SpoolPath: filepath.Join(file, "spool")}); err == nil {
		t.Fatal("a spool under a regular file must be a start-up error")
	}
}

// discardBackend accepts everything at once, so BenchmarkWriterSubmit measures the writer.
type discardBackend struct{}

func (discardBackend) WriteBatch(context.Context, []Entry) error  { return nil }
func (discardBackend) Get(context.Context, string) (Entry, error) { return Entry{}, ErrNotFound }
func (discardBackend) Close() error                               { return nil }

// BenchmarkWriterSubmit is the cost a request pays to audit itself, from one goroutine and
// from many. A submitter faster than the batcher fills the queue; the overflow fraction says
// how much of the run took the (slower, spool-bound) overflow path.
func BenchmarkWriterSubmit(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		b.Run(fmt.Sprintf("parallel=%v", parallel), func(b *testing.B) {
			w, err := NewWriter(discardBackend{}, WriterOptions{SpoolPath: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			entries := testEntries(4096)
			b.ReportAllocs()
			b.ResetTimer()
			if parallel {
				b.RunParallel(func(pb *testing.PB) {
					for i := 0; pb.Next(); i++ {
						w.Submit(entries[i&4095])
					}
				})
			} else {
				for i := 0; i < b.N; i++ {
					w.Submit(entries[i&4095])
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(w.Stats().Overflowed)/float64(b.N), "overflowed/op")
		})
	}
}

// BenchmarkWriterPostgres pushes b.N entries through the writer into Postgres as fast as one
// goroutine can submit them and reports end-to-end rows/s (first Submit to last committed
// row): the writer's sustained throughput, overflow and replay included.
func BenchmarkWriterPostgres(b *testing.B) {
	pool, _ := migratedPool(b)
	entries := testEntries(b.N)
	w, err := NewWriter(NewPostgres(pool), WriterOptions{SpoolPath: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for _, e := range entries {
		w.Submit(e)
	}
	// Done when every entry is committed, including those that overflowed into the spool.
	deadline := time.Now().Add(5 * time.Minute)
	for !drained(w, b.N)() {
		if time.Now().After(deadline) {
			b.Fatalf("not drained: %+v", w.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rows/s")
	b.StopTimer()
	s := w.Stats()
	b.ReportMetric(float64(s.Overflowed)/float64(b.N), "overflowed/op")
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// sizesBackend records the size of every batch it is given.
type sizesBackend struct {
	discardBackend
	mu    sync.Mutex
	sizes []int
}

func (b *sizesBackend) WriteBatch(_ context.Context, entries []Entry) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sizes = append(b.sizes, len(entries))
	return nil
}

// TestWriterBatchesAreNotSplitBetweenWriters: what arrives within FlushInterval is written as
// one batch, however many writers are free; batches are split only at BatchSize.
func TestWriterBatchesAreNotSplitBetweenWriters(t *testing.T) {
	leakCheck(t)
	b := &sizesBackend{}
	opts := fastRetry(t, t.TempDir())
	opts.Workers, opts.BatchSize, opts.FlushInterval = 4, 100, time.Hour
	w := newTestWriter(t, b, opts)
	var entries []Entry
	for i := range 250 {
		entries = append(entries, testEntry(i))
	}
	submitAll(w, entries, 8)
	waitFor(t, 5*time.Second, "two full batches", func() bool { return w.Stats().Written == 200 }, statsString(w))
	if err := w.Close(); err != nil { // the last 50 wait for their FlushInterval, or Close
		t.Fatal(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Equal(b.sizes, []int{100, 100, 50}) {
		t.Fatalf("batch sizes %v, want [100 100 50]", b.sizes)
	}
}

// downReadsBackend fails every Get, like a database that is away, and holds every WriteBatch
// until gate closes.
type downReadsBackend struct {
	blockingBackend
	readsDown atomic.Bool
}

func (b *downReadsBackend) Get(ctx context.Context, jobID string) (Entry, error) {
	if b.readsDown.Load() {
		return Entry{}, errInjectedOutage
	}
	return b.blockingBackend.Get(ctx, jobID)
}

// TestWriterGetFindsSpooledLeftovers: a job that an earlier run spooled (the database was
// away when it stopped) is found by GET while it waits in the spool, before replay has written
// it, whether the database answers "not found" or does not answer at all; it is never reported
// missing.
func TestWriterGetFindsSpooledLeftovers(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	emb := openTestEmbedded(t, dir)
	spool := filepath.Join(dir, "spool")
	entries := testEntries(50)

	down := &flakyBackend{Backend: emb}
	down.failing.Store(true)
	w1 := newTestWriter(t, down, fastRetry(t, spool))
	submitAll(w1, entries, 2)
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	if s := w1.Stats(); s.SpoolDepth != 50 {
		t.Fatalf("first run left %d entries spooled, want 50; %+v", s.SpoolDepth, s)
	}

	gate := make(chan struct{})
	b := &downReadsBackend{blockingBackend: blockingBackend{Backend: emb, gate: gate}}
	w2 := newTestWriter(t, b, fastRetry(t, spool))
	ctx := context.Background()
	for _, readsDown := range []bool{false, true} {
		b.readsDown.Store(readsDown)
		for _, i := range []int{0, 17, 49} {
			got, err := w2.Get(ctx, entries[i].JobID)
			if err != nil || got.JobID != entries[i].JobID || !sameJSON(t, got.Record, entries[i].Record) {
				t.Fatalf("database reads down=%v: Get(spooled entry %d) = %+v, %v; want the spooled entry", readsDown, i, got, err)
			}
		}
	}
	b.readsDown.Store(false)
	if _, err := w2.Get(ctx, testEntry(99).JobID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(unknown) err = %v, want ErrNotFound", err)
	}
	close(gate)
	waitFor(t, 10*time.Second, "leftovers replayed", func() bool { return w2.Stats().SpoolDepth == 0 }, statsString(w2))
	if got, err := w2.Get(ctx, entries[17].JobID); err != nil || got.JobID != entries[17].JobID {
		t.Fatalf("Get after replay = %+v, %v", got, err)
	}
}

// slowLinkBackend takes as long to write a batch as its records take to cross a link of
// bytesPerSec, like a database whose COPY time grows with the bytes sent; a batch that cannot
// cross before its deadline fails, as a timed-out COPY does.
type slowLinkBackend struct {
	Backend
	bytesPerSec int
}

func (b *slowLinkBackend) WriteBatch(ctx context.Context, entries []Entry) error {
	size := 0
	for _, e := range entries {
		size += len(e.Record)
	}
	select {
	case <-time.After(time.Duration(size) * time.Second / time.Duration(b.bytesPerSec)):
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Backend.WriteBatch(ctx, entries)
}

// TestWriterReplaysLargeRecords: a spool of large records drains even when the backend could
// not write all of it within one WriteTimeout. Replay chunks were bounded only by their number
// of entries (ReplayBatchSize), so a chunk of big records timed out, was retried whole from the
// same offset, and timed out again, forever: the spool never drained, and the writer stayed
// degraded, sending every new entry to the spool too.
func TestWriterReplaysLargeRecords(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	emb := openTestEmbedded(t, dir)
	spool := filepath.Join(dir, "spool")
	big := strings.Repeat("QUJDRA", 64<<10/6) // a 64 KiB tool output, as base64
	entries := testEntries(256)               // 16 MiB of records
	for i := range entries {
		rec, err := json.Marshal(map[string]any{"jobId": entries[i].JobID, "result": map[string]string{"body": big}})
		if err != nil {
			t.Fatal(err)
		}
		entries[i].Record = rec
	}
	down := &flakyBackend{Backend: emb}
	down.failing.Store(true)
	w1 := newTestWriter(t, down, fastRetry(t, spool))
	submitAll(w1, entries, 4)
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}

	// 20 MiB/s: all of the spool needs 0.8 s, more than the 600 ms a write may take.
	opts := fastRetry(t, spool)
	opts.WriteTimeout = 600 * time.Millisecond
	w2 := newTestWriter(t, &slowLinkBackend{Backend: emb, bytesPerSec: 20 << 20}, opts)
	waitFor(t, 30*time.Second, "large spooled records replayed", drained(w2, len(entries)), statsString(w2))
	if n, err := emb.Count(); err != nil || n != len(entries) {
		t.Fatalf("Count = %d, %v; want %d", n, err, len(entries))
	}
}

// TestWriterDeadLettersOutOfRangeTimestamp: an entry refused for its timestamp (a year JSON
// cannot write) is kept in the dead-letter file like any other refused entry, whether the
// backend refuses it or the spool cannot encode it; it is not lost.
func TestWriterDeadLettersOutOfRangeTimestamp(t *testing.T) {
	leakCheck(t)
	for _, outage := range []bool{false, true} {
		t.Run(fmt.Sprintf("outage=%v", outage), func(t *testing.T) {
			dir := t.TempDir()
			emb := openTestEmbedded(t, dir)
			fb := &flakyBackend{Backend: emb}
			fb.failing.Store(outage)
			spool := filepath.Join(dir, "spool")
			w := newTestWriter(t, fb, fastRetry(t, spool))
			e := testEntry(1)
			e.Timestamp = time.Date(10000, 1, 2, 3, 4, 5, 0, time.UTC)
			w.Submit(e)
			waitFor(t, 10*time.Second, "refused", func() bool { s := w.Stats(); return s.Rejected+s.Lost > 0 }, statsString(w))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if s := w.Stats(); s.Rejected != 1 || s.Lost != 0 {
				t.Fatalf("stats = %+v, want 1 rejected and none lost", s)
			}
			if got := deadLetterReasons(t, spool); len(got) != 1 {
				t.Fatalf("dead letters %v, want 1", got)
			}
			b, err := os.ReadFile(filepath.Join(spool, deadLetterFile))
			if err != nil {
				t.Fatal(err)
			}
			var d deadLetter
			if err := json.Unmarshal(b, &d); err != nil || d.Entry == nil || d.Entry.JobID != e.JobID ||
				!strings.HasPrefix(d.EntryTimestamp, "10000-01-02T03:04:05") || !sameJSON(t, d.RecordBytes, e.Record) {
				t.Fatalf("dead letter %s (%v): want the entry, its record and its timestamp", b, err)
			}
		})
	}
}

// TestWriterRecoversWithoutSpool: while the spool cannot be written (a full disk, a read-only
// directory), one failed write must not leave the writer degraded for good, sending every
// later batch to the broken spool (lost) although the database is back.
func TestWriterRecoversWithoutSpool(t *testing.T) {
	leakCheck(t)
	pool, _ := migratedPool(t)
	fb := &flakyBackend{Backend: NewPostgres(pool)}
	opts := fastRetry(t, t.TempDir())
	w := newTestWriter(t, fb, opts)
	// The spool's directory is moved away and a file takes its name: every spool append fails.
	if err := os.Rename(opts.SpoolPath, opts.SpoolPath+".gone"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(opts.SpoolPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	fb.failing.Store(true)
	w.Submit(testEntry(0))
	waitFor(t, 10*time.Second, "the failed batch counted lost", func() bool { return w.Stats().Lost == 1 }, statsString(w))
	waitFor(t, 10*time.Second, "the writer to leave the degraded state", func() bool { return !w.Stats().Degraded }, statsString(w))

	fb.failing.Store(false)
	after := testEntries(100)
	submitAll(w, after, 4)
	waitFor(t, 10*time.Second, "later entries written", func() bool { return w.Stats().Written == 100 }, statsString(w))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if rows, _ := rowCounts(t, pool); rows != 100 {
		t.Fatalf("rows = %d, want 100; %+v", rows, w.Stats())
	}
	if s := w.Stats(); s.Lost != 1 || s.Degraded {
		t.Fatalf("stats %+v", s)
	}
}

// TestWriterDeadLetterFailureCountsOnce: an entry whose dead-letter write fails is lost, not
// rejected: counting it as both says it is kept in the dead-letter file when it is not, and
// makes the counters add up to more entries than were submitted.
func TestWriterDeadLetterFailureCountsOnce(t *testing.T) {
	leakCheck(t)
	pool, _ := migratedPool(t)
	opts := fastRetry(t, t.TempDir())
	// The dead-letter file's name is taken by a directory: it cannot be written.
	if err := os.Mkdir(filepath.Join(opts.SpoolPath, deadLetterFile), 0o700); err != nil {
		t.Fatal(err)
	}
	w := newTestWriter(t, NewPostgres(pool), opts)
	e := testEntry(0)
	e.Record = json.RawMessage(`{"note":"\u0000"}`)
	w.Submit(e)
	w.Submit(testEntry(1))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.Lost != 1 || s.Rejected != 0 || s.Written != 1 {
		t.Fatalf("stats %+v, want 1 written, 1 lost, 0 rejected", s)
	}
}
