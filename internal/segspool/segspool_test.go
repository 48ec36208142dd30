package segspool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestMain is also the other process of TestOneSpoolPerDirectory, when SEGSPOOL_LOCK_DIR names
// the directory to open.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SEGSPOOL_LOCK_DIR"); dir != "" {
		_, err := Open(dir, testOptions(1024))
		fmt.Printf("locked: %v (%v)\n", errors.Is(err, ErrLocked), err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testOptions(segmentBytes int64) Options {
	return Options{Prefix: "segment-", Suffix: ".jsonl", SegmentBytes: segmentBytes, DeadLetterName: "dead.jsonl"}
}

// TestSegments: appends seal segments at their size, a reopened spool counts every leftover
// line, and reading it back yields every line in order; removed segments leave nothing behind.
func TestSegments(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, testOptions(1024)) // tiny segments: every few appends seal one
	if err != nil {
		t.Fatal(err)
	}
	const total = 40
	for i := range total {
		line := fmt.Sprintf(`{"n":%d,"pad":%q}`+"\n", i, strings.Repeat("x", 100))
		if err := s.Append([]byte(line), 1); err != nil {
			t.Fatal(err)
		}
	}
	if s.Lines() != total {
		t.Fatalf("lines = %d, want %d", s.Lines(), total)
	}
	if n := len(s.Segments()); n < 4 {
		t.Fatalf("only %d sealed segments with 1 KiB segments", n)
	}
	if err := s.Append([]byte("no newline"), 1); err == nil {
		t.Fatal("an append without its newline was taken")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, testOptions(1024))
	if err != nil {
		t.Fatal(err)
	}
	if s2.Lines() != total {
		t.Fatalf("reopened spool counts %d lines, want %d", s2.Lines(), total)
	}
	leftovers := s2.Segments()
	last := leftovers[len(leftovers)-1].Seq
	want := 0
	for {
		seg, err := s2.Next()
		if err != nil {
			t.Fatal(err)
		}
		if seg == nil {
			break
		}
		r, err := s2.OpenSegment(seg)
		if err != nil {
			t.Fatal(err)
		}
		for {
			line, torn, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil || torn {
				t.Fatalf("line: torn=%v err=%v", torn, err)
			}
			if !strings.HasPrefix(string(line), fmt.Sprintf(`{"n":%d,`, want)) {
				t.Fatalf("line %d out of order: %s", want, line)
			}
			want++
		}
		r.Close()
		s2.Consumed(seg.Lines)
		if err := s2.Remove(seg); err != nil {
			t.Fatal(err)
		}
	}
	if want != total || s2.Lines() != 0 || s2.Bytes() != 0 {
		t.Fatalf("read %d of %d; lines %d bytes %d left", want, total, s2.Lines(), s2.Bytes())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "segment-*")); len(left) != 0 {
		t.Fatalf("segments left: %v", left)
	}
	// A new append after leftovers never reuses a leftover's number.
	if err := s2.Append([]byte("new\n"), 1); err != nil {
		t.Fatal(err)
	}
	if seg, err := s2.Next(); err != nil || seg == nil || seg.Seq <= last {
		t.Fatalf("new segment %+v (%v) after leftovers up to %d", seg, err, last)
	}
	r, _ := s2.OpenSegment(mustNext(t, s2))
	if line, _, err := r.Next(); err != nil || string(line) != "new" {
		t.Fatalf("%q %v", line, err)
	}
	r.Close()
}

// TestAppendAfterTornLeftover: a crash between a record and its newline leaves a last line
// that parses; the next process reports it torn and appends to a new segment, so its first
// record is neither glued onto the torn line nor lost with it.
func TestAppendAfterTornLeftover(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "segment-00000000000000000003.jsonl"), []byte("{\"n\":1}\n{\"n\":2}"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, testOptions(1024))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append([]byte("{\"n\":3}\n"), 1); err != nil {
		t.Fatal(err)
	}
	if s.Lines() != 3 {
		t.Fatalf("lines = %d, want 3", s.Lines())
	}
	if err := s.Close(); err != nil { // seals the active segment, for reading
		t.Fatal(err)
	}
	got := readSegments(t, s)
	want := []read{{`{"n":1}`, false}, {`{"n":2}`, true}, {`{"n":3}`, false}}
	if !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
}

func mustNext(t *testing.T, s *Spool) *Segment {
	t.Helper()
	seg, err := s.Next()
	if err != nil || seg == nil {
		t.Fatalf("next: %v %v", seg, err)
	}
	return seg
}

