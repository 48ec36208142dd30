package mpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
)

// lossyStripe makes the fake Stripe keep its idempotency keys, as Stripe does (a request with
// a key it has answered gets that answer again, marked Idempotent-Replayed), and lose its
// answers while lose is set: the charge is made, every attempt of the client times out.
type lossyStripe struct {
	*fakeStripe
	lose   atomic.Bool
	status string // of the PaymentIntent a charge makes ["succeeded"]
	search bool   // whether Stripe's search finds the PaymentIntents made

	mu    sync.Mutex
	saved map[string]map[string]any // idempotency key -> the PaymentIntent it made
}

func newLossyStripe(t *testing.T, status string, search bool) *lossyStripe {
	l := &lossyStripe{fakeStripe: newFakeStripe(t), status: status, search: search, saved: map[string]map[string]any{}}
	l.setCreate(func(w http.ResponseWriter, r *http.Request, form url.Values, _ int) {
		key := r.Header.Get("Idempotency-Key")
		l.mu.Lock()
		pi, replay := l.saved[key]
		if !replay {
			var amount int64
			fmt.Sscan(form.Get("amount"), &amount)
			pi = paymentIntent(fmt.Sprintf("pi_lost%d", len(l.saved)+1), amount, form.Get("currency"), l.status, time.Now(), metadataOf(form))
			l.saved[key] = pi
			l.setPI(pi)
			if l.search {
				l.index(pi)
			}
		}
		l.mu.Unlock()
		if l.lose.Load() {
			<-r.Context().Done() // charged; the answer never arrives
			return
		}
		if replay {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		writeStripeJSON(w, http.StatusOK, pi)
	})
	return l
}

func (l *lossyStripe) charges() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.saved)
}

// newLossyRail is a rail over l whose Stripe calls give up quickly.
func newLossyRail(t *testing.T, l *lossyStripe) *testRail {
	st := newTestStripe(t, l.URL(), func(c *StripeConfig) { c.Timeout, c.AttemptTimeout = 400*time.Millisecond, 120*time.Millisecond })
	return newTestRailOn(t, l.fakeStripe, st, nil)
}

func chargeOf(t *testing.T, tr *testRail, c Challenge) ledger.Payment {
	t.Helper()
	p, err := tr.book.GetByNonceKey(context.Background(), "mpp:challenge:"+c.ID)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLostAnswerIsCompletedByAResend: Stripe charged, but every attempt of the client timed
// out. The call is answered 503; the payer resends the same credential, and gets its call,
// paid by that one charge.
func TestLostAnswerIsCompletedByAResend(t *testing.T) {
	l := newLossyStripe(t, "succeeded", true)
	tr := newLossyRail(t, l)
	c := tr.challenge(t, dryRun)
	auth := credential(t, c, testSPT)

	l.lose.Store(true)
	_, err := tr.Verify(context.Background(), requestWith(auth), dryRun)
	checkOutcome(t, err, outcome{unavailable: true})
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusVerified || p.TxHash != "" || p.Attempts != 1 || l.charges() != 1 {
		t.Fatalf("after the lost answer: payment %s, reference %q, %d attempts; %d charges", p.Status, p.TxHash, p.Attempts, l.charges())
	}
	// The challenge is this credential's: another token cannot take it over.
	_, err = tr.Verify(context.Background(), requestWith(credential(t, c, "spt_other_token")), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonInvalidChallenge})

	l.lose.Store(false)
	a, err := tr.Verify(context.Background(), requestWith(auth), dryRun)
	if err != nil {
		t.Fatalf("the resend of a credential whose answer was lost: %v", err)
	}
	p := chargeOf(t, tr, c)
	if a.Reference != p.ID.String() || p.Status != ledger.StatusVerified || p.TxHash != "pi_lost1" || l.charges() != 1 {
		t.Fatalf("after the resend: authorization %+v, payment %s %q; %d charges", a, p.Status, p.TxHash, l.charges())
	}
	s, err := tr.Settle(context.Background(), a)
	if err != nil || s.Reference != "pi_lost1" {
		t.Fatalf("Settle = %+v, %v", s, err)
	}
	if _, refunds, _, _ := l.counts(); refunds != 0 {
		t.Fatalf("%d refunds of the one charge that paid the call", refunds)
	}
	// Paid once: the credential pays no second call.
	_, err = tr.Verify(context.Background(), requestWith(auth), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonInvalidChallenge})
	if l.charges() != 1 || chargeOf(t, tr, c).Status != ledger.StatusSettled {
		t.Fatalf("%d charges, payment %s", l.charges(), chargeOf(t, tr, c).Status)
	}
}

