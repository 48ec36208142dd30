package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/google/uuid"
)

// batchMover is what the batch settlement tests need of a ledger; *Ledger and *Memory
// satisfy it and must behave alike.
type batchMover interface {
	Create(context.Context, Payment) error
	Get(context.Context, uuid.UUID) (Payment, error)
	Transition(context.Context, uuid.UUID, []Status, Status, Patch) (Payment, error)
	ClaimQueued(context.Context, int, uuid.UUID, Scope) ([]Payment, error)
	RecordBatchTx(context.Context, uuid.UUID, []byte, string) error
	TransitionBatch(context.Context, uuid.UUID, []Status, Status, Patch) ([]Payment, error)
	MoveBatch(context.Context, uuid.UUID, uuid.UUID) ([]Payment, error)
}

// bothBooks runs fn against the Postgres ledger and the in-memory one.
func bothBooks(t *testing.T, fn func(t *testing.T, book batchMover)) {
	t.Helper()
	t.Run("postgres", func(t *testing.T) {
		schema := newSchema(t)
		fn(t, openLedger(t, openPool(t, schema, ""), ""))
	})
	t.Run("memory", func(t *testing.T) { fn(t, NewMemory()) })
}

// TestPendingBatchMemberMovedToANewBatchSettlesByItsTransaction: a batch member that went
// pending (the receipt wait timed out, and the batch's transaction was recorded on it) and
// whose batch is then moved to a new one (the transaction reverted, or is dead) is settled by
// the new batch's transaction. MoveBatch drops the old transaction from the member: it settled
// nothing, and a recorded transaction is never overwritten by a later move.
func TestPendingBatchMemberMovedToANewBatchSettlesByItsTransaction(t *testing.T) {
	bothBooks(t, func(t *testing.T, book batchMover) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p := newPayment(big.NewInt(10_000))
		p.Status = StatusQueued
		if err := book.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		first := uuid.New()
		if got, err := book.ClaimQueued(ctx, 10, first, Scope{}); err != nil || len(got) != 1 {
			t.Fatalf("claim: %v %v", got, err)
		}
		raw1, h1 := rawTx("batch1")
		if err := book.RecordBatchTx(ctx, first, raw1, h1); err != nil {
			t.Fatal(err)
		}
		// The receipt wait timed out: pending with the batch's transaction.
		if _, err := book.TransitionBatch(ctx, first, []Status{StatusSubmitted}, StatusPending, Patch{TxHash: h1}); err != nil {
			t.Fatal(err)
		}
		// Recovery: the transaction reverted (or is dead); the members go to a new batch.
		second := uuid.New()
		moved, err := book.MoveBatch(ctx, first, second)
		if err != nil || len(moved) != 1 {
			t.Fatalf("move: %v %v", moved, err)
		}
		if m := moved[0]; m.Status != StatusPending || m.TxHash != "" || m.BatchID != second {
			t.Fatalf("moved member: %s tx %q batch %s; want pending, without the dead transaction, in %s", m.Status, m.TxHash, m.BatchID, second)
		}
		if got, err := book.Get(ctx, p.ID); err != nil || got.TxHash != "" {
			t.Fatalf("after the move the member reads tx %q (%v), want none", got.TxHash, err)
		}
		raw2, h2 := rawTx("batch2")
		if err := book.RecordBatchTx(ctx, second, raw2, h2); err != nil {
			t.Fatal(err)
		}
		// The new batch's receipt says the payment settled.
		_, err = book.Transition(ctx, p.ID, []Status{StatusSubmitted, StatusPending}, StatusSettled, Patch{TxHash: h2})
		got, _ := book.Get(ctx, p.ID)
		if err != nil || got.Status != StatusSettled || got.TxHash != h2 {
			t.Fatalf("settled by the new batch's tx %s: %v; payment is %s with tx %s", h2, err, got.Status, got.TxHash)
		}
	})
}

// replacer is batchMover with the replacing move.
type replacer interface {
	batchMover
	TransitionReplacing(context.Context, uuid.UUID, []Status, Status, string, Patch) (Payment, error)
}

