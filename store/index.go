package store

import (
	"sync"

	"github.com/google/uuid"
)

// pendingIndex remembers the most recent entries that the writer has accepted but the backend
// does not have yet (queued, in a batch in flight, or spooled), so Writer.Get finds a job the
// moment its call returns. It is bounded in entries and in record bytes: past either the
// oldest pending ones are forgotten (they are still written, and Get finds them in the spool
// or the backend).
type pendingIndex struct {
	mu       sync.Mutex
	m        map[uuid.UUID]indexed
	order    []orderSlot // puts, oldest first from head; a slot whose put is gone is skipped
	head     int
	size     int   // the most puts order holds
	bytes    int64 // of the records in m
	maxBytes int64
	seq      uint64
}

type indexed struct {
	e   Entry
	seq uint64
}

type orderSlot struct {
	id  uuid.UUID
	seq uint64
}

func newPendingIndex(size, maxBytes int) *pendingIndex {
	if size <= 0 {
		return nil
	}
	return &pendingIndex{
		m:     make(map[uuid.UUID]indexed, min(size, 4096)),
		order: make([]orderSlot, 0, min(size, 4096)),
		size:  size, maxBytes: int64(maxBytes),
	}
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
	defer x.mu.Unlock()
	x.seq++
	if old, ok := x.m[id]; ok {
		x.bytes -= int64(len(old.e.Record))
	}
	x.m[id] = indexed{e: e, seq: x.seq}
	x.bytes += int64(len(e.Record))
	x.order = append(x.order, orderSlot{id: id, seq: x.seq})
	for x.head < len(x.order) && (len(x.order)-x.head > x.size || x.bytes > x.maxBytes) {
		x.evictOldest()
	}
	if x.head >= 4096 && x.head*2 >= len(x.order) {
		// Reuse the front: what is left is at most half, so each put pays O(1) on average.
		n := copy(x.order, x.order[x.head:])
		clear(x.order[n:])
		x.order, x.head = x.order[:n], 0
	}
}

// evictOldest forgets the oldest put, unless the job was put again or removed since.
func (x *pendingIndex) evictOldest() {
	slot := x.order[x.head]
	x.order[x.head] = orderSlot{}
	x.head++
	if cur, ok := x.m[slot.id]; ok && cur.seq == slot.seq {
		delete(x.m, slot.id)
		x.bytes -= int64(len(cur.e.Record))
	}
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
		if cur, ok := x.m[id]; ok {
			delete(x.m, id)
			x.bytes -= int64(len(cur.e.Record))
		}
	}
	x.mu.Unlock()
}
