package client

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/x402"
)

// FuzzReadPaymentRequired feeds hostile 402 answers (PAYMENT-REQUIRED header, body, and a
// PAYMENT-RESPONSE header) through everything the client reads from them. Whatever it chooses
// to pay must pass its spend controls, and no text it quotes may exceed the clip bound.
func FuzzReadPaymentRequired(f *testing.F) {
	res := x402.ResourceInfo{URL: "http://127.0.0.1:5091/exec/tool"}
	v2 := x402.NewPaymentRequired(res, "PAYMENT-SIGNATURE header is required",
		x402.Requirements(localToken, payments.Price{Amount: testPrice}, common.HexToAddress(payToHex), time.Minute),
		x402.Requirements(x402.Base, payments.Price{Amount: 5_000_000}, common.HexToAddress(payToHex), time.Minute))
	x402.DeclarePaymentIdentifier(&v2, true)
	header, err := x402.EncodePaymentRequired(v2)
	if err != nil {
		f.Fatal(err)
	}
	v1req, _ := x402.RequirementsV1(x402.Requirements(x402.BaseSepolia, payments.Price{Amount: testPrice}, common.HexToAddress(payToHex), time.Minute), res)
	v1body, err := x402.EncodePaymentRequiredV1(x402.NewPaymentRequiredV1("X-PAYMENT header is required", v1req))
	if err != nil {
		f.Fatal(err)
	}
	settled, _ := x402.EncodeSettlementResponse(x402.SettlementResponse{Success: true, Transaction: "0x01", Network: "eip155:31337"})
	f.Add(header, []byte(`{"code":"payment_required","detail":"pay"}`), "application/problem+json", settled)
	f.Add("", v1body, "application/json", "")
	f.Add("", []byte(`{"x402Version":1,"accepts":[{"scheme":"exact","network":"base","maxAmountRequired":"1","payTo":"0x","asset":"0x","maxTimeoutSeconds":1}]}`), "application/json", "e30=")
	f.Add("bm90IGpzb24=", []byte("<html>"), "text/html", "!!")

	c, err := New("http://127.0.0.1:1", WithX402Signer(payerKey(f)), WithAllowedAssets(localToken), WithMaxPayment(50_000))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, paymentRequired string, body []byte, contentType, paymentResponse string) {
		h := http.Header{}
		h.Set("Content-Type", contentType)
		if paymentRequired != "" {
			h.Set(x402.HeaderPaymentRequired, paymentRequired)
		}
		if paymentResponse != "" {
			h.Set(x402.HeaderPaymentResponse, paymentResponse)
		}
		resp := &response{status: http.StatusPaymentRequired, header: h, body: body}
		for _, s := range []string{apiError(resp).Error(), func() string { r, d := refusalOf(resp); return r + d }()} {
			if len(s) > 4*maxDetail+200 || strings.ContainsAny(s, "\x00\x1b\r\n") {
				t.Fatalf("unclipped server text: %q", s)
			}
		}
		if st := settlementOf(h); st != nil && st.Status == "" {
			t.Fatal("a settlement without a status")
		}
		o, err := parseOffer(h, body)
		if err != nil {
			if Reason(err) == "" {
				t.Fatalf("an untyped error: %v", err)
			}
			return
		}
		cand, err := c.choose(o)
		if err != nil {
			return
		}
		if cand.amount > 50_000 {
			t.Fatalf("chose to pay %d, above the maximum", cand.amount)
		}
		if _, ok := c.allowed[assetKey{cand.entry.chainID, cand.asset}]; !ok {
			t.Fatalf("chose asset %s on chain %d, not allowed", cand.asset.Hex(), cand.entry.chainID)
		}
		if _, _, _, err := c.sign(o, cand); err != nil && Reason(err) == "" {
			t.Fatalf("an untyped signing error: %v", err)
		}
	})
}
