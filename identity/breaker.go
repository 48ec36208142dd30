package identity

import (
	"sync"
	"time"
)

type breakerState int

const (
	breakerClosed   breakerState = iota // calls flow; consecutive failures are counted
	breakerOpen                         // no calls until openUntil
	breakerHalfOpen                     // one probe call at a time decides: closed again or open again
)

func (s breakerState) String() string {
	switch s {
	case breakerClosed:
		return "closed"
	case breakerOpen:
		return "open"
	default:
		return "half_open"
	}
}

// breaker is a consecutive-failure circuit breaker. It is safe for concurrent use; time comes
// from the caller so that tests can drive it with a fake clock.
type breaker struct {
	threshold int
	cooldown  time.Duration

	mu        sync.Mutex
	state     breakerState
	failures  int
	openUntil time.Time
	probing   bool // a half-open probe is in flight
}

func newBreaker(threshold int, cooldown time.Duration) *breaker {
	return &breaker{threshold: threshold, cooldown: cooldown}
}

// allow reports whether a call may go to EP now, and whether that call is the half-open probe
// (only one is let through at a time). Every allowed call must end in success, failure or
// release.
func (b *breaker) allow(now time.Time) (ok, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case breakerOpen:
		if now.Before(b.openUntil) {
			return false, false
		}
		b.state = breakerHalfOpen
		b.probing = true
		return true, true
	case breakerHalfOpen:
		if b.probing {
			return false, false
		}
		b.probing = true
		return true, true
	default:
		return true, false
	}
}

// success records that EP answered; any answer, approving or denying, proves it is up.
func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state = breakerClosed
	b.failures = 0
	b.probing = false
}

// failure records that EP did not answer usefully and reports whether this opened the breaker.
// probe says the call was the half-open probe: in half-open only the probe decides, and a call
// that started before the trip and failed late changes nothing (reopening then would shut out
// the probe in flight and let a second one through beside it).
func (b *breaker) failure(now time.Time, probe bool) (tripped bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case breakerHalfOpen:
		if !probe {
			return false
		}
		b.state = breakerOpen
		b.openUntil = now.Add(b.cooldown)
		b.probing = false
		return true
	case breakerClosed:
		b.failures++
		if b.failures >= b.threshold {
			b.state = breakerOpen
			b.openUntil = now.Add(b.cooldown)
			b.failures = 0
			return true
		}
	}
	// Open: a call that started before the trip finished late; it changes nothing.
	return false
}

// release ends a call whose result says nothing about EP (the caller went away). If it was
// the probe, the slot is freed for the next caller without changing state.
func (b *breaker) release(probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe && b.state == breakerHalfOpen {
		b.probing = false
	}
}

func (b *breaker) snapshot() (breakerState, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.failures
}
