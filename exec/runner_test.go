package exec

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"
)

// runnerTestTool is a test-only tool whose behaviour is a function.
type runnerTestTool struct {
	name    string
	dryOnly bool
	fn      func(ctx context.Context) (any, error)
}

func (t *runnerTestTool) Name() string            { return t.name }
func (t *runnerTestTool) Description() string     { return "test tool " + t.name }
func (t *runnerTestTool) Schema() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (t *runnerTestTool) DryRunOnly() bool        { return t.dryOnly }
func (t *runnerTestTool) Simulate(ctx context.Context, _ json.RawMessage) (any, error) {
	return t.fn(ctx)
}
func (t *runnerTestTool) Run(ctx context.Context, _ json.RawMessage) (any, error) { return t.fn(ctx) }

func toolsARunner(t *testing.T, lim Limits, tools ...Tool) *Runner {
	t.Helper()
	reg, err := NewRegistry(tools...)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	return NewRunner(reg, lim, nil)
}

// runnerDeadlineRecorder is a tool that blocks until its context ends and remembers the deadline.
type runnerDeadlineRecorder struct {
	mu       sync.Mutex
	deadline time.Time
}

func (d *runnerDeadlineRecorder) tool(name string) *runnerTestTool {
	return &runnerTestTool{name: name, fn: func(ctx context.Context) (any, error) {
		dl, _ := ctx.Deadline()
		d.mu.Lock()
		d.deadline = dl
		d.mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}}
}

func (d *runnerDeadlineRecorder) get() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deadline
}

func TestRunnerOutcomes(t *testing.T) {
	defer goleak.VerifyNone(t)
	tools := []Tool{
		&runnerTestTool{name: "ok", fn: func(context.Context) (any, error) {
			return struct {
				Answer int `json:"answer"`
			}{42}, nil
		}},
		&runnerTestTool{name: "panics", fn: func(context.Context) (any, error) { panic("boom") }},
		&runnerTestTool{name: "fails", fn: func(context.Context) (any, error) { return nil, Failf("no_luck", "it did not work") }},
		&runnerTestTool{name: "plain_error", fn: func(context.Context) (any, error) { return nil, errors.New("plain") }},
		&runnerTestTool{name: "big", fn: func(context.Context) (any, error) { return strings.Repeat("x", 2000), nil }},
		&runnerTestTool{name: "unencodable", fn: func(context.Context) (any, error) { return func() {}, nil }},
	}
	r := toolsARunner(t, Limits{MaxOutputBytes: 1000}, tools...)
	for _, tc := range []struct {
		tool       string
		dryRun     bool
		wantStatus string
		wantExit   int
		wantCode   string
		wantOutput string
	}{
		{"ok", false, StatusCompleted, ExitOK, "", `{"answer":42}`},
		{"ok", true, StatusCompleted, ExitOK, "", `{"answer":42}`},
		{"panics", false, StatusFailed, ExitFailed, "tool_panic", "null"},
		{"panics", true, StatusFailed, ExitFailed, "tool_panic", "null"},
		{"fails", false, StatusFailed, ExitFailed, "no_luck", "null"},
		{"plain_error", false, StatusFailed, ExitFailed, "tool_error", "null"},
		{"big", false, StatusFailed, ExitFailed, "output_too_large", "null"},
		{"unencodable", false, StatusFailed, ExitFailed, "output_not_encodable", "null"},
	} {
		t.Run(tc.tool, func(t *testing.T) {
			res, status, err := r.Run(context.Background(), Call{Tool: tc.tool, Args: json.RawMessage(`{}`), DryRun: tc.dryRun})
			if err != nil {
				t.Fatalf("Run refused the call: %v", err)
			}
			if status != tc.wantStatus || res.ExitCode != tc.wantExit || res.Simulated != tc.dryRun {
				t.Fatalf("status %q exit %d simulated %v, want %q %d %v", status, res.ExitCode, res.Simulated, tc.wantStatus, tc.wantExit, tc.dryRun)
			}
			if string(res.Output) != tc.wantOutput {
				t.Errorf("output %s, want %s", res.Output, tc.wantOutput)
			}
			gotCode := ""
			if res.Error != nil {
				gotCode = res.Error.Code
			}
			if gotCode != tc.wantCode {
				t.Errorf("error code %q, want %q", gotCode, tc.wantCode)
			}
		})
	}
}