// TestConnectionDroppedAfterTheCharge: Stripe charged, then the kept-alive connection broke
// before its answer. net/http resends a request that carries an Idempotency-Key on its own,
// unseen by stripe-go, and Stripe answers the resend Idempotent-Replayed: that is this
// request's own charge, which pays its call, not someone else's.
func TestConnectionDroppedAfterTheCharge(t *testing.T) {
	l := newLossyStripe(t, "succeeded", true)
	var dropped atomic.Bool
	l.setCreate(func(w http.ResponseWriter, r *http.Request, form url.Values, _ int) {
		key := r.Header.Get("Idempotency-Key")
		l.mu.Lock()
		pi, replay := l.saved[key]
		if !replay {
			var amount int64
			fmt.Sscan(form.Get("amount"), &amount)
			pi = paymentIntent("pi_dropped1", amount, form.Get("currency"), "succeeded", time.Now(), metadataOf(form))
			l.saved[key] = pi
			l.setPI(pi)
		}
		l.mu.Unlock()
		if !replay && dropped.CompareAndSwap(false, true) {
			conn, _, err := w.(http.Hijacker).Hijack() // charged; the connection breaks
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		if replay {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		writeStripeJSON(w, http.StatusOK, pi)
	})
	st := newTestStripe(t, l.URL(), nil)
	tr := newTestRailOn(t, l.fakeStripe, st, nil)
	// A first call leaves a kept-alive connection for the charge to reuse.
	if _, err := st.GetPaymentIntent(context.Background(), "pi_none"); Reason(err) != "" && !errors.As(err, new(*StripeError)) {
		t.Fatal(err)
	}
	c := tr.challenge(t, dryRun)
	a, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun)
	if !dropped.Load() {
		t.Fatal("the connection was not dropped")
	}
	if err != nil {
		p := chargeOf(t, tr, c)
		t.Fatalf("the charge whose connection dropped: %v (payment %s %q: %s; %d charges)", err, p.Status, p.TxHash, p.ErrorReason, l.charges())
	}
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusVerified || p.TxHash != "pi_dropped1" || l.charges() != 1 {
		t.Fatalf("payment %s %q, %d charges", p.Status, p.TxHash, l.charges())
	}
	if s, err := tr.Settle(context.Background(), a); err != nil || s.Reference != "pi_dropped1" {
		t.Fatalf("Settle = %+v, %v", s, err)
	}
}

// TestChargeInFlightIsNotResumed: a resend while the first request is still charging is
// refused, not charged a second time alongside it.
func TestChargeInFlightIsNotResumed(t *testing.T) {
	l := newLossyStripe(t, "succeeded", true)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the fake Stripe's Close, which waits for this handler
	l.setCreate(func(w http.ResponseWriter, _ *http.Request, form url.Values, _ int) {
		<-release
		writeStripeJSON(w, http.StatusOK, paymentIntent("pi_slow", 50, "usd", "succeeded", time.Now(), metadataOf(form)))
	})
	tr := newTestRailOn(t, l.fakeStripe, newTestStripe(t, l.URL(), nil), nil)
	c := tr.challenge(t, dryRun)
	auth := credential(t, c, testSPT)
	first := make(chan error, 1)
	go func() {
		_, err := tr.Verify(context.Background(), requestWith(auth), dryRun)
		first <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for creates, _, _, _ := l.counts(); creates == 0; creates, _, _, _ = l.counts() {
		if time.Now().After(deadline) {
			t.Fatal("the first charge never reached Stripe")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err := tr.Verify(context.Background(), requestWith(auth), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonInvalidChallenge})
	unblock()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if creates, _, _, _ := l.counts(); creates != 1 {
		t.Fatalf("Stripe got %d creates", creates)
	}
}

// TestLostAnswerWithoutResendIsRefunded: nobody resends; once the challenge has expired,
// reconciliation finds the charge by its challenge and refunds it, once.
func TestLostAnswerWithoutResendIsRefunded(t *testing.T) {
	l := newLossyStripe(t, "succeeded", true)
	tr := newLossyRail(t, l)
	c := tr.challenge(t, dryRun)
	l.lose.Store(true)
	_, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun)
	checkOutcome(t, err, outcome{unavailable: true})
	l.lose.Store(false)

	// Until staleAfter past the expiry a resend accepted just before it may still be running:
	// reconciliation waits.
	const staleAfter = time.Minute
	exp := testNow.Add(DefaultChallengeTTL)
	for _, at := range []time.Time{testNow, exp.Add(time.Second), exp.Add(staleAfter - time.Second)} {
		tr.clock.Set(at)
		if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, staleAfter); err != nil {
			t.Fatal(err)
		}
		if _, refunds, _, _ := l.counts(); refunds != 0 || l.searchCount() != 0 || chargeOf(t, tr, c).Status != ledger.StatusVerified {
			t.Fatalf("reconciled at %v: %d refunds, %d searches", at, refunds, l.searchCount())
		}
	}
	tr.clock.Set(exp.Add(staleAfter + time.Second))
	for range 2 {
		if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, staleAfter); err != nil {
			t.Fatal(err)
		}
	}
	refunds := l.refundRequests()
	if len(refunds) != 1 || refunds[0].Form.Get("payment_intent") != "pi_lost1" {
		t.Fatalf("refunds %+v, want one of pi_lost1", refunds)
	}
	p := chargeOf(t, tr, c)
	if p.Status != ledger.StatusNotCharged || p.TxHash != "pi_lost1" || p.ErrorReason == "" {
		t.Fatalf("payment %s, reference %q, reason %q", p.Status, p.TxHash, p.ErrorReason)
	}
	// The expired credential is refused, the money being back.
	_, err = tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonPaymentExpired})
}

