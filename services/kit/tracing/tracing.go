// Package tracing installs the process-wide OpenTelemetry propagator and
// tracer provider the kit relies on, so W3C trace context flows from an
// incoming request (traceparent header) through logs into published
// messages and on into the consumer that handles them.
//
// The HTTP middleware and the messaging drivers both use
// otel.GetTextMapPropagator; the messaging drivers start their spans with
// otel.Tracer, the HTTP middleware puts a ServerSpan (ids only, see its doc)
// in each request's context. Install is the one place that sets the
// propagator and provider, and kit.New calls it.
package tracing

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// InstrumentationName names the kit's tracer.
const InstrumentationName = "github.com/courier-dev/courier/services/kit"

var installOnce sync.Once

// Install sets the global text map propagator to W3C trace context plus
// baggage and the global tracer provider to an SDK provider without an
// exporter. The SDK, unlike otel's no-op default, mints trace and span ids,
// which is all the logs need. Root spans are not sampled because nothing
// would read a recorded span; a sampled incoming parent is still honoured.
// Install is idempotent and safe for concurrent use.
func Install() {
	installOnce.Do(func() {
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
			propagation.TraceContext{}, propagation.Baggage{},
		))
		otel.SetTracerProvider(sdktrace.NewTracerProvider(
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())),
		))
	})
}

// Tracer returns the kit's tracer from the global provider.
func Tracer() trace.Tracer { return otel.Tracer(InstrumentationName) }

// TraceID returns the hex trace id of the span in ctx, or "" if there is none.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
