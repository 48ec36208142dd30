package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A replica loses Postgres: what may wait is spooled and answered from the spool, what may
// not fails closed, and when Postgres is back the spool is applied and the replica is whole.
func TestOutageSpoolsWhatMayWaitAndRefusesTheRest(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	direct := openPool(t, schema, "")
	// Room for the replay to deliver a payment while a move waits for it, even under -race.
	l := openLedger(t, openPool(t, schema, px.addr), "", func(o *Options) { o.DBTimeout = 2 * time.Second })
	ctx := context.Background()
	max256 := new(big.Int).Sub(bigPow2(256), big.NewInt(1))

	inDB := mustCreate(t, l, newPayment(big.NewInt(10_000)))
	px.cut()
	unsure := newPayment(big.NewInt(3))
	if err := l.Create(ctx, unsure); err != nil {
		t.Fatalf("Create on the broken connection = %v, want spooled", err)
	}
	// That INSERT may have reached Postgres before the connection broke: its moves wait.
	if _, err := l.Transition(ctx, unsure.ID, []Status{StatusVerified}, StatusNotCharged, Patch{}); !isUnavailable(err) {
		t.Fatalf("move of a payment whose INSERT may have landed = %v, want ErrUnavailable", err)
	}

	p := newPayment(max256)
	if err := l.Create(ctx, p); err != nil {
		t.Fatalf("Create during the outage = %v, want spooled", err)
	}
	if err := l.Create(ctx, p); err != nil {
		t.Fatalf("Create again during the outage = %v, want a no-op", err)
	}
	if s := l.Stats(); s.SpoolDepth != 2 || s.Held != 2 || !s.Degraded {
		t.Fatalf("stats = %+v", s)
	}
	got, err := l.Get(ctx, p.ID)
	if err != nil || got.Status != StatusVerified || got.Amount.Cmp(max256) != 0 {
		t.Fatalf("Get of a spooled payment = %+v, %v", got, err)
	}
	moved, err := l.Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{JobID: uuid.New()})
	if err != nil || moved.Status != StatusQueued {
		t.Fatalf("spoolable move during the outage = %+v, %v", moved, err)
	}
	if _, err := l.Transition(ctx, p.ID, []Status{StatusVerified}, StatusNotCharged, Patch{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("second move from verified = %v, want ErrConflict", err)
	}
	q := newPayment(big.NewInt(50_000))
	if err := l.Create(ctx, q); err != nil {
		t.Fatal(err)
	}
	raw, hash := rawTx("q")
	if _, err := l.Transition(ctx, q.ID, []Status{StatusVerified}, StatusSubmitted, Patch{RawTx: raw, TxHash: hash}); !isUnavailable(err) {
		t.Fatalf("move to submitted of a spooled payment = %v, want ErrUnavailable (the tx must be in Postgres first)", err)
	}
	for name, call := range map[string]func() error{
		"move of a payment in Postgres": func() error {
			_, err := l.Transition(ctx, inDB.ID, []Status{StatusVerified}, StatusNotCharged, Patch{})
			return err
		},
		"get of a payment in Postgres": func() error { _, err := l.Get(ctx, inDB.ID); return err },
		"claim queued":                 func() error { _, err := l.ClaimQueued(ctx, 10, uuid.New(), Scope{}); return err },
		"list recoverable":             func() error { _, err := l.ListRecoverable(ctx, time.Minute, 10); return err },
		"record batch":                 func() error { return l.RecordBatchTx(ctx, uuid.New(), raw, hash) },
		"run exclusive": func() error {
			_, err := l.RunExclusive(ctx, "job", func(context.Context) error { return nil })
			return err
		},
	} {
		if err := call(); !isUnavailable(err) {
			t.Errorf("%s during the outage = %v, want ErrUnavailable", name, err)
		}
	}

	late := newPayment(big.NewInt(70_000))
	if err := l.Create(ctx, late); err != nil {
		t.Fatal(err)
	}

	px.restore(t)
	// A move to submitted of a payment still in the spool waits for the spool to deliver it.
	lateRaw, lateHash := rawTx("late")
	if m, err := l.Transition(ctx, late.ID, []Status{StatusVerified}, StatusSubmitted, Patch{RawTx: lateRaw, TxHash: lateHash}); err != nil || m.Status != StatusSubmitted {
		t.Fatalf("move to submitted as Postgres returns = %+v, %v", m, err)
	}
	waitFor(t, 10*time.Second, "the spool to drain", func() bool {
		s := l.Stats()
		return s.SpoolDepth == 0 && s.Held == 0 && !s.Degraded
	})
	stored := getDirect(t, direct, p.ID)
	if stored.Status != StatusQueued || stored.Amount.Cmp(max256) != 0 || stored.JobID != moved.JobID ||
		!stored.CreatedAt.Equal(got.CreatedAt) {
		t.Fatalf("replayed payment %+v, want %+v", stored, moved)
	}
	if n := countRows(t, direct, `SELECT count(*) FROM payment_spool_log WHERE outcome = 'applied'`); n != 5 {
		t.Fatalf("%d operations applied, want 5 (four creates, one move)", n)
	}
	// Back in Postgres, q moves to submitted as usual.
	if m, err := l.Transition(ctx, q.ID, []Status{StatusVerified}, StatusSubmitted, Patch{RawTx: raw, TxHash: hash}); err != nil || m.TxHash != hash {
		t.Fatalf("move to submitted after the outage = %+v, %v", m, err)
	}
}

