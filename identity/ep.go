package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"
)

// FailMode says what a call gets when EP cannot answer.
type FailMode string

// Fail modes. The seed product fails open; fail-closed trades availability for safety.
const (
	FailOpen   FailMode = "open"
	FailClosed FailMode = "closed"
)

// Defaults applied by NewEPClient to zero-valued settings.
const (
	DefaultEPTimeout          = 3 * time.Second
	DefaultEPMaxResponseBytes = 64 << 10
	DefaultBreakerThreshold   = 5
	DefaultBreakerCooldown    = 30 * time.Second
	DefaultEPChain            = "base"
)

// maxEPHeaderBytes caps EP's response headers when the client builds its own transport.
const maxEPHeaderBytes = 16 << 10

// EPConfig configures the EP client. An empty URL means EP is off.
type EPConfig struct {
	URL              string        // EP_GUARD_URL, e.g. https://achillesalpha.onrender.com/ep/validate
	Mode             FailMode      // "" means FailOpen, the seed default
	Timeout          time.Duration // hard deadline per call, headers and body included
	MaxResponseBytes int64         // responses larger than this are bad responses
	BreakerThreshold int           // consecutive failures that open the breaker
	BreakerCooldown  time.Duration // how long the breaker stays open before one probe
	Chain            string        // EP's "chain" field

	Transport http.RoundTripper // nil: a private clone of http.DefaultTransport, headers capped
	Now       func() time.Time  // nil: time.Now; tests inject a clock for the breaker
	Logger    *slog.Logger      // nil: slog.Default()
}

// EPClient calls EP's /ep/validate and turns every answer, or the lack of one, into an
// Outcome. It is safe for concurrent use; Close releases its idle connections.
type EPClient struct {
	url      string
	mode     FailMode
	timeout  time.Duration
	maxBytes int64
	chain    string
	http     *http.Client
	breaker  *breaker
	now      func() time.Time
	log      *slog.Logger
}