// TestReconcileWaitsForStripeSearch: Stripe's search lags; a charge it does not show yet is
// looked for again, and a payment is closed as never charged only SearchLag after expiry.
func TestReconcileWaitsForStripeSearch(t *testing.T) {
	l := newLossyStripe(t, "succeeded", false)
	tr := newLossyRail(t, l)
	c := tr.challenge(t, dryRun)
	l.lose.Store(true)
	_, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun)
	checkOutcome(t, err, outcome{unavailable: true})

	expired := testNow.Add(DefaultChallengeTTL)
	tr.clock.Set(expired.Add(time.Minute))
	if err := tr.Reconcile(context.Background(), tr.book, 0); err != nil {
		t.Fatal(err)
	}
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusVerified || l.searchCount() != 1 {
		t.Fatalf("closed on an empty search: %s, %d searches", p.Status, l.searchCount())
	}
	l.mu.Lock()
	for _, pi := range l.saved {
		l.index(pi)
	}
	l.mu.Unlock()
	if err := tr.Reconcile(context.Background(), tr.book, 0); err != nil {
		t.Fatal(err)
	}
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusNotCharged || p.TxHash != "pi_lost1" || len(l.refundRequests()) != 1 {
		t.Fatalf("once found: %s %q, %d refunds", p.Status, p.TxHash, len(l.refundRequests()))
	}

	// A charge Stripe never made (the request never reached it) is closed after SearchLag.
	nothing := newTestRailOn(t, l.fakeStripe, newTestStripe(t, closedPort(t), func(c *StripeConfig) { c.MaxAttempts = 1 }), nil)
	c2 := nothing.challenge(t, dryRun)
	_, err = nothing.Verify(context.Background(), requestWith(credential(t, c2, testSPT)), dryRun)
	checkOutcome(t, err, outcome{unavailable: true})
	nothing.stripe = newTestStripe(t, l.URL(), nil)
	for _, at := range []time.Duration{time.Minute, SearchLag - time.Minute, SearchLag + time.Minute} {
		nothing.clock.Set(expired.Add(at))
		if err := nothing.Reconcile(context.Background(), nothing.book, 0); err != nil {
			t.Fatal(err)
		}
		p := chargeOf(t, nothing, c2)
		if closed := p.Status == ledger.StatusNotCharged; closed != (at > SearchLag) {
			t.Fatalf("%v after expiry: %s", at, p.Status)
		}
	}
	if p := chargeOf(t, nothing, c2); p.TxHash != "" || p.ErrorReason == "" {
		t.Fatalf("closed as never charged: reference %q, reason %q", p.TxHash, p.ErrorReason)
	}
}

