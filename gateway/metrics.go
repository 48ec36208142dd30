package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus series. Label values are bounded: routes are our
// own names, tools come from the registry (validated before they are counted), protocols
// from the rails.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	tools    *prometheus.CounterVec
	payments *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, extra ...prometheus.Collector) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secureexec_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "secureexec_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		tools: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secureexec_tool_calls_total", Help: "Tool calls that ran, by tool, mode and status.",
		}, []string{"tool", "mode", "status"}),
		payments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secureexec_payment_decisions_total", Help: "Payment gate decisions by protocol and outcome.",
		}, []string{"protocol", "outcome"}),
	}
	for _, c := range append([]prometheus.Collector{m.requests, m.duration, m.tools, m.payments}, extra...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// instrument counts and times a route. The per-route series are resolved once, here.
func (m *metrics) instrument(route string, next http.Handler) http.Handler {
	observe := m.duration.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		observe.Observe(time.Since(start).Seconds())
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		m.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
	})
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
