package messaging

// The NATS JetStream driver.
//
// Connections: nats.go reconnects by itself (MaxReconnects(-1)), buffering
// publishes meanwhile; readiness is the connection status it maintains.
//
// Publishing: asynchronous JetStream publishes (from the caller's goroutine,
// or from one writer goroutine while another publish is under way: see
// sendAll), with the message id in Nats-Msg-Id, so the stream's duplicate window turns
// a retried publish whose PubAck was lost into a no-op rather than a copy.
// PubAcks (and their failures: timeouts, disconnects) come back through the
// JetStream context's ack and error handlers, which route each to the
// pipeline waiting for it (see pubAcks), rather than through a future per
// message: two channels and a select per message fewer.
//
// Retries and dead letters: the durable consumer (contract.ConsumerName)
// counts deliveries on the server, so a failed attempt is Nak'ed with the
// backoff as delay and comes back with NumDelivered+1 — to any replica, and
// across restarts. The attempt that reaches MaxDeliveries and fails (or fails
// with a Permanent error) is copied to contract.DeadLetterSubject, in the
// same stream, and then Term'ed. The kit publishes the copy itself rather
// than relying on the MaxDeliver advisory because the advisory carries only
// the sequence number, is not persisted and needs a separate listener; the
// copy keeps body and headers and is stored like any message. The consumer's
// MaxDeliver (MaxDeliveries+1 when the kit declares it) stays as a backstop:
// a message whose handler crashed the process on its last attempt arrives
// once more and is dead-lettered without running the handler.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/courier-dev/courier/services/kit/contract"
)

const (
	// natsPublishTimeout bounds the wait for one PubAck; a publish that
	// times out is retried under the same Nats-Msg-Id.
	natsPublishTimeout = 5 * time.Second
	// natsAckTimeout bounds the wait for the server to confirm an ack.
	natsAckTimeout = 5 * time.Second
	// natsAckRetryFor bounds the retries of one ack, well within AckWait.
	natsAckRetryFor = 10 * time.Second
	// natsAckWait is the AckWait of consumers the kit declares itself.
	natsAckWait = 30 * time.Second
	// natsPullExpiry and natsPullHeartbeat bound how long a consumer can
	// sit on a pull request the server no longer knows, as after a server
	// restart that raced the client's reconnect (seen: 30 s without a
	// message, nats.go's default expiry): the request is renewed every
	// natsPullExpiry, and two missed heartbeats make the iterator fail and
	// the consumer bind again. An idle consumer costs one request per
	// expiry and a heartbeat per interval.
	natsPullExpiry    = 5 * time.Second
	natsPullHeartbeat = 2 * time.Second
	// natsDeclareTimeout bounds declaring the development topology on one
	// connection.
	natsDeclareTimeout = 10 * time.Second
	// maxReasonLen keeps the dead-letter reason header within reason.
	maxReasonLen = 512
)

// errNATSClosed means nats.go closed the connection for good outside of
// Close.
var errNATSClosed = errors.New("nats connection closed")

type natsBroker struct {
	base
	nc     *nats.Conn
	js     jetstream.JetStream
	stream string

	closed     chan struct{} // closed by nats.go's ClosedHandler
	closedOnce sync.Once
	// publishes feeds the publisher goroutine.
	publishes chan *nats.Msg
	// publishing is held by whoever calls PublishMsgAsync for a single
	// Publish: the publisher goroutine, or a caller that found it free.
	publishing sync.Mutex
	// acks routes PubAcks to the pipelines awaiting them.
	acks pubAcks
	// expectStream is the Nats-Expected-Stream header value every message
	// carries; shared, since nats.go only reads headers.
	expectStream []string
}

