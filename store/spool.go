package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The spool is the writer's safety net: a directory of append-only JSON-lines segment files
// (one Entry per line) holding every entry the backend could not take yet. Segments are
// fsynced per append, sealed before replay, and removed only once every line of them is in the
// backend, so a crash at any point loses nothing and, since writes are idempotent on the job
// id, replays nothing twice.

const (
	segmentPrefix  = "segment-"
	segmentSuffix  = ".jsonl"
	deadLetterFile = "rejected.jsonl"
)

// segment is one spool file. offset is replay progress, touched only by the replayer.
type segment struct {
	seq    uint64
	path   string
	size   int64
	lines  int64
	offset int64
}

type spool struct {
	dir          string
	segmentBytes int64

	mu      sync.Mutex
	active  *os.File
	current *segment   // the segment appends go to; nil until the first append
	sealed  []*segment // oldest first; immutable files
	nextSeq uint64
	closed  bool

	entries atomic.Int64 // lines not yet replayed
	bytes   atomic.Int64 // bytes of segments not yet removed

	deadMu sync.Mutex
}

// openSpool opens dir, creating it if needed; segments left by an earlier process are sealed
// and replayed first.
func openSpool(dir string, segmentBytes int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: spool dir: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, segmentPrefix+"*"+segmentSuffix))
	if err != nil {
		return nil, fmt.Errorf("store: spool list: %w", err)
	}
	s := &spool{dir: dir, segmentBytes: segmentBytes, nextSeq: 1}
	for _, path := range names {
		var seq uint64
		base := filepath.Base(path)
		if _, err := fmt.Sscanf(strings.TrimSuffix(strings.TrimPrefix(base, segmentPrefix), segmentSuffix), "%d", &seq); err != nil {
			continue // not ours
		}
		size, lines, err := countLines(path)
		if err != nil {
			return nil, fmt.Errorf("store: spool read %s: %w", base, err)
		}
		s.sealed = append(s.sealed, &segment{seq: seq, path: path, size: size, lines: lines})
		s.entries.Add(lines)
		s.bytes.Add(size)
		if seq >= s.nextSeq {
			s.nextSeq = seq + 1
		}
	}
	sort.Slice(s.sealed, func(i, j int) bool { return s.sealed[i].seq < s.sealed[j].seq })
	return s, nil
}

// countLines counts the lines of a segment, a torn last line included.
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

// append writes data (lines complete JSON lines) and fsyncs before returning, so a nil error
// means the entries survive a crash. After close it still works, sealing at once so no file
// stays open: a late entry is never dropped.
func (s *spool) append(data []byte, lines int) error {
	if len(data) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		if err := s.startSegment(); err != nil {
			return err
		}
	}
	if _, err := s.active.Write(data); err != nil {
		// Cut a partial write off, so the next append does not glue onto a torn line.
		_ = s.active.Truncate(s.current.size)
		return fmt.Errorf("store: spool write: %w", err)
	}
	// The bytes are in the file even if fsync fails, so account for them either way: a later
	// truncation must not cut them, and replaying them is harmless.
	s.current.size += int64(len(data))
	s.current.lines += int64(lines)
	s.entries.Add(int64(lines))
	s.bytes.Add(int64(len(data)))
	if err := s.active.Sync(); err != nil {
		return fmt.Errorf("store: spool fsync: %w", err)
	}
	if s.closed || s.current.size >= s.segmentBytes {
		return s.sealLocked()
	}
	return nil
}

func (s *spool) startSegment() error {
	seg := &segment{seq: s.nextSeq}
	seg.path = filepath.Join(s.dir, fmt.Sprintf("%s%020d%s", segmentPrefix, seg.seq, segmentSuffix))
	f, err := os.OpenFile(seg.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("store: spool create segment: %w", err)
	}
	// The new name must survive a crash too, not only its contents.
	if err := syncDir(s.dir); err != nil {
		_ = f.Close()
		_ = os.Remove(seg.path)
		return err
	}
	s.nextSeq++
	s.active, s.current = f, seg
	return nil
}

