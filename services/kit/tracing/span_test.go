package tracing_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/tracing"
)

func TestNewServerSpan(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, _ := trace.ParseTraceState("vendor=x")
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true,
	})

	child := tracing.NewServerSpan(parent)
	sc := child.SpanContext()
	if sc.TraceID() != tid || !sc.IsSampled() || sc.TraceState().String() != "vendor=x" {
		t.Errorf("child of a sampled parent = %v, want its trace, flags and state", sc)
	}
	if !sc.SpanID().IsValid() || sc.SpanID() == sid || sc.IsRemote() {
		t.Errorf("child span id = %v (remote %v), want a new local span", sc.SpanID(), sc.IsRemote())
	}

	root := tracing.NewServerSpan(trace.SpanContext{})
	rsc := root.SpanContext()
	if !rsc.IsValid() || rsc.IsSampled() {
		t.Errorf("root = %v, want valid ids, not sampled", rsc)
	}
	other := tracing.NewServerSpan(trace.SpanContext{})
	if osc := other.SpanContext(); osc.TraceID() == rsc.TraceID() || osc.SpanID() == rsc.SpanID() {
		t.Error("two roots share ids")
	}
	if root.IsRecording() {
		t.Error("server span records")
	}
}

// TestServerSpanPropagates checks the span's ids go downstream through the
// installed propagator and that SDK spans started under it are its children.
func TestServerSpanPropagates(t *testing.T) {
	tracing.Install()
	span := tracing.NewServerSpan(trace.SpanContext{})
	ctx := trace.ContextWithSpan(context.Background(), &span)

	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	sc := span.SpanContext()
	if want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-00"; carrier["traceparent"] != want {
		t.Errorf("traceparent = %q, want %q", carrier["traceparent"], want)
	}

	_, producer := tracing.Tracer().Start(ctx, "publish")
	defer producer.End()
	if producer.SpanContext().TraceID() != sc.TraceID() {
		t.Errorf("SDK child trace = %v, want %v", producer.SpanContext().TraceID(), sc.TraceID())
	}
	if span.TracerProvider() != otel.GetTracerProvider() {
		t.Error("TracerProvider is not the global one")
	}
}