func connectNATS(ctx context.Context, cfg Config) (*natsBroker, error) {
	n := &natsBroker{
		stream: contract.StreamName(cfg.App),
		closed: make(chan struct{}),
	}
	n.publishes = make(chan *nats.Msg, cfg.ConfirmWindow)
	n.acks.waiting = make(map[*nats.Msg]ackWaiter, cfg.ConfirmWindow)
	n.expectStream = []string{n.stream}
	n.init(cfg, semconv.MessagingSystemKey.String("nats"))
	opts := []nats.Option{
		nats.Name(cfg.ClientName),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if c.IsClosed() || n.life.isClosing() {
				return // our own Close, not an outage
			}
			n.log.Warn("nats disconnected, reconnecting", "error", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			n.log.Info("nats reconnected", "server", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			n.log.Warn("nats asynchronous error", "subject", subject, "error", err)
		}),
	}
	// A malformed URL never heals; fail now rather than retry until ctx ends.
	if err := checkNATSURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("connect to nats: %s: %w", contract.EnvBrokerURL, err)
	}
	if cfg.CredentialsFile != "" {
		// nats.go would report a missing file at every attempt, as if the
		// server were down.
		if _, err := os.Stat(cfg.CredentialsFile); err != nil {
			return nil, fmt.Errorf("connect to nats: %w: credentials file: %w", ErrConfig, err)
		}
		opts = append(opts, nats.UserCredentials(cfg.CredentialsFile))
	}
	if cfg.InboxPrefix != "" {
		if strings.ContainsAny(cfg.InboxPrefix, "*> \t") || strings.HasSuffix(cfg.InboxPrefix, ".") {
			return nil, fmt.Errorf("connect to nats: %w: inbox prefix %q: no wildcards, spaces or trailing dot", ErrConfig, cfg.InboxPrefix)
		}
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	// Dialing and declaring are one attempt: a declare that times out while
	// the server restarts (nats.go buffers the request, the reply never
	// comes) is retried on a fresh connection like a failed dial.
	nc, err := establish(ctx, n.log, "nats connect", contract.EnvBrokerURL, cfg.AuthRetryFor, classifyNATS,
		func(ctx context.Context) (*nats.Conn, error) {
			// Only the connection that is kept may report the driver
			// closed; closing a failed attempt's must not.
			var kept atomic.Bool
			nc, err := nats.Connect(cfg.URL, append(opts, nats.ClosedHandler(func(*nats.Conn) {
				if kept.Load() {
					n.closedOnce.Do(func() { close(n.closed) })
				}
			}))...)
			if err != nil {
				return nil, err
			}
			if err := n.setUp(ctx, nc); err != nil {
				nc.Close()
				return nil, err
			}
			kept.Store(true)
			return nc, nil
		})
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	n.nc = nc
	go n.publisher()
	return n, nil
}

// setUp makes the JetStream context on nc and, in development mode,
// declares the stream and the durable consumers.
func (n *natsBroker) setUp(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc,
		// The kit's own window bounds pending acks first; this only keeps
		// nats.go from ever stalling below it.
		jetstream.WithPublishAsyncMaxPending(n.cfg.ConfirmWindow),
		jetstream.WithPublishAsyncTimeout(natsPublishTimeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			n.acks.resolve(m, nil)
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			n.acks.resolve(m, err)
		}))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	n.js = js
	if !n.cfg.DeclareTopology {
		return nil
	}
	// Bounded whatever Connect's own deadline: a server that went silent
	// mid-declare is retried on a new connection, not waited on.
	ctx, cancel := context.WithTimeout(ctx, natsDeclareTimeout)
	defer cancel()
	if err := declareNATSStream(ctx, js, n.stream, n.cfg.physicalQueues()); err != nil {
		return err
	}
	// Durable consumers exist from the start, as the operator makes them,
	// so messages published before the first Consume are kept for it;
	// Consume then tunes them to its options.
	for _, p := range n.cfg.physicalQueues() {
		if _, err := n.declareConsumer(ctx, p, ConsumeOptions{}.withDefaults()); err != nil {
			return err
		}
	}
	return nil
}

