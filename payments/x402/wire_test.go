package x402

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/secureexec/secureexec/payments"
)

var dryRun = payments.Price{Tool: "http_get", Mode: payments.ModeDryRun, Amount: 10_000, Currency: "USDC", Resource: "/exec/tool"}

// TestOfferGolden pins the v2 and v1 offers byte for byte (testdata/*.json follow x402.md §2).
func TestOfferGolden(t *testing.T) {
	resource := ResourceFor(dryRun, "https://gateway.example/exec/tool")

	pr := NewPaymentRequired(resource, "PAYMENT-SIGNATURE header is required", Requirements(Base, dryRun, addr1, 0))
	golden(t, "testdata/payment_required_base.json", pr)
	header, err := EncodePaymentRequired(pr)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodePaymentRequired(header)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*back, pr) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", *back, pr)
	}

	v1, ok := RequirementsV1(Requirements(BaseSepolia, dryRun, addr1, 59500*time.Millisecond), resource)
	if !ok {
		t.Fatal("Base Sepolia has a v1 name")
	}
	prV1 := NewPaymentRequiredV1("X-PAYMENT header is required", v1)
	golden(t, "testdata/payment_required_v1_base_sepolia.json", prV1)
	body, err := EncodePaymentRequiredV1(prV1)
	if err != nil {
		t.Fatal(err)
	}
	backV1, err := DecodePaymentRequiredV1(body)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*backV1, prV1) {
		t.Fatalf("v1 round trip:\n got %+v\nwant %+v", *backV1, prV1)
	}

	if _, ok := RequirementsV1(offer(), resource); ok {
		t.Fatal("chain 31337 has no v1 name, so no v1 offer")
	}
}

func golden(t *testing.T, path string, v any) {
	t.Helper()
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := marshalCompact(v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.TrimSpace(want)) {
		t.Fatalf("%s:\n got %s\nwant %s", path, got, want)
	}
}

func TestDecodeHeaderForms(t *testing.T) {
	payload := mustEncode(t, pay(t, key2, offer(), testNow))
	raw, _ := base64.StdEncoding.DecodeString(payload)
	unpadded := base64.RawStdEncoding.EncodeToString(raw)
	for _, tc := range []struct {
		name  string
		value string
		want  string
	}{
		{"standard, padded", payload, ""},
		{"surrounding spaces", "  " + payload + " ", ""},
		{"unpadded", unpadded, ""},
		{"URL-safe alphabet", base64.URLEncoding.EncodeToString(append(raw, 0xfb, 0xff)), ReasonInvalidPayload},
		{"padding in the middle", payload[:8] + "=" + payload[9:], ReasonInvalidPayload},
		{"three padding characters", unpadded + "===", ReasonInvalidPayload},
		{"wrong padding", unpadded + "=", ReasonInvalidPayload},
		{"non-canonical trailing bits", nonCanonical(payload), ReasonInvalidPayload},
		{"empty", "", ReasonInvalidPayload},
		{"raw JSON instead of base64", string(raw), ReasonInvalidPayload},
		{"over 16 KiB", strings.Repeat("A", MaxHeaderBytes+4), ReasonInvalidPayload},
		{"base64 of garbage", base64.StdEncoding.EncodeToString([]byte("not json")), ReasonInvalidPayload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodePaymentPayload(tc.value)
			wantReason(t, err, tc.want)
		})
	}
}

