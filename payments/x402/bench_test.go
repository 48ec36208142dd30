package x402

import (
	"testing"

	"github.com/ethereum/go-ethereum/crypto"
)

// BenchmarkVerifyLocal is the hot path of one paid call: decode a PAYMENT-SIGNATURE header and
// run every local rule, ecrecover included. Target: >= 20,000 per second per core.
//
//	go test -run '^$' -bench VerifyLocal -benchmem -cpu 1 ./payments/x402/
func BenchmarkVerifyLocal(b *testing.B) {
	req := offer()
	header := mustEncode(b, pay(b, key2, req, testNow))
	b.ReportAllocs()
	for b.Loop() {
		p, err := DecodePaymentPayload(header)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := VerifyLocal(p, req, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodePaymentPayload isolates the header decoding.
func BenchmarkDecodePaymentPayload(b *testing.B) {
	header := mustEncode(b, pay(b, key2, offer(), testNow))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodePaymentPayload(header); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyLocalDecoded isolates verification of an already decoded payment.
func BenchmarkVerifyLocalDecoded(b *testing.B) {
	req := offer()
	p := pay(b, key2, req, testNow)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := VerifyLocal(p, req, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEcrecover is the floor under VerifyLocal: one secp256k1 public-key recovery.
func BenchmarkEcrecover(b *testing.B) {
	req := offer()
	p := pay(b, key2, req, testNow)
	digest, err := SigningDigest(req, p.Payload.Authorization)
	if err != nil {
		b.Fatal(err)
	}
	sig, _ := parseHex(p.Payload.Signature)
	sig[64] -= 27
	b.ReportAllocs()
	for b.Loop() {
		if _, err := crypto.Ecrecover(digest[:], sig); err != nil {
			b.Fatal(err)
		}
	}
}