func TestRunnerTimeout(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := &runnerDeadlineRecorder{}
	r := toolsARunner(t, Limits{DefaultTimeout: 150 * time.Millisecond, MaxTimeout: 300 * time.Millisecond}, rec.tool("blocks"))
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		want    time.Duration // the deadline the tool must see
	}{
		{"call's own timeout", 100 * time.Millisecond, 100 * time.Millisecond},
		{"default when none given", 0, 150 * time.Millisecond},
		{"clamped to MaxTimeout", time.Hour, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			res, status, err := r.Run(context.Background(), Call{Tool: "blocks", Timeout: tc.timeout})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if status != StatusTimeout || res.ExitCode != ExitTimeout || res.Error == nil || res.Error.Code != "timeout" {
				t.Fatalf("got status %q exit %d error %+v, want timeout/124", status, res.ExitCode, res.Error)
			}
			// The deadline is what the runner set, so it is compared with the start, not
			// with how long the call took.
			got := rec.get().Sub(start)
			if got < tc.want-5*time.Millisecond || got > tc.want+50*time.Millisecond {
				t.Errorf("tool deadline %v after start, want about %v", got, tc.want)
			}
		})
	}
}

func TestRunnerTimeoutSeconds(t *testing.T) {
	r := toolsARunner(t, Limits{DefaultTimeout: 10 * time.Second, MaxTimeout: 30 * time.Second})
	for _, tc := range []struct {
		name    string
		seconds float64
		want    time.Duration
	}{
		{"zero is none", 0, 10 * time.Second},
		{"negative is none", -5, 10 * time.Second},
		{"NaN is none", math.NaN(), 10 * time.Second},
		{"fraction of seconds", 2.5, 2500 * time.Millisecond},
		{"fraction of a millisecond above one", 0.0015, 1500 * time.Microsecond},
		{"one millisecond", 0.001, time.Millisecond},
		{"below a millisecond", 0.0001, time.Millisecond},
		{"a nanosecond", 1e-9, time.Millisecond},
		{"below a nanosecond", 1e-10, time.Millisecond},
		{"far below a nanosecond", 1e-300, time.Millisecond},
		{"smallest positive float", math.SmallestNonzeroFloat64, time.Millisecond},
		{"the maximum", 30, 30 * time.Second},
		{"above the maximum", 31, 30 * time.Second},
		{"overflows time.Duration", 1e300, 30 * time.Second},
		{"infinity", math.Inf(1), 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.Timeout(tc.seconds); got != tc.want {
				t.Errorf("Timeout(%v) = %v, want %v", tc.seconds, got, tc.want)
			}
		})
	}
}

// A call's own timeout below a millisecond is raised to one, as Timeout does for timeout_s.
func TestRunnerTimeoutBelowAMillisecond(t *testing.T) {
	defer goleak.VerifyNone(t)
	r := toolsARunner(t, Limits{}, (&runnerDeadlineRecorder{}).tool("blocks"))
	res, status, err := r.Run(context.Background(), Call{Tool: "blocks", Timeout: time.Nanosecond})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if status != StatusTimeout || res.Error == nil || res.Error.Message != "the tool did not finish within 1ms" {
		t.Fatalf("got status %q error %+v, want a timeout of 1ms", status, res.Error)
	}
}

func TestRunnerCancelledByCaller(t *testing.T) {
	defer goleak.VerifyNone(t)
	rec := &runnerDeadlineRecorder{}
	r := toolsARunner(t, Limits{DefaultTimeout: 5 * time.Second}, rec.tool("blocks"))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	res, status, err := r.Run(ctx, Call{Tool: "blocks"})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if status != StatusFailed || res.Error == nil || res.Error.Code != "cancelled" {
		t.Fatalf("got %q %+v, want failed/cancelled", status, res.Error)
	}
}

