package messaging

// The RabbitMQ driver.
//
// Connections: one AMQP connection per Broker, watched by a supervisor
// goroutine that redials with backoff when NotifyClose fires. amqp091-go's own
// automatic recovery (Config.Recovery) is deliberately not used: it revives
// the same *Channel after a reconnect, so a Delivery received before the
// outage would ack a delivery tag that now means another message on the new
// channel. Here every channel belongs to one connection; a delivery whose
// channel died is simply redelivered by the broker.
//
// Publishing: one confirm-mode channel per connection, written by one
// goroutine and confirmed by another (see confirmChannel); mandatory
// publishes, so an unroutable message counts as not confirmed.
//
// Retries and dead letters: the operator's topology gives every queue an
// x-dead-letter-exchange, and a service has no configure permission and no
// write permission on the queues it consumes (it cannot republish to them).
// So the driver retries in-process: a failed delivery stays unacknowledged
// while the consumer waits the backoff and calls the handler again, up to
// MaxDeliveries attempts, then Nack(requeue=false) lets the broker route it
// to the dead-letter exchange. This needs no permission beyond read, works on
// classic and quorum queues alike on RabbitMQ 3.10, and never spins: nothing
// is requeued on failure. Attempts survive a consumer crash on quorum queues
// because the count starts from the broker's x-delivery-count header; a
// message that already used up its deliveries is dead-lettered on arrival
// without running the handler again. Classic queues have no such counter, so
// there a consumer crashing on every attempt restarts the count (quorum
// queues, which the operator declares, are the answer to that).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/courier-dev/courier/services/kit/contract"
)

const (
	// rabbitDialTimeout bounds one TCP dial plus AMQP handshake.
	rabbitDialTimeout = 5 * time.Second
	// rabbitHeartbeat detects a dead peer within two intervals.
	rabbitHeartbeat = 5 * time.Second
	// headerDeliveryCount is set by quorum queues on redelivered messages.
	headerDeliveryCount = "x-delivery-count"
)

type rabbitBroker struct {
	base

	// mu guards conn and connUp.
	mu     sync.Mutex
	conn   *amqp.Connection // nil while disconnected
	connUp chan struct{}    // closed while conn != nil
	ready  atomic.Bool

	// pubMu guards pub, the shared confirm-mode publishing channel.
	pubMu sync.Mutex
	pub   *confirmChannel

	shutdown       chan struct{} // closed by Close after draining
	shutdownOnce   sync.Once
	supervisorDone chan struct{}
}

func connectRabbitMQ(ctx context.Context, cfg Config) (*rabbitBroker, error) {
	r := &rabbitBroker{
		connUp:         make(chan struct{}),
		shutdown:       make(chan struct{}),
		supervisorDone: make(chan struct{}),
	}
	r.init(cfg, semconv.MessagingSystemRabbitMQ)
	// A malformed URL never heals; fail now rather than retry until ctx ends.
	if _, err := amqp.ParseURI(cfg.URL); err != nil {
		return nil, fmt.Errorf("connect to rabbitmq: %s is not a valid AMQP URL: %w", contract.EnvBrokerURL, redactURLError(err))
	}
	// Dialing and declaring are one attempt: a declare that meets a broker
	// restarting is retried with a fresh connection like a failed dial.
	conn, err := establish(ctx, r.log, "rabbitmq connect", contract.EnvBrokerURL, cfg.AuthRetryFor, classifyRabbit,
		func(context.Context) (*amqp.Connection, error) {
			conn, err := r.dialOnce()
			if err != nil || !cfg.DeclareTopology {
				return conn, err
			}
			if err := declareRabbitTopology(conn, cfg.physicalQueues()); err != nil {
				_ = conn.Close()
				return nil, err
			}
			return conn, nil
		})
	if err != nil {
		return nil, fmt.Errorf("connect to rabbitmq: %w", err)
	}
	r.setConn(conn)
	go r.supervise(conn)
	return r, nil
}

// dialOnce makes one attempt to connect.
func (r *rabbitBroker) dialOnce() (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(r.cfg.ClientName)
	return amqp.DialConfig(r.cfg.URL, amqp.Config{
		Heartbeat:  rabbitHeartbeat,
		Properties: props,
		Dial:       amqp.DefaultDial(rabbitDialTimeout),
	})
}

