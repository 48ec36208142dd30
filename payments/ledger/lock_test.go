package ledger

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type locker interface {
	Lock(ctx context.Context, name string) (func(), error)
}

// exerciseLock checks that holders of one lock never overlap, that another name does not
// wait, and that a waiter gives up when its context ends.
func exerciseLock(t *testing.T, a, b locker) {
	t.Helper()
	ctx := context.Background()
	var inside, overlaps atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		l := a
		if i%2 == 1 {
			l = b // another replica
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := l.Lock(ctx, "settlement-key:0xabc")
			if err != nil {
				t.Error(err)
				return
			}
			if inside.Add(1) > 1 {
				overlaps.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
			inside.Add(-1)
			unlock()
		}()
	}
	wg.Wait()
	if overlaps.Load() != 0 {
		t.Fatalf("%d overlapping holders", overlaps.Load())
	}

	unlock, err := a.Lock(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	other, err := b.Lock(ctx, "two")
	if err != nil {
		t.Fatalf("another name must not wait: %v", err)
	}
	other()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if u, err := b.Lock(short, "one"); err == nil {
		u()
		t.Fatal("a held lock was taken twice")
	}
}

func TestMemoryLock(t *testing.T) {
	m := NewMemory()
	exerciseLock(t, m, m)
}

func TestPostgresLockAcrossReplicas(t *testing.T) {
	schema := newSchema(t)
	a := openLedger(t, openPool(t, schema, ""), t.TempDir())
	b := openLedger(t, openPool(t, schema, ""), t.TempDir())
	exerciseLock(t, a, b)
}