func TestRunnerConcurrencyBound(t *testing.T) {
	defer goleak.VerifyNone(t)
	started := make(chan struct{})
	release := make(chan struct{})
	hold := &runnerTestTool{name: "hold", fn: func(ctx context.Context) (any, error) {
		close(started)
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
	quick := &runnerTestTool{name: "quick", fn: func(context.Context) (any, error) { return "ok", nil }}
	r := toolsARunner(t, Limits{MaxConcurrent: 1, QueueWait: 50 * time.Millisecond, DefaultTimeout: 10 * time.Second}, hold, quick)

	var wg sync.WaitGroup
	wg.Add(1)
	var firstStatus string
	go func() {
		defer wg.Done()
		_, firstStatus, _ = r.Run(context.Background(), Call{Tool: "hold"})
	}()
	<-started
	_, _, err := r.Run(context.Background(), Call{Tool: "quick"})
	if !errors.Is(err, ErrSandboxBusy) {
		t.Fatalf("second call while the only slot is held: err %v, want ErrSandboxBusy", err)
	}
	close(release)
	wg.Wait()
	if firstStatus != StatusCompleted {
		t.Errorf("first call status %q, want completed", firstStatus)
	}
	// The slot is free again.
	if _, status, err := r.Run(context.Background(), Call{Tool: "quick"}); err != nil || status != StatusCompleted {
		t.Errorf("after release: status %q err %v", status, err)
	}
}

// TestRunnerFreeShare: free calls hold at most their share of the sandbox; a paid call finds
// room while they are all busy.
func TestRunnerFreeShare(t *testing.T) {
	defer goleak.VerifyNone(t)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	hold := &runnerTestTool{name: "hold", fn: func(ctx context.Context) (any, error) {
		started <- struct{}{}
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
	quick := &runnerTestTool{name: "quick", fn: func(context.Context) (any, error) { return "ok", nil }}
	r := toolsARunner(t, Limits{MaxConcurrent: 2, MaxFreeConcurrent: 1, QueueWait: 50 * time.Millisecond, DefaultTimeout: 10 * time.Second}, hold, quick)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, status, err := r.Run(context.Background(), Call{Tool: "hold", Free: true}); err != nil || status != StatusCompleted {
			t.Errorf("the free call holding the share: %q, %v", status, err)
		}
	}()
	<-started
	if _, _, err := r.Run(context.Background(), Call{Tool: "quick", Free: true}); !errors.Is(err, ErrSandboxBusy) {
		t.Fatalf("a second free call while the free share is held: err %v, want ErrSandboxBusy", err)
	}
	if _, status, err := r.Run(context.Background(), Call{Tool: "quick"}); err != nil || status != StatusCompleted {
		t.Fatalf("a paid call while the free share is held: %q, %v", status, err)
	}
	close(release)
	wg.Wait()
	if _, status, err := r.Run(context.Background(), Call{Tool: "quick", Free: true}); err != nil || status != StatusCompleted {
		t.Fatalf("a free call once the share is back: %q, %v", status, err)
	}
	for _, tc := range []struct{ max, free, want int }{{256, 0, 128}, {1, 0, 1}, {10, 3, 3}, {10, 10, 5}, {10, 11, 5}} {
		got := NewRunner(nil, Limits{MaxConcurrent: tc.max, MaxFreeConcurrent: tc.free}, nil).Limits().MaxFreeConcurrent
		if got != tc.want {
			t.Errorf("MaxConcurrent %d, MaxFreeConcurrent %d: effective %d, want %d", tc.max, tc.free, got, tc.want)
		}
	}
}

// holdTool signals each call's start on started and returns when release is closed.
func holdTool(started, release chan struct{}) *runnerTestTool {
	return &runnerTestTool{name: "hold", fn: func(ctx context.Context) (any, error) {
		started <- struct{}{}
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
}

// TestRunnerFreeShareGivenBackWhenBusy: a free call refused because paid calls hold every
// slot gives its place in the free share back.
func TestRunnerFreeShareGivenBackWhenBusy(t *testing.T) {
	defer goleak.VerifyNone(t)
	started, release := make(chan struct{}, 2), make(chan struct{})
	quick := &runnerTestTool{name: "quick", fn: func(context.Context) (any, error) { return "ok", nil }}
	r := toolsARunner(t, Limits{MaxConcurrent: 2, MaxFreeConcurrent: 1, QueueWait: 30 * time.Millisecond, DefaultTimeout: 10 * time.Second},
		holdTool(started, release), quick)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); _, _, _ = r.Run(context.Background(), Call{Tool: "hold"}) }()
	}
	<-started
	<-started
	if _, _, err := r.Run(context.Background(), Call{Tool: "quick", Free: true}); !errors.Is(err, ErrSandboxBusy) {
		t.Fatalf("a free call with every slot held: %v, want ErrSandboxBusy", err)
	}
	close(release)
	wg.Wait()
	if _, status, err := r.Run(context.Background(), Call{Tool: "quick", Free: true}); err != nil || status != StatusCompleted {
		t.Fatalf("a free call on an idle sandbox: %q, %v (the free share leaked)", status, err)
	}
}

// TestRunnerWaitingFreeCallHoldsNoSlot: a free call waiting for the free share does not sit
// on a slot meanwhile, so a paid call finds one at once.
func TestRunnerWaitingFreeCallHoldsNoSlot(t *testing.T) {
	defer goleak.VerifyNone(t)
	started, release := make(chan struct{}, 2), make(chan struct{})
	quick := &runnerTestTool{name: "quick", fn: func(context.Context) (any, error) { return "ok", nil }}
	r := toolsARunner(t, Limits{MaxConcurrent: 2, MaxFreeConcurrent: 1, QueueWait: time.Minute, DefaultTimeout: 10 * time.Second},
		holdTool(started, release), quick)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _, _ = r.Run(context.Background(), Call{Tool: "hold", Free: true}) }()
	<-started
	waiting := make(chan struct{})
	go func() {
		defer wg.Done()
		close(waiting)
		_, _, _ = r.Run(context.Background(), Call{Tool: "quick", Free: true}) // waits for the free share
	}()
	<-waiting
	time.Sleep(50 * time.Millisecond) // for it to block on the share; sooner, the check is only weaker
	// A slot held by the waiting call would keep this one waiting past its context.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, status, err := r.Run(ctx, Call{Tool: "quick"}); err != nil || status != StatusCompleted {
		t.Fatalf("a paid call while a free call waits for the share: %q, %v", status, err)
	}
	close(release)
	wg.Wait()
}