// TestLimits: MaxBytes refuses appends past it; MaxLineBytes returns a longer line cut and torn;
// the dead-letter file keeps what it is given; a file that is not a segment is left alone.
func TestLimits(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "segment-7.jsonl"), []byte("not ours\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(1 << 20)
	opts.MaxBytes, opts.MaxLineBytes = 100, 10
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s.Lines() != 0 {
		t.Fatalf("a file named unlike a segment was counted: %d lines", s.Lines())
	}
	if err := s.Append([]byte(strings.Repeat("a", 40)+"\nshort\n"), 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Append([]byte(strings.Repeat("b", 60)+"\n"), 1); !errors.Is(err, ErrFull) {
		t.Fatalf("an append past MaxBytes = %v, want ErrFull", err)
	}
	seg, err := s.Next()
	if err != nil || seg == nil {
		t.Fatal(seg, err)
	}
	r, err := s.OpenSegment(seg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if line, torn, err := r.Next(); err != nil || !torn || len(line) > 10 {
		t.Fatalf("a 40-byte line with MaxLineBytes 10: %q torn=%v err=%v", line, torn, err)
	}
	if line, torn, err := r.Next(); err != nil || torn || string(line) != "short" {
		t.Fatalf("the next line: %q torn=%v err=%v", line, torn, err)
	}
	if err := s.AppendDeadLetter([]byte("kept\n")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "dead.jsonl")); err != nil || string(b) != "kept\n" {
		t.Fatalf("dead letter: %q %v", b, err)
	}
}

// FuzzSegmentReader: whatever a segment file holds (a crash can leave anything), reading it
// never panics and yields exactly the lines and bytes the spool counted when it opened.
func FuzzSegmentReader(f *testing.F) {
	f.Add([]byte("{\"jobId\":\"x\"}\n{\"jobId\""), 0)
	f.Add([]byte("\n\n\n"), 0)
	f.Add([]byte(""), 4)
	f.Add([]byte("no newline at all"), 3)
	f.Fuzz(func(t *testing.T, data []byte, maxLine int) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "segment-00000000000000000001.jsonl"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		opts := testOptions(1 << 20)
		opts.MaxLineBytes = maxLine % 64
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		seg, err := s.Next()
		if err != nil || seg == nil {
			t.Fatalf("next = %v, %v", seg, err)
		}
		r, err := s.OpenSegment(seg)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var lines int64
		for {
			line, _, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if opts.MaxLineBytes > 0 && len(line) > opts.MaxLineBytes+1 {
				t.Fatalf("a %d-byte line with MaxLineBytes %d", len(line), opts.MaxLineBytes)
			}
			lines++
		}
		if lines != seg.Lines || r.Offset() != seg.Size {
			t.Fatalf("read %d lines / %d bytes, spool counted %d / %d", lines, r.Offset(), seg.Lines, seg.Size)
		}
	})
}

