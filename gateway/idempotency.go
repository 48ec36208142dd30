package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// IdempotencyStore keeps the responses of requests whose payment names an identifier;
// *ledger.Idempotency and *ledger.MemoryIdempotency satisfy it.
type IdempotencyStore interface {
	Begin(ctx context.Context, key, fingerprint string) (ledger.Replay, error)
	Complete(ctx context.Context, key string, resp ledger.Response) error
	Abandon(ctx context.Context, key string) error
}

// maxReplayBody bounds what is kept for a replay; a larger response is replaced by
// tooLargeForReplay, of which replayHead bytes of its start are kept (they name the job).
const (
	maxReplayBody = 1 << 20
	replayHead    = 64
)

// idempotencyKey asks the rail whose credential the request carries whether it names the
// request. Only one rail can accept a request, as the payment gate decides.
func (s *Server) idempotencyKey(r *http.Request) (key, fingerprint string, ok bool, err error) {
	for _, rail := range s.pay.rails {
		if !rail.Accepts(r) {
			continue
		}
		if idem, is := rail.(payments.Idempotent); is {
			return idem.IdempotencyKey(r)
		}
		return "", "", false, nil
	}
	return "", "", false, nil
}

// captureWriter passes a response through and keeps a copy for replay.
type captureWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
	size   int // bytes written, kept or not
	over   bool
}

func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if !c.over {
		if c.body.Len()+len(b) > maxReplayBody {
			c.over = true
			if c.body.Len() < replayHead {
				c.body.Write(b[:min(len(b), replayHead-c.body.Len())])
			}
			c.body.Truncate(min(c.body.Len(), replayHead))
		} else {
			c.body.Write(b)
		}
	}
	c.size += len(b)
	return c.ResponseWriter.Write(b)
}

// replayable starts idempotent handling. It returns the writer to use and a function to call
// when the request is done, or handled=true when it answered (a replay or a refusal). A
// credential whose identifier is malformed is refused with the 402 of price, offers included.
func (s *Server) replayable(w http.ResponseWriter, r *http.Request, price payments.Price) (out http.ResponseWriter, done func(), handled bool) {
	noop := func() {}
	if s.idem == nil {
		return w, noop, false
	}
	key, fp, ok, err := s.idempotencyKey(r)
	if err != nil {
		if isPaymentError(err) {
			s.writePaymentRequired(w, r, price, err)
		} else {
			s.writeError(w, r, err)
		}
		return w, noop, true
	}
	if !ok {
		return w, noop, false
	}
	if held, ok := s.held.get(key); ok {
		// The store still has the key in flight, ours: the call is over, its response held.
		if held.fingerprint != fp {
			s.writeError(w, r, fmt.Errorf("payment identifier %q was used with another payload: %w", key, ledger.ErrIdempotencyConflict))
			return w, noop, true
		}
		writeReplay(w, held.resp)
		return w, noop, true
	}
	replay, err := s.idem.Begin(r.Context(), key, fp)
	if err != nil {
		s.writeError(w, r, err)
		return w, noop, true
	}
	if replay.Found {
		writeReplay(w, replay.Response)
		return w, noop, true
	}
	cw := &captureWriter{ResponseWriter: w}
	return cw, func() {
		ctx := context.WithoutCancel(r.Context())
		// Only a call that was answered is replayed; a refusal frees the identifier so that
		// the client can retry with a corrected payment.
		if cw.status >= 200 && cw.status < 300 {
			resp := ledger.Response{StatusCode: cw.status, Header: cw.Header().Clone(), Body: cw.body.Bytes()}
			if cw.over {
				resp = tooLargeForReplay(cw)
			}
			err := s.idem.Complete(ctx, key, resp)
			if err == nil {
				return
			}
			// The call has run and may be charged: its identifier must never be processed
			// again, so the response is held and stored once the store is back.
			if errors.Is(err, payments.ErrUnavailable) && s.held.hold(key, fp, resp) {
				s.log.Warn("storing a response for replay; holding it to store again", "key", key, "err", err)
				s.held.retry(s.log, key, true, func(ctx context.Context) error { return s.idem.Complete(ctx, key, resp) })
				return
			}
			s.log.Warn("storing a response for replay", "key", key, "err", err)
			return
		}
		if err := s.idem.Abandon(ctx, key); err != nil {
			s.log.Warn("releasing a payment identifier", "key", key, "err", err)
			if errors.Is(err, payments.ErrUnavailable) {
				// Released once the store is back, not refused as in flight until InFlightTTL.
				s.held.retry(s.log, key, false, func(ctx context.Context) error { return s.idem.Abandon(ctx, key) })
			}
		}
	}, false
}

// writeReplay answers with a stored response.
func writeReplay(w http.ResponseWriter, resp ledger.Response) {
	for k, vs := range resp.Header {
		if http.CanonicalHeaderKey(k) == http.CanonicalHeaderKey(headerRequestID) {
			continue // this exchange's id, set by the middleware, not the first request's
		}
		w.Header()[k] = append([]string(nil), vs...)
	}
	w.Header().Set("X-Idempotent-Replay", "true")
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(resp.Body)
}

// tooLargeForReplay is what is stored, instead of itself, for a call answered with more than
// maxReplayBody: a 409 saying that the call was answered, naming its job and proof, with the
// answer's headers (the settlement's among them). Freeing the identifier instead would have
// a resend processed again: refused as a used payment (402), which invites paying twice.
func tooLargeForReplay(cw *captureWriter) ledger.Response {
	jobID := answeredJobID(cw.body.Bytes())
	detail := fmt.Sprintf("the call paid with this payment was answered with %d bytes, too many to replay; it is not run or charged again", cw.size)
	if jobID != "" {
		detail += "; its record is at /exec/jobs/" + jobID
	}
	const code = "payment_identifier_response_too_large"
	body, _ := json.Marshal(problem{
		Type: "urn:secureexec:problem:" + code, Title: http.StatusText(http.StatusConflict), Status: http.StatusConflict,
		Code: code, Detail: detail, Error: detail, JobID: jobID, ProofHash: cw.Header().Get(headerProofHash),
	})
	h := cw.Header().Clone()
	h.Set("Content-Type", "application/problem+json")
	return ledger.Response{StatusCode: http.StatusConflict, Header: h, Body: body}
}

// answeredJobID reads the job id at the start of an execResponse, or returns "".
func answeredJobID(head []byte) string {
	rest, ok := bytes.CutPrefix(head, []byte(`{"jobId":"`))
	if !ok {
		return ""
	}
	id, _, ok := bytes.Cut(rest, []byte(`"`))
	if _, err := uuid.Parse(string(id)); !ok || err != nil {
		return ""
	}
	return string(id)
}
