package kit

import (
	"runtime"
	"runtime/debug"
	"strconv"

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
	reg.MustRegister(m.requests, m.duration)
	return m
}

func (m *httpMetrics) observe(method, route string, code int, seconds float64) {
	c := strconv.Itoa(code)
	m.requests.WithLabelValues(method, route, c).Inc()
	m.duration.WithLabelValues(method, route, c).Observe(seconds)
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
