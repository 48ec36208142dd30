package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/secureexec/secureexec/internal/textcut"
)

// Limits bound every tool run.
type Limits struct {
	DefaultTimeout time.Duration // when the call names none
	MaxTimeout     time.Duration // tool.timeout_s is clamped to this
	MaxOutputBytes int           // encoded output larger than this is replaced by an error
	MaxConcurrent  int           // tools running at once
	// MaxFreeConcurrent is how many of them may be free calls (Call.Free), fewer than
	// MaxConcurrent [half of it]: the rest of the sandbox is kept for paid calls, which free
	// ones, each holding a slot for up to MaxTimeout, could otherwise push into ErrSandboxBusy.
	// With MaxConcurrent 1 there is no rest to keep.
	MaxFreeConcurrent int
	QueueWait         time.Duration // how long a call waits for a free slot before ErrSandboxBusy
}

// DefaultLimits are the limits used when configuration names none.
var DefaultLimits = Limits{
	DefaultTimeout: 10 * time.Second,
	MaxTimeout:     30 * time.Second,
	MaxOutputBytes: 1 << 20,
	MaxConcurrent:  256,
	QueueWait:      2 * time.Second,
}

// Status values of a finished call.
const (
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusTimeout   = "timeout"
)

// Exit codes, shell-like so that agents can branch on them.
const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitTimeout = 124
)

// Result is the seed's result object.
type Result struct {
	Output    json.RawMessage `json:"output"`
	ExitCode  int             `json:"exitCode"`
	Simulated bool            `json:"simulated"`
	Error     *ToolError      `json:"error,omitempty"`
}

// Call is one validated request to run a tool.
type Call struct {
	Tool    string
	Args    json.RawMessage // as returned by Registry.Validate
	DryRun  bool
	Timeout time.Duration // 0 means Limits.DefaultTimeout
	Free    bool          // nobody paid for it: it runs within Limits.MaxFreeConcurrent
}

// Runner executes tools from a Registry under Limits.
type Runner struct {
	reg     *Registry
	lim     Limits
	slots   chan struct{}
	free    chan struct{} // the share of slots free calls may hold, taken before a slot
	handoff chan func()   // to a tool goroutine waiting for its next call; see startTool
	log     *slog.Logger
}

// NewRunner returns a Runner. Zero fields of lim take DefaultLimits' values.
func NewRunner(reg *Registry, lim Limits, log *slog.Logger) *Runner {
	if lim.DefaultTimeout <= 0 {
		lim.DefaultTimeout = DefaultLimits.DefaultTimeout
	}
	if lim.MaxTimeout <= 0 {
		lim.MaxTimeout = DefaultLimits.MaxTimeout
	}
	if lim.DefaultTimeout > lim.MaxTimeout {
		lim.DefaultTimeout = lim.MaxTimeout
	}
	if lim.MaxOutputBytes <= 0 {
		lim.MaxOutputBytes = DefaultLimits.MaxOutputBytes
	}
	if lim.MaxConcurrent <= 0 {
		lim.MaxConcurrent = DefaultLimits.MaxConcurrent
	}
	if lim.MaxFreeConcurrent <= 0 || lim.MaxFreeConcurrent >= lim.MaxConcurrent {
		lim.MaxFreeConcurrent = max(lim.MaxConcurrent/2, 1)
	}
	if lim.QueueWait <= 0 {
		lim.QueueWait = DefaultLimits.QueueWait
	}
	if log == nil {
		log = slog.Default()
	}
	return &Runner{reg: reg, lim: lim, slots: make(chan struct{}, lim.MaxConcurrent), free: make(chan struct{}, lim.MaxFreeConcurrent),
		handoff: make(chan func()), log: log}
}

// Registry returns the registry the runner executes from.
func (r *Runner) Registry() *Registry { return r.reg }

// Limits returns the effective limits.
func (r *Runner) Limits() Limits { return r.lim }

// minTimeout is the shortest timeout a call gets. The record keeps the timeout in whole
// milliseconds, and a call that had a deadline must not be recorded with 0.
const minTimeout = time.Millisecond

