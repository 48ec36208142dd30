package ledger

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// The spool keeps, on local disk, the operations this replica could not write to Postgres:
// a directory of append-only JSON-lines segments, one operation per line, each append fsynced
// before the call that made it returns. The replayer applies segments oldest first, line by
// line, so the operations on one payment reach Postgres in the order they were made, and
// deletes a segment only once every line of it is applied. Each line carries an op id that
// the replaying transaction records in payment_spool_log, so a segment replayed twice (a
// crash between the commit and the delete) applies nothing twice.

const (
	segPrefix      = "ledger-"
	segSuffix      = ".jsonl"
	deadLetterName = "ledger-unreadable.jsonl"
	spoolVersion   = 1
)

// Operation kinds.
const (
	opNonce      = "nonce"
	opCreate     = "create"
	opTransition = "transition"
)

// spoolOp is one line of the spool.
type spoolOp struct {
	V          int           `json:"v"`
	OpID       uuid.UUID     `json:"opId"`
	Kind       string        `json:"kind"`
	At         time.Time     `json:"at"`
	Nonce      *nonceRow     `json:"nonce,omitempty"`
	Payment    *paymentLine  `json:"payment,omitempty"`
	Transition *transitionOp `json:"transition,omitempty"`
}

// subject is what the operation is about: a nonce key or a payment id.
func (op *spoolOp) subject() string {
	switch {
	case op.Nonce != nil:
		return op.Nonce.Key
	case op.Payment != nil:
		return op.Payment.ID.String()
	case op.Transition != nil:
		return op.Transition.ID.String()
	}
	return ""
}

// paymentID is the payment the operation touches, or uuid.Nil.
func (op *spoolOp) paymentID() uuid.UUID {
	switch {
	case op.Payment != nil:
		return op.Payment.ID
	case op.Transition != nil:
		return op.Transition.ID
	}
	return uuid.Nil
}

// valid checks a decoded line: a line that decodes into something else is set aside, never
// half-applied.
func (op *spoolOp) valid() error {
	if op.V != spoolVersion || op.OpID == uuid.Nil || op.At.IsZero() {
		return errors.New("missing version, op id or time")
	}
	switch {
	case op.Kind == opNonce && op.Nonce != nil && op.Payment == nil && op.Transition == nil:
		if op.Nonce.Key == "" || op.Nonce.ClaimID == uuid.Nil {
			return errors.New("nonce without key or claim id")
		}
	case op.Kind == opCreate && op.Payment != nil && op.Nonce == nil && op.Transition == nil:
		if _, err := op.Payment.payment(); err != nil {
			return err
		}
	case op.Kind == opTransition && op.Transition != nil && op.Nonce == nil && op.Payment == nil:
		if op.Transition.ID == uuid.Nil {
			return errors.New("transition without payment id")
		}
		if err := checkTransition(op.Transition.From, op.Transition.To, op.Transition.Patch.patch()); err != nil {
			return err
		}
	default:
		return fmt.Errorf("kind %q does not match its body", op.Kind)
	}
	return nil
}