// TestOneSpoolPerDirectory: a directory another Spool holds is refused, in this process and in
// another one (which would otherwise replay and delete the active segment under the writer);
// once closed, it opens again with everything still in it.
func TestOneSpoolPerDirectory(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, testOptions(1024))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append([]byte("{\"n\":1}\n"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, testOptions(1024)); !errors.Is(err, ErrLocked) {
		t.Fatalf("a second Open in this process = %v, want ErrLocked", err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SEGSPOOL_LOCK_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "locked: true") {
		t.Fatalf("Open in another process: %v\n%s", err, out)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(dir, testOptions(1024))
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	defer again.Close()
	if again.Lines() != 1 {
		t.Fatalf("reopened spool has %d lines, want 1", again.Lines())
	}
}

// TestFailedAppendIsNeverRead: an append that returned an error is never read back by this
// process, whether its bytes could be cut off or not, and the next append is read back whole:
// a record its caller was told failed is not replayed, and one it was told succeeded is never
// glued onto torn bytes. Lines counts exactly the lines a Reader returns, before and after a
// restart; what a new process reads is what the disk kept (a torn tail is reported torn).
func TestFailedAppendIsNeverRead(t *testing.T) {
	first, failed, next := read{`{"n":1}`, false}, `{"n":2}`, read{`{"n":3}`, false}
	for _, tc := range []struct {
		name   string
		faults faults
		// afterRestart is what a new process reads of the failed append.
		afterRestart []read
	}{
		{"torn write, cut off", faults{tearWrite: true}, nil},
		{"torn write, cut fails", faults{tearWrite: true, failTruncate: true}, []read{{failed[:4], true}}},
		{"fsync fails, cut off", faults{failSync: true}, nil},
		// The one case the spool cannot close: the disk kept a whole line it failed to cut.
		{"fsync fails, cut fails", faults{failSync: true, failTruncate: true}, []read{{failed, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, testOptions(1024))
			if err != nil {
				t.Fatal(err)
			}
			var f faults
			s.wrap = func(file *os.File) segmentFile { return faultyFile{file, &f} }
			if err := s.Append([]byte(first.line+"\n"), 1); err != nil {
				t.Fatal(err)
			}
			f = tc.faults
			if err := s.Append([]byte(failed+"\n"), 1); err == nil {
				t.Fatal("the append with injected faults returned nil")
			}
			if err := s.Append([]byte(next.line+"\n"), 1); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil { // seals the active segment, for reading
				t.Fatal(err)
			}
			if got, want := readSegments(t, s), []read{first, next}; !slices.Equal(got, want) || s.Lines() != 2 {
				t.Fatalf("read %v (spool counts %d lines), want %v", got, s.Lines(), want)
			}
			again, err := Open(dir, testOptions(1024))
			if err != nil {
				t.Fatal(err)
			}
			defer again.Close()
			want := slices.Concat([]read{first}, tc.afterRestart, []read{next})
			if got := readSegments(t, again); !slices.Equal(got, want) || again.Lines() != int64(len(want)) {
				t.Fatalf("after a restart read %v (spool counts %d lines), want %v", got, again.Lines(), want)
			}
		})
	}
}

type read struct {
	line string
	torn bool
}

// readSegments reads every sealed segment of s from its start, without consuming anything.
func readSegments(t *testing.T, s *Spool) []read {
	t.Helper()
	var got []read
	for _, seg := range s.Segments() {
		r, err := s.OpenSegment(seg)
		if err != nil {
			t.Fatal(err)
		}
		for {
			line, torn, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, read{string(line), torn})
		}
		r.Close()
	}
	return got
}

// faults are the failures injected into segment files: a write that stops half way and an
// fsync that fails (each once), a truncate that keeps failing.
type faults struct {
	tearWrite, failSync, failTruncate, failClose bool
}

type faultyFile struct {
	*os.File
	faults *faults
}

func (f faultyFile) Write(b []byte) (int, error) {
	if f.faults.tearWrite {
		f.faults.tearWrite = false
		n, _ := f.File.Write(b[:len(b)/2])
		return n, errors.New("injected: no space left half way")
	}
	return f.File.Write(b)
}

func (f faultyFile) Sync() error {
	if f.faults.failSync {
		f.faults.failSync = false
		return errors.New("injected: fsync failed")
	}
	return f.File.Sync()
}

func (f faultyFile) Truncate(size int64) error {
	if f.faults.failTruncate {
		return errors.New("injected: truncate failed")
	}
	return f.File.Truncate(size)
}

func (f faultyFile) Close() error {
	err := f.File.Close()
	if f.faults.failClose {
		return errors.New("injected: close failed")
	}
	return err
}

// TestAppendThatSealsReportsWhatItWrote: an append written and fsynced is appended, and
// says so, even when closing its full segment then fails: it will be read back.
func TestAppendThatSealsReportsWhatItWrote(t *testing.T) {
	s, err := Open(t.TempDir(), testOptions(8))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := faults{failClose: true}
	s.wrap = func(file *os.File) segmentFile { return faultyFile{file, &f} }
	if err := s.Append([]byte(`{"n":1}`+"\n"), 1); err != nil {
		t.Fatalf("an append written and fsynced returned %v", err)
	}
	if got, want := readSegments(t, s), []read{{`{"n":1}`, false}}; !slices.Equal(got, want) || s.Lines() != 1 {
		t.Fatalf("read %v (spool counts %d lines), want %v", got, s.Lines(), want)
	}
}

// TestAppendSkipsATakenSegmentName: a segment file that appears after Open under the next
// number (a previous process's append after its Close released the lock) must not make every
// append of this spool fail: the spool moves on to the next free number, and the foreign file
// is left on disk, untouched, for the next Open.
func TestAppendSkipsATakenSegmentName(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, testOptions(1024))
	if err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "segment-00000000000000000001.jsonl")
	if err := os.WriteFile(foreign, []byte("{\"n\":0}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if err := s.Append([]byte(fmt.Sprintf("{\"n\":%d}\n", i)), 1); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := readSegments(t, s), []read{{`{"n":1}`, false}, {`{"n":2}`, false}}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	if b, err := os.ReadFile(foreign); err != nil || string(b) != "{\"n\":0}\n" {
		t.Fatalf("foreign segment = %q, %v", b, err)
	}
	s2, err := Open(dir, testOptions(1024))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Lines() != 3 {
		t.Fatalf("reopened lines = %d, want 3", s2.Lines())
	}
}