// sealLocked closes the active segment and queues it for replay; the next append starts a
// new one.
func (s *spool) sealLocked() error {
	if s.active == nil {
		return nil
	}
	err := s.active.Close()
	s.sealed = append(s.sealed, s.current)
	s.active, s.current = nil, nil
	if err != nil {
		return fmt.Errorf("store: spool close segment: %w", err)
	}
	return nil
}

// next returns the oldest sealed segment, sealing the active one if nothing else is left, or
// nil when the spool is empty.
func (s *spool) next() (*segment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sealed) == 0 && s.current != nil && s.current.size > 0 {
		if err := s.sealLocked(); err != nil {
			return nil, err
		}
	}
	if len(s.sealed) == 0 {
		return nil, nil
	}
	return s.sealed[0], nil
}

// consumed records that n lines of a segment reached the backend (or the dead-letter file).
func (s *spool) consumed(n int64) { s.entries.Add(-n) }

// remove deletes a fully replayed segment.
func (s *spool) remove(seg *segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sealed) == 0 || s.sealed[0] != seg {
		return fmt.Errorf("store: spool remove %s: not the oldest sealed segment", seg.path)
	}
	if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: spool remove: %w", err)
	}
	s.sealed = s.sealed[1:]
	s.bytes.Add(-seg.size)
	return syncDir(s.dir)
}

// close seals the active segment; later appends still work (see append).
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.sealLocked()
}

// appendDeadLetter records what can never be stored, so an operator can see it: the file is
// never replayed.
func (s *spool) appendDeadLetter(line []byte) error {
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	f, err := os.OpenFile(filepath.Join(s.dir, deadLetterFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("store: dead-letter open: %w", err)
	}
	_, werr := f.Write(line)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("store: dead-letter write: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: spool dir sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: spool dir sync: %w", err)
	}
	return nil
}

// segmentReader yields the lines of a sealed segment from an offset.
type segmentReader struct {
	f   *os.File
	r   *bufio.Reader
	off int64
}

func openSegment(seg *segment) (*segmentReader, error) {
	f, err := os.Open(seg.path)
	if err != nil {
		return nil, fmt.Errorf("store: spool open segment: %w", err)
	}
	if _, err := f.Seek(seg.offset, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("store: spool seek: %w", err)
	}
	return &segmentReader{f: f, r: bufio.NewReaderSize(f, 1<<20), off: seg.offset}, nil
}

// next returns the next line without its newline; torn is true for a last line the writer
// never finished (a crash mid-append). io.EOF ends the segment.
func (sr *segmentReader) next() (line []byte, torn bool, err error) {
	line, err = sr.r.ReadBytes('\n')
	sr.off += int64(len(line))
	if errors.Is(err, io.EOF) {
		if len(line) == 0 {
			return nil, false, io.EOF
		}
		return line, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: spool read: %w", err)
	}
	return line[:len(line)-1], false, nil
}

func (sr *segmentReader) close() { _ = sr.f.Close() }

// spoolEncoder turns entries into spool lines. HTML escaping is off so records keep their
// characters; encoding/json still compacts the record, which leaves it equal as JSON.
type spoolEncoder struct {
	buf   bytes.Buffer
	enc   *json.Encoder
	lines int
}

func newSpoolEncoder() *spoolEncoder {
	se := &spoolEncoder{}
	se.enc = json.NewEncoder(&se.buf)
	se.enc.SetEscapeHTML(false)
	return se
}

// add appends one line; on error (a record that is not JSON) nothing is appended.
func (se *spoolEncoder) add(e Entry) error {
	if err := se.enc.Encode(e); err != nil {
		return err
	}
	se.lines++
	return nil
}

func (se *spoolEncoder) reset() {
	se.buf.Reset()
	se.lines = 0
}

// decodeSpoolLine parses one spool line.
func decodeSpoolLine(line []byte) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(line, &e); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// deadLetter is one line of rejected.jsonl. The record is kept as exact bytes (base64), since
// it may not be JSON at all.
type deadLetter struct {
	At          time.Time `json:"at"`
	Reason      string    `json:"reason"`
	Detail      string    `json:"detail,omitempty"`
	Entry       *Entry    `json:"entry,omitempty"`
	RecordBytes []byte    `json:"recordBytes,omitempty"`
	SpoolLine   []byte    `json:"spoolLine,omitempty"`
}
