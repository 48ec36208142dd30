package gateway

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

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
	cpu0 := processCPU()
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
	// CPU time (user+system, GC workers included) per call is what bounds throughput on a
	// loaded machine; wall time per op is inflated by whatever else the machine is running.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is the CPU time this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