// classifyNATS tells a server that is not there yet from settings that are
// wrong: the server's authorization errors are refused credentials, and a
// JetStream API error below 500 (a stream or consumer that exists with
// other settings, subjects another stream owns) can never succeed. A 503
// (JetStream not ready, no leader yet) and everything else are waited out.
func classifyNATS(err error) failure {
	for _, auth := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if errors.Is(err, auth) {
			return refused
		}
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code > 0 && apiErr.Code < 500 {
		return misconfigured
	}
	return transient
}

// checkNATSURL accepts what nats.Connect does: a comma-separated list of
// nats://, tls://, ws:// or wss:// URLs with a host; a URL without a scheme
// is a nats:// one.
func checkNATSURL(raw string) error {
	for part := range strings.SplitSeq(raw, ",") {
		part = strings.TrimSpace(part)
		if !strings.Contains(part, "://") {
			part = "nats://" + part
		}
		u, err := url.Parse(part)
		if err != nil {
			return fmt.Errorf("not a valid NATS URL: %w", redactURLError(err))
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("not a valid NATS URL: scheme %q, want nats, tls, ws or wss", u.Scheme)
		}
		if u.Host == "" {
			return errors.New("not a valid NATS URL: no host")
		}
	}
	return nil
}

// Ready reports nats.go's cached connection status.
func (n *natsBroker) Ready(context.Context) error {
	if n.life.isClosing() {
		return ErrClosed
	}
	if !n.nc.IsConnected() {
		return fmt.Errorf("nats: not connected (%s)", n.nc.Status())
	}
	return nil
}

// Close stops consumers, waits for in-flight handlers and publishes (until
// ctx ends), then drains and closes the connection.
func (n *natsBroker) Close(ctx context.Context) error {
	err := n.life.close(ctx)
	if ctx.Err() != nil || n.nc.Drain() != nil {
		n.nc.Close()
	}
	select {
	case <-n.closed:
	case <-ctx.Done():
		n.nc.Close()
	}
	return err
}

// Publish implements Publisher.
func (n *natsBroker) Publish(ctx context.Context, queue string, body []byte) (string, error) {
	ids, err := publishAll(ctx, &n.base, n, queue, []Outgoing{{Body: body}})
	return ids[0], err
}

// PublishBatch implements BatchPublisher.
func (n *natsBroker) PublishBatch(ctx context.Context, queue string, msgs []Outgoing) ([]string, error) {
	return publishAll(ctx, &n.base, n, queue, msgs)
}

// wire builds a message with the id in Nats-Msg-Id, the expected stream
// (so a subject bound to no stream, or to another one, is an error rather
// than a silent success) and the trace context of ctx in its headers. It
// sets those headers itself instead of passing jetstream.WithMsgID and
// WithExpectStream: with options, PublishMsgAsync writes them into the
// message's header map on every call, and nats.go may still be reading that
// map to retry an earlier attempt (no responders); without options it never
// modifies the message, so attempts can share it.
func (n *natsBroker) wire(ctx context.Context, q *queueInfo, id string, body []byte) *nats.Msg {
	h := make(nats.Header, 4)
	otel.GetTextMapPropagator().Inject(ctx, natsHeaderCarrier(h))
	h[contract.HeaderMessageID] = []string{id}
	h[jetstream.ExpectedStreamHeader] = n.expectStream
	return &nats.Msg{Subject: contract.Subject(q.physical), Data: body, Header: h}
}

// natsHeaderCarrier lets the propagator write trace context straight into
// NATS headers. propagation.HeaderCarrier would canonicalise the keys
// ("Traceparent"); NATS headers are case-sensitive and consumers look up
// "traceparent".
type natsHeaderCarrier nats.Header

func (c natsHeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }

