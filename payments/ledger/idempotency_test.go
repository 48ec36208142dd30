package ledger

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestIdempotencyLifecycle(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	idem := NewIdempotency(openPool(t, schema, ""), IdempotencyOptions{})
	ctx := context.Background()
	key := "/exec/tool:pay_" + randomHex(16)
	fp, other := "0x"+strings.Repeat("a", 64), "0x"+strings.Repeat("b", 64)
	resp := Response{
		StatusCode: 200,
		Header:     http.Header{"Payment-Response": {"eyJzdWNjZXNzIjp0cnVlfQ=="}, "Content-Type": {"application/json"}},
		Body:       []byte(`{"jobId":"j1","result":{"value":42}}` + "\x00\xff binary tail"),
	}
	steps := []struct {
		name string
		do   func() (Replay, error)
		want error
		hit  bool
	}{
		{"new key proceeds", func() (Replay, error) { return idem.Begin(ctx, key, fp) }, nil, false},
		{"resend while in flight", func() (Replay, error) { return idem.Begin(ctx, key, fp) }, ErrInFlight, false},
		{"other payload while in flight", func() (Replay, error) { return idem.Begin(ctx, key, other) }, ErrIdempotencyConflict, false},
		{"complete", func() (Replay, error) { return Replay{}, idem.Complete(ctx, key, resp) }, nil, false},
		{"complete twice", func() (Replay, error) { return Replay{}, idem.Complete(ctx, key, resp) }, ErrConflict, false},
		{"resend replays", func() (Replay, error) { return idem.Begin(ctx, key, fp) }, nil, true},
		{"other payload after completion", func() (Replay, error) { return idem.Begin(ctx, key, other) }, ErrIdempotencyConflict, false},
		{"abandon a completed key is a no-op", func() (Replay, error) { return Replay{}, idem.Abandon(ctx, key) }, nil, false},
		{"still replays", func() (Replay, error) { return idem.Begin(ctx, key, fp) }, nil, true},
		{"complete an unknown key", func() (Replay, error) { return Replay{}, idem.Complete(ctx, key+"x", resp) }, ErrNotFound, false},
		{"empty key", func() (Replay, error) { return idem.Begin(ctx, "", fp) }, ErrInvalid, false},
		{"no fingerprint", func() (Replay, error) { return idem.Begin(ctx, key, "") }, ErrInvalid, false},
		{"bad status", func() (Replay, error) { return Replay{}, idem.Complete(ctx, key, Response{StatusCode: 99}) }, ErrInvalid, false},
	}
	for _, st := range steps {
		r, err := st.do()
		if !errors.Is(err, st.want) || (st.want == nil && err != nil) || isUnavailable(err) {
			t.Fatalf("%s: err = %v, want %v", st.name, err, st.want)
		}
		if r.Found != st.hit {
			t.Fatalf("%s: found = %v, want %v", st.name, r.Found, st.hit)
		}
		if r.Found && (r.Response.StatusCode != resp.StatusCode || !reflect.DeepEqual(r.Response.Header, resp.Header) ||
			!bytes.Equal(r.Response.Body, resp.Body)) {
			t.Fatalf("%s: replayed %+v, want %+v", st.name, r.Response, resp)
		}
	}
}

// Abandon frees an in-flight key: a request refused before any work lets the client retry
// with the same identifier.
func TestIdempotencyAbandon(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	idem := NewIdempotency(openPool(t, schema, ""), IdempotencyOptions{})
	ctx := context.Background()
	key, fp := "/exec/tool:pay_"+randomHex(16), "0x"+randomHex(32)
	if r, err := idem.Begin(ctx, key, fp); err != nil || r.Found {
		t.Fatalf("Begin = %+v, %v", r, err)
	}
	if err := idem.Abandon(ctx, key); err != nil {
		t.Fatal(err)
	}
	// After abandoning, even another payload may use the identifier: nothing was bound to it.
	if r, err := idem.Begin(ctx, key, "0x"+randomHex(32)); err != nil || r.Found {
		t.Fatalf("Begin after Abandon = %+v, %v", r, err)
	}
	if err := idem.Complete(ctx, key, Response{StatusCode: 402}); err != nil {
		t.Fatal(err)
	}
	if err := idem.Abandon(ctx, "/exec/tool:never-seen"); err != nil {
		t.Fatalf("Abandon of an unknown key: %v", err)
	}
}

// Twenty replicas' requests with one new identifier at once: one proceeds, the rest wait.
func TestIdempotencyConcurrentBegin(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pools := []*Idempotency{
		NewIdempotency(openPool(t, schema, ""), IdempotencyOptions{}),
		NewIdempotency(openPool(t, schema, ""), IdempotencyOptions{}),
	}
	key, fp := "/exec/tool:pay_"+randomHex(16), "0x"+randomHex(32)
	var wg sync.WaitGroup
	var mu sync.Mutex
	proceed, inFlight := 0, 0
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := pools[g%2].Begin(context.Background(), key, fp)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && !r.Found:
				proceed++
			case errors.Is(err, ErrInFlight):
				inFlight++
			default:
				t.Errorf("Begin = %+v, %v", r, err)
			}
		}()
	}
	wg.Wait()
	if proceed != 1 || inFlight != 19 {
		t.Fatalf("%d proceeded, %d in flight; want 1, 19", proceed, inFlight)
	}
}