// redial reconnects after an outage, with backoff until ctx ends (Close).
// Whatever the broker answers is retried: the service was connected, so its
// settings were right, and a refusal now (a password rotated under a pod the
// rotation is about to replace, a user the operator is repairing) is waited
// out with /readyz saying so rather than ending the process.
func (r *rabbitBroker) redial(ctx context.Context) (*amqp.Connection, error) {
	return establish(ctx, r.log, "rabbitmq reconnect", contract.EnvBrokerURL, forever,
		func(error) failure { return transient },
		func(context.Context) (*amqp.Connection, error) { return r.dialOnce() })
}

// classifyRabbit tells a broker that is not there yet from settings that
// are wrong. The handshake's 403 is refused credentials (amqp091-go also
// reports a handshake the broker cut short so); 530 is a vhost the user may
// not open yet. A topology declare (development mode) answered with 403 (no
// configure permission) or 406 (a queue exists with other arguments) can
// never succeed.
func classifyRabbit(err error) failure {
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) {
		return transient
	}
	var declare *declareError
	switch {
	case errors.As(err, &declare) && (amqpErr.Code == amqp.AccessRefused || amqpErr.Code == amqp.PreconditionFailed):
		return misconfigured
	case errors.As(err, &declare):
		return transient
	case amqpErr.Code == amqp.AccessRefused || amqpErr.Code == amqp.NotAllowed:
		return refused
	}
	return transient
}

// supervise waits for conn to close, redials and publishes the new
// connection to the rest of the driver, until Close.
func (r *rabbitBroker) supervise(conn *amqp.Connection) {
	defer close(r.supervisorDone)
	// dialCtx ends the redial loop when Close is called mid-outage.
	dialCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.shutdown:
			cancel()
		case <-dialCtx.Done():
		}
	}()
	for {
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case amqpErr := <-closed:
			r.clearConn()
			r.log.Warn("rabbitmq connection lost, reconnecting", "error", amqpErr)
		case <-r.shutdown:
			r.clearConn()
			_ = conn.Close()
			return
		}
		var err error
		conn, err = r.redial(dialCtx)
		if err != nil {
			return
		}
		r.setConn(conn)
		r.log.Info("rabbitmq reconnected")
	}
}

func (r *rabbitBroker) setConn(conn *amqp.Connection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conn = conn
	close(r.connUp)
	r.ready.Store(true)
}

func (r *rabbitBroker) clearConn() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clearLocked()
}

// dropConn clears conn if it is still the current connection; a newer one
// the supervisor set meanwhile stays.
func (r *rabbitBroker) dropConn(conn *amqp.Connection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == conn {
		r.clearLocked()
	}
}

func (r *rabbitBroker) clearLocked() {
	r.ready.Store(false)
	if r.conn != nil {
		r.conn = nil
		r.connUp = make(chan struct{})
	}
}

// connection returns the live connection, waiting for a reconnect if needed.
func (r *rabbitBroker) connection(ctx context.Context) (*amqp.Connection, error) {
	for {
		r.mu.Lock()
		conn, up := r.conn, r.connUp
		r.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		if conn != nil {
			// Closed, and the supervisor has not noticed yet: forget it
			// now and wait for the one the supervisor will dial.
			r.dropConn(conn)
			continue
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the rabbitmq connection: %w", context.Cause(ctx))
		case <-r.life.abortCtx.Done():
			return nil, ErrClosed
		}
	}
}

// Ready reports whether the connection is up; it reads a flag the
// supervisor maintains and never touches the network.
func (r *rabbitBroker) Ready(context.Context) error {
	if r.life.isClosing() {
		return ErrClosed
	}
	if !r.ready.Load() {
		return errors.New("rabbitmq: not connected")
	}
	return nil
}

// Close stops consumers, waits for in-flight handlers and publishes (until
// ctx ends), then closes the connection.
func (r *rabbitBroker) Close(ctx context.Context) error {
	err := r.life.close(ctx)
	r.shutdownOnce.Do(func() { close(r.shutdown) })
	<-r.supervisorDone
	return err
}

// Publish implements Publisher.
func (r *rabbitBroker) Publish(ctx context.Context, queue string, body []byte) (string, error) {
	ids, err := publishAll(ctx, &r.base, r, queue, []Outgoing{{Body: body}})
	return ids[0], err
}

