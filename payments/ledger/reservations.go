package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrInsufficientFunds: the payer's balance, less what its payments not yet settled already
// hold, does not cover the amount.
var ErrInsufficientFunds = errors.New("insufficient_funds_after_reservations")

// maxReservable bounds reservation arithmetic, which Redis' Lua does in float64: every amount
// and total stays an exact integer below 2^53 (9·10^9 USDC in 6-decimal units). A larger
// balance is counted as this much, which can only refuse, never over-promise.
var maxReservable = big.NewInt(1<<53 - 1)

// MaxReservation caps how long a reservation is kept whatever the authorization's validity: a
// payment settles in seconds, and one that has not by then is reconciled, not re-reserved.
const MaxReservation = 15 * time.Minute

// Reservations keeps, per payer and token (the scope), the amount of every verified payment
// whose money has not moved yet. What a payer can still spend is its on-chain balance minus
// those: without this, calls answered in batch mode before their batch settles could promise
// more than the payer holds, and the excess would be answered and never paid. Entries are
// released when their payment ends (settled, failed, not charged) and expire on their own
// otherwise, so a lost release only holds funds back for a while, never lets them be spent
// twice. Redis is the authority, one key pair per scope, so it works across replicas and in
// a Cluster.
type Reservations struct {
	rdb     redis.UniversalClient
	prefix  string
	timeout time.Duration
	// KeepSettled keeps a hold given back by ReleaseSettled counting this much longer. A
	// payment's money moves on chain before its hold is released, but a balance read just
	// before that, used by a reservation just after, would count the same money twice (as
	// still in the balance, and no longer held). Kept a little past the release, the hold
	// covers any such read (see x402.HoldAfterRelease). Zero releases at once.
	KeepSettled time.Duration
}

// NewReservations keeps reservations in rdb under prefix; each command is bounded by timeout
// (500 ms when not positive). rdb must honour context deadlines (ContextTimeoutEnabled).
func NewReservations(rdb redis.UniversalClient, prefix string, timeout time.Duration) (*Reservations, error) {
	if rdb == nil {
		return nil, errors.New("ledger: reservations need a redis client")
	}
	if !honoursContext(rdb) {
		return nil, errors.New("ledger: redis_context_timeout_disabled: create the client with ContextTimeoutEnabled")
	}
	if timeout <= 0 {
		timeout = 500 * time.Millisecond
	}
	return &Reservations{rdb: rdb, prefix: prefix, timeout: timeout}, nil
}

// reserveScript: KEYS[1] hash id -> amount (and the running total in field "_total"), KEYS[2]
// sorted set id -> expiry (unix ms). ARGV: id, amount, balance, now ms, expiry ms. Expired
// entries are dropped first; an id already held is a success (a retry); otherwise the amount is
// held only if total + amount <= balance. Returns 1 held, 0 refused.
var reserveScript = redis.NewScript(`
local now = tonumber(ARGV[4])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local amt = redis.call('HGET', KEYS[1], id)
  if amt then
    redis.call('HINCRBY', KEYS[1], '_total', -tonumber(amt))
    redis.call('HDEL', KEYS[1], id)
  end
  redis.call('ZREM', KEYS[2], id)
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
local total = tonumber(redis.call('HGET', KEYS[1], '_total') or '0')
if total + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], '_total', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
local keep = tonumber(ARGV[5]) + 60000
for _, k in ipairs(KEYS) do
  local cur = redis.call('PEXPIRETIME', k)
  if cur < keep then redis.call('PEXPIREAT', k, keep) end
end
return 1
`)

// releaseScript: the same keys; ARGV[1] is the time (unix ms) until which released holds still
// count, 0 for none, the rest are ids. Each held id gives its amount back, at once or by
// expiring then (never later than it would have).
var releaseScript = redis.NewScript(`
local keep = tonumber(ARGV[1])
for i = 2, #ARGV do
  local id = ARGV[i]
  if keep > 0 then
    redis.call('ZADD', KEYS[2], 'XX', 'LT', keep, id)
  else
    local amt = redis.call('HGET', KEYS[1], id)
    if amt then
      redis.call('HINCRBY', KEYS[1], '_total', -tonumber(amt))
      redis.call('HDEL', KEYS[1], id)
    end
    redis.call('ZREM', KEYS[2], id)
  end
end
return 0
`)

// keys are the scope's hash and sorted set, in one Cluster slot.
func (r *Reservations) keys(scope string) []string {
	tag := r.prefix + "reserve:{" + scope + "}"
	return []string{tag + ":amounts", tag + ":expiry"}
}

// Reserve holds amount for payment id in scope against balance until expires (at most
// MaxReservation from now). ErrInsufficientFunds when it does not fit; Redis unreachable is
// ErrUnavailable. Reserving an id already held succeeds and changes nothing.
func (r *Reservations) Reserve(ctx context.Context, scope, id string, amount, balance *big.Int, expires time.Time) error {
	if err := checkReservation(scope, id, amount); err != nil {
		return err
	}
	args, err := reserveArgs(id, amount, balance, expires, time.Now())
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	held, err := reserveScript.Run(rctx, r.rdb, r.keys(scope), args...).Int()
	return reserveOutcome(ctx, scope, held, err)
}

