package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/secureexec/secureexec/internal/segspool"
)

// WriterOptions tunes a Writer; zero values take the defaults in brackets.
type WriterOptions struct {
	// SpoolPath is the directory of the spool's segment files and of rejected.jsonl. Required:
	// without it an outage would lose records.
	SpoolPath string
	// QueueSize bounds the in-memory queue [16384]; past it Submit spools directly.
	QueueSize int
	// QueueBytes bounds the records in the queue [64 MiB]: a record may be as large as a
	// request and its output, and a count alone would let an outage hold gigabytes. Past it
	// Submit spools directly, as when the queue is full.
	QueueBytes int
	// BatchSize is the most entries per WriteBatch from the queue [512].
	BatchSize int
	// BatchBytes hands a batch over once its records reach this size [8 MiB], so that one
	// batch of large records is written within WriteTimeout.
	BatchBytes int
	// Workers is how many batches may be in flight to the backend at once [4]: a commit
	// waits on the disk, so overlapping them multiplies throughput. One goroutine gathers the
	// batches; a writer takes the next one only when it is free.
	Workers int
	// FlushInterval is the longest an entry waits for its batch to fill [20ms].
	FlushInterval time.Duration
	// WriteTimeout is the deadline of each WriteBatch [5s].
	WriteTimeout time.Duration
	// ReplayBatchSize is the most entries per WriteBatch during replay [2048].
	ReplayBatchSize int
	// RetryMin and RetryMax bound the replay backoff while the backend is down [100ms, 5s].
	RetryMin, RetryMax time.Duration
	// SegmentBytes is the size at which a spool segment is sealed [64 MiB].
	SegmentBytes int64
	// MaxOverflowBytes caps the encoded entries Submit holds for the spool when the queue is
	// full [32 MiB]; past it the submitting goroutine writes the spool itself.
	MaxOverflowBytes int
	// IndexSize is how many not-yet-written entries Get can find [65536]; negative disables.
	IndexSize int
	// IndexBytes bounds the records the index keeps [256 MiB]; past it the oldest are
	// forgotten, and Get finds them in the spool or the backend instead. Keep it above
	// QueueBytes + (Workers+1)·BatchBytes + MaxOverflowBytes (136 MiB by default), so that
	// only entries already spooled or written are forgotten.
	IndexBytes int
	// Logger receives warnings and errors [slog.Default()].
	Logger *slog.Logger
}

func (o WriterOptions) withDefaults() WriterOptions {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.QueueSize, 16384)
	def(&o.QueueBytes, 64<<20)
	def(&o.BatchSize, 512)
	def(&o.BatchBytes, 8<<20)
	def(&o.IndexBytes, 256<<20)
	def(&o.Workers, 4)
	def(&o.ReplayBatchSize, 2048)
	def(&o.MaxOverflowBytes, 32<<20)
	if o.IndexSize == 0 {
		o.IndexSize = 65536
	}
	defDur(&o.FlushInterval, 20*time.Millisecond)
	defDur(&o.WriteTimeout, 5*time.Second)
	defDur(&o.RetryMin, 100*time.Millisecond)
	defDur(&o.RetryMax, 5*time.Second)
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Stats are the writer's counters (monotonic) and gauges, for metrics and tests.
type Stats struct {
	Submitted   uint64 // entries given to Submit
	Overflowed  uint64 // of those, sent straight to the spool because the queue was full (in entries or bytes)
	Written     uint64 // entries the backend accepted from the queue
	Spooled     uint64 // entries appended to the spool (overflow, failed or degraded batches)
	Replayed    uint64 // entries the backend accepted from the spool
	Rejected    uint64 // entries moved to the dead-letter file: they can never be stored
	Lost        uint64 // entries neither stored nor spooled (the spool's disk failed); should stay 0
	WriteErrors uint64 // failed WriteBatch calls
	QueueDepth  int    // entries in the queue now
	SpoolDepth  int64  // spooled entries not yet replayed
	SpoolBytes  int64  // bytes of spool segments on disk
	Degraded    bool   // the backend is considered down: batches go to the spool until replay succeeds
}

