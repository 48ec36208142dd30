package store

import (
	"sync"

	"github.com/google/uuid"
)

// pendingIndex remembers the most recent entries that the writer has accepted but the backend
// does not have yet (queued, in a batch in flight, or spooled), so Writer.Get finds a job the
// moment its call returns. It is bounded: past size entries the oldest pending ones are
// forgotten (they are still written, only not readable until they are).
type pendingIndex struct {
	mu   sync.Mutex
	m    map[uuid.UUID]indexed
	ring []ringSlot
	next int
	seq  uint64
}

type indexed struct {
	e   Entry
	seq uint64
}

type ringSlot struct {
	id  uuid.UUID
	seq uint64 // 0: empty
}

func newPendingIndex(size int) *pendingIndex {
	if size <= 0 {
		return nil
	}
	return &pendingIndex{m: make(map[uuid.UUID]indexed, min(size, 4096)), ring: make([]ringSlot, size)}
}

func (x *pendingIndex) put(e Entry) {
	if x == nil {
		return
	}
	id, err := uuid.Parse(e.JobID)
	if err != nil {
		return // never storable; the backend will reject it
	}
	x.mu.Lock()
	x.seq++
	slot := &x.ring[x.next]
	// Evict the slot's previous occupant only if it is still that same put (a job id written
	// and submitted again since must stay).
	if slot.seq != 0 {
		if cur, ok := x.m[slot.id]; ok && cur.seq == slot.seq {
			delete(x.m, slot.id)
		}
	}
	*slot = ringSlot{id: id, seq: x.seq}
	x.next++
	if x.next == len(x.ring) {
		x.next = 0
	}
	x.m[id] = indexed{e: e, seq: x.seq}
	x.mu.Unlock()
}

func (x *pendingIndex) get(jobID string) (Entry, bool) {
	if x == nil {
		return Entry{}, false
	}
	id, err := uuid.Parse(jobID)
	if err != nil {
		return Entry{}, false
	}
	x.mu.Lock()
	v, ok := x.m[id]
	x.mu.Unlock()
	return v.e, ok
}

// remove forgets entries that are now in the backend or the dead-letter file.
func (x *pendingIndex) remove(entries []Entry) {
	if x == nil || len(entries) == 0 {
		return
	}
	ids := make([]uuid.UUID, 0, len(entries))
	for _, e := range entries {
		if id, err := uuid.Parse(e.JobID); err == nil {
			ids = append(ids, id)
		}
	}
	x.mu.Lock()
	for _, id := range ids {
		delete(x.m, id)
	}
	x.mu.Unlock()
}