// TestReconcileWaitsForProcessing: a PaymentIntent still processing when Verify refused it is
// waited for, and refunded if it succeeds.
func TestReconcileWaitsForProcessing(t *testing.T) {
	l := newLossyStripe(t, "processing", true)
	tr := newLossyRail(t, l)
	c := tr.challenge(t, dryRun)
	_, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonVerificationFailed})
	tr.clock.Set(testNow.Add(DefaultChallengeTTL + time.Minute))
	if err := tr.Reconcile(context.Background(), tr.book, 0); err != nil {
		t.Fatal(err)
	}
	if _, refunds, cancels, _ := l.counts(); refunds != 0 || cancels != 0 || chargeOf(t, tr, c).Status != ledger.StatusVerified {
		t.Fatalf("a processing PaymentIntent was not waited for: %d refunds, %d cancels", refunds, cancels)
	}
	if p := chargeOf(t, tr, c); p.TxHash != "pi_lost1" {
		t.Fatalf("the processing PaymentIntent is not the payment's reference: %q", p.TxHash)
	}
	l.setPI(paymentIntent("pi_lost1", 50, "usd", "succeeded", time.Now(), map[string]string{
		"mpp_challenge_id": c.ID, DefaultBindKey: "api.example.com"}))
	if err := tr.Reconcile(context.Background(), tr.book, 0); err != nil {
		t.Fatal(err)
	}
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusNotCharged || p.TxHash != "pi_lost1" || len(l.refundRequests()) != 1 {
		t.Fatalf("after it succeeded: %s %q, %d refunds", p.Status, p.TxHash, len(l.refundRequests()))
	}
}

// TestCrashAfterChargeIsRefundedByItsReference: a process that dies while its call runs has
// recorded the PaymentIntent, which reconciliation refunds without waiting for the expiry.
func TestCrashAfterChargeIsRefundedByItsReference(t *testing.T) {
	tr := newTestRail(t, nil)
	c := tr.challenge(t, dryRun)
	if _, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun); err != nil {
		t.Fatal(err)
	}
	// The process is gone: nothing settles or voids the authorization.
	if err := tr.Reconcile(context.Background(), tr.book, 0); err != nil {
		t.Fatal(err)
	}
	p := chargeOf(t, tr, c)
	if refunds := tr.fake.refundRequests(); len(refunds) != 1 || refunds[0].Form.Get("payment_intent") != "pi_fake1" ||
		p.Status != ledger.StatusNotCharged || tr.fake.searchCount() != 0 {
		t.Fatalf("refunds %+v, payment %s, %d searches", refunds, p.Status, tr.fake.searchCount())
	}
}

// listAll lists a memory ledger's open payments whatever their age (the rail's clock, not the
// ledger's, is the one these tests move), or a fixed snapshot of them.
type listAll struct {
	book     *ledger.Memory
	snapshot []ledger.Payment
}

func (l listAll) ListStale(ctx context.Context, age ledger.Staleness, limit int) ([]ledger.Payment, error) {
	if l.snapshot != nil {
		return l.snapshot, nil
	}
	return l.book.ListStale(ctx, ledger.Staleness{Working: -time.Hour, OnChain: -time.Hour, Rail: age.Rail}, limit)
}

// loseFirstAnswer charges c's credential with Stripe's answer lost: 503, the charge made.
func loseFirstAnswer(t *testing.T, l *lossyStripe, tr *testRail, auth string) {
	t.Helper()
	l.lose.Store(true)
	defer l.lose.Store(false)
	_, err := tr.Verify(context.Background(), requestWith(auth), dryRun)
	checkOutcome(t, err, outcome{unavailable: true})
}