// Writer is the asynchronous audit writer: Submit never blocks on the backend, batches are
// written in the background, and whatever the backend cannot take goes to the spool and is
// replayed when it can. Every entry submitted before Close ends up in the backend, the spool
// or (if it can never be stored) the dead-letter file.
type Writer struct {
	backend Backend
	opts    WriterOptions
	log     *slog.Logger
	spool   *segspool.Spool
	index   *pendingIndex

	gate   sync.RWMutex // Submit holds it shared; Close takes it to turn Submit away from the queue
	closed bool

	queue       chan Entry   // Submit -> the gatherer
	queuedBytes atomic.Int64 // of the records in queue, kept within QueueBytes
	batches     chan []Entry // the gatherer -> the writers
	freeBatches chan []Entry // the writers -> the gatherer: written batches, emptied

	ovMu      sync.Mutex // guards ov
	ov        *spoolEncoder
	ovFlushMu sync.Mutex // one overflow flush at a time; guards ovSpare
	ovSpare   *spoolEncoder
	ovSignal  chan struct{}

	replaySignal chan struct{}
	degraded     atomic.Bool

	stop         chan struct{}
	replayCtx    context.Context
	cancelReplay context.CancelFunc
	wg           sync.WaitGroup
	closeOnce    sync.Once
	closeErr     error

	submitted, overflowed, written, spooled, replayed atomic.Uint64
	rejected, lost, writeErrors                       atomic.Uint64
}

// NewWriter opens the spool (replaying what an earlier process left there as soon as the
// backend takes it) and starts the writer's goroutines; Close stops them. The writer does not
// own backend: close it after the writer.
func NewWriter(backend Backend, opts WriterOptions) (*Writer, error) {
	opts = opts.withDefaults()
	if backend == nil {
		return nil, errors.New("store: writer: backend_required")
	}
	if opts.SpoolPath == "" {
		return nil, errors.New("store: writer: spool_path_required")
	}
	sp, err := openSpool(opts.SpoolPath, opts.SegmentBytes)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Writer{
		backend:      backend,
		opts:         opts,
		log:          opts.Logger.With("component", "audit_writer"),
		spool:        sp,
		index:        newPendingIndex(opts.IndexSize, opts.IndexBytes),
		queue:        make(chan Entry, opts.QueueSize),
		batches:      make(chan []Entry),
		freeBatches:  make(chan []Entry, opts.Workers+1),
		ov:           newSpoolEncoder(),
		ovSpare:      newSpoolEncoder(),
		ovSignal:     make(chan struct{}, 1),
		replaySignal: make(chan struct{}, 1),
		stop:         make(chan struct{}),
		replayCtx:    ctx,
		cancelReplay: cancel,
	}
	if d := sp.Lines(); d > 0 {
		w.log.Info("audit spool has entries from an earlier run; replaying", "entries", d, "dir", opts.SpoolPath)
	}
	w.wg.Add(3 + w.opts.Workers)
	go w.runGatherer()
	for range w.opts.Workers {
		go w.runWriter()
	}
	go w.runOverflow()
	go w.runReplayer()
	return w, nil
}

// Submit hands e to the writer and returns at once: it never waits for the backend. When the
// queue is full the entry is encoded for the spool instead, which a background goroutine
// fsyncs; only if that backlog also passes MaxOverflowBytes (the disk cannot keep up) does the
// caller write the spool itself. A zero Timestamp becomes now (UTC, microseconds, like every
// stored timestamp), an empty SchemaVersion "v1". The writer owns e.Record from here on: do not
// modify it. A record that is not JSON at all is dead-lettered on the spot (a rare programming
// error, the one case where Submit does file I/O besides the overflow backlog).
func (w *Writer) Submit(e Entry) {
	if e.Timestamp.IsZero() {
		e.Timestamp = time.Now()
	}
	// The precision and zone both backends store, so Get answers the same before and after
	// the write.
	e.Timestamp = normalizeTime(e.Timestamp)
	if e.SchemaVersion == "" {
		e.SchemaVersion = DefaultSchemaVersion
	}
	w.submitted.Add(1)
	w.gate.RLock()
	if w.closed {
		w.gate.RUnlock()
		w.submitLate(e)
		return
	}
	w.index.put(e)
	n := int64(len(e.Record))
	if w.queuedBytes.Add(n) <= int64(w.opts.QueueBytes) {
		select {
		case w.queue <- e:
			w.gate.RUnlock()
			return
		default:
		}
	}
	w.queuedBytes.Add(-n)
	w.overflowed.Add(1)
	w.ovMu.Lock()
	err := w.ov.add(e)
	full := w.ov.buf.Len() >= w.opts.MaxOverflowBytes
	w.ovMu.Unlock()
	w.gate.RUnlock()
	if err != nil {
		w.index.remove([]Entry{e})
		w.deadLetter(e, ReasonInvalidRecordJSON, err.Error())
		return
	}
	select {
	case w.ovSignal <- struct{}{}:
	default:
	}
	if full {
		w.flushOverflow()
	}
}

