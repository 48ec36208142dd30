// Package segspool is a crash-safe local spool: a directory of append-only segment files of
// lines, each append fsynced before it returns, read back oldest segment first and deleted
// only once every line of it is consumed. The audit writer (store) and the payments ledger
// (payments/ledger) keep what their database could not take yet in one.
//
// A crash at any point loses nothing that an Append returned nil for: a segment's name is
// fsynced into the directory when it is created, every append is fsynced, and a segment is
// removed only after its consumer says it is done. A crash mid-append leaves at most one torn
// last line, which the Reader reports as such. An append that returns an error is never read
// back by the Spool it failed in, and is not counted in Lines. Consumers make replay
// idempotent themselves (a segment replayed twice, after a crash between consuming it and
// removing it).
package segspool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Options configures a Spool.
type Options struct {
	// Prefix and Suffix name the segment files: <Prefix><20-digit sequence><Suffix>.
	Prefix, Suffix string
	// SegmentBytes is the size at which a segment is sealed and a new one started.
	SegmentBytes int64
	// MaxBytes, when positive, caps the spool's size on disk: past it Append fails with ErrFull,
	// and the caller fails closed instead of filling the disk.
	MaxBytes int64
	// MaxLineBytes, when positive, bounds the lines a Reader returns; a longer one is returned
	// cut and marked torn (it is not ours).
	MaxLineBytes int
	// DeadLetterName is the file in the spool's directory where AppendDeadLetter keeps what
	// can never be replayed.
	DeadLetterName string
}

// ErrFull: the spool holds Options.MaxBytes already.
var ErrFull = errors.New("spool_full")

// lockName is the lock file in a spool's directory.
const lockName = ".lock"

// ErrLocked: another process (or another Spool in this one) has the directory open. Two
// writers would each take the other's active segment for a sealed one, replay it and delete
// it while it is still being appended to.
var ErrLocked = errors.New("spool_in_use")

// Segment is one spool file. Offset is the consumer's progress through it; only the consumer
// touches it.
type Segment struct {
	Seq    uint64
	Path   string
	Size   int64
	Lines  int64
	Offset int64
}

// Spool is a directory of segments. Appends go to the active segment; the consumer reads
// sealed ones, the active one being sealed when nothing older is left.
type Spool struct {
	dir  string
	opts Options
	lock *os.File // held from Open to Close: one Spool per directory

	mu      sync.Mutex
	active  segmentFile
	current *Segment   // the segment appends go to; nil until the first append
	sealed  []*Segment // oldest first; immutable files
	nextSeq uint64
	closed  bool

	lines atomic.Int64 // appended and not yet consumed
	bytes atomic.Int64 // in segments not yet removed

	deadMu sync.Mutex

	// wrap, when set (by tests), wraps each new segment file, to inject its failures.
	wrap func(*os.File) segmentFile
}

// segmentFile is what appends need from the active segment; *os.File in production.
type segmentFile interface {
	Write(b []byte) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
}

// Open opens dir, creating it if needed, and locks it until Close: a directory another Spool
// holds, in this process or another, is refused with ErrLocked. Segments left by an earlier
// process are sealed and come first.
func Open(dir string, opts Options) (_ *Spool, err error) {
	if opts.Prefix == "" || opts.SegmentBytes <= 0 {
		return nil, errors.New("spool: a segment prefix and a positive segment size are required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: dir: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = lock.Close()
		}
	}()
	paths, err := filepath.Glob(filepath.Join(dir, opts.Prefix+"*"+opts.Suffix))
	if err != nil {
		return nil, fmt.Errorf("spool: list: %w", err)
	}
	s := &Spool{dir: dir, opts: opts, lock: lock, nextSeq: 1}
	for _, path := range paths {
		var seq uint64
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), opts.Prefix), opts.Suffix)
		if _, err := fmt.Sscanf(name, "%d", &seq); err != nil || fmt.Sprintf("%020d", seq) != name {
			continue // not a segment of ours
		}
		size, lines, err := countLines(path)
		if err != nil {
			return nil, fmt.Errorf("spool: read %s: %w", path, err)
		}
		s.sealed = append(s.sealed, &Segment{Seq: seq, Path: path, Size: size, Lines: lines})
		s.lines.Add(lines)
		s.bytes.Add(size)
		s.nextSeq = max(s.nextSeq, seq+1)
	}
	sort.Slice(s.sealed, func(i, j int) bool { return s.sealed[i].Seq < s.sealed[j].Seq })
	return s, nil
}

