package messaging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/contract"
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

// driver is what differs between brokers; base does the rest.
type driver interface {
	// send publishes one message and waits for the broker's confirmation.
	// Any error is retried by base.publish until ctx ends.
	send(ctx context.Context, physical, id string, headers map[string]string, body []byte) error
}

// base holds what both drivers share: configuration, the confirm window,
// the publish path, handler invocation and the Close lifecycle.
type base struct {
	cfg    Config
	log    *slog.Logger
	system attribute.KeyValue
	tracer trace.Tracer
	// window bounds the messages awaiting confirmation (Config.ConfirmWindow).
	window chan struct{}
	life   lifecycle
}

// init sets b up in place (it holds a mutex, so it is never copied).
func (b *base) init(cfg Config, system attribute.KeyValue) {
	b.cfg = cfg
	b.log = cfg.Logger.With("broker", cfg.Kind)
	b.system = system
	b.tracer = otel.Tracer(tracerName)
	b.window = make(chan struct{}, cfg.ConfirmWindow)
	b.life.init()
}

// publish is Publisher.Publish for every driver: it assigns the message id,
// starts the producer span, injects its context into the headers, takes a
// confirm-window slot and retries d.send with backoff until it is confirmed
// or ctx (or a forced Close) ends it.
func (b *base) publish(ctx context.Context, d driver, queue string, body []byte) (string, error) {
	if err := b.life.enter(); err != nil {
		return "", err
	}
	defer b.life.leave()
	physical, err := b.cfg.physical(queue)
	if err != nil {
		return "", err
	}
	id := uuid.NewString()
	ctx, span := b.tracer.Start(ctx, "publish "+physical,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(b.system,
			semconv.MessagingDestinationName(physical),
			semconv.MessagingMessageID(id),
			semconv.MessagingOperationName("publish"),
			semconv.MessagingOperationTypeSend))
	defer span.End()
	headers := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, headers)

	fail := func(err error) (string, error) {
		b.cfg.Metrics.observePublish(queue, contract.OutcomeError)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return "", fmt.Errorf("publish to queue %q: %w", queue, err)
	}

	select {
	case b.window <- struct{}{}:
	case <-ctx.Done():
		return fail(fmt.Errorf("waiting for a confirm window slot: %w", context.Cause(ctx)))
	case <-b.life.abortCtx.Done():
		return fail(ErrClosed)
	}
	defer func() { <-b.window }()

	// The first attempt runs outside backoff.Retry: it is the common case
	// and needs none of the retry machinery (drivers watch the abort
	// channel themselves).
	if err := d.send(ctx, physical, id, headers, body); err != nil {
		if err := b.retry(ctx, d, queue, physical, id, headers, body, err); err != nil {
			return fail(err)
		}
	}
	b.cfg.Metrics.observePublish(queue, contract.OutcomeSuccess)
	return id, nil
}

// retry retries d.send with backoff after a first attempt failed with
// first, until it is confirmed or ctx (or a forced Close) ends it.
func (b *base) retry(ctx context.Context, d driver, queue, physical, id string, headers map[string]string, body []byte, first error) error {
	ctx, cancel := joinCancel(ctx, b.life.abortCtx)
	defer cancel()
	last, attempted := first, false
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		if !attempted {
			// Hand the failed first attempt to Retry so that it waits
			// and logs before the second.
			attempted = true
			return struct{}{}, first
		}
		err := d.send(ctx, physical, id, headers, body)
		if err != nil {
			last = err
		}
		return struct{}{}, err
	},
		backoff.WithBackOff(newPublishBackoff()),
		// The caller's ctx bounds the retries, as documented on Publish.
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			b.log.WarnContext(ctx, "publish not confirmed, retrying",
				"queue", queue, "message_id", id, "retry_in", next, "error", err)
		}))
	if err == nil {
		return nil
	}
	if !errors.Is(err, last) {
		err = fmt.Errorf("%w (last attempt: %w)", err, last)
	}
	if b.life.abortCtx.Err() != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return fmt.Errorf("not confirmed: %w", err)
}

// runHandler calls handler under a consumer span whose parent is the
// publisher's trace context from msg.Headers, so the handler's logs carry
// the trace id of the request that caused the message. A panic becomes an
// error (retried like any other) instead of killing the consumer.
func (b *base) runHandler(ctx context.Context, physical string, handler Handler, msg Message) (took time.Duration, err error) {
	ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(msg.Headers))
	ctx, span := b.tracer.Start(ctx, "process "+physical,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(b.system,
			semconv.MessagingDestinationName(physical),
			semconv.MessagingMessageID(msg.ID),
			semconv.MessagingOperationName("process"),
			semconv.MessagingOperationTypeProcess,
			attribute.Int("messaging.message.attempt", msg.Attempt)))
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
