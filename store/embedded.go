package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Embedded is the Backend of `secureexec serve` without DATABASE_URL: one bbolt file, so the
// audit history survives restarts on a single machine. Like Postgres it is idempotent on the
// job id and refuses what Validate refuses, so the two behave alike.
type Embedded struct {
	db *bolt.DB
}

var _ Backend = (*Embedded)(nil)

var callsBucket = []byte("secureexec_calls")

// OpenEmbedded opens (creating if needed) the database file at path. A second process that
// opens the same file gets an error after one second instead of waiting for the file lock.
func OpenEmbedded(path string) (*Embedded, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: embedded dir: %w", err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: open embedded %s: held by another process (another secureexec on this data directory?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open embedded %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(callsBucket)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: init embedded %s: %w", path, err)
	}
	return &Embedded{db: db}, nil
}

// Close closes the file.
func (b *Embedded) Close() error {
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("store: close embedded: %w", err)
	}
	return nil
}

// WriteBatch stores entries in one transaction (one fsync), keeping the first copy of a job id.
// Entries Validate refuses are left out and reported in a *RejectError.
func (b *Embedded) WriteBatch(ctx context.Context, entries []Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: embedded write: %w", err)
	}
	type kv struct {
		key [16]byte
		val []byte
	}
	rows := make([]kv, 0, len(entries))
	var rejected []Rejection
	now := time.Now()
	for i, e := range entries {
		if err := Validate(e); err != nil {
			rejected = append(rejected, rejection(i, e.JobID, err))
			continue
		}
		if e.Timestamp.IsZero() {
			e.Timestamp = now
		}
		if e.SchemaVersion == "" {
			e.SchemaVersion = DefaultSchemaVersion
		}
		id, _ := uuid.Parse(e.JobID) // Validate parsed it
		e.JobID = id.String()
		val, err := encodeEmbedded(e)
		if err != nil {
			rejected = append(rejected, Rejection{Index: i, JobID: e.JobID, Reason: ReasonInvalidRecordJSON, Detail: err.Error()})
			continue
		}
		if len(val) > bolt.MaxValueSize {
			rejected = append(rejected, Rejection{Index: i, JobID: e.JobID, Reason: ReasonRecordTooLarge})
			continue
		}
		rows = append(rows, kv{key: id, val: val})
	}
	if len(rows) > 0 {
		err := b.db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(callsBucket)
			for _, r := range rows {
				if bk.Get(r.key[:]) != nil {
					continue
				}
				if err := bk.Put(r.key[:], r.val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: embedded write: %w", err)
		}
	}
	if len(rejected) > 0 {
		sort.Slice(rejected, func(i, j int) bool { return rejected[i].Index < rejected[j].Index })
		return &RejectError{Rejected: rejected}
	}
	return nil
}

// Get reads one entry back, the record byte for byte as written.
func (b *Embedded) Get(ctx context.Context, jobID string) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, fmt.Errorf("store: embedded get: %w", err)
	}
	id, err := uuid.Parse(jobID)
	if err != nil {
		return Entry{}, fmt.Errorf("store: get %q: %w", jobID, ErrNotFound)
	}
	var (
		e     Entry
		found bool
	)
	err = b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(callsBucket).Get(id[:])
		if v == nil {
			return nil
		}
		found = true
		var derr error
		e, derr = decodeEmbedded(v)
		return derr
	})
	if err != nil {
		return Entry{}, fmt.Errorf("store: embedded get %q: %w", jobID, err)
	}
	if !found {
		return Entry{}, fmt.Errorf("store: get %q: %w", jobID, ErrNotFound)
	}
	return e, nil
}

// Count is the number of stored entries.
func (b *Embedded) Count() (int, error) {
	n := 0
	err := b.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(callsBucket).Stats().KeyN
		return nil
	})
	return n, err
}

// ForEach calls fn for every stored entry in job id order, stopping at fn's first error.
func (b *Embedded) ForEach(fn func(Entry) error) error {
	return b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(callsBucket).ForEach(func(_, v []byte) error {
			e, err := decodeEmbedded(v)
			if err != nil {
				return err
			}
			return fn(e)
		})
	})
}

// encodeEmbedded lays a value out as uvarint(len(meta)) | meta JSON | record, so the record is
// kept byte for byte (encoding/json would compact it).
func encodeEmbedded(e Entry) ([]byte, error) {
	rec := e.Record
	e.Record = nil
	e.Timestamp = normalizeTime(e.Timestamp)
	meta, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, binary.MaxVarintLen64+len(meta)+len(rec))
	out = binary.AppendUvarint(out, uint64(len(meta)))
	out = append(out, meta...)
	return append(out, rec...), nil
}

var errCorruptValue = errors.New("corrupt_embedded_value")

func decodeEmbedded(v []byte) (Entry, error) {
	n, w := binary.Uvarint(v)
	if w <= 0 || n > uint64(len(v)-w) {
		return Entry{}, errCorruptValue
	}
	var e Entry
	if err := json.Unmarshal(v[w:w+int(n)], &e); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", errCorruptValue, err)
	}
	// v lives only as long as the bbolt transaction: copy the record out.
	e.Record = append(json.RawMessage(nil), v[w+int(n):]...)
	return e, nil
}
