package ledger

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

func nonceRowFor(key string) nonceRow {
	now := normalizeTime(time.Now())
	return nonceRow{Key: key, ClaimID: uuid.New(), ClaimedAt: now, ExpiresAt: now.Add(time.Hour)}
}

func waits(rows ...nonceRow) []*batchWait[nonceRow, nonceOutcome] {
	out := make([]*batchWait[nonceRow, nonceOutcome], len(rows))
	for i, r := range rows {
		out[i] = &batchWait[nonceRow, nonceOutcome]{ctx: context.Background(), req: r, done: make(chan struct{})}
	}
	return out
}

// TestNonceWriterBatchOutcomes: one statement, and each row's own outcome — fresh, already
// recorded (with the recorded claim id), the second of a key twice in the batch, and a row
// Postgres refuses for its content failing alone.
func TestNonceWriterBatchOutcomes(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	ctx := context.Background()

	old := nonceRowFor("x402:old:" + randomHex(8))
	if fresh, _, err := insertNonce(ctx, pool, old); err != nil || !fresh {
		t.Fatalf("seed row: %v %v", fresh, err)
	}
	a, b := nonceRowFor("x402:a:"+randomHex(8)), nonceRowFor("x402:b:"+randomHex(8))
	again := nonceRowFor(old.Key)
	twice := nonceRowFor(a.Key)
	batch := waits(a, again, b, twice)
	l.writeNonces(ctx, batch)
	for i, want := range []struct {
		fresh bool
		have  uuid.UUID
	}{{true, a.ClaimID}, {false, old.ClaimID}, {true, b.ClaimID}, {false, a.ClaimID}} {
		got := batch[i]
		<-got.done
		if got.err != nil || got.out.fresh != want.fresh || got.out.have != want.have {
			t.Fatalf("row %d (%s): fresh %v have %v err %v; want fresh %v have %v", i, got.req.Key, got.out.fresh, got.out.have, got.err, want.fresh, want.have)
		}
	}
	if n := countRows(t, pool, `SELECT count(*) FROM payment_nonces WHERE key = ANY($1)`, []string{a.Key, b.Key, old.Key}); n != 3 {
		t.Fatalf("%d rows, want 3", n)
	}

	// A NUL byte is no text for Postgres (class 22): the statement fails, the rows are retried
	// one by one, and only the bad one fails.
	c, d := nonceRowFor("x402:c:"+randomHex(8)), nonceRowFor("x402:bad\x00:"+randomHex(8))
	batch = waits(c, d)
	l.writeNonces(ctx, batch)
	<-batch[0].done
	<-batch[1].done
	if batch[0].err != nil || !batch[0].out.fresh {
		t.Fatalf("good row next to a bad one: %v %v", batch[0].out.fresh, batch[0].err)
	}
	if batch[1].err == nil || transientDB(batch[1].err) {
		t.Fatalf("bad row: %v, want Postgres's refusal", batch[1].err)
	}
}

// TestClaimsConcurrentRowsBatched: many concurrent claims are all granted and recorded, with
// fewer statements than claims, and a second claim of each is refused.
func TestClaimsConcurrentRowsBatched(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	rdb, prefix := newRedis(t)
	pool := openPool(t, schema, "")
	c := newClaims(t, rdb, openLedger(t, pool, ""), prefix)
	var statements atomic.Int64
	c.nonces.onWrite = func(n int) { statements.Add(1) }
	const n = 300
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "x402:many:" + randomHex(12)
	}
	claimAll := func() []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = c.Claim(context.Background(), keys[i], time.Now().Add(time.Hour))
			}()
		}
		close(start)
		wg.Wait()
		return errs
	}
	for i, err := range claimAll() {
		if err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
	}
	if got := countRows(t, pool, `SELECT count(*) FROM payment_nonces WHERE key = ANY($1)`, keys); got != n {
		t.Fatalf("%d rows, want %d", got, n)
	}
	if s := statements.Load(); s >= n {
		t.Fatalf("%d statements for %d concurrent claims: nothing was batched", s, n)
	}
	t.Logf("%d claims recorded with %d statements", n, statements.Load())
	// Redis forgets them all: Postgres, through the same batches, refuses every one.
	for _, k := range keys {
		rdb.Del(context.Background(), prefix+"nonce:"+k)
	}
	for i, err := range claimAll() {
		if !errors.Is(err, ErrNonceUsed) {
			t.Fatalf("claim %d again: %v, want ErrNonceUsed", i, err)
		}
	}
}

