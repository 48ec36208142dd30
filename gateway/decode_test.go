package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"testing"
	"testing/iotest"

	"github.com/go-json-experiment/json/jsontext"
)

var decodeSeeds = []string{
	`{"agentId":"bench","tool":{"name":"json_parse","args":{"data":{"key":"value","n":[1,2,3]}}},"context":{"purpose":"load test"}}`,
	` { "agentId" : "a\u00e9\"\\" , "tool" : { "name" : "x" , "args" : null , "timeout_s" : 2.5 } , "dryRun" : false } `,
	`{"tool":{"name":"x","timeout_s":null},"dryRun":null,"agentId":null,"context":null}`, `{"tool":null}`, `{}`, `null`, `[]`,
	`{"AgentId":"x","tool":{"name":"y"}}`, `{"tool":{"Name":"y"}}`, `{"tool":{"name":"y","extra":1}}`, `{"extra":1}`,
	`{"tool":{"name":7}}`, `{"dryRun":"yes"}`, `{"tool":{"name":"y","timeout_s":1e400}}`, `{"tool":{"name":"y","timeout_s":"1"}}`,
	`{"tool":{"name":"y","args":{"a":1,"a":2}}}`, `{"tool":{"name":"\ud800"}}`, `{"tool":`, `{"tool":{}} x`, `{"ag\u0065ntId":"x"}`,
	`{"tool":{"name":"y","args":"}\"{[\\"},"context":[{"a":"]"}],"agentId":""}`, `{"tool":{"name":"y","timeout_s":-0.0e-0}}`,
	`{"tool":[],"agentId":1}`, `{"context":"x","tool":{"name":"y"}}`, "{\"agentId\":\"\xff\"}",
}

// decodeSlow is the decoding the fast path stands in for.
func decodeSlow(body []byte) (execRequest, bool) {
	var req execRequest
	if err := json.Unmarshal(body, &req); err != nil || !jsontext.Value(body).IsValid() {
		return req, false
	}
	return req, true
}

func decodeAgrees(t *testing.T, body []byte) bool {
	t.Helper()
	var got execRequest
	if !decodeExecRequestFast(body, &got) {
		return false
	}
	want, ok := decodeSlow(body)
	if !ok {
		t.Fatalf("%q: the fast path accepted what json.Unmarshal or I-JSON refuses", body)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n fast %+v %+v\n slow %+v %+v", body, got, got.Tool, want, want.Tool)
	}
	return true
}

func TestDecodeExecRequestFast(t *testing.T) {
	fast := 0
	for _, s := range decodeSeeds {
		if decodeAgrees(t, []byte(s)) {
			fast++
		}
	}
	if fast < 6 {
		t.Fatalf("only %d seeds took the fast path", fast)
	}
}

// FuzzDecodeExecRequestFast holds the fast decoder to json.Unmarshal plus the I-JSON check:
// whatever it accepts, they accept, with the same result.
func FuzzDecodeExecRequestFast(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		decodeAgrees(t, body)
	})
}

func TestReadAllMatchesIOReadAll(t *testing.T) {
	for _, size := range []int{0, 1, 131, 511, 512, 513, readAllUpFront - 1, readAllUpFront, readAllUpFront + 1, 40_000} {
		body := bytes.Repeat([]byte("x"), size)
		for _, declared := range []int64{-1, 0, int64(size), int64(size / 2), int64(size) * 3} {
			for name, wrap := range map[string]func(io.Reader) io.Reader{"plain": func(r io.Reader) io.Reader { return r },
				"one byte": iotest.OneByteReader, "half": iotest.HalfReader, "data and EOF": iotest.DataErrReader} {
				for _, limit := range []int64{1 << 20, int64(size) - 1} {
					if limit < 0 {
						continue
					}
					got, gotErr := readAll(http.MaxBytesReader(nil, io.NopCloser(wrap(bytes.NewReader(body))), limit), declared, limit)
					want, wantErr := io.ReadAll(http.MaxBytesReader(nil, io.NopCloser(wrap(bytes.NewReader(body))), limit))
					if !bytes.Equal(got, want) || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
						t.Fatalf("size %d declared %d limit %d %s: got %d bytes (%v), want %d (%v)", size, declared, limit, name, len(got), gotErr, len(want), wantErr)
					}
				}
			}
		}
	}
}
