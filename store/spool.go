package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/secureexec/secureexec/internal/segspool"
)

// The spool is the writer's safety net: an internal/segspool directory of JSON-lines segments
// (one Entry per line) holding every entry the backend could not take yet. Segments are
// fsynced per append, sealed before replay, and removed only once every line of them is in the
// backend, so a crash at any point loses nothing and, since writes are idempotent on the job
// id, replays nothing twice.

const (
	segmentPrefix  = "segment-"
	segmentSuffix  = ".jsonl"
	deadLetterFile = "rejected.jsonl"
)

// openSpool opens the writer's spool: segments of Entry lines in dir, rejected.jsonl beside them.
func openSpool(dir string, segmentBytes int64) (*segspool.Spool, error) {
	sp, err := segspool.Open(dir, segspool.Options{
		Prefix: segmentPrefix, Suffix: segmentSuffix, SegmentBytes: segmentBytes, DeadLetterName: deadLetterFile,
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return sp, nil
}

// spoolEncoder turns entries into spool lines. HTML escaping is off so records keep their
// characters; encoding/json still compacts the record, which leaves it equal as JSON.
type spoolEncoder struct {
	buf   bytes.Buffer
	enc   *json.Encoder
	lines int
}

func newSpoolEncoder() *spoolEncoder {
	se := &spoolEncoder{}
	se.enc = json.NewEncoder(&se.buf)
	se.enc.SetEscapeHTML(false)
	return se
}

// add appends one line; on error (a record that is not JSON) nothing is appended.
func (se *spoolEncoder) add(e Entry) error {
	if err := se.enc.Encode(e); err != nil {
		return err
	}
	se.lines++
	return nil
}

func (se *spoolEncoder) reset() {
	se.buf.Reset()
	se.lines = 0
}

// decodeSpoolLine parses one spool line.
func decodeSpoolLine(line []byte) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(line, &e); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// deadLetter is one line of rejected.jsonl. The record is kept as exact bytes (base64), since
// it may not be JSON at all.
type deadLetter struct {
	At          time.Time `json:"at"`
	Reason      string    `json:"reason"`
	Detail      string    `json:"detail,omitempty"`
	Entry       *Entry    `json:"entry,omitempty"`
	RecordBytes []byte    `json:"recordBytes,omitempty"`
	// EntryTimestamp is the entry's timestamp when JSON cannot hold it (a year past 9999);
	// Entry's is zero then.
	EntryTimestamp string `json:"entryTimestamp,omitempty"`
	SpoolLine      []byte `json:"spoolLine,omitempty"`
}