// TestNonceWriterCancel: a claim whose context ends while its row waits leaves at once, and is
// left out of the statement; the others queued with it are written.
func TestNonceWriterCancel(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	w := newNonceWriter(openLedger(t, pool, ""))
	var sizes []int
	var mu sync.Mutex
	w.onWrite = func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() }

	// Every slot busy: rows queue.
	w.mu.Lock()
	w.inFlight = nonceBatchInFlight
	w.mu.Unlock()
	rows := []nonceRow{nonceRowFor("x402:q1:" + randomHex(8)), nonceRowFor("x402:q2:" + randomHex(8)), nonceRowFor("x402:q3:" + randomHex(8))}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make([]error, len(rows))
	canceled := make(chan error, 1)
	var wg sync.WaitGroup
	for i, r := range rows {
		if i == 1 {
			go func() { _, _, err := insertNonceBatched(ctx, w, r); canceled <- err }()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var fresh bool
			fresh, _, errs[i] = insertNonceBatched(context.Background(), w, r)
			if errs[i] == nil && !fresh {
				errs[i] = errors.New("not fresh")
			}
		}()
	}
	waitFor(t, 5*time.Second, "three queued rows", func() bool { w.mu.Lock(); defer w.mu.Unlock(); return len(w.pending) == 3 })
	cancel()
	if err := <-canceled; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled claim: %v", err)
	}
	// A slot frees up.
	w.mu.Lock()
	w.inFlight--
	w.mu.Unlock()
	go func() {
		w.mu.Lock()
		w.inFlight++
		w.mu.Unlock()
		w.drain()
	}()
	wg.Wait()
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("queued claims: %v, %v", errs[0], errs[2])
	}
	if n := countRows(t, pool, `SELECT count(*) FROM payment_nonces WHERE key = $1`, rows[1].Key); n != 0 {
		t.Fatalf("the canceled claim's row was written")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 1 || sizes[0] != 2 {
		t.Fatalf("statements of %v rows, want one of 2", sizes)
	}
	w.mu.Lock()
	w.inFlight -= nonceBatchInFlight - 1
	w.mu.Unlock()
}

// TestClaimsConcurrentPostgresDown: claims batched while Postgres is away all stand on Redis's
// word and are spooled, then replayed.
func TestClaimsConcurrentPostgresDown(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	rdb, prefix := newRedis(t)
	px := newProxy(t, pgTarget(t))
	direct := openPool(t, schema, "")
	l := openLedger(t, openPool(t, schema, px.addr), "")
	c := newClaims(t, rdb, l, prefix)
	if err := c.Claim(context.Background(), "x402:warm:"+randomHex(8), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	px.cut()
	const n = 40
	keys := make([]string, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range keys {
		keys[i] = "x402:down:" + randomHex(12)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Claim(context.Background(), keys[i], time.Now().Add(time.Hour))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("claim %d with Postgres down: %v", i, err)
		}
	}
	if s := l.Stats(); s.SpoolDepth != n || !s.Degraded {
		t.Fatalf("stats = %+v, want %d spooled", s, n)
	}
	px.restore(t)
	waitFor(t, 15*time.Second, "the spooled claims to be replayed", func() bool { s := l.Stats(); return s.SpoolDepth == 0 && !s.Degraded })
	if got := countRows(t, direct, `SELECT count(*) FROM payment_nonces WHERE key = ANY($1)`, keys); got != n {
		t.Fatalf("%d rows after replay, want %d", got, n)
	}
}
