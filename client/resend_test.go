package client

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/secureexec/secureexec/payments/x402"
)

// TestResendSendsTheSamePayment: a paid call whose answer was lost is sent again with the
// payment it carried, byte for byte, never a newly signed one; a gateway that kept the answer
// under the payment identifier replays it, so the call is paid once.
func TestResendSendsTheSamePayment(t *testing.T) {
	ctx := context.Background()
	t.Run("answer lost: the gateway replays it", func(t *testing.T) {
		f := newFake(t, func(f *fakeGateway) { f.declareID, f.dropPaidAnswers = true, 1 })
		c := newTestClient(t, f)
		_, err := c.Exec(ctx, jsonParseCall())
		var inFlight *PaymentInFlightError
		if !errors.As(err, &inFlight) || inFlight.Payment.PaymentID == "" {
			t.Fatalf("err = %v, want *PaymentInFlightError naming a payment id", err)
		}
		res, err := c.Resend(ctx, err)
		if err != nil {
			t.Fatalf("Resend: %v", err)
		}
		seen := f.seen()
		if len(seen) != 3 {
			t.Fatalf("%d requests, want 3 (the call, the paid call, the resend)", len(seen))
		}
		first, again := seen[1], seen[2]
		if sig := first.header.Get(x402.HeaderPaymentSignature); sig == "" || again.header.Get(x402.HeaderPaymentSignature) != sig {
			t.Error("the resend does not carry the payment that was sent")
		}
		if string(first.body) != string(again.body) || first.header.Get(HeaderRequestID) != again.header.Get(HeaderRequestID) || again.path != first.path {
			t.Error("the resend is not the same request")
		}
		if verified, _ := f.paid(); len(verified) != 1 {
			t.Errorf("the fake verified %d payments, want 1", len(verified))
		}
		f.mu.Lock()
		_, ok := f.jobs[res.JobID]
		jobs := len(f.jobs)
		f.mu.Unlock()
		if jobs != 1 {
			t.Errorf("%d jobs ran, want 1", jobs)
		}
		if !ok || res.Payment == nil || *res.Payment != *inFlight.Payment || !res.Settlement.Success {
			t.Errorf("the replayed result %+v does not carry the first call's job, payment and settlement", res)
		}
	})
	t.Run("an error after paying: sent again as it was", func(t *testing.T) {
		f := newFake(t, func(f *fakeGateway) {
			f.afterPay = func(w http.ResponseWriter) {
				w.Header().Set("Retry-After", "2")
				writeProblem(w, http.StatusServiceUnavailable, "payment_backend_unavailable", "", "try again")
			}
		})
		c := newTestClient(t, f)
		_, err := c.Exec(ctx, jsonParseCall())
		var first *APIError
		if !errors.As(err, &first) || first.Payment == nil {
			t.Fatalf("err = %v, want an *APIError with its Payment", err)
		}
		_, err = c.Resend(ctx, err)
		var again *APIError
		if !errors.As(err, &again) || again.Payment == nil || *again.Payment != *first.Payment {
			t.Fatalf("Resend: %v, want the same payment refused again", err)
		}
		seen := f.seen()
		if len(seen) != 3 || seen[2].header.Get(x402.HeaderPaymentSignature) != seen[1].header.Get(x402.HeaderPaymentSignature) {
			t.Fatalf("%d requests; the resend must carry the first payment", len(seen))
		}
	})
	t.Run("a payment is never resent to another gateway", func(t *testing.T) {
		f := newFake(t, func(f *fakeGateway) { f.declareID, f.dropPaidAnswers = true, 1 })
		other := newFake(t, nil)
		_, err := newTestClient(t, f).Exec(ctx, jsonParseCall())
		var inFlight *PaymentInFlightError
		if !errors.As(err, &inFlight) {
			t.Fatalf("err = %v, want *PaymentInFlightError", err)
		}
		if _, err := newTestClient(t, other).Resend(ctx, err); err == nil {
			t.Fatal("another gateway's client resent the payment")
		}
		if n := len(other.seen()); n != 0 {
			t.Errorf("the other gateway got %d requests, want 0", n)
		}
	})
	t.Run("nothing to resend", func(t *testing.T) {
		f := newFake(t, nil)
		c := newTestClient(t, f, WithMaxPayment(1))
		_, refused := c.Exec(ctx, jsonParseCall())
		if Reason(refused) != ReasonMaxPaymentExceeded {
			t.Fatalf("err = %v", refused)
		}
		for _, err := range []error{nil, errors.New("other"), refused, &APIError{Status: 503}} {
			if _, rerr := c.Resend(ctx, err); rerr == nil {
				t.Errorf("Resend(%v) succeeded", err)
			}
		}
		if n := len(f.seen()); n != 1 {
			t.Errorf("%d requests, want 1: nothing was resent", n)
		}
	})
}
