package proof

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
)

type vector struct {
	Name      string `json:"name"`
	Input     string `json:"input"`
	Canonical string `json:"canonical"`
	ProofHash string `json:"proofHash"`
}

// The vectors were computed outside this package (see testdata/vectors.json; the later ones
// with Node.js, whose JSON.stringify and default sort are RFC 8785's own reference for numbers,
// strings and member order): a change to canonicalisation or hashing that alters any proof
// hash breaks this test.
func TestGoldenVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 5 {
		t.Fatalf("only %d vectors", len(vs))
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			c, err := Canonicalize([]byte(v.Input))
			if err != nil {
				t.Fatal(err)
			}
			if string(c) != v.Canonical {
				t.Fatalf("canonical\n got %s\nwant %s", c, v.Canonical)
			}
			// The gateway seals through AppendCanonical's one-pass path.
			if a, err := AppendCanonical(nil, []byte(v.Input)); err != nil || string(a) != v.Canonical {
				t.Fatalf("AppendCanonical\n got %s (%v)\nwant %s", a, err, v.Canonical)
			}
			h, err := Hash([]byte(v.Input))
			if err != nil {
				t.Fatal(err)
			}
			if h != v.ProofHash {
				t.Fatalf("hash %s, want %s", h, v.ProofHash)
			}
			if err := Verify([]byte(v.Input), strings.ToUpper(v.ProofHash[2:4])+v.ProofHash[4:]); err == nil {
				t.Fatal("a hash without 0x must be malformed")
			}
			if err := Verify([]byte(v.Input), "0x"+strings.ToUpper(v.ProofHash[2:])); err != nil {
				t.Fatalf("upper-case hex must verify: %v", err)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	doc := []byte(`{"jobId":"j1","result":{"output":{"n":1},"exitCode":0}}`)
	good, err := Hash(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		doc  string
		hash string
		want error
	}{
		{"same record", string(doc), good, nil},
		{"reordered and reformatted", `{ "result": {"exitCode": 0, "output": {"n": 1.0}}, "jobId": "j1" }`, good, nil},
		{"changed value", `{"jobId":"j1","result":{"output":{"n":2},"exitCode":0}}`, good, ErrMismatch},
		{"extra field", `{"jobId":"j1","x":null,"result":{"output":{"n":1},"exitCode":0}}`, good, ErrMismatch},
		{"short hash", string(doc), good[:10], ErrMalformedHash},
		{"non-hex hash", string(doc), "0x" + strings.Repeat("z", 64), ErrMalformedHash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify([]byte(tc.doc), tc.hash)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
	if err := Verify([]byte(`{"a":`), good); err == nil || errors.Is(err, ErrMismatch) {
		t.Fatalf("malformed JSON must fail as malformed, got %v", err)
	}
}

func TestSealMatchesHash(t *testing.T) {
	v := struct {
		B string `json:"b"`
		A int    `json:"a"`
	}{"<&>", 7}
	c, h, err := Seal(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(c) != `{"a":7,"b":"<&>"}` {
		t.Fatalf("canonical %s", c)
	}
	if h2, _ := Hash(c); h2 != h {
		t.Fatalf("Seal hash %s != Hash %s", h, h2)
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{`{}`, `[1,2]`, `{"a":"\u00e9"}`, `1e400`, `{"a":1,"a":2}`, `"\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Canonicalize(doc)
		if err != nil {
			return
		}
		// Canonical form is a fixed point.
		c2, err := Canonicalize(c)
		if err != nil || string(c2) != string(c) {
			t.Fatalf("not idempotent: %q -> %q (%v)", c, c2, err)
		}
	})
}

// FuzzCanonicalizeMatchesReference checks our canonicaliser against gowebpki/jcs, a port
// of the RFC 8785 reference implementation: wherever both accept a document, the canonical
// bytes must be identical. (Ours refuses more: duplicate names and lone surrogates.)
func FuzzCanonicalizeMatchesReference(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[1.0,2e3,-0,0.1,1e21,1e-7]}`, `{"\u20ac":1,"\u00e9":2,"z":3,"€a":4}`,
		`"\u001f\"\\/<>&\u2028"`, `[true,false,null,{}]`, `123456789012345678901234567890`, `{"a":{"b":{"c":[]}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		ours, err := Canonicalize(doc)
		if err != nil {
			return
		}
		ref, err := jcs.Transform(doc)
		if err != nil {
			return
		}
		if string(ours) != string(ref) {
			t.Fatalf("canonical forms differ for %q:\n ours %q\n  ref %q", doc, ours, ref)
		}
	})
}

// RFC 8785 §3.2.2.3: a number a double cannot hold (it rounds to ±Infinity) has no canonical
// form and must be refused, as every independent implementation refuses it; writing it as
// ±1.7976931348623157e+308 would give a hash nobody else can recompute, and let 1e400 and
// 1e999 pass for each other.
func TestCanonicalizeRefusesNumbersBeyondDouble(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want string // canonical form, "" for refused
	}{
		{`[1e400]`, ""},
		{`{"a":[-1e400]}`, ""},
		{`1.7976931348623159e308`, ""},
		{`{"b":"x","a":123456789012345678901234567890e300}`, ""},
		{`1.7976931348623158e308`, `1.7976931348623157e+308`}, // rounds down to the largest double
		{`[-1.7976931348623157e308]`, `[-1.7976931348623157e+308]`},
		{`["1.7976931348623157e+308",1e-400]`, `["1.7976931348623157e+308",0]`}, // underflow rounds to 0
	} {
		c, err := Canonicalize([]byte(tc.doc))
		if tc.want == "" {
			if err == nil {
				t.Errorf("Canonicalize(%s) = %s, want refused", tc.doc, c)
			}
			if _, err := AppendCanonical(nil, []byte(tc.doc)); err == nil {
				t.Errorf("AppendCanonical(%s) accepted it, want refused", tc.doc)
			}
			if _, err := Hash([]byte(tc.doc)); err == nil {
				t.Errorf("Hash(%s) accepted it, want refused", tc.doc)
			}
			continue
		}
		if err != nil || string(c) != tc.want {
			t.Errorf("Canonicalize(%s) = %s, %v; want %s", tc.doc, c, err, tc.want)
		}
		if a, err := AppendCanonical(nil, []byte(tc.doc)); err != nil || string(a) != tc.want {
			t.Errorf("AppendCanonical(%s) = %s, %v; want %s", tc.doc, a, err, tc.want)
		}
	}
}