// NewEPClient validates cfg and applies defaults; an error names the offending setting.
func NewEPClient(cfg EPConfig) (*EPClient, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("EP_GUARD_URL %q is not an http(s) URL", cfg.URL)
	}
	c := &EPClient{
		url:      u.String(),
		mode:     cfg.Mode,
		timeout:  cfg.Timeout,
		maxBytes: cfg.MaxResponseBytes,
		chain:    cfg.Chain,
		now:      cfg.Now,
		log:      cfg.Logger,
	}
	switch c.mode {
	case "":
		c.mode = FailOpen
	case FailOpen, FailClosed:
	default:
		return nil, fmt.Errorf("EP fail mode %q is neither %q nor %q", cfg.Mode, FailOpen, FailClosed)
	}
	if c.timeout == 0 {
		c.timeout = DefaultEPTimeout
	}
	if c.maxBytes == 0 {
		c.maxBytes = DefaultEPMaxResponseBytes
	}
	threshold, cooldown := cfg.BreakerThreshold, cfg.BreakerCooldown
	if threshold == 0 {
		threshold = DefaultBreakerThreshold
	}
	if cooldown == 0 {
		cooldown = DefaultBreakerCooldown
	}
	switch {
	case c.timeout < 0:
		return nil, fmt.Errorf("EP timeout %s is negative", c.timeout)
	case c.maxBytes < 0:
		return nil, fmt.Errorf("EP max response bytes %d is negative", c.maxBytes)
	case threshold < 0:
		return nil, fmt.Errorf("EP breaker threshold %d is negative", threshold)
	case cooldown < 0:
		return nil, fmt.Errorf("EP breaker cooldown %s is negative", cooldown)
	}
	c.breaker = newBreaker(threshold, cooldown)
	if c.chain == "" {
		c.chain = DefaultEPChain
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	rt := cfg.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// The default allows megabytes of response headers, which would make the body cap
		// pointless; EP's headers are a handful of short lines.
		t.MaxResponseHeaderBytes = maxEPHeaderBytes
		rt = t
	}
	c.http = &http.Client{
		Transport: rt,
		// A redirect would turn our POST into a GET somewhere else; EP's URL is configured,
		// so a 3xx is simply a bad status.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// Close releases idle keep-alive connections, ending their goroutines.
func (c *EPClient) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// Validate asks EP about req and never fails: an unusable or missing answer becomes an
// unavailable_* Outcome according to the fail mode. req.AgentID must already be final.
func (c *EPClient) Validate(ctx context.Context, req Request) Outcome {
	ok, probe := c.breaker.allow(c.now())
	if !ok {
		return c.unavailable(req, &epError{Reason: ReasonEPCircuitOpen}, verdictNone)
	}
	ans, err := c.call(ctx, newEPRequest(req, c.chain))
	if err != nil {
		v := verdictFailure
		if probe {
			v = verdictProbeFailure
		}
		if ctx.Err() != nil {
			// Our caller's deadline or cancellation, not EP's deadline: says nothing about EP,
			// and is recorded as what it was.
			c.breaker.release(probe)
			v = verdictNone
			err = &epError{Reason: ReasonEPCanceled, Err: err}
		}
		return c.unavailable(req, err, v)
	}
	c.breaker.success()
	out := Outcome{
		Approved:    ans.Valid,
		Decision:    DecisionApproved,
		Source:      SourceEP,
		Reason:      ReasonEPApproved,
		Violations:  ans.Violations,
		RiskScore:   ans.RiskScore,
		EPProofHash: ans.ProofHash,
	}
	if !ans.Valid {
		out.Decision, out.Reason = DecisionDenied, ReasonEPDenied
		if ans.Contradictory {
			out.Reason = ReasonEPContradictory
		}
		c.log.Info("ep denied call", "job_id", req.JobID, "agent_id", req.AgentID, "tool", req.Tool,
			"reason", out.Reason, "violations", ans.Violations, "risk_score", ans.RiskScore)
	}
	return out
}

// breakerVerdict is what an unusable EP call tells the breaker.
type breakerVerdict int

const (
	verdictNone         breakerVerdict = iota // nothing: no call made, or the caller went away
	verdictFailure                            // EP failed; count it
	verdictProbeFailure                       // EP failed the half-open probe
)

// unavailable is the one place that decides what happens when EP gave no usable answer: it
// feeds the breaker, picks fail-open or fail-closed, and logs why.
func (c *EPClient) unavailable(req Request, err error, v breakerVerdict) Outcome {
	decision, reason := c.failDecision(req, err, v)
	return Outcome{
		Approved: decision == DecisionUnavailableFailedOpen,
		Decision: decision,
		Source:   SourceEP,
		Reason:   reason,
	}
}

// failDecision returns (decision, reason) for a failed EP call and logs the choice.
func (c *EPClient) failDecision(req Request, err error, v breakerVerdict) (decision, reason string) {
	reason = reasonOf(err)
	tripped := false
	if v == verdictFailure || v == verdictProbeFailure {
		tripped = c.breaker.failure(c.now(), v == verdictProbeFailure)
	}
	decision = DecisionUnavailableFailedOpen
	if c.mode == FailClosed {
		decision = DecisionUnavailableFailedClosed
	}
	state, failures := c.breaker.snapshot()
	attrs := []any{"job_id", req.JobID, "agent_id", req.AgentID, "tool", req.Tool,
		"reason", reason, "decision", decision, "mode", string(c.mode),
		"breaker", state.String(), "consecutive_failures", failures, "err", err}
	switch {
	case tripped:
		c.log.Error("ep circuit breaker opened", append(attrs, "cooldown", c.breaker.cooldown)...)
	case reason == ReasonEPCircuitOpen:
		c.log.Info("ep skipped: circuit open", attrs...)
	default:
		c.log.Warn("ep unavailable", attrs...)
	}
	return decision, reason
}

// call performs one HTTP exchange with EP under the hard deadline.
func (c *EPClient) call(ctx context.Context, body epRequest) (epAnswer, error) {
	payload, err := json.Marshal(body)
	if err != nil {
		return epAnswer{}, epErrorf(ReasonEPUnreachable, "encode request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(payload))
	if err != nil {
		return epAnswer{}, epErrorf(ReasonEPUnreachable, "build request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", "secureexec-gateway")
	resp, err := c.http.Do(hreq)
	if err != nil {
		return epAnswer{}, &epError{Reason: transportReason(err), Err: err}
	}
	defer resp.Body.Close()
	// EP answers 200 and nothing else: a 206 is part of a body, a 203 a body a proxy changed,
	// a 202 no answer yet.
	if resp.StatusCode != http.StatusOK {
		return epAnswer{}, epErrorf(ReasonEPBadStatus, "status %d", resp.StatusCode)
	}
	if resp.ContentLength > c.maxBytes {
		return epAnswer{}, epErrorf(ReasonEPBadResponse, "declared body of %d bytes exceeds the %d-byte cap", resp.ContentLength, c.maxBytes)
	}
	// Read one byte past the cap to tell "exactly at the cap" from "over it", and no more.
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return epAnswer{}, &epError{Reason: transportReason(err), Err: fmt.Errorf("read body: %w", err)}
	}
	if int64(len(raw)) > c.maxBytes {
		return epAnswer{}, epErrorf(ReasonEPBadResponse, "body exceeds the %d-byte cap", c.maxBytes)
	}
	ans, err := decodeEPResponse(raw)
	if err != nil {
		return epAnswer{}, &epError{Reason: ReasonEPBadResponse, Err: err}
	}
	return ans, nil
}

// transportReason classifies a transport error: deadline or not.
func transportReason(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return ReasonEPTimeout
	}
	if errors.Is(err, context.Canceled) {
		return ReasonEPCanceled
	}
	return ReasonEPUnreachable
}
