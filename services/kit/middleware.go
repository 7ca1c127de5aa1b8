package kit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/logging"
	"github.com/courier-dev/courier/services/kit/tracing"
)

// RequestIDHeader carries the request id in and out. An incoming id is kept
// (so a gateway's id follows the request downstream); otherwise one is minted.
const RequestIDHeader = "X-Request-ID"

// requestIDKey is RequestIDHeader in canonical form, computed once so the
// hot path indexes the header maps directly instead of canonicalising (and
// allocating) on every request.
var requestIDKey = http.CanonicalHeaderKey(RequestIDHeader)

// maxRequestIDLen bounds an accepted incoming request id.
const maxRequestIDLen = 128

// validRequestID accepts short printable ASCII ids without spaces, so a
// client cannot put arbitrary bytes into every log line.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// observe is the outermost middleware. It sets up the request's context once
// (one Request copy instead of one per concern): the request id, the server
// span continuing an incoming traceparent, and the per-request deadline.
// After the handlers it answers 503 if the deadline passed with nothing
// written, then records metrics and the access log line.
func (s *Service) observe() gin.HandlerFunc {
	propagator := otel.GetTextMapPropagator()
	tracer := tracing.Tracer()
	timeout := s.cfg.RequestTimeout
	return func(c *gin.Context) {
		start := time.Now()
		req := c.Request

		var id string
		if v := req.Header[requestIDKey]; len(v) > 0 {
			id = v[0]
		}
		if !validRequestID(id) {
			id = uuid.NewString()
		}
		c.Writer.Header()[requestIDKey] = []string{id}

		route := c.FullPath()
		if route == "" {
			route = unmatchedRoute
		}
		ctx := propagator.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
		ctx, span := tracer.Start(ctx, req.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer))
		ctx = logging.WithRequestID(ctx, id)
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c.Request = req.WithContext(ctx)

		c.Next()

		if errors.Is(ctx.Err(), context.DeadlineExceeded) && !c.Writer.Written() {
			c.AbortWithStatusJSON(http.StatusServiceUnavailable, ErrorResponse{Error: "request timed out"})
		}
		status := c.Writer.Status()
		if status >= http.StatusInternalServerError {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		span.End()
		latency := time.Since(start)
		s.metrics.observe(req.Method, route, status, latency.Seconds())

		level := slog.LevelInfo
		if status >= http.StatusInternalServerError {
			level = slog.LevelError
		}
		if !s.log.Enabled(ctx, level) {
			return
		}
		attrs := []slog.Attr{
			slog.String("method", req.Method),
			slog.String("route", route),
			slog.String("path", req.URL.Path),
			slog.Int("status", status),
			slog.Float64("latency_ms", float64(latency.Microseconds())/1000),
			slog.Int("bytes", max(c.Writer.Size(), 0)),
			slog.String("client_ip", c.ClientIP()),
		}
		if len(c.Errors) > 0 {
			attrs = append(attrs, slog.String("error", c.Errors.String()))
		}
		s.log.LogAttrs(ctx, level, "request", attrs...)
	}
}

// recovery turns a handler panic into a logged 500. Gin's own Recovery writes
// text to an io.Writer; this one logs through slog with the request's trace
// and request ids and answers with the kit's JSON error body.
func (s *Service) recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if r == http.ErrAbortHandler { //nolint:errorlint // net/http compares it the same way
				// net/http's sentinel for "abort silently"; keep its meaning.
				panic(r)
			}
			s.log.ErrorContext(c.Request.Context(), "panic in handler",
				slog.String("panic", fmt.Sprint(r)),
				slog.String("stack", string(debug.Stack())),
			)
			_ = c.Error(fmt.Errorf("panic: %v", r))
			if c.Writer.Written() {
				c.Abort()
				return
			}
			c.AbortWithStatusJSON(http.StatusInternalServerError, ErrorResponse{Error: "internal error"})
		}()
		c.Next()
	}
}

// bodyLimit answers 413 to a request whose declared length is over the limit
// and caps the body of any other, so a chunked body cannot exceed it either;
// BindJSON turns the resulting read error into 413.
func (s *Service) bodyLimit() gin.HandlerFunc {
	limit := s.cfg.BodyLimit
	return func(c *gin.Context) {
		if c.Request.ContentLength > limit {
			c.AbortWithStatusJSON(http.StatusRequestEntityTooLarge, ErrorResponse{Error: "request body too large"})
			return
		}
		if c.Request.Body != nil && c.Request.Body != http.NoBody {
			c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
		}
		c.Next()
	}
}
