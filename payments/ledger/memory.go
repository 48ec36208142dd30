package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Memory is an in-process ledger for the embedded default, where the chain itself is the
// in-memory dev chain: both live and die with the process, so keeping payments in memory
// loses nothing the chain would remember. It enforces the same state machine and the same
// once-only nonce claims as the Postgres ledger, but only within one process: never use it
// with a real network or more than one replica.
type Memory struct {
	mu       sync.Mutex
	payments map[uuid.UUID]Payment
	nonces   map[string]time.Time
	batches  map[uuid.UUID]Batch
	running  map[string]bool
	locks    map[string]*sync.Mutex
	marks    map[string]Mark // by event id (marks.go)
	flags    map[string]Flag // by event id (marks.go)
}

// NewMemory returns an empty in-process ledger.
func NewMemory() *Memory {
	return &Memory{payments: map[uuid.UUID]Payment{}, nonces: map[string]time.Time{}, batches: map[uuid.UUID]Batch{}, running: map[string]bool{}, locks: map[string]*sync.Mutex{}}
}

// Claim marks key as used until expiresAt; a second claim is ErrNonceUsed.
func (m *Memory) Claim(_ context.Context, key string, expiresAt time.Time) error {
	if key == "" {
		return invalid("claim key is required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, used := m.nonces[key]; used {
		return fmt.Errorf("ledger: %s: %w", key, ErrNonceUsed)
	}
	m.nonces[key] = expiresAt
	return nil
}

// Create records a new payment (Ledger.Create); creating the same payment again is a no-op.
func (m *Memory) Create(_ context.Context, p Payment) error {
	p, err := prepareNew(p, time.Now())
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.payments[p.ID]; ok {
		if !sameIdentity(old, p) {
			return fmt.Errorf("ledger: payment %s exists with other terms: %w", p.ID, ErrConflict)
		}
		return nil
	}
	for _, other := range m.payments {
		if other.NonceKey == p.NonceKey {
			return fmt.Errorf("ledger: nonce key of payment %s: %w", p.ID, ErrNonceUsed)
		}
	}
	m.payments[p.ID] = p
	return nil
}

// Get returns a payment.
func (m *Memory) Get(_ context.Context, id uuid.UUID) (Payment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.payments[id]
	if !ok {
		return Payment{}, fmt.Errorf("ledger: payment %s: %w", id, ErrNotFound)
	}
	return p, nil
}

// Transition moves a payment from one of from to to, as the Postgres ledger does.
func (m *Memory) Transition(_ context.Context, id uuid.UUID, from []Status, to Status, patch Patch) (Payment, error) {
	if err := checkTransition(from, to, patch); err != nil {
		return Payment{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.payments[id]
	if !ok {
		return Payment{}, fmt.Errorf("ledger: payment %s: %w", id, ErrNotFound)
	}
	return m.move(p, from, to, patch)
}

// move applies a checked transition; m.mu is held.
func (m *Memory) move(p Payment, from []Status, to Status, patch Patch) (Payment, error) {
	if !slices.Contains(from, p.Status) {
		return Payment{}, fmt.Errorf("ledger: payment %s is %s: %w", p.ID, p.Status, ErrConflict)
	}
	if (patch.TxHash != "" && p.TxHash != "" && patch.TxHash != p.TxHash) || (len(patch.RawTx) > 0 && len(p.RawTx) > 0 && string(patch.RawTx) != string(p.RawTx)) {
		return Payment{}, fmt.Errorf("ledger: payment %s already has a transaction: %w", p.ID, ErrConflict)
	}
	now := time.Now().UTC()
	p.Status, p.UpdatedAt = to, now
	if patch.JobID != uuid.Nil {
		p.JobID = patch.JobID
	}
	if patch.TxHash != "" {
		p.TxHash = patch.TxHash
	}
	if len(patch.RawTx) > 0 {
		p.RawTx = append([]byte(nil), patch.RawTx...)
	}
	if patch.BatchID != uuid.Nil {
		p.BatchID = patch.BatchID
	}
	if patch.ErrorReason != "" {
		p.ErrorReason = patch.ErrorReason
	}
	if patch.Attempt {
		p.Attempts++
	}
	if to == StatusSettled {
		p.SettledAt = now
	}
	m.payments[p.ID] = p
	return p, nil
}

// ReplaceTx is Ledger.ReplaceTx in memory.
func (m *Memory) ReplaceTx(_ context.Context, id uuid.UUID, deadHash string, raw []byte, hash string) (Payment, error) {
	if err := checkReplacement(deadHash, raw, hash); err != nil {
		return Payment{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.payments[id]
	if !ok {
		return Payment{}, fmt.Errorf("ledger: payment %s: %w", id, ErrNotFound)
	}
	if (p.Status != StatusSubmitted && p.Status != StatusPending) || p.TxHash != deadHash || p.RawTx == nil || p.BatchID != uuid.Nil {
		return Payment{}, fmt.Errorf("ledger: payment %s is not a submitted or pending payment with its own transaction %s: %w", id, deadHash, ErrConflict)
	}
	p = p.clone()
	p.RawTx, p.TxHash = slices.Clone(raw), hash
	p.Attempts++
	p.UpdatedAt = normalizeTime(time.Now())
	m.payments[id] = p
	return p.clone(), nil
}

// TransitionReplacing is Ledger.TransitionReplacing in memory.
func (m *Memory) TransitionReplacing(_ context.Context, id uuid.UUID, from []Status, to Status, replaced string, patch Patch) (Payment, error) {
	if err := checkReplacing(from, to, replaced, patch); err != nil {
		return Payment{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.payments[id]
	switch {
	case !ok:
		return Payment{}, fmt.Errorf("ledger: payment %s: %w", id, ErrNotFound)
	case !slices.Contains(from, p.Status):
		return Payment{}, fmt.Errorf("ledger: payment %s is %s, not %v: %w", id, p.Status, from, ErrConflict)
	case p.TxHash != replaced:
		return Payment{}, txConflict(id)
	}
	p = p.clone()
	p.TxHash = ""
	return m.move(p, from, to, patch)
}

// ClaimQueued moves up to limit queued payments of scope to submitted under batchID.
func (m *Memory) ClaimQueued(_ context.Context, limit int, batchID uuid.UUID, scope Scope) ([]Payment, error) {
	return m.claimQueued(limit, StatusSubmitted, Patch{BatchID: batchID}, scope)
}

// ClaimQueuedSettling moves up to limit queued payments of scope to settling.
func (m *Memory) ClaimQueuedSettling(_ context.Context, limit int, scope Scope) ([]Payment, error) {
	return m.claimQueued(limit, StatusSettling, Patch{}, scope)
}

func (m *Memory) claimQueued(limit int, to Status, patch Patch, scope Scope) ([]Payment, error) {
	if err := checkTransition([]Status{StatusQueued}, to, patch); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Payment
	for _, p := range m.sorted() {
		if len(out) == limit {
			break
		}
		if p.Status != StatusQueued || (scope.Rail != "" && p.Rail != scope.Rail) || (scope.Network != "" && p.Network != scope.Network) || (scope.Asset != "" && p.Asset != scope.Asset) {
			continue
		}
		moved, err := m.move(p, []Status{StatusQueued}, to, patch)
		if err != nil {
			return nil, err
		}
		out = append(out, moved)
	}
	return out, nil
}

// ListRecoverable returns verified, submitted, settling and pending payments untouched for
// olderThan, least recently touched first (as Ledger.ListRecoverable).
func (m *Memory) ListRecoverable(ctx context.Context, olderThan time.Duration, limit int) ([]Payment, error) {
	return m.ListStale(ctx, Staleness{Working: olderThan, OnChain: olderThan}, limit)
}

// ListStale is Ledger.ListStale in memory.
func (m *Memory) ListStale(_ context.Context, age Staleness, limit int) ([]Payment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	var out []Payment
	all := m.sorted()
	sort.Slice(all, func(i, j int) bool {
		if !all[i].UpdatedAt.Equal(all[j].UpdatedAt) {
			return all[i].UpdatedAt.Before(all[j].UpdatedAt)
		}
		return all[i].ID.String() < all[j].ID.String()
	})
	for _, p := range all {
		if len(out) == limit {
			break
		}
		if age.isStale(p, now) && (age.Rail == "" || p.Rail == age.Rail) {
			out = append(out, p)
		}
	}
	return out, nil
}

// inStatus returns payment id, which must be in status; m.mu is held.
func (m *Memory) inStatus(id uuid.UUID, status Status) (Payment, error) {
	p, ok := m.payments[id]
	switch {
	case !ok:
		return Payment{}, fmt.Errorf("ledger: payment %s: %w", id, ErrNotFound)
	case p.Status != status:
		return Payment{}, fmt.Errorf("ledger: payment %s is %s: %w", id, p.Status, ErrConflict)
	}
	return p, nil
}

// RecordAttempt is Ledger.RecordAttempt in memory.
func (m *Memory) RecordAttempt(_ context.Context, id uuid.UUID, status Status) (Payment, error) {
	if !status.Valid() || status.Terminal() {
		return Payment{}, invalid("attempts are recorded on a payment in progress, not %q", status)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := m.inStatus(id, status)
	if err != nil {
		return Payment{}, err
	}
	p.Attempts++
	p.UpdatedAt = time.Now().UTC()
	m.payments[id] = p
	return p, nil
}

// RecordReference is Ledger.RecordReference in memory.
func (m *Memory) RecordReference(_ context.Context, id uuid.UUID, status Status, ref string, payload json.RawMessage) (Payment, error) {
	if err := checkReference(status, ref, payload); err != nil {
		return Payment{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := m.inStatus(id, status)
	if err != nil {
		return Payment{}, err
	}
	if p.TxHash != "" && p.TxHash != ref {
		return Payment{}, txConflict(id)
	}
	p.TxHash = ref
	if payload != nil {
		p.Payload = slices.Clone(payload)
	}
	p.UpdatedAt = time.Now().UTC()
	m.payments[id] = p
	return p.clone(), nil
}

// MoveBatch is Ledger.MoveBatch in memory.
func (m *Memory) MoveBatch(_ context.Context, from, to uuid.UUID) ([]Payment, error) {
	if from == uuid.Nil || to == uuid.Nil || from == to {
		return nil, invalid("moving a batch needs two different batch ids")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Payment
	for _, p := range m.sorted() {
		if p.BatchID != from || (p.Status != StatusSubmitted && p.Status != StatusPending) || p.RawTx != nil {
			continue
		}
		p = p.clone()
		p.BatchID, p.TxHash = to, "" // from's transaction settled none of them
		p.Attempts++
		p.UpdatedAt = normalizeTime(time.Now())
		m.payments[p.ID] = p
		out = append(out, p.clone())
	}
	return out, nil
}

// TransitionBatch moves every member of a batch that is in from to to.
func (m *Memory) TransitionBatch(_ context.Context, batchID uuid.UUID, from []Status, to Status, patch Patch) ([]Payment, error) {
	if err := checkTransition(from, to, patch); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Payment
	for _, p := range m.sorted() {
		if p.BatchID != batchID || !slices.Contains(from, p.Status) || (patch.TxHash != "" && p.TxHash != "" && p.TxHash != patch.TxHash) {
			continue // as in Postgres: a member with another transaction recorded is not moved
		}
		moved, err := m.move(p, from, to, patch)
		if err != nil {
			return nil, err
		}
		out = append(out, moved)
	}
	return out, nil
}

// RecordBatchTx records a batch's signed transaction once.
func (m *Memory) RecordBatchTx(_ context.Context, batchID uuid.UUID, rawTx []byte, txHash string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.batches[batchID]; ok {
		if string(b.RawTx) != string(rawTx) {
			return fmt.Errorf("ledger: batch %s already has a transaction: %w", batchID, ErrConflict)
		}
		return nil
	}
	m.batches[batchID] = Batch{ID: batchID, RawTx: append([]byte(nil), rawTx...), TxHash: txHash, CreatedAt: time.Now().UTC()}
	return nil
}

// GetBatch returns a batch's recorded transaction.
func (m *Memory) GetBatch(_ context.Context, batchID uuid.UUID) (Batch, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.batches[batchID]
	if !ok {
		return Batch{}, fmt.Errorf("ledger: batch %s: %w", batchID, ErrNotFound)
	}
	return b, nil
}

// RunExclusive runs fn unless a job of that name is already running in this process.
func (m *Memory) RunExclusive(ctx context.Context, name string, fn func(context.Context) error) (bool, error) {
	m.mu.Lock()
	if m.running[name] {
		m.mu.Unlock()
		return false, nil
	}
	m.running[name] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.running, name)
		m.mu.Unlock()
	}()
	return true, fn(ctx)
}

// Lock serialises a critical section within this process (there is no other replica).
func (m *Memory) Lock(ctx context.Context, name string) (func(), error) {
	m.mu.Lock()
	l, ok := m.locks[name]
	if !ok {
		l = &sync.Mutex{}
		m.locks[name] = l
	}
	m.mu.Unlock()
	got := make(chan struct{})
	go func() { l.Lock(); close(got) }()
	select {
	case <-got:
		return l.Unlock, nil
	case <-ctx.Done():
		go func() { <-got; l.Unlock() }() // release it once the late acquisition lands
		return nil, ctx.Err()
	}
}

// sorted lists payments oldest first; m.mu is held.
func (m *Memory) sorted() []Payment {
	out := make([]Payment, 0, len(m.payments))
	for _, p := range m.payments {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID.String() < out[j].ID.String()
	})
	return out
}