// TestRunnerSlotHeldUntilToolReturns checks that a tool still running after its deadline
// keeps its slot: the concurrency bound counts tools, not pending Run calls.
func TestRunnerSlotHeldUntilToolReturns(t *testing.T) {
	defer goleak.VerifyNone(t)
	release := make(chan struct{})
	returned := make(chan struct{})
	stubborn := &runnerTestTool{name: "stubborn", fn: func(context.Context) (any, error) {
		defer close(returned)
		<-release // ignores its context on purpose
		return "late", nil
	}}
	quick := &runnerTestTool{name: "quick", fn: func(context.Context) (any, error) { return "ok", nil }}
	r := toolsARunner(t, Limits{MaxConcurrent: 1, QueueWait: 20 * time.Millisecond}, stubborn, quick)

	if _, status, err := r.Run(context.Background(), Call{Tool: "stubborn", Timeout: 30 * time.Millisecond}); err != nil || status != StatusTimeout {
		t.Fatalf("status %q err %v, want timeout", status, err)
	}
	if _, _, err := r.Run(context.Background(), Call{Tool: "quick"}); !errors.Is(err, ErrSandboxBusy) {
		t.Fatalf("while the timed-out tool still runs: err %v, want ErrSandboxBusy", err)
	}
	close(release)
	<-returned
	tryQuick := func() error {
		_, _, err := r.Run(context.Background(), Call{Tool: "quick"})
		return err
	}
	// The slot is returned by the tool goroutine's last deferred call, just after it returns.
	deadline := time.Now().Add(2 * time.Second)
	for err := tryQuick(); err != nil; err = tryQuick() {
		if time.Now().After(deadline) {
			t.Fatalf("slot never released: %v", err)
		}
	}
}

func TestRunnerRefusals(t *testing.T) {
	onlyDry := &runnerTestTool{name: "only_dry", dryOnly: true, fn: func(context.Context) (any, error) { return "simulated", nil }}
	r := toolsARunner(t, Limits{}, onlyDry, NewMockAPICall())
	for _, tc := range []struct {
		name string
		call Call
		want error
	}{
		{"unknown tool", Call{Tool: "teleport"}, ErrUnknownTool},
		{"blocked tool", Call{Tool: "shell_exec"}, ErrToolBlocked},
		{"blocked even in dry-run", Call{Tool: "kubectl", DryRun: true}, ErrToolBlocked},
		{"dry-run-only tool in real mode", Call{Tool: "only_dry"}, ErrDryRunOnly},
		{"mock_api_call in real mode", Call{Tool: "mock_api_call", Args: json.RawMessage(`{"endpoint":"/x"}`)}, ErrDryRunOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, status, err := r.Run(context.Background(), tc.call)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if status != "" {
				t.Errorf("a refused call has status %q, want none", status)
			}
		})
	}
	// The same dry-run-only tool runs when simulated.
	res, status, err := r.Run(context.Background(), Call{Tool: "only_dry", DryRun: true})
	if err != nil || status != StatusCompleted || string(res.Output) != `"simulated"` || !res.Simulated {
		t.Fatalf("dry-run of a dry-run-only tool: %s %q %v", res.Output, status, err)
	}
}