// Timeout turns a requested timeout in seconds into the effective one: DefaultTimeout when
// none is asked for (zero or less), otherwise between minTimeout and MaxTimeout.
func (r *Runner) Timeout(seconds float64) time.Duration {
	if !(seconds > 0) { // NaN too
		return r.lim.DefaultTimeout
	}
	if seconds >= r.lim.MaxTimeout.Seconds() { // compared before converting: 1e300 s overflows a Duration
		return r.lim.MaxTimeout
	}
	return min(max(time.Duration(seconds*float64(time.Second)), minTimeout), r.lim.MaxTimeout)
}

// Run executes a call. The error is non-nil only when the call was refused before the tool
// started (unknown or blocked tool, dry-run-only tool in real mode, sandbox full); every
// failure inside the tool, including a panic or a deadline, is reported in the Result and
// the status.
func (r *Runner) Run(ctx context.Context, c Call) (Result, string, error) {
	tool, err := r.reg.Lookup(c.Tool)
	if err != nil {
		return Result{}, "", err
	}
	if !c.DryRun && isDryRunOnly(tool) {
		return Result{}, "", fmt.Errorf("%w: %s can only be simulated", ErrDryRunOnly, c.Tool)
	}
	if err := r.acquire(ctx, c.Free); err != nil {
		return Result{}, "", err
	}

	timeout := c.Timeout
	if timeout < minTimeout || timeout > r.lim.MaxTimeout { // none (0), too small or too large
		timeout = r.Timeout(timeout.Seconds())
	}
	runCtx, cancel := context.WithTimeout(withOutputCap(ctx, r.lim.MaxOutputBytes), timeout)
	defer cancel()

	type outcome struct {
		out any
		err error
	}
	done := make(chan outcome, 1) // buffered: a late tool never blocks on send
	r.startTool(func() {
		// The slot is held until the tool returns, not until Run does: a tool that is slow to
		// notice its deadline still occupies the sandbox, so MaxConcurrent bounds the tools
		// actually running.
		defer r.release(c.Free)
		defer func() {
			if p := recover(); p != nil {
				r.log.Error("tool panicked", "tool", c.Tool, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				done <- outcome{err: Failf("tool_panic", "the tool failed unexpectedly")}
			}
		}()
		var o outcome
		if c.DryRun {
			o.out, o.err = tool.Simulate(runCtx, c.Args)
		} else {
			o.out, o.err = tool.Run(runCtx, c.Args)
		}
		done <- o
	})

	res := Result{Simulated: c.DryRun}
	select {
	case o := <-done:
		if o.err != nil {
			// A tool that noticed the deadline or the cancellation first reports the same
			// outcome as the runner noticing it first; which one wins the select is a race.
			if runCtx.Err() != nil && (errors.Is(o.err, context.DeadlineExceeded) || errors.Is(o.err, context.Canceled)) {
				return runInterrupted(ctx, runCtx, res, timeout)
			}
			return failed(res, o.err), StatusFailed, nil
		}
		out, err := encodeOutput(o.out)
		if err != nil {
			return failed(res, Failf("output_not_encodable", "%v", err)), StatusFailed, nil
		}
		if len(out) > r.lim.MaxOutputBytes {
			return failed(res, Failf("output_too_large", "output is %d bytes, the limit is %d", len(out), r.lim.MaxOutputBytes)), StatusFailed, nil
		}
		res.Output = out
		res.ExitCode = ExitOK
		return res, StatusCompleted, nil
	case <-runCtx.Done():
		// The tool goroutine sees runCtx cancelled and returns on its own; its send lands in
		// the buffered channel, so it never outlives its own cleanup.
		return runInterrupted(ctx, runCtx, res, timeout)
	}
}

// outputCapKey is the context key under which Run tells the tool its MaxOutputBytes.
type outputCapKey struct{}

func withOutputCap(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, outputCapKey{}, n)
}

