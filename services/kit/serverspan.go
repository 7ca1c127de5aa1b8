package kit

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// serverSpanInstrumentation names the tracer of the spans startServerSpan
// starts.
const serverSpanInstrumentation = "github.com/courier-dev/courier/services/kit"

// startServerSpan starts a request's server span with the SDK's tracer
// directly, continuing an incoming traceparent. The kit uses it instead of
// otelhttp while no exporter is configured (see APIHandler); with one,
// otelhttp starts the span.
//
// Why not otelhttp always: measured with bench/http on 2026-12-07
// (commit 2ad59af's RESULTS.md, otelhttp on every request), the kit served
// 0.53x the throughput of bare net/http over loopback, against a goal of
// 0.95x, and a CPU profile put most of a request in otelhttp: the semantic
// convention attributes it builds for the span and the attribute set it
// builds and sorts for its own metrics on every request, even with a no-op
// MeterProvider and an unsampled span. Without an exporter nothing reads
// any of that; what the contract needs is the span's ids, for the log
// lines and the traceparent injected downstream, and tracer.Start gives
// them. This is the SDK's own span, not a hand-made one: a sampled
// incoming parent still makes it record, and messaging spans started under
// it are its children.
func (s *Service) startServerSpan(ctx context.Context, r *http.Request) (context.Context, trace.Span) {
	for _, h := range s.traceHeaders {
		if _, ok := r.Header[h]; ok {
			ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(r.Header))
			break
		}
	}
	return s.serverTracer.Start(ctx, r.Method, serverSpanKind)
}

// serverSpanKind is allocated once: it is the same option every time, and
// trace.WithSpanKind allocates on each call.
var serverSpanKind = trace.WithSpanKind(trace.SpanKindServer)

// traceHeaderKeys are the propagator's headers in canonical form, so a
// request without trace headers costs map lookups and no Extract (which
// canonicalises every key it reads).
func traceHeaderKeys() []string {
	var keys []string
	for _, f := range otel.GetTextMapPropagator().Fields() {
		keys = append(keys, http.CanonicalHeaderKey(f))
	}
	return keys
}