// TestRunnerToolTimeoutError checks that a tool returning its own wrapped deadline error is
// reported as a timeout, not as a failure.
func TestRunnerToolTimeoutError(t *testing.T) {
	defer goleak.VerifyNone(t)
	tool := &runnerTestTool{name: "wraps", fn: func(ctx context.Context) (any, error) {
		<-ctx.Done()
		return nil, errors.Join(errors.New("fetch"), ctx.Err())
	}}
	r := toolsARunner(t, Limits{}, tool)
	_, status, err := r.Run(context.Background(), Call{Tool: "wraps", Timeout: 50 * time.Millisecond})
	if err != nil || status != StatusTimeout {
		t.Fatalf("status %q err %v, want timeout", status, err)
	}
}

func TestToolErrorMessagesAreBounded(t *testing.T) {
	long := strings.Repeat("é", 2000)
	res := failed(Result{}, Failf("some_code", "%s", long))
	if len(res.Error.Message) > maxErrorMessage+len("…") || !utf8.ValidString(res.Error.Message) || res.Error.Code != "some_code" {
		t.Fatalf("message of %d bytes, valid UTF-8 %v", len(res.Error.Message), utf8.ValidString(res.Error.Message))
	}
}

// goroutineID reads the calling goroutine's id from its stack trace (tests only).
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

// Tool goroutines that finished a call run the next ones, also after a panic, and exit once
// no call comes for toolIdle. Reuse is best effort: a call that comes before the previous
// goroutine is back waiting starts another one. So sequential calls run on a few goroutines,
// where a goroutine per call would give each its own.
func TestToolGoroutinesAreReusedThenExit(t *testing.T) {
	defer goleak.VerifyNone(t)
	caller := goroutineID()
	ran := map[string]int{}
	r := toolsARunner(t, Limits{},
		&runnerTestTool{name: "where", fn: func(context.Context) (any, error) {
			ran[goroutineID()]++ // calls are sequential: Run returns after the tool
			return nil, nil
		}},
		&runnerTestTool{name: "panics", fn: func(context.Context) (any, error) {
			ran[goroutineID()]++
			panic("boom")
		}},
	)
	const calls = 40
	for i := range calls {
		tool := "where"
		if i%8 == 7 {
			tool = "panics"
		}
		if _, _, err := r.Run(context.Background(), Call{Tool: tool, DryRun: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := ran[caller]; ok {
		t.Fatal("a tool ran on the caller's goroutine: a hanging tool could not be abandoned")
	}
	if len(ran) > calls/4 {
		t.Fatalf("%d calls ran on %d goroutines, want a few reused: %v", calls, len(ran), ran)
	}
	// goleak (deferred above) waits for the idle goroutines to exit.
}

// BenchmarkRunnerDryRun is what the runner adds around a small json_parse dry run: the slot,
// the deadline, the tool goroutine and encoding the output. Calls come from many goroutines
// at once, as from the gateway's handlers.
func BenchmarkRunnerDryRun(b *testing.B) {
	reg, err := NewRegistry(NewJSONParse())
	if err != nil {
		b.Fatal(err)
	}
	r := NewRunner(reg, Limits{}, nil)
	call := Call{Tool: "json_parse", Args: json.RawMessage(`{"data":{"key":"value","n":[1,2,3]}}`), DryRun: true}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, status, err := r.Run(context.Background(), call); err != nil || status != StatusCompleted {
				b.Fatalf("run: %s, %v", status, err)
			}
		}
	})
}

// runWithin runs f on its own goroutine and reports how long it took, giving up after limit
// (the goroutine is then abandoned, as the runner abandons a tool past its deadline).
func runWithin(limit time.Duration, f func()) (time.Duration, bool) {
	done := make(chan struct{})
	start := time.Now()
	go func() { defer close(done); f() }()
	select {
	case <-done:
		return time.Since(start), true
	case <-time.After(limit):
		return time.Since(start), false
	}
}

// stretched is a test's time bound d, stretched under the race detector (timingFactor).
func stretched(d time.Duration) time.Duration { return d * timingFactor }
