package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
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
	`{"tool":{"name":"y"},"TOOL":{"name":"z"}}`, `{"Tool":{"Name":"z"},"tool":{"name":"y"}}`, `{"tool":{"name":"y","args":{"a":1e400}}}`,
	`{"tool":{"name":"y"},"context":{"x":-1e400,"y":1e-400,"z":9007199254740993}}`, `{"tool":{"name":"C:\\u0000"}}`,
}

// decodeSlow is the decoding the fast path stands in for.
func decodeSlow(body []byte) (execRequest, bool) {
	var req execRequest
	if err := decodeExecRequestSlow(body, &req); err != nil {
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

// decodeTestRequest is decodeExecRequest of body, sent with the headers in hdr (name, value, ...).
func decodeTestRequest(body string, hdr ...string) (*execRequest, error) {
	r := httptest.NewRequest("POST", "/exec/simulate", strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return decodeExecRequest(httptest.NewRecorder(), r, 1<<20, 64)
}

// TestDecodeExecRequest is the decoder's contract, on the fast path and on the slow one: the
// fast column says which one a body takes, so that each rule is seen to hold on both.
func TestDecodeExecRequest(t *testing.T) {
	const args = `"args":{"data":1}`
	for _, tc := range []struct {
		name   string
		body   string
		hdr    []string
		fast   bool
		tool   string // the tool the call names, when it is accepted
		status int    // when it is refused
		code   string
		field  string
		detail string // a part of the problem's detail
	}{
		{"plain call", `{"tool":{"name":"json_parse",` + args + `}}`, nil, true, "json_parse", 0, "", "", ""},
		{"unknown member", `{"tool":{"name":"json_parse",` + args + `},"extra":1}`, nil, false, "json_parse", 0, "", "", ""},

		// Member names match exactly: a name in another case is an unknown member.
		{"TOOL beside tool is ignored", `{"tool":{"name":"json_parse",` + args + `},"TOOL":{"name":"hash_generate","args":{"input":"x"}}}`, nil, false, "json_parse", 0, "", "", ""},
		{"TOOL before tool is ignored", `{"TOOL":{"name":"hash_generate","args":{"input":"x"}},"tool":{"name":"json_parse",` + args + `}}`, nil, false, "json_parse", 0, "", "", ""},
		{"Tool.Name does not merge into tool", `{"tool":{"name":"json_parse",` + args + `},"Tool":{"Name":"hash_generate","args":{"input":"x"}}}`, nil, false, "json_parse", 0, "", "", ""},
		{"Name beside name is ignored", `{"tool":{"Name":"hash_generate","name":"json_parse",` + args + `}}`, nil, false, "json_parse", 0, "", "", ""},
		{"Tool alone names no tool", `{"Tool":{"name":"hash_generate"}}`, nil, false, "", 400, "missing_tool_name", "tool.name", ""},
		{"a mis-cased member's wrong type is not the field's", `{"DRYRUN":"yes","tool":{"name":"json_parse"}}`, nil, false, "json_parse", 0, "", "", ""},
		{"an escaped name is the name", `{"t\u006fol":{"name":"json_parse"}}`, nil, false, "json_parse", 0, "", "", ""},
		{"exact duplicate names", `{"tool":{"name":"json_parse"},"tool":{"name":"x"}}`, nil, false, "", 400, "invalid_json", "tool", "I-JSON"},

		// Numbers a double cannot hold are not I-JSON (RFC 7493 §2.2); rounding is not refused.
		{"1e400 in args, fast path", `{"tool":{"name":"data_filter","args":{"data":[{"a":1e400}]}}}`, nil, true, "", 400, "invalid_json", "tool.args.data.0.a", "1e400"},
		{"1e400 in args, slow path", `{"tool":{"name":"data_filter","args":{"data":[{"a":1e400}]}},"x":1}`, nil, false, "", 400, "invalid_json", "tool.args.data.0.a", "1e400"},
		{"1e400 in context, fast path", `{"tool":{"name":"json_parse"},"context":{"x":1e400}}`, nil, true, "", 400, "invalid_json", "context.x", "1e400"},
		{"1e400 in context, slow path", `{"Tool":1,"tool":{"name":"json_parse"},"context":{"x":1e400}}`, nil, false, "", 400, "invalid_json", "context.x", "1e400"},
		{"-1e400", `{"tool":{"name":"json_parse","args":{"data":[-1E+400]}}}`, nil, true, "", 400, "invalid_json", "tool.args.data.0", "-1E+400"},
		{"a 400-digit integer", `{"tool":{"name":"json_parse","args":{"data":` + strings.Repeat("9", 400) + `}}}`, nil, true, "", 400, "invalid_json", "tool.args.data", "99999"},
		{"1e400 in an unknown member", `{"tool":{"name":"json_parse"},"x":{"y~/z":[1e400]}}`, nil, false, "", 400, "invalid_json", "x.y~/z.0", "1e400"},
		{"1e400 in timeout_s", `{"tool":{"name":"json_parse","timeout_s":1e400}}`, nil, false, "", 400, "invalid_json", "tool.timeout_s", "1e400"},
		{"1e400 in a string is text", `{"tool":{"name":"json_parse","args":{"data":"1e400"}}}`, nil, true, "json_parse", 0, "", "", ""},
		{"the largest double", `{"tool":{"name":"json_parse","args":{"data":1.7976931348623157e308}}}`, nil, true, "json_parse", 0, "", "", ""},
		{"2^53+1 rounds", `{"tool":{"name":"json_parse","args":{"data":9007199254740993}}}`, nil, true, "json_parse", 0, "", "", ""},
		{"1e-400 rounds to 0", `{"tool":{"name":"json_parse","args":{"data":1e-400}}}`, nil, true, "json_parse", 0, "", "", ""},
		{"1e100 and 0.5e-5", `{"tool":{"name":"json_parse","args":{"data":[1e100,0.5e-5]}}}`, nil, true, "json_parse", 0, "", "", ""},

		// The body is an object.
		{"array body", `[]`, nil, false, "", 400, "invalid_field_type", "", "the request body must be a JSON object, not an array"},
		{"string body", ` "x" `, nil, false, "", 400, "invalid_field_type", "", "the request body must be a JSON object, not a string"},
		{"number body", `1`, nil, false, "", 400, "invalid_field_type", "", "the request body must be a JSON object, not a number"},
		{"null body", `null`, nil, false, "", 400, "invalid_field_type", "", "the request body must be a JSON object, not null"},
		{"wrong type names the field", `{"tool":{"name":7}}`, nil, false, "", 400, "invalid_field_type", "tool.name", "tool.name must be a string, not a number"},
		{"malformed", `{"tool":{"name":7}} x`, nil, false, "", 400, "invalid_json", "", "malformed JSON"},

		// The body is sent without a content coding.
		{"gzip", `{"tool":{"name":"json_parse"}}`, []string{"Content-Encoding", "gzip"}, true, "", 415, "unsupported_media_type", "", `Content-Encoding "gzip"`},
		{"identity, then br", `{"tool":{"name":"json_parse"}}`, []string{"Content-Encoding", "identity", "Content-Encoding", " Identity , br"}, true, "", 415, "unsupported_media_type", "", `Content-Encoding "br"`},
		{"identity", `{"tool":{"name":"json_parse"}}`, []string{"Content-Encoding", "IDENTITY"}, true, "json_parse", 0, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decodeExecRequestFast([]byte(tc.body), &execRequest{}); got != tc.fast {
				t.Fatalf("fast path %v, want %v", got, tc.fast)
			}
			req, err := decodeTestRequest(tc.body, tc.hdr...)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if req.Tool.Name != tc.tool {
					t.Fatalf("the call names %q, want %q", req.Tool.Name, tc.tool)
				}
				return
			}
			status, code, field, _ := classify(err)
			if status != tc.status || code != tc.code || field != tc.field || err == nil || !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("got %d %s field %q (%v), want %d %s field %q with %q", status, code, field, err, tc.status, tc.code, tc.field, tc.detail)
			}
		})
	}
}