// submitLate handles an entry submitted after Close: it goes straight to the spool (the next
// process replays it), because an audit record is never dropped.
func (w *Writer) submitLate(e Entry) {
	w.log.Warn("audit entry submitted after Close; spooling it for the next run", "job_id", e.JobID)
	enc := newSpoolEncoder()
	if err := enc.add(e); err != nil {
		w.deadLetter(e, ReasonInvalidRecordJSON, err.Error())
		return
	}
	w.appendSpool(enc)
}

// Get finds a job: first among the entries accepted but not yet written (so a job is readable
// the moment its call returns, and during an outage), then in the backend, then in the spool,
// which holds entries the index does not know: those an earlier run left there, and those a
// long outage pushed out of the index.
func (w *Writer) Get(ctx context.Context, jobID string) (Entry, error) {
	if e, ok := w.index.get(jobID); ok {
		return e, nil
	}
	// Read before the backend: with the spool empty then, every entry of an earlier run was
	// already in the backend when it was asked.
	spooled := w.spool.Lines() > 0
	e, err := w.backend.Get(ctx, jobID)
	if err == nil || !spooled {
		return e, err
	}
	if se, ok := w.findSpooled(ctx, jobID); ok {
		return se, nil
	}
	if errors.Is(err, ErrNotFound) {
		// Replay writes a segment's lines before it removes the segment: an entry that was in
		// neither place a moment ago was being written, and the backend has it now.
		return w.backend.Get(ctx, jobID)
	}
	return e, err
}

// findSpooled searches the spool's segments for jobID. Only spool lines are read (our own
// encoding puts the job id first), and only while ctx lasts.
func (w *Writer) findSpooled(ctx context.Context, jobID string) (Entry, bool) {
	id, err := uuid.Parse(jobID)
	if err != nil {
		return Entry{}, false
	}
	want := []byte(id.String())
	const prefix = `{"jobId":"`
	for _, seg := range w.spool.Contents() {
		if ctx.Err() != nil {
			return Entry{}, false
		}
		sr, err := w.spool.OpenSegment(&seg)
		if err != nil {
			continue // removed since: replayed
		}
		for n := 0; ; n++ {
			line, torn, err := sr.Next()
			if err != nil || (n%4096 == 0 && ctx.Err() != nil) {
				break
			}
			if torn || len(line) < len(prefix)+len(want) || !bytes.HasPrefix(line, []byte(prefix)) ||
				!bytes.EqualFold(line[len(prefix):len(prefix)+len(want)], want) {
				continue
			}
			e, err := decodeSpoolLine(line)
			if err != nil || Validate(e) != nil {
				continue // set aside at replay, never stored
			}
			sr.Close()
			return e, true
		}
		sr.Close()
	}
	return Entry{}, false
}

// Stats returns a snapshot of the counters.
func (w *Writer) Stats() Stats {
	return Stats{
		Submitted:   w.submitted.Load(),
		Overflowed:  w.overflowed.Load(),
		Written:     w.written.Load(),
		Spooled:     w.spooled.Load(),
		Replayed:    w.replayed.Load(),
		Rejected:    w.rejected.Load(),
		Lost:        w.lost.Load(),
		WriteErrors: w.writeErrors.Load(),
		QueueDepth:  len(w.queue),
		SpoolDepth:  w.spool.Lines(),
		SpoolBytes:  w.spool.Bytes(),
		Degraded:    w.degraded.Load(),
	}
}

// Close stops accepting entries into the queue, writes what is queued (to the backend, or the
// spool if the backend fails within WriteTimeout), stops replay and waits for every goroutine.
// Entries still in the spool stay there for the next run. Close is idempotent.
func (w *Writer) Close() error {
	w.closeOnce.Do(func() {
		w.gate.Lock()
		w.closed = true
		w.gate.Unlock()
		close(w.stop)
		w.cancelReplay()
		w.wg.Wait()
		w.drainSpool()
		w.closeErr = w.spool.Close()
	})
	return w.closeErr
}