// nonceRow is one row of payment_nonces.
type nonceRow struct {
	Key       string    `json:"key"`
	ClaimID   uuid.UUID `json:"claimId"`
	ClaimedAt time.Time `json:"claimedAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// paymentLine is a new payment as the spool writes it: the amount as a decimal string, so no
// JSON reader can round it.
type paymentLine struct {
	ID        uuid.UUID       `json:"id"`
	Rail      string          `json:"rail"`
	Network   string          `json:"network,omitempty"`
	Asset     string          `json:"asset,omitempty"`
	Payer     string          `json:"payer,omitempty"`
	PayTo     string          `json:"payTo,omitempty"`
	Amount    string          `json:"amount"`
	NonceKey  string          `json:"nonceKey"`
	JobID     uuid.UUID       `json:"jobId"`
	Payload   json.RawMessage `json:"payload"`
	CreatedAt time.Time       `json:"createdAt"`
}

func newPaymentLine(p Payment) *paymentLine {
	return &paymentLine{ID: p.ID, Rail: p.Rail, Network: p.Network, Asset: p.Asset, Payer: p.Payer, PayTo: p.PayTo,
		Amount: p.Amount.String(), NonceKey: p.NonceKey, JobID: p.JobID, Payload: p.Payload, CreatedAt: p.CreatedAt}
}

func (l *paymentLine) payment() (Payment, error) {
	a, ok := new(big.Int).SetString(l.Amount, 10)
	if !ok {
		return Payment{}, invalid("spooled amount %q is not an integer", l.Amount)
	}
	p := Payment{ID: l.ID, Rail: l.Rail, Network: l.Network, Asset: l.Asset, Payer: l.Payer, PayTo: l.PayTo,
		Amount: a, NonceKey: l.NonceKey, JobID: l.JobID, Payload: l.Payload, CreatedAt: l.CreatedAt}
	return prepareNew(p, l.CreatedAt)
}

// transitionOp is one move as the spool writes it.
type transitionOp struct {
	ID    uuid.UUID `json:"id"`
	From  []Status  `json:"from"`
	To    Status    `json:"to"`
	Patch patchLine `json:"patch"`
}

type patchLine struct {
	JobID       uuid.UUID `json:"jobId"`
	TxHash      string    `json:"txHash,omitempty"`
	RawTx       []byte    `json:"rawTx,omitempty"`
	BatchID     uuid.UUID `json:"batchId"`
	ErrorReason string    `json:"errorReason,omitempty"`
	Attempt     bool      `json:"attempt,omitempty"`
}

func newPatchLine(p Patch) patchLine {
	return patchLine{JobID: p.JobID, TxHash: p.TxHash, RawTx: p.RawTx, BatchID: p.BatchID, ErrorReason: p.ErrorReason, Attempt: p.Attempt}
}

func (p patchLine) patch() Patch {
	return Patch{JobID: p.JobID, TxHash: p.TxHash, RawTx: p.RawTx, BatchID: p.BatchID, ErrorReason: p.ErrorReason, Attempt: p.Attempt}
}

// segment is one spool file; offset is how far the replayer got, touched only by it.
type segment struct {
	seq    uint64
	path   string
	size   int64
	lines  int64
	offset int64
}

// spool is the directory of segments. Appends go to the active segment; the replayer reads
// sealed ones, sealing the active one when nothing older is left.
type spool struct {
	dir          string
	segmentBytes int64
	maxBytes     int64

	mu      sync.Mutex
	active  *os.File
	current *segment
	sealed  []*segment // oldest first
	nextSeq uint64
	closed  bool

	lines atomic.Int64 // appended and not yet replayed
	bytes atomic.Int64 // on disk

	deadMu sync.Mutex
}

// errSpoolFull is returned by append when the spool holds maxBytes already: the caller fails
// closed instead of filling the disk.
var errSpoolFull = errors.New("ledger_spool_full")

func openSpool(dir string, segmentBytes, maxBytes int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ledger: spool dir: %w", err)
	}
	paths, err := filepath.Glob(filepath.Join(dir, segPrefix+"*"+segSuffix))
	if err != nil {
		return nil, fmt.Errorf("ledger: spool list: %w", err)
	}
	s := &spool{dir: dir, segmentBytes: segmentBytes, maxBytes: maxBytes, nextSeq: 1}
	for _, path := range paths {
		var seq uint64
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), segPrefix), segSuffix)
		if _, err := fmt.Sscanf(name, "%d", &seq); err != nil || fmt.Sprintf("%020d", seq) != name {
			continue // not a segment of ours
		}
		size, lines, err := countLines(path)
		if err != nil {
			return nil, fmt.Errorf("ledger: spool read %s: %w", path, err)
		}
		s.sealed = append(s.sealed, &segment{seq: seq, path: path, size: size, lines: lines})
		s.lines.Add(lines)
		s.bytes.Add(size)
		s.nextSeq = max(s.nextSeq, seq+1)
	}
	sort.Slice(s.sealed, func(i, j int) bool { return s.sealed[i].seq < s.sealed[j].seq })
	return s, nil
}

// countLines counts a segment's lines, an unterminated last one (a torn append) included.
func countLines(path string) (size, lines int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		b, err := r.ReadBytes('\n')
		size += int64(len(b))
		if len(b) > 0 {
			lines++
		}
		if errors.Is(err, io.EOF) {
			return size, lines, nil
		}
		if err != nil {
			return 0, 0, err
		}
	}
}

// append writes one line (without its newline) and fsyncs it: a nil error means the operation
// survives a crash.
func (s *spool) append(line []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bytes.Load()+int64(len(line))+1 > s.maxBytes {
		return errSpoolFull
	}
	if s.active == nil {
		if err := s.startSegment(); err != nil {
			return err
		}
	}
	buf := make([]byte, 0, len(line)+1)
	buf = append(append(buf, line...), '\n')
	if _, err := s.active.Write(buf); err != nil {
		// Cut the partial line off so the next append does not glue onto it.
		_ = s.active.Truncate(s.current.size)
		return fmt.Errorf("ledger: spool write: %w", err)
	}
	s.current.size += int64(len(buf))
	s.current.lines++
	s.lines.Add(1)
	s.bytes.Add(int64(len(buf)))
	if err := s.active.Sync(); err != nil {
		// The bytes may be on disk: they stay accounted for, and replaying them is harmless.
		return fmt.Errorf("ledger: spool fsync: %w", err)
	}
	if s.closed || s.current.size >= s.segmentBytes {
		return s.sealLocked()
	}
	return nil
}

func (s *spool) startSegment() error {
	seg := &segment{seq: s.nextSeq}
	seg.path = filepath.Join(s.dir, fmt.Sprintf("%s%020d%s", segPrefix, seg.seq, segSuffix))
	f, err := os.OpenFile(seg.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("ledger: spool segment: %w", err)
	}
	// The file's name must survive a crash as well as its contents.
	if err := syncDir(s.dir); err != nil {
		_ = f.Close()
		_ = os.Remove(seg.path)
		return err
	}
	s.nextSeq++
	s.active, s.current = f, seg
	return nil
}

func (s *spool) sealLocked() error {
	if s.active == nil {
		return nil
	}
	err := s.active.Close()
	s.sealed = append(s.sealed, s.current)
	s.active, s.current = nil, nil
	if err != nil {
		return fmt.Errorf("ledger: spool close segment: %w", err)
	}
	return nil
}

// next returns the oldest sealed segment, sealing the active one when nothing older is left,
// or nil when the spool is empty.
func (s *spool) next() (*segment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sealed) == 0 && s.current != nil && s.current.size > 0 {
		if err := s.sealLocked(); err != nil {
			return nil, err
		}
	}
	if len(s.sealed) == 0 {
		return nil, nil
	}
	return s.sealed[0], nil
}

// segments returns the sealed segments, oldest first (for rebuilding the overlay at open).
func (s *spool) segments() []*segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sealed)
}

// remove deletes a segment whose every line is applied.
func (s *spool) remove(seg *segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sealed) == 0 || s.sealed[0] != seg {
		return fmt.Errorf("ledger: spool remove %s: not the oldest segment", seg.path)
	}
	if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ledger: spool remove: %w", err)
	}
	s.sealed = s.sealed[1:]
	s.bytes.Add(-seg.size)
	return syncDir(s.dir)
}

// close seals the active segment. Appends still work after it, each sealing at once, so an
// operation made during shutdown is kept for the next process rather than lost.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.sealLocked()
}

// deadLetter keeps a line that cannot be decoded, for an operator; it is never replayed.
func (s *spool) deadLetter(line []byte, reason string) error {
	rec, err := json.Marshal(struct {
		At     time.Time `json:"at"`
		Reason string    `json:"reason"`
		Line   []byte    `json:"line"`
	}{time.Now().UTC(), reason, line})
	if err != nil {
		return err
	}
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	f, err := os.OpenFile(filepath.Join(s.dir, deadLetterName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("ledger: dead-letter open: %w", err)
	}
	_, werr := f.Write(append(rec, '\n'))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("ledger: dead-letter write: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("ledger: spool dir sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("ledger: spool dir sync: %w", err)
	}
	return nil
}

// segmentReader reads a sealed segment's lines from an offset.
type segmentReader struct {
	f   *os.File
	r   *bufio.Reader
	off int64
}

// maxLineBytes bounds one spool line: a payment with the largest payload and transaction,
// base64-encoded, with room to spare. A longer line is not ours and is set aside.
const maxLineBytes = 4 * (MaxPayloadBytes + MaxRawTxBytes)

func openSegment(seg *segment) (*segmentReader, error) {
	f, err := os.Open(seg.path)
	if err != nil {
		return nil, fmt.Errorf("ledger: spool open: %w", err)
	}
	if _, err := f.Seek(seg.offset, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("ledger: spool seek: %w", err)
	}
	return &segmentReader{f: f, r: bufio.NewReaderSize(f, 64<<10), off: seg.offset}, nil
}

// next returns the next line without its newline; torn is true for an unterminated last line
// (a crash mid-append) or one longer than maxLineBytes. io.EOF ends the segment.
func (sr *segmentReader) next() (line []byte, torn bool, err error) {
	for {
		chunk, err := sr.r.ReadSlice('\n')
		sr.off += int64(len(chunk))
		if len(line)+len(chunk) <= maxLineBytes {
			line = append(line, chunk...)
		} else {
			torn = true
		}
		switch {
		case err == nil && torn:
			return line, true, nil
		case err == nil:
			return line[:len(line)-1], false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(line) == 0 && !torn {
				return nil, false, io.EOF
			}
			return line, true, nil
		default:
			return nil, false, fmt.Errorf("ledger: spool read: %w", err)
		}
	}
}

func (sr *segmentReader) close() { _ = sr.f.Close() }
