package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// ClaimsOptions tunes Claims; zero values take the defaults in brackets.
type ClaimsOptions struct {
	// Prefix starts every Redis key, e.g. "secureexec:"; a claim's key is <Prefix>nonce:<key>.
	Prefix string
	// RedisTimeout is the deadline of the claim's SET [500ms]; past it the claim fails with
	// ErrUnavailable and nothing is charged.
	RedisTimeout time.Duration
	// Grace is how long past the credential's expiry a claim is kept, in Redis (PXAT) and in
	// Postgres (PurgeExpired) [24h]: clocks differ, and a claim must outlive every replica's
	// idea of "still valid".
	Grace time.Duration
	// MaxLifetime caps how far ahead a claim's expiry may be [90 days]. An EIP-3009
	// authorization may be valid for centuries; past the cap the token contract's own nonce
	// check is what refuses a settled authorization a second time.
	MaxLifetime time.Duration
}

func (o ClaimsOptions) withDefaults() ClaimsOptions {
	if o.RedisTimeout <= 0 {
		o.RedisTimeout = 500 * time.Millisecond
	}
	if o.Grace <= 0 {
		o.Grace = 24 * time.Hour
	}
	if o.MaxLifetime <= 0 {
		o.MaxLifetime = 90 * 24 * time.Hour
	}
	return o
}

// Claims marks credentials as used, atomically across replicas, before any work is done for
// them. Redis is the authority (SET NX: one winner, whatever the number of replicas);
// Postgres remembers every claim too, so a flushed or failed-over Redis cannot make a used
// credential new again. Concurrent claims go to Redis in one pipeline (newClaimPipe) and their
// rows to Postgres in one statement (newNonceWriter). Claims has no goroutine of its own
// beyond one per running pipeline or statement; the Ledger's replayer delivers the claims
// spooled while Postgres was away.
type Claims struct {
	rdb    redis.UniversalClient
	l      *Ledger
	opts   ClaimsOptions
	nonces *coalescer[nonceRow, nonceOutcome] // concurrent claims' rows go to Postgres together
	pipe   *coalescer[redisClaim, claimReply] // and their Redis commands in one pipeline
}

// NewClaims returns claims kept in rdb (a client, a failover client or a cluster client) and
// in l's Postgres, spooled by l when Postgres is away. rdb must be created with
// ContextTimeoutEnabled: without it go-redis ignores context deadlines and a hung Redis would
// hold a request for its socket timeouts instead of RedisTimeout.
func NewClaims(rdb redis.UniversalClient, l *Ledger, opts ClaimsOptions) (*Claims, error) {
	if rdb == nil || l == nil {
		return nil, errors.New("ledger: claims need a redis client and a ledger")
	}
	if !honoursContext(rdb) {
		return nil, errors.New("ledger: redis_context_timeout_disabled: create the client with ContextTimeoutEnabled, " +
			"or its socket timeouts, not RedisTimeout, bound every claim")
	}
	c := &Claims{rdb: rdb, l: l, opts: opts.withDefaults(), nonces: newNonceWriter(l)}
	c.pipe = newClaimPipe(c)
	return c, nil
}

// honoursContext reports whether rdb ends a command at its context's deadline. go-redis does
// so only with ContextTimeoutEnabled; a client type whose options cannot be read is trusted.
func honoursContext(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case interface{ Options() *redis.Options }:
		return c.Options().ContextTimeoutEnabled
	case interface{ Options() *redis.ClusterOptions }:
		return c.Options().ContextTimeoutEnabled
	}
	return true
}

// Claim marks key as used until expiresAt (plus Grace). It returns nil to exactly one caller
// per key, across replicas; every other gets ErrNonceUsed. Redis unreachable or slower than
// RedisTimeout: ErrUnavailable (wrapped), and the claim may or may not have been made — a
// retry of the same credential may then be refused, which costs the payer a new signature,
// never a second payment. Postgres unreachable: the claim stands on Redis's word and its row
// is spooled, to be inserted when Postgres is back.
func (c *Claims) Claim(ctx context.Context, key string, expiresAt time.Time) error {
	n, keepUntil, err := c.prepare(key, expiresAt)
	if err != nil {
		return err
	}
	reply := c.claimInRedis(ctx, redisClaim{key: c.redisKey(key), claimedAt: n.ClaimedAt, keepUntil: keepUntil})
	if err := claimOutcome(ctx, key, reply.claimErr); err != nil {
		return err
	}
	return c.record(ctx, n)
}

// Hold is what a payment reserves of its payer's balance (Reservations.Reserve), taken by
// ClaimHolding in the same round trip to Redis as the claim.
type Hold struct {
	Book            *Reservations
	Scope, ID       string
	Amount, Balance *big.Int
	Expires         time.Time
}

