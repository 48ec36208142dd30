package mpp

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

const validCredentialJSON = `{"challenge":{"id":"` + vectorIDExpires + `","realm":"api.example.com","method":"stripe","intent":"charge","request":"` + vectorRequestB64 + `","expires":"2030-01-01T00:00:00Z"},"source":"did:pkh:eip155:8453:0xabc","payload":{"spt":"spt_123"}}`

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestDecodeCredential(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token string
		want  string // reason, "" for valid
	}{
		{"valid", b64(validCredentialJSON), ""},
		{"padding tolerated", base64.URLEncoding.EncodeToString([]byte(validCredentialJSON)), ""},
		{"without source", b64(strings.Replace(validCredentialJSON, `"source":"did:pkh:eip155:8453:0xabc",`, "", 1)), ""},
		{"standard alphabet", strings.NewReplacer("-", "+", "_", "/").Replace(b64(validCredentialJSON + "  ???>>>")), ReasonMalformedCredential},
		{"not base64", "!!!", ReasonMalformedCredential},
		{"not JSON", b64("hello"), ReasonMalformedCredential},
		{"array", b64("[1]"), ReasonMalformedCredential},
		{"unknown member", b64(strings.Replace(validCredentialJSON, `"source"`, `"extra":1,"source"`, 1)), ReasonMalformedCredential},
		{"unknown challenge member", b64(strings.Replace(validCredentialJSON, `"realm"`, `"x":"y","realm"`, 1)), ReasonMalformedCredential},
		{"duplicate member", b64(strings.Replace(validCredentialJSON, `"source"`, `"source":"did:a:b","source"`, 1)), ReasonMalformedCredential},
		{"member of other case", b64(strings.Replace(validCredentialJSON, `"source"`, `"Source"`, 1)), ReasonMalformedCredential},
		{"trailing data", b64(validCredentialJSON + `{}`), ReasonMalformedCredential},
		{"invalid UTF-8", b64(strings.Replace(validCredentialJSON, "api.example.com", "api\xff", 1)), ReasonMalformedCredential},
		{"no id", b64(strings.Replace(validCredentialJSON, `"id":"`+vectorIDExpires+`"`, `"id":""`, 1)), ReasonMalformedCredential},
		{"uppercase method", b64(strings.Replace(validCredentialJSON, `"method":"stripe"`, `"method":"Stripe"`, 1)), ReasonMalformedCredential},
		{"no request", b64(strings.Replace(validCredentialJSON, `"request":"`+vectorRequestB64+`",`, "", 1)), ReasonMalformedCredential},
		{"payload not an object", b64(strings.Replace(validCredentialJSON, `{"spt":"spt_123"}`, `"spt_123"`, 1)), ReasonMalformedCredential},
		{"payload null", b64(strings.Replace(validCredentialJSON, `{"spt":"spt_123"}`, `null`, 1)), ReasonMalformedCredential},
		{"source not a DID", b64(strings.Replace(validCredentialJSON, `did:pkh:eip155:8453:0xabc`, `0xabc`, 1)), ReasonMalformedCredential},
		{"JSON over the cap", b64(`{"challenge":{"id":"` + strings.Repeat("a", maxCredentialJSON) + `"}}`), ReasonMalformedCredential},
		{"header over the cap", strings.Repeat("a", MaxHeaderBytes+1), ReasonMalformedCredential},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeCredential(tc.token)
			if got := Reason(err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
			if tc.want == "" && (c.Challenge.ID != vectorIDExpires || c.Challenge.Expires != "2030-01-01T00:00:00Z") {
				t.Fatalf("decoded %+v", c)
			}
		})
	}
}

func TestCredentialEncodeRoundTrip(t *testing.T) {
	c, err := DecodeCredential(b64(validCredentialJSON))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if tok != b64(validCredentialJSON) {
		t.Fatalf("re-encoded differently:\n%s", tok)
	}
}

