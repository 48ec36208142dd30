package mpp

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// Every parser of the network: it never panics, refuses with its own error or reason, and
// what it accepts holds together.

func FuzzDecodeCredential(f *testing.F) {
	f.Add(b64(validCredentialJSON))
	f.Add(b64(`{"challenge":{"id":"a","realm":"r","method":"stripe","intent":"charge","request":"e30"},"payload":{"spt":"spt_1"}}`))
	f.Add(b64(`{"challenge":{},"payload":{}}`))
	f.Add(b64(`{"challenge":{"id":"a","id":"b"}}`))
	f.Add(b64("[]"))
	f.Add("")
	f.Add("====")
	f.Add("eyJ")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := DecodeCredential(token)
		if err != nil {
			if r := Reason(err); r != ReasonMalformedCredential {
				t.Fatalf("refusal without the malformed-credential reason: %v", err)
			}
			return
		}
		if c.Challenge.ID == "" || !validMethod(c.Challenge.Method) || len(c.Payload) == 0 || !json.Valid(c.Payload) {
			t.Fatalf("accepted an incomplete credential: %+v", c)
		}
		// What decodes re-encodes and decodes to the same credential.
		again, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := DecodeCredential(again)
		if err != nil || c2.Challenge != c.Challenge || c2.Source != c.Source {
			t.Fatalf("round trip: %+v, %v", c2, err)
		}
		if _, err := DecodeStripePayload(c.Payload); err != nil && Reason(err) != ReasonInvalidPayload {
			t.Fatalf("payload refusal without a reason: %v", err)
		}
	})
}

func FuzzParseChallenges(f *testing.F) {
	f.Add(`Payment id="` + vectorIDExpires + `", realm="api.example.com", method="stripe", intent="charge", request="` + vectorRequestB64 + `", expires="2030-01-01T00:00:00Z"`)
	f.Add(`Payment id="a", Payment id="b", Basic realm="x"`)
	f.Add(`Payment abc==, Bearer def`)
	f.Add(`Payment description="a \"b\" \\ c"`)
	f.Add(`, ,Payment`)
	f.Add(`Payment id=`)
	f.Add("Payment id=\"\x00\"")
	f.Fuzz(func(t *testing.T, v string) {
		cs, err := ParseChallenges(v)
		if err != nil {
			if !errors.Is(err, ErrAuthSyntax) {
				t.Fatalf("error without ErrAuthSyntax: %v", err)
			}
			return
		}
		for _, c := range cs {
			if c.Scheme == "" || (c.Token68 != "" && c.Params != nil) {
				t.Fatalf("parsed %+v", c)
			}
			if c.Params == nil {
				continue
			}
			// A Payment challenge that parses renders and parses back to the same params.
			ch, err := ChallengeFromParams(c.Params)
			if err != nil {
				continue
			}
			back, err := ParseChallenges(ch.HeaderValue())
			if err != nil || len(back) != 1 {
				t.Fatalf("re-parse of %q: %v", ch.HeaderValue(), err)
			}
			got, err := ChallengeFromParams(back[0].Params)
			if err != nil || got != ch {
				if strings.ContainsAny(ch.Realm+ch.Description+ch.ID+ch.Request+ch.Expires+ch.Digest+ch.Opaque+ch.Header+ch.Method+ch.Intent, "\x7f") {
					return // DEL has no quoted-string form; HeaderValue drops it
				}
				t.Fatalf("round trip of %+v: %+v, %v", ch, got, err)
			}
		}
	})
}

func FuzzParseAuthParams(f *testing.F) {
	f.Add(`id="a", realm=api.example.com ,expires="2030-01-01T00:00:00Z"`)
	f.Add(`a=b,,c="d\"e"`)
	f.Add(`=`)
	f.Fuzz(func(t *testing.T, v string) {
		ps, err := ParseAuthParams(v)
		if err != nil {
			if !errors.Is(err, ErrAuthSyntax) {
				t.Fatalf("error without ErrAuthSyntax: %v", err)
			}
			return
		}
		for k := range ps {
			if k == "" || k != strings.ToLower(k) {
				t.Fatalf("param name %q", k)
			}
		}
	})
}

func FuzzParseAcceptPayment(f *testing.F) {
	f.Add("tempo/charge, stripe/charge;q=0.5, */session;q=0.3")
	f.Add("*/*;q=0")
	f.Add("stripe/charge;q=1.000")
	f.Fuzz(func(t *testing.T, v string) {
		rs, err := ParseAcceptPayment([]string{v})
		if err != nil {
			return
		}
		for _, r := range rs {
			if r.Q < 0 || r.Q > 1000 || r.Method == "" || r.Intent == "" {
				t.Fatalf("range %+v", r)
			}
		}
		if q, _ := Preference(rs, MethodStripe, IntentCharge); q < 0 || q > 1000 {
			t.Fatalf("q %d", q)
		}
	})
}
