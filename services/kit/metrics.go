package kit

import (
	"maps"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/courier-dev/courier/services/kit/contract"
)

// unmatchedRoute labels requests no route matched, so raw paths never become
// label values (a scanner would otherwise blow up the series count).
const unmatchedRoute = "unmatched"

// httpMetrics are the request metrics of the contract.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	// series caches the children of both vectors per label set, so a
	// request costs one map lookup instead of two WithLabelValues calls
	// (each hashes the three label values and takes the vector's lock).
	// The map is copied on write: label sets are few and fixed after
	// warm-up (routes x methods x codes), so reads never lock.
	series atomic.Pointer[map[seriesKey]*httpSeries]
	mu     sync.Mutex // serialises writers of series
}

type seriesKey struct {
	method, route string
	code          int
}

type httpSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	labels := []string{"method", "route", "code"}
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: contract.MetricHTTPRequests,
			Help: "HTTP requests handled, by method, route template and status code.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    contract.MetricHTTPDuration,
			Help:    "HTTP request latency in seconds, by method, route template and status code.",
			Buckets: prometheus.DefBuckets,
		}, labels),
	}
	m.series.Store(&map[seriesKey]*httpSeries{})
	reg.MustRegister(m.requests, m.duration)
	return m
}

func (m *httpMetrics) observe(method, route string, code int, seconds float64) {
	key := seriesKey{method: methodLabel(method), route: route, code: code}
	s := (*m.series.Load())[key]
	if s == nil {
		s = m.addSeries(key)
	}
	s.requests.Inc()
	s.duration.Observe(seconds)
}

func (m *httpMetrics) addSeries(key seriesKey) *httpSeries {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.series.Load()
	if s := old[key]; s != nil {
		return s
	}
	c := strconv.Itoa(key.code)
	s := &httpSeries{
		requests: m.requests.WithLabelValues(key.method, key.route, c),
		duration: m.duration.WithLabelValues(key.method, key.route, c),
	}
	series := make(map[seriesKey]*httpSeries, len(old)+1)
	maps.Copy(series, old)
	series[key] = s
	m.series.Store(&series)
	return s
}

// methodLabel bounds the method label: a client can send any token as a
// method, and each would otherwise become a new series (OpenTelemetry's
// HTTP conventions use _OTHER the same way).
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "_OTHER"
}

// BuildInfo labels the build_info gauge.
type BuildInfo struct {
	// Version is the release version; "(devel)" when built from a work tree.
	Version string
	// Revision is the VCS commit.
	Revision string
}

// readBuildInfo takes the version and revision the Go toolchain stamped into
// the binary, so a plain `go build` needs no -ldflags.
func readBuildInfo() BuildInfo {
	bi := BuildInfo{Version: "unknown", Revision: "unknown"}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return bi
	}
	if info.Main.Version != "" {
		bi.Version = info.Main.Version
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && s.Value != "" {
			bi.Revision = s.Value
		}
	}
	return bi
}

// registerStandard adds build_info and the Go and process collectors.
func registerStandard(reg prometheus.Registerer, bi BuildInfo) {
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: contract.MetricBuildInfo,
		Help: "A constant 1 labelled with the service's version, revision and Go version.",
	}, []string{"version", "revision", "goversion"})
	buildInfo.WithLabelValues(bi.Version, bi.Revision, runtime.Version()).Set(1)
	reg.MustRegister(
		buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}