// An in-flight entry whose replica died is taken over by the same payload after
// InFlightTTL, never by another payload.
func TestIdempotencyStaleInFlight(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	pool := openPool(t, schema, "")
	idem := NewIdempotency(pool, IdempotencyOptions{InFlightTTL: time.Minute})
	ctx := context.Background()
	key, fp := "/exec/tool:pay_"+randomHex(16), "0x"+randomHex(32)
	if _, err := idem.Begin(ctx, key, fp); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE payment_idempotency SET updated_at = now() - interval '2 minutes' WHERE id = $1`, key); err != nil {
		t.Fatal(err)
	}
	if _, err := idem.Begin(ctx, key, "0x"+randomHex(32)); !errors.Is(err, ErrIdempotencyConflict) {
		t.Fatalf("stale entry, other payload = %v, want ErrIdempotencyConflict", err)
	}
	if r, err := idem.Begin(ctx, key, fp); err != nil || r.Found {
		t.Fatalf("stale entry, same payload = %+v, %v; want taken over", r, err)
	}
	if _, err := idem.Begin(ctx, key, fp); !errors.Is(err, ErrInFlight) {
		t.Fatalf("after the takeover = %v, want ErrInFlight", err)
	}
	n, err := idem.Purge(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
}

func TestIdempotencyPostgresDown(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	idem := NewIdempotency(openPool(t, schema, px.addr), IdempotencyOptions{Timeout: 500 * time.Millisecond})
	px.cut()
	ctx := context.Background()
	if _, err := idem.Begin(ctx, "/exec/tool:pay_"+randomHex(16), "0x"+randomHex(32)); !isUnavailable(err) {
		t.Fatalf("Begin with Postgres down = %v, want ErrUnavailable", err)
	}
	if err := idem.Complete(ctx, "/exec/tool:pay_x", Response{StatusCode: 200}); !isUnavailable(err) {
		t.Fatalf("Complete with Postgres down = %v, want ErrUnavailable", err)
	}
}

func TestIdempotencyResponseLimits(t *testing.T) {
	schema := newSchema(t)
	idem := NewIdempotency(openPool(t, schema, ""), IdempotencyOptions{MaxBodyBytes: 10, MaxHeaderBytes: 64})
	ctx := context.Background()
	key := "/exec/tool:pay_" + randomHex(16)
	if _, err := idem.Begin(ctx, key, "0x"+randomHex(32)); err != nil {
		t.Fatal(err)
	}
	for name, resp := range map[string]Response{
		"body too large":    {StatusCode: 200, Body: []byte("01234567890")},
		"headers too large": {StatusCode: 200, Header: http.Header{"X": {strings.Repeat("h", 64)}}},
		"NUL in a header":   {StatusCode: 200, Header: http.Header{"X": {"a\x00b"}}},
	} {
		if err := idem.Complete(ctx, key, resp); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Complete = %v, want ErrInvalid", name, err)
		}
	}
}

func TestFingerprint(t *testing.T) {
	a, err := Fingerprint([]byte(`{"x402Version":2,"accepted":{"amount":"10000","network":"eip155:8453"},"payload":{"nonce":"0x01"}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Fingerprint([]byte("{ \"payload\": {\"nonce\":\"0x01\"},\n \"accepted\":{\"network\":\"eip155:8453\",\"amount\":\"10000\"}, \"x402Version\":2 }"))
	if err != nil || a != b {
		t.Fatalf("re-encoded payload: %s vs %s (%v)", a, b, err)
	}
	c, _ := Fingerprint([]byte(`{"x402Version":2,"accepted":{"amount":"10001","network":"eip155:8453"},"payload":{"nonce":"0x01"}}`))
	if c == a || len(a) != 66 || !strings.HasPrefix(a, "0x") {
		t.Fatalf("fingerprints %s, %s", a, c)
	}
	if _, err := Fingerprint([]byte(`{"a":1,"a":2}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("duplicate member = %v, want ErrInvalid", err)
	}
}

// The embedded store forgets entries last written before the purge's time, as the Postgres
// one does: otherwise every stored response stays in memory for the life of the process.
func TestMemoryIdempotencyPurge(t *testing.T) {
	m := NewMemoryIdempotency()
	ctx := context.Background()
	if _, err := m.Begin(ctx, "old", "0x01"); err != nil {
		t.Fatal(err)
	}
	if err := m.Complete(ctx, "old", Response{StatusCode: 200, Body: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	cut := time.Now().Add(time.Millisecond)
	time.Sleep(2 * time.Millisecond)
	if _, err := m.Begin(ctx, "new", "0x02"); err != nil {
		t.Fatal(err)
	}
	if n, err := m.Purge(ctx, cut); err != nil || n != 1 {
		t.Fatalf("purged %d (%v), want 1", n, err)
	}
	if r, err := m.Begin(ctx, "old", "0x01"); err != nil || r.Found {
		t.Fatalf("the purged key: %+v %v, want a new key", r, err)
	}
	if _, err := m.Begin(ctx, "new", "0x02"); !errors.Is(err, ErrInFlight) {
		t.Fatalf("the recent key: %v, want it still in flight", err)
	}
}