// PublishBatch implements BatchPublisher.
func (r *rabbitBroker) PublishBatch(ctx context.Context, queue string, msgs []Outgoing) ([]string, error) {
	return publishAll(ctx, &r.base, r, queue, msgs)
}

// rabbitMessage is the RabbitMQ wire form of a message.
type rabbitMessage struct {
	exchange, key string
	msg           amqp.Publishing
}

// wire builds a persistent message with its id in the message-id property
// and in contract.HeaderMessageID (which consumers on either broker read),
// and the trace context of ctx in its headers.
func (r *rabbitBroker) wire(ctx context.Context, q *queueInfo, id string, body []byte) *rabbitMessage {
	table := make(amqp.Table, 4)
	otel.GetTextMapPropagator().Inject(ctx, tableCarrier(table))
	table[contract.HeaderMessageID] = id
	return &rabbitMessage{
		exchange: contract.ExchangeName(q.physical),
		key:      contract.RoutingKey(q.physical),
		msg: amqp.Publishing{
			Headers:      table,
			DeliveryMode: amqp.Persistent,
			MessageId:    id,
			Timestamp:    time.Now(),
			AppId:        r.cfg.ClientName,
			Body:         body,
		},
	}
}

// tableCarrier lets the propagator write trace context straight into an
// AMQP header table, without an intermediate map.
type tableCarrier amqp.Table

func (t tableCarrier) Get(key string) string {
	s, _ := t[key].(string)
	return s
}

func (t tableCarrier) Set(key, value string) { t[key] = value }

func (t tableCarrier) Keys() []string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	return keys
}

// sendAll makes one attempt at msgs on the shared confirm channel: each
// message goes to the channel's publisher goroutine once it has a window
// slot, and its confirmer reports the outcome.
func (r *rabbitBroker) sendAll(ctx context.Context, c *publishCall[*rabbitMessage], msgs []*outgoing[*rabbitMessage]) error {
	pc, err := r.publishChannel(ctx)
	if err != nil {
		return c.fail(ctx, msgs, err)
	}
	channelGone := false
	stop := c.run(ctx, msgs, func(o *outgoing[*rabbitMessage], i int, results chan<- result) error {
		req := &rabbitPublish{wire: o.wire, i: i, results: results}
		// The publisher takes requests as fast as it writes them; this
		// waits only while the connection is blocked (flow control, or an
		// outage not detected yet).
		select {
		case pc.requests <- req:
			return nil
		case <-pc.closed:
			return errPublishChannelClosed
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-r.life.abortCtx.Done():
			return ErrClosed
		}
	}, pc.closed, errPublishChannelClosed, func(o *outgoing[*rabbitMessage], err error) error {
		if errors.Is(err, errPublishChannelClosed) || errors.Is(err, amqp.ErrClosed) {
			channelGone = true
		}
		return fmt.Errorf("send to exchange %q: %w", o.wire.exchange, err)
	})
	select {
	case <-pc.closed:
		channelGone = true
	default:
	}
	if channelGone {
		r.dropPublishChannel(pc)
	}
	return stop
}

// publishChannel returns the shared confirm channel, opening one on the
// current connection if there is none or it was closed.
func (r *rabbitBroker) publishChannel(ctx context.Context) (*confirmChannel, error) {
	r.pubMu.Lock()
	pc := r.pub
	r.pubMu.Unlock()
	if pc != nil && !pc.ch.IsClosed() {
		return pc, nil
	}
	conn, err := r.connection(ctx)
	if err != nil {
		return nil, err
	}
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	if r.pub != nil && !r.pub.ch.IsClosed() {
		return r.pub, nil
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open publishing channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("enable publisher confirms: %w", err)
	}
	r.pub = newConfirmChannel(ch, r.cfg.ConfirmWindow)
	return r.pub, nil
}

func (r *rabbitBroker) dropPublishChannel(pc *confirmChannel) {
	r.pubMu.Lock()
	if r.pub == pc {
		r.pub = nil
	}
	r.pubMu.Unlock()
	_ = pc.ch.Close()
}

var (
	errPublishChannelClosed = errors.New("publishing channel closed")
	errNotConfirmed         = errors.New("broker did not confirm the message (nack or channel closed)")
	errUnroutable           = errors.New("message unroutable: the exchange has no queue bound with its routing key")
)

