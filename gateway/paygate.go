package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/mpp"
)

// errPaymentRequired means the request carried no credential that any rail accepts.
var errPaymentRequired = errors.New("payment_required")

// railGateway names the gateway itself as the refuser of a credential no rail accepts.
const railGateway = "gateway"

// headerInternalKey carries INTERNAL_API_KEY for internal callers, who skip payment.
const headerInternalKey = "X-Internal-Key"

// Payment protocols reported in responses and records when no rail was involved.
const (
	protocolNone     = "none"     // free call (simulation)
	protocolInternal = "internal" // internal caller, no payment
)

// payment is the outcome of the payment gate for one call.
type payment struct {
	protocol string
	price    payments.Price
	auth     *payments.Authorization // nil for free and internal calls
	rail     payments.Rail
}

// PaymentConfig is what the gate needs besides the rails.
type PaymentConfig struct {
	InternalAPIKey  string // empty disables the internal credential
	InternalAgentID string // the seed's ACHILLES_AGENT_ID
	PayTo           string // the seed's PAYMENT_WALLET, shown in the 402
	Network         string // shown in the 402: "base"
	ACPURL          string // shown in the 402
}

// paymentGate decides who pays for a call and how. It is the only place that looks at
// payment credentials.
type paymentGate struct {
	cfg         PaymentConfig
	internalKey [32]byte
	rails       []payments.Rail
}

func newPaymentGate(cfg PaymentConfig, rails []payments.Rail) *paymentGate {
	g := &paymentGate{cfg: cfg, rails: rails}
	if cfg.InternalAPIKey != "" {
		g.internalKey = sha256.Sum256([]byte(cfg.InternalAPIKey))
	}
	return g
}

// isInternal compares the presented key in constant time. Hashing first makes the
// comparison independent of the key's length too.
func (g *paymentGate) isInternal(r *http.Request) bool {
	if g.cfg.InternalAPIKey == "" {
		return false
	}
	keys := r.Header.Values(headerInternalKey)
	if len(keys) != 1 || keys[0] == "" {
		return false // two keys are no key: proxies disagree on which one counts
	}
	presented := keys[0]
	h := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(h[:], g.internalKey[:]) == 1
}

// authorize returns how the call is paid for: free, internal, or a verified and claimed
// credential of one rail. It returns errPaymentRequired when the request carries none,
// and a *payments.PaymentError when a rail refuses the one it carries.
func (g *paymentGate) authorize(ctx context.Context, r *http.Request, price payments.Price) (payment, error) {
	if price.Free() {
		return payment{protocol: protocolNone, price: price}, nil
	}
	if g.isInternal(r) {
		return payment{protocol: protocolInternal, price: price}, nil
	}
	if r.Header.Get(headerInternalKey) != "" {
		return payment{}, &payments.PaymentError{Rail: protocolInternal, Reason: "invalid_internal_key", Detail: "the internal key is not valid"}
	}
	for _, rail := range g.rails {
		if !rail.Accepts(r) {
			continue
		}
		a, err := rail.Verify(ctx, r, price)
		if err != nil {
			return payment{}, err
		}
		return payment{protocol: rail.Name(), price: price, auth: a, rail: rail}, nil
	}
	if scheme := credentialScheme(r); scheme != "" {
		// The gateway refuses, not a rail: the scheme is the caller's text, and as Rail it
		// could pass for a rail's own refusal (its problem type, its offer's error).
		return payment{}, &payments.PaymentError{Rail: railGateway, Reason: "unsupported_credential",
			Detail: fmt.Sprintf("no enabled payment rail accepts an Authorization credential of scheme %q", scheme)}
	}
	return payment{}, errPaymentRequired
}

func credentialScheme(r *http.Request) string {
	a := r.Header.Get("Authorization")
	if a == "" {
		return ""
	}
	scheme, _, _ := strings.Cut(a, " ")
	return scheme
}

