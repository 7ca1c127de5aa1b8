package messaging

// The publish path both drivers share.
//
// Publish and PublishBatch are one engine (publishAll): a call makes
// attempts until each of its messages is confirmed or the caller's ctx ends,
// building each message once, when it is first sent (id, producer span,
// headers, the driver's wire form). An attempt (driver.sendAll on top of
// publishCall.run) is pipelined: message i is handed to the driver's writer
// goroutine as soon as a confirm-window slot is free, without waiting for
// message i-1's confirmation, and confirmations are collected as they
// arrive; so one caller keeps up to Config.ConfirmWindow messages in
// flight, as the client libraries' own fast paths do. The
// messages an attempt could not get confirmed (an outage, a nack, an
// unroutable message) go into the next attempt after a backoff, under the
// same id, so a publish that was stored but whose confirmation was lost is
// de-duplicated by JetStream and at worst duplicated on RabbitMQ.
//
// The window is one semaphore per Broker (base.window), shared by every
// caller: a slot is held from a message's hand-off until its outcome, never
// during a backoff.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/internal/randid"
)

// Outgoing is one message of a PublishBatch call.
type Outgoing struct {
	// Body is the payload, usually JSON.
	Body []byte
	// Context, if not nil, is the context of whatever caused the message,
	// typically the request that enqueued it: the message continues its
	// trace, as a Publish continues the trace of its ctx, so each message
	// of one batch can belong to another trace. Only its values are used
	// (like kgo.Record.Context in franz-go); the batch's ctx bounds the
	// publish. Nil means the batch's ctx.
	Context context.Context
}

// BatchPublisher publishes many confirmed, persistent messages at once.
// The Brokers Connect returns implement it; use PublishBatch to publish
// through any Publisher.
type BatchPublisher interface {
	// PublishBatch sends msgs to the logical queue as persistent messages,
	// each with its own new id and trace context, with up to the confirm
	// window of them awaiting their broker confirmation at once (Publish
	// waits for each message's confirmation before the caller can send
	// the next). Messages an attempt could not get confirmed are retried
	// with backoff, under the same ids, until they are or ctx ends, as
	// Publish does.
	//
	// ids has one entry per message, always: ids[i] is the id message i was
	// confirmed under, or "" if it was not confirmed. err is nil only when
	// every message was confirmed; otherwise it says how many were not and
	// wraps the first one's reason (context.DeadlineExceeded, ErrClosed,
	// ...). As with Publish, "not confirmed" is not "not delivered": a
	// caller that publishes the unconfirmed messages again may duplicate
	// some, and consumers de-duplicate on their own ids. The messages need
	// not be confirmed in order.
	PublishBatch(ctx context.Context, queue string, msgs []Outgoing) (ids []string, err error)
}

// PublishBatch publishes msgs to queue through p, with the semantics of
// BatchPublisher.PublishBatch: pipelined when p implements
// BatchPublisher, otherwise one p.Publish call after the other (each under
// ctx's deadline and its message's Context values), which keeps the
// guarantees but not the throughput. It is to Publisher what io.WriteString
// is to io.Writer, so that code written against Publisher (wrappers,
// in-memory fakes) keeps working.
func PublishBatch(ctx context.Context, p Publisher, queue string, msgs []Outgoing) ([]string, error) {
	if bp, ok := p.(BatchPublisher); ok {
		return bp.PublishBatch(ctx, queue, msgs)
	}
	ids := make([]string, len(msgs))
	failed, first := 0, -1
	var firstErr error
	for i, m := range msgs {
		pctx := ctx
		if m.Context != nil {
			pctx = valuesFrom{Context: ctx, values: m.Context}
		}
		id, err := p.Publish(pctx, queue, m.Body)
		if err != nil {
			failed++
			if first < 0 {
				first, firstErr = i, err
			}
			continue
		}
		ids[i] = id
	}
	if failed == 0 {
		return ids, nil
	}
	return ids, fmt.Errorf("%d of %d messages not confirmed (the first, message %d: %w)", failed, len(msgs), first, firstErr)
}

// valuesFrom is a context with the deadline and cancellation of Context
// but the values of values first (then Context's): a message's trace under
// its batch's deadline.
type valuesFrom struct {
	context.Context
	values context.Context
}

func (c valuesFrom) Value(key any) any {
	if v := c.values.Value(key); v != nil {
		return v
	}
	return c.Context.Value(key)
}

// queueInfo is what the publish path needs per logical queue, worked out
// once at Connect rather than per message.
type queueInfo struct {
	name     string
	physical string
	spanName string
	// counters returns the queue's publish series; they are looked up
	// (and so created) on the first publish, not for queues a service only
	// consumes.
	counters func() publishCounters
}