func (c natsHeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

func (c natsHeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// sendAll makes one attempt at msgs: each message is registered with
// n.acks and handed to the publisher goroutine once it has a window slot;
// its PubAck, or the failure nats.go reports instead, settles it.
func (n *natsBroker) sendAll(ctx context.Context, c *publishCall[*nats.Msg], msgs []*outgoing[*nats.Msg]) error {
	// A batch is sent from its caller's goroutine, in order: one caller is
	// one writer already. A single Publish is sent from its caller's
	// goroutine too while no other is being sent, and otherwise handed to
	// the publisher goroutine (see publisher for why one writer). Handing
	// every message over cost each Publish a goroutine switch before it
	// reached the socket: measured with bench/e2e (HTTP -> Publish ->
	// consume on NATS), that hop was a share of the kit's latency over the
	// raw client's synchronous PublishMsg on a loaded machine, where every
	// wake-up waits for a core.
	batch := len(msgs) > 1
	stop := c.run(ctx, msgs, func(o *outgoing[*nats.Msg], i int, results chan<- result) error {
		m := o.wire
		n.acks.wait(m, ackWaiter{i: i, results: results})
		if batch || n.publishing.TryLock() {
			_, err := n.js.PublishMsgAsync(m)
			if !batch {
				n.publishing.Unlock()
			}
			if err != nil {
				n.acks.forget(m)
				return err
			}
			return nil
		}
		select {
		case n.publishes <- m:
			return nil
		case <-n.closed:
			n.acks.forget(m)
			return errNATSClosed
		case <-ctx.Done():
			n.acks.forget(m)
			return context.Cause(ctx)
		case <-n.life.abortCtx.Done():
			n.acks.forget(m)
			return ErrClosed
		}
	}, n.closed, errNATSClosed, func(o *outgoing[*nats.Msg], err error) error {
		return fmt.Errorf("send to subject %q: %w", o.wire.Subject, err)
	})
	for _, o := range msgs {
		if o.err != nil {
			// A message given up on may still be awaiting its PubAck;
			// a late one must not reach a later attempt.
			n.acks.forget(o.wire)
		}
	}
	return stop
}

// pubAcks routes the outcome of each asynchronous publish, which nats.go
// reports to the JetStream context's ack and error handlers with the
// published *nats.Msg, to the pipeline waiting for that message. nats.go
// reports at most once per PublishMsgAsync that returned no error (an ack,
// an error reply, a timeout, or a disconnect), and a message is sent by at
// most one attempt at a time, so the message pointer identifies the
// attempt.
type pubAcks struct {
	mu      sync.Mutex
	waiting map[*nats.Msg]ackWaiter
}

type ackWaiter struct {
	i       int
	results chan<- result // see publishCall.run: reporting never blocks
}

func (a *pubAcks) wait(m *nats.Msg, w ackWaiter) {
	a.mu.Lock()
	a.waiting[m] = w
	a.mu.Unlock()
}

func (a *pubAcks) forget(m *nats.Msg) {
	a.mu.Lock()
	delete(a.waiting, m)
	a.mu.Unlock()
}

// resolve reports m's outcome to its pipeline, if one still waits for it.
// It may run under nats.go's publisher lock (the ack-timeout path), so it
// must not call into nats.go.
func (a *pubAcks) resolve(m *nats.Msg, err error) {
	a.mu.Lock()
	w, ok := a.waiting[m]
	delete(a.waiting, m)
	a.mu.Unlock()
	if ok {
		w.results <- result{i: w.i, err: err}
	}
}

// publisher sends the single Publish calls' messages that arrive while
// another is being sent. Many goroutines publishing on one nats.Conn at
// once queue on its mutex behind the flusher's socket writes; one writer
// at a time (n.publishing) lets the flusher batch and, in bench/publish
// (64 goroutines calling Publish), cost about a fifth less CPU per message
// than every caller writing. It stops when
// the connection is closed; a pipeline waiting then sees n.closed.
func (n *natsBroker) publisher() {
	for {
		select {
		case m := <-n.publishes:
			n.publishing.Lock()
			_, err := n.js.PublishMsgAsync(m)
			n.publishing.Unlock()
			if err != nil {
				n.acks.resolve(m, err)
			}
		case <-n.closed:
			return
		}
	}
}

// Consume implements Broker: it pulls from the durable consumer with at
// most Concurrency messages buffered, runs Concurrency workers, and binds
// again with backoff if the consumer goes away, until ctx is cancelled or
// Close is called.
func (n *natsBroker) Consume(ctx context.Context, queue string, handler Handler, opts ConsumeOptions) error {
	if err := n.life.enter(); err != nil {
		return err
	}
	defer n.life.leave()
	physical, err := n.cfg.physical(queue)
	if err != nil {
		return err
	}
	opts = opts.withDefaults()
	ctx, cancel := joinCancel(ctx, n.life.drainCtx)
	defer cancel()
	series := n.cfg.Metrics.consumeSeries(queue)

	retry := newReconnectBackoff()
	for {
		cons, err := n.consumer(ctx, physical, opts)
		if err == nil {
			err = n.consumeFrom(ctx, cons, queue, physical, handler, opts, series)
			retry.Reset()
		}
		if ctx.Err() != nil {
			return nil
		}
		if n.nc.IsClosed() {
			// nats.go gave up (for example the server refused our
			// credentials twice); only a restart with fresh ones helps.
			return fmt.Errorf("consume queue %q: %w", queue, errNATSClosed)
		}
		next := retry.NextBackOff()
		n.log.WarnContext(ctx, "nats consumer stopped, binding again",
			"queue", queue, "consumer", contract.ConsumerName(physical), "retry_in", next, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

// consumer binds to the operator's durable consumer, or declares it with
// settings matching opts when the kit owns the topology.
func (n *natsBroker) consumer(ctx context.Context, physical string, opts ConsumeOptions) (jetstream.Consumer, error) {
	if n.cfg.DeclareTopology {
		return n.declareConsumer(ctx, physical, opts)
	}
	name := contract.ConsumerName(physical)
	c, err := n.js.Consumer(ctx, n.stream, name)
	if err != nil {
		return nil, fmt.Errorf("bind consumer %q of stream %q: %w", name, n.stream, err)
	}
	return c, nil
}

// declareConsumer creates or updates physical's durable consumer: explicit
// acks, MaxAckPending = Concurrency and MaxDeliver = MaxDeliveries+1 (see
// the file comment for the +1).
func (n *natsBroker) declareConsumer(ctx context.Context, physical string, opts ConsumeOptions) (jetstream.Consumer, error) {
	name := contract.ConsumerName(physical)
	c, err := n.js.CreateOrUpdateConsumer(ctx, n.stream, jetstream.ConsumerConfig{
		Durable:       name,
		FilterSubject: contract.Subject(physical),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       natsAckWait,
		MaxDeliver:    opts.MaxDeliveries + 1,
		MaxAckPending: opts.Concurrency,
	})
	if err != nil {
		return nil, fmt.Errorf("declare consumer %q of stream %q: %w", name, n.stream, err)
	}
	return c, nil
}

// consumeFrom runs the workers on one message iterator until ctx is
// cancelled (nil, once in-flight handlers are done) or the iterator fails.
func (n *natsBroker) consumeFrom(ctx context.Context, cons jetstream.Consumer, queue, physical string, handler Handler, opts ConsumeOptions, series *consumeSeries) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(opts.Concurrency),
		jetstream.PullExpiry(natsPullExpiry), jetstream.PullHeartbeat(natsPullHeartbeat))
	if err != nil {
		return fmt.Errorf("pull from consumer: %w", err)
	}
	defer it.Stop()
	// Drain rather than Stop on cancellation: messages already buffered
	// come out of Next and are Nak'ed below, so another replica gets them
	// now instead of after AckWait.
	stopDrain := context.AfterFunc(ctx, it.Drain)
	defer stopDrain()
	ackWait := cons.CachedInfo().Config.AckWait

	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range opts.Concurrency {
		wg.Go(func() {
			for {
				msg, err := it.Next()
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					// One broken iterator stops every worker.
					it.Stop()
					return
				}
				if ctx.Err() != nil {
					_ = msg.Nak()
					continue
				}
				n.handleMsg(ctx, queue, physical, handler, opts, series, ackWait, msg)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("message iterator: %w", firstErr)
}

// handleMsg runs one attempt and settles the message: ack, Nak with the
// backoff delay, or dead-letter.
func (n *natsBroker) handleMsg(ctx context.Context, queue, physical string, handler Handler, opts ConsumeOptions, series *consumeSeries, ackWait time.Duration, msg jetstream.Msg) {
	hctx := handlerContext(ctx)
	headers := natsHeaderStrings(msg.Headers())
	m := Message{
		ID:      headers[contract.HeaderMessageID],
		Queue:   queue,
		Body:    msg.Data(),
		Headers: headers,
		Attempt: 1,
	}
	meta, err := msg.Metadata()
	if err == nil {
		m.Attempt = int(meta.NumDelivered)
	}
	log := func() *slog.Logger { return messageLogger(n.log, queue, m.ID) }

	if m.Attempt > opts.MaxDeliveries {
		log().ErrorContext(hctx, "message exceeded its delivery limit before this delivery, dead-lettering",
			"deliveries", m.Attempt, "max_deliveries", opts.MaxDeliveries)
		series.count(contract.OutcomeDeadLetter)
		n.deadLetter(hctx, log(), physical, msg, m, opts, "delivery limit exceeded")
		return
	}

	stopProgress := keepInProgress(msg, ackWait)
	took, err := n.runHandler(hctx, physical, handler, m)
	stopProgress()

	switch {
	case err == nil:
		series.observe(contract.OutcomeSuccess, took)
		if err := doubleAck(hctx, msg); err != nil {
			log().WarnContext(hctx, "could not ack; the server will redeliver the message", "error", err)
		}
	case IsPermanent(err) || m.Attempt >= opts.MaxDeliveries:
		series.observe(contract.OutcomeDeadLetter, took)
		log().ErrorContext(hctx, "message handling failed, dead-lettering",
			"attempt", m.Attempt, "permanent", IsPermanent(err), "error", err)
		n.deadLetter(hctx, log(), physical, msg, m, opts, err.Error())
	default:
		series.observe(contract.OutcomeRetry, took)
		wait := retryDelay(opts, m.Attempt)
		log().WarnContext(hctx, "message handling failed, retrying", "attempt", m.Attempt, "retry_in", wait, "error", err)
		if err := msg.NakWithDelay(wait); err != nil {
			log().WarnContext(hctx, "could not nak; the server will redeliver the message after AckWait", "error", err)
		}
	}
}

// deadLetter stores a copy of msg on the queue's dead-letter subject and
// then terminates the original. If the copy cannot be stored the original
// is Nak'ed instead, so it is never dropped without a copy.
func (n *natsBroker) deadLetter(ctx context.Context, log *slog.Logger, physical string, msg jetstream.Msg, m Message, opts ConsumeOptions, reason string) {
	dead := &nats.Msg{Subject: contract.DeadLetterSubject(physical), Data: msg.Data(), Header: nats.Header{}}
	for k, v := range msg.Headers() {
		dead.Header[k] = slices.Clone(v)
	}
	id := m.ID
	if meta, err := msg.Metadata(); err == nil && id == "" {
		id = meta.Stream + "." + strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	dead.Header.Set(contract.HeaderMessageID, id+".dead")
	dead.Header.Set(HeaderOriginalMessageID, m.ID)
	dead.Header.Set(HeaderDeliveries, strconv.Itoa(m.Attempt))
	dead.Header.Set(HeaderDeadLetterReason, headerSafe(reason))

	pctx, cancel := context.WithTimeout(ctx, natsPublishTimeout)
	defer cancel()
	if _, err := n.js.PublishMsg(pctx, dead, jetstream.WithExpectStream(n.stream)); err != nil {
		log.ErrorContext(ctx, "could not store the dead letter; the message will be redelivered", "error", err)
		_ = msg.NakWithDelay(retryDelay(opts, m.Attempt))
		return
	}
	if err := msg.TermWithReason(headerSafe(reason)); err != nil {
		// The copy is stored; a redelivery would be dead-lettered again
		// and de-duplicated by its id.
		log.WarnContext(ctx, "could not terminate the dead-lettered message", "error", err)
	}
}

// doubleAck acks msg and waits for the server to confirm, so that when
// Consume returns every ack it reports is really done. An ack that meets a
// server restart is retried for a while (the ack subject stays valid across
// it): each ack that gets through is one duplicate fewer.
func doubleAck(ctx context.Context, msg jetstream.Msg) error {
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		actx, cancel := context.WithTimeout(ctx, natsAckTimeout)
		defer cancel()
		return struct{}{}, msg.DoubleAck(actx)
	}, backoff.WithBackOff(newReconnectBackoff()), backoff.WithMaxElapsedTime(natsAckRetryFor))
	return err
}

// keepInProgress tells the server the message is still being worked on
// every half AckWait, so a slow handler is not raced by a redelivery. It
// arms a timer rather than starting a goroutine with a ticker: every
// message pays for this before its handler runs, most handlers finish long
// before the first tick, and a goroutine per message (start, wake-up on
// stop, wait) was a visible share of the kit's consume path in a profile
// of bench/e2e. After stop returns no InProgress is sent.
func keepInProgress(msg jetstream.Msg, ackWait time.Duration) (stop func()) {
	if ackWait <= 0 {
		return func() {}
	}
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(ackWait/2, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = msg.InProgress()
		t.Reset(ackWait / 2)
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// natsHeaderStrings flattens headers to their first values.
func natsHeaderStrings(h nats.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			out[k] = v[0]
		}
	}
	return out
}

// headerSafe makes s a valid single-line header value of bounded length.
func headerSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxReasonLen {
		s = s[:maxReasonLen]
	}
	return s
}

// declareNATSStream creates the app's stream or adds the queues' subjects
// (each queue and its dead-letter subject) to it. Services declare only
// their own queues, so the subjects are merged, never replaced. Work-queue
// retention: an acked message is gone, as from a queue. Development and
// tests only; see Config.DeclareTopology.
func declareNATSStream(ctx context.Context, js jetstream.JetStream, stream string, physicals []string) error {
	var want []string
	for _, p := range physicals {
		want = append(want, contract.Subject(p), contract.DeadLetterSubject(p))
	}
	// Two services starting together may race to create or update the
	// stream; the loser reads the winner's result and merges again. Any
	// other failure (a timeout, say) goes back to Connect's own retries.
	var err error
	for range 5 {
		var s jetstream.Stream
		s, err = js.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = js.CreateStream(ctx, jetstream.StreamConfig{
				Name:      stream,
				Subjects:  want,
				Retention: jetstream.WorkQueuePolicy,
				Storage:   jetstream.FileStorage,
			})
			if err == nil {
				return nil
			}
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				continue
			}
			break
		}
		if err != nil {
			break
		}
		cfg := s.CachedInfo().Config
		merged := slices.Clone(cfg.Subjects)
		for _, w := range want {
			if !slices.Contains(merged, w) {
				merged = append(merged, w)
			}
		}
		if len(merged) == len(cfg.Subjects) {
			return nil
		}
		cfg.Subjects = merged
		if _, err = js.UpdateStream(ctx, cfg); err == nil {
			return nil
		}
	}
	return fmt.Errorf("declare stream %q: %w", stream, err)
}
