package main

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// newMetrics registers the service's counters next to the Go collector (go_memstats_*,
// go_gc_duration_seconds, go_goroutines) and the process collector (process_resident_memory_bytes).
// GOGC and GOMEMLIMIT are exported under the names client_golang gives them on Go >= 1.21
// (go_gc_gogc_percent, go_gc_gomemlimit_bytes), so readers need one name on every Go version.
func newMetrics(a *app) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "HTTP responses by status code, method and route.",
		}, []string{"code", "method", "path"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds", Help: "Time to serve a request, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"path"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.duration,
		gauge("orders_inflight_requests", "Requests being served now.", func() float64 { return float64(a.inflight.Load()) }),
		gauge("orders_max_inflight_requests", "In-flight limit above which requests are shed with 503.", func() float64 { return float64(a.maxInflight) }),
		gauge("orders_session_cache_bytes", "Bytes held by the never-evicted session cache (leak mode).", func() float64 {
			_, _, _, b := a.leak.stats()
			return float64(b)
		}),
		gauge("orders_session_cache_entries", "Entries in the session cache.", func() float64 {
			_, _, n, _ := a.leak.stats()
			return float64(n)
		}),
		gauge("orders_leak_enabled", "1 when leak mode is on.", func() float64 {
			if on, _, _, _ := a.leak.stats(); on {
				return 1
			}
			return 0
		}),
		gauge("go_gc_gogc_percent", "GOGC as the runtime applies it (-1: off).", func() float64 {
			g, _ := runtimeSettings()
			return float64(g)
		}),
		gauge("go_gc_gomemlimit_bytes", "GOMEMLIMIT as the runtime applies it.", func() float64 {
			_, l := runtimeSettings()
			return float64(l)
		}),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

func (m *metrics) observe(code, method, path string, took time.Duration) {
	m.requests.WithLabelValues(code, method, path).Inc()
	m.duration.WithLabelValues(path).Observe(took.Seconds())
}
