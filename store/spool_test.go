package store

import (
	"errors"
	"io"
	"path/filepath"
	"testing"
)

// TestSpoolSegments: entries encoded by the writer's spoolEncoder go through the spool
// (internal/segspool, tested on its own) and come back, after a reopen, decoded and in order.
func TestSpoolSegments(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1024) // tiny segments: every few appends seal one
	if err != nil {
		t.Fatal(err)
	}
	enc := newSpoolEncoder()
	const total = 40
	entries := testEntries(total)
	for i := range total {
		enc.reset()
		if err := enc.add(entries[i]); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(enc.buf.Bytes(), enc.lines); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := openSpool(dir, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Lines() != total {
		t.Fatalf("reopened spool counts %d entries, want %d", s2.Lines(), total)
	}
	read := 0
	for {
		seg, err := s2.Next()
		if err != nil {
			t.Fatal(err)
		}
		if seg == nil {
			break
		}
		sr, err := s2.OpenSegment(seg)
		if err != nil {
			t.Fatal(err)
		}
		for {
			line, torn, err := sr.Next()
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
			if want := entries[read]; e.JobID != want.JobID || !sameJSON(t, e.Record, want.Record) {
				t.Fatalf("entry %d decoded as %+v", read, e)
			}
			read++
		}
		sr.Close()
		s2.Consumed(seg.Lines)
		if err := s2.Remove(seg); err != nil {
			t.Fatal(err)
		}
	}
	if read != total || s2.Lines() != 0 || s2.Bytes() != 0 {
		t.Fatalf("read %d of %d; entries %d bytes %d left", read, total, s2.Lines(), s2.Bytes())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, segmentPrefix+"*")); len(left) != 0 {
		t.Fatalf("segments left: %v", left)
	}
}