// countLines counts a segment's lines, an unterminated last one (a torn append) included.
func countLines(path string) (size, lines int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	last := byte('\n')
	for {
		n, err := f.Read(buf)
		size += int64(n)
		lines += int64(bytes.Count(buf[:n], []byte{'\n'}))
		if n > 0 {
			last = buf[n-1]
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, 0, err
		}
	}
	if last != '\n' {
		lines++
	}
	return size, lines, nil
}

// Lines is how many appended lines are not consumed yet.
func (s *Spool) Lines() int64 { return s.lines.Load() }

// Bytes is the size of the segments not removed yet.
func (s *Spool) Bytes() int64 { return s.bytes.Load() }

// Consumed records that n lines reached their destination (or the dead-letter file).
func (s *Spool) Consumed(n int64) { s.lines.Add(-n) }

// Append writes data, which must be lines complete lines each ending in '\n', and fsyncs it
// before returning: a nil error means they survive a crash; an error means no Reader of this
// Spool returns any of them (see abandonLocked). After Close it still works, each append
// sealing its segment at once, so a line written during shutdown is kept for the next process
// rather than lost.
func (s *Spool) Append(data []byte, lines int) error {
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		return errors.New("spool: an append must end with a newline")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.MaxBytes > 0 && s.bytes.Load()+int64(len(data)) > s.opts.MaxBytes {
		return ErrFull
	}
	if s.active == nil {
		if err := s.startSegment(); err != nil {
			return err
		}
	}
	if n, err := s.active.Write(data); err != nil {
		return s.abandonLocked(n, fmt.Errorf("spool: write: %w", err))
	}
	if err := s.active.Sync(); err != nil {
		return s.abandonLocked(len(data), fmt.Errorf("spool: fsync: %w", err))
	}
	s.current.Size += int64(len(data))
	s.current.Lines += int64(lines)
	s.lines.Add(int64(lines))
	s.bytes.Add(int64(len(data)))
	if s.closed || s.current.Size >= s.opts.SegmentBytes {
		// The lines are written and fsynced: they are appended, and will be read back, so a
		// failure to close the file now must not tell the caller otherwise.
		_ = s.sealLocked()
	}
	return nil
}

// abandonLocked handles an append that failed after written of its bytes reached the active
// segment. Its caller is told it failed, so it must never be replayed; and a later append must
// not be glued onto its torn bytes. It cuts them off, durably if the disk lets it, and seals
// the segment at its last good size: a Reader stops there, so bytes that could not be cut are
// never read by this process either, and the failed append is not counted in Lines or Bytes.
// A new process counts and reads the segment as the disk kept it (a torn tail reads as torn).
func (s *Spool) abandonLocked(written int, cause error) error {
	if written == 0 {
		return cause
	}
	if err := s.active.Truncate(s.current.Size); err != nil {
		cause = errors.Join(cause, fmt.Errorf("spool: cut failed append: %w", err))
	} else if err := s.active.Sync(); err != nil {
		cause = errors.Join(cause, fmt.Errorf("spool: sync cut: %w", err))
	}
	return errors.Join(cause, s.sealLocked())
}

func (s *Spool) startSegment() error {
	var (
		seg *Segment
		f   *os.File
		err error
	)
	for {
		seg = &Segment{Seq: s.nextSeq}
		seg.Path = filepath.Join(s.dir, fmt.Sprintf("%s%020d%s", s.opts.Prefix, seg.Seq, s.opts.Suffix))
		f, err = os.OpenFile(seg.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if !errors.Is(err, os.ErrExist) {
			break
		}
		// A segment this Spool did not list at Open (written by the previous process after
		// its Close released the lock): leave it for the next Open and take the next number,
		// rather than fail this append and every later one on the same name.
		s.nextSeq++
	}
	if err != nil {
		return fmt.Errorf("spool: create segment: %w", err)
	}
	// The new name must survive a crash too, not only its contents.
	if err := syncDir(s.dir); err != nil {
		_ = f.Close()
		_ = os.Remove(seg.Path)
		return err
	}
	s.nextSeq++
	s.active, s.current = f, seg
	if s.wrap != nil {
		s.active = s.wrap(f)
	}
	return nil
}

// sealLocked closes the active segment and queues it for the consumer; the next append starts
// a new one.
func (s *Spool) sealLocked() error {
	if s.active == nil {
		return nil
	}
	err := s.active.Close()
	s.sealed = append(s.sealed, s.current)
	s.active, s.current = nil, nil
	if err != nil {
		return fmt.Errorf("spool: close segment: %w", err)
	}
	return nil
}

// Next returns the oldest sealed segment, sealing the active one when nothing older is left,
// or nil when the spool is empty.
func (s *Spool) Next() (*Segment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sealed) == 0 && s.current != nil && s.current.Size > 0 {
		if err := s.sealLocked(); err != nil {
			return nil, err
		}
	}
	if len(s.sealed) == 0 {
		return nil, nil
	}
	return s.sealed[0], nil
}