// rabbitPublish is one attempt at a message on its way through a
// confirmChannel. Its wire is shared with the publish call's other attempts
// and never modified: the publisher goroutine of a channel that died may
// still take an old attempt from its queue and read it while a later
// attempt, on a new channel, is confirmed (the call then only drops its own
// reference).
type rabbitPublish struct {
	wire    *rabbitMessage
	dc      *amqp.DeferredConfirmation
	i       int
	results chan<- result // see publishCall.run: reporting never blocks
}

// report sends the attempt's outcome; exactly once per request.
func (req *rabbitPublish) report(err error) { req.results <- result{i: req.i, err: err} }

// confirmChannel is a confirm-mode channel with two goroutines:
//
//   - the publisher writes every message, so the many goroutines calling
//     Publish do not queue on the channel's mutex behind each other's socket
//     writes (in bench/publish that convoy cost about a third more CPU per
//     message than one writer);
//   - the confirmer waits for the confirmations in publish order, tells each
//     sender its outcome and records the messages the broker returned as
//     unroutable.
//
// The unroutable check cannot race the confirmation: RabbitMQ sends
// basic.return before the basic.ack of the same message, and amqp091-go's
// reader goroutine hands the return to the unbuffered listener channel (the
// confirmer receives it) before it processes the ack. So by the time the
// confirmer sees a message confirmed, it has already seen its return. The
// confirmer never writes to the socket, so it is always ready to receive,
// even while the publisher is stuck in a write to a blocked connection.
type confirmChannel struct {
	ch       *amqp.Channel
	requests chan *rabbitPublish // to the publisher
	sent     chan *rabbitPublish // publisher to confirmer, in publish order
	closed   chan struct{}       // closed when the confirmer exits (channel closed)
}

func newConfirmChannel(ch *amqp.Channel, window int) *confirmChannel {
	pc := &confirmChannel{
		ch:       ch,
		requests: make(chan *rabbitPublish, window),
		sent:     make(chan *rabbitPublish, window),
		closed:   make(chan struct{}),
	}
	go pc.publish()
	go pc.confirm(ch.NotifyReturn(make(chan amqp.Return)))
	return pc
}

func (pc *confirmChannel) publish() {
	for {
		select {
		case req := <-pc.requests:
			dc, err := pc.ch.PublishWithDeferredConfirm(req.wire.exchange, req.wire.key,
				true,  // mandatory: an unroutable message comes back instead of vanishing
				false, // immediate is not supported by RabbitMQ
				req.wire.msg)
			if err != nil {
				req.report(err)
				continue
			}
			req.dc = dc
			select {
			case pc.sent <- req:
			case <-pc.closed:
				req.report(errPublishChannelClosed)
			}
		case <-pc.closed:
			return
		}
	}
}

func (pc *confirmChannel) confirm(returns <-chan amqp.Return) {
	defer close(pc.closed)
	returned := map[string]struct{}{}
	var pending []*rabbitPublish
	settle := func() {
		for len(pending) > 0 {
			req := pending[0]
			select {
			case <-req.dc.Done():
			default:
				return
			}
			pending[0] = nil
			pending = pending[1:]
			_, unroutable := returned[req.wire.msg.MessageId]
			delete(returned, req.wire.msg.MessageId)
			switch {
			case !req.dc.Acked():
				req.report(errNotConfirmed)
			case unroutable:
				req.report(errUnroutable)
			default:
				req.report(nil)
			}
		}
	}
	for {
		var head <-chan struct{}
		if len(pending) > 0 {
			head = pending[0].dc.Done()
		}
		select {
		case req := <-pc.sent:
			pending = append(pending, req)
		case ret, ok := <-returns:
			if !ok {
				// The channel is gone: amqp091-go has failed every
				// outstanding confirmation, so settle reports them all.
				settle()
				return
			}
			returned[ret.MessageId] = struct{}{}
		case <-head:
			settle()
		}
	}
}

