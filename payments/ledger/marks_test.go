package ledger

import (
	"context"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// markStore is what both ledgers offer for the Stripe webhook.
type markStore interface {
	Create(ctx context.Context, p Payment) error
	Transition(ctx context.Context, id uuid.UUID, from []Status, to Status, patch Patch) (Payment, error)
	GetByNonceKey(ctx context.Context, key string) (Payment, error)
	GetByReference(ctx context.Context, rail, ref string) (Payment, error)
	MarkPayment(ctx context.Context, m Mark) (bool, error)
	Marks(ctx context.Context, paymentID uuid.UUID) ([]Mark, error)
	FlagPayer(ctx context.Context, f Flag) (bool, error)
	Flagged(ctx context.Context, payer string) (Flag, bool, error)
}

// TestMarksAndFlags holds the Postgres ledger and the in-process one to the same contract:
// lookups by nonce key, marks and flags recorded once per event, bad input refused.
func TestMarksAndFlags(t *testing.T) {
	for _, impl := range []struct {
		name string
		open func(t *testing.T) markStore
	}{
		{"memory", func(*testing.T) markStore { return NewMemory() }},
		{"postgres", func(t *testing.T) markStore {
			leakCheck(t)
			return openLedger(t, openPool(t, newSchema(t), ""), "")
		}},
	} {
		t.Run(impl.name, func(t *testing.T) {
			s := impl.open(t)
			ctx := context.Background()
			p := newPayment(big.NewInt(50))
			p.Rail, p.NonceKey, p.Payer = "mpp", "mpp:pi_"+randomHex(8), "cus_"+randomHex(6)
			if err := s.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetByNonceKey(ctx, p.NonceKey)
			if err != nil || got.ID != p.ID || got.Payer != p.Payer {
				t.Fatalf("GetByNonceKey = %+v, %v", got, err)
			}
			if _, err := s.GetByNonceKey(ctx, "mpp:pi_unknown"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("unknown nonce key: %v, want ErrNotFound", err)
			}

			// A payment keyed by its challenge is found by the PaymentIntent it records.
			byChallenge := newPayment(big.NewInt(50))
			byChallenge.Rail, byChallenge.NonceKey = "mpp", "mpp:challenge:"+randomHex(8)
			pi := "pi_" + randomHex(8)
			if err := s.Create(ctx, byChallenge); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetByReference(ctx, "mpp", pi); !errors.Is(err, ErrNotFound) {
				t.Fatalf("reference before it is recorded: %v, want ErrNotFound", err)
			}
			if _, err := s.Transition(ctx, byChallenge.ID, []Status{StatusVerified}, StatusNotCharged,
				Patch{TxHash: pi, ErrorReason: "refunded: test"}); err != nil {
				t.Fatal(err)
			}
			if got, err := s.GetByReference(ctx, "mpp", pi); err != nil || got.ID != byChallenge.ID {
				t.Fatalf("GetByReference = %+v, %v", got, err)
			}
			for _, tc := range [][2]string{{"x402", pi}, {"mpp", "pi_unknown"}} {
				if _, err := s.GetByReference(ctx, tc[0], tc[1]); !errors.Is(err, ErrNotFound) {
					t.Fatalf("GetByReference(%q, %q) = %v, want ErrNotFound", tc[0], tc[1], err)
				}
			}
			if _, err := s.GetByReference(ctx, "mpp", ""); !errors.Is(err, ErrInvalid) {
				t.Fatalf("empty reference: %v, want ErrInvalid", err)
			}

			at := time.Date(2026, 3, 23, 12, 0, 0, 0, time.UTC)
			refund := Mark{EventID: "evt_" + randomHex(8), PaymentID: p.ID, Kind: MarkRefunded, Reference: "ch_1", Amount: 50, Currency: "usd", OccurredAt: at}
			dispute := Mark{EventID: "evt_" + randomHex(8), PaymentID: p.ID, Kind: MarkDisputed, Reference: "ch_1", Dispute: "dp_1", Amount: 50,
				Currency: "usd", Reason: "fraudulent", OccurredAt: at.Add(time.Hour)}
			for _, tc := range []struct {
				name string
				mark Mark
				want bool
			}{{"refund", refund, true}, {"refund redelivered", refund, false}, {"dispute", dispute, true}} {
				if rec, err := s.MarkPayment(ctx, tc.mark); err != nil || rec != tc.want {
					t.Fatalf("%s: recorded %v, %v; want %v", tc.name, rec, err, tc.want)
				}
			}
			marks, err := s.Marks(ctx, p.ID)
			if err != nil || len(marks) != 2 {
				t.Fatalf("Marks = %+v, %v", marks, err)
			}
			if m := marks[1]; m.Kind != MarkDisputed || m.Dispute != "dp_1" || m.Reason != "fraudulent" || m.Amount != 50 ||
				!m.OccurredAt.Equal(dispute.OccurredAt) || m.RecordedAt.IsZero() || marks[0].Kind != MarkRefunded {
				t.Fatalf("marks read back as %+v", marks)
			}

			if _, found, err := s.Flagged(ctx, p.Payer); found || err != nil {
				t.Fatalf("flagged before any flag: %v, %v", found, err)
			}
			flag := Flag{EventID: dispute.EventID, Payer: p.Payer, PaymentID: p.ID, JobID: uuid.New(), Reason: "charge_disputed: fraudulent"}
			for _, want := range []bool{true, false} {
				if rec, err := s.FlagPayer(ctx, flag); err != nil || rec != want {
					t.Fatalf("FlagPayer = %v, %v; want %v", rec, err, want)
				}
			}
			f, found, err := s.Flagged(ctx, p.Payer)
			if err != nil || !found || f.Reason != flag.Reason || f.PaymentID != p.ID || f.JobID != flag.JobID || f.CreatedAt.IsZero() {
				t.Fatalf("Flagged = %+v, %v, %v", f, found, err)
			}
			for _, payer := range []string{"", "cus_other", strings.ToUpper(p.Payer)} {
				if _, found, err := s.Flagged(ctx, payer); found || err != nil {
					t.Fatalf("payer %q flagged: %v, %v", payer, found, err)
				}
			}

			for _, tc := range []struct {
				name string
				mark Mark
			}{
				{"no event", Mark{PaymentID: p.ID, Kind: MarkRefunded, OccurredAt: at}},
				{"no payment", Mark{EventID: "evt_x", Kind: MarkRefunded, OccurredAt: at}},
				{"unknown kind", Mark{EventID: "evt_x", PaymentID: p.ID, Kind: "chargeback", OccurredAt: at}},
				{"negative amount", Mark{EventID: "evt_x", PaymentID: p.ID, Kind: MarkRefunded, Amount: -1, OccurredAt: at}},
				{"no time", Mark{EventID: "evt_x", PaymentID: p.ID, Kind: MarkRefunded}},
				{"NUL in reason", Mark{EventID: "evt_x", PaymentID: p.ID, Kind: MarkDisputed, Reason: "a\x00b", OccurredAt: at}},
			} {
				if _, err := s.MarkPayment(ctx, tc.mark); !errors.Is(err, ErrInvalid) {
					t.Errorf("mark %s: %v, want ErrInvalid", tc.name, err)
				}
			}
			for _, tc := range []struct {
				name string
				flag Flag
			}{
				{"no event", Flag{Payer: "cus_1", Reason: "r"}},
				{"no payer", Flag{EventID: "evt_y", Reason: "r"}},
				{"no reason", Flag{EventID: "evt_y", Payer: "cus_1"}},
				{"payer too long", Flag{EventID: "evt_y", Payer: strings.Repeat("c", MaxTextBytes+1), Reason: "r"}},
			} {
				if _, err := s.FlagPayer(ctx, tc.flag); !errors.Is(err, ErrInvalid) {
					t.Errorf("flag %s: %v, want ErrInvalid", tc.name, err)
				}
			}
		})
	}
}

// TestMarksNeedPostgres: a payment still in the spool is found by its nonce key, and marking
// or flagging while Postgres is away is ErrUnavailable (the webhook answers 503, Stripe retries).
func TestMarksNeedPostgres(t *testing.T) {
	leakCheck(t)
	schema := newSchema(t)
	px := newProxy(t, pgTarget(t))
	l := openLedger(t, openPool(t, schema, px.addr), "")
	ctx := context.Background()
	px.cut()
	loseConnection(t, l)
	p := newPayment(big.NewInt(50))
	p.Rail, p.NonceKey = "mpp", "mpp:pi_"+randomHex(8)
	if err := l.Create(ctx, p); err != nil {
		t.Fatalf("Create during the outage = %v, want spooled", err)
	}
	if got, err := l.GetByNonceKey(ctx, p.NonceKey); err != nil || got.ID != p.ID {
		t.Fatalf("GetByNonceKey of a spooled payment = %+v, %v", got, err)
	}
	if _, err := l.GetByNonceKey(ctx, "mpp:pi_elsewhere"); !isUnavailable(err) {
		t.Fatalf("GetByNonceKey of an unknown key during the outage = %v, want ErrUnavailable", err)
	}
	if _, err := l.MarkPayment(ctx, Mark{EventID: "evt_1", PaymentID: p.ID, Kind: MarkRefunded, OccurredAt: time.Now()}); !isUnavailable(err) {
		t.Fatalf("MarkPayment during the outage = %v, want ErrUnavailable", err)
	}
	if _, err := l.FlagPayer(ctx, Flag{EventID: "evt_1", Payer: "cus_1", Reason: "charge_refunded"}); !isUnavailable(err) {
		t.Fatalf("FlagPayer during the outage = %v, want ErrUnavailable", err)
	}
	if _, _, err := l.Flagged(ctx, "cus_1"); !isUnavailable(err) {
		t.Fatalf("Flagged during the outage = %v, want ErrUnavailable", err)
	}
}
