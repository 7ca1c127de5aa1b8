package kit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/internal/randid"
	"github.com/courier-dev/courier/services/kit/logging"
)

// RequestIDHeader carries the request id in and out. An incoming id is kept
// (so a gateway's id follows the request downstream); otherwise one is minted.
const RequestIDHeader = "X-Request-ID"

// requestIDKey is RequestIDHeader in canonical form, so the hot path
// indexes the header maps directly instead of canonicalising on every
// request.
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

// APIHandler returns h as Run serves it on the API port: inside
// OpenTelemetry's HTTP instrumentation (otelhttp: the server span,
// continuing an incoming traceparent) when spans are exported over OTLP, or
// else under a server span from the SDK's tracer (startServerSpan says why),
// and the kit's middleware: request id, per-request deadline, body limit,
// panic recovery, the contract's metrics and the JSON access line. Tests
// and benchmarks use it to drive a service's router in process. A nil h
// answers 404 to everything.
//
// The route template that labels metrics, the access line and the span
// name is h's http.Request.Pattern once it has served: http.ServeMux sets
// it, and so does a router from NewRouter.
func (s *Service) APIHandler(h http.Handler) http.Handler {
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeJSONError(w, http.StatusNotFound, "not found")
		})
	}
	if !s.exporting {
		return s.observe(h)
	}
	return otelhttp.NewHandler(s.observe(h), "",
		otelhttp.WithTracerProvider(s.tracerProvider),
		otelhttp.WithPropagators(otel.GetTextMapPropagator()),
		// The contract's HTTP metrics are the kit's Prometheus series;
		// otelhttp's own would go nowhere.
		otelhttp.WithMeterProvider(noop.NewMeterProvider()),
	)
}

// observe is the kit's middleware. Inside otelhttp, the server span is
// already in r's context; otherwise observe starts it.
func (s *Service) observe(next http.Handler) http.Handler {
	timeout, limit := s.cfg.RequestTimeout, s.cfg.BodyLimit
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var id string
		if v := r.Header[requestIDKey]; len(v) > 0 && validRequestID(v[0]) {
			id = v[0]
		} else {
			id = randid.New() // randid says why not uuid.NewString
		}
		st := &requestState{idHeader: [1]string{id}}
		w.Header()[requestIDKey] = st.idHeader[:]

		ctx := r.Context()
		var span trace.Span
		if !s.exporting {
			ctx, span = s.startServerSpan(ctx, r)
			defer span.End()
		}
		// The request's deadline and id, in one context
		// (requestcontext.go says why not WithTimeout and WithValue).
		st.ctx.init(ctx, id, start, timeout)
		defer st.ctx.finish()
		ctx = &st.ctx
		rec := &st.rec
		rec.ResponseWriter = w
		req := r.WithContext(ctx)

		if req.ContentLength > limit {
			writeJSONError(rec, http.StatusRequestEntityTooLarge, "request body too large")
		} else {
			if req.Body != nil && req.Body != http.NoBody {
				// A chunked body cannot exceed the limit either; BindJSON
				// turns the read error into 413.
				req.Body = http.MaxBytesReader(rec, req.Body, limit)
			}
			s.serve(next, rec, req)
		}

		if errors.Is(ctx.Err(), context.DeadlineExceeded) && !rec.wroteHeader {
			writeJSONError(rec, http.StatusServiceUnavailable, "request timed out")
		}
		// otelhttp names its span from the pattern of the request it
		// passed on, which is r.
		r.Pattern = req.Pattern
		route := routeTemplate(req.Pattern)
		if span != nil && span.IsRecording() {
			span.SetName(r.Method + " " + route) // otelhttp's name for it
		}
		status := rec.status
		if status == 0 {
			status = http.StatusOK // net/http's answer to a handler that wrote nothing
		}
		latency := time.Since(start)
		s.metrics.observe(r.Method, route, status, latency.Seconds())

		level := slog.LevelInfo
		if status >= http.StatusInternalServerError {
			level = slog.LevelError
		}
		logging.LogRequest(ctx, s.log, level, start.Add(latency), &logging.Request{
			Method:   r.Method,
			Route:    route,
			Path:     r.URL.Path,
			Status:   status,
			Latency:  latency,
			Bytes:    rec.bytes,
			ClientIP: clientIP(r.RemoteAddr),
			Error:    rec.err,
		})
	})
}

// requestState is what observe allocates for a request, in one allocation
// instead of three (each allocation per request also costs garbage
// collection): the request's context, the response recorder and the
// X-Request-ID header value.
type requestState struct {
	ctx      requestContext
	rec      responseRecorder
	idHeader [1]string
}

// serve runs next and turns a panic into a logged 500. net/http would
// recover it too, but silently for the client (a reset connection) and
// without the request's trace and request ids in the log.
func (s *Service) serve(next http.Handler, rec *responseRecorder, req *http.Request) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if r == http.ErrAbortHandler { //nolint:errorlint // net/http compares it the same way
			// net/http's sentinel for "abort silently"; keep its meaning.
			panic(r)
		}
		s.log.ErrorContext(req.Context(), "panic in handler",
			slog.String("panic", fmt.Sprint(r)),
			slog.String("stack", string(debug.Stack())),
		)
		rec.err = fmt.Sprintf("panic: %v", r)
		if !rec.wroteHeader {
			writeJSONError(rec, http.StatusInternalServerError, "internal error")
		}
	}()
	next.ServeHTTP(rec, req)
}

// routeTemplate is the route label of a request whose handler set pattern:
// the path part of a ServeMux pattern ("GET /users/{id}" is "/users/{id}"),
// Gin's template as NewRouter records it, or unmatchedRoute.
func routeTemplate(pattern string) string {
	if i := strings.IndexByte(pattern, '/'); i >= 0 {
		return pattern[i:]
	}
	return unmatchedRoute
}

// clientIP is the connection's address: the kit trusts no proxy header, so
// this is what Gin's ClientIP returns behind a Service.
func clientIP(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

// writeJSONError writes {"error": msg} with status.
func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ErrorResponse{Error: msg})
}

// responseRecorder notes what the handler wrote, for the metrics and the
// access line, and what went wrong (the errors a Gin handler recorded,
// found through Unwrap by NewRouter's middleware, or a panic).
type responseRecorder struct {
	http.ResponseWriter
	status      int
	bytes       int
	wroteHeader bool
	err         string
}

func (w *responseRecorder) WriteHeader(code int) {
	if !w.wroteHeader && code >= http.StatusOK {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseRecorder) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *responseRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush and Hijack are asserted directly by Gin's writer, not through
// http.ResponseController, so the recorder has them itself.
func (w *responseRecorder) Flush() {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands the connection over (a WebSocket upgrade).
func (w *responseRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// recorderOf finds the kit's recorder under w's wrappers (Gin's writer).
func recorderOf(w http.ResponseWriter) *responseRecorder {
	for {
		switch v := w.(type) {
		case *responseRecorder:
			return v
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return nil
		}
	}
}
