package ledger

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// MemoryIdempotency is the payment-identifier store of the embedded default: the same
// contract as Idempotency, kept in this process.
type MemoryIdempotency struct {
	mu      sync.Mutex
	entries map[string]*memoryIdem
}

type memoryIdem struct {
	fingerprint string
	done        bool
	resp        Response
	updated     time.Time // last written, for Purge
}

// NewMemoryIdempotency returns an empty store.
func NewMemoryIdempotency() *MemoryIdempotency {
	return &MemoryIdempotency{entries: map[string]*memoryIdem{}}
}

// Begin is Idempotency.Begin.
func (m *MemoryIdempotency) Begin(_ context.Context, key, fingerprint string) (Replay, error) {
	if key == "" || fingerprint == "" {
		return Replay{}, invalid("idempotency key and fingerprint are required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	switch {
	case !ok:
		m.entries[key] = &memoryIdem{fingerprint: fingerprint, updated: time.Now()}
		return Replay{}, nil
	case e.fingerprint != fingerprint:
		return Replay{}, fmt.Errorf("ledger: %s: %w", key, ErrIdempotencyConflict)
	case !e.done:
		return Replay{}, fmt.Errorf("ledger: %s: %w", key, ErrInFlight)
	default:
		r := e.resp
		r.Header = r.Header.Clone()
		return Replay{Found: true, Response: r}, nil
	}
}

// Complete is Idempotency.Complete.
func (m *MemoryIdempotency) Complete(_ context.Context, key string, resp Response) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	if !ok {
		return fmt.Errorf("ledger: %s: %w", key, ErrNotFound)
	}
	e.done, e.resp, e.updated = true, Response{StatusCode: resp.StatusCode, Header: resp.Header.Clone(), Body: append([]byte(nil), resp.Body...)}, time.Now()
	if e.resp.Header == nil {
		e.resp.Header = http.Header{}
	}
	return nil
}

// Abandon is Idempotency.Abandon.
func (m *MemoryIdempotency) Abandon(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok && !e.done {
		delete(m.entries, key)
	}
	return nil
}

// Purge is Idempotency.Purge: it deletes entries last written before before.
func (m *MemoryIdempotency) Purge(_ context.Context, before time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for k, e := range m.entries {
		if e.updated.Before(before) {
			delete(m.entries, k)
			n++
		}
	}
	return n, nil
}
