package ledger

import (
	"context"
	"sync"
	"time"
)

// coalescer sends the requests of concurrent callers together, in one statement or one Redis
// pipeline instead of one each: under load the round trip, and in Postgres the commit, cost
// more than the rows (nonce claims' rows, new payments, common moves, the claims' Redis
// commands). It adds no wait: a request that finds a free slot is sent at once, and requests
// that arrive while inFlight statements run go together in the next one. It has no goroutine
// of its own beyond one per running statement, which ends with it.
//
// write settles each row of a batch: it sets out or err, or sets alone when the shared
// statement could not tell that row's outcome, and the caller then runs the single-row path
// that the code had before batching, which gives the precise answer.
type coalescer[R, O any] struct {
	// timeout bounds a caller's wait and each statement, as it would bound the caller's own
	// statement (the Ledger's DBTimeout, or Claims' RedisTimeout).
	timeout time.Duration
	write   func(ctx context.Context, batch []*batchWait[R, O])
	// maxRows is the most rows one statement carries; maxInFlight how many statements run at
	// once.
	maxRows, maxInFlight int

	mu       sync.Mutex
	pending  []*batchWait[R, O]
	inFlight int

	onWrite func(rows int) // tests: called as each statement starts
}

type batchWait[R, O any] struct {
	ctx   context.Context
	req   R
	done  chan struct{} // closed when the fields below are set
	out   O
	alone bool // run the single-row path: the batch did not settle this row
	err   error
	taken bool // in a statement (guarded by the coalescer's mu)
}

// submit queues req and returns when its statement did, or when ctx ends or after timeout
// while the row still waits. The statement runs under its own timeout, not under ctx, so that
// one caller going away cannot fail the others' rows: a row whose caller has gone before its
// statement starts is left out, and one whose statement has started waits for its outcome
// (at most the statement's timeout): the caller's end never hides a row that was written.
func (c *coalescer[R, O]) submit(ctx context.Context, req R) (out O, alone bool, err error) {
	if ctx.Err() != nil {
		// As a statement under an ended context, never sent.
		return out, false, context.Cause(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	wt := &batchWait[R, O]{ctx: ctx, req: req, done: make(chan struct{})}
	c.mu.Lock()
	c.pending = append(c.pending, wt)
	start := c.inFlight < c.maxInFlight
	if start {
		c.inFlight++
	}
	c.mu.Unlock()
	if start {
		go c.drain()
	}
	select {
	case <-wt.done:
		return wt.out, wt.alone, wt.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	taken := wt.taken
	c.mu.Unlock()
	if !taken {
		// Never sent: take leaves out a row whose context has ended.
		return out, false, context.Cause(ctx)
	}
	// Sent: the statement runs on under its own timeout and may commit. Its outcome, not
	// "not done", is the answer: a write reported failed that was made would be charged
	// (or abandoned) behind the caller's back.
	<-wt.done
	return wt.out, wt.alone, wt.err
}

func (c *coalescer[R, O]) drain() {
	for {
		c.mu.Lock()
		batch := c.take()
		if len(batch) == 0 {
			c.inFlight--
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if c.onWrite != nil {
			c.onWrite(len(batch))
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		c.write(ctx, batch)
		cancel()
	}
}

// take removes up to maxRows waiting rows, dropping those whose caller has gone.
// Called with mu held.
func (c *coalescer[R, O]) take() []*batchWait[R, O] {
	var batch []*batchWait[R, O]
	rest := c.pending[:0]
	for _, wt := range c.pending {
		switch {
		case wt.ctx.Err() != nil:
			wt.err = context.Cause(wt.ctx)
			close(wt.done)
		case len(batch) < c.maxRows:
			wt.taken = true
			batch = append(batch, wt)
		default:
			rest = append(rest, wt)
		}
	}
	clear(c.pending[len(rest):])
	c.pending = rest
	return batch
}