// closeReplayTimeout bounds the last replay at Close.
const closeReplayTimeout = 15 * time.Second

// drainSpool makes one last attempt, bounded in time, to move what is spooled into the
// backend, so that a clean shutdown with the database up leaves the spool empty. Whatever
// it cannot write stays spooled and is replayed at the next start. Every goroutine is
// stopped by now, so the replay context can be replaced.
func (w *Writer) drainSpool() {
	if w.spool.Lines() == 0 {
		return
	}
	w.replayCtx, w.cancelReplay = context.WithTimeout(context.Background(), closeReplayTimeout)
	defer w.cancelReplay()
	if err := w.replayAll(); err != nil {
		w.log.Warn("audit spool not fully replayed at close; the rest is replayed at the next start",
			"err", err, "spool_entries", w.spool.Lines())
	}
}

// runGatherer owns the queue: it gathers entries into one batch at a time, and hands the batch
// to the first free writer once it is full (BatchSize) or FlushInterval has passed since its
// first entry. While every writer is busy the batch keeps filling up to BatchSize, so batches
// grow with the load instead of being split between writers: at a few hundred calls a second
// four batchers that each gathered for themselves wrote a handful of rows per COPY.
func (w *Writer) runGatherer() {
	defer w.wg.Done()
	defer close(w.batches)
	batch := w.newBatch()
	batchBytes := 0
	full := func() bool { return len(batch) >= w.opts.BatchSize || batchBytes >= w.opts.BatchBytes }
	take := func(e Entry) {
		w.queuedBytes.Add(-int64(len(e.Record)))
		batch = append(batch, e)
		batchBytes += len(e.Record)
	}
	ready := false // full, or FlushInterval old: the next free writer takes it
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var in <-chan Entry
		if !full() {
			in = w.queue
		}
		var out chan<- []Entry
		if ready {
			out = w.batches
		}
		select {
		case e := <-in:
			take(e)
			if len(batch) == 1 {
				timer.Reset(w.opts.FlushInterval)
			}
			ready = ready || full()
		case <-timer.C:
			ready = len(batch) > 0
		case out <- batch:
			timer.Stop()
			batch, batchBytes, ready = w.newBatch(), 0, false
		case <-w.stop:
			timer.Stop()
			// Submit can no longer reach the queue (Close holds the gate), so draining it
			// until empty drains it for good.
			for {
				select {
				case e := <-w.queue:
					take(e)
					if full() {
						w.batches <- batch
						batch, batchBytes = w.newBatch(), 0
					}
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				w.batches <- batch
			}
			return
		}
	}
}

// runWriter writes the batches the gatherer hands it.
func (w *Writer) runWriter() {
	defer w.wg.Done()
	enc := newSpoolEncoder() // this writer's own, for spooling its batches
	for batch := range w.batches {
		enc = w.flush(batch, enc)
		clear(batch) // drop references to records already handled
		select {
		case w.freeBatches <- batch[:0]:
		default:
		}
	}
}

// newBatch reuses a written batch's array when one is free.
func (w *Writer) newBatch() []Entry {
	select {
	case b := <-w.freeBatches:
		return b
	default:
		return make([]Entry, 0, w.opts.BatchSize)
	}
}

// flush writes one batch to the backend, or to the spool when the backend fails or is known
// to be down (then the replayer, not every batch, probes it).
func (w *Writer) flush(batch []Entry, enc *spoolEncoder) *spoolEncoder {
	if len(batch) == 0 {
		return enc
	}
	if !w.degraded.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), w.opts.WriteTimeout)
		err := w.write(ctx, batch, &w.written)
		cancel()
		if err == nil {
			return enc
		}
		w.degraded.Store(true)
		w.log.Warn("audit backend write failed; spooling until it recovers", "err", err, "entries", len(batch))
	}
	enc.reset()
	for _, e := range batch {
		if err := enc.add(e); err != nil {
			w.index.remove([]Entry{e})
			w.deadLetter(e, ReasonInvalidRecordJSON, err.Error())
		}
	}
	w.appendSpool(enc)
	if enc.buf.Cap() > 4<<20 {
		return newSpoolEncoder() // give a huge batch's memory back
	}
	return enc
}