// ClaimHolding is Reserve and then Claim in one round trip to Redis (in the claim pipeline: the
// two commands, then the two answers), which is a third of what a paid call costs Redis and the
// gateway's Redis client. Its answers are theirs: ErrInsufficientFunds when the hold does not
// fit (the claim it made alongside is deleted again, so the credential can be sent once the
// payer has the funds), ErrNonceUsed when the credential was used, ErrUnavailable when Redis
// cannot answer. A crash between the claim and that delete leaves the nonce claimed: the payer
// signs a new authorization, nothing is charged. hold.Book must use this Claims' Redis client;
// with another, ClaimHolding runs Reserve and Claim one after the other.
func (c *Claims) ClaimHolding(ctx context.Context, key string, expiresAt time.Time, hold Hold) error {
	if hold.Book == nil {
		return invalid("a holding claim needs a reservation book")
	}
	if hold.Book.rdb != c.rdb {
		if err := hold.Book.Reserve(ctx, hold.Scope, hold.ID, hold.Amount, hold.Balance, hold.Expires); err != nil {
			return err
		}
		return c.Claim(ctx, key, expiresAt)
	}
	if err := checkReservation(hold.Scope, hold.ID, hold.Amount); err != nil {
		return err
	}
	args, err := reserveArgs(hold.ID, hold.Amount, hold.Balance, hold.Expires, time.Now())
	if err != nil {
		return err
	}
	n, keepUntil, err := c.prepare(key, expiresAt)
	if err != nil {
		return err
	}
	reply := c.claimInRedis(ctx, redisClaim{key: c.redisKey(key), claimedAt: n.ClaimedAt, keepUntil: keepUntil,
		hold: &holdScript{keys: hold.Book.keys(hold.Scope), args: args}})
	if err := claimOutcome(ctx, key, reply.claimErr); err != nil {
		return err // used, or unknown: a hold taken for it expires by itself, as after Reserve and Claim
	}
	if err := reserveOutcome(ctx, hold.Scope, reply.held, reply.holdErr); err != nil {
		// The claim went through but the hold did not: give the credential back.
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.RedisTimeout)
		derr := c.rdb.Del(dctx, c.redisKey(key)).Err()
		dcancel()
		if derr != nil {
			c.l.log.Warn("a nonce claimed for a payment refused its hold stays claimed", "key", key, "err", derr)
		}
		return err
	}
	return c.record(ctx, n)
}

// prepare validates a claim and returns its row and how long Redis keeps it.
func (c *Claims) prepare(key string, expiresAt time.Time) (nonceRow, time.Time, error) {
	if key == "" {
		return nonceRow{}, time.Time{}, invalid("nonce key is required")
	}
	if err := checkText("nonce key", key, MaxKeyBytes); err != nil {
		return nonceRow{}, time.Time{}, err
	}
	if expiresAt.IsZero() {
		return nonceRow{}, time.Time{}, invalid("nonce expiry is required")
	}
	now := normalizeTime(time.Now())
	exp := normalizeTime(expiresAt)
	if limit := now.Add(c.opts.MaxLifetime); exp.After(limit) {
		exp = limit
	}
	keepUntil := exp.Add(c.opts.Grace)
	if !keepUntil.After(now) {
		return nonceRow{}, time.Time{}, invalid("credential expired at %s", expiresAt.UTC().Format(time.RFC3339))
	}
	return nonceRow{Key: key, ClaimID: uuid.New(), ClaimedAt: now, ExpiresAt: exp}, keepUntil, nil
}

// claimOutcome reads the claim's SET answer.
func claimOutcome(ctx context.Context, key string, err error) error {
	switch {
	case errors.Is(err, redis.Nil):
		return fmt.Errorf("ledger: nonce %q: %w", key, ErrNonceUsed)
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("ledger: claim nonce: %w", context.Cause(ctx))
	case err != nil:
		return unavailable("claim nonce in redis", err)
	}
	return nil
}

func (c *Claims) redisKey(key string) string { return c.opts.Prefix + "nonce:" + key }

// record writes the claim Redis granted to Postgres, or to the spool when Postgres is away.
func (c *Claims) record(ctx context.Context, n nonceRow) error {
	l := c.l
	if !l.degraded.Load() {
		fresh, have, err := insertNonceBatched(ctx, c.nonces, n)
		switch {
		case err == nil && fresh:
			return nil
		case err == nil:
			// Redis had forgotten it (flushed, failed over to a replica that never saw it).
			l.log.Warn("nonce claimed in Redis was already recorded in Postgres; refusing it", "key", n.Key, "recorded_claim", have)
			return fmt.Errorf("ledger: nonce %q (recorded in Postgres): %w", n.Key, ErrNonceUsed)
		case ctx.Err() != nil:
			return fmt.Errorf("ledger: record nonce: %w", context.Cause(ctx))
		case !transientDB(err):
			// Postgres answered, and not with a row: a schema or permission problem that the
			// spool could not fix either.
			return unavailable("record nonce", err)
		}
		l.enterDegraded("record nonce", err)
	}
	if err := l.appendOp(&spoolOp{Kind: opNonce, Nonce: &n}); err != nil {
		return unavailable("spool nonce", err)
	}
	return nil
}

// PurgeExpired deletes the Postgres rows of claims whose credential expired more than Grace
// before now (their Redis keys have expired by then too), and returns how many it deleted.
// Run it from one replica (Ledger.RunExclusive).
func (c *Claims) PurgeExpired(ctx context.Context, now time.Time) (int64, error) {
	return purgeInChunks(ctx, c.l.pool, c.l.opts.DBTimeout, "purge expired nonces",
		`DELETE FROM payment_nonces WHERE key IN (SELECT key FROM payment_nonces WHERE expires_at < $1 LIMIT 5000)`,
		now.Add(-c.opts.Grace))
}
