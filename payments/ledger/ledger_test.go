package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// samePayload compares JSON documents as values: JSONB keeps neither key order nor spacing.
func samePayload(t testing.TB, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

func TestCreateGetRoundTrip(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	max256 := new(big.Int).Sub(bigPow2(256), big.NewInt(1))
	for _, amount := range []*big.Int{big.NewInt(0), big.NewInt(10_000), bigPow2(255), max256} {
		t.Run(amount.String(), func(t *testing.T) {
			in := newPayment(amount)
			in.JobID = uuid.New()
			before := time.Now().Add(-time.Second)
			got := mustCreate(t, l, in)
			if got.Amount.Cmp(amount) != 0 {
				t.Fatalf("amount = %s, want %s", got.Amount, amount)
			}
			if got.ID != in.ID || got.Rail != in.Rail || got.Status != StatusVerified || got.Network != in.Network ||
				got.Asset != in.Asset || got.Payer != in.Payer || got.PayTo != in.PayTo || got.NonceKey != in.NonceKey ||
				got.JobID != in.JobID || got.TxHash != "" || got.RawTx != nil || got.BatchID != uuid.Nil ||
				got.ErrorReason != "" || got.Attempts != 0 || !got.SettledAt.IsZero() {
				t.Fatalf("got %+v\nfrom %+v", got, in)
			}
			if !samePayload(t, got.Payload, in.Payload) {
				t.Fatalf("payload = %s, want %s", got.Payload, in.Payload)
			}
			if got.CreatedAt.Before(before) || got.CreatedAt.Location() != time.UTC {
				t.Fatalf("created_at = %v", got.CreatedAt)
			}
			// Create is idempotent on the id.
			if err := l.Create(ctx, in); err != nil {
				t.Fatalf("second Create: %v", err)
			}
		})
	}
}

func TestCreateConflicts(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	p := mustCreate(t, l, newPayment(big.NewInt(50_000)))

	other := p
	other.Amount = big.NewInt(1)
	other.Status, other.CreatedAt, other.UpdatedAt = "", time.Time{}, time.Time{}
	if err := l.Create(ctx, other); !errors.Is(err, ErrConflict) {
		t.Fatalf("same id, other amount = %v, want ErrConflict", err)
	}
	sameNonce := newPayment(big.NewInt(50_000))
	sameNonce.NonceKey = p.NonceKey
	if err := l.Create(ctx, sameNonce); !errors.Is(err, ErrNonceUsed) {
		t.Fatalf("other id, same nonce key = %v, want ErrNonceUsed", err)
	}
	if _, err := l.Get(ctx, uuid.New()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown = %v, want ErrNotFound", err)
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	for _, tc := range []struct {
		name   string
		mutate func(*Payment)
	}{
		{"no id", func(p *Payment) { p.ID = uuid.Nil }},
		{"no rail", func(p *Payment) { p.Rail = "" }},
		{"created settled", func(p *Payment) { p.Status = StatusSettled }},
		{"created submitted", func(p *Payment) { p.Status = StatusSubmitted }},
		{"created settling", func(p *Payment) { p.Status = StatusSettling }},
		{"an unknown status", func(p *Payment) { p.Status = "refunded" }},
		{"verified with an error reason", func(p *Payment) { p.ErrorReason = "tool_failed" }},
		{"queued with an error reason", func(p *Payment) { p.Status, p.ErrorReason = StatusQueued, "tool_failed" }},
		{"no nonce key", func(p *Payment) { p.NonceKey = "" }},
		{"no amount", func(p *Payment) { p.Amount = nil }},
		{"negative amount", func(p *Payment) { p.Amount = big.NewInt(-1) }},
		{"amount 2^256", func(p *Payment) { p.Amount = bigPow2(256) }},
		{"payload not JSON", func(p *Payment) { p.Payload = []byte(`{"a":`) }},
		{"payload an array", func(p *Payment) { p.Payload = []byte(`[1,2]`) }},
		{"payload with NUL escape", func(p *Payment) { p.Payload = []byte(`{"a":"x\u0000y"}`) }},
		{"payload too large", func(p *Payment) {
			p.Payload = []byte(`{"a":"` + strings.Repeat("x", MaxPayloadBytes) + `"}`)
		}},
		{"payer with NUL", func(p *Payment) { p.Payer = "0x\x00" }},
		{"network not UTF-8", func(p *Payment) { p.Network = "eip155:\xff" }},
		{"arrives with a transaction", func(p *Payment) { p.TxHash = "0xabc" }},
		{"arrives with attempts", func(p *Payment) { p.Attempts = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPayment(big.NewInt(1))
			tc.mutate(&p)
			if err := l.Create(context.Background(), p); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Create = %v, want ErrInvalid", err)
			}
		})
	}
	// An escaped backslash followed by the text u0000 is not a NUL.
	p := newPayment(big.NewInt(1))
	p.Payload = []byte(`{"a":"\\u0000"}`)
	if err := l.Create(context.Background(), p); err != nil {
		t.Fatalf("escaped backslash: %v", err)
	}
}

// Every pair of statuses: the legal moves succeed and record their patch, the others are
// refused by Go (ErrIllegalTransition) and, bypassing Go, by the trigger.
func TestTransitionTable(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	ctx := context.Background()
	legal := 0
	for _, from := range AllStatuses {
		for _, to := range AllStatuses {
			want := CanTransition(from, to)
			t.Run(fmt.Sprintf("%s->%s", from, to), func(t *testing.T) {
				p := driveTo(t, l, from)
				patch := patchFor(to)
				if to == StatusSettled && (from == StatusVerified || from == StatusQueued) {
					patch.TxHash = "0x" + randomHex(32) // settled by a transaction not ours
				}
				got, err := l.Transition(ctx, p.ID, []Status{from}, to, patch)
				if !want {
					if !errors.Is(err, ErrIllegalTransition) {
						t.Fatalf("illegal move = %v, want ErrIllegalTransition", err)
					}
					if now, _ := l.Get(ctx, p.ID); now.Status != from {
						t.Fatalf("status after a refused move = %s", now.Status)
					}
					// The database refuses it too, whoever asks.
					_, err := pool.Exec(ctx, `UPDATE payments SET status = $2, settled_at = now(), error_reason = 'x',
						raw_tx = COALESCE(raw_tx, '\x01'::bytea) WHERE id = $1::uuid`, p.ID.String(), string(to))
					if from != to && (err == nil || !strings.Contains(err.Error(), "illegal_payment_transition")) {
						t.Fatalf("direct UPDATE %s -> %s = %v, want the trigger's refusal", from, to, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("legal move: %v", err)
				}
				if got.Status != to || !got.UpdatedAt.After(p.CreatedAt.Add(-time.Millisecond)) {
					t.Fatalf("after the move: %+v", got)
				}
				if patch.TxHash != "" && (got.TxHash != patch.TxHash || !bytes.Equal(got.RawTx, patch.RawTx)) {
					t.Fatalf("transaction not recorded: %q %x", got.TxHash, got.RawTx)
				}
				if patch.ErrorReason != "" && got.ErrorReason != patch.ErrorReason {
					t.Fatalf("error_reason = %q", got.ErrorReason)
				}
				if (to == StatusSettled) == got.SettledAt.IsZero() {
					t.Fatalf("settled_at = %v for %s", got.SettledAt, to)
				}
				stored, err := l.Get(ctx, p.ID)
				if err != nil || stored.Status != to || stored.Attempts != got.Attempts {
					t.Fatalf("stored = %+v, %v", stored, err)
				}
			})
			if want {
				legal++
			}
		}
	}
	if legal != 18 {
		t.Fatalf("%d legal edges, want the 18 of the state machine", legal)
	}
}

// The trigger agrees with CanTransition on every pair, including same-status updates (which
// are not moves) — checked straight in SQL, without the Go side.
func TestTransitionsMatchTrigger(t *testing.T) {
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	ctx := context.Background()
	for _, from := range AllStatuses {
		for _, to := range AllStatuses {
			p := driveTo(t, l, from)
			_, err := pool.Exec(ctx, `UPDATE payments SET status = $2, settled_at = now(), error_reason = 'x',
				raw_tx = COALESCE(raw_tx, '\x01'::bytea), tx_hash = COALESCE(tx_hash, '0xmoved') WHERE id = $1::uuid`, p.ID.String(), string(to))
			if ok := err == nil; ok != (CanTransition(from, to) || from == to) {
				t.Errorf("trigger %s -> %s: err %v; Go says legal=%v", from, to, err, CanTransition(from, to))
			}
		}
	}
	// Settled straight from verified only with the transaction that moved the money, on both
	// sides.
	v := driveTo(t, l, StatusVerified)
	if _, err := pool.Exec(ctx, `UPDATE payments SET status = 'settled' WHERE id = $1::uuid`, v.ID.String()); err == nil {
		t.Error("trigger: verified -> settled with no transaction was allowed")
	}
	if _, err := l.Transition(ctx, v.ID, []Status{StatusVerified}, StatusSettled, Patch{}); err == nil {
		t.Error("Go: verified -> settled with no transaction was allowed")
	}
	// A payment starts where Go says it may (entryStatuses), and its identity and signed
	// transaction never change.
	for _, st := range AllStatuses {
		_, err := pool.Exec(ctx, `INSERT INTO payments (id, rail, status, amount, nonce_key, payload, settled_at, error_reason, raw_tx)
			VALUES ($1::uuid, 'x402', $2, 1, $3, '{}', now(), 'x', '\x01'::bytea)`, uuid.NewString(), string(st), "k:"+randomHex(8))
		if ok := err == nil; ok != slices.Contains(entryStatuses, st) {
			t.Errorf("trigger: a payment inserted %s: err %v; Go says it may start there: %v", st, err, slices.Contains(entryStatuses, st))
		}
	}
	s := driveTo(t, l, StatusSubmitted)
	for _, stmt := range []string{
		`UPDATE payments SET raw_tx = '\x02'::bytea WHERE id = $1::uuid`,
		`UPDATE payments SET tx_hash = '0xother' WHERE id = $1::uuid`,
		`UPDATE payments SET amount = amount + 1 WHERE id = $1::uuid`,
		`UPDATE payments SET nonce_key = 'other' WHERE id = $1::uuid`,
	} {
		if _, err := pool.Exec(ctx, stmt, s.ID.String()); err == nil {
			t.Errorf("%s was accepted", stmt)
		}
	}
}

func TestTransitionRefusals(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		at    Status
		from  []Status
		to    Status
		patch func(Payment) Patch
		want  error
	}{
		{"wrong from-status", StatusVerified, []Status{StatusQueued}, StatusSubmitted, func(Payment) Patch { return Patch{BatchID: uuid.New()} }, ErrConflict},
		{"moved on already", StatusNotCharged, []Status{StatusVerified}, StatusQueued, func(Payment) Patch { return Patch{} }, ErrConflict},
		{"no status to move from", StatusVerified, nil, StatusQueued, func(Payment) Patch { return Patch{} }, ErrIllegalTransition},
		{"one illegal from among legal", StatusVerified, []Status{StatusVerified, StatusSettled}, StatusQueued, func(Payment) Patch { return Patch{} }, ErrIllegalTransition},
		{"unknown status", StatusVerified, []Status{StatusVerified}, "refunded", func(Payment) Patch { return Patch{} }, ErrIllegalTransition},
		{"submitted without a transaction", StatusVerified, []Status{StatusVerified}, StatusSubmitted, func(Payment) Patch { return Patch{} }, ErrInvalid},
		{"transaction without its hash", StatusVerified, []Status{StatusVerified}, StatusSubmitted, func(Payment) Patch { return Patch{RawTx: []byte{1}} }, ErrInvalid},
		{"failed without a reason", StatusSubmitted, []Status{StatusSubmitted}, StatusFailed, func(Payment) Patch { return Patch{} }, ErrInvalid},
		{"another transaction hash", StatusSubmitted, []Status{StatusSubmitted}, StatusPending, func(Payment) Patch { return Patch{TxHash: "0xdifferent"} }, ErrConflict},
		{"the same transaction hash", StatusSubmitted, []Status{StatusSubmitted}, StatusPending, func(p Payment) Patch { return Patch{TxHash: p.TxHash, Attempt: true} }, nil},
		{"another signed transaction", StatusSubmitted, []Status{StatusSubmitted}, StatusSettled, func(p Payment) Patch { return Patch{RawTx: []byte("x"), TxHash: p.TxHash} }, ErrConflict},
		{"oversized reason", StatusSubmitted, []Status{StatusSubmitted}, StatusFailed, func(Payment) Patch { return Patch{ErrorReason: strings.Repeat("r", MaxReasonBytes+1)} }, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := driveTo(t, l, tc.at)
			got, err := l.Transition(ctx, p.ID, tc.from, tc.to, tc.patch(p))
			if tc.want == nil {
				if err != nil || got.Status != tc.to || got.Attempts != p.Attempts+1 {
					t.Fatalf("Transition = %+v, %v", got, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Transition = %v, want %v", err, tc.want)
			}
			if now, _ := l.Get(ctx, p.ID); now.Status != tc.at || now.TxHash != p.TxHash {
				t.Fatalf("payment changed by a refused move: %+v", now)
			}
		})
	}
	if _, err := l.Transition(ctx, uuid.New(), []Status{StatusVerified}, StatusQueued, Patch{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("move of an unknown payment = %v, want ErrNotFound", err)
	}
}

// Two replicas race to move the same verified payment, one to submitted and one to
// not_charged, many times: exactly one move wins each race.
func TestConcurrentTransitionsOneWins(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	ledgers := []*Ledger{openLedger(t, openPool(t, schema, ""), ""), openLedger(t, openPool(t, schema, ""), "")}
	ctx := context.Background()
	for range 20 {
		p := mustCreate(t, ledgers[0], newPayment(big.NewInt(10_000)))
		var wg sync.WaitGroup
		results := make([]error, 8)
		for g := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				to := StatusSubmitted
				if g%2 == 1 {
					to = StatusNotCharged
				}
				_, results[g] = ledgers[g%2].Transition(ctx, p.ID, []Status{StatusVerified}, to, patchFor(to))
			}()
		}
		wg.Wait()
		wins := 0
		for _, err := range results {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, ErrConflict):
				t.Fatalf("losing move = %v, want ErrConflict", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d moves won the race, want 1", wins)
		}
	}
}

// Batch workers on two replicas drain the queue: every queued payment is claimed exactly once,
// and a scope keeps other networks' payments out of the batch.
func TestClaimQueuedDisjoint(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	ledgers := []*Ledger{openLedger(t, openPool(t, schema, ""), ""), openLedger(t, openPool(t, schema, ""), "")}
	ctx := context.Background()
	const n = 120
	queued := map[uuid.UUID]bool{}
	for i := range n {
		p := mustCreate(t, ledgers[i%2], newPayment(big.NewInt(int64(i+1))))
		if _, err := ledgers[0].Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
			t.Fatal(err)
		}
		queued[p.ID] = true
	}
	other := newPayment(big.NewInt(7))
	other.Network = "eip155:84532"
	mustCreate(t, ledgers[0], other)
	if _, err := ledgers[0].Transition(ctx, other.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
		t.Fatal(err)
	}
	scope := Scope{Rail: "x402", Network: "eip155:8453"}

	var mu sync.Mutex
	claimed := map[uuid.UUID]uuid.UUID{} // payment -> batch
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				batch := uuid.New()
				got, err := ledgers[w%2].ClaimQueued(ctx, 7, batch, scope)
				if err != nil {
					t.Errorf("ClaimQueued: %v", err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, p := range got {
					if prev, dup := claimed[p.ID]; dup {
						t.Errorf("payment %s claimed by batches %s and %s", p.ID, prev, batch)
					}
					if p.Status != StatusSubmitted || p.BatchID != batch || p.Network != scope.Network {
						t.Errorf("claimed payment %+v", p)
					}
					claimed[p.ID] = batch
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(claimed) != n {
		t.Fatalf("%d payments claimed, want %d", len(claimed), n)
	}
	for id := range queued {
		if _, ok := claimed[id]; !ok {
			t.Fatalf("payment %s never claimed", id)
		}
	}
	if p, _ := ledgers[0].Get(ctx, other.ID); p.Status != StatusQueued {
		t.Fatalf("out-of-scope payment is %s, want still queued", p.Status)
	}
	if _, err := ledgers[0].ClaimQueued(ctx, 0, uuid.New(), Scope{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("limit 0 = %v, want ErrInvalid", err)
	}
	if _, err := ledgers[0].ClaimQueued(ctx, 5, uuid.Nil, Scope{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no batch id = %v, want ErrInvalid", err)
	}
}

// A batch's signed transaction is recorded once; its payments settle together.
func TestBatchSettlement(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	for range 5 {
		p := mustCreate(t, l, newPayment(big.NewInt(100_000)))
		if _, err := l.Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
			t.Fatal(err)
		}
	}
	batch := uuid.New()
	got, err := l.ClaimQueued(ctx, 10, batch, Scope{})
	if err != nil || len(got) != 5 {
		t.Fatalf("ClaimQueued = %d, %v", len(got), err)
	}
	if _, err := l.GetBatch(ctx, batch); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetBatch before recording = %v, want ErrNotFound", err)
	}
	raw, hash := rawTx("batch")
	if err := l.RecordBatchTx(ctx, batch, raw, hash); err != nil {
		t.Fatal(err)
	}
	if err := l.RecordBatchTx(ctx, batch, raw, hash); err != nil {
		t.Fatalf("recording the same transaction again: %v", err)
	}
	raw2, hash2 := rawTx("second signature")
	if err := l.RecordBatchTx(ctx, batch, raw2, hash2); !errors.Is(err, ErrConflict) {
		t.Fatalf("a second signed transaction = %v, want ErrConflict", err)
	}
	b, err := l.GetBatch(ctx, batch)
	if err != nil || !bytes.Equal(b.RawTx, raw) || b.TxHash != hash {
		t.Fatalf("GetBatch = %+v, %v", b, err)
	}
	settled, err := l.TransitionBatch(ctx, batch, []Status{StatusSubmitted, StatusPending}, StatusSettled, Patch{TxHash: hash})
	if err != nil || len(settled) != 5 {
		t.Fatalf("TransitionBatch = %d, %v", len(settled), err)
	}
	for _, p := range settled {
		if p.Status != StatusSettled || p.TxHash != hash || p.SettledAt.IsZero() || p.RawTx != nil {
			t.Fatalf("settled batch member %+v", p)
		}
	}
	again, err := l.TransitionBatch(ctx, batch, []Status{StatusSubmitted, StatusPending}, StatusSettled, Patch{TxHash: hash})
	if err != nil || len(again) != 0 {
		t.Fatalf("settling the batch again moved %d, %v", len(again), err)
	}
}

func TestListRecoverable(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	ctx := context.Background()
	byStatus := map[Status]Payment{}
	for _, s := range AllStatuses {
		byStatus[s] = driveTo(t, l, s)
	}
	fresh := driveTo(t, l, StatusVerified)
	// Everything but fresh was last touched an hour ago.
	if _, err := pool.Exec(ctx, `UPDATE payments SET updated_at = now() - interval '1 hour' WHERE id <> $1::uuid`, fresh.ID.String()); err != nil {
		t.Fatal(err)
	}
	got, err := l.ListRecoverable(ctx, 10*time.Minute, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	for _, p := range got {
		ids = append(ids, p.ID)
	}
	for _, s := range AllStatuses {
		want := s == StatusVerified || s == StatusSubmitted || s == StatusSettling || s == StatusPending
		if slices.Contains(ids, byStatus[s].ID) != want {
			t.Errorf("%s payment listed = %v, want %v", s, !want, want)
		}
	}
	if slices.Contains(ids, fresh.ID) || len(ids) != 4 {
		t.Fatalf("listed %v", ids)
	}
	for _, p := range got {
		if p.Status == StatusSubmitted && len(p.RawTx) == 0 {
			t.Fatalf("submitted payment listed without its signed transaction")
		}
	}
	if one, err := l.ListRecoverable(ctx, 10*time.Minute, 1); err != nil || len(one) != 1 {
		t.Fatalf("limit 1 = %d, %v", len(one), err)
	}

	// Each status is held to its own age: payments with a transaction on chain were touched
	// five minutes ago, the others an hour ago.
	if _, err := pool.Exec(ctx, `UPDATE payments SET updated_at = now() - interval '5 minutes' WHERE status IN ('submitted', 'pending')`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		age  Staleness
		want []Status
	}{
		{Staleness{Working: 10 * time.Minute, OnChain: time.Minute}, []Status{StatusVerified, StatusSettling, StatusSubmitted, StatusPending}},
		{Staleness{Working: 10 * time.Minute, OnChain: 10 * time.Minute}, []Status{StatusVerified, StatusSettling}},
		{Staleness{Working: 2 * time.Hour, OnChain: time.Minute}, []Status{StatusSubmitted, StatusPending}},
	} {
		got, err := l.ListStale(ctx, tc.age, 100)
		if err != nil {
			t.Fatal(err)
		}
		var statuses []Status
		for _, p := range got {
			if p.ID != fresh.ID {
				statuses = append(statuses, p.Status)
			}
		}
		slices.Sort(statuses)
		want := slices.Clone(tc.want)
		slices.Sort(want)
		if !slices.Equal(statuses, want) {
			t.Errorf("ListStale(%+v) = %v; want %v", tc.age, statuses, want)
		}
	}
	if _, err := l.ListStale(ctx, Staleness{Working: time.Minute, OnChain: -time.Second}, 10); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a negative age: %v; want ErrInvalid", err)
	}
}

func TestRunExclusive(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	a, b := openLedger(t, openPool(t, schema, ""), ""), openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	inside, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ran, err := a.RunExclusive(ctx, "settle-batches", func(context.Context) error {
			close(inside)
			<-release
			return nil
		})
		if !ran || err != nil {
			t.Errorf("first RunExclusive = %v, %v", ran, err)
		}
	}()
	<-inside
	ran, err := b.RunExclusive(ctx, "settle-batches", func(context.Context) error {
		t.Error("ran while another replica held the job")
		return nil
	})
	if ran || err != nil {
		t.Fatalf("second RunExclusive while held = %v, %v; want false, nil", ran, err)
	}
	other, err := b.RunExclusive(ctx, "anchor-proofs", func(context.Context) error { return nil })
	if !other || err != nil {
		t.Fatalf("another job name = %v, %v", other, err)
	}
	close(release)
	wg.Wait()
	boom := errors.New("boom")
	ran, err = b.RunExclusive(ctx, "settle-batches", func(context.Context) error { return boom })
	if !ran || !errors.Is(err, boom) {
		t.Fatalf("RunExclusive after release = %v, %v; want true and fn's error", ran, err)
	}
}

// The lock's session dies while the job runs: the job's context is cancelled with
// ErrLeaseLost, and another replica can take the job.
func TestRunExclusiveLeaseLost(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	a, b := openLedger(t, pool, ""), openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	ran, err := a.RunExclusive(ctx, "reconcile", func(jobCtx context.Context) error {
		killCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var killed bool
		if err := pool.QueryRow(killCtx, `SELECT pg_terminate_backend(pid) FROM pg_locks
			WHERE locktype = 'advisory' AND classid::bigint = $1 AND granted`, exclusiveLockSpace).Scan(&killed); err != nil || !killed {
			return fmt.Errorf("terminate the lock's session: %v, %v", killed, err)
		}
		select {
		case <-jobCtx.Done():
			return jobCtx.Err()
		case <-time.After(10 * time.Second):
			return errors.New("job context not cancelled after its session died")
		}
	})
	if !ran || !errors.Is(err, ErrLeaseLost) || !errors.Is(err, context.Canceled) {
		t.Fatalf("RunExclusive = %v, %v; want true, ErrLeaseLost", ran, err)
	}
	ran, err = b.RunExclusive(ctx, "reconcile", func(context.Context) error { return nil })
	if !ran || err != nil {
		t.Fatalf("another replica after the lease was lost = %v, %v", ran, err)
	}
}

// Whatever checkPayload accepts, Postgres stores as JSONB: a payment spooled in an outage is
// never refused at replay for its payload.
func TestPayloadCheckIsSoundForJSONB(t *testing.T) {
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	ctx := context.Background()
	for _, s := range payloadCorpus {
		ours := checkPayload([]byte(s))
		_, pgErr := pool.Exec(ctx, `SELECT $1::text::jsonb`, s)
		if ours == nil && pgErr != nil {
			t.Errorf("checkPayload accepts %q, Postgres refuses it: %v", s, pgErr)
		}
		if ours != nil && pgErr == nil {
			t.Logf("stricter than Postgres on %q: %v", s, ours)
		}
	}
}

func TestRecordAttempt(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	ctx := context.Background()
	p := driveTo(t, l, StatusPending)
	if _, err := pool.Exec(ctx, `UPDATE payments SET updated_at = now() - interval '1 hour' WHERE id = $1::uuid`, p.ID.String()); err != nil {
		t.Fatal(err)
	}
	got, err := l.RecordAttempt(ctx, p.ID, StatusPending)
	if err != nil || got.Attempts != p.Attempts+1 || got.Status != StatusPending || time.Since(got.UpdatedAt) > time.Minute {
		t.Fatalf("RecordAttempt = %+v, %v", got, err)
	}
	if listed, err := l.ListRecoverable(ctx, 10*time.Minute, 10); err != nil || len(listed) != 0 {
		t.Fatalf("a payment just attempted is listed as recoverable: %d, %v", len(listed), err)
	}
	if _, err := l.RecordAttempt(ctx, p.ID, StatusSubmitted); !errors.Is(err, ErrConflict) {
		t.Fatalf("RecordAttempt in the wrong status = %v, want ErrConflict", err)
	}
	if _, err := l.RecordAttempt(ctx, p.ID, StatusSettled); !errors.Is(err, ErrInvalid) {
		t.Fatalf("RecordAttempt on a terminal status = %v, want ErrInvalid", err)
	}
	if _, err := l.RecordAttempt(ctx, uuid.New(), StatusPending); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RecordAttempt of an unknown payment = %v, want ErrNotFound", err)
	}
}

// referenceBook is what both ledgers offer for references.
type referenceBook interface {
	Create(ctx context.Context, p Payment) error
	Get(ctx context.Context, id uuid.UUID) (Payment, error)
	RecordReference(ctx context.Context, id uuid.UUID, status Status, ref string, payload json.RawMessage) (Payment, error)
	GetByReference(ctx context.Context, rail, ref string) (Payment, error)
}

// TestRecordReference holds both ledgers to one contract: a reference is recorded once on a
// payment that stays where it is, and found by GetByReference.
func TestRecordReference(t *testing.T) {
	for _, impl := range []struct {
		name string
		open func(t *testing.T) referenceBook
	}{
		{"memory", func(*testing.T) referenceBook {
			return NewMemory()
		}},
		{"postgres", func(t *testing.T) referenceBook {
			leakCheck(t)
			return openLedger(t, openPool(t, newSchema(t), ""), "")
		}},
	} {
		t.Run(impl.name, func(t *testing.T) {
			l := impl.open(t)
			ctx := context.Background()
			p := newPayment(big.NewInt(50))
			p.Rail = "mpp"
			if err := l.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
			created, err := l.Get(ctx, p.ID)
			if err != nil {
				t.Fatal(err)
			}
			for i, payload := range []json.RawMessage{json.RawMessage(`{"customer": "cus_1"}`), nil} { // again: a no-op
				got, err := l.RecordReference(ctx, p.ID, StatusVerified, "pi_ref1", payload)
				if err != nil || got.TxHash != "pi_ref1" || got.Status != StatusVerified {
					t.Fatalf("RecordReference %d = %+v, %v", i, got, err)
				}
				// It touches the payment: reconciliation leaves a payment alone while it moves.
				if !got.UpdatedAt.After(created.UpdatedAt) {
					t.Fatalf("RecordReference %d left updated_at at %v", i, got.UpdatedAt)
				}
				var stored map[string]string
				if err := json.Unmarshal(got.Payload, &stored); err != nil || stored["customer"] != "cus_1" {
					t.Fatalf("RecordReference %d stored %s, %v", i, got.Payload, err)
				}
			}
			if got, err := l.GetByReference(ctx, "mpp", "pi_ref1"); err != nil || got.ID != p.ID {
				t.Fatalf("GetByReference = %+v, %v", got, err)
			}
			for _, tc := range []struct {
				name   string
				id     uuid.UUID
				status Status
				ref    string
				want   error
			}{
				{"another reference", p.ID, StatusVerified, "pi_ref2", ErrConflict},
				{"another status", p.ID, StatusPending, "pi_ref1", ErrConflict},
				{"a terminal status", p.ID, StatusSettled, "pi_ref1", ErrInvalid},
				{"no reference", p.ID, StatusVerified, "", ErrInvalid},
				{"an unknown payment", uuid.New(), StatusVerified, "pi_ref1", ErrNotFound},
			} {
				if _, err := l.RecordReference(ctx, tc.id, tc.status, tc.ref, nil); !errors.Is(err, tc.want) {
					t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
				}
			}
			if _, err := l.RecordReference(ctx, p.ID, StatusVerified, "pi_ref1", json.RawMessage(`[1]`)); !errors.Is(err, ErrInvalid) {
				t.Errorf("a payload that is not an object: %v, want ErrInvalid", err)
			}
		})
	}
}

// TestClaimQueuedSettling: queued payments handed to a remote facilitator move to settling,
// once, only within the scope, without a batch; a settling payment then moves on like any.
func TestClaimQueuedSettling(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	var queued []uuid.UUID
	for range 3 {
		p := mustCreate(t, l, newPayment(big.NewInt(100_000)))
		if _, err := l.Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
			t.Fatal(err)
		}
		queued = append(queued, p.ID)
	}
	if got, err := l.ClaimQueuedSettling(ctx, 10, Scope{Network: "eip155:1"}); err != nil || len(got) != 0 {
		t.Fatalf("claim outside the scope = %d, %v", len(got), err)
	}
	got, err := l.ClaimQueuedSettling(ctx, 2, Scope{})
	if err != nil || len(got) != 2 {
		t.Fatalf("ClaimQueuedSettling = %d, %v", len(got), err)
	}
	for _, p := range got {
		if p.Status != StatusSettling || p.BatchID != uuid.Nil || !slices.Contains(queued, p.ID) {
			t.Fatalf("claimed %+v", p)
		}
	}
	rest, err := l.ClaimQueuedSettling(ctx, 10, Scope{})
	if err != nil || len(rest) != 1 || rest[0].ID == got[0].ID || rest[0].ID == got[1].ID {
		t.Fatalf("second claim = %+v, %v", rest, err)
	}
	if again, _ := l.ClaimQueuedSettling(ctx, 10, Scope{}); len(again) != 0 {
		t.Fatal("a claimed payment was claimed twice")
	}
	if _, err := l.Transition(ctx, got[0].ID, []Status{StatusSettling}, StatusSettled, Patch{TxHash: "0x" + strings.Repeat("ab", 32)}); err != nil {
		t.Fatalf("settling -> settled: %v", err)
	}
	if _, err := l.Transition(ctx, got[1].ID, []Status{StatusSettling}, StatusNotCharged, Patch{ErrorReason: "invalid_exact_evm_signature"}); err != nil {
		t.Fatalf("settling -> not_charged: %v", err)
	}
}

// TestReplaceTx: a dead transaction (refused "nonce too low") is the one recorded transaction
// that may be replaced, only by naming it, and the trigger keeps its hash.
func TestReplaceTx(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	ctx := context.Background()
	p := driveTo(t, l, StatusSubmitted)
	raw2, hash2 := rawTx("second nonce")
	if _, err := l.ReplaceTx(ctx, p.ID, "0xnot-the-recorded-one", raw2, hash2); !errors.Is(err, ErrConflict) {
		t.Fatalf("replacing a transaction that is not the recorded one = %v, want ErrConflict", err)
	}
	if _, err := l.ReplaceTx(ctx, p.ID, p.TxHash, raw2, p.TxHash); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a replacement by the same hash = %v, want ErrInvalid", err)
	}
	got, err := l.ReplaceTx(ctx, p.ID, p.TxHash, raw2, hash2)
	if err != nil || got.TxHash != hash2 || !bytes.Equal(got.RawTx, raw2) || got.Status != StatusSubmitted || got.Attempts != p.Attempts+1 {
		t.Fatalf("ReplaceTx = %+v, %v", got, err)
	}
	var replaced []string
	if err := pool.QueryRow(ctx, `SELECT replaced_txs FROM payments WHERE id = $1::uuid`, p.ID.String()).Scan(&replaced); err != nil ||
		!slices.Equal(replaced, []string{p.TxHash}) {
		t.Fatalf("replaced_txs = %v, %v; want the dead hash", replaced, err)
	}
	// Pending payments too; not queued ones, not batch members.
	pend := driveTo(t, l, StatusPending)
	raw3, hash3 := rawTx("third")
	if _, err := l.ReplaceTx(ctx, pend.ID, pend.TxHash, raw3, hash3); err != nil {
		t.Fatalf("replacing a pending payment's transaction: %v", err)
	}
	q := driveTo(t, l, StatusQueued)
	if _, err := l.ReplaceTx(ctx, q.ID, "0xabc", raw3, "0xdef"); !errors.Is(err, ErrConflict) {
		t.Fatalf("replacing on a queued payment = %v, want ErrConflict", err)
	}
	// The trigger: replaced_txs only grows by the hash being replaced, with the status kept.
	for _, stmt := range []string{
		`UPDATE payments SET replaced_txs = array_append(replaced_txs, 'forged') WHERE id = $1::uuid`,
		`UPDATE payments SET raw_tx = '\x09'::bytea, tx_hash = '0xnew', replaced_txs = array_append(replaced_txs, 'forged') WHERE id = $1::uuid`,
		`UPDATE payments SET raw_tx = '\x09'::bytea, tx_hash = '0xnew', replaced_txs = array_append(replaced_txs, tx_hash), status = 'settled', settled_at = now() WHERE id = $1::uuid`,
		`UPDATE payments SET tx_hash = '0xnew' WHERE id = $1::uuid`,
	} {
		if _, err := pool.Exec(ctx, stmt, p.ID.String()); err == nil {
			t.Errorf("%s was accepted", stmt)
		}
	}
}

