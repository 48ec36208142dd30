package gateway

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/store"
)

// discardAudit keeps nothing: the benchmark measures the request path alone.
type discardAudit struct{ *memAudit }

func (discardAudit) Submit(store.Entry) {}

// BenchmarkSimulate is one POST /exec/simulate through the whole handler path with the
// real json_parse tool, minus the network and the audit backend.
func BenchmarkSimulate(b *testing.B) {
	reg, err := exec.NewRegistry(exec.NewJSONParse())
	if err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(DefaultConfig, Deps{Runner: exec.NewRunner(reg, exec.DefaultLimits, quiet), IAM: &fakeIAM{}, Audit: discardAudit{&memAudit{}}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	body := `{"agentId":"bench","tool":{"name":"json_parse","args":{"data":{"key":"value","n":[1,2,3]}}},"context":{"purpose":"load test"}}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("POST", "/exec/simulate", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
}
