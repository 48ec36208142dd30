package exec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
)

func TestHashGenerate(t *testing.T) {
	canon := sha256.Sum256([]byte(`{"a":[1,"x",true,null],"b":{"c":"é","d":0.5}}`))
	for _, tc := range []struct {
		name       string
		args       string
		wantHex    string
		wantBytes  int
		wantCanon  string
		wantErrCod string
	}{
		{"default sha256", `{"input":"abc"}`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 3, "", ""},
		{"empty input", `{"input":""}`, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0, "", ""},
		{"sha512", `{"input":"abc","algorithm":"sha512"}`, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f", 3, "", ""},
		{"sha1", `{"input":"abc","algorithm":"sha1"}`, "a9993e364706816aba3e25717850c26c9cd0d89d", 3, "", ""},
		{"md5", `{"input":"abc","algorithm":"md5"}`, "900150983cd24fb0d6963f7d28e17f72", 3, "", ""},
		{"sha3-256", `{"input":"abc","algorithm":"sha3-256"}`, "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532", 3, "", ""},
		{"keccak256", `{"input":"abc","algorithm":"keccak256"}`, "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45", 3, "", ""},
		{"keccak256 empty", `{"input":"","algorithm":"keccak256"}`, "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470", 0, "", ""},
		{"blake2b-256", `{"input":"abc","algorithm":"blake2b-256"}`, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319", 3, "", ""},
		{"hex input", `{"input":"616263","encoding":"hex"}`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 3, "", ""},
		{"base64 input", `{"input":"YWJj","encoding":"base64"}`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 3, "", ""},
		{"utf8 multibyte", `{"input":"é"}`, hex.EncodeToString(hashGenerateSHA256("é")), 2, "", ""},
		{"JSON value canonicalised", `{"value":{"b":{"d":5e-1,"c":"\u00e9"},"a":[1.0,"x",true,null]}}`, hex.EncodeToString(canon[:]), 46, `{"a":[1,"x",true,null],"b":{"c":"é","d":0.5}}`, ""},
		{"JSON string value is quoted", `{"value":"abc"}`, hex.EncodeToString(hashGenerateSHA256(`"abc"`)), 5, `"abc"`, ""},
		{"JSON null value", `{"value":null}`, hex.EncodeToString(hashGenerateSHA256(`null`)), 4, `null`, ""},
		{"bad hex", `{"input":"zz","encoding":"hex"}`, "", 0, "", "invalid_input"},
		{"bad base64", `{"input":"!!!","encoding":"base64"}`, "", 0, "", "invalid_input"},
		{"number JCS cannot express", `{"value":1e400}`, "", 0, "", "invalid_input"},
		{"both input and value", `{"input":"a","value":1}`, "", 0, "", "invalid_args"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHashGenerate()
			for _, mode := range []string{"run", "simulate"} {
				var out any
				var err error
				if mode == "run" {
					out, err = h.Run(context.Background(), json.RawMessage(tc.args))
				} else {
					out, err = h.Simulate(context.Background(), json.RawMessage(tc.args))
				}
				if tc.wantErrCod != "" {
					toolsAWantCode(t, err, tc.wantErrCod, "")
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", mode, err)
				}
				o := out.(HashGenerateOutput)
				if o.Hex != tc.wantHex || o.InputBytes != tc.wantBytes || o.Canonical != tc.wantCanon {
					t.Errorf("%s: got hex %s bytes %d canonical %q, want %s %d %q", mode, o.Hex, o.InputBytes, o.Canonical, tc.wantHex, tc.wantBytes, tc.wantCanon)
				}
				raw, _ := hex.DecodeString(o.Hex)
				if o.Base64 == "" || len(raw) == 0 {
					t.Errorf("%s: empty digest encodings", mode)
				}
			}
		})
	}
}

func hashGenerateSHA256(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}
