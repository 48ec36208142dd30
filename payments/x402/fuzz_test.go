package x402

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// Every decoder of the network: it never panics, refuses only with a reason code, refuses
// anything over its size cap before decoding it, and what it accepts survives re-encoding.

func seedPayments(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(v.PaymentSignatureHeader)
	}
	req := offer()
	f.Add(mustEncode(f, pay(f, key2, req, testNow)))
	f.Add(mustEncode(f, payV1(f, key2, req, "base-sepolia", testNow)))
	f.Add(strings.TrimRight(mustEncode(f, pay(f, key2, req, testNow)), "="))
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"x402Version":2,"accepted":{"scheme":"exact","network":"eip155:1","extra":{"name":"a","k":[1,{"b":null}]}},"payload":{},"extensions":{"payment-identifier":{"info":{"id":"x"}}}}`)))
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"x402Version":3}`)))
	f.Add("")
	f.Add("====")
	f.Add("not base64!")
}

func FuzzDecodePaymentPayload(f *testing.F) {
	seedPayments(f)
	req := offer()
	f.Fuzz(func(t *testing.T, header string) {
		p, err := DecodePaymentPayload(header)
		checkPaymentDecode(t, header, p, err)
		if err == nil {
			// Verification of whatever decodes must refuse cleanly, never panic.
			if _, err := VerifyLocal(p, req, testNow); err != nil && Reason(err) == "" {
				t.Fatalf("verification error without a reason: %v", err)
			}
		}
	})
}

func FuzzParseAuthorization(f *testing.F) {
	seedPayments(f)
	f.Add("x402")
	f.Add("X402 \t ")
	f.Add("Bearer abc")
	f.Fuzz(func(t *testing.T, value string) {
		p, err := ParseAuthorization(value)
		cred, ok := cutAuthScheme(value)
		if !ok && err == nil {
			t.Fatal("accepted a value without the x402 scheme")
		}
		checkPaymentDecode(t, cred, p, err)
		h := http.Header{}
		h.Set(HeaderAuthorization, value)
		c, found, ferr := FindCredential(h)
		if found != ok || ferr != nil || (ok && c.Value != cred) {
			t.Fatalf("FindCredential = %+v %v %v, cut = %q %v", c, found, ferr, cred, ok)
		}
	})
}

func checkPaymentDecode(t *testing.T, header string, p *PaymentPayload, err error) {
	t.Helper()
	if err != nil {
		if Reason(err) == "" {
			t.Fatalf("error without a reason: %v", err)
		}
		return
	}
	if len(strings.TrimSpace(header)) > MaxHeaderBytes {
		t.Fatalf("accepted %d bytes", len(header))
	}
	enc, err := EncodePaymentPayload(p)
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	q, err := DecodePaymentPayload(enc)
	if err != nil {
		t.Fatalf("decode(encode(p)): %v\n%s", err, enc)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", q, p)
	}
	if p.X402Version != 1 && p.X402Version != 2 {
		t.Fatalf("accepted version %d", p.X402Version)
	}
}

func FuzzDecodePaymentRequired(f *testing.F) {
	pr := NewPaymentRequired(ResourceFor(dryRun, "https://gateway.example/exec/tool"), "PAYMENT-SIGNATURE header is required",
		Requirements(Base, dryRun, addr1, 0), Requirements(BaseSepolia, dryRun, addr1, 0))
	DeclarePaymentIdentifier(&pr, false)
	h, err := EncodePaymentRequired(pr)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(h)
	golden, err := os.ReadFile("testdata/payment_required_base.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(base64.StdEncoding.EncodeToString(golden))
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"x402Version":2,"resource":{"url":"u"},"accepts":[{"scheme":"s","network":"a:b","amount":"0","asset":"x","payTo":"y","maxTimeoutSeconds":1,"extra":null}],"extensions":null}`)))
	f.Fuzz(func(t *testing.T, header string) {
		pr, err := DecodePaymentRequired(header)
		if err != nil {
			if Reason(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if len(strings.TrimSpace(header)) > MaxHeaderBytes {
			t.Fatalf("accepted %d bytes", len(header))
		}
		enc, err := EncodePaymentRequired(*pr)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := DecodePaymentRequired(enc)
		if err != nil || !reflect.DeepEqual(pr, back) {
			t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, back, pr)
		}
	})
}

func FuzzDecodePaymentRequiredV1(f *testing.F) {
	golden, err := os.ReadFile("testdata/payment_required_v1_base_sepolia.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden)
	f.Add([]byte(`{"x402Version":1,"accepts":[{"scheme":"exact","network":"base","maxAmountRequired":"1","resource":"r","description":"","mimeType":"","outputSchema":{"input": {"type":"http"}},"payTo":"p","maxTimeoutSeconds":5,"asset":"a","extra":{}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		pr, err := DecodePaymentRequiredV1(body)
		if err != nil {
			if Reason(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if len(body) > MaxBodyBytes {
			t.Fatalf("accepted %d bytes", len(body))
		}
		enc, err := EncodePaymentRequiredV1(*pr)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := DecodePaymentRequiredV1(enc)
		if err != nil || !reflect.DeepEqual(pr, back) {
			t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, back, pr)
		}
	})
}

func FuzzDecodeSettlementResponse(f *testing.F) {
	for _, r := range []SettlementResponse{
		{Success: true, Transaction: "0x" + strings.Repeat("ab", 32), Network: "eip155:8453", Payer: addr2.Hex()},
		{Transaction: "0x" + strings.Repeat("cd", 32), Network: "base", Payer: addr2.Hex(), ErrorReason: ReasonSettlementPending, ErrorMessage: "waiting"},
		{Network: "eip155:84532", ErrorReason: ReasonTransactionFailed, Extensions: Extensions{"x": []byte(`{"a":1}`)}},
	} {
		h, err := EncodeSettlementResponse(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r, err := DecodeSettlementResponse(header)
		if err != nil {
			if Reason(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if len(strings.TrimSpace(header)) > MaxHeaderBytes {
			t.Fatalf("accepted %d bytes", len(header))
		}
		enc, err := EncodeSettlementResponse(*r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := DecodeSettlementResponse(enc)
		if err != nil || !reflect.DeepEqual(r, back) {
			t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, back, r)
		}
	})
}

// FuzzFastPayload is differential: whatever the fast decoder accepts, encoding/json decodes to
// exactly the same payment.
func FuzzFastPayload(f *testing.F) {
	for _, v := range loadVectors(f) {
		raw, _ := base64.StdEncoding.DecodeString(v.PaymentSignatureHeader)
		f.Add(raw)
	}
	for _, s := range []string{
		`{"x402Version":1,"scheme":"exact","network":"base","payload":{"signature":"0x","authorization":{}}}`,
		` { "x402Version" : -0 , "accepted" : { "maxTimeoutSeconds" : 9223372036854775807 , "extra" : { } } } `,
		`{"x402Version":2,"accepted":{"extra":{"name":"a","version":"b"}},"resource":{"url":"u","mimeType":"m","description":"d"}}`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !utf8.Valid(raw) {
			return // decodeHeader refuses it before either decoder runs
		}
		p, ok := fastPayload(raw)
		if !ok {
			return
		}
		var q PaymentPayload
		if err := json.Unmarshal(raw, &q); err != nil {
			t.Fatalf("fast path accepted what encoding/json refuses (%v): %s", err, raw)
		}
		if !reflect.DeepEqual(*p, q) {
			t.Fatalf("decoders disagree on %s:\nfast %+v\njson %+v", raw, *p, q)
		}
	})
}
