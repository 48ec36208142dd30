package mpp

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The mpp.md §2 vectors, verified there against mppx 0.11.0 and an independent HMAC.
const (
	vectorRequestB64 = "eyJhbW91bnQiOiI1MCIsImN1cnJlbmN5IjoidXNkIiwiZGVzY3JpcHRpb24iOiJTZWN1cmVFeGVjIGNhbGwiLCJtZXRob2REZXRhaWxzIjp7Im5ldHdvcmtJZCI6InByb2ZpbGVfdGVzdCIsInBheW1lbnRNZXRob2RUeXBlcyI6WyJjYXJkIl19fQ"
	vectorIDExpires  = "g9AWHTSaHQPvX3isMNqpd2CWcXzwfR0ONFVggYLlO0g"
	vectorIDNoExpiry = "FF_beKHYQByMkxpoGbg1P-z4BDqh2p7xr3tffMsQh9E"
)

func TestChallengeIDVectors(t *testing.T) {
	req, err := EncodeRequest(stripeRequest{Amount: "50", Currency: "usd", Description: "SecureExec call",
		MethodDetails: methodDetails{NetworkID: "profile_test", PaymentMethodTypes: []string{"card"}}})
	if err != nil {
		t.Fatal(err)
	}
	if req != vectorRequestB64 {
		t.Fatalf("request_b64url = %s\nwant             %s", req, vectorRequestB64)
	}
	// The same request written with its keys out of order canonicalises to the same bytes.
	if got, _ := EncodeRequest(map[string]any{"methodDetails": map[string]any{"paymentMethodTypes": []string{"card"}, "networkId": "profile_test"},
		"description": "SecureExec call", "currency": "usd", "amount": "50"}); got != vectorRequestB64 {
		t.Fatalf("unordered request encodes to %s", got)
	}
	for _, tc := range []struct {
		name, expires, want string
	}{
		{"with expires", "2030-01-01T00:00:00Z", vectorIDExpires},
		{"without expires", "", vectorIDNoExpiry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Challenge{Realm: "api.example.com", Method: "stripe", Intent: "charge", Request: req, Expires: tc.expires}
			if got := ComputeID([]byte(testSecret), c); got != tc.want {
				t.Fatalf("id = %s, want %s", got, tc.want)
			}
			c.ID = tc.want
			k, err := NewKeyring([]byte(testSecret), nil, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if !k.Verify(c, testNow) {
				t.Fatal("keyring refuses the vector")
			}
		})
	}
}

