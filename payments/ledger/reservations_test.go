package ledger

import (
	"context"
	"errors"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// reservationBook is what both implementations offer.
type reservationBook interface {
	Reserve(ctx context.Context, scope, id string, amount, balance *big.Int, expires time.Time) error
	Release(ctx context.Context, scope string, ids ...string) error
}

func TestReservations(t *testing.T) {
	rdb, prefix := newRedis(t)
	redisBook, err := NewReservations(rdb, prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	for name, book := range map[string]reservationBook{"redis": redisBook, "memory": NewMemoryReservations()} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			scope := "1337:token:" + randomHex(4)
			soon := time.Now().Add(time.Minute)
			balance, price := big.NewInt(25_000), big.NewInt(10_000)
			for _, id := range []string{"a", "b"} {
				if err := book.Reserve(ctx, scope, id, price, balance, soon); err != nil {
					t.Fatalf("reserve %s: %v", id, err)
				}
			}
			if err := book.Reserve(ctx, scope, "a", price, balance, soon); err != nil {
				t.Fatalf("reserving a held id again must succeed and hold nothing more: %v", err)
			}
			if err := book.Reserve(ctx, scope, "c", price, balance, soon); !errors.Is(err, ErrInsufficientFunds) {
				t.Fatalf("a third payment over 25,000 = %v, want ErrInsufficientFunds", err)
			}
			if err := book.Reserve(ctx, "other:"+scope, "c", price, balance, soon); err != nil {
				t.Fatalf("another payer's scope is its own: %v", err)
			}
			// Settled: the chain balance drops by what moved, and the hold is released.
			if err := book.Release(ctx, scope, "a", "unknown"); err != nil {
				t.Fatal(err)
			}
			if err := book.Reserve(ctx, scope, "c", price, big.NewInt(15_000), soon); !errors.Is(err, ErrInsufficientFunds) {
				t.Fatalf("15,000 left with b holding 10,000 = %v, want ErrInsufficientFunds", err)
			}
			if err := book.Reserve(ctx, scope, "c", price, big.NewInt(20_000), soon); err != nil {
				t.Fatalf("after a release: %v", err)
			}
			// An expired hold no longer counts.
			if err := book.Reserve(ctx, scope, "d", big.NewInt(5_000), big.NewInt(1_000_000), time.Now().Add(300*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if err := book.Reserve(ctx, scope, "e", big.NewInt(5_000), big.NewInt(25_000), soon); !errors.Is(err, ErrInsufficientFunds) {
				t.Fatalf("b, c and d hold 25,000: %v", err)
			}
			time.Sleep(400 * time.Millisecond)
			if err := book.Reserve(ctx, scope, "e", big.NewInt(5_000), big.NewInt(25_000), soon); err != nil {
				t.Fatalf("after d expired: %v", err)
			}
			for _, bad := range []*big.Int{nil, big.NewInt(0), big.NewInt(-1), new(big.Int).Lsh(big.NewInt(1), 53)} {
				if err := book.Reserve(ctx, scope, "x", bad, balance, soon); !errors.Is(err, ErrInvalid) {
					t.Errorf("amount %v = %v, want ErrInvalid", bad, err)
				}
			}
		})
	}

	t.Run("concurrent reservations never exceed the balance", func(t *testing.T) {
		ctx := context.Background()
		scope := "1337:token:" + randomHex(4)
		huge := new(big.Int).Lsh(big.NewInt(1), 200) // counted as 2^53-1: still exact below it
		balance := new(big.Int).Set(big.NewInt(7 * 10_000))
		var held atomic.Int32
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := redisBook.Reserve(ctx, scope, "p"+randomHex(4)+string(rune('a'+i%26)), big.NewInt(10_000), balance, time.Now().Add(time.Minute))
				if err == nil {
					held.Add(1)
				} else if !errors.Is(err, ErrInsufficientFunds) {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if held.Load() != 7 {
			t.Fatalf("%d of 50 concurrent payments held against 70,000, want 7", held.Load())
		}
		total, err := redisBook.Held(ctx, scope)
		if err != nil || total.Int64() != 70_000 {
			t.Fatalf("held total %v, %v", total, err)
		}
		if err := redisBook.Reserve(ctx, scope, "rich", big.NewInt(10_000), huge, time.Now().Add(time.Minute)); err != nil {
			t.Fatalf("a balance above 2^53: %v", err)
		}
	})
}

// TestReservationsKeepSettled: a hold released as settled still counts for KeepSettled (a
// balance read before its settlement may still be in use), then no longer; a release never
// makes a hold last longer than it would have; one released as never charged goes at once.
func TestReservationsKeepSettled(t *testing.T) {
	rdb, prefix := newRedis(t)
	redisBook, err := NewReservations(rdb, prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	redisBook.KeepSettled = 400 * time.Millisecond
	memBook := NewMemoryReservations()
	memBook.KeepSettled = 400 * time.Millisecond
	for name, book := range map[string]interface {
		reservationBook
		ReleaseSettled(ctx context.Context, scope string, ids ...string) error
	}{"redis": redisBook, "memory": memBook} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			scope := "1337:token:" + randomHex(4)
			price, balance := big.NewInt(10_000), big.NewInt(10_000)
			// Never charged: released at once.
			if err := book.Reserve(ctx, "void:"+scope, "v", price, balance, time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if err := book.Release(ctx, "void:"+scope, "v"); err != nil {
				t.Fatal(err)
			}
			if err := book.Reserve(ctx, "void:"+scope, "w", price, balance, time.Now().Add(time.Minute)); err != nil {
				t.Fatalf("a hold released as never charged still counts: %v", err)
			}
			if err := book.Reserve(ctx, scope, "a", price, balance, time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			// Soon to expire by itself: a release must not lengthen it.
			if err := book.Reserve(ctx, "short:"+scope, "s", price, balance, time.Now().Add(100*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if err := book.ReleaseSettled(ctx, scope, "a"); err != nil {
				t.Fatal(err)
			}
			if err := book.ReleaseSettled(ctx, "short:"+scope, "s"); err != nil {
				t.Fatal(err)
			}
			if err := book.Reserve(ctx, scope, "b", price, balance, time.Now().Add(time.Minute)); !errors.Is(err, ErrInsufficientFunds) {
				t.Fatalf("just released, a still counts: %v, want ErrInsufficientFunds", err)
			}
			time.Sleep(200 * time.Millisecond)
			if err := book.Reserve(ctx, "short:"+scope, "t", price, balance, time.Now().Add(time.Minute)); err != nil {
				t.Fatalf("the short hold was lengthened by its release: %v", err)
			}
			time.Sleep(300 * time.Millisecond)
			if err := book.Reserve(ctx, scope, "b", price, balance, time.Now().Add(time.Minute)); err != nil {
				t.Fatalf("after KeepSettled: %v", err)
			}
		})
	}
}
