package messaging

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/internal/randid"
	"github.com/courier-dev/courier/services/kit/tracing"
)

// The benchmarks below price the per-message steps of the publish path
// that bench/publish's profiles pointed at, each next to what it replaced
// (the message id's is in services/kit/internal/randid):
//
//	go test -run '^$' -bench . -benchmem ./services/kit/messaging/

func BenchmarkPublishCounter(b *testing.B) {
	m := NewMetrics(prometheus.NewRegistry())
	b.Run("WithLabelValues", func(b *testing.B) {
		for b.Loop() {
			m.published.WithLabelValues("emails", contract.OutcomeSuccess).Inc()
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := m.publishCounters("emails")
		for b.Loop() {
			c.add(1, 0)
		}
	})
}

// BenchmarkProducerSpan: the producer span under the kit's tracer
// provider, for a request whose trace is not sampled (the kit's default).
func BenchmarkProducerSpan(b *testing.B) {
	tracer, ctx := unsampledRequest()
	id, physical := randid.New(), "blog.emails"
	b.Run("attributes-always", func(b *testing.B) {
		for b.Loop() {
			_, span := tracer.Start(ctx, "publish "+physical,
				trace.WithSpanKind(trace.SpanKindProducer),
				trace.WithAttributes(semconv.MessagingSystemRabbitMQ,
					semconv.MessagingDestinationName(physical),
					semconv.MessagingMessageID(id),
					semconv.MessagingOperationName("publish"),
					semconv.MessagingOperationTypeSend))
			span.End()
		}
	})
	b.Run("attributes-when-recording", func(b *testing.B) {
		name := "publish " + physical
		for b.Loop() {
			_, span := tracer.Start(ctx, name, producerSpanKind)
			if span.IsRecording() {
				span.SetAttributes(semconv.MessagingSystemRabbitMQ,
					semconv.MessagingDestinationName(physical),
					semconv.MessagingMessageID(id),
					semconv.MessagingOperationName("publish"),
					semconv.MessagingOperationTypeSend)
			}
			span.End()
		}
	})
}

// BenchmarkHeaders: trace context and message id into the driver's
// headers, through an intermediate map (as before) or straight in.
func BenchmarkHeaders(b *testing.B) {
	tracing.Install()
	_, ctx := unsampledRequest()
	id := randid.New()
	b.Run("rabbitmq/via-map", func(b *testing.B) {
		for b.Loop() {
			headers := propagation.MapCarrier{}
			otel.GetTextMapPropagator().Inject(ctx, headers)
			table := make(amqp.Table, len(headers)+1)
			for k, v := range headers {
				table[k] = v
			}
			table[contract.HeaderMessageID] = id
		}
	})
	b.Run("rabbitmq/direct", func(b *testing.B) {
		for b.Loop() {
			table := make(amqp.Table, 4)
			otel.GetTextMapPropagator().Inject(ctx, tableCarrier(table))
			table[contract.HeaderMessageID] = id
		}
	})
	b.Run("nats/via-map", func(b *testing.B) {
		for b.Loop() {
			headers := propagation.MapCarrier{}
			otel.GetTextMapPropagator().Inject(ctx, headers)
			h := make(nats.Header, len(headers)+2)
			for k, v := range headers {
				h.Set(k, v)
			}
			h.Set(contract.HeaderMessageID, id)
		}
	})
	b.Run("nats/direct", func(b *testing.B) {
		stream := []string{"bench"}
		for b.Loop() {
			h := make(nats.Header, 4)
			otel.GetTextMapPropagator().Inject(ctx, natsHeaderCarrier(h))
			h[contract.HeaderMessageID] = []string{id}
			h["Nats-Expected-Stream"] = stream
		}
	})
}

// unsampledRequest returns a tracer of a provider set up as the kit's is
// without an exporter, and the context of a server span started by it: a
// request whose trace is not sampled.
func unsampledRequest() (trace.Tracer, context.Context) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	ctx, _ := tp.Tracer("server").Start(context.Background(), "GET /api/users")
	return tp.Tracer(tracerName), ctx
}