// TestTransitionReplacing: a payment the chain settled (or failed) by another transaction than
// the one recorded on it is moved with that transaction in place of the recorded one, which
// must be named; the signed bytes stay. Postgres and memory agree.
func TestTransitionReplacing(t *testing.T) {
	bothBooks(t, func(t *testing.T, b batchMover) {
		book := b.(replacer)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p := newPayment(big.NewInt(10_000))
		if err := book.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		raw1, h1 := rawTx("ours")
		if _, err := book.Transition(ctx, p.ID, []Status{StatusVerified}, StatusSubmitted, Patch{RawTx: raw1, TxHash: h1}); err != nil {
			t.Fatal(err)
		}
		if _, err := book.Transition(ctx, p.ID, []Status{StatusSubmitted}, StatusPending, Patch{}); err != nil {
			t.Fatal(err)
		}
		_, h2 := rawTx("theirs")
		inFlight := []Status{StatusSubmitted, StatusPending}
		for _, tc := range []struct {
			name     string
			to       Status
			replaced string
			patch    Patch
			want     error
		}{
			{"not the recorded transaction", StatusSettled, "0x" + randomHex(32), Patch{TxHash: h2}, ErrConflict},
			{"no new transaction", StatusSettled, h1, Patch{}, ErrInvalid},
			{"the same transaction", StatusSettled, h1, Patch{TxHash: h1}, ErrInvalid},
			{"not to a final status", StatusPending, h1, Patch{TxHash: h2}, ErrInvalid},
			{"with signed bytes", StatusSettled, h1, Patch{TxHash: h2, RawTx: raw1}, ErrInvalid},
			{"failed without a reason", StatusFailed, h1, Patch{TxHash: h2}, ErrInvalid},
		} {
			if _, err := book.TransitionReplacing(ctx, p.ID, inFlight, tc.to, tc.replaced, tc.patch); !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
		}
		got, err := book.TransitionReplacing(ctx, p.ID, inFlight, StatusSettled, h1, Patch{TxHash: h2})
		if err != nil || got.Status != StatusSettled || got.TxHash != h2 || string(got.RawTx) != string(raw1) || got.SettledAt.IsZero() {
			t.Fatalf("TransitionReplacing = %s tx %s raw %q settled %v, %v", got.Status, got.TxHash, got.RawTx, got.SettledAt, err)
		}
		if again, err := book.Get(ctx, p.ID); err != nil || again.Status != StatusSettled || again.TxHash != h2 {
			t.Fatalf("read back: %s tx %s, %v", again.Status, again.TxHash, err)
		}
		if _, err := book.TransitionReplacing(ctx, p.ID, inFlight, StatusSettled, h2, Patch{TxHash: h1}); !errors.Is(err, ErrConflict) {
			t.Fatalf("a settled payment replaced again: %v, want ErrConflict", err)
		}

		// A batch member that went pending with its batch's transaction fails by another's.
		q := newPayment(big.NewInt(1))
		q.Status = StatusQueued
		if err := book.Create(ctx, q); err != nil {
			t.Fatal(err)
		}
		batch := uuid.New()
		if got, err := book.ClaimQueued(ctx, 10, batch, Scope{}); err != nil || len(got) != 1 {
			t.Fatalf("claim: %v %v", got, err)
		}
		_, hb := rawTx("batch")
		if _, err := book.TransitionBatch(ctx, batch, []Status{StatusSubmitted}, StatusPending, Patch{TxHash: hb}); err != nil {
			t.Fatal(err)
		}
		_, h3 := rawTx("other")
		got, err = book.TransitionReplacing(ctx, q.ID, inFlight, StatusFailed, hb, Patch{TxHash: h3, ErrorReason: "x"})
		if err != nil || got.Status != StatusFailed || got.TxHash != h3 || got.ErrorReason != "x" || got.RawTx != nil {
			t.Fatalf("batch member: %+v, %v", got, err)
		}
	})
}

