package ledger

import (
	"context"
	"errors"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

func memPayment(key string) Payment {
	return Payment{ID: uuid.New(), Rail: "x402", Network: "eip155:1337", Asset: "0xA", Payer: "0xB", PayTo: "0xC",
		Amount: big.NewInt(10_000), NonceKey: key, Payload: []byte(`{"k":1}`)}
}

func TestMemoryClaimsOnce(t *testing.T) {
	m := NewMemory()
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := m.Claim(context.Background(), "k1", time.Now().Add(time.Minute))
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, ErrNonceUsed):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d claims won, want exactly 1", wins.Load())
	}
}

func TestMemoryStateMachine(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	p := memPayment("n1")
	if err := m.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := m.Create(ctx, memPayment("n1")); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("a second payment with the same nonce key: %v", err)
	}
	if _, err := m.Transition(ctx, p.ID, []Status{StatusVerified}, StatusPending, Patch{TxHash: "0x01"}); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("verified -> pending must be illegal: %v", err)
	}
	if _, err := m.Transition(ctx, p.ID, []Status{StatusVerified}, StatusSettled, Patch{}); err == nil {
		t.Fatal("verified -> settled without the transaction that moved the money must be refused")
	}
	if _, err := m.Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Transition(ctx, p.ID, []Status{StatusVerified}, StatusNotCharged, Patch{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("a payment already moved on: %v", err)
	}
	batch := uuid.New()
	got, err := m.ClaimQueued(ctx, 10, batch, Scope{Rail: "x402"})
	if err != nil || len(got) != 1 || got[0].Status != StatusSubmitted || got[0].BatchID != batch {
		t.Fatalf("claim queued: %+v %v", got, err)
	}
	if again, _ := m.ClaimQueued(ctx, 10, uuid.New(), Scope{}); len(again) != 0 {
		t.Fatal("a claimed payment was claimed twice")
	}
	remote := memPayment("n-remote")
	if err := m.Create(ctx, remote); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Transition(ctx, remote.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
		t.Fatal(err)
	}
	if got, err := m.ClaimQueuedSettling(ctx, 10, Scope{Rail: "x402"}); err != nil || len(got) != 1 || got[0].Status != StatusSettling || got[0].ID != remote.ID {
		t.Fatalf("claim queued for a facilitator: %+v %v", got, err)
	}
	if again, _ := m.ClaimQueuedSettling(ctx, 10, Scope{}); len(again) != 0 {
		t.Fatal("a payment claimed for a facilitator was claimed twice")
	}
	if _, err := m.Transition(ctx, remote.ID, []Status{StatusSettling}, StatusNotCharged, Patch{ErrorReason: "refused"}); err != nil {
		t.Fatalf("settling -> not_charged: %v", err)
	}
	if err := m.RecordBatchTx(ctx, batch, []byte{1}, "0x1"); err != nil {
		t.Fatal(err)
	}
	if err := m.RecordBatchTx(ctx, batch, []byte{2}, "0x2"); !errors.Is(err, ErrConflict) {
		t.Fatalf("a batch transaction is written once: %v", err)
	}
	moved, err := m.TransitionBatch(ctx, batch, []Status{StatusSubmitted}, StatusSettled, Patch{TxHash: "0x1"})
	if err != nil || len(moved) != 1 || moved[0].SettledAt.IsZero() {
		t.Fatalf("settle batch: %+v %v", moved, err)
	}
	stale, _ := m.ListRecoverable(ctx, 0, 10)
	if len(stale) != 0 {
		t.Fatalf("a settled payment is not recoverable: %+v", stale)
	}
}

func TestMemoryRunExclusive(t *testing.T) {
	m := NewMemory()
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan bool)
	go func() {
		ran, _ := m.RunExclusive(context.Background(), "job", func(context.Context) error { close(inside); <-release; return nil })
		done <- ran
	}()
	<-inside
	if ran, _ := m.RunExclusive(context.Background(), "job", func(context.Context) error { return nil }); ran {
		t.Fatal("a second run of the same job ran concurrently")
	}
	close(release)
	if !<-done {
		t.Fatal("the first run did not run")
	}
}

// TestStalenessByStatus: verified and settling payments wait Working, submitted and pending
// ones OnChain; final and queued ones are never stale.
func TestStalenessByStatus(t *testing.T) {
	now := time.Now()
	age := Staleness{Working: 10 * time.Minute, OnChain: time.Minute}
	for _, tc := range []struct {
		status Status
		idle   time.Duration
		want   bool
	}{
		{StatusVerified, 5 * time.Minute, false},
		{StatusVerified, 11 * time.Minute, true},
		{StatusSettling, 5 * time.Minute, false},
		{StatusSettling, 11 * time.Minute, true},
		{StatusSubmitted, 30 * time.Second, false},
		{StatusSubmitted, 5 * time.Minute, true},
		{StatusPending, 5 * time.Minute, true},
		{StatusQueued, time.Hour, false},
		{StatusSettled, time.Hour, false},
		{StatusNotCharged, time.Hour, false},
	} {
		p := Payment{Status: tc.status, UpdatedAt: now.Add(-tc.idle)}
		if got := age.isStale(p, now); got != tc.want {
			t.Errorf("%s idle %v: stale = %v; want %v", tc.status, tc.idle, got, tc.want)
		}
	}
}
