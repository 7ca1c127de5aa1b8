// Package messaging is the kit's broker abstraction: one small interface with
// two drivers, RabbitMQ (amqp091-go) and NATS JetStream (nats.go/jetstream).
//
// Services speak in logical queue names ("emails"); the driver maps them to
// physical names through the environment the operator sets (see
// contract.QueueEnv). Publishing is confirmed (publisher confirms or PubAck)
// and retried through outages, one message at a time (Publish) or many in
// flight at once (BatchPublisher, PublishBatch; see publish.go); consuming
// acks only after the handler succeeded, retries with backoff up to a
// limit, then dead-letters.
//
// Retries never need more permission than a service has in a cluster (no
// configure; write only on the exchanges it publishes to; read only on the
// queues it consumes):
//
//   - RabbitMQ: a failed message stays unacknowledged while the consumer waits
//     out the backoff and calls the handler again, up to MaxDeliveries
//     attempts; then Nack without requeue sends it through the queue's
//     x-dead-letter-exchange to its dead-letter queue. Quorum queues' delivery
//     count carries the attempt number across consumer crashes.
//   - JetStream: a failed message is Nak'ed with the backoff as delay and
//     comes back, to any replica, with the server's delivery count; the last
//     failed attempt copies it to contract.DeadLetterSubject and Terms it.
//
// The file comments of rabbitmq.go and nats.go give the reasons.
//
// W3C trace context travels in message headers: Publish starts a producer
// span and injects it, the consumer extracts it and runs the handler under a
// consumer span of the same trace. Tracing uses the global OpenTelemetry
// propagator and tracer provider, which the kit installs.
package messaging

import (
	"context"
	"errors"
	"time"
)

// Message is one delivery handed to a Handler.
type Message struct {
	// ID is the unique message id set by the publisher; consumers use it to
	// make handling idempotent.
	ID string
	// Queue is the logical queue name the message was consumed from.
	Queue string
	// Body is the payload, usually JSON.
	Body []byte
	// Headers carries application headers, including W3C trace context.
	Headers map[string]string
	// Attempt is the 1-based delivery attempt.
	Attempt int
}

// Handler handles one message. Returning nil acks it; returning an error
// schedules a redelivery with backoff until the delivery limit, after which
// the message is dead-lettered. Wrap an error with Permanent to dead-letter
// at once (for example a body that can never be decoded).
type Handler func(ctx context.Context, msg Message) error

// Publisher publishes confirmed, persistent messages.
type Publisher interface {
	// Publish sends body to the logical queue as a persistent message and
	// returns its id, a new UUID. It returns nil only after the broker
	// confirmed the message (publisher confirm, or JetStream PubAck);
	// outages, nacks and unroutable messages are retried with backoff, under
	// the same id, until ctx ends. An error therefore means "not confirmed",
	// not "not delivered": a retried message may arrive twice, and
	// consumers de-duplicate on Message.ID. Publish waits for each
	// message's confirmation, so one caller has one message in flight; to
	// keep the confirm window full, publish many at once with PublishBatch.
	Publish(ctx context.Context, queue string, body []byte) (string, error)
}

// ConsumeOptions tunes a consumer. The zero value is usable: every field
// left zero takes its documented default.
type ConsumeOptions struct {
	// Concurrency bounds the handlers running at once (default 4). It is
	// also the prefetch (RabbitMQ) or pull batch (JetStream), so a replica
	// never holds more unacknowledged messages than it can work on.
	Concurrency int
	// MaxDeliveries is the number of attempts before a message is
	// dead-lettered (default 5).
	MaxDeliveries int
	// RetryBackoff is the first redelivery delay; it doubles per attempt up
	// to MaxRetryBackoff (defaults 200ms and 10s), with ±20% jitter so
	// replicas that failed together do not retry together.
	RetryBackoff time.Duration
	// MaxRetryBackoff caps the redelivery delay.
	MaxRetryBackoff time.Duration
}

// Defaults of ConsumeOptions.
const (
	DefaultConcurrency     = 4
	DefaultMaxDeliveries   = 5
	DefaultRetryBackoff    = 200 * time.Millisecond
	DefaultMaxRetryBackoff = 10 * time.Second
)

// withDefaults returns o with every zero field set to its default.
func (o ConsumeOptions) withDefaults() ConsumeOptions {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxDeliveries <= 0 {
		o.MaxDeliveries = DefaultMaxDeliveries
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = DefaultRetryBackoff
	}
	if o.MaxRetryBackoff <= 0 {
		o.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if o.MaxRetryBackoff < o.RetryBackoff {
		o.MaxRetryBackoff = o.RetryBackoff
	}
	return o
}

// Broker is a connected driver. The Brokers Connect returns also
// implement BatchPublisher; it is not part of this interface so that
// wrappers of a Broker need not implement it (PublishBatch falls back to
// Publish for them).
type Broker interface {
	Publisher
	// Consume runs handler for every message of the logical queue until ctx
	// is cancelled or Close is called, then stops taking new messages,
	// waits for in-flight handlers to finish and settle their messages, and
	// returns nil. Messages prefetched but not started go back to the
	// broker for another consumer. Handlers run with ctx's values but not
	// its cancellation, so they are not cut off half-way. Consume survives
	// broker restarts; it returns an error only for a queue missing from
	// Config.Queues, after Close (ErrClosed), or when the connection is gone
	// for good (nats.go gave up reconnecting).
	Consume(ctx context.Context, queue string, handler Handler, opts ConsumeOptions) error
	// Ready reports the cached connection state for /readyz; it never does a
	// network round trip.
	Ready(ctx context.Context) error
	// Close refuses new Publish and Consume calls, stops the running
	// consumers as if their ctx were cancelled, waits until they and the
	// in-flight publishes have returned, then closes the connection. If ctx
	// ends first, publishes still retrying fail and Close returns ctx's
	// error.
	Close(ctx context.Context) error
}

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the message is dead-lettered at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err: err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
