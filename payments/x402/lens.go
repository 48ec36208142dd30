package x402

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"

	"github.com/secureexec/secureexec/contracts/bindings/x402lens"
)

// lensInitCode is X402Lens's init code (contracts/src/X402Lens.sol). It is never deployed: an
// eth_call without `to` runs its constructor, which returns the answers instead of code.
var lensInitCode = common.FromHex(x402lens.X402LensMetaData.Bin)

const (
	lensRecordSize = 5 * 32
	// MaxLensBatch is the most payments one lens call reads: the answer is returned as contract
	// code, which EIP-170 caps at 24,576 bytes (32 + 160 * 153).
	MaxLensBatch = 153
)

// LensOptions tunes a LensReader; zero values take the defaults in brackets.
type LensOptions struct {
	// Timeout bounds each read, the shared lens call included [DefaultReadTimeout].
	Timeout time.Duration
	// MaxBatch is the most payments one lens call answers [128, at most MaxLensBatch].
	MaxBatch int
	// MaxInFlight is how many lens calls may run at once [1]. Verifications that arrive while
	// that many are running wait and go together in the next one: batches grow with the load,
	// and a lone verification is never delayed. One at a time makes the fewest calls: under
	// x402 load on anvil, 2 in flight made 2,153 calls for 8,000 payments, 1 made 1,468.
	MaxInFlight int
}

// LensReader is the RPCReader plus PaymentState: concurrent verifications share one eth_call
// that runs X402Lens's constructor, which reads payer and token code sizes, balances and
// authorization states for up to MaxBatch payments of a token at once. Nothing is deployed and
// nothing is cached: every answer is read from the chain for the payment that asked. It starts
// no goroutine of its own beyond one per running lens call, which ends with the call.
type LensReader struct {
	*RPCReader
	maxBatch, maxInFlight int

	mu       sync.Mutex
	pending  []*lensWaiter
	inFlight int
}

var _ PaymentStateReader = (*LensReader)(nil)

// NewLensReader returns a lens reader over c.
func NewLensReader(c ContractCaller, opts LensOptions) *LensReader {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 128
	}
	opts.MaxBatch = min(opts.MaxBatch, MaxLensBatch)
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 1
	}
	return &LensReader{RPCReader: NewRPCReader(c, opts.Timeout), maxBatch: opts.MaxBatch, maxInFlight: opts.MaxInFlight}
}

// lensWaiter is one PaymentState call waiting for its batch.
type lensWaiter struct {
	ctx          context.Context
	token, payer common.Address
	nonce        common.Hash
	done         chan struct{} // closed when st/err are set
	st           PaymentState
	err          error
	fallback     bool // the node refused to run the lens: read one by one
}

// PaymentState implements PaymentStateReader. It returns when its batch is answered or ctx
// ends, whichever is first; an ended ctx does not disturb the others in the batch.
func (l *LensReader) PaymentState(ctx context.Context, token, payer common.Address, nonce common.Hash) (PaymentState, error) {
	w := &lensWaiter{ctx: ctx, token: token, payer: payer, nonce: nonce, done: make(chan struct{})}
	l.mu.Lock()
	l.pending = append(l.pending, w)
	start := l.inFlight < l.maxInFlight
	if start {
		l.inFlight++
	}
	l.mu.Unlock()
	if start {
		go l.drain()
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		return PaymentState{}, waitErr(ctx)
	}
	if w.fallback {
		return l.readOneByOne(ctx, token, payer)
	}
	return w.st, w.err
}

