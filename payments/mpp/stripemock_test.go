package mpp

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/secureexec/secureexec/payments"
)

// stripeMockVersion is the stripe-mock the request-shape tests run (mpp.md §4): it bundles
// Stripe's OpenAPI spec 2026-08-26.dahlia.
const stripeMockVersion = "v0.203.0"

// stripeMock starts stripe-mock on loopback (both listeners: it otherwise also binds :12112 on
// every interface) and returns its base URL; it is stopped by PID at cleanup. The binary is
// built into <repo>/bin when missing. It fails when stripe-mock cannot be built or started,
// unless SECUREEXEC_SKIP_STRIPE_MOCK=1.
func stripeMock(t *testing.T) string {
	t.Helper()
	if os.Getenv("SECUREEXEC_SKIP_STRIPE_MOCK") == "1" {
		t.Skip("SECUREEXEC_SKIP_STRIPE_MOCK=1")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "stripe-mock")
	if _, err := os.Stat(bin); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "install", "github.com/stripe/stripe-mock@"+stripeMockVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(bin), "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building stripe-mock %s into %s failed (SECUREEXEC_SKIP_STRIPE_MOCK=1 skips): %v\n%s", stripeMockVersion, bin, err, out)
		}
	}
	httpAddr, httpsAddr := freeAddr(t), freeAddr(t)
	logf, err := os.Create(filepath.Join(t.TempDir(), "stripe-mock.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-http-addr", httpAddr, "-https-addr", httpsAddr)
	cmd.Stdout, cmd.Stderr = logf, logf // a file: no copying goroutines
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting stripe-mock (SECUREEXEC_SKIP_STRIPE_MOCK=1 skips): %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logf.Close()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", httpAddr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return "http://" + httpAddr
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("stripe-mock did not listen on %s: %v\n%s", httpAddr, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestStripeMockRequestShapes sends the rail's Stripe requests, as stripe-go v76 builds them,
// to stripe-mock, which validates them against Stripe's OpenAPI spec.
func TestStripeMockRequestShapes(t *testing.T) {
	base := stripeMock(t)
	ctx := context.Background()
	req := ChargeRequest{ChallengeID: vectorIDExpires, SPT: testSPT, Amount: 50, Currency: "usd",
		Metadata: map[string]string{"machine_payment": "true", "mpp_intent": "charge", "mpp_challenge_id": vectorIDExpires, DefaultBindKey: "api.example.com"}}

	t.Run("create+confirm as mpp.md specifies", func(t *testing.T) {
		// stripe-mock's spec does not model the preview's top-level SPT parameter and answers
		// with its documented shape-level refusal; the request reached it and was understood.
		_, err := newTestStripe(t, base, nil).ChargeSPT(ctx, req)
		var se *StripeError
		if !errors.As(err, &se) || se.Status != 400 || se.Type != "invalid_request_error" ||
			!strings.Contains(se.Message, "additional properties are not allowed") {
			t.Fatalf("want stripe-mock's 400 for the unmodelled SPT parameter, got %v", err)
		}
	})

	t.Run("every other parameter of the create+confirm is valid", func(t *testing.T) {
		// The same request with the SPT under a parameter the spec models (a payment method
		// id is a string as the SPT is): accepted, so amount, currency, confirm,
		// automatic_payment_methods, metadata, the idempotency key and the preview
		// Stripe-Version are all of Stripe's shape.
		st := newTestStripe(t, base, func(c *StripeConfig) { c.SPTParam = "payment_method" })
		pi, err := st.ChargeSPT(ctx, req)
		if err != nil {
			t.Fatalf("stripe-mock refused the create+confirm: %v", err)
		}
		if pi.ID == "" || pi.Amount != 50 || pi.Currency != "usd" {
			t.Fatalf("create reflected %+v", pi)
		}
	})

	t.Run("retrieve, refund and cancel", func(t *testing.T) {
		st := newTestStripe(t, base, nil)
		pi, err := st.GetPaymentIntent(ctx, "pi_3MtwBwLkdIwHu7ix28a3tqPa")
		if err != nil || pi.ID == "" {
			t.Fatalf("retrieve: %+v, %v", pi, err)
		}
		r, err := st.Refund(ctx, "pi_3MtwBwLkdIwHu7ix28a3tqPa", "tool_failed")
		if err != nil || r.ID == "" {
			t.Fatalf("refund: %+v, %v", r, err)
		}
		if err := st.Cancel(ctx, "pi_3MtwBwLkdIwHu7ix28a3tqPa"); err != nil {
			t.Fatalf("cancel: %v", err)
		}
		// Reconcile's search: stripe-mock answers with its fixture, whatever the query.
		if _, err := st.PaymentIntentsOfChallenge(ctx, vectorIDExpires); err != nil {
			t.Fatalf("search: %v", err)
		}
	})

	t.Run("the rail against stripe-mock refuses, keeps no charge open", func(t *testing.T) {
		tr := newTestRailOn(t, nil, newTestStripe(t, base, nil), nil)
		_, err := tr.Verify(ctx, requestWith(credential(t, tr.challenge(t, dryRun), testSPT)), dryRun)
		if Reason(err) != ReasonVerificationFailed || errors.Is(err, payments.ErrUnavailable) {
			t.Fatalf("Verify: %v", err)
		}
		if open := openPayments(t, tr.book); len(open) != 0 {
			t.Fatalf("recorded %+v", open)
		}
		// stripe-mock's fixture PaymentIntent is never succeeded: the seed form refuses it.
		_, err = tr.Verify(ctx, requestWith("MPP pi_3MtwBwLkdIwHu7ix28a3tqPa"), dryRun)
		if Reason(err) != ReasonVerificationFailed {
			t.Fatalf("seed form: %v", err)
		}
	})
}