// TestReconcileWaitsAWholeCallAfterExpiry: a resend accepted just before the expiry still
// runs its call after it; reconciliation waits staleAfter past the expiry, and skips a payment
// that moved since it was listed. The call the resend paid is settled, never refunded.
func TestReconcileWaitsAWholeCallAfterExpiry(t *testing.T) {
	const staleAfter = 3 * time.Minute
	l := newLossyStripe(t, "succeeded", true)
	tr := newLossyRail(t, l)
	c := tr.challenge(t, dryRun)
	auth := credential(t, c, testSPT)
	loseFirstAnswer(t, l, tr, auth)
	exp := testNow.Add(DefaultChallengeTTL)

	listed := listAll{snapshot: openPayments(t, tr.book)}
	tr.clock.Set(exp.Add(-time.Second))
	a, err := tr.Verify(context.Background(), requestWith(auth), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	// The call runs past the expiry; a reconciliation working through the list it made before
	// the resend reaches the payment meanwhile, and must see that it moved.
	for _, at := range []time.Duration{time.Second, staleAfter + time.Second} {
		tr.clock.Set(exp.Add(at))
		if err := tr.Reconcile(context.Background(), listed, staleAfter); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := tr.Settle(context.Background(), a); err != nil || s.Reference != "pi_lost1" {
		t.Fatalf("Settle of the resend's call = %+v, %v", s, err)
	}
	if refunds := l.refundRequests(); len(refunds) != 0 {
		t.Fatalf("the call the resend paid was refunded: %+v", refunds)
	}
}

// TestChargeClosedWhileChargingIsNotServed: if reconciliation closes and refunds a payment
// while a resend of its credential is charging, the resend is refused: no call is served on a
// refunded charge.
func TestChargeClosedWhileChargingIsNotServed(t *testing.T) {
	const staleAfter = time.Minute
	l := newLossyStripe(t, "succeeded", true)
	tr := newLossyRail(t, l)
	c := tr.challenge(t, dryRun)
	auth := credential(t, c, testSPT)
	loseFirstAnswer(t, l, tr, auth)
	resend := l.onCreate
	l.setCreate(func(w http.ResponseWriter, r *http.Request, form url.Values, n int) {
		// A reconciler whose clock runs far ahead acts while Stripe charges.
		tr.clock.Set(testNow.Add(DefaultChallengeTTL + staleAfter + time.Second))
		if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, staleAfter); err != nil {
			t.Errorf("reconcile: %v", err)
		}
		resend(w, r, form, n)
	})
	_, err := tr.Verify(context.Background(), requestWith(auth), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonInvalidChallenge})
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusNotCharged || len(l.refundRequests()) != 1 || l.charges() != 1 {
		t.Fatalf("payment %s, %d refunds, %d charges", p.Status, len(l.refundRequests()), l.charges())
	}
}

// TestResumedRefusalKeepsThePayment: Stripe refuses a resumed charge (here: the key reused
// with other parameters, as a replica of another configuration sends it). That proves nothing
// of the first charge, which reconciliation finds and refunds.
func TestResumedRefusalKeepsThePayment(t *testing.T) {
	l := newLossyStripe(t, "succeeded", true)
	tr := newLossyRail(t, l)
	c := tr.challenge(t, dryRun)
	auth := credential(t, c, testSPT)
	loseFirstAnswer(t, l, tr, auth)
	first := l.onCreate
	l.setCreate(func(w http.ResponseWriter, _ *http.Request, _ url.Values, _ int) {
		writeStripeJSON(w, http.StatusBadRequest, stripeErr("idempotency_error", "", "", "Keys for idempotent requests can only be used with the same parameters"))
	})
	_, err := tr.Verify(context.Background(), requestWith(auth), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonVerificationFailed})
	l.setCreate(first)
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusVerified {
		t.Fatalf("a refused resend closed the payment of a charge that was made: %s", p.Status)
	}
	tr.clock.Set(testNow.Add(DefaultChallengeTTL + time.Second))
	if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, 0); err != nil {
		t.Fatal(err)
	}
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusNotCharged || p.TxHash != "pi_lost1" || len(l.refundRequests()) != 1 {
		t.Fatalf("payment %s %q, %d refunds", p.Status, p.TxHash, len(l.refundRequests()))
	}
}

