package tracing

import (
	"encoding/binary"
	"math/rand/v2"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// ServerSpan is the span the kit's HTTP middleware puts in a request's
// context: real W3C ids, continuing the caller's trace when the request
// carried one, but nothing recorded.
//
// Why not the SDK tracer: Install configures a provider without an exporter
// or span processor, so a server span started there is never seen by anyone;
// what the contract needs from it is its ids, for the logs and for the
// traceparent the kit injects downstream (HTTP calls, published messages).
// tracer.Start still pays for sampling, span option closures and, for a
// sampled incoming parent, a full recording span: about a third of the
// kit's per-request cost before this type. ServerSpan mints the same ids
// the SDK would (its ID generator is math/rand/v2 too) in a value the
// middleware embeds in its per-request state, so no allocation is needed.
// Spans started from a context carrying it (the messaging drivers' producer
// spans) are ordinary SDK spans and children of it, as before. If the kit
// ever exports spans, the middleware must go back to tracer.Start.
type ServerSpan struct {
	embedded.Span

	sc trace.SpanContext
}

var _ trace.Span = (*ServerSpan)(nil)

// NewServerSpan returns a span continuing parent's trace (same trace id,
// flags and trace state, a new span id) or, when parent is not valid,
// starting a new, unsampled trace, which is what the SDK's
// ParentBased(NeverSample) sampler that Install configures decides too.
func NewServerSpan(parent trace.SpanContext) ServerSpan {
	cfg := trace.SpanContextConfig{SpanID: NewSpanID()}
	if parent.IsValid() {
		cfg.TraceID = parent.TraceID()
		cfg.TraceFlags = parent.TraceFlags()
		cfg.TraceState = parent.TraceState()
	} else {
		cfg.TraceID = NewTraceID()
	}
	return ServerSpan{sc: trace.NewSpanContext(cfg)}
}

// NewTraceID returns a random, valid (non-zero) trace id.
func NewTraceID() trace.TraceID {
	var id trace.TraceID
	for !id.IsValid() {
		binary.NativeEndian.PutUint64(id[:8], rand.Uint64())
		binary.NativeEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

// NewSpanID returns a random, valid (non-zero) span id.
func NewSpanID() trace.SpanID {
	var id trace.SpanID
	for !id.IsValid() {
		binary.NativeEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}

// SpanContext returns the span's ids.
func (s *ServerSpan) SpanContext() trace.SpanContext { return s.sc }

// IsRecording is false: nothing is recorded.
func (*ServerSpan) IsRecording() bool { return false }

// End does nothing.
func (*ServerSpan) End(...trace.SpanEndOption) {}

// AddEvent does nothing.
func (*ServerSpan) AddEvent(string, ...trace.EventOption) {}

// AddLink does nothing.
func (*ServerSpan) AddLink(trace.Link) {}

// RecordError does nothing.
func (*ServerSpan) RecordError(error, ...trace.EventOption) {}

// SetStatus does nothing.
func (*ServerSpan) SetStatus(codes.Code, string) {}

// SetName does nothing.
func (*ServerSpan) SetName(string) {}

// SetAttributes does nothing.
func (*ServerSpan) SetAttributes(...attribute.KeyValue) {}

// TracerProvider returns the global provider, so instrumentation that
// starts children through SpanFromContext(ctx).TracerProvider() gets the
// same tracer as everything else in the process.
func (*ServerSpan) TracerProvider() trace.TracerProvider { return otel.GetTracerProvider() }
