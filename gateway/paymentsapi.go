package gateway

import (
	"context"
	"errors"
	"net/http"

	"github.com/google/uuid"

	"github.com/secureexec/secureexec/payments/ledger"
)

// PaymentReader reads one payment's state; *ledger.Ledger satisfies it.
type PaymentReader interface {
	Get(ctx context.Context, id uuid.UUID) (ledger.Payment, error)
}

// paymentView is GET /payments/{id}: where a payment's money is. Amount is in atomic units.
type paymentView struct {
	ID          string `json:"id"`
	Rail        string `json:"rail"`
	Status      string `json:"status"`
	Network     string `json:"network"`
	Asset       string `json:"asset"`
	Payer       string `json:"payer"`
	PayTo       string `json:"payTo"`
	Amount      string `json:"amount"`
	JobID       string `json:"jobId,omitempty"`
	Transaction string `json:"transaction,omitempty"`
	BatchID     string `json:"batchId,omitempty"`
	ErrorReason string `json:"errorReason,omitempty"`
	CreatedAt   string `json:"createdAt"`
	UpdatedAt   string `json:"updatedAt"`
	SettledAt   string `json:"settledAt,omitempty"`
}

var errPaymentNotFound = errors.New("payment_not_found")

func (s *Server) handlePayment(w http.ResponseWriter, r *http.Request) {
	id, err := uuid.Parse(muxVar(r, "id"))
	if err != nil {
		s.writeError(w, r, badRequest("invalid_payment_id", "id", "the payment id must be a UUID"))
		return
	}
	if s.payments == nil {
		s.writeError(w, r, errPaymentNotFound)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
	defer cancel()
	p, err := s.payments.Get(ctx, id)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		s.writeError(w, r, errPaymentNotFound)
		return
	case err != nil:
		s.log.Warn("reading a payment", "id", id, "err", err)
		s.writeError(w, r, errJobStoreUnavailable)
		return
	}
	v := paymentView{
		ID: p.ID.String(), Rail: p.Rail, Status: string(p.Status), Network: p.Network, Asset: p.Asset,
		Payer: payerOf(p), PayTo: p.PayTo, Amount: p.Amount.String(), Transaction: p.TxHash, ErrorReason: p.ErrorReason,
		CreatedAt: formatTimestamp(p.CreatedAt), UpdatedAt: formatTimestamp(p.UpdatedAt),
	}
	if p.JobID != uuid.Nil {
		v.JobID = p.JobID.String()
	}
	if p.BatchID != uuid.Nil {
		v.BatchID = p.BatchID.String()
	}
	if !p.SettledAt.IsZero() {
		v.SettledAt = formatTimestamp(p.SettledAt)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, "application/json", v)
}
