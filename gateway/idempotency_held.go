package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// Holding responses the store could not take when their call ended (Postgres away for a
// moment): at most maxHeldBytes of them, written again from heldRetryFirst, doubling up to
// heldRetryMax, for heldRetryFor (the store's default InFlightTTL, after which another replica
// may take the key over). A response not held leaves its identifier in flight until then.
const (
	maxHeldBytes   = 64 << 20
	heldRetryFirst = 200 * time.Millisecond
	heldRetryMax   = 5 * time.Second
	heldRetryFor   = 10 * time.Minute
)

// heldResponse is a response waiting for the store, and the payload it answered.
type heldResponse struct {
	fingerprint string
	resp        ledger.Response
}

// heldResponses keeps the responses whose Complete failed, so that a resend to this replica
// is answered at once and the store gets them as soon as it is back, instead of the identifier
// being refused as in flight until InFlightTTL and then processed again. Its zero value is
// ready; the goroutines that write again are its own, stopped and waited for by close.
type heldResponses struct {
	mu      sync.Mutex
	entries map[string]heldResponse
	bytes   int
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// hold keeps resp for key, and reports false when that would pass maxHeldBytes or the holder
// is closed.
func (h *heldResponses) hold(key, fingerprint string, resp ledger.Response) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.init()
	size := heldSize(resp)
	if h.ctx.Err() != nil || h.bytes+size > maxHeldBytes {
		return false
	}
	if h.entries == nil {
		h.entries = map[string]heldResponse{}
	}
	if old, ok := h.entries[key]; ok {
		h.bytes -= heldSize(old.resp)
	}
	h.entries[key] = heldResponse{fingerprint: fingerprint, resp: resp}
	h.bytes += size
	return true
}

func heldSize(resp ledger.Response) int {
	n := len(resp.Body)
	for k, vs := range resp.Header {
		n += len(k)
		for _, v := range vs {
			n += len(v)
		}
	}
	return n
}

func (h *heldResponses) get(key string) (heldResponse, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.entries[key]
	return e, ok
}

func (h *heldResponses) drop(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(key)
}

func (h *heldResponses) dropLocked(key string) {
	if e, ok := h.entries[key]; ok {
		h.bytes -= heldSize(e.resp)
		delete(h.entries, key)
	}
}

func (h *heldResponses) init() {
	if h.ctx == nil {
		h.ctx, h.cancel = context.WithCancel(context.Background())
	}
}

// retry calls write (the Complete of a held response, or an Abandon) until it succeeds, fails
// for good (anything but the store being away: the entry completed or gone already),
// heldRetryFor passes or the holder is closed; then, with held, key is no longer held.
func (h *heldResponses) retry(log *slog.Logger, key string, held bool, write func(context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.init()
	if h.ctx.Err() != nil {
		if held {
			h.dropLocked(key)
		}
		return
	}
	ctx := h.ctx
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if held {
			defer h.drop(key)
		}
		deadline := time.Now().Add(heldRetryFor)
		wait := heldRetryFirst
		for {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				log.Warn("stopped storing a held response; its payment identifier stays in flight", "key", key)
				return
			case <-t.C:
			}
			err := write(ctx)
			switch {
			case err == nil:
				return
			case !errors.Is(err, payments.ErrUnavailable):
				log.Warn("storing a held response", "key", key, "err", err)
				return
			case time.Now().After(deadline):
				log.Warn("gave up storing a held response; its payment identifier stays in flight", "key", key, "err", err)
				return
			}
			wait = min(2*wait, heldRetryMax)
		}
	}()
}

// close stops the writing again and waits for it to stop.
func (h *heldResponses) close() {
	h.mu.Lock()
	h.init()
	h.cancel()
	h.mu.Unlock()
	h.wg.Wait()
}

// Close stops storing held responses again (see heldResponses) and waits until it has. Call
// it once the HTTP server has shut down; a response still held then leaves its payment
// identifier in flight in the store until its InFlightTTL.
func (s *Server) Close() { s.held.close() }