// Segments returns the sealed segments, oldest first.
func (s *Spool) Segments() []*Segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sealed)
}

// Contents returns a copy of every segment not removed yet, oldest first, the active one
// included, each with the size it has now and Offset 0: OpenSegment reads all of its lines, up
// to that size, whatever appends do meanwhile. A segment removed since reads as missing (its
// lines were consumed).
func (s *Spool) Contents() []Segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Segment, 0, len(s.sealed)+1)
	for _, seg := range s.sealed {
		out = append(out, Segment{Seq: seg.Seq, Path: seg.Path, Size: seg.Size, Lines: seg.Lines})
	}
	if s.current != nil && s.current.Size > 0 {
		c := s.current
		out = append(out, Segment{Seq: c.Seq, Path: c.Path, Size: c.Size, Lines: c.Lines})
	}
	return out
}

// Remove deletes the oldest sealed segment, every line of which is consumed.
func (s *Spool) Remove(seg *Segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sealed) == 0 || s.sealed[0] != seg {
		return fmt.Errorf("spool: remove %s: not the oldest sealed segment", seg.Path)
	}
	if err := os.Remove(seg.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: remove: %w", err)
	}
	s.sealed = s.sealed[1:]
	s.bytes.Add(-seg.Size)
	return syncDir(s.dir)
}

// Close seals the active segment; later appends still work (see Append).
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.sealLocked()
	return errors.Join(err, s.lock.Close())
}

// AppendDeadLetter appends record (one or more complete lines) to the dead-letter file and
// fsyncs it: what can never be replayed, kept for an operator. The file is never replayed.
func (s *Spool) AppendDeadLetter(record []byte) error {
	if s.opts.DeadLetterName == "" {
		return errors.New("spool: no dead-letter file configured")
	}
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	f, err := os.OpenFile(filepath.Join(s.dir, s.opts.DeadLetterName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool: dead-letter open: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("spool: dead-letter stat: %w", err)
	}
	_, werr := f.Write(record)
	serr := f.Sync()
	if werr != nil || serr != nil {
		// Cut what the disk took of a failed append (a full disk takes part of it), so the next
		// record does not start on the end of a torn line and become unreadable too.
		if err := f.Truncate(fi.Size()); err != nil {
			serr = errors.Join(serr, fmt.Errorf("cut failed append: %w", err))
		} else {
			serr = errors.Join(serr, f.Sync())
		}
	}
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("spool: dead-letter write: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: dir sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: dir sync: %w", err)
	}
	return nil
}

// Reader reads a sealed segment's lines from its Offset.
type Reader struct {
	f       *os.File
	r       *bufio.Reader
	off     int64
	maxLine int
}

// OpenSegment opens seg for reading from seg.Offset to seg.Size.
func (s *Spool) OpenSegment(seg *Segment) (*Reader, error) {
	f, err := os.Open(seg.Path)
	if err != nil {
		return nil, fmt.Errorf("spool: open segment: %w", err)
	}
	// Only up to seg.Size: past it lie the bytes of an append that failed (see abandonLocked).
	lines := io.NewSectionReader(f, seg.Offset, seg.Size-seg.Offset)
	return &Reader{f: f, r: bufio.NewReaderSize(lines, 256<<10), off: seg.Offset, maxLine: s.opts.MaxLineBytes}, nil
}

// Offset is the position after the last line returned.
func (r *Reader) Offset() int64 { return r.off }

// Next returns the next line without its newline; torn is true for an unterminated last line
// (a crash mid-append) or one longer than MaxLineBytes (returned cut). io.EOF ends the segment.
func (r *Reader) Next() (line []byte, torn bool, err error) {
	for {
		chunk, err := r.r.ReadSlice('\n')
		r.off += int64(len(chunk))
		if r.maxLine <= 0 || len(line)+len(chunk) <= r.maxLine {
			line = append(line, chunk...)
		} else {
			torn = true
		}
		switch {
		case err == nil && torn:
			return line, true, nil
		case err == nil:
			return line[:len(line)-1], false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(line) == 0 && !torn {
				return nil, false, io.EOF
			}
			return line, true, nil
		default:
			return nil, false, fmt.Errorf("spool: read: %w", err)
		}
	}
}

// Close closes the segment file.
func (r *Reader) Close() { _ = r.f.Close() }
