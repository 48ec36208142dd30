//go:build linux

package segspool

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDeadLetterFailedAppendLeavesNoTornLine: a dead-letter append that the disk takes only in
// part (here the file size limit, as a full disk would) must not leave its torn bytes in the
// file, where the next record would be glued onto them and be unreadable too.
func TestDeadLetterFailedAppendLeavesNoTornLine(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, testOptions(1024))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.AppendDeadLetter([]byte("{\"n\":1}\n")); err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	// The Go runtime ignores SIGXFSZ: a write past the limit returns EFBIG after what fits.
	limited := old
	limited.Cur = 8 + 5
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limited); err != nil {
		t.Skipf("cannot limit the file size: %v", err)
	}
	err = s.AppendDeadLetter([]byte("{\"n\":2,\"pad\":\"" + strings.Repeat("x", 100) + "\"}\n"))
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		t.Fatal("an append past the file size limit succeeded")
	}
	if err := s.AppendDeadLetter([]byte("{\"n\":3}\n")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "dead.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "{\"n\":1}\n{\"n\":3}\n"; got != want {
		t.Fatalf("dead-letter file = %q, want %q", got, want)
	}
}
