package kit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
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

// newRequestID mints a request id: a random (version 4) UUID, so ids stay
// unique across pods and restarts and keep the format clients may parse.
//
// Why not uuid.New: it reads 16 bytes from crypto/rand on every call, about
// 200 ns here, for an id that must be unique, not secret. The bits come from
// math/rand/v2's generator instead, which the runtime seeds per thread from
// the OS entropy source (ChaCha8), so 122 random bits make collisions as
// unlikely as with crypto/rand. uuid.EnableRandPool would also be cheaper but
// is a process-wide switch that would weaken every other caller's UUIDs.
func newRequestID() string {
	var u uuid.UUID
	binary.NativeEndian.PutUint64(u[:8], rand.Uint64())
	binary.NativeEndian.PutUint64(u[8:], rand.Uint64())
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return u.String()
}

// observe is the outermost middleware. It sets up the request's context once
// (one allocation for the kit's state and the Request copy, one for the
// span's context): the request id, the server span continuing an incoming
// traceparent, and the per-request deadline (see requestState). After the handlers it answers
// 503 if the deadline passed with nothing written, then records metrics and
// the access log line.
func (s *Service) observe() gin.HandlerFunc {
	propagator := otel.GetTextMapPropagator()
	// The propagator's headers in canonical form, so the common case of a
	// request without trace headers is three map lookups and no Extract
	// (which canonicalises every key it reads, allocating).
	var traceHeaders []string
	for _, f := range propagator.Fields() {
		traceHeaders = append(traceHeaders, http.CanonicalHeaderKey(f))
	}
	timeout := s.cfg.RequestTimeout
	return func(c *gin.Context) {
		start := time.Now()
		req := c.Request

		// Run serves the engine itself, so the request's context comes from
		// net/http and holds no span: the parent span, if any, is the
		// caller's, from the trace headers.
		parent := req.Context()
		var remote trace.SpanContext
		for _, h := range traceHeaders {
			if _, ok := req.Header[h]; ok {
				parent = propagator.Extract(parent, propagation.HeaderCarrier(req.Header))
				remote = trace.SpanContextFromContext(parent)
				break
			}
		}
		alloc := &requestAlloc{}
		st := &alloc.state
		st.init(parent, start, timeout)
		st.span = tracing.NewServerSpan(remote)

		var id string
		if v := req.Header[requestIDKey]; len(v) > 0 && validRequestID(v[0]) {
			id = v[0]
		} else {
			id = newRequestID()
		}
		st.ids.RequestID = id
		st.idHeader[0] = id
		c.Writer.Header()[requestIDKey] = st.idHeader[:]

		route := c.FullPath()
		if route == "" {
			route = unmatchedRoute
		}
		ctx := trace.ContextWithSpan(st, &st.span)
		c.Request = alloc.withContext(req, ctx)
		// The normal path finishes at the end; this covers a panic that
		// passes recovery (http.ErrAbortHandler).
		defer st.finishOnPanic()

		c.Next()

		// The monotonic clock alone is half the price of time.Now here;
		// the wall time it yields differs from a fresh reading only if the
		// wall clock was stepped during the request.
		end := start.Add(time.Since(start))
		if errors.Is(st.errAt(end), context.DeadlineExceeded) && !c.Writer.Written() {
			c.AbortWithStatusJSON(http.StatusServiceUnavailable, ErrorResponse{Error: "request timed out"})
		}
		status := c.Writer.Status()
		latency := end.Sub(start)
		s.metrics.observe(req.Method, route, status, latency.Seconds())

		level := slog.LevelInfo
		if status >= http.StatusInternalServerError {
			level = slog.LevelError
		}
		line := logging.Request{
			Method:  req.Method,
			Route:   route,
			Path:    req.URL.Path,
			Status:  status,
			Latency: latency,
			Bytes:   max(c.Writer.Size(), 0),
			// The connection's address: the kit trusts no proxy header
			// (see New), so on a TCP listener this is what ClientIP
			// returns, without its IP parsing and allocation.
			ClientIP: c.RemoteIP(),
		}
		if len(c.Errors) > 0 {
			line.Error = c.Errors.String()
		}
		logging.LogRequest(ctx, s.log, level, end, &line)
		st.finish(end)
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
