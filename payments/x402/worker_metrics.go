package x402

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// WorkerStats counts what the worker did since it started: how often settlement met a chain
// busier or stranger than when it signed is what an operator alerts on.
type WorkerStats struct {
	BatchesSent     uint64 // batch transactions broadcast (first sends, not replacements)
	BatchesReverted uint64 // batch transactions mined reverted as a whole (settled again in a new batch)
	Replaced        uint64 // settlement transactions the market outbid, signed again at their nonce
	Dead            uint64 // settlement transactions found dead (their nonce taken by another)
}

type workerCounters struct {
	batchesSent, batchesReverted, replaced, dead atomic.Uint64
}

// Stats returns the worker's counters.
func (w *Worker) Stats() WorkerStats {
	return WorkerStats{
		BatchesSent:     w.counts.batchesSent.Load(),
		BatchesReverted: w.counts.batchesReverted.Load(),
		Replaced:        w.counts.replaced.Load(),
		Dead:            w.counts.dead.Load(),
	}
}

var workerMetrics = []struct {
	name, help string
	value      func(WorkerStats) uint64
}{
	{"secureexec_x402_batches_sent_total", "x402 batch settlement transactions broadcast.", func(s WorkerStats) uint64 { return s.BatchesSent }},
	{"secureexec_x402_batches_reverted_total", "x402 batch transactions mined reverted as a whole, their payments settled in a new batch.", func(s WorkerStats) uint64 { return s.BatchesReverted }},
	{"secureexec_x402_settlements_replaced_total", "x402 settlement transactions the market outbid, signed again at their nonce with higher fees.", func(s WorkerStats) uint64 { return s.Replaced }},
	{"secureexec_x402_settlements_dead_total", "x402 settlement transactions found dead (their nonce taken by another transaction).", func(s WorkerStats) uint64 { return s.Dead }},
}

// Collector returns a prometheus.Collector over the worker's Stats, read at scrape time.
func (w *Worker) Collector() prometheus.Collector {
	c := &workerCollector{w: w}
	for _, m := range workerMetrics {
		c.descs = append(c.descs, prometheus.NewDesc(m.name, m.help, nil, nil))
	}
	return c
}

type workerCollector struct {
	w     *Worker
	descs []*prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.w.Stats()
	for i, m := range workerMetrics {
		ch <- prometheus.MustNewConstMetric(c.descs[i], prometheus.CounterValue, float64(m.value(s)))
	}
}