func newQueueInfos(cfg Config) map[string]*queueInfo {
	out := make(map[string]*queueInfo, len(cfg.Queues))
	for logical, physical := range cfg.Queues {
		out[logical] = &queueInfo{
			name:     logical,
			physical: physical,
			spanName: "publish " + physical,
			counters: sync.OnceValue(func() publishCounters { return cfg.Metrics.publishCounters(logical) }),
		}
	}
	return out
}

// queue resolves a logical queue name for the publish path.
func (b *base) queue(name string) (*queueInfo, error) {
	if q, ok := b.queues[name]; ok {
		return q, nil
	}
	_, err := b.cfg.physical(name) // the error naming the variable to set
	return nil, err
}

// driver is what differs between brokers on the publish path; M is the
// driver's wire form of a message.
type driver[M any] interface {
	// wire builds what the driver sends for one message: body, id and the
	// trace context of ctx in its headers. Attempts resend it unchanged,
	// so it must not be modified once built.
	wire(ctx context.Context, q *queueInfo, id string, body []byte) M
	// sendAll makes one attempt at msgs through c.run, which sets each
	// message's err (nil once confirmed), and returns run's stop error.
	sendAll(ctx context.Context, c *publishCall[M], msgs []*outgoing[M]) error
}

// outgoing is one message of a publish call.
type outgoing[M any] struct {
	index int    // in the caller's slice
	id    string // "" until the message is first sent
	span  trace.Span
	wire  M // built on the first attempt, dropped once confirmed
	// err is the outcome of the latest attempt: nil once confirmed.
	err error
	// last is the latest failure the broker or driver reported (not the
	// caller's ctx ending), kept so a publish cut off by its deadline says
	// why it had not been confirmed until then.
	last error
}

// Sentinels for outgoing.err during an attempt.
var (
	errNotSent  = errors.New("not sent")
	errInFlight = errors.New("in flight")
)

// publishCall is one Publish or PublishBatch call.
type publishCall[M any] struct {
	b   *base
	d   driver[M]
	q   *queueInfo
	ctx context.Context // the call's ctx: the parent of messages without a Context
	src []Outgoing
	ids []string
}

// producerSpanKind is allocated once: it is the same option every time.
var producerSpanKind = trace.WithSpanKind(trace.SpanKindProducer)

// publishAll is Publish and PublishBatch for every driver; see the file
// comment.
func publishAll[M any](ctx context.Context, b *base, d driver[M], queue string, msgs []Outgoing) ([]string, error) {
	ids := make([]string, len(msgs))
	if err := b.life.enter(); err != nil {
		return ids, err
	}
	defer b.life.leave()
	q, err := b.queue(queue)
	if err != nil {
		return ids, err
	}
	if len(msgs) == 0 {
		return ids, nil
	}
	c := &publishCall[M]{b: b, d: d, q: q, ctx: ctx, src: msgs, ids: ids}
	out := make([]outgoing[M], len(msgs))
	pending := make([]*outgoing[M], len(msgs))
	for i := range out {
		out[i].index = i
		pending[i] = &out[i]
	}

	var (
		retry *backoff.ExponentialBackOff
		stop  error
	)
	for {
		stop = d.sendAll(ctx, c, pending)
		failed := pending[:0]
		for _, o := range pending {
			if o.err == nil {
				continue
			}
			if o.err != stop {
				o.last = o.err
			}
			if stop != nil {
				// The publish ends because of stop, so stop is the
				// error; this attempt's failure, if any, is its "last
				// attempt".
				o.err = stop
			}
			failed = append(failed, o)
		}
		clear(pending[len(failed):])
		pending = failed
		if len(pending) == 0 || stop != nil {
			break
		}
		if retry == nil {
			retry = newPublishBackoff()
		}
		wait := retry.NextBackOff()
		b.log.WarnContext(ctx, "publish not confirmed, retrying",
			"queue", queue, "unconfirmed", len(pending), "of", len(msgs),
			"message_id", pending[0].id, "retry_in", wait, "error", pending[0].err)
		if stop = b.sleep(ctx, wait); stop != nil {
			for _, o := range pending {
				o.err = stop
			}
			break
		}
	}

	q.counters().add(len(msgs)-len(pending), len(pending))
	if len(pending) == 0 {
		return ids, nil
	}
	for _, o := range pending {
		if o.last != nil && o.last != o.err {
			o.err = fmt.Errorf("%w (last attempt: %w)", o.err, o.last)
		}
		if o.span != nil {
			o.span.RecordError(o.err)
			o.span.SetStatus(codes.Error, o.err.Error())
			o.span.End()
		}
	}
	first := pending[0]
	if len(msgs) == 1 {
		return ids, fmt.Errorf("publish to queue %q: not confirmed: %w", queue, first.err)
	}
	return ids, fmt.Errorf("publish to queue %q: %d of %d messages not confirmed (the first, message %d: %w)",
		queue, len(pending), len(msgs), first.index, first.err)
}

// sleep waits d, or until ctx ends or Close gives up, which it returns as
// the stop error.
func (b *base) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-b.life.abortCtx.Done():
		return ErrClosed
	}
}

