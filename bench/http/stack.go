// Package httpbench compares the kit's whole HTTP stack with a bare net/http
// handler serving the same route and payload. run.sh runs it; RESULTS.md
// holds the last run.
package httpbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit"
)

// Route is the route both stacks serve, in Gin syntax.
const Route = "/api/users/:id"

// Path is the path the benchmarks request.
const Path = "/api/users/42"

// User is the payload both stacks answer with.
type User struct {
	ID    string `json:"id"`
	Email string `json:"email"`
}

// Bare is the baseline: the standard library's mux and JSON encoder, nothing
// else.
func Bare() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(User{ID: r.PathValue("id"), Email: "ada@example.com"})
	})
	return mux
}

// Gin is Gin alone: gin.New with the route and no middleware, the floor
// under the kit, which is built on Gin. It is shown to split the kit's
// overhead into Gin's and the kit's own.
func Gin() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.GET(Route, func(c *gin.Context) {
		c.JSON(http.StatusOK, User{ID: c.Param("id"), Email: "ada@example.com"})
	})
	return e
}

// BareServer wraps Bare in an http.Server with the same timeouts the kit
// sets, so the loopback comparison differs only in the handler stack.
func BareServer() *http.Server {
	return &http.Server{
		Handler:           Bare(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
}

// Kit builds a kit Service with its default configuration, JSON logs at
// logLevel written to logs, and the service's router (kit.NewRouter with
// the route), which Run serves inside the kit's middleware (for
// in-process use, svc.APIHandler(router)). The request id, tracing, access
// log, metrics, recovery, body limit and deadline middleware all run, as in
// production.
func Kit(logs io.Writer, logLevel string, api, admin net.Listener) (*kit.Service, http.Handler, error) {
	getenv := func(k string) string {
		if k == "LOG_LEVEL" {
			return logLevel
		}
		return ""
	}
	cfg, err := kit.LoadConfig(getenv, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("load config: %w", err)
	}
	svc, err := kit.New(context.Background(), cfg, getenv, kit.WithLogOutput(logs), kit.WithListeners(api, admin))
	if err != nil {
		return nil, nil, fmt.Errorf("build service: %w", err)
	}
	router := kit.NewRouter()
	router.GET(Route, func(c *gin.Context) {
		c.JSON(http.StatusOK, User{ID: c.Param("id"), Email: "ada@example.com"})
	})
	return svc, router, nil
}

// peerBodyLimit and peerTimeout match the kit's defaults
// (BODY_LIMIT_BYTES, REQUEST_TIMEOUT).
const (
	peerBodyLimit = 1 << 20
	peerTimeout   = 10 * time.Second
)

// Peer is what a Gin user would assemble to do the kit's work, each part
// from the library they would reach for: otelhttp around the engine (the
// server span, continuing an incoming traceparent; a tracer provider
// without exporter that mints ids, as the kit's; otelgin is not served by
// the module proxy here), gin.Recovery, request ids (an incoming
// X-Request-ID or uuid.NewString, echoed, in the context), a per-request
// deadline (context.WithTimeout), a body limit (http.MaxBytesReader), and
// one middleware observing a Prometheus counter and histogram labelled
// method, route template and code (the kit's buckets) and writing a JSON
// access line with slog's JSONHandler, with the trace and request ids.
func Peer(logs io.Writer) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	labels := []string{"method", "route", "code"}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "http_requests_total", Help: "Requests."}, labels)
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "http_request_duration_seconds", Help: "Latency.", Buckets: prometheus.DefBuckets,
	}, labels)
	prometheus.NewRegistry().MustRegister(requests, duration)
	log := slog.New(slog.NewJSONHandler(logs, nil))

	e := gin.New()
	e.Use(gin.Recovery(), func(c *gin.Context) {
		start := time.Now()
		id := c.GetHeader("X-Request-ID")
		if id == "" {
			id = uuid.NewString()
		}
		c.Header("X-Request-ID", id)
		ctx, cancel := context.WithTimeout(context.WithValue(c.Request.Context(), requestIDKey{}, id), peerTimeout)
		defer cancel()
		c.Request = c.Request.WithContext(ctx)
		if c.Request.Body != nil {
			c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, peerBodyLimit)
		}

		c.Next()

		route, status := c.FullPath(), c.Writer.Status()
		if route == "" {
			route = "unmatched"
		}
		latency := time.Since(start)
		code := strconv.Itoa(status)
		requests.WithLabelValues(c.Request.Method, route, code).Inc()
		duration.WithLabelValues(c.Request.Method, route, code).Observe(latency.Seconds())
		sc := trace.SpanContextFromContext(ctx)
		log.LogAttrs(ctx, slog.LevelInfo, "request",
			slog.String("method", c.Request.Method),
			slog.String("route", route),
			slog.String("path", c.Request.URL.Path),
			slog.Int("status", status),
			slog.Float64("latency_ms", float64(latency.Microseconds())/1000),
			slog.Int("bytes", c.Writer.Size()),
			slog.String("client_ip", c.ClientIP()),
			slog.String("trace_id", sc.TraceID().String()),
			slog.String("span_id", sc.SpanID().String()),
			slog.String("request_id", id),
		)
	})
	e.GET(Route, func(c *gin.Context) {
		c.JSON(http.StatusOK, User{ID: c.Param("id"), Email: "ada@example.com"})
	})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	return otelhttp.NewHandler(e, "", otelhttp.WithTracerProvider(tp),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }))
}

type requestIDKey struct{}
