package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/proof"
	"github.com/secureexec/secureexec/store"
)

// toolsServer is a gateway serving the real json_parse, data_filter and hash_generate tools, keeping
// every audit entry.
func toolsServer(t *testing.T) (*Server, *memAudit) {
	t.Helper()
	reg, err := exec.NewRegistry(exec.NewJSONParse(), exec.NewDataFilter(), exec.NewHashGenerate())
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	audit := &memAudit{entries: map[string]store.Entry{}}
	srv, err := New(DefaultConfig, Deps{Runner: exec.NewRunner(reg, exec.DefaultLimits, quiet), IAM: &fakeIAM{}, Audit: audit, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return srv, audit
}

func postSimulate(srv *Server, body io.Reader, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", "/exec/simulate", body)
	r.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, r)
	return w
}

// TestRequestsAsSealed: what the gateway accepts it seals as it was sent, and what it cannot
// seal so it refuses up front, naming the field.
func TestRequestsAsSealed(t *testing.T) {
	srv, audit := toolsServer(t)
	for _, tc := range []struct {
		name   string
		body   string
		tool   string // the tool that ran, for a 200
		sealed string // a part of the stored record, for a 200
		status int
		code   string
		field  string
	}{
		{"backslash then u0000 in context", `{"tool":{"name":"json_parse","args":{"data":1}},"context":{"path":"C:\\u0000"}}`, "json_parse", `"context":{"path":"C:\\u0000"}`, 200, "", ""},
		{"backslash then u0000 in args", `{"tool":{"name":"json_parse","args":{"data":"C:\\u0000"}}}`, "json_parse", `"args":{"data":"C:\\u0000"}`, 200, "", ""},
		{"backslash then u0000 in agentId", `{"agentId":"C:\\u0000","tool":{"name":"json_parse","args":{"data":1}}}`, "json_parse", `"agentId":"C:\\u0000"`, 200, "", ""},
		{"U+0000 in context", `{"tool":{"name":"json_parse","args":{"data":1}},"context":{"path":"C:\u0000"}}`, "", "", 400, "nul_character", ""},
		{"U+0000 after a backslash", `{"tool":{"name":"json_parse","args":{"data":1}},"context":{"path":"C:\\\u0000"}}`, "", "", 400, "nul_character", ""},

		{"1e400 in args", `{"tool":{"name":"data_filter","args":{"data":[{"a":1e400}]}}}`, "", "", 400, "invalid_json", "tool.args.data.0.a"},
		{"1e400 in context", `{"tool":{"name":"json_parse","args":{"data":1}},"context":{"x":1e400}}`, "", "", 400, "invalid_json", "context.x"},
		{"-1e400 in args, slow path", `{"tool":{"name":"data_filter","args":{"data":[{"a":-1e400}]}},"x":null}`, "", "", 400, "invalid_json", "tool.args.data.0.a"},
		{"2^53+1 is sealed rounded", `{"tool":{"name":"json_parse","args":{"data":9007199254740993}}}`, "json_parse", `"data":9007199254740992`, 200, "", ""},
		{"1e-400 is sealed as 0", `{"tool":{"name":"json_parse","args":{"data":1e-400}}}`, "json_parse", `"data":0`, 200, "", ""},

		{"TOOL is not tool", `{"tool":{"name":"json_parse","args":{"data":1}},"TOOL":{"name":"hash_generate","args":{"input":"x"}}}`, "json_parse", `"name":"json_parse"`, 200, "", ""},
		{"Tool.Name is not tool.name", `{"tool":{"name":"json_parse","args":{"data":1}},"Tool":{"Name":"hash_generate","args":{"input":"x"}}}`, "json_parse", `"args":{"data":1}`, 200, "", ""},

		{"array body", `[]`, "", "", 400, "invalid_field_type", ""},
		{"string body", `"x"`, "", "", 400, "invalid_field_type", ""},
		{"number body", `1`, "", "", 400, "invalid_field_type", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := postSimulate(srv, strings.NewReader(tc.body))
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status != 200 {
				p := decode[problem](t, w)
				if p.Code != tc.code || p.Field != tc.field {
					t.Fatalf("problem %+v, want code %s field %q", p, tc.code, tc.field)
				}
				if tc.code == "invalid_field_type" && !strings.Contains(p.Detail, "the request body must be a JSON object") {
					t.Fatalf("detail %q does not say the body must be an object", p.Detail)
				}
				return
			}
			resp := decode[execResponse](t, w)
			if resp.Status != exec.StatusCompleted || resp.Tool != tc.tool {
				t.Fatalf("%s ran %s, want %s completed: %s", resp.Tool, resp.Status, tc.tool, w.Body)
			}
			e, err := audit.Get(context.Background(), resp.JobID)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.Verify(e.Record, resp.ProofHash); err != nil {
				t.Fatalf("the stored record does not verify: %v", err)
			}
			if !bytes.Contains(e.Record, []byte(tc.sealed)) {
				t.Fatalf("the stored record lacks %s: %s", tc.sealed, e.Record)
			}
		})
	}
}

// TestCompressedBodyIsUnsupported: a content coding is refused as such, not parsed as JSON.
func TestCompressedBodyIsUnsupported(t *testing.T) {
	srv, _ := toolsServer(t)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(`{"tool":{"name":"json_parse","args":{"data":1}}}`))
	_ = zw.Close()
	w := postSimulate(srv, &gz, "Content-Encoding", "gzip")
	if w.Code != 415 {
		t.Fatalf("status %d, want 415: %s", w.Code, w.Body)
	}
	p := decode[problem](t, w)
	if p.Code != "unsupported_media_type" || !strings.Contains(p.Detail, `Content-Encoding "gzip"`) || w.Header().Get("Accept-Encoding") != "identity" {
		t.Fatalf("problem %+v, Accept-Encoding %q", p, w.Header().Get("Accept-Encoding"))
	}
	w = postSimulate(srv, strings.NewReader(`{"tool":{"name":"json_parse","args":{"data":1}}}`), "Content-Encoding", "identity")
	if w.Code != 200 {
		t.Fatalf("identity: status %d: %s", w.Code, w.Body)
	}
	var resp map[string]json.RawMessage
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || string(resp["status"]) != `"completed"` {
		t.Fatalf("identity: %s", w.Body)
	}
}
