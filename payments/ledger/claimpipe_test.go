package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"
)

// TestClaimPipelineOutcomes: claims that queue while a pipeline runs go to Redis together in
// the next one, and each gets the answer it would get alone: of three copies of a credential
// exactly one is granted, a hold its payer cannot cover is refused and leaves its credential
// unclaimed, a plain claim and a holding claim share the pipeline, and a claim whose caller
// went away while it waited is never sent.
func TestClaimPipelineOutcomes(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	rdb, prefix := newRedis(t)
	pool := openPool(t, schema, "")
	c := newClaims(t, rdb, openLedger(t, pool, ""), prefix)
	book, err := NewReservations(rdb, prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pipelines := countStatements(c.pipe)
	scope := "1337:token:" + randomHex(4)
	price := big.NewInt(10)
	expires := time.Now().Add(10 * time.Minute)
	hold := func(key string, balance int64) Hold {
		return Hold{Book: book, Scope: scope, ID: key, Amount: price, Balance: big.NewInt(balance), Expires: expires}
	}

	const keys = 8
	key := func(i int) string { return fmt.Sprintf("x402:pipe:%s:%d", prefix, i) }
	poor := "x402:pipe:poor:" + randomHex(8)
	plain := "x402:pipe:plain:" + randomHex(8)
	var calls []func() error
	for i := range keys {
		for range 3 {
			calls = append(calls, func() error { return c.ClaimHolding(ctx, key(i), expires, hold(key(i), 1_000)) })
		}
	}
	calls = append(calls,
		func() error { return c.ClaimHolding(ctx, poor, expires, hold(poor, 5)) },
		func() error { return c.Claim(ctx, plain, expires) })

	release := holdSlots(c.pipe)
	gone, cancel := context.WithCancel(ctx)
	goneKey := "x402:pipe:gone:" + randomHex(8)
	goneErr := make(chan error, 1)
	go func() { goneErr <- c.Claim(gone, goneKey, expires) }()
	for queued(c.pipe) < 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-goneErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("a claim whose caller went away = %v, want context.Canceled", err)
	}
	errsDone := make(chan []error, 1)
	go func() { errsDone <- runAll(calls) }()
	for queued(c.pipe) < len(calls)+1 {
		time.Sleep(time.Millisecond)
	}
	release()
	errs := <-errsDone

	for i := range keys {
		granted, used := 0, 0
		for _, err := range errs[3*i : 3*i+3] {
			switch {
			case err == nil:
				granted++
			case errors.Is(err, ErrNonceUsed):
				used++
			default:
				t.Fatalf("copy of %s: %v", key(i), err)
			}
		}
		if granted != 1 || used != 2 {
			t.Fatalf("%s: %d granted, %d used; want 1 and 2", key(i), granted, used)
		}
	}
	if err := errs[3*keys]; !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("a hold its payer cannot cover = %v, want ErrInsufficientFunds", err)
	}
	if err := errs[3*keys+1]; err != nil {
		t.Fatalf("a plain claim in the pipeline: %v", err)
	}
	if p := pipelines.Load(); p != 1 {
		t.Fatalf("%d pipelines for %d queued claims, want 1", p, len(calls))
	}
	if h, err := book.Held(ctx, scope); err != nil || h.Int64() != keys*10 {
		t.Fatalf("held %v (%v), want %d: one hold per granted credential", h, err, keys*10)
	}
	if n, _ := rdb.Exists(ctx, prefix+"nonce:"+goneKey, prefix+"nonce:"+poor).Result(); n != 0 {
		t.Fatalf("%d of the never-sent and the refused credential are claimed in Redis, want 0", n)
	}
	if err := c.ClaimHolding(ctx, poor, expires, hold(poor, 1_000)); err != nil {
		t.Fatalf("the refused credential once funded: %v", err)
	}
	if err := c.Claim(ctx, goneKey, expires); err != nil {
		t.Fatalf("the never-sent credential, sent again: %v", err)
	}
}