func TestKeyringRotation(t *testing.T) {
	oldSecret, newSecret := []byte(strings.Repeat("o", 32)), []byte(strings.Repeat("n", 32))
	rotated := testNow
	k, err := NewKeyring(newSecret, oldSecret, rotated.Add(5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	c := Challenge{Realm: "r", Method: "stripe", Intent: "charge", Request: "e30", Expires: "2030-01-01T00:00:00Z"}
	signedOld, signedNew, signedOther := c, c, c
	signedOld.ID = ComputeID(oldSecret, c)
	signedNew.ID = k.Sign(c)
	signedOther.ID = ComputeID([]byte(strings.Repeat("x", 32)), c)
	for _, tc := range []struct {
		name string
		c    Challenge
		at   time.Time
		want bool
	}{
		{"current secret", signedNew, rotated, true},
		{"current secret long after", signedNew, rotated.Add(time.Hour), true},
		{"previous secret within its challenges' lifetime", signedOld, rotated.Add(4 * time.Minute), true},
		{"previous secret once its challenges expired", signedOld, rotated.Add(5 * time.Minute), false},
		{"unknown secret", signedOther, rotated, false},
		{"id of other params", Challenge{ID: signedNew.ID, Realm: "r", Method: "stripe", Intent: "charge", Request: "e31", Expires: c.Expires}, rotated, false},
	} {
		if got := k.Verify(tc.c, tc.at); got != tc.want {
			t.Errorf("%s: Verify = %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, err := NewKeyring([]byte("short"), nil, time.Time{}); err == nil {
		t.Error("a 5-byte secret was accepted")
	}
}

func TestChallengeHeaderRoundTrip(t *testing.T) {
	c := Challenge{ID: vectorIDExpires, Realm: `api "quoted" \ realm`, Method: "stripe", Intent: "charge",
		Request: vectorRequestB64, Expires: "2030-01-01T00:00:00Z", Description: "a, b; c=d"}
	v := c.HeaderValue()
	cs, err := ParseChallenges(v)
	if err != nil {
		t.Fatalf("%s: %v", v, err)
	}
	if len(cs) != 1 || cs[0].Scheme != "Payment" {
		t.Fatalf("parsed %+v", cs)
	}
	got, err := ChallengeFromParams(cs[0].Params)
	if err != nil {
		t.Fatal(err)
	}
	if got != c {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
}

func TestParseChallenges(t *testing.T) {
	type ch = AuthChallenge
	for _, tc := range []struct {
		name string
		in   string
		want []AuthChallenge
		err  bool
	}{
		{"one payment challenge", `Payment id="a", realm="r", method=stripe`, []ch{{Scheme: "Payment", Params: map[string]string{"id": "a", "realm": "r", "method": "stripe"}}}, false},
		{"names are case-insensitive", `Payment ID="a", Realm = "r"`, []ch{{Scheme: "Payment", Params: map[string]string{"id": "a", "realm": "r"}}}, false},
		{"two challenges in one value", `Payment id="a", method="stripe", Payment id="b", method="tempo"`,
			[]ch{{Scheme: "Payment", Params: map[string]string{"id": "a", "method": "stripe"}}, {Scheme: "Payment", Params: map[string]string{"id": "b", "method": "tempo"}}}, false},
		{"a bare scheme between others", `Basic realm="x", Negotiate, Payment id="c"`,
			[]ch{{Scheme: "Basic", Params: map[string]string{"realm": "x"}}, {Scheme: "Negotiate"}, {Scheme: "Payment", Params: map[string]string{"id": "c"}}}, false},
		{"token68 credential", `Payment eyJhYmMiOjF9`, []ch{{Scheme: "Payment", Token68: "eyJhYmMiOjF9"}}, false},
		{"padded token68", `Bearer abc==, Payment id="x"`, []ch{{Scheme: "Bearer", Token68: "abc=="}, {Scheme: "Payment", Params: map[string]string{"id": "x"}}}, false},
		{"escaped quotes", `Payment description="say \"hi\" \\ bye"`, []ch{{Scheme: "Payment", Params: map[string]string{"description": `say "hi" \ bye`}}}, false},
		{"empty list elements", `, Payment id="a",, realm="r" ,`, []ch{{Scheme: "Payment", Params: map[string]string{"id": "a", "realm": "r"}}}, false},
		{"repeated param", `Payment id="a", id="b"`, nil, true},
		{"unterminated quote", `Payment id="a`, nil, true},
		{"missing value", `Payment id=, realm="r"`, nil, true},
		{"control character", "Payment id=\"a\x01\"", nil, true},
		{"two tokens", `Payment abc def`, nil, true},
		{"empty", ``, nil, true},
		{"no space after scheme", `Payment,id="a"`, []ch{{Scheme: "Payment"}, {Scheme: "id"}}, true},
		{"oversized", "Payment id=\"" + strings.Repeat("a", MaxHeaderBytes) + "\"", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseChallenges(tc.in)
			if tc.err {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				if !errors.Is(err, ErrAuthSyntax) {
					t.Fatalf("error %v is not ErrAuthSyntax", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseAuthParams(t *testing.T) {
	got, err := ParseAuthParams(`id="a", realm=api.example.com ,expires="2030-01-01T00:00:00Z"`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"id": "a", "realm": "api.example.com", "expires": "2030-01-01T00:00:00Z"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{`id`, `id="a" realm="b"`, `="a"`, `id="a", id="a"`} {
		if _, err := ParseAuthParams(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestChallengeFromParamsRequiresFields(t *testing.T) {
	full := map[string]string{"id": "a", "realm": "r", "method": "stripe", "intent": "charge", "request": "e30"}
	if _, err := ChallengeFromParams(full); err != nil {
		t.Fatal(err)
	}
	for _, drop := range []string{"id", "realm", "method", "intent", "request"} {
		p := map[string]string{}
		for k, v := range full {
			if k != drop {
				p[k] = v
			}
		}
		if _, err := ChallengeFromParams(p); err == nil {
			t.Errorf("challenge without %s accepted", drop)
		}
	}
	full["method"] = "Stripe"
	if _, err := ChallengeFromParams(full); err == nil {
		t.Error("uppercase method accepted")
	}
}

func TestAcceptPayment(t *testing.T) {
	ranges, err := ParseAcceptPayment([]string{"tempo/charge, stripe/charge;q=0.5", "*/session;q=0.3"})
	if err != nil {
		t.Fatal(err)
	}
	want := []PaymentRange{{"tempo", "charge", 1000}, {"stripe", "charge", 500}, {"*", "session", 300}}
	if !reflect.DeepEqual(ranges, want) {
		t.Fatalf("got %+v", ranges)
	}
	for _, tc := range []struct {
		header         string
		q              int
		matched, offer bool
	}{
		{"", 1000, true, true},
		{"stripe/charge", 1000, true, true},
		{"stripe/charge;q=0", 0, true, false},
		{"*/*;q=0, stripe/charge;q=0.2", 200, true, true}, // the specific range wins over */*
		{"stripe/*;q=0.7, */charge;q=0", 700, true, true}, // method beats intent
		{"*/*;q=0", 0, true, false},
		{"tempo/charge", 0, false, true},      // no match: the normal set is kept
		{"stripe/charge;q=2", 0, false, true}, // malformed: ignored
		{"STRIPE/Charge;Q=0.000", 0, true, false},
	} {
		var values []string
		if tc.header != "" {
			values = []string{tc.header}
		}
		rs, err := ParseAcceptPayment(values)
		if err == nil {
			q, matched := Preference(rs, "stripe", "charge")
			if q != tc.q || matched != tc.matched {
				t.Errorf("%q: Preference = %d, %v; want %d, %v", tc.header, q, matched, tc.q, tc.matched)
			}
		}
		if got := offerWanted(WithAcceptPayment(context.Background(), values), "stripe", "charge"); got != tc.offer {
			t.Errorf("%q: offered = %v, want %v", tc.header, got, tc.offer)
		}
	}
	for _, bad := range []string{"stripe", "stripe/charge;q=1.5", "stripe/charge;q=0.1234", "stripe/charge;x=1", "str ipe/charge", "/charge"} {
		if _, err := ParseAcceptPayment([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