func getDirect(t testing.TB, pool *pgxpool.Pool, id uuid.UUID) Payment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := scanPayment(pool.QueryRow(ctx, `SELECT `+paymentColumns("")+` FROM payments WHERE id = $1::uuid`, id.String()))
	if err != nil {
		t.Fatalf("read payment %s: %v", id, err)
	}
	return p
}

// snapshot is every payment and nonce row, as text, to compare a database before and after.
func snapshot(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var a, b string
	err := pool.QueryRow(ctx, `SELECT COALESCE((SELECT string_agg(p::text, E'\n' ORDER BY id) FROM payments p), ''),
		COALESCE((SELECT string_agg(n::text, E'\n' ORDER BY key) FROM payment_nonces n), '')`).Scan(&a, &b)
	if err != nil {
		t.Fatal(err)
	}
	return a + "\n--\n" + b
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// The spool is replayed in the order its operations were made, and replaying it a second
// time (a crash after the commits, before the files were deleted) changes nothing.
func TestSpoolReplayOrderAndIdempotency(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	rdb, prefix := newRedis(t)
	px := newProxy(t, pgTarget(t))
	direct := openPool(t, schema, "")
	dir := t.TempDir()
	l := openLedger(t, openPool(t, schema, px.addr), dir, func(o *Options) { o.SegmentBytes = 4096 })
	claims := newClaims(t, rdb, l, prefix)
	ctx := context.Background()
	mustCreate(t, l, newPayment(big.NewInt(1))) // a live connection to lose
	px.cut()

	type made struct{ kind, subject string }
	var want []made
	for i := range 12 {
		p := newPayment(big.NewInt(int64(1000 + i)))
		if err := claims.Claim(ctx, p.NonceKey, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		want = append(want, made{opNonce, p.NonceKey})
		if err := l.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		want = append(want, made{opCreate, p.ID.String()})
		to := StatusQueued
		if i%3 == 0 {
			to = StatusNotCharged
		}
		if _, err := l.Transition(ctx, p.ID, []Status{StatusVerified}, to, patchFor(to)); err != nil {
			t.Fatal(err)
		}
		want = append(want, made{opTransition, p.ID.String()})
	}
	// Payments recorded only once their call is done start queued or not charged, in the spool
	// as in the database.
	late := map[uuid.UUID]Payment{}
	for i, st := range []Status{StatusQueued, StatusNotCharged} {
		p := newPayment(big.NewInt(int64(2000 + i)))
		p.Status, p.JobID = st, uuid.New()
		if st == StatusNotCharged {
			p.ErrorReason = "tool_failed"
		}
		if err := l.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		if got, err := l.Get(ctx, p.ID); err != nil || got.Status != st {
			t.Fatalf("a spooled payment created %s reads as %s, %v", st, got.Status, err)
		}
		late[p.ID] = p
		want = append(want, made{opCreate, p.ID.String()})
	}
	segs, _ := filepath.Glob(filepath.Join(dir, segPrefix+"*"))
	if len(segs) < 2 {
		t.Fatalf("%d segments; the test wants the spool to span several", len(segs))
	}
	backup := t.TempDir()
	copyDir(t, dir, backup)

	px.restore(t)
	waitFor(t, 10*time.Second, "the spool to drain", func() bool { s := l.Stats(); return s.SpoolDepth == 0 && s.Held == 0 })
	if s := l.Stats(); s.Replayed != uint64(len(want)) || s.Rejected != 0 {
		t.Fatalf("stats after replay = %+v, want %d replayed", s, len(want))
	}
	rows, err := direct.Query(ctx, `SELECT kind, subject FROM payment_spool_log ORDER BY applied_at, op_id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (made, error) {
		var m made
		return m, r.Scan(&m.kind, &m.subject)
	})
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("replay order:\n got %v\nwant %v\n(err %v)", got, want, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, segPrefix+"*")); len(left) != 0 {
		t.Fatalf("segments left after replay: %v", left)
	}
	for id, p := range late {
		if got := getDirect(t, direct, id); got.Status != p.Status || got.ErrorReason != p.ErrorReason || got.JobID != p.JobID {
			t.Fatalf("payment created %s (%q) replayed as %s (%q), job %s", p.Status, p.ErrorReason, got.Status, got.ErrorReason, got.JobID)
		}
	}
	before := snapshot(t, direct)

	// The same segments again, as if the process had died before deleting them.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	again := t.TempDir()
	copyDir(t, backup, again)
	l2 := openLedger(t, direct, again)
	waitFor(t, 10*time.Second, "the second replay", func() bool { s := l2.Stats(); return s.SpoolDepth == 0 && s.Held == 0 })
	if s := l2.Stats(); s.Replayed != 0 || s.Rejected != 0 {
		t.Fatalf("second replay applied %d, rejected %d; want nothing", s.Replayed, s.Rejected)
	}
	if after := snapshot(t, direct); after != before {
		t.Fatalf("the second replay changed the database:\nbefore %s\nafter  %s", before, after)
	}
}

// What cannot be applied when Postgres is back is recorded, not lost and not forced: a nonce
// another replica claimed meanwhile, a payment whose nonce another payment took, a move of a
// payment that never arrived, a move of a payment that had moved on.
func TestSpoolReplayRecordsRejections(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	rdb, prefix := newRedis(t)
	px := newProxy(t, pgTarget(t))
	direct := openPool(t, schema, "")
	a := openLedger(t, openPool(t, schema, px.addr), "")
	b := openLedger(t, direct, "")
	claimsA, claimsB := newClaims(t, rdb, a, prefix), newClaims(t, secondRedis(t), b, prefix)
	ctx := context.Background()
	mustCreate(t, a, newPayment(big.NewInt(1)))
	px.cut()

	key := "x402:twice:" + randomHex(8)
	if err := claimsA.Claim(ctx, key, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	rdb.Del(ctx, prefix+"nonce:"+key) // Redis fails over to a replica that never saw it
	if err := claimsB.Claim(ctx, key, time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("replica B's claim after the failover: %v", err)
	}

	p := newPayment(big.NewInt(5))
	if err := a.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
		t.Fatal(err)
	}
	thief := newPayment(big.NewInt(5))
	thief.NonceKey = p.NonceKey
	mustCreate(t, b, thief)

	// r reached Postgres after all (an INSERT whose reply was lost), and moved on there.
	r := newPayment(big.NewInt(6))
	if err := a.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Transition(ctx, r.ID, []Status{StatusVerified}, StatusNotCharged, Patch{ErrorReason: "tool_failed"}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, b, r)
	if _, err := b.Transition(ctx, r.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
		t.Fatal(err)
	}

	px.restore(t)
	waitFor(t, 10*time.Second, "the spool to drain", func() bool { s := a.Stats(); return s.SpoolDepth == 0 && s.Held == 0 })
	if s := a.Stats(); s.Rejected != 4 || s.Replayed != 1 {
		t.Fatalf("stats = %+v; want 4 rejected, 1 applied (r's create, found already there)", s)
	}
	rows, err := direct.Query(ctx, `SELECT kind, subject, reason, op IS NOT NULL FROM payment_spool_log WHERE outcome = 'rejected' ORDER BY applied_at`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (string, error) {
		var kind, subject, reason string
		var hasOp bool
		err := row.Scan(&kind, &subject, &reason, &hasOp)
		return fmt.Sprintf("%s %s %s %v", kind, subject, reason, hasOp), err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("nonce %s %s true", key, RejectNonceClaimedTwice),
		fmt.Sprintf("create %s %s true", p.ID, RejectNonceKeyConflict),
		fmt.Sprintf("transition %s %s true", p.ID, RejectPaymentNotFound),
		fmt.Sprintf("transition %s %s true", r.ID, RejectTransitionNotApplicable),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rejections:\n got %q\nwant %q", got, want)
	}
	if s := getDirect(t, direct, r.ID); s.Status != StatusQueued {
		t.Fatalf("r is %s, want queued: a rejected move must not be forced", s.Status)
	}
}

// A process that dies with a full spool leaves it to the next one, which answers reads of
// the spooled payments and replays them once Postgres is back.
func TestSpoolSurvivesRestart(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	pool := openPool(t, schema, px.addr)
	dir := t.TempDir()
	l := openLedger(t, pool, dir)
	ctx := context.Background()
	mustCreate(t, l, newPayment(big.NewInt(1)))
	px.cut()
	loseConnection(t, l)
	p := newPayment(big.NewInt(42))
	if err := l.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l2 := openLedger(t, pool, dir)
	if s := l2.Stats(); s.SpoolDepth != 3 || s.Held != 2 {
		t.Fatalf("stats after restart = %+v", s)
	}
	got, err := l2.Get(ctx, p.ID)
	if err != nil || got.Status != StatusQueued {
		t.Fatalf("Get after restart = %+v, %v", got, err)
	}
	// The new process cannot know whether the old one got it into Postgres: no moves on its word.
	if _, err := l2.Transition(ctx, p.ID, []Status{StatusQueued}, StatusSubmitted, Patch{BatchID: uuid.New()}); !isUnavailable(err) {
		t.Fatalf("move after restart, still down = %v, want ErrUnavailable", err)
	}
	px.restore(t)
	waitFor(t, 10*time.Second, "the spool to drain", func() bool { s := l2.Stats(); return s.SpoolDepth == 0 && s.Held == 0 })
	if s := getDirect(t, openPool(t, schema, ""), p.ID); s.Status != StatusQueued {
		t.Fatalf("replayed payment is %s", s.Status)
	}
}

// Lines that cannot be decoded — a torn last line, garbage, a line that is JSON but no
// operation — are set aside in the dead-letter file; the rest is applied.
func TestSpoolUnreadableLines(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	dir := t.TempDir()
	p, err := prepareNew(newPayment(big.NewInt(3)), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	good, err := json.Marshal(spoolOp{V: spoolVersion, OpID: uuid.New(), Kind: opCreate, At: time.Now().UTC(), Payment: newPaymentLine(p)})
	if err != nil {
		t.Fatal(err)
	}
	content := strings.Join([]string{
		string(good),
		"this is not json",
		`{"v":1,"opId":"` + uuid.NewString() + `","kind":"create","at":"2026-01-01T00:00:00Z"}`,
		`{"v":1,"opId":"` + uuid.NewString() + `","kind":"transition","at":"2026-01-01T00:00:00Z","transition":{"id":"` +
			p.ID.String() + `","from":["verified"],"to":"settled","patch":{}}}`,
		`{"v":1,"opId":"` + uuid.NewString() + `","kind":"cre`,
	}, "\n")
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s%020d%s", segPrefix, 7, segSuffix)), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	direct := openPool(t, schema, "")
	l := openLedger(t, direct, dir)
	waitFor(t, 10*time.Second, "the spool to drain", func() bool { return l.Stats().SpoolDepth == 0 })
	if s := l.Stats(); s.Replayed != 1 || s.Unreadable != 4 || s.Held != 0 {
		t.Fatalf("stats = %+v; want 1 replayed, 4 unreadable", s)
	}
	if got := getDirect(t, direct, p.ID); got.Status != StatusVerified || got.Amount.Int64() != 3 {
		t.Fatalf("replayed payment %+v", got)
	}
	dead, err := os.ReadFile(filepath.Join(dir, deadLetterName))
	if err != nil || strings.Count(string(dead), "\n") != 4 {
		t.Fatalf("dead-letter file: %v\n%s", err, dead)
	}
	for _, reason := range []string{"corrupt_spool_line", "invalid_spool_line", "torn_spool_line"} {
		if !strings.Contains(string(dead), reason) {
			t.Fatalf("dead-letter file lacks %s:\n%s", reason, dead)
		}
	}
}

// A torn last line is never replayed, so it is never counted against its payment either: a
// crash mid-append of a payment's create, then the client's retry spooled by the next process,
// must leave the payment held until the retried create is in Postgres, even when the torn
// line parses (only its newline was lost).
func TestSpoolTornLineDoesNotReleaseItsPayment(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	direct := openPool(t, schema, "")
	dir := t.TempDir()
	ctx := context.Background()
	p, err := prepareNew(newPayment(big.NewInt(7)), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nonce, err := json.Marshal(spoolOp{V: spoolVersion, OpID: uuid.New(), Kind: opNonce, At: time.Now().UTC(),
		Nonce: &nonceRow{Key: p.NonceKey, ClaimID: uuid.New(), ClaimedAt: time.Now().UTC(), ExpiresAt: time.Now().Add(time.Hour).UTC()}})
	if err != nil {
		t.Fatal(err)
	}
	create, err := json.Marshal(spoolOp{V: spoolVersion, OpID: uuid.New(), Kind: opCreate, At: time.Now().UTC(), Payment: newPaymentLine(p)})
	if err != nil {
		t.Fatal(err)
	}
	// The earlier process spooled the nonce, then died writing the create: all but its newline.
	content := string(nonce) + "\n" + string(create)
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s%020d%s", segPrefix, 7, segSuffix)), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}

	px.cut()
	l := openLedger(t, openPool(t, schema, px.addr), dir, func(o *Options) { o.DBTimeout = 3 * time.Second })
	if err := l.Create(ctx, p); err != nil { // the client's retry, spooled
		t.Fatalf("Create while Postgres is away = %v, want spooled", err)
	}
	if s := l.Stats(); s.Held != 1 {
		t.Fatalf("stats after the retried create = %+v, want the payment held", s)
	}

	// Postgres is back for the nonce, but the payments table stays locked: the replay gets past
	// the torn line and then waits on the retried create.
	lock, err := direct.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx) //nolint:errcheck // released below; this is for a failed test
	if _, err := lock.Exec(ctx, `LOCK TABLE payments IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	px.restore(t)
	waitFor(t, 10*time.Second, "the replay to wait on the retried create", func() bool {
		return l.Stats().Unreadable == 1 && countRows(t, direct, `SELECT count(*) FROM pg_locks WHERE relation = 'payments'::regclass AND NOT granted`) > 0
	})
	if s := l.Stats(); s.Held != 1 || s.SpoolDepth != 1 {
		t.Fatalf("stats with the create still spooled = %+v; the payment must stay held", s)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the spool to drain", func() bool { s := l.Stats(); return s.SpoolDepth == 0 && s.Held == 0 })
	if got := getDirect(t, direct, p.ID); got.Status != StatusVerified {
		t.Fatalf("replayed payment is %s", got.Status)
	}
}

// A line set aside stays set aside once, however often the replay of its segment then fails:
// the replay resumes after it.
func TestSpoolSetsAsideOnceAcrossFailedReplays(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	dir := t.TempDir()
	nonce, err := json.Marshal(spoolOp{V: spoolVersion, OpID: uuid.New(), Kind: opNonce, At: time.Now().UTC(),
		Nonce: &nonceRow{Key: "x402:once:" + randomHex(8), ClaimID: uuid.New(), ClaimedAt: time.Now().UTC(), ExpiresAt: time.Now().Add(time.Hour).UTC()}})
	if err != nil {
		t.Fatal(err)
	}
	content := "this is not json\n" + string(nonce) + "\n"
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s%020d%s", segPrefix, 7, segSuffix)), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	px.cut()
	l := openLedger(t, openPool(t, schema, px.addr), dir)
	waitFor(t, 10*time.Second, "the bad line set aside", func() bool { return l.Stats().Unreadable == 1 })
	time.Sleep(300 * time.Millisecond) // several failed replays, at RetryMax 50 ms
	px.restore(t)
	waitFor(t, 10*time.Second, "the spool to drain", func() bool { return l.Stats().SpoolDepth == 0 })
	dead, err := os.ReadFile(filepath.Join(dir, deadLetterName))
	if s := l.Stats(); err != nil || s.Unreadable != 1 || s.Replayed != 1 || strings.Count(string(dead), "\n") != 1 {
		t.Fatalf("stats %+v, dead-letter file (%v):\n%s\nwant the bad line once", s, err, dead)
	}
}

// A spool that reached MaxSpoolBytes refuses more: the caller fails closed rather than the
// disk filling up.
func TestSpoolFullFailsClosed(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	l := openLedger(t, openPool(t, schema, px.addr), "", func(o *Options) { o.MaxSpoolBytes = 3000 })
	ctx := context.Background()
	mustCreate(t, l, newPayment(big.NewInt(1)))
	px.cut()
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		err = l.Create(ctx, newPayment(big.NewInt(int64(i))))
	}
	if !isUnavailable(err) {
		t.Fatalf("Create with the spool full = %v, want ErrUnavailable", err)
	}
	if s := l.Stats(); s.SpoolBytes > 3000 {
		t.Fatalf("spool grew to %d bytes past its cap", s.SpoolBytes)
	}
	px.restore(t)
	waitFor(t, 10*time.Second, "the spool to drain", func() bool { return l.Stats().SpoolDepth == 0 })
}

// A spooled payment past MaxHeld is not kept in memory, but it is spooled all the same: until
// its create is in Postgres, a read of it must wait or fail as unavailable, never answer that
// it does not exist (Postgres is back, the replay has not reached it yet).
func TestSpoolPastMaxHeldIsNeverNotFound(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	direct := openPool(t, schema, "")
	l := openLedger(t, openPool(t, schema, px.addr), "", func(o *Options) { o.MaxHeld = 1 })
	ctx := context.Background()
	px.cut()
	loseConnection(t, l) // the one payment kept whole
	p := newPayment(big.NewInt(5))
	p.Rail, p.NonceKey = "mpp", "mpp:pi_"+randomHex(12)
	if err := l.Create(ctx, p); err != nil {
		t.Fatalf("Create during the outage = %v, want spooled", err)
	}
	if s := l.Stats(); s.Held != 2 {
		t.Fatalf("stats = %+v, want two payments held", s)
	}

	// Postgres is back, but the replay is stalled before it reaches p.
	lock, err := direct.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx) //nolint:errcheck // released below; this is for a failed test
	if _, err := lock.Exec(ctx, `LOCK TABLE payment_spool_log IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	px.restore(t)
	if _, err := l.Get(ctx, p.ID); errors.Is(err, ErrNotFound) || (err != nil && !isUnavailable(err)) {
		t.Errorf("Get of a spooled payment past MaxHeld = %v, want it or ErrUnavailable", err)
	}
	if _, err := l.GetByNonceKey(ctx, p.NonceKey); errors.Is(err, ErrNotFound) || (err != nil && !isUnavailable(err)) {
		t.Errorf("GetByNonceKey of a spooled payment past MaxHeld = %v, want it or ErrUnavailable", err)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the spool to drain", func() bool { s := l.Stats(); return s.SpoolDepth == 0 && s.Held == 0 })
	if got, err := l.Get(ctx, p.ID); err != nil || got.Status != StatusVerified {
		t.Fatalf("Get after the replay = %+v, %v", got, err)
	}
}

// A spool that refuses an append (here its directory is gone: any disk failure will do) while
// nothing is spooled leaves no replay to notice that Postgres is back: writes must go to
// Postgres again once it is, not keep failing on the spool.
func TestSpoolRefusalDoesNotKeepPostgresAway(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	dir := filepath.Join(t.TempDir(), "spool")
	l := openLedger(t, openPool(t, schema, px.addr), dir)
	ctx := context.Background()
	mustCreate(t, l, newPayment(big.NewInt(1)))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	px.cut()
	if err := l.Create(ctx, newPayment(big.NewInt(2))); !isUnavailable(err) {
		t.Fatalf("Create with Postgres and the spool away = %v, want ErrUnavailable", err)
	}
	px.restore(t)
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err = l.Create(ctx, newPayment(big.NewInt(3))); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Create with Postgres back = %v, want it written to Postgres", err)
	}
}

// payment_spool_log is purged of the applied operations old enough that no segment can still
// be replayed, in chunks; recent ones stay (a segment replayed again after a crash finds them),
// and so do rejected ones, whatever their age: each is an operation that never reached the
// payments table (a lost settlement, a nonce used twice), kept for an operator.
func TestPurgeSpoolLog(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	l := openLedger(t, pool, "")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO payment_spool_log (op_id, kind, subject, outcome, spooled_at, applied_at)
		SELECT gen_random_uuid(), 'create', 'old-applied', 'applied', now() - interval '61 days', now() - interval '60 days'
		FROM generate_series(1, 5003)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO payment_spool_log (op_id, kind, subject, outcome, reason, op, spooled_at, applied_at)
		VALUES (gen_random_uuid(), 'transition', 'old-rejected', 'rejected', $1, '{}', now() - interval '61 days', now() - interval '60 days'),
		       (gen_random_uuid(), 'create', 'recent-applied', 'applied', NULL, NULL, now() - interval '61 days', now() - interval '1 day')`,
		RejectTransitionNotApplicable); err != nil {
		t.Fatal(err)
	}
	n, err := l.PurgeSpoolLog(ctx, time.Now().Add(-30*24*time.Hour))
	if err != nil || n != 5003 {
		t.Fatalf("PurgeSpoolLog = %d, %v; want the 5003 old applied operations", n, err)
	}
	for _, subject := range []string{"old-rejected", "recent-applied"} {
		if got := countRows(t, pool, `SELECT count(*) FROM payment_spool_log WHERE subject = $1`, subject); got != 1 {
			t.Errorf("%s: %d rows left, want 1", subject, got)
		}
	}
}

// A replay cut off right after a spooled payment's create (Postgres gone again, or one
// statement stuck) must not leave the payment in Postgres without the moves this replica
// spooled after it: another replica's recovery would take it for a call that never ended and
// close it not charged, while this replica answered it queued. Once the create is in Postgres,
// the payment's moves no longer spool.
func TestSpoolReplaysACreateWithItsMoves(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	direct := openPool(t, schema, "")
	a := openLedger(t, openPool(t, schema, px.addr), "")
	b := openLedger(t, direct, "")
	ctx := context.Background()
	mustCreate(t, a, newPayment(big.NewInt(1)))
	px.cut()
	loseConnection(t, a)
	p, q := newPayment(big.NewInt(10)), newPayment(big.NewInt(11))
	if err := a.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := a.Create(ctx, q); err != nil {
		t.Fatal(err)
	}
	if m, err := a.Transition(ctx, p.ID, []Status{StatusVerified}, StatusQueued, Patch{JobID: uuid.New()}); err != nil || m.Status != StatusQueued {
		t.Fatalf("spooled move = %+v, %v", m, err)
	}
	// Another session holds q's id uncommitted: the replay stops at q, between p's create and
	// p's move.
	tx, err := direct.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	other := newPayment(big.NewInt(12))
	other.ID = q.ID
	stored, err := prepareNew(other, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, insertPaymentSQL, insertArgs(stored)...); err != nil {
		t.Fatal(err)
	}
	px.restore(t)
	waitFor(t, 10*time.Second, "p to reach Postgres", func() bool {
		return countRows(t, direct, `SELECT count(*) FROM payments WHERE id = $1`, p.ID) == 1
	})
	if got := getDirect(t, direct, p.ID); got.Status != StatusQueued {
		t.Fatalf("p reached Postgres %s; this replica answered it queued", got.Status)
	}
	if _, err := b.Transition(ctx, p.ID, []Status{StatusVerified}, StatusNotCharged, Patch{ErrorReason: "call_never_ended"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("another replica's recovery of p = %v, want ErrConflict", err)
	}
	if _, err := a.Transition(ctx, p.ID, []Status{StatusQueued}, StatusNotCharged, Patch{ErrorReason: "tool_failed"}); !isUnavailable(err) {
		t.Fatalf("a move of p once in Postgres, its replay unfinished = %v, want ErrUnavailable", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the spool to drain", func() bool { s := a.Stats(); return s.SpoolDepth == 0 && s.Held == 0 })
	if s := a.Stats(); s.Rejected != 0 || s.Replayed != 4 {
		t.Fatalf("stats = %+v; want 4 operations replayed (three creates, one move), none rejected", s)
	}
	if got := getDirect(t, direct, p.ID); got.Status != StatusQueued {
		t.Fatalf("p is %s after the replay, want queued", got.Status)
	}
}