// nonCanonical sets a padding bit of the last base64 character, which lax decoders ignore.
func nonCanonical(padded string) string {
	body := strings.TrimRight(padded, "=")
	if len(body) == len(padded) {
		panic("test payload needs padding")
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	last := strings.IndexByte(alphabet, body[len(body)-1])
	return body[:len(body)-1] + string(alphabet[last|1]) + padded[len(body):]
}

// TestDecodePaymentPayload covers the form checks on each field, through the wire.
func TestDecodePaymentPayload(t *testing.T) {
	base := pay(t, key2, offer(), testNow)
	baseJSON, err := marshalCompact(base)
	if err != nil {
		t.Fatal(err)
	}
	set := func(path string, v any) func(map[string]any) {
		return func(m map[string]any) {
			keys := strings.Split(path, ".")
			for _, k := range keys[:len(keys)-1] {
				m = m[k].(map[string]any)
			}
			if v == nil {
				delete(m, keys[len(keys)-1])
				return
			}
			m[keys[len(keys)-1]] = v
		}
	}
	sig65 := base.Payload.Signature
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"valid", nil, ""},
		{"unknown top-level field is ignored", set("clientHint", "x"), ""},
		{"unknown authorization field is ignored", set("payload.authorization.memo", 1), ""},
		{"version 3", set("x402Version", 3), ReasonInvalidX402Version},
		{"version 3 with another shape", func(m map[string]any) { m["x402Version"] = 3; m["payload"] = "opaque" }, ReasonInvalidX402Version},
		{"payload not an object", set("payload", "opaque"), ReasonInvalidPayload},
		{"version missing", set("x402Version", nil), ReasonInvalidX402Version},
		{"version as a string", set("x402Version", "2"), ReasonInvalidPayload},
		{"version 2.5", set("x402Version", 2.5), ReasonInvalidPayload},
		{"v2 without accepted", set("accepted", nil), ReasonInvalidPayload},
		// x402.md §5 rule 1: the reference facilitator, routed by the offer's scheme, refuses any
		// other accepted.scheme with invalid_exact_evm_scheme.
		{"scheme upto", set("accepted.scheme", "upto"), ReasonScheme},
		{"from not hex", set("payload.authorization.from", "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BZ"), ReasonInvalidPayload},
		{"from 19 bytes", set("payload.authorization.from", "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293"), ReasonInvalidPayload},
		{"to without 0x", set("payload.authorization.to", "70997970C51812dc3A010C7d01b50e0d17dc79C8aa"), ReasonInvalidPayload},
		{"to with 0X", set("payload.authorization.to", "0X70997970C51812dc3A010C7d01b50e0d17dc79C8"), ReasonInvalidPayload},
		{"value as a number", set("payload.authorization.value", 10000), ReasonInvalidPayload},
		{"value with a leading zero", set("payload.authorization.value", "010000"), ReasonInvalidPayload},
		{"value in hex", set("payload.authorization.value", "0x2710"), ReasonInvalidPayload},
		{"value negative", set("payload.authorization.value", "-1"), ReasonInvalidPayload},
		{"value with a sign", set("payload.authorization.value", "+10000"), ReasonInvalidPayload},
		{"value 2^256", set("payload.authorization.value", "115792089237316195423570985008687907853269984665640564039457584007913129639936"), ReasonInvalidPayload},
		{"value 2^256-1 is well-formed", set("payload.authorization.value", "115792089237316195423570985008687907853269984665640564039457584007913129639935"), ""},
		{"validBefore empty", set("payload.authorization.validBefore", ""), ReasonInvalidPayload},
		{"validAfter with spaces", set("payload.authorization.validAfter", " 0"), ReasonInvalidPayload},
		{"nonce 31 bytes", set("payload.authorization.nonce", "0x"+strings.Repeat("ab", 31)), ReasonInvalidPayload},
		{"nonce missing", set("payload.authorization.nonce", nil), ReasonInvalidPayload},
		{"signature 64 bytes", set("payload.signature", sig65[:130]), ReasonFailedToParseSignature},
		{"signature odd length", set("payload.signature", sig65+"0"), ReasonFailedToParseSignature},
		{"signature not hex", set("payload.signature", "0x"+strings.Repeat("zz", 65)), ReasonFailedToParseSignature},
		{"signature of a contract wallet", set("payload.signature", "0x"+strings.Repeat("ab", 700)), ""},
		{"signature over 2 KiB", set("payload.signature", "0x"+strings.Repeat("ab", MaxSignatureBytes+1)), ReasonFailedToParseSignature},
		{"payload missing", set("payload", nil), ReasonInvalidPayload},
		{"extra.name not a string", set("accepted.extra.name", 5), ReasonInvalidPayload},
		{"extra not an object", set("accepted.extra", "USD Coin"), ReasonInvalidPayload},
		{"trailing data", nil, ReasonInvalidPayload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(baseJSON, &m); err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				tc.edit(m)
			}
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "trailing data" {
				b = append(b, []byte(`{}`)...)
			}
			_, err = DecodePaymentPayload(base64.StdEncoding.EncodeToString(b))
			wantReason(t, err, tc.want)
		})
	}
}