// paymentRequiredBody is the seed's 402 body. Rails add their own fields beside these.
type paymentRequiredBody struct {
	Type         string `json:"type"`
	Title        string `json:"title"`
	Status       int    `json:"status"`
	Detail       string `json:"detail,omitempty"`
	Code         string `json:"code"`
	Error        string `json:"error,omitempty"`
	Amount       string `json:"amount"`
	AmountAtomic string `json:"amountAtomic"`
	Currency     string `json:"currency"`
	Network      string `json:"network"`
	PayTo        string `json:"payTo"`
	Instructions string `json:"instructions"`
	ERC7710      string `json:"erc7710"`
	ACP          string `json:"acp,omitempty"`
	RequestID    string `json:"requestId,omitempty"` // as on every other problem: the exchange's X-Request-ID
}

// writePaymentRequired answers 402 (or the Payment scheme's 400) with the seed's body and
// every enabled rail's offer. cause is nil for a request without credential, or the refusal
// of the one it carried: then classify gives the status (the Payment scheme answers 400 to an
// unsupported method or a malformed request, still with fresh challenges) and the code, and
// an MPP refusal's problem type is the draft's. The offers honour the request's Accept-Payment.
func (s *Server) writePaymentRequired(w http.ResponseWriter, r *http.Request, price payments.Price, cause error) {
	g := s.pay
	status := http.StatusPaymentRequired
	body := paymentRequiredBody{
		Type:         mpp.ProblemType(mpp.ReasonPaymentRequired),
		Title:        "Payment Required",
		Status:       http.StatusPaymentRequired,
		Code:         "payment_required",
		Amount:       price.Decimal(),
		AmountAtomic: fmt.Sprint(price.Amount),
		Currency:     price.Currency,
		Network:      g.cfg.Network,
		PayTo:        g.cfg.PayTo,
		Instructions: fmt.Sprintf("Pay %s %s on Base network then retry with payment credential in Authorization header", price.Decimal(), price.Currency),
		ERC7710:      "Pre-approve spend limit via ERC-7710 scoped delegation for high-frequency calls",
		ACP:          g.cfg.ACPURL,
		RequestID:    w.Header().Get(headerRequestID),
	}
	var payErr *payments.PaymentError
	if errors.As(cause, &payErr) {
		addHeaders(w.Header(), payErr.Header)
		var code string
		status, code, _, _ = classify(cause)
		body.Status, body.Title = status, http.StatusText(status)
		body.Code, body.Detail, body.Error = code, payErr.Detail, code
		if payErr.Rail == mpp.RailName {
			body.Type = mpp.ProblemType(payErr.Reason)
		}
	}
	ctx := mpp.WithAcceptPayment(r.Context(), r.Header.Values(mpp.HeaderAcceptPayment))
	fields := map[string]json.RawMessage{}
	for _, rail := range g.rails {
		var refused *payments.PaymentError
		if payErr != nil && payErr.Rail == rail.Name() {
			refused = payErr
		}
		ch, err := rail.Offer(ctx, price, refused)
		if err != nil {
			// One rail that cannot make an offer must not hide the others.
			s.log.Warn("rail offer failed", "rail", rail.Name(), "err", err)
			continue
		}
		// Add, not Set: several rails (or one with several methods) may each send a
		// WWW-Authenticate challenge, and every one must reach the client.
		addHeaders(w.Header(), ch.Header)
		for k, v := range ch.Body {
			if _, taken := fields[k]; !taken {
				fields[k] = v
			}
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, "application/problem+json", mergeFields(body, fields))
}

// addHeaders adds every value of src to dst.
func addHeaders(dst, src http.Header) {
	for k, vs := range src {
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// mergeFields returns the JSON of base with extra fields added; base's own fields win.
func mergeFields(base any, extra map[string]json.RawMessage) json.RawMessage {
	b, _ := json.Marshal(base)
	if len(extra) == 0 {
		return b
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	for k, v := range extra {
		if _, own := m[k]; !own {
			m[k] = v
		}
	}
	out, _ := json.Marshal(m)
	return out
}

// label names the credential a request carries for metrics, from a bounded set: an
// enabled rail's name, "internal", "other" for an Authorization nobody accepts, or "none".
// Never the request's own text: label values must not be chosen by callers.
func (g *paymentGate) label(r *http.Request) string {
	for _, rail := range g.rails {
		if rail.Accepts(r) {
			return rail.Name()
		}
	}
	switch {
	case r.Header.Get(headerInternalKey) != "":
		return protocolInternal
	case r.Header.Get("Authorization") != "":
		return "other"
	default:
		return protocolNone
	}
}
