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

// countStatements counts the statements a writer starts.
func countStatements[R, O any](c *coalescer[R, O]) *atomic.Int64 {
	var n atomic.Int64
	c.onWrite = func(int) { n.Add(1) }
	return &n
}

// runAll runs fs at once and returns their errors.
func runAll(fs []func() error) []error {
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f()
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// holdSlots makes every statement slot of c busy, so that rows queue; the returned func frees
// one and drains the queue with it, then gives the rest back.
func holdSlots[R, O any](c *coalescer[R, O]) (release func()) {
	c.mu.Lock()
	c.inFlight = c.maxInFlight
	c.mu.Unlock()
	return func() {
		c.drain() // runs in the slot taken above: drain's exit frees it
		c.mu.Lock()
		c.inFlight -= c.maxInFlight - 1
		c.mu.Unlock()
	}
}

func queued[R, O any](c *coalescer[R, O]) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// TestCreateBatchedOutcomes: concurrent creates share statements, and each gets the answer it
// would get alone: new, the same payment again (no-op, also twice in one batch), another
// payment under a used id (ErrConflict), a nonce key another payment holds (ErrNonceUsed,
// also when both are new in one batch: exactly one wins).
func TestCreateBatchedOutcomes(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	statements := countStatements(l.creates)
	old := mustCreate(t, l, newPayment(big.NewInt(5)))
	otherTerms := old
	otherTerms.Amount = big.NewInt(6)
	otherTerms.NonceKey = "x402:other:" + randomHex(8)
	takenKey := newPayment(big.NewInt(7))
	takenKey.NonceKey = old.NonceKey
	twin := newPayment(big.NewInt(8))
	rival := newPayment(big.NewInt(9))
	rival.NonceKey = twin.NonceKey

	const fresh = 200
	var ps []Payment
	var want []error
	for range fresh {
		ps, want = append(ps, newPayment(big.NewInt(10))), append(want, nil)
	}
	ps = append(ps, old, otherTerms, takenKey)
	want = append(want, nil, ErrConflict, ErrNonceUsed)
	var fs []func() error
	for _, p := range append(ps, twin, twin, rival) {
		fs = append(fs, func() error { return l.Create(context.Background(), p) })
	}
	errs := runAll(fs)
	for i, w := range want {
		if w == nil && errs[i] != nil || w != nil && !errors.Is(errs[i], w) {
			t.Fatalf("create %d: %v, want %v", i, errs[i], w)
		}
	}
	// twin (twice) and rival race for one nonce key: one payment wins, and both twin's
	// creates share its fate.
	twins, rivalErr := errs[len(errs)-3:len(errs)-1], errs[len(errs)-1]
	switch {
	case twins[0] == nil && twins[1] == nil && errors.Is(rivalErr, ErrNonceUsed):
	case errors.Is(twins[0], ErrNonceUsed) && errors.Is(twins[1], ErrNonceUsed) && rivalErr == nil:
	default:
		t.Fatalf("twin, twin, rival: %v, %v, %v; want one payment to win the nonce key", twins[0], twins[1], rivalErr)
	}
	for _, p := range ps[:fresh] {
		got, err := l.Get(context.Background(), p.ID)
		if err != nil || !sameIdentity(got, p) || got.Status != StatusVerified || string(got.Payload) == "" || !got.CreatedAt.Equal(normalizeTime(got.CreatedAt)) {
			t.Fatalf("payment %s read back as %+v, %v", p.ID, got, err)
		}
	}
	if n := countRows(t, pool, `SELECT count(*) FROM payments`); n != fresh+2 {
		t.Fatalf("%d rows, want %d", n, fresh+2) // old, and twin or rival
	}
	if s := statements.Load(); s >= int64(len(fs)) {
		t.Fatalf("%d statements for %d concurrent creates: nothing was batched", s, len(fs))
	}
	t.Logf("%d creates with %d statements", len(fs), statements.Load())
}

// TestTransitionBatchedOutcomes: concurrent moves share statements, each with its own
// outcome: moved with its patch, one winner of two moves of one payment, ErrConflict for a
// payment in another status or with another transaction, ErrNotFound for an unknown id.
func TestTransitionBatchedOutcomes(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	const n = 150
	ps := make([]Payment, n)
	for i := range ps {
		ps[i] = mustCreate(t, l, newPayment(big.NewInt(100)))
	}
	settled := driveTo(t, l, StatusSettled)
	sub := driveTo(t, l, StatusSubmitted)
	contested := mustCreate(t, l, newPayment(big.NewInt(3)))
	statements := countStatements(l.moves)

	type move struct {
		id    uuid.UUID
		from  []Status
		to    Status
		patch Patch
		want  error // nil: moved
	}
	var moves []move
	jobs := make([]uuid.UUID, n)
	for i, p := range ps {
		jobs[i] = uuid.New()
		to, patch := StatusQueued, Patch{JobID: jobs[i]}
		if i%3 == 0 {
			to, patch = StatusNotCharged, Patch{JobID: jobs[i], ErrorReason: "tool_failed"}
		}
		moves = append(moves, move{p.ID, []Status{StatusVerified}, to, patch, nil})
	}
	moves = append(moves,
		move{settled.ID, []Status{StatusVerified}, StatusQueued, Patch{}, ErrConflict},
		move{sub.ID, []Status{StatusSubmitted}, StatusPending, Patch{TxHash: "0x" + randomHex(32)}, ErrConflict},
		move{uuid.New(), []Status{StatusVerified}, StatusQueued, Patch{}, ErrNotFound},
	)
	var fs []func() error
	got := make([]Payment, len(moves))
	for i, m := range moves {
		fs = append(fs, func() error {
			var err error
			got[i], err = l.Transition(context.Background(), m.id, m.from, m.to, m.patch)
			return err
		})
	}
	var contestedErrs [2]error
	for i, to := range []Status{StatusQueued, StatusNotCharged} {
		fs = append(fs, func() error {
			_, contestedErrs[i] = l.Transition(context.Background(), contested.ID, []Status{StatusVerified}, to, Patch{})
			return nil
		})
	}
	errs := runAll(fs)
	for i, m := range moves {
		if m.want == nil && errs[i] != nil || m.want != nil && !errors.Is(errs[i], m.want) {
			t.Fatalf("move %d of %s to %s: %v, want %v", i, m.id, m.to, errs[i], m.want)
		}
		if m.want != nil {
			continue
		}
		p := got[i]
		if p.ID != m.id || p.Status != m.to || p.JobID != m.patch.JobID || p.ErrorReason != m.patch.ErrorReason || p.UpdatedAt.IsZero() {
			t.Fatalf("move %d returned %+v", i, p)
		}
		if db, _ := l.Get(context.Background(), m.id); db.Status != m.to || db.JobID != m.patch.JobID {
			t.Fatalf("payment %s reads back as %s job %s", m.id, db.Status, db.JobID)
		}
	}
	if (contestedErrs[0] == nil) == (contestedErrs[1] == nil) {
		t.Fatalf("two moves of one payment: %v, %v; want exactly one winner", contestedErrs[0], contestedErrs[1])
	}
	for _, err := range contestedErrs {
		if err != nil && !errors.Is(err, ErrConflict) {
			t.Fatalf("the loser of two moves: %v, want ErrConflict", err)
		}
	}
	if db, _ := l.Get(context.Background(), sub.ID); db.TxHash != sub.TxHash || db.Status != StatusSubmitted {
		t.Fatalf("a conflicting tx hash changed the payment: %+v", db)
	}
	if s := statements.Load(); s >= int64(len(fs)) {
		t.Fatalf("%d statements for %d concurrent moves: nothing was batched", s, len(fs))
	}
	t.Logf("%d moves with %d statements", len(fs), statements.Load())
}

// TestPaymentBatchPoisonRowFailsAlone: a row Postgres refuses fails the shared statement; the
// rows are then written one by one, and only the bad one fails. The bad rows are made past
// the ledger's own checks, which would otherwise refuse them first.
func TestPaymentBatchPoisonRowFailsAlone(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	var sizes []int
	var mu sync.Mutex
	l.creates.onWrite = func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() }
	l.moves.onWrite = l.creates.onWrite

	prep := func(p Payment) Payment {
		p, err := prepareNew(p, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := []Payment{prep(newPayment(big.NewInt(1))), prep(newPayment(big.NewInt(2))), prep(newPayment(big.NewInt(3)))}
	bad := prep(newPayment(big.NewInt(4)))
	bad.NonceKey += "\x00" // no text for Postgres (class 22)
	release := holdSlots(l.creates)
	var fs []func() error
	for _, p := range append(good, bad) {
		fs = append(fs, func() error { return l.createPayment(context.Background(), p) })
	}
	done := make(chan []error)
	go func() { done <- runAll(fs) }()
	waitFor(t, 5*time.Second, "four queued creates", func() bool { return queued(l.creates) == 4 })
	release()
	errs := <-done
	for i := range good {
		if errs[i] != nil {
			t.Fatalf("good create %d next to a bad one: %v", i, errs[i])
		}
	}
	if err := errs[3]; err == nil || transientDB(err) {
		t.Fatalf("bad create: %v, want Postgres's refusal", err)
	}

	// Moves: one the trigger refuses (verified -> settled is no edge), and one whose reason
	// Postgres cannot store.
	release = holdSlots(l.moves)
	at := normalizeTime(time.Now())
	ms := []moveReq{
		{id: good[0].ID, from: []Status{StatusVerified}, to: StatusQueued, at: at},
		{id: good[1].ID, from: []Status{StatusVerified}, to: StatusSettled, at: at},
		{id: good[2].ID, from: []Status{StatusVerified}, to: StatusNotCharged, patch: Patch{ErrorReason: "bad\x00"}, at: at},
	}
	fs = fs[:0]
	for _, m := range ms {
		fs = append(fs, func() error { _, err := l.moveDB(context.Background(), m); return err })
	}
	go func() { done <- runAll(fs) }()
	waitFor(t, 5*time.Second, "three queued moves", func() bool { return queued(l.moves) == 3 })
	release()
	errs = <-done
	if errs[0] != nil {
		t.Fatalf("good move next to bad ones: %v", errs[0])
	}
	if !errors.Is(errs[1], ErrIllegalTransition) {
		t.Fatalf("move the trigger refuses: %v, want ErrIllegalTransition", errs[1])
	}
	if errs[2] == nil || isUnavailable(errs[2]) {
		t.Fatalf("move with a NUL reason: %v, want Postgres's refusal", errs[2])
	}
	for i, want := range []Status{StatusQueued, StatusVerified, StatusVerified} {
		if p, err := l.Get(context.Background(), ms[i].id); err != nil || p.Status != want {
			t.Fatalf("payment %d is %s (%v), want %s", i, p.Status, err, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 2 || sizes[0] != 4 || sizes[1] != 3 {
		t.Fatalf("statements of %v rows, want one of 4 and one of 3", sizes)
	}
}

// TestPaymentBatchCancel: a caller whose context ends while its row waits leaves at once and
// its row is left out; the rows queued with it are written.
func TestPaymentBatchCancel(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	var sizes []int
	var mu sync.Mutex
	l.creates.onWrite = func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() }

	ps := []Payment{newPayment(big.NewInt(1)), newPayment(big.NewInt(2)), newPayment(big.NewInt(3))}
	release := holdSlots(l.creates)
	ctx, cancel := context.WithCancel(context.Background())
	canceled := make(chan error, 1)
	go func() { canceled <- l.Create(ctx, ps[1]) }()
	errs := make(chan error, 2)
	for _, p := range []Payment{ps[0], ps[2]} {
		go func() { errs <- l.Create(context.Background(), p) }()
	}
	waitFor(t, 5*time.Second, "three queued creates", func() bool { return queued(l.creates) == 3 })
	cancel()
	if err := <-canceled; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled create: %v", err)
	}
	release()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("create queued with a canceled one: %v", err)
		}
	}
	if n := countRows(t, pool, `SELECT count(*) FROM payments WHERE id = $1`, ps[1].ID); n != 0 {
		t.Fatal("the canceled create's row was written")
	}
	if s := l.Stats(); s.SpoolDepth != 0 || s.Degraded {
		t.Fatalf("a canceled create touched the spool: %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 1 || sizes[0] != 2 {
		t.Fatalf("statements of %v rows, want one of 2", sizes)
	}
}

// TestPaymentBatchPostgresDown: creates batched when Postgres goes away are all spooled (the
// shared statement's failure is each row's), moves of payments already in Postgres are
// ErrUnavailable, and when Postgres is back the spool is replayed.
func TestPaymentBatchPostgresDown(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	direct := openPool(t, schema, "")
	l := openLedger(t, openPool(t, schema, px.addr), "")
	statements := countStatements(l.creates)
	const n = 40
	inPG := make([]Payment, n)
	for i := range inPG {
		inPG[i] = mustCreate(t, l, newPayment(big.NewInt(1)))
	}
	px.cut()
	ps := make([]Payment, n)
	var fs []func() error
	for i := range ps {
		ps[i] = newPayment(big.NewInt(2))
		fs = append(fs, func() error { return l.Create(context.Background(), ps[i]) })
	}
	before := statements.Load()
	for i, err := range runAll(fs) {
		if err != nil {
			t.Fatalf("create %d with Postgres down: %v", i, err)
		}
	}
	if s := l.Stats(); s.SpoolDepth != n || !s.Degraded || s.Held != n {
		t.Fatalf("stats = %+v, want %d spooled and held", s, n)
	}
	if statements.Load() == before {
		t.Fatal("no create tried Postgres before spooling")
	}
	fs = fs[:0]
	for i := range inPG {
		fs = append(fs, func() error {
			_, err := l.Transition(context.Background(), inPG[i].ID, []Status{StatusVerified}, StatusQueued, Patch{})
			if !isUnavailable(err) {
				return errors.New("want ErrUnavailable, got " + errString(err))
			}
			return nil
		})
	}
	for i, err := range runAll(fs) {
		if err != nil {
			t.Fatalf("move %d of a payment in Postgres while it is away: %v", i, err)
		}
	}
	px.restore(t)
	waitFor(t, 15*time.Second, "the spool to be replayed", func() bool { s := l.Stats(); return s.SpoolDepth == 0 && !s.Degraded })
	ids := make([]uuid.UUID, 0, 2*n)
	for _, p := range append(ps, inPG...) {
		ids = append(ids, p.ID)
	}
	if got := countRows(t, direct, `SELECT count(*) FROM payments WHERE id = ANY($1) AND status = 'verified'`, ids); got != 2*n {
		t.Fatalf("%d payments verified after replay, want %d", got, 2*n)
	}
	// Postgres back: the same payments move through the shared statement again.
	fs = fs[:0]
	for _, id := range ids {
		fs = append(fs, func() error {
			_, err := l.Transition(context.Background(), id, []Status{StatusVerified}, StatusQueued, Patch{})
			return err
		})
	}
	for i, err := range runAll(fs) {
		if err != nil {
			t.Fatalf("move %d after replay: %v", i, err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// TestCreateLateEntry: a payment recorded once its call is done starts queued or not_charged
// (with its reason), alone or batched with others, and only the queued ones reach the worker.
func TestCreateLateEntry(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	l := openLedger(t, openPool(t, schema, ""), "")
	ctx := context.Background()
	statements := countStatements(l.creates)
	lone := newPayment(big.NewInt(3))
	lone.Status, lone.JobID = StatusQueued, uuid.New()
	if got := mustCreate(t, l, lone); got.Status != StatusQueued || got.JobID != lone.JobID {
		t.Fatalf("a payment created queued reads back as %s, job %s", got.Status, got.JobID)
	}
	var ps []Payment
	var fs []func() error
	for i := range 60 {
		p := newPayment(big.NewInt(int64(10 + i)))
		p.Status, p.JobID = StatusQueued, uuid.New()
		if i%3 == 0 {
			p.Status, p.ErrorReason = StatusNotCharged, "tool_failed"
		}
		ps = append(ps, p)
		fs = append(fs, func() error { return l.Create(ctx, p) })
	}
	before := statements.Load()
	for i, err := range runAll(fs) {
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	if n := statements.Load() - before; n >= int64(len(ps)) {
		t.Fatalf("%d concurrent creates took %d statements; want them batched", len(ps), n)
	}
	queued := map[uuid.UUID]bool{lone.ID: true}
	for _, p := range ps {
		got, err := l.Get(ctx, p.ID)
		if err != nil || got.Status != p.Status || got.ErrorReason != p.ErrorReason || got.JobID != p.JobID {
			t.Fatalf("payment %s (%s, %q) reads back as %s, %q, job %s, %v", p.ID, p.Status, p.ErrorReason, got.Status, got.ErrorReason, got.JobID, err)
		}
		if p.Status == StatusQueued {
			queued[p.ID] = true
		}
	}
	claimed, err := l.ClaimQueued(ctx, 1000, uuid.New(), Scope{Rail: "x402", Network: "eip155:8453", Asset: lone.Asset})
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != len(queued) {
		t.Fatalf("the worker claimed %d payments, want the %d created queued", len(claimed), len(queued))
	}
	for _, p := range claimed {
		if !queued[p.ID] || p.Status != StatusSubmitted {
			t.Fatalf("claimed %s (%s), which was not created queued", p.ID, p.Status)
		}
	}
}

// TestPaymentBatchCallerGoneAfterSend: a caller whose context ends after its row went out in
// a shared statement gets that statement's outcome. The statement runs on under its own
// deadline and commits, so an error would report "not recorded" for a write that is recorded:
// a move to queued refused to the caller (its call's result withheld) and then charged by the
// batch worker, or a payment the caller abandons while it stays verified.
func TestPaymentBatchCallerGoneAfterSend(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "", func(o *Options) { o.DBTimeout = 5 * time.Second })

	// goneAfterSend runs write under a context cancelled once its statement has started and
	// while another session makes that statement wait (block, undone by rolling back), and
	// returns write's error once the statement is over.
	goneAfterSend := func(t *testing.T, onWrite *func(int), block string, blockArgs []any, write func(ctx context.Context) error, next func()) error {
		t.Helper()
		bg := context.Background()
		tx, err := pool.Begin(bg)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(bg) }()
		if _, err := tx.Exec(bg, block, blockArgs...); err != nil {
			t.Fatal(err)
		}
		sent := make(chan struct{})
		var once sync.Once
		*onWrite = func(int) { once.Do(func() { close(sent) }) }
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		res := make(chan error, 1)
		go func() { res <- write(ctx) }()
		<-sent
		cancel()
		if err := tx.Rollback(bg); err != nil {
			t.Fatal(err)
		}
		err = <-res
		// The writer runs one statement at a time: once the next write is done, so is ours.
		next()
		return err
	}

	t.Run("move", func(t *testing.T) {
		p := mustCreate(t, l, newPayment(big.NewInt(7)))
		err := goneAfterSend(t, &l.moves.onWrite, `SELECT 1 FROM payments WHERE id = $1::uuid FOR UPDATE`, []any{p.ID.String()},
			func(ctx context.Context) error {
				_, err := l.Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{JobID: uuid.New()})
				return err
			},
			func() { driveTo(t, l, StatusQueued) })
		if got := getDirect(t, pool, p.ID).Status; err != nil || got != StatusQueued {
			t.Fatalf("Transition answered %v, and the payment is %s; want nil and queued", err, got)
		}
	})
	t.Run("create", func(t *testing.T) {
		p := newPayment(big.NewInt(8))
		other := newPayment(big.NewInt(8))
		other.ID = p.ID // an uncommitted row under p's id: p's INSERT waits for it
		stored, err := prepareNew(other, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		err = goneAfterSend(t, &l.creates.onWrite, insertPaymentSQL, insertArgs(stored),
			func(ctx context.Context) error { return l.Create(ctx, p) },
			func() { mustCreate(t, l, newPayment(big.NewInt(9))) })
		if n := countRows(t, pool, `SELECT count(*) FROM payments WHERE id = $1`, p.ID); err != nil || n != 1 {
			t.Fatalf("Create answered %v, and %d rows hold the payment; want nil and 1", err, n)
		}
	})
}
