package mpp

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/secureexec/secureexec/proof"
)

// ReceiptSuccess is the only receipt status: receipts are sent on 2xx responses only.
const ReceiptSuccess = "success"

// Receipt is the body of a Payment-Receipt header (mpp.md §3).
type Receipt struct {
	Method     string `json:"method"`
	Reference  string `json:"reference"` // the PaymentIntent id for stripe
	Status     string `json:"status"`
	Timestamp  string `json:"timestamp"` // RFC 3339
	ExternalID string `json:"externalId,omitempty"`
}

// NewReceipt returns the success receipt of a stripe payment settled at t.
func NewReceipt(paymentIntent, externalID string, t time.Time) Receipt {
	return Receipt{Method: MethodStripe, Reference: paymentIntent, Status: ReceiptSuccess,
		Timestamp: t.UTC().Format(time.RFC3339), ExternalID: externalID}
}

// Encode renders the receipt as a Payment-Receipt value: base64url-nopad of its canonical JSON.
func (r Receipt) Encode() (string, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("mpp: encode receipt: %w", err)
	}
	c, err := proof.Canonicalize(raw)
	if err != nil {
		return "", fmt.Errorf("mpp: encode receipt: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(c), nil
}

// Header returns the response headers that carry the receipt: Payment-Receipt, and
// Cache-Control: private so that no shared cache hands one payer's receipt to another.
func (r Receipt) Header() (http.Header, error) {
	v, err := r.Encode()
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set(HeaderReceipt, v)
	h.Set("Cache-Control", "private")
	return h, nil
}

// DecodeReceipt decodes a Payment-Receipt value (what a client reads). Unknown members are
// allowed: methods add their own (challengeId, chainId).
func DecodeReceipt(v string) (Receipt, error) {
	var r Receipt
	if len(v) > MaxHeaderBytes {
		return r, fmt.Errorf("mpp: receipt longer than %d bytes", MaxHeaderBytes)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
	if err != nil {
		return r, fmt.Errorf("mpp: receipt is not base64url: %w", err)
	}
	if err := jsonv2.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("mpp: receipt JSON: %w", err)
	}
	if r.Method == "" || r.Reference == "" || r.Status == "" {
		return r, fmt.Errorf("mpp: receipt lacks method, reference or status")
	}
	if _, err := time.Parse(time.RFC3339, r.Timestamp); err != nil {
		return r, fmt.Errorf("mpp: receipt timestamp: %w", err)
	}
	return r, nil
}