// Consume implements Broker: it subscribes with prefetch = Concurrency,
// runs Concurrency workers, and re-subscribes with backoff whenever the
// channel or connection is lost, until ctx is cancelled or Close is called.
func (r *rabbitBroker) Consume(ctx context.Context, queue string, handler Handler, opts ConsumeOptions) error {
	if err := r.life.enter(); err != nil {
		return err
	}
	defer r.life.leave()
	physical, err := r.cfg.physical(queue)
	if err != nil {
		return err
	}
	opts = opts.withDefaults()
	ctx, cancel := joinCancel(ctx, r.life.drainCtx)
	defer cancel()
	series := r.cfg.Metrics.consumeSeries(queue)

	retry := newReconnectBackoff()
	for {
		conn, err := r.connection(ctx)
		if err != nil {
			return nil // ctx cancelled: a clean stop
		}
		subscribed, err := r.consumeChannel(ctx, conn, queue, physical, handler, opts, series)
		if ctx.Err() != nil {
			return nil
		}
		if subscribed {
			retry.Reset()
		}
		next := retry.NextBackOff()
		r.log.WarnContext(ctx, "rabbitmq consumer stopped, subscribing again",
			"queue", queue, "retry_in", next, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

// consumeChannel consumes physical on a new channel until ctx is cancelled
// (returns nil once in-flight handlers are done) or the channel dies. It
// reports whether the subscription was established, to reset the backoff.
func (r *rabbitBroker) consumeChannel(ctx context.Context, conn *amqp.Connection, queue, physical string, handler Handler, opts ConsumeOptions, series *consumeSeries) (bool, error) {
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open consumer channel: %w", err)
	}
	// Closing the channel returns every delivery not yet acked (prefetched
	// but not started, or abandoned by a cancelled retry) to the queue.
	defer func() { _ = ch.Close() }()
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Qos(opts.Concurrency, 0, false); err != nil {
		return false, fmt.Errorf("set prefetch: %w", err)
	}
	tag := r.cfg.ClientName + "-" + uuid.NewString()[:8]
	deliveries, err := ch.Consume(physical, tag, false, false, false, false, nil)
	if err != nil {
		return false, fmt.Errorf("consume queue %q: %w", physical, err)
	}
	// gone is closed when the channel dies, so a worker waiting out a retry
	// backoff stops early: its delivery has already gone back to the queue.
	gone := make(chan struct{})
	var chErr atomic.Pointer[amqp.Error]
	go func() {
		if e := <-closed; e != nil {
			chErr.Store(e)
		}
		close(gone)
	}()

	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case d, ok := <-deliveries:
					if !ok {
						return
					}
					if ctx.Err() != nil {
						// Picked after cancellation: give it straight back.
						_ = d.Nack(false, true)
						return
					}
					r.handleDelivery(ctx, gone, queue, physical, handler, opts, series, d)
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return true, nil
	}
	if e := chErr.Load(); e != nil {
		return true, fmt.Errorf("channel closed: %w", e)
	}
	return true, errors.New("the broker stopped the consumer (queue deleted?)")
}

// handleDelivery runs the handler with in-process retries (see the file
// comment for why) and settles the delivery exactly once.
func (r *rabbitBroker) handleDelivery(ctx context.Context, gone <-chan struct{}, queue, physical string, handler Handler, opts ConsumeOptions, series *consumeSeries, d amqp.Delivery) {
	msg := Message{
		ID:      d.MessageId,
		Queue:   queue,
		Body:    d.Body,
		Headers: tableStrings(d.Headers),
	}
	if msg.ID == "" {
		msg.ID = msg.Headers[contract.HeaderMessageID]
	}
	log := func() *slog.Logger { return messageLogger(r.log, queue, msg.ID) }
	hctx := handlerContext(ctx)

	attempt := deliveryCount(d.Headers) + 1
	if attempt > opts.MaxDeliveries {
		log().ErrorContext(hctx, "message exceeded its delivery limit before this delivery, dead-lettering",
			"deliveries", attempt-1, "max_deliveries", opts.MaxDeliveries)
		settle(hctx, log, d.Nack(false, false), "dead-letter")
		series.count(contract.OutcomeDeadLetter)
		return
	}
	for ; ; attempt++ {
		msg.Attempt = attempt
		took, err := r.runHandler(hctx, physical, handler, msg)
		switch {
		case err == nil:
			series.observe(contract.OutcomeSuccess, took)
			settle(hctx, log, d.Ack(false), "ack")
			return
		case IsPermanent(err) || attempt >= opts.MaxDeliveries:
			series.observe(contract.OutcomeDeadLetter, took)
			log().ErrorContext(hctx, "message handling failed, dead-lettering",
				"attempt", attempt, "permanent", IsPermanent(err), "error", err)
			settle(hctx, log, d.Nack(false, false), "dead-letter")
			return
		}
		series.observe(contract.OutcomeRetry, took)
		wait := retryDelay(opts, attempt)
		log().WarnContext(hctx, "message handling failed, retrying", "attempt", attempt, "retry_in", wait, "error", err)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			// Shutting down: hand the message to another consumer now
			// rather than after our channel closes.
			settle(hctx, log, d.Nack(false, true), "requeue")
			return
		case <-gone:
			timer.Stop()
			return // the broker has requeued it already
		}
	}
}

