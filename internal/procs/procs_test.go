package procs

import (
	"runtime"
	"testing"
)

func TestRaise(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))

	t.Setenv("GOMAXPROCS", "")
	runtime.GOMAXPROCS(2)
	if got := Raise(); got != Min || runtime.GOMAXPROCS(0) != Min {
		t.Fatalf("2 by default: Raise() = %d, GOMAXPROCS %d; want %d", got, runtime.GOMAXPROCS(0), Min)
	}
	runtime.GOMAXPROCS(Min * 2)
	if got := Raise(); got != Min*2 {
		t.Fatalf("%d by default: Raise() = %d; a larger machine keeps its own", Min*2, got)
	}

	// An operator's GOMAXPROCS stands, however small.
	t.Setenv("GOMAXPROCS", "3")
	runtime.GOMAXPROCS(3)
	if got := Raise(); got != 3 {
		t.Fatalf("GOMAXPROCS=3 set: Raise() = %d, want 3", got)
	}
}