// outputCap is the cap on the encoded output of the run that ctx belongs to, and
// DefaultLimits.MaxOutputBytes outside a Runner. A tool whose output can grow far beyond its
// input (regex_match's groups, data_filter's projections) stops with output_too_large once a
// running estimate of its output passes it: the runner would refuse that output anyway, but
// only after the tool had built it and the runner had encoded it. Through ctx, rather than a
// tool config field, the tool's cap is always the runner's, however the operator sets it.
func outputCap(ctx context.Context) int {
	if n, ok := ctx.Value(outputCapKey{}).(int); ok && n > 0 {
		return n
	}
	return DefaultLimits.MaxOutputBytes
}

// errOutputTooLarge is the tool-side twin of the runner's output_too_large.
func errOutputTooLarge(limit int) error {
	return Failf("output_too_large", "the output would exceed %d bytes, the limit", limit)
}

// toolIdle is how long a tool goroutine waits for the next call before it exits.
const toolIdle = 50 * time.Millisecond

// startTool runs f on a goroutine of its own, so that a tool that overstays its deadline can
// be abandoned. A goroutine that finished a call waits toolIdle for the next one: a new
// goroutine's stack starts small and grows, by copying, in every call (about 3% of the gateway's
// CPU under load). Under load the same few goroutines run every call; when calls stop, they
// exit. A tool that never returns keeps only its own goroutine, as before.
func (r *Runner) startTool(f func()) {
	select {
	case r.handoff <- f:
	default:
		go r.toolGoroutine(f)
	}
}

func (r *Runner) toolGoroutine(f func()) {
	idle := time.NewTimer(toolIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(toolIdle)
		select {
		case f = <-r.handoff:
		case <-idle.C:
			return
		}
	}
}

// runInterrupted reports a call whose context ended: cancelled by the caller, or timed out.
func runInterrupted(ctx, runCtx context.Context, res Result, timeout time.Duration) (Result, string, error) {
	if ctx.Err() != nil && !errors.Is(runCtx.Err(), context.DeadlineExceeded) {
		return failed(res, Failf("cancelled", "the request was cancelled")), StatusFailed, nil
	}
	return timedOut(res, timeout), StatusTimeout, nil
}

// acquire takes a slot, and for a free call first a place in the free share, waiting up to
// QueueWait for both together. release gives back what it took.
func (r *Runner) acquire(ctx context.Context, free bool) error {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	if free {
		if err := r.take(ctx, r.free, &t, "free calls"); err != nil {
			return err
		}
	}
	if err := r.take(ctx, r.slots, &t, "tools"); err != nil {
		if free {
			<-r.free
		}
		return err
	}
	return nil
}

func (r *Runner) release(free bool) {
	<-r.slots
	if free {
		<-r.free
	}
}

// take puts a token in sem, at once or within the QueueWait that *t (started on first need)
// measures.
func (r *Runner) take(ctx context.Context, sem chan struct{}, t **time.Timer, what string) error {
	select {
	case sem <- struct{}{}:
		return nil
	default:
	}
	if *t == nil {
		*t = time.NewTimer(r.lim.QueueWait)
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-(*t).C:
		return fmt.Errorf("%w: %d %s already running", ErrSandboxBusy, cap(sem), what)
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrSandboxBusy, ctx.Err())
	}
}

func failed(res Result, err error) Result {
	var te *ToolError
	if !errors.As(err, &te) {
		te = &ToolError{Code: "tool_error", Message: err.Error()}
	}
	res.Output = json.RawMessage("null")
	res.ExitCode = ExitFailed
	res.Error = &ToolError{Code: textcut.Clip(te.Code, 64), Message: textcut.Clip(te.Message, maxErrorMessage)}
	return res
}

// maxErrorMessage bounds a tool's error message in the result: messages may quote input.
const maxErrorMessage = 1024

func timedOut(res Result, d time.Duration) Result {
	res.Output = json.RawMessage("null")
	res.ExitCode = ExitTimeout
	res.Error = Failf("timeout", "the tool did not finish within %s", d)
	return res
}