func TestHasNULEscape(t *testing.T) {
	for _, tc := range []struct {
		text string
		want bool
	}{
		{`"\u0000"`, true},
		{`\u0000`, true},
		{`"a\\u0000"`, false},
		{`"a\\\u0000"`, true},
		{`"\\\\u0000"`, false},
		{`"\"\u0000"`, true},
		{`"\u005cu0000"`, false},
		{`u0000`, false},
		{`"\u00000"`, true},
		{`"\\u0000\u0000"`, true},
		{`"\u000"`, false},
		{``, false},
	} {
		if got := hasNULEscape([]byte(tc.text)); got != tc.want {
			t.Errorf("hasNULEscape(%s) = %v, want %v", tc.text, got, tc.want)
		}
	}
}

// FuzzHasNULEscape holds hasNULEscape to its meaning: a valid JSON text has the escape
// \u0000 if and only if one of its strings (names included) holds U+0000.
func FuzzHasNULEscape(f *testing.F) {
	for _, s := range []string{`"\u0000"`, `{"\u0000":1}`, `["\\u0000"]`, `"\\\u0000"`, `"\"\u0000"`, `"\u005cu0000"`, `{"a":"C:\\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dec := jsontext.NewDecoder(bytes.NewReader(b), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
		want := false
		for {
			tok, err := dec.ReadToken()
			if err == io.EOF {
				break
			}
			if err != nil {
				return // not JSON: no meaning to hold it to
			}
			want = want || tok.Kind() == '"' && strings.Contains(tok.String(), "\x00")
		}
		if got := hasNULEscape(b); got != want {
			t.Fatalf("hasNULEscape(%q) = %v, but U+0000 in a string is %v", b, got, want)
		}
	})
}

// FuzzOutOfRangeNumber holds the number check to go-json-experiment/json, which refuses to
// read a number beyond a double's range into one: on any valid I-JSON text they agree on
// whether there is such a number, and where the first one is.
func FuzzOutOfRangeNumber(f *testing.F) {
	for _, s := range []string{`1e400`, `[1e308,1e309]`, `{"a":{"b":[0,-1E+400]}}`, `1e-400`, `"1e400"`, `[` + strings.Repeat("9", 309) + `]`,
		`9` + strings.Repeat("0", 210) + `e99`, `1.7976931348623157e308`, `1.7976931348623159e308`, `{"a~b/c":1e0400}`, `[true,1e5]`, `0.` + strings.Repeat("0", 300) + `1e310`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !jsontext.Value(b).IsValid() {
			return
		}
		field, _, found := outOfRangeNumber(b)
		err := jsonv2.Unmarshal(b, new(any))
		var semErr *jsonv2.SemanticError
		wantFound := errors.As(err, &semErr) && errors.Is(semErr.Err, strconv.ErrRange)
		if err != nil && !wantFound {
			t.Fatalf("%q: %v", b, err)
		}
		if found != wantFound || found && field != pointerField(semErr.JSONPointer) {
			t.Fatalf("%q: out of range at %q (%v), go-json-experiment says %v", b, field, found, err)
		}
	})
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

// FuzzDecodeExecRequestFast holds the fast decoder to the slow one: whatever it accepts, the
// slow one accepts, with the same result.
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

// TestSlowBodyIsATimeout: a body that stops arriving is answered 408 once the server's read
// timeout passes, and the answer does not name the connection's addresses.
func TestSlowBodyIsATimeout(t *testing.T) {
	h := newHarness(t)
	srv := httptest.NewUnstartedServer(h.srv.Handler())
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Start()
	defer srv.Close()
	status, body := rawExchange(t, srv, "POST /exec/simulate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tool\":")
	if status != http.StatusRequestTimeout || !strings.Contains(body, `"code":"body_timeout"`) || strings.Contains(body, "127.0.0.1") {
		t.Fatalf("slow body: %d %s", status, body)
	}
}

// rawExchange writes request as is on a new connection to srv and reads one response.
func rawExchange(t *testing.T, srv *httptest.Server, request string) (status int, body string) {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // the test's own bound, not a speed check
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAgentIDIsDisplayable: an agent id with a control, formatting or invisible character is
// refused, naming the field; other text, any script, is taken.
func TestAgentIDIsDisplayable(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"agent-7", true}, {"Ağent ünïcode 代理", true}, {"", true},
		{`a\u0007b`, false}, {`a\nb`, false}, {`a\u007fb`, false}, {`admin\u202egnp.exe`, false}, {`\u2066x\u2069`, false}, {`a\u200fb`, false},
		// invisible: zero-width space, soft hyphen, byte order mark, word joiner, variation selector
		{`evil\u200b`, false}, {`ev\u00adil`, false}, {`\ufeffevil`, false}, {`evil\u2060`, false}, {`evil\ufe0f`, false},
	} {
		body := `{"agentId":"` + tc.id + `","tool":{"name":"x"}}`
		w := httptest.NewRecorder()
		_, err := decodeExecRequest(w, httptest.NewRequest("POST", "/exec/simulate", strings.NewReader(body)), 1<<20, 64)
		var re *requestError
		switch {
		case tc.ok && err != nil:
			t.Errorf("agentId %q refused: %v", tc.id, err)
		case !tc.ok && (!errors.As(err, &re) || re.Code != "invalid_agent_id" || re.Field != "agentId"):
			t.Errorf("agentId %q: %v, want invalid_agent_id", tc.id, err)
		}
	}
}

// FuzzDecodeExecRequest holds the whole decoder to its contract with the network: any body is
// either a call with a tool name or a refusal that classify answers with a 4xx, never the 503
// of an unexpected error.
func FuzzDecodeExecRequest(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/exec/simulate", bytes.NewReader(body))
		req, err := decodeExecRequest(httptest.NewRecorder(), r, 4096, 16)
		if err == nil {
			if req == nil || req.Tool == nil || req.Tool.Name == "" {
				t.Fatalf("%q: accepted without a tool name: %+v", body, req)
			}
			return
		}
		if status, code, _, _ := classify(err); status < 400 || status >= 500 || code == "" {
			t.Fatalf("%q: %v classified %d %q", body, err, status, code)
		}
	})
}

// TestDeclaredOversizedBodyIsRefusedUnread: a Content-Length past the cap is answered 413 at
// once. Read first, the body cost up to the cap in transfer before the refusal, and a client
// that asked "Expect: 100-continue" was told to go ahead and send all of it.
func TestDeclaredOversizedBodyIsRefusedUnread(t *testing.T) {
	h := newHarness(t) // MaxBodyBytes 4096
	srv := httptest.NewServer(h.srv.Handler())
	defer srv.Close()
	// No byte of the body is sent: the answer must come without it.
	status, body := rawExchange(t, srv, "POST /exec/simulate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\nExpect: 100-continue\r\n\r\n")
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(body, `"code":"body_too_large"`) {
		t.Fatalf("declared 50 MB against a 4 KiB cap: %d %s", status, body)
	}
}
