package gateway

import (
	"bytes"
	"context"
	"net/http"

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

// maxReplayBody bounds what is kept for a replay; larger responses are not replayable.
const maxReplayBody = 1 << 20

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
			c.body.Reset()
		} else {
			c.body.Write(b)
		}
	}
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
	replay, err := s.idem.Begin(r.Context(), key, fp)
	if err != nil {
		s.writeError(w, r, err)
		return w, noop, true
	}
	if replay.Found {
		for k, vs := range replay.Response.Header {
			if http.CanonicalHeaderKey(k) == http.CanonicalHeaderKey(headerRequestID) {
				continue // this exchange's id, set by the middleware, not the first request's
			}
			w.Header()[k] = append([]string(nil), vs...)
		}
		w.Header().Set("X-Idempotent-Replay", "true")
		w.WriteHeader(replay.Response.StatusCode)
		_, _ = w.Write(replay.Response.Body)
		return w, noop, true
	}
	cw := &captureWriter{ResponseWriter: w}
	return cw, func() {
		ctx := context.WithoutCancel(r.Context())
		// Only a call that was answered is replayed; a refusal frees the identifier so that
		// the client can retry with a corrected payment.
		if cw.status >= 200 && cw.status < 300 && !cw.over {
			if err := s.idem.Complete(ctx, key, ledger.Response{StatusCode: cw.status, Header: cw.Header().Clone(), Body: cw.body.Bytes()}); err != nil {
				s.log.Warn("storing a response for replay", "key", key, "err", err)
			}
			return
		}
		if err := s.idem.Abandon(ctx, key); err != nil {
			s.log.Warn("releasing a payment identifier", "key", key, "err", err)
		}
	}, false
}