// reserveArgs validates a reservation and returns the script's arguments.
func reserveArgs(id string, amount, balance *big.Int, expires, now time.Time) ([]any, error) {
	if balance == nil || balance.Sign() < 0 {
		return nil, invalid("reservation balance must be a non-negative amount")
	}
	if balance.Cmp(maxReservable) > 0 {
		balance = maxReservable
	}
	if limit := now.Add(MaxReservation); expires.After(limit) {
		expires = limit
	}
	if !expires.After(now) {
		return nil, invalid("reservation for %s expires in the past", id)
	}
	return []any{id, amount.String(), balance.String(), strconv.FormatInt(now.UnixMilli(), 10), strconv.FormatInt(expires.UnixMilli(), 10)}, nil
}

// reserveOutcome reads what the reserve script answered.
func reserveOutcome(ctx context.Context, scope string, held int, err error) error {
	switch {
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("ledger: reserve: %w", context.Cause(ctx))
	case err != nil:
		return unavailable("reserve funds in redis", err)
	case held != 1:
		return fmt.Errorf("ledger: %s: %w", scope, ErrInsufficientFunds)
	}
	return nil
}

// Release gives back at once what the payments ids hold in scope: their money never moves
// (refused, not charged). Unknown ids are ignored.
func (r *Reservations) Release(ctx context.Context, scope string, ids ...string) error {
	return r.release(ctx, scope, 0, ids)
}

// ReleaseSettled gives back what the payments ids hold in scope once their money has moved:
// after KeepSettled, never later than the hold would have expired.
func (r *Reservations) ReleaseSettled(ctx context.Context, scope string, ids ...string) error {
	return r.release(ctx, scope, r.KeepSettled, ids)
}

func (r *Reservations) release(ctx context.Context, scope string, keepFor time.Duration, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	keep := int64(0)
	if keepFor > 0 {
		keep = time.Now().Add(keepFor).UnixMilli()
	}
	args := make([]any, 0, len(ids)+1)
	args = append(args, strconv.FormatInt(keep, 10))
	for _, id := range ids {
		args = append(args, id)
	}
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := releaseScript.Run(rctx, r.rdb, r.keys(scope), args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return unavailable("release reserved funds in redis", err)
	}
	return nil
}

// Held returns the total scope holds now (for tests and operators).
func (r *Reservations) Held(ctx context.Context, scope string) (*big.Int, error) {
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	v, err := r.rdb.HGet(rctx, r.keys(scope)[0], "_total").Result()
	if errors.Is(err, redis.Nil) {
		return new(big.Int), nil
	}
	if err != nil {
		return nil, unavailable("read reserved funds", err)
	}
	n, ok := new(big.Int).SetString(v, 10)
	if !ok {
		return nil, fmt.Errorf("ledger: reserved total %q is not an integer", v)
	}
	return n, nil
}

func checkReservation(scope, id string, amount *big.Int) error {
	if scope == "" || id == "" || len(scope) > MaxKeyBytes || len(id) > MaxKeyBytes || id == "_total" {
		return invalid("a reservation needs a scope and an id of at most %d bytes", MaxKeyBytes)
	}
	if amount == nil || amount.Sign() <= 0 || amount.Cmp(maxReservable) > 0 {
		return invalid("reservation amount %v is outside 1 .. 2^53-1", amount)
	}
	return nil
}

// MemoryReservations is Reservations in one process, for the embedded default.
type MemoryReservations struct {
	KeepSettled time.Duration // as Reservations.KeepSettled

	mu     sync.Mutex
	scopes map[string]map[string]memoryHold
}

type memoryHold struct {
	amount  *big.Int
	expires time.Time
}

// NewMemoryReservations returns an empty in-process reservation book.
func NewMemoryReservations() *MemoryReservations {
	return &MemoryReservations{scopes: map[string]map[string]memoryHold{}}
}

// Reserve is Reservations.Reserve in memory.
func (m *MemoryReservations) Reserve(_ context.Context, scope, id string, amount, balance *big.Int, expires time.Time) error {
	if err := checkReservation(scope, id, amount); err != nil {
		return err
	}
	if balance == nil || balance.Sign() < 0 {
		return invalid("reservation balance must be a non-negative amount")
	}
	now := time.Now()
	if limit := now.Add(MaxReservation); expires.After(limit) {
		expires = limit
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	holds := m.scopes[scope]
	if holds == nil {
		holds = map[string]memoryHold{}
		m.scopes[scope] = holds
	}
	total := new(big.Int)
	for k, h := range holds {
		if !h.expires.After(now) {
			delete(holds, k)
			continue
		}
		if k == id {
			return nil
		}
		total.Add(total, h.amount)
	}
	if total.Add(total, amount).Cmp(balance) > 0 {
		return fmt.Errorf("ledger: %s: %w", scope, ErrInsufficientFunds)
	}
	holds[id] = memoryHold{amount: new(big.Int).Set(amount), expires: expires}
	return nil
}

// Release is Reservations.Release in memory.
func (m *MemoryReservations) Release(_ context.Context, scope string, ids ...string) error {
	return m.release(scope, 0, ids)
}

// ReleaseSettled is Reservations.ReleaseSettled in memory.
func (m *MemoryReservations) ReleaseSettled(_ context.Context, scope string, ids ...string) error {
	return m.release(scope, m.KeepSettled, ids)
}

func (m *MemoryReservations) release(scope string, keepFor time.Duration, ids []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := time.Now().Add(keepFor)
	for _, id := range ids {
		h, ok := m.scopes[scope][id]
		switch {
		case !ok:
		case keepFor > 0 && keep.Before(h.expires):
			h.expires = keep
			m.scopes[scope][id] = h
		case keepFor <= 0:
			delete(m.scopes[scope], id)
		}
	}
	if len(m.scopes[scope]) == 0 {
		delete(m.scopes, scope)
	}
	return nil
}