// write calls WriteBatch and settles its outcome: a nil return means every entry is now in the
// backend or the dead-letter file. counter counts the entries the backend accepted.
func (w *Writer) write(ctx context.Context, entries []Entry, counter *atomic.Uint64) error {
	err := w.backend.WriteBatch(ctx, entries)
	var rej *RejectError
	switch {
	case err == nil:
		counter.Add(uint64(len(entries)))
	case errors.As(err, &rej):
		for _, r := range rej.Rejected {
			if r.Index < 0 || r.Index >= len(entries) {
				w.log.Error("audit backend rejected an entry outside its batch", "index", r.Index, "job_id", r.JobID)
				continue
			}
			w.deadLetter(entries[r.Index], r.Reason, r.Detail)
		}
		counter.Add(uint64(len(entries) - len(rej.Rejected)))
	default:
		w.writeErrors.Add(1)
		return err
	}
	w.index.remove(entries)
	return nil
}

// appendSpool fsyncs enc's lines into the spool and wakes the replayer. It wakes it when the
// append fails too: with nothing spooled the replayer ends the degraded state, so later batches
// try the backend again instead of all following this one into a spool that cannot take them.
func (w *Writer) appendSpool(enc *spoolEncoder) {
	if enc.lines == 0 {
		return
	}
	if err := w.spool.Append(enc.buf.Bytes(), enc.lines); err != nil {
		w.lost.Add(uint64(enc.lines))
		w.log.Error("audit spool write failed; entries lost", "err", err, "entries", enc.lines)
	} else {
		w.spooled.Add(uint64(enc.lines))
	}
	select {
	case w.replaySignal <- struct{}{}:
	default:
	}
}

// runOverflow moves what Submit encoded while the queue was full into the spool.
func (w *Writer) runOverflow() {
	defer w.wg.Done()
	for {
		select {
		case <-w.ovSignal:
			w.flushOverflow()
		case <-w.stop:
			// Close holds the gate before closing stop, so no Submit adds to ov any more.
			w.flushOverflow()
			return
		}
	}
}

func (w *Writer) flushOverflow() {
	w.ovFlushMu.Lock()
	defer w.ovFlushMu.Unlock()
	w.ovMu.Lock()
	full := w.ov
	w.ov = w.ovSpare
	w.ovMu.Unlock()
	w.appendSpool(full)
	if full.buf.Cap() > 4<<20 {
		full = newSpoolEncoder()
	}
	full.reset()
	w.ovSpare = full
}

// runReplayer drains the spool into the backend: at start (leftovers of an earlier run), when
// woken by a spool append, and, while the backend fails, on an exponential backoff with
// jitter between RetryMin and RetryMax.
func (w *Writer) runReplayer() {
	defer w.wg.Done()
	var wait time.Duration
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-w.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
		if err := w.replayAll(); err != nil {
			if w.replayCtx.Err() != nil {
				return
			}
			wait = w.nextBackoff(wait)
			w.log.Warn("audit spool replay failed; retrying", "err", err, "retry_in", wait,
				"spool_entries", w.spool.Lines())
			continue
		}
		wait = 0
		select {
		case <-w.stop:
			return
		case <-w.replaySignal:
		}
	}
}

func (w *Writer) nextBackoff(prev time.Duration) time.Duration {
	next := prev * 2
	if next < w.opts.RetryMin {
		next = w.opts.RetryMin
	}
	if next > w.opts.RetryMax {
		next = w.opts.RetryMax
	}
	// Jitter of up to a quarter, so replicas that lost the database together do not return
	// to it in lockstep.
	return next - time.Duration(rand.Int64N(int64(next)/4+1))
}

// replayAll replays sealed segments, oldest first, until the spool is empty or the backend
// fails. A segment is removed only once all of it is written, so after a crash it is replayed
// again from the start, which idempotent writes make harmless.
func (w *Writer) replayAll() error {
	for {
		if err := w.replayCtx.Err(); err != nil {
			return err
		}
		seg, err := w.spool.Next()
		if err != nil {
			return err
		}
		if seg == nil {
			// Nothing spooled: whatever failed before has been replayed, so batches may try
			// the backend again.
			w.degraded.Store(false)
			return nil
		}
		if err := w.replaySegment(seg); err != nil {
			return err
		}
		if err := w.spool.Remove(seg); err != nil {
			return err
		}
	}
}