// TestTriggerAllowsOnlyTheseReplacements: in Postgres, replaced_txs keeps every transaction
// that gave way (ReplaceTx, MoveBatch, TransitionReplacing), and the trigger refuses any other
// change of a recorded transaction, whoever writes the table.
func TestTriggerAllowsOnlyTheseReplacements(t *testing.T) {
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	replaced := func(id uuid.UUID) []string {
		t.Helper()
		var out []string
		if err := pool.QueryRow(ctx, `SELECT replaced_txs FROM payments WHERE id = $1::uuid`, id.String()).Scan(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}

	// TransitionReplacing keeps the recorded hash.
	s := driveTo(t, l, StatusPending)
	_, h := rawTx("theirs")
	if _, err := l.TransitionReplacing(ctx, s.ID, []Status{StatusPending}, StatusSettled, s.TxHash, Patch{TxHash: h}); err != nil {
		t.Fatal(err)
	}
	if got := replaced(s.ID); len(got) != 1 || got[0] != s.TxHash {
		t.Fatalf("replaced_txs = %v, want [%s]", got, s.TxHash)
	}

	// MoveBatch keeps the old batch's hash of a pending member, and none of a submitted one.
	pend, sub := newPayment(big.NewInt(1)), newPayment(big.NewInt(1))
	pend.Status, sub.Status = StatusQueued, StatusQueued
	mustCreate(t, l, pend)
	first := uuid.New()
	if _, err := l.ClaimQueued(ctx, 10, first, Scope{}); err != nil {
		t.Fatal(err)
	}
	_, hb := rawTx("batch")
	if _, err := l.TransitionBatch(ctx, first, []Status{StatusSubmitted}, StatusPending, Patch{TxHash: hb}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, l, sub)
	if _, err := l.Transition(ctx, sub.ID, []Status{StatusQueued}, StatusSubmitted, Patch{BatchID: first}); err != nil {
		t.Fatal(err)
	}
	if moved, err := l.MoveBatch(ctx, first, uuid.New()); err != nil || len(moved) != 2 {
		t.Fatalf("move: %d %v", len(moved), err)
	}
	if got := replaced(pend.ID); len(got) != 1 || got[0] != hb {
		t.Fatalf("pending member's replaced_txs = %v, want [%s]", got, hb)
	}
	if got := replaced(sub.ID); len(got) != 0 {
		t.Fatalf("submitted member's replaced_txs = %v, want none", got)
	}

	// Anything else is refused.
	sync := driveTo(t, l, StatusPending)    // our own signed transaction
	member := driveTo(t, l, StatusQueued)   // becomes a pending batch member with a hash
	settled := driveTo(t, l, StatusSettled) // final
	b2 := uuid.New()
	if _, err := l.Transition(ctx, member.ID, []Status{StatusQueued}, StatusSubmitted, Patch{BatchID: b2}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.TransitionBatch(ctx, b2, []Status{StatusSubmitted}, StatusPending, Patch{TxHash: hb}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   uuid.UUID
		sql  string
	}{
		{"a hash dropped without a batch move", member.ID,
			`UPDATE payments SET tx_hash = NULL, replaced_txs = array_append(replaced_txs, tx_hash) WHERE id = $1::uuid`},
		{"our signed transaction dropped by a batch move", sync.ID,
			`UPDATE payments SET tx_hash = NULL, batch_id = gen_random_uuid(), replaced_txs = array_append(replaced_txs, tx_hash) WHERE id = $1::uuid`},
		{"a hash replaced without a final move", member.ID,
			`UPDATE payments SET tx_hash = '0xother', replaced_txs = array_append(replaced_txs, tx_hash) WHERE id = $1::uuid`},
		{"a hash replaced without keeping it", member.ID,
			`UPDATE payments SET status = 'settled', settled_at = now(), tx_hash = '0xother' WHERE id = $1::uuid`},
		{"the signed bytes changed by a final move", sync.ID,
			`UPDATE payments SET status = 'settled', settled_at = now(), tx_hash = '0xother', raw_tx = '\x02'::bytea,
				replaced_txs = array_append(replaced_txs, tx_hash) WHERE id = $1::uuid`},
		{"a final payment's hash replaced", settled.ID,
			`UPDATE payments SET tx_hash = '0xother', replaced_txs = array_append(replaced_txs, tx_hash) WHERE id = $1::uuid`},
		{"replaced_txs rewritten", sync.ID,
			`UPDATE payments SET status = 'settled', settled_at = now(), tx_hash = '0xother', replaced_txs = ARRAY['0xforged'] WHERE id = $1::uuid`},
	} {
		if _, err := pool.Exec(ctx, tc.sql, tc.id.String()); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	// The three replacements, written by hand, pass.
	for _, tc := range []struct {
		name string
		id   uuid.UUID
		sql  string
	}{
		{"a batch member moved", member.ID,
			`UPDATE payments SET tx_hash = NULL, batch_id = gen_random_uuid(), replaced_txs = array_append(replaced_txs, tx_hash) WHERE id = $1::uuid`},
		{"settled by another transaction", sync.ID,
			`UPDATE payments SET status = 'settled', settled_at = now(), tx_hash = '0xother', replaced_txs = array_append(replaced_txs, tx_hash) WHERE id = $1::uuid`},
	} {
		if _, err := pool.Exec(ctx, tc.sql, tc.id.String()); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestTransitionBatchSkipsAMemberWithAnotherTransaction: a batch move that records the batch's
// transaction leaves a member with another one recorded where it is, in memory as in Postgres.
func TestTransitionBatchSkipsAMemberWithAnotherTransaction(t *testing.T) {
	bothBooks(t, func(t *testing.T, b batchMover) {
		book := b.(interface {
			batchMover
			RecordReference(context.Context, uuid.UUID, Status, string, json.RawMessage) (Payment, error)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var ids []uuid.UUID
		for range 2 {
			p := newPayment(big.NewInt(1))
			p.Status = StatusQueued
			if err := book.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, p.ID)
		}
		batch := uuid.New()
		if got, err := book.ClaimQueued(ctx, 10, batch, Scope{}); err != nil || len(got) != 2 {
			t.Fatalf("claim: %v %v", got, err)
		}
		_, other := rawTx("other")
		if _, err := book.RecordReference(ctx, ids[0], StatusSubmitted, other, nil); err != nil {
			t.Fatal(err)
		}
		_, hb := rawTx("batch")
		moved, err := book.TransitionBatch(ctx, batch, []Status{StatusSubmitted}, StatusPending, Patch{TxHash: hb})
		if err != nil || len(moved) != 1 || moved[0].ID != ids[1] {
			t.Fatalf("TransitionBatch = %d moved, %v; want the member without a transaction only", len(moved), err)
		}
		if p, err := book.Get(ctx, ids[0]); err != nil || p.Status != StatusSubmitted || p.TxHash != other {
			t.Fatalf("the other member: %s tx %s, %v", p.Status, p.TxHash, err)
		}
	})
}