func TestDecodeStripePayload(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{`{"spt":"spt_1N2b3C"}`, ""},
		{`{"spt":"spt_1N2b3C","externalId":"order_1"}`, ""},
		{`{}`, ReasonInvalidPayload},
		{`{"spt":"pm_123"}`, ReasonInvalidPayload},
		{`{"spt":"spt_"}`, ReasonInvalidPayload},
		{`{"spt":"spt_a b"}`, ReasonInvalidPayload},
		{`{"spt":"spt_` + strings.Repeat("a", maxSPTBytes) + `"}`, ReasonInvalidPayload},
		{`{"spt":"spt_1","other":1}`, ReasonInvalidPayload},
		{`{"spt":1}`, ReasonInvalidPayload},
		{`{"spt":"spt_1","externalId":"order\u00001"}`, ReasonInvalidPayload},
		{`{"spt":"spt_1","externalId":"order\t1"}`, ReasonInvalidPayload},
		{`{"spt":"spt_1","externalId":"commande_é"}`, ""},
	} {
		if _, err := DecodeStripePayload([]byte(tc.in)); Reason(err) != tc.want {
			t.Errorf("%s: reason %q (%v), want %q", tc.in, Reason(err), err, tc.want)
		}
	}
	// The longest accepted token still makes an idempotency key Stripe takes.
	longest := ChargeRequest{ChallengeID: strings.Repeat("a", maxChallengeID), SPT: "spt_" + strings.Repeat("b", maxSPTBytes-4)}
	if n := len(longest.IdempotencyKey()); n > 255 {
		t.Fatalf("longest idempotency key is %d bytes", n)
	}
}

func TestCredentialFrom(t *testing.T) {
	tok := b64(validCredentialJSON)
	for _, tc := range []struct {
		name    string
		headers []string
		form    string
		reason  string
	}{
		{"payment", []string{"Payment " + tok}, formPayment, ""},
		{"scheme is case-insensitive", []string{"payment " + tok}, formPayment, ""},
		{"seed form", []string{"MPP pi_3MtwBwLkdIwHu7ix28a3tqPa"}, formMPP, ""},
		{"two payment fields", []string{"Payment " + tok, "Payment " + tok}, "", ReasonBadRequest},
		{"payment beside another scheme", []string{"x402 abc", "Payment " + tok}, "", ReasonBadRequest},
		{"a list in one field", []string{"Payment " + tok + ", Payment " + tok}, "", ReasonBadRequest},
		{"params instead of token68", []string{`Payment id="a", realm="b"`}, "", ReasonBadRequest},
		{"scheme without credential", []string{"Payment "}, "", ReasonMalformedCredential},
		{"another scheme only", []string{"Bearer abc"}, "", ReasonMalformedCredential},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := requestWith(tc.headers...)
			p, err := credentialFrom(r.Header)
			if Reason(err) != tc.reason {
				t.Fatalf("reason %q (%v), want %q", Reason(err), err, tc.reason)
			}
			if tc.reason == "" && p.form != tc.form {
				t.Fatalf("form %q, want %q", p.form, tc.form)
			}
		})
	}
	for _, bad := range []string{"pi_", "pi_abc-def", "ch_123", "pi_" + strings.Repeat("a", 300)} {
		if _, err := parsePaymentIntentID(bad); Reason(err) != ReasonMalformedCredential {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestReceipt(t *testing.T) {
	r := NewReceipt("pi_123", "order_1", testNow.Add(500*time.Millisecond))
	h, err := r.Header()
	if err != nil {
		t.Fatal(err)
	}
	if h.Get("Cache-Control") != "private" {
		t.Fatalf("Cache-Control %q", h.Get("Cache-Control"))
	}
	v := h.Get(HeaderReceipt)
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		t.Fatalf("receipt is not base64url without padding: %v", err)
	}
	want := `{"externalId":"order_1","method":"stripe","reference":"pi_123","status":"success","timestamp":"2026-03-23T12:00:00Z"}`
	if string(raw) != want {
		t.Fatalf("receipt JSON %s\nwant %s", raw, want)
	}
	back, err := DecodeReceipt(v)
	if err != nil || back != r {
		t.Fatalf("DecodeReceipt = %+v, %v", back, err)
	}
	for _, bad := range []string{"", "!!", b64(`{"method":"stripe"}`), b64(`{"method":"stripe","reference":"pi","status":"success","timestamp":"yesterday"}`)} {
		if _, err := DecodeReceipt(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}