// TestReconcileFindsAChargeMadeUnderAnotherBinding: the gateway's binding metadata changed
// (a new realm) between the charge and its reconciliation; the charge is still its own.
func TestReconcileFindsAChargeMadeUnderAnotherBinding(t *testing.T) {
	l := newLossyStripe(t, "succeeded", true)
	tr := newLossyRail(t, l)
	c := tr.challenge(t, dryRun)
	loseFirstAnswer(t, l, tr, credential(t, c, testSPT))
	tr.cfg.BindValue = "new.example.com"
	tr.clock.Set(testNow.Add(DefaultChallengeTTL + time.Second))
	if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, 0); err != nil {
		t.Fatal(err)
	}
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusNotCharged || p.TxHash != "pi_lost1" || len(l.refundRequests()) != 1 {
		t.Fatalf("payment %s %q, %d refunds", p.Status, p.TxHash, len(l.refundRequests()))
	}
}

// TestLostChargeThatPaidInTheSeedFormIsNotRefunded: the payer presented the PaymentIntent of a
// lost answer as `MPP pi_…` and had a call for it; reconciliation does not refund it.
func TestLostChargeThatPaidInTheSeedFormIsNotRefunded(t *testing.T) {
	l := newLossyStripe(t, "succeeded", true)
	tr := newLossyRail(t, l)
	c := tr.challenge(t, dryRun)
	loseFirstAnswer(t, l, tr, credential(t, c, testSPT))
	l.setPI(paymentIntent("pi_lost1", 50, "usd", "succeeded", testNow, map[string]string{"mpp_challenge_id": c.ID, DefaultBindKey: "api.example.com"}))
	a, err := tr.Verify(context.Background(), requestWith("MPP pi_lost1"), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Settle(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	tr.clock.Set(testNow.Add(DefaultChallengeTTL + time.Second))
	if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, 0); err != nil {
		t.Fatal(err)
	}
	p := chargeOf(t, tr, c)
	if p.Status != ledger.StatusNotCharged || p.TxHash != "pi_lost1" || len(l.refundRequests()) != 0 {
		t.Fatalf("payment %s %q (%s), %d refunds", p.Status, p.TxHash, p.ErrorReason, len(l.refundRequests()))
	}
}

// flakyBook is the memory ledger with writes that fail: the move to submitted (applied first
// when applied is set, as a commit whose answer was lost), and RecordReference.
type flakyBook struct {
	*ledger.Memory
	mu            sync.Mutex
	failSubmitted int
	applied       bool
	failReference int
}

var errDBAway = fmt.Errorf("postgres away: %w", payments.ErrUnavailable)

func (b *flakyBook) Transition(ctx context.Context, id uuid.UUID, from []ledger.Status, to ledger.Status, patch ledger.Patch) (ledger.Payment, error) {
	b.mu.Lock()
	fail := to == ledger.StatusSubmitted && b.failSubmitted > 0
	if fail {
		b.failSubmitted--
	}
	b.mu.Unlock()
	if !fail {
		return b.Memory.Transition(ctx, id, from, to, patch)
	}
	if b.applied {
		_, _ = b.Memory.Transition(ctx, id, from, to, patch)
	}
	return ledger.Payment{}, errDBAway
}

func (b *flakyBook) RecordReference(ctx context.Context, id uuid.UUID, status ledger.Status, ref string, payload json.RawMessage) (ledger.Payment, error) {
	b.mu.Lock()
	fail := b.failReference > 0
	if fail {
		b.failReference--
	}
	b.mu.Unlock()
	if fail {
		return ledger.Payment{}, errDBAway
	}
	return b.Memory.RecordReference(ctx, id, status, ref, payload)
}

// TestSettleThatCannotRecordWithholdsTheCall: a charge whose settlement cannot be recorded
// stays verified and is refunded, so its call's result must not be delivered: Settle says
// ErrNotRecorded. A move that committed although its answer was lost is read back and counts.
func TestSettleThatCannotRecordWithholdsTheCall(t *testing.T) {
	tr := newTestRail(t, nil)
	book := &flakyBook{Memory: tr.book, failSubmitted: 1}
	tr.Rail.book = book
	a, err := tr.Verify(context.Background(), requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Settle(context.Background(), a); !errors.Is(err, payments.ErrNotRecorded) || !errors.Is(err, payments.ErrUnavailable) {
		t.Fatalf("Settle with Postgres away = %v, want ErrNotRecorded", err)
	}
	if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, 0); err != nil {
		t.Fatal(err)
	}
	if p := paymentByID(t, tr.book, a); p.Status != ledger.StatusNotCharged || len(tr.fake.refundRequests()) != 1 {
		t.Fatalf("payment %s, %d refunds", p.Status, len(tr.fake.refundRequests()))
	}

	committed := newTestRail(t, nil)
	committed.Rail.book = &flakyBook{Memory: committed.book, failSubmitted: 1, applied: true}
	a, err = committed.Verify(context.Background(), requestWith(credential(t, committed.challenge(t, dryRun), testSPT)), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := committed.Settle(context.Background(), a); err != nil || s.Status != payments.SettlementSettled {
		t.Fatalf("Settle whose move committed = %+v, %v", s, err)
	}
	if p := paymentByID(t, committed.book, a); p.Status != ledger.StatusSettled {
		t.Fatalf("payment %s", p.Status)
	}
}

// TestChargeRecordWrittenBySettle: when Verify could not write a charge's record (its
// PaymentIntent and customer, which a dispute flags), Settle writes it.
func TestChargeRecordWrittenBySettle(t *testing.T) {
	tr := newTestRail(t, nil)
	tr.fake.setCreate(func(w http.ResponseWriter, _ *http.Request, form url.Values, _ int) {
		pi := paymentIntent("pi_cus", 50, "usd", "succeeded", time.Now(), metadataOf(form))
		pi["customer"] = "cus_disputer"
		writeStripeJSON(w, http.StatusOK, pi)
	})
	tr.Rail.book = &flakyBook{Memory: tr.book, failReference: 1}
	a, err := tr.Verify(context.Background(), requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	if p := paymentByID(t, tr.book, a); p.TxHash != "" || strings.Contains(string(p.Payload), "cus_disputer") {
		t.Fatalf("the record was written: %q %s", p.TxHash, p.Payload)
	}
	if _, err := tr.Settle(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if p := paymentByID(t, tr.book, a); p.TxHash != "pi_cus" || !strings.Contains(string(p.Payload), `"customer":"cus_disputer"`) {
		t.Fatalf("after Settle: %q %s", p.TxHash, p.Payload)
	}
}

// TestUnattributedClaimIsWaitedFor: the seed form claims a PaymentIntent before it records
// its payment; a lost charge's PaymentIntent found claimed by nobody known is waited for, and
// refunded as the charge's own only once SearchLag has passed.
func TestUnattributedClaimIsWaitedFor(t *testing.T) {
	l := newLossyStripe(t, "succeeded", true)
	tr := newLossyRail(t, l)
	c := tr.challenge(t, dryRun)
	loseFirstAnswer(t, l, tr, credential(t, c, testSPT))
	if err := tr.book.Claim(context.Background(), "mpp:pi_lost1", testNow.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	exp := testNow.Add(DefaultChallengeTTL)
	for _, tc := range []struct {
		at       time.Time
		refunded bool
	}{{exp.Add(time.Second), false}, {exp.Add(SearchLag - time.Second), false}, {exp.Add(SearchLag + time.Second), true}} {
		tr.clock.Set(tc.at)
		if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, 0); err != nil {
			t.Fatal(err)
		}
		if got := len(l.refundRequests()) == 1; got != tc.refunded {
			t.Fatalf("at %v: refunded %v, want %v", tc.at, got, tc.refunded)
		}
	}
}

// TestReconcileTouchesWhatItCannotFinish: a payment whose reconciliation fails is touched
// all the same, so that it cannot hold the head of the list.
func TestReconcileTouchesWhatItCannotFinish(t *testing.T) {
	tr := newTestRail(t, nil)
	a, err := tr.Verify(context.Background(), requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	tr.fake.mu.Lock()
	delete(tr.fake.pis, "pi_fake1") // Stripe answers 404 for it
	tr.fake.mu.Unlock()
	if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, 0); err == nil {
		t.Fatal("reconciling a PaymentIntent Stripe does not know succeeded")
	}
	if p := paymentByID(t, tr.book, a); p.Status != ledger.StatusVerified || p.Attempts != 1 {
		t.Fatalf("payment %s, %d attempts, want verified and touched", p.Status, p.Attempts)
	}
}

// TestRefusedPaymentIntentThatCannotBeCanceled stays for reconciliation, which cancels it.
func TestRefusedPaymentIntentThatCannotBeCanceled(t *testing.T) {
	tr := newTestRail(t, nil)
	tr.fake.setCreate(func(w http.ResponseWriter, _ *http.Request, form url.Values, _ int) {
		pi := paymentIntent("pi_action", 50, "usd", "requires_action", time.Now(), metadataOf(form))
		tr.fake.setPI(pi)
		writeStripeJSON(w, http.StatusOK, pi)
	})
	tr.fake.mu.Lock()
	tr.fake.cancelFails = true
	tr.fake.mu.Unlock()
	c := tr.challenge(t, dryRun)
	_, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun)
	checkOutcome(t, err, outcome{reason: ReasonPaymentActionRequired})
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusVerified || p.TxHash != "pi_action" {
		t.Fatalf("a PaymentIntent that could not be canceled: %s %q", p.Status, p.TxHash)
	}
	tr.fake.mu.Lock()
	tr.fake.cancelFails = false
	tr.fake.mu.Unlock()
	if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, 0); err != nil {
		t.Fatal(err)
	}
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusNotCharged || p.TxHash != "pi_action" {
		t.Fatalf("after reconciliation: %s %q", p.Status, p.TxHash)
	}
}

// TestRefundAfterALostRefundAnswer: Void's refund reached Stripe but every answer was lost, so
// the payment stays verified for reconciliation. Stripe keeps the refund's idempotency key and
// refuses it when it comes back with other parameters (idempotency_error); the reconciler's
// refund of the same PaymentIntent must be the same request, so that Stripe answers with the
// refund it made and the payment is closed.
func TestRefundAfterALostRefundAnswer(t *testing.T) {
	l := newLossyStripe(t, "succeeded", true)
	tr := newLossyRail(t, l)
	var (
		mu    sync.Mutex
		saved = map[string]string{} // idempotency key -> the form first sent with it
	)
	l.setRefund(func(w http.ResponseWriter, r *http.Request, form url.Values, n int) {
		key, params := r.Header.Get("Idempotency-Key"), form.Encode()
		mu.Lock()
		first, seen := saved[key]
		if !seen {
			saved[key] = params
		}
		mu.Unlock()
		if seen && first != params {
			writeStripeJSON(w, http.StatusBadRequest, stripeErr("idempotency_error", "", "",
				"Keys for idempotent requests can only be used with the same parameters they were first used with."))
			return
		}
		if l.lose.Load() {
			<-r.Context().Done() // refunded; the answer never arrives
			return
		}
		if seen {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		writeStripeJSON(w, http.StatusOK, map[string]any{"id": "re_1", "object": "refund", "status": "succeeded",
			"payment_intent": form.Get("payment_intent"), "amount": 50, "currency": "usd"})
	})
	c := tr.challenge(t, dryRun)
	a, err := tr.Verify(context.Background(), requestWith(credential(t, c, testSPT)), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	l.lose.Store(true)
	if err := tr.Void(context.Background(), a, "tool_failed"); err == nil {
		t.Fatal("Void of a refund whose every answer was lost succeeded")
	}
	l.lose.Store(false)
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusVerified {
		t.Fatalf("after the lost refund: %s", p.Status)
	}
	if err := tr.Reconcile(context.Background(), listAll{book: tr.book}, 0); err != nil {
		t.Fatalf("reconciling a payment whose refund's answer was lost: %v", err)
	}
	if p := chargeOf(t, tr, c); p.Status != ledger.StatusNotCharged {
		t.Fatalf("after reconciliation: %s", p.Status)
	}
}
