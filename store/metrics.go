package store

import "github.com/prometheus/client_golang/prometheus"

// writerCollector exposes Writer.Stats to Prometheus, read at scrape time so Submit pays
// nothing for metrics.
type writerCollector struct {
	w     *Writer
	descs []*prometheus.Desc
}

var writerMetrics = []struct {
	name, help string
	counter    bool
	value      func(Stats) float64
}{
	{"secureexec_audit_submitted_total", "Audit entries given to the writer.", true, func(s Stats) float64 { return float64(s.Submitted) }},
	{"secureexec_audit_overflowed_total", "Audit entries sent straight to the spool because the queue was full.", true, func(s Stats) float64 { return float64(s.Overflowed) }},
	{"secureexec_audit_written_total", "Audit entries written to the database from the queue.", true, func(s Stats) float64 { return float64(s.Written) }},
	{"secureexec_audit_spooled_total", "Audit entries appended to the local spool.", true, func(s Stats) float64 { return float64(s.Spooled) }},
	{"secureexec_audit_replayed_total", "Audit entries written to the database from the spool.", true, func(s Stats) float64 { return float64(s.Replayed) }},
	{"secureexec_audit_rejected_total", "Audit entries that can never be stored, kept in the dead-letter file.", true, func(s Stats) float64 { return float64(s.Rejected) }},
	{"secureexec_audit_lost_total", "Audit entries neither stored nor spooled because the spool disk failed.", true, func(s Stats) float64 { return float64(s.Lost) }},
	{"secureexec_audit_write_errors_total", "Failed audit database writes.", true, func(s Stats) float64 { return float64(s.WriteErrors) }},
	{"secureexec_audit_queue_depth", "Audit entries waiting in the in-memory queue.", false, func(s Stats) float64 { return float64(s.QueueDepth) }},
	{"secureexec_audit_spool_depth", "Spooled audit entries not yet replayed.", false, func(s Stats) float64 { return float64(s.SpoolDepth) }},
	{"secureexec_audit_spool_bytes", "Bytes of audit spool on disk.", false, func(s Stats) float64 { return float64(s.SpoolBytes) }},
	{"secureexec_audit_degraded", "1 while the audit database is considered down.", false, func(s Stats) float64 {
		if s.Degraded {
			return 1
		}
		return 0
	}},
}

// Collector returns a prometheus.Collector over the writer's Stats, for the gateway to
// register.
func (w *Writer) Collector() prometheus.Collector {
	c := &writerCollector{w: w}
	for _, m := range writerMetrics {
		c.descs = append(c.descs, prometheus.NewDesc(m.name, m.help, nil, nil))
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *writerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *writerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.w.Stats()
	for i, m := range writerMetrics {
		typ := prometheus.GaugeValue
		if m.counter {
			typ = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(c.descs[i], typ, m.value(s))
	}
}