// Each rail's recovery lists only its own payments: another rail's stale payments, older and
// more than a page of them, must not fill the page it reads (they may be ones it never
// finishes, and its own would then never be recovered). In Postgres and in memory alike.
func TestListStaleByRail(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	mem := NewMemory()
	ctx := context.Background()
	var mine uuid.UUID
	for i, rail := range []string{"mpp", "mpp", "mpp", "x402"} {
		p := newPayment(big.NewInt(10_000))
		p.Rail = rail
		if rail == "mpp" {
			p.NonceKey = "mpp:challenge:" + randomHex(16)
		} else {
			mine = p.ID
		}
		for _, b := range []interface {
			Create(context.Context, Payment) error
		}{l, mem} {
			if err := b.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		// The other rail's are older.
		if _, err := pool.Exec(ctx, `UPDATE payments SET updated_at = now() - $2::int * interval '1 minute' WHERE id = $1::uuid`, p.ID.String(), 60-i); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // the memory ledger orders by its own clock
	}
	for name, list := range map[string]func(Staleness, int) ([]Payment, error){
		"postgres": func(a Staleness, n int) ([]Payment, error) { return l.ListStale(ctx, a, n) },
		"memory": func(a Staleness, n int) ([]Payment, error) {
			a.Working, a.OnChain = -time.Hour, -time.Hour // the memory ledger's payments are fresh
			return mem.ListStale(ctx, a, n)
		},
	} {
		got, err := list(Staleness{Working: time.Minute, OnChain: time.Minute, Rail: "x402"}, 2)
		if err != nil || len(got) != 1 || got[0].ID != mine {
			t.Fatalf("%s: the x402 page = %+v, %v; want the one x402 payment", name, got, err)
		}
		all, err := list(Staleness{Working: time.Minute, OnChain: time.Minute}, 10)
		if err != nil || len(all) != 4 {
			t.Fatalf("%s: every rail = %d payments, %v; want 4", name, len(all), err)
		}
	}
}