func TestDecodePaymentPayloadV1(t *testing.T) {
	sepolia := CustomNetwork(84532, localToken, "USD Coin", "2")
	req := Requirements(sepolia, payments.Price{Amount: 10_000}, addr1, time.Minute)
	p := payV1(t, key2, req, "base-sepolia", testNow)
	h := mustEncode(t, p)
	raw, _ := base64.StdEncoding.DecodeString(h)
	if !bytes.HasPrefix(raw, []byte(`{"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":{"signature":"0x`)) {
		t.Fatalf("v1 payload shape: %s", raw)
	}
	got, err := DecodePaymentPayload(h)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, p)
	}
	p.Network = ""
	_, err = DecodePaymentPayload(mustEncode(t, p))
	wantReason(t, err, ReasonInvalidPayload)
	p.Network, p.Scheme = "base-sepolia", "upto"
	_, err = DecodePaymentPayload(mustEncode(t, p))
	wantReason(t, err, ReasonScheme) // ExactEvmSchemeV1's code, as for v2
}

func TestFindCredential(t *testing.T) {
	enc := mustEncode(t, pay(t, key2, offer(), testNow))
	for _, tc := range []struct {
		name       string
		headers    [][2]string
		wantHeader string // "" when no credential is found
		wantErr    bool
	}{
		{"none", nil, "", false},
		{"PAYMENT-SIGNATURE", [][2]string{{"Payment-Signature", enc}}, HeaderPaymentSignature, false},
		{"X-PAYMENT", [][2]string{{"x-payment", enc}}, HeaderXPayment, false},
		{"Authorization x402", [][2]string{{"Authorization", "x402 " + enc}}, HeaderAuthorization, false},
		{"Authorization X402 with a tab", [][2]string{{"Authorization", "X402\t" + enc}}, HeaderAuthorization, false},
		{"Authorization of another scheme", [][2]string{{"Authorization", "Bearer abc"}}, "", false},
		{"Authorization x402402 is another scheme", [][2]string{{"Authorization", "x402402 abc"}}, "", false},
		// RFC 9110 §11.4: a credential may be the scheme alone. It is ours, and refused as empty,
		// not "a scheme no rail accepts".
		{"Authorization x402 without a credential", [][2]string{{"Authorization", "x402"}}, HeaderAuthorization, false},
		{"Authorization Payment and x402", [][2]string{{"Authorization", "Payment abc"}, {"Authorization", "x402 " + enc}}, HeaderAuthorization, false},
		{"PAYMENT-SIGNATURE wins over X-PAYMENT", [][2]string{{"X-Payment", "other"}, {"Payment-Signature", enc}}, HeaderPaymentSignature, false},
		{"X-PAYMENT wins over Authorization", [][2]string{{"Authorization", "x402 other"}, {"X-Payment", enc}}, HeaderXPayment, false},
		{"PAYMENT-SIGNATURE twice", [][2]string{{"Payment-Signature", enc}, {"Payment-Signature", enc}}, HeaderPaymentSignature, true},
		{"two x402 authorizations", [][2]string{{"Authorization", "x402 " + enc}, {"Authorization", "x402 " + enc}}, HeaderAuthorization, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, kv := range tc.headers {
				h.Add(kv[0], kv[1])
			}
			c, ok, err := FindCredential(h)
			if (err != nil) != tc.wantErr || ok != (tc.wantHeader != "") || c.Header != tc.wantHeader {
				t.Fatalf("FindCredential = %+v, %v, %v", c, ok, err)
			}
			if HasCredential(h) != ok {
				t.Fatal("HasCredential disagrees with FindCredential")
			}
			if ok && !tc.wantErr && c.Value == enc {
				if _, _, err := PayloadFromRequest(h); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	if _, _, err := PayloadFromRequest(http.Header{}); Reason(err) != ReasonInvalidPayload {
		t.Fatalf("no credential: %v", err)
	}
}

func TestDecodePaymentRequired(t *testing.T) {
	valid := NewPaymentRequired(ResourceInfo{URL: "https://gateway.example/exec/tool"}, "", Requirements(Base, dryRun, addr1, time.Minute))
	for _, tc := range []struct {
		name string
		edit func(*PaymentRequired)
		want string
	}{
		{"valid", nil, ""},
		{"non-EVM entry", func(p *PaymentRequired) {
			p.Accepts = append(p.Accepts, PaymentRequirements{Scheme: "exact", Network: "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
				Amount: "10000", Asset: "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", PayTo: "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin", MaxTimeoutSeconds: 60})
		}, ""},
		{"version 1 in the header", func(p *PaymentRequired) { p.X402Version = 1 }, ReasonInvalidX402Version},
		{"no resource url", func(p *PaymentRequired) { p.Resource.URL = "" }, ReasonInvalidPaymentRequirements},
		{"no accepts", func(p *PaymentRequired) { p.Accepts = nil }, ReasonInvalidPaymentRequirements},
		{"amount not an integer", func(p *PaymentRequired) { p.Accepts[0].Amount = "0.01" }, ReasonInvalidPaymentRequirements},
		{"network not CAIP-2", func(p *PaymentRequired) { p.Accepts[0].Network = "base" }, ReasonInvalidPaymentRequirements},
		{"zero timeout", func(p *PaymentRequired) { p.Accepts[0].MaxTimeoutSeconds = 0 }, ReasonInvalidPaymentRequirements},
		{"no payTo", func(p *PaymentRequired) { p.Accepts[0].PayTo = "" }, ReasonInvalidPaymentRequirements},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := valid
			pr.Accepts = append([]PaymentRequirements(nil), valid.Accepts...)
			if tc.edit != nil {
				tc.edit(&pr)
			}
			h, err := EncodePaymentRequired(pr)
			if err != nil {
				t.Fatal(err)
			}
			_, err = DecodePaymentRequired(h)
			wantReason(t, err, tc.want)
		})
	}
	if _, err := DecodePaymentRequiredV1(bytes.Repeat([]byte(" "), MaxBodyBytes+1)); Reason(err) != ReasonInvalidPaymentRequirements {
		t.Fatalf("oversized v1 body: %v", err)
	}
}

func TestSettlementResponse(t *testing.T) {
	ok := SettlementResponse{Success: true, Transaction: "0x" + strings.Repeat("ab", 32), Network: "eip155:8453", Payer: addr2.Hex()}
	h, err := EncodeSettlementResponse(ok)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(h)
	want := `{"success":true,"transaction":"0x` + strings.Repeat("ab", 32) + `","network":"eip155:8453","payer":"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"}`
	if string(raw) != want {
		t.Fatalf("got %s\nwant %s", raw, want)
	}
	back, err := DecodeSettlementResponse(h)
	if err != nil || !reflect.DeepEqual(*back, ok) {
		t.Fatalf("round trip %+v, %v", back, err)
	}
	pending := SettlementResponse{Transaction: "0x" + strings.Repeat("cd", 32), Network: "base", ErrorReason: ReasonSettlementPending}
	h, _ = EncodeSettlementResponse(pending)
	if back, err := DecodeSettlementResponse(h); err != nil || back.ErrorReason != ReasonSettlementPending || back.Success {
		t.Fatalf("pending: %+v, %v", back, err)
	}
	for _, bad := range []string{`{"success":true,"transaction":"","network":"base"}`, `{"success":false}`, `[]`} {
		if _, err := DecodeSettlementResponse(base64.StdEncoding.EncodeToString([]byte(bad))); Reason(err) != ReasonInvalidPayload {
			t.Fatalf("%s: %v", bad, err)
		}
	}
	if ResponseHeader(1) != HeaderXPaymentResponse || ResponseHeader(2) != HeaderPaymentResponse {
		t.Fatal("response header by version")
	}
}

func TestExtra(t *testing.T) {
	var e Extra
	in := `{"version":"2","paymentFlow":"authorization","name":"USD Coin","nested":{ "b":1, "a":[1, 2] }}`
	if err := json.Unmarshal([]byte(in), &e); err != nil {
		t.Fatal(err)
	}
	out, err := marshalCompact(e)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"USD Coin","version":"2","nested":{"b":1,"a":[1,2]},"paymentFlow":"authorization"}`; string(out) != want {
		t.Fatalf("got %s\nwant %s", out, want)
	}
	server := Extra{Name: "USD Coin", Version: "2", Other: map[string]json.RawMessage{"nested": json.RawMessage(`{"a":[1,2],"b":1}`)}}
	for _, tc := range []struct {
		name   string
		client Extra
		want   bool
	}{
		{"same keys, other order", e, true},
		{"name differs", Extra{Name: "USDC", Version: "2", Other: e.Other}, false},
		{"server key missing", Extra{Name: "USD Coin", Version: "2"}, false},
		{"server value differs", Extra{Name: "USD Coin", Version: "2", Other: map[string]json.RawMessage{"nested": json.RawMessage(`{"a":[2,1],"b":1}`)}}, false},
		{"number spelled differently", Extra{Name: "USD Coin", Version: "2", Other: map[string]json.RawMessage{"nested": json.RawMessage(`{"a":[1.0,2e0],"b":1}`)}}, true},
	} {
		if got := tc.client.Contains(server); got != tc.want {
			t.Errorf("%s: Contains = %v", tc.name, got)
		}
	}
	escaped := Extra{Name: "<USD & Coin>"}
	if out, _ := marshalCompact(escaped); string(out) != `{"name":"<USD & Coin>"}` {
		t.Fatalf("HTML-escaped: %s", out)
	}
	var fromEscapes Extra
	if err := json.Unmarshal([]byte(`{"name":"USD\u0020Coin"}`), &fromEscapes); err != nil || fromEscapes.Name != "USD Coin" {
		t.Fatalf("escaped name: %q %v", fromEscapes.Name, err)
	}
}

func TestPaymentIdentifier(t *testing.T) {
	pr := NewPaymentRequired(ResourceInfo{URL: "https://gateway.example/exec/tool"}, "", offer())
	DeclarePaymentIdentifier(&pr, true)
	h, err := EncodePaymentRequired(pr)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodePaymentRequired(h)
	if err != nil {
		t.Fatal(err)
	}
	var decl struct {
		Info   struct{ Required bool }
		Schema struct{ Required []string }
	}
	if err := json.Unmarshal(back.Extensions[ExtensionPaymentIdentifier], &decl); err != nil || !decl.Info.Required || len(decl.Schema.Required) != 1 {
		t.Fatalf("declaration %s: %v", back.Extensions[ExtensionPaymentIdentifier], err)
	}

	p := pay(t, key2, offer(), testNow)
	if _, ok, err := p.PaymentIdentifier(); ok || err != nil {
		t.Fatal("no id sent")
	}
	id := "pay_7d5d747be160e280504c099d984bcfe0"
	if err := p.SetPaymentIdentifier(id); err != nil {
		t.Fatal(err)
	}
	q, err := DecodePaymentPayload(mustEncode(t, p))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok, err := q.PaymentIdentifier(); got != id || !ok || err != nil {
		t.Fatalf("id %q %v %v", got, ok, err)
	}
	if q.Fingerprint() != p.Fingerprint() {
		t.Fatal("fingerprint changed through the wire")
	}
	r := *q
	r.Payload.Authorization.Nonce = "0x" + strings.Repeat("00", 32)
	if r.Fingerprint() == q.Fingerprint() {
		t.Fatal("fingerprint ignores the nonce")
	}
	for _, bad := range []string{"short", strings.Repeat("a", 129), "pay_7d5d747be160e280!"} {
		if p.SetPaymentIdentifier(bad) == nil {
			t.Fatalf("accepted id %q", bad)
		}
		p.Extensions[ExtensionPaymentIdentifier] = json.RawMessage(`{"info":{"required":false,"id":"` + bad + `"}}`)
		if _, _, err := p.PaymentIdentifier(); Reason(err) != ReasonInvalidPayload {
			t.Fatalf("id %q: %v", bad, err)
		}
	}
}

// TestFastPathTaken: the reference client's payloads, and ours, take the fast decoder; those
// with extensions or unknown fields take encoding/json's path to the same result.
func TestFastPathTaken(t *testing.T) {
	var headers []string
	for _, v := range loadVectors(t) {
		headers = append(headers, v.PaymentSignatureHeader)
	}
	headers = append(headers, mustEncode(t, pay(t, key2, offer(), testNow)), mustEncode(t, payV1(t, key2, offer(), "base-sepolia", testNow)))
	for _, h := range headers {
		raw, _ := base64.StdEncoding.DecodeString(h)
		if _, ok := fastPayload(raw); !ok {
			t.Fatalf("slow path for %s", raw)
		}
	}
	p := pay(t, key2, offer(), testNow)
	if err := p.SetPaymentIdentifier("pay_7d5d747be160e280504c099d984bcfe0"); err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(mustEncode(t, p))
	if _, ok := fastPayload(raw); ok {
		t.Fatal("extensions are not the fast path's")
	}
	if q, err := DecodePaymentPayload(mustEncode(t, p)); err != nil || !reflect.DeepEqual(p, q) {
		t.Fatalf("slow path: %v", err)
	}
}
