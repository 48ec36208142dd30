package ledger

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limits of the claim pipeline: how many claims one Redis pipeline carries, and how many
// pipelines run at once. One: Redis runs commands one at a time anyway, and what a claim
// costs it and the gateway is mostly the round trip (a socket write and read on each side),
// which the claims that wait for the running pipeline then share.
const (
	claimPipeMax      = 128
	claimPipeInFlight = 1
)

// redisClaim is one claim for the pipeline: the SET NX of its nonce key and, for ClaimHolding,
// the reservation script sent before it.
type redisClaim struct {
	key       string // the Redis key (redisKey)
	claimedAt time.Time
	keepUntil time.Time
	hold      *holdScript // nil: a claim without a hold
}

// holdScript is the reservation script's call for one hold (Reservations.keys, reserveArgs).
type holdScript struct {
	keys []string
	args []any
}

// claimReply is what Redis answered one claim: the SET's error (nil: claimed, redis.Nil:
// taken already) and, with a hold, the script's answer, as claimOutcome and reserveOutcome
// read them.
type claimReply struct {
	claimErr error
	held     int
	holdErr  error
}

func newClaimPipe(c *Claims) *coalescer[redisClaim, claimReply] {
	return &coalescer[redisClaim, claimReply]{timeout: c.opts.RedisTimeout, write: c.sendClaims, maxRows: claimPipeMax, maxInFlight: claimPipeInFlight}
}

// sendClaims sends a batch of claims in one pipeline and hands each its own answers. A hold
// whose script Redis has not loaded (a new or flushed Redis) is run again with Script.Run,
// which loads it.
func (c *Claims) sendClaims(ctx context.Context, batch []*batchWait[redisClaim, claimReply]) {
	type sent struct{ reserved, claimed *redis.Cmd }
	cmds := make([]sent, len(batch))
	pipe := c.rdb.Pipeline()
	for i, wt := range batch {
		if h := wt.req.hold; h != nil {
			cmds[i].reserved = pipe.EvalSha(ctx, reserveScript.Hash(), h.keys, h.args...)
		}
		rc := wt.req
		cmds[i].claimed = pipe.Do(ctx, "set", rc.key, rc.claimedAt.UnixMilli(), "nx", "pxat", rc.keepUntil.UnixMilli())
	}
	_, _ = pipe.Exec(ctx) // each command's own error is read below
	for i, wt := range batch {
		if r := cmds[i].reserved; r != nil {
			wt.out.held, wt.out.holdErr = r.Int()
			if h := wt.req.hold; wt.out.holdErr != nil && redis.HasErrorPrefix(wt.out.holdErr, "NOSCRIPT") {
				wt.out.held, wt.out.holdErr = reserveScript.Run(ctx, c.rdb, h.keys, h.args...).Int()
			}
		}
		wt.out.claimErr = cmds[i].claimed.Err()
		close(wt.done)
	}
}

// claimInRedis sends rc through the pipeline and returns Redis's answers; an ended ctx or the
// RedisTimeout passing first is the error of both commands.
func (c *Claims) claimInRedis(ctx context.Context, rc redisClaim) claimReply {
	reply, _, err := c.pipe.submit(ctx, rc)
	if err != nil {
		return claimReply{claimErr: err, holdErr: err}
	}
	return reply
}