// replayChunkBytes bounds the spool bytes behind one replay write, as ReplayBatchSize bounds
// its entries: a chunk must reach the backend within WriteTimeout, or it is retried, whole and
// from the same offset, for ever. 8 MiB crosses a 2 MB/s link in 4 s.
const replayChunkBytes = 8 << 20

func (w *Writer) replaySegment(seg *segspool.Segment) error {
	sr, err := w.spool.OpenSegment(seg)
	if err != nil {
		return err
	}
	defer sr.Close()
	chunk := make([]Entry, 0, w.opts.ReplayBatchSize)
	var chunkLines int64 // lines behind chunk, bad ones included
	chunkBytes := 0      // bytes of those lines
	writeChunk := func() error {
		if chunkLines == 0 {
			return nil
		}
		if len(chunk) > 0 {
			ctx, cancel := context.WithTimeout(w.replayCtx, w.opts.WriteTimeout)
			err := w.write(ctx, chunk, &w.replayed)
			cancel()
			if err != nil {
				if w.replayCtx.Err() == nil {
					w.degraded.Store(true)
				}
				return err
			}
			// The backend took a write: new batches can go to it directly again while the
			// rest of the spool drains.
			w.degraded.Store(false)
		}
		seg.Offset = sr.Offset()
		w.spool.Consumed(chunkLines)
		clear(chunk)
		chunk = chunk[:0]
		chunkLines, chunkBytes = 0, 0
		return nil
	}
	for {
		line, torn, err := sr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		e, reason := decodeReplayLine(line, torn)
		chunkLines++
		chunkBytes += len(line)
		if reason != "" {
			// The lines before it are written first, so the offset passes this one as it is set
			// aside: a replay that fails later resumes after it, not setting it aside again.
			if err := writeChunk(); err != nil {
				return err
			}
			if torn {
				w.log.Warn("audit spool line torn (cut off mid-append, or over the line limit); setting it aside", "segment", seg.Path)
			}
			w.deadLetterLine(line, reason)
			continue
		}
		chunk = append(chunk, e)
		if len(chunk) >= w.opts.ReplayBatchSize || chunkBytes >= replayChunkBytes {
			if err := writeChunk(); err != nil {
				return err
			}
		}
	}
	return writeChunk()
}

// decodeReplayLine decodes a spool line, or says why it must be set aside. A torn line (cut off
// by a crash mid-append, or longer than the spool's line limit) is never replayed, even when it
// parses: its end may be missing.
func decodeReplayLine(line []byte, torn bool) (Entry, string) {
	if torn {
		return Entry{}, "torn_spool_line"
	}
	e, err := decodeSpoolLine(line)
	if err != nil {
		return Entry{}, "corrupt_spool_line"
	}
	return e, ""
}

// deadLetter records an entry that can never be stored.
func (w *Writer) deadLetter(e Entry, reason, detail string) {
	w.log.Warn("audit entry rejected; kept in the dead-letter file", "job_id", e.JobID, "reason", reason, "detail", detail)
	rec := e.Record
	e.Record = nil
	d := deadLetter{At: time.Now().UTC(), Reason: reason, Detail: detail, Entry: &e, RecordBytes: rec}
	if y := e.Timestamp.Year(); y < 0 || y > 9999 {
		// encoding/json cannot write such a time, and would fail the whole line: keep it as text.
		d.EntryTimestamp = e.Timestamp.Format(time.RFC3339Nano)
		e.Timestamp = time.Time{}
	}
	w.writeDeadLetter(d)
}

// deadLetterLine records a spool line that cannot be decoded.
func (w *Writer) deadLetterLine(line []byte, reason string) {
	w.log.Warn("audit spool line unreadable; kept in the dead-letter file", "reason", reason, "bytes", len(line))
	w.writeDeadLetter(deadLetter{At: time.Now().UTC(), Reason: reason, SpoolLine: line})
}

// writeDeadLetter appends d to the dead-letter file and counts it rejected, or, when the file
// cannot take it, lost (never both).
func (w *Writer) writeDeadLetter(d deadLetter) {
	b, err := json.Marshal(d)
	if err == nil {
		err = w.spool.AppendDeadLetter(append(b, '\n'))
	}
	if err != nil {
		w.lost.Add(1)
		w.log.Error("audit dead-letter write failed", "err", fmt.Errorf("dead_letter: %w", err), "reason", d.Reason)
		return
	}
	w.rejected.Add(1)
}
