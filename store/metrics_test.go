package store

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestWriterCollector(t *testing.T) {
	leakCheck(t)
	w := newTestWriter(t, discardBackend{}, fastRetry(t, t.TempDir()))
	for i := range 3 {
		w.Submit(testEntry(i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(w.Collector()); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP secureexec_audit_submitted_total Audit entries given to the writer.
# TYPE secureexec_audit_submitted_total counter
secureexec_audit_submitted_total 3
# HELP secureexec_audit_written_total Audit entries written to the database from the queue.
# TYPE secureexec_audit_written_total counter
secureexec_audit_written_total 3
# HELP secureexec_audit_spool_depth Spooled audit entries not yet replayed.
# TYPE secureexec_audit_spool_depth gauge
secureexec_audit_spool_depth 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"secureexec_audit_submitted_total", "secureexec_audit_written_total", "secureexec_audit_spool_depth"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != len(writerMetrics) {
		t.Fatalf("gathered %d metrics, %v; want %d", n, err, len(writerMetrics))
	}
}