// drain runs lens calls until nothing is pending; it holds one of the maxInFlight slots.
func (l *LensReader) drain() {
	for {
		l.mu.Lock()
		batch := l.take()
		if len(batch) == 0 {
			l.inFlight--
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		l.run(batch)
	}
}

// take removes up to maxBatch waiters of one token from the queue, dropping those whose
// caller has gone. Called with mu held.
func (l *LensReader) take() []*lensWaiter {
	var batch []*lensWaiter
	rest := l.pending[:0]
	for _, w := range l.pending {
		switch {
		case w.ctx.Err() != nil:
			w.err = waitErr(w.ctx) // its caller returns, or has returned, the same
			close(w.done)
		case len(batch) < l.maxBatch && (len(batch) == 0 || w.token == batch[0].token):
			batch = append(batch, w)
		default:
			rest = append(rest, w)
		}
	}
	clear(l.pending[len(rest):])
	l.pending = rest
	return batch
}

// run answers a batch with one lens call; a failed call fails every waiter in it.
func (l *LensReader) run(batch []*lensWaiter) {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	out, err := l.c.CallContract(ctx, ethereum.CallMsg{Data: lensCalldata(batch)}, nil)
	cancel()
	var states []PaymentState
	fallback := false
	switch {
	case err != nil && lensRefused(err):
		// The node ran the lens and it failed (a gas cap too low for it, say): the same
		// questions one by one are still answerable, so this is no outage.
		fallback = true
	case err != nil:
		// Not ErrCallReverted: nothing here says the token lacks EIP-3009.
		err = fmt.Errorf("lens eth_call for %d payments: %w", len(batch), err)
	default:
		states, err = decodeLens(out, len(batch))
	}
	for i, w := range batch {
		switch {
		case fallback:
			w.fallback = true
		case err != nil:
			w.err = err
		default:
			w.st = states[i]
		}
		close(w.done)
	}
}

// readOneByOne answers what the lens would have with the plain reads; Verify asks balance
// and nonce state itself when they are left unknown.
func (l *LensReader) readOneByOne(ctx context.Context, token, payer common.Address) (PaymentState, error) {
	code, err := l.CodeAt(ctx, payer)
	if err != nil {
		return PaymentState{}, err
	}
	tokenCode, err := l.CodeAt(ctx, token)
	if err != nil {
		return PaymentState{}, err
	}
	return PaymentState{PayerHasCode: len(code) > 0, AssetHasCode: len(tokenCode) > 0}, nil
}

// lensRefused tells a node that executed the lens and reports its failure from one that
// could not answer; only the first falls back to reading one by one.
func lensRefused(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	msg := err.Error()
	return isRevert(err) || strings.Contains(msg, "out of gas") || strings.Contains(msg, "max code size exceeded")
}

func waitErr(ctx context.Context) error {
	return fmt.Errorf("waiting for the chain: %w", context.Cause(ctx))
}

// lensCalldata is X402Lens's init code followed by its constructor arguments, ABI-encoded by
// hand: (address token, address[] payers, bytes32[] nonces).
func lensCalldata(batch []*lensWaiter) []byte {
	n := len(batch)
	code := lensInitCode
	data := make([]byte, len(code)+32*(3+1+n+1+n))
	copy(data, code)
	args := data[len(code):]
	copy(args[12:32], batch[0].token[:])
	putUint64Word(args[32:64], 3*32)           // offset of payers
	putUint64Word(args[64:96], uint64(4+n)*32) // offset of nonces
	putUint64Word(args[96:128], uint64(n))
	at := 128
	for _, w := range batch {
		copy(args[at+12:at+32], w.payer[:])
		at += 32
	}
	putUint64Word(args[at:at+32], uint64(n))
	at += 32
	for _, w := range batch {
		copy(args[at:at+32], w.nonce[:])
		at += 32
	}
	return data
}

// decodeLens reads the lens's answer for n payments (layout in X402Lens.sol). A balance or
// authorization state the token did not answer with a full word (a clean ABI bool for the
// latter) is left unknown, for the plain read to decide.
func decodeLens(out []byte, n int) ([]PaymentState, error) {
	if len(out) != 32+lensRecordSize*n {
		return nil, fmt.Errorf("lens answered %d bytes for %d payments, want %d", len(out), n, 32+lensRecordSize*n)
	}
	assetHasCode := !isZero(out[:32])
	states := make([]PaymentState, n)
	for i := range states {
		rec := out[32+lensRecordSize*i : 32+lensRecordSize*(i+1)]
		s := PaymentState{PayerHasCode: !isZero(rec[0:32]), AssetHasCode: assetHasCode}
		if fullWord(rec[32:64]) {
			s.Balance = new(big.Int).SetBytes(rec[64:96])
		}
		if fullWord(rec[96:128]) && isZero(rec[128:159]) && rec[159] <= 1 {
			s.Used, s.UsedKnown = rec[159] == 1, true
		}
		states[i] = s
	}
	return states, nil
}

// fullWord reads a status word of the lens: the call succeeded (status = 1 + returndatasize)
// and returned at least 32 bytes.
func fullWord(status []byte) bool {
	if !isZero(status[:24]) {
		return true // more return data than fits in 64 bits: still at least a word
	}
	var n uint64
	for _, b := range status[24:32] {
		n = n<<8 | uint64(b)
	}
	return n >= 33
}