// settle logs a failed ack or nack: the broker will redeliver the message,
// so it is a duplicate in the making, not a loss.
func settle(ctx context.Context, log func() *slog.Logger, err error, what string) {
	if err != nil {
		log().WarnContext(ctx, "could not settle delivery; the broker will redeliver it", "action", what, "error", err)
	}
}

// deliveryCount reads the x-delivery-count header quorum queues set on
// redeliveries; 0 when absent (first delivery, or a classic queue).
func deliveryCount(h amqp.Table) int {
	switch v := h[headerDeliveryCount].(type) {
	case int:
		return v
	case int8:
		return int(v)
	case int16:
		return int(v)
	case int32:
		return int(v)
	case int64:
		return int(v)
	case uint8:
		return int(v)
	case uint16:
		return int(v)
	case uint32:
		return int(v)
	case uint64:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return 0
}

// tableStrings keeps the headers that have a plain string form; nested
// tables and arrays (such as x-death) are left out.
func tableStrings(t amqp.Table) map[string]string {
	out := make(map[string]string, len(t))
	for k, v := range t {
		switch v := v.(type) {
		case string:
			out[k] = v
		case []byte:
			out[k] = string(v)
		case bool, int, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64:
			out[k] = fmt.Sprint(v)
		case time.Time:
			out[k] = v.UTC().Format(time.RFC3339)
		}
	}
	return out
}

// declareRabbitTopology declares what the operator would for each physical
// queue (the same shape as operator/internal/broker.Generate): a direct
// exchange and the queue bound to it, a direct dead-letter exchange and the
// dead-letter queue bound with contract.RoutingKey of its name, which the
// queue's x-dead-letter-routing-key names. Quorum queues, because they count
// deliveries (x-delivery-count) and so keep the attempt limit across consumer
// crashes. Development and tests only; see Config.DeclareTopology.
func declareRabbitTopology(conn *amqp.Connection, physicals []string) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("declare topology: open channel: %w", err)
	}
	defer func() { _ = ch.Close() }()
	for _, q := range physicals {
		ex, dlx, dlq := contract.ExchangeName(q), contract.DeadLetterExchangeName(q), contract.DeadLetterQueueName(q)
		dlKey := contract.RoutingKey(dlq)
		steps := []struct {
			what string
			do   func() error
		}{
			{"exchange " + dlx, func() error { return ch.ExchangeDeclare(dlx, amqp.ExchangeDirect, true, false, false, false, nil) }},
			{"exchange " + ex, func() error { return ch.ExchangeDeclare(ex, amqp.ExchangeDirect, true, false, false, false, nil) }},
			{"queue " + dlq, func() error {
				_, err := ch.QueueDeclare(dlq, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
				return err
			}},
			{"queue " + q, func() error {
				_, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{
					amqp.QueueTypeArg:           amqp.QueueTypeQuorum,
					"x-dead-letter-exchange":    dlx,
					"x-dead-letter-routing-key": dlKey,
				})
				return err
			}},
			{"binding " + dlq, func() error { return ch.QueueBind(dlq, dlKey, dlx, false, nil) }},
			{"binding " + q, func() error { return ch.QueueBind(q, contract.RoutingKey(q), ex, false, nil) }},
		}
		for _, s := range steps {
			if err := s.do(); err != nil {
				return &declareError{what: s.what, err: err}
			}
		}
	}
	return nil
}

// declareError is a failed step of declareRabbitTopology; classifyRabbit
// reads the broker's reply code in it differently from a handshake's.
type declareError struct {
	what string
	err  error
}

func (e *declareError) Error() string { return "declare topology: " + e.what + ": " + e.err.Error() }
func (e *declareError) Unwrap() error { return e.err }
