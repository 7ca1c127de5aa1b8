package messaging

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of the kit's messaging spans.
const tracerName = "github.com/courier-dev/courier/services/kit/messaging"

// Headers the kit adds to dead letters it publishes itself (JetStream; on
// RabbitMQ the broker dead-letters and records x-death instead).
const (
	// HeaderDeadLetterReason says why a message was dead-lettered.
	HeaderDeadLetterReason = "Courier-Dead-Letter-Reason"
	// HeaderDeliveries is the number of deliveries a dead letter had.
	HeaderDeliveries = "Courier-Deliveries"
	// HeaderOriginalMessageID is the id of the message a dead letter copies;
	// the copy needs its own contract.HeaderMessageID or JetStream would
	// drop it as a duplicate of the original.
	HeaderOriginalMessageID = "Courier-Original-Message-Id"
)

// base holds what both drivers share: configuration, the confirm window,
// the publish path (publish.go), handler invocation and the Close
// lifecycle.
type base struct {
	cfg    Config
	log    *slog.Logger
	system attribute.KeyValue
	tracer trace.Tracer
	queues map[string]*queueInfo
	// window bounds the messages awaiting confirmation
	// (Config.ConfirmWindow): a publish sends to it to take a slot and
	// receives from it to free one.
	window chan struct{}
	life   lifecycle
}

// init sets b up in place (it holds a mutex, so it is never copied).
func (b *base) init(cfg Config, system attribute.KeyValue) {
	b.cfg = cfg
	b.log = cfg.Logger.With("broker", cfg.Kind)
	b.system = system
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	b.tracer = tp.Tracer(tracerName)
	b.queues = newQueueInfos(cfg)
	b.window = make(chan struct{}, cfg.ConfirmWindow)
	b.life.init()
}

// runHandler calls handler under a consumer span whose parent is the
// publisher's trace context from msg.Headers, so the handler's logs carry
// the trace id of the request that caused the message. A panic becomes an
// error (retried like any other) instead of killing the consumer.
func (b *base) runHandler(ctx context.Context, physical string, handler Handler, msg Message) (took time.Duration, err error) {
	ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(msg.Headers))
	ctx, span := b.tracer.Start(ctx, "process "+physical, consumerSpanKind)
	// Attributes only for a span that records, as on the publish path:
	// building them costs more than the unsampled span itself, and the
	// kit's samplers do not look at them.
	if span.IsRecording() {
		span.SetAttributes(b.system,
			semconv.MessagingDestinationName(physical),
			semconv.MessagingMessageID(msg.ID),
			semconv.MessagingOperationName("process"),
			semconv.MessagingOperationTypeProcess,
			attribute.Int("messaging.message.attempt", msg.Attempt))
	}
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			b.log.ErrorContext(ctx, "message handler panicked",
				"queue", msg.Queue, "message_id", msg.ID, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", r)
		}
		took = time.Since(start)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	return 0, handler(ctx, msg)
}

// messageLogger returns log with a consumed message's queue and id. The
// drivers call it only when they write a line: slog's With encodes the
// attributes at once, which every message would otherwise pay for.
func messageLogger(log *slog.Logger, queue, id string) *slog.Logger {
	return log.With("queue", queue, "message_id", id)
}

// consumerSpanKind is allocated once: it is the same option every time.
var consumerSpanKind = trace.WithSpanKind(trace.SpanKindConsumer)

// handlerContext is the context handlers run under: it keeps ctx's values
// but not its cancellation, because Consume's contract is to let in-flight
// handlers finish (and ack) after ctx is cancelled rather than abandon work
// half done.
func handlerContext(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// joinCancel returns a context cancelled when either ctx or other is.
func joinCancel(ctx, other context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(other, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// lifecycle tracks Publish and Consume calls in progress so Close can drain
// them. A sync.WaitGroup cannot be used: Publish may start while Close is
// already waiting, which WaitGroup forbids.
type lifecycle struct {
	mu      sync.Mutex
	closing bool
	active  int
	idle    chan struct{} // closed once closing and active == 0

	// drainCtx is cancelled when Close starts: consumers stop taking
	// messages and return once their in-flight handlers are done.
	drainCtx context.Context
	drain    context.CancelFunc
	// abortCtx is cancelled when Close gives up waiting: publishes still
	// retrying stop.
	abortCtx context.Context
	abort    context.CancelFunc
}

func (l *lifecycle) init() {
	l.idle = make(chan struct{})
	l.drainCtx, l.drain = context.WithCancel(context.Background())
	l.abortCtx, l.abort = context.WithCancel(context.Background())
}

// enter registers a call; it fails once Close has started.
func (l *lifecycle) enter() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return ErrClosed
	}
	l.active++
	return nil
}

func (l *lifecycle) leave() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	if l.closing && l.active == 0 {
		close(l.idle)
	}
}

// isClosing reports whether Close has started.
func (l *lifecycle) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// close stops consumers and waits until every call has returned or ctx
// ends; in the latter case it aborts the publishes still retrying and
// returns ctx's error. Only the first call waits.
func (l *lifecycle) close(ctx context.Context) error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return nil
	}
	l.closing = true
	if l.active == 0 {
		close(l.idle)
	}
	l.mu.Unlock()

	l.drain()
	select {
	case <-l.idle:
		l.abort()
		return nil
	case <-ctx.Done():
		l.abort()
		return fmt.Errorf("drain before close: %w", context.Cause(ctx))
	}
}