// stopped returns the stop error once ctx has ended or Close has given up,
// nil before.
func (b *base) stopped(ctx context.Context) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if b.life.abortCtx.Err() != nil {
		return ErrClosed
	}
	return nil
}

// prepare gives o its id, producer span and wire form when it is first
// sent. Building messages as they enter the window rather than all up
// front keeps a large batch's garbage small: only the window's worth (and
// the unconfirmed) are alive at once.
func (c *publishCall[M]) prepare(o *outgoing[M]) {
	if o.id != "" {
		return
	}
	m := c.src[o.index]
	parent := m.Context
	if parent == nil {
		parent = c.ctx
	}
	o.id = randid.New()
	var ctx context.Context
	ctx, o.span = c.b.tracer.Start(parent, c.q.spanName, producerSpanKind)
	// Attributes only for a span that records: building them costs more
	// than the unsampled span itself. The kit's sampler
	// (ParentBased(NeverSample)) does not look at them.
	if o.span.IsRecording() {
		o.span.SetAttributes(c.b.system,
			semconv.MessagingDestinationName(c.q.physical),
			semconv.MessagingMessageID(o.id),
			semconv.MessagingOperationName("publish"),
			semconv.MessagingOperationTypeSend)
	}
	o.wire = c.d.wire(ctx, c.q, o.id, m.Body)
}

// confirmed records o's confirmation and lets its wire form go.
func (c *publishCall[M]) confirmed(o *outgoing[M]) {
	o.err = nil
	c.ids[o.index] = o.id
	o.span.End()
	var zero M
	o.wire = zero
}

// fail ends an attempt that could not start (no channel, no connection):
// every message fails with err, or with the stop error if ctx ended or
// Close gave up, which it returns.
func (c *publishCall[M]) fail(ctx context.Context, msgs []*outgoing[M], err error) error {
	stop := c.b.stopped(ctx)
	for _, o := range msgs {
		o.err = cmp.Or(stop, err)
	}
	return stop
}

// result is the outcome of message i of an attempt: nil once confirmed.
type result struct {
	i   int
	err error
}

// run makes one pipelined attempt at msgs. It prepares and submits
// message i as soon as it holds a confirm-window slot for it, and settles
// messages from results as their outcomes arrive, releasing their slots,
// until every message has one. submit hands the message to the driver's
// writer; from then on the driver sends exactly one result for it on
// results, unless submit returned an error (then none), or dead is closed
// first (the channel or connection the messages went out on is gone: those
// still unsettled fail with deadErr). results has room for
// min(len(msgs), Config.ConfirmWindow) values, so that reporting never
// blocks the driver even after run has stopped reading: a message holds a
// slot while it may still report, so no more are ever unread. describe
// turns a failure into the message's error.
//
// run sets every message's err (nil once confirmed) and returns the stop
// error when ctx ended or Close gave up first; the messages left unsettled
// then have that error.
func (c *publishCall[M]) run(ctx context.Context, msgs []*outgoing[M],
	submit func(o *outgoing[M], i int, results chan<- result) error,
	dead <-chan struct{}, deadErr error,
	describe func(o *outgoing[M], err error) error,
) (stop error) {
	b := c.b
	results := make(chan result, min(len(msgs), b.cfg.ConfirmWindow))
	for _, o := range msgs {
		o.err = errNotSent
	}
	next, outstanding := 0, 0
	settle := func(r result) {
		o := msgs[r.i]
		if o.err != errInFlight {
			return // cannot happen by the driver's contract; never free a slot twice
		}
		outstanding--
		<-b.window
		if r.err != nil {
			o.err = describe(o, r.err)
			return
		}
		c.confirmed(o)
	}
	// end fails everything unsettled with err, after taking the outcomes
	// that have already arrived: those are real.
	end := func(err error) {
		for drained := false; !drained; {
			select {
			case r := <-results:
				settle(r)
			default:
				drained = true
			}
		}
		for _, o := range msgs {
			if o.err == errNotSent || o.err == errInFlight {
				o.err = err
			}
		}
		for range outstanding {
			<-b.window
		}
	}
	for next < len(msgs) || outstanding > 0 {
		var slot chan<- struct{}
		if next < len(msgs) {
			slot = b.window
		}
		select {
		case slot <- struct{}{}:
			o := msgs[next]
			c.prepare(o)
			if err := submit(o, next, results); err != nil {
				<-b.window
				if stop := b.stopped(ctx); stop != nil {
					end(stop)
					return stop
				}
				o.err = describe(o, err)
			} else {
				o.err = errInFlight
				outstanding++
			}
			next++
		case r := <-results:
			settle(r)
		case <-dead:
			end(deadErr)
			return nil
		case <-ctx.Done():
			stop := context.Cause(ctx)
			end(stop)
			return stop
		case <-b.life.abortCtx.Done():
			end(ErrClosed)
			return ErrClosed
		}
	}
	return nil
}
