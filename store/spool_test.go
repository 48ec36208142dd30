package store

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestSpoolSegments(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1024) // tiny segments: every few appends seal one
	if err != nil {
		t.Fatal(err)
	}
	enc := newSpoolEncoder()
	total := 0
	for i := range 40 {
		enc.reset()
		if err := enc.add(testEntry(i)); err != nil {
			t.Fatal(err)
		}
		if err := s.append(enc.buf.Bytes(), enc.lines); err != nil {
			t.Fatal(err)
		}
		total++
	}
	if got := s.entries.Load(); got != int64(total) {
		t.Fatalf("entries = %d, want %d", got, total)
	}
	if len(s.sealed) < 5 {
		t.Fatalf("only %d sealed segments with 1 KiB segments", len(s.sealed))
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	// Reopen: every segment is a leftover, counted, and read back line for line, in order.
	s2, err := openSpool(dir, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if s2.entries.Load() != int64(total) {
		t.Fatalf("reopened spool counts %d entries, want %d", s2.entries.Load(), total)
	}
	read := 0
	for {
		seg, err := s2.next()
		if err != nil {
			t.Fatal(err)
		}
		if seg == nil {
			break
		}
		sr, err := openSegment(seg)
		if err != nil {
			t.Fatal(err)
		}
		for {
			line, torn, err := sr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil || torn {
				t.Fatalf("line: torn=%v err=%v", torn, err)
			}
			e, err := decodeSpoolLine(line)
			if err != nil {
				t.Fatal(err)
			}
			if e.Record == nil || e.JobID == "" {
				t.Fatalf("decoded %+v", e)
			}
			read++
		}
		sr.close()
		s2.consumed(seg.lines)
		if err := s2.remove(seg); err != nil {
			t.Fatal(err)
		}
	}
	if read != total || s2.entries.Load() != 0 || s2.bytes.Load() != 0 {
		t.Fatalf("read %d of %d; entries %d bytes %d left", read, total, s2.entries.Load(), s2.bytes.Load())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, segmentPrefix+"*")); len(left) != 0 {
		t.Fatalf("segments left: %v", left)
	}
}

// FuzzSegmentReader: whatever a segment file holds (a crash can leave anything), reading it
// never panics and yields exactly as many lines as the spool counted at start.
func FuzzSegmentReader(f *testing.F) {
	f.Add([]byte("{\"jobId\":\"x\"}\n{\"jobId\""))
	f.Add([]byte("\n\n\n"))
	f.Add([]byte(""))
	f.Add([]byte("no newline at all"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, segmentPrefix+"00000000000000000001"+segmentSuffix)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := openSpool(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		seg, err := s.next()
		if err != nil || seg == nil {
			t.Fatalf("next = %v, %v", seg, err)
		}
		sr, err := openSegment(seg)
		if err != nil {
			t.Fatal(err)
		}
		defer sr.close()
		var lines int64
		for {
			line, _, err := sr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			lines++
			_, _ = decodeSpoolLine(line)
		}
		if lines != seg.lines || sr.off != seg.size {
			t.Fatalf("read %d lines / %d bytes, spool counted %d / %d", lines, sr.off, seg.lines, seg.size)
		}
	})
}
