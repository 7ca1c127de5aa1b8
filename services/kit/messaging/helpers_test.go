package messaging_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/poll"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/brokertest"
)

func TestMain(m *testing.M) {
	// The kit sets these globals in a service; here the tests do, so trace
	// context really travels through the brokers.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	brokertest.Main(m)
}

// env is one real broker a test runs against.
type env struct {
	kind string
	url  string
	// stop and start restart the broker; only set on dedicated brokers.
	stop, start func(t testing.TB)
	// deadLetters returns the messages in physical's dead-letter queue or
	// subject once there are at least want, failing the test after timeout.
	deadLetters func(t testing.TB, physical string, want int) []deadLetter
	// deliverUnacked delivers the head of physical to a consumer that dies
	// without settling it, n times, like a service crashing in its handler.
	deliverUnacked func(t testing.TB, app, physical string, n int)
	// backlog reports the messages of physical still waiting or unacked.
	backlog func(t testing.TB, app, physical string) int
}

// deadLetter is a dead-lettered message as the DLQ holds it.
type deadLetter struct {
	// ID is the id the original message was published with.
	ID   string
	Body string
}

// forEachBroker runs test once per broker kind. restartable asks for
// brokers the test may stop and start.
func forEachBroker(t *testing.T, restartable bool, test func(t *testing.T, e env)) {
	t.Helper()
	for _, kind := range []string{contract.BrokerRabbitMQ, contract.BrokerNATS} {
		t.Run(kind, func(t *testing.T) {
			var e env
			if kind == contract.BrokerRabbitMQ {
				e = rabbitEnv(t, restartable)
			} else {
				e = natsEnv(t)
			}
			test(t, e)
		})
	}
}

func rabbitEnv(t *testing.T, restartable bool) env {
	// One node per test binary: a node takes ~17 s to start on these
	// machines. The tests of this package do not run in parallel, so the
	// restart test may stop and start the shared node; a cleanup makes sure
	// it is running again for the next test even if that test failed midway.
	r := brokertest.SharedRabbitMQ(t)
	e := env{kind: contract.BrokerRabbitMQ, url: r.AMQPURL}
	if restartable {
		var stopped bool
		e.stop = func(t testing.TB) { stopped = true; r.Stop(t) }
		e.start = func(t testing.TB) { r.Start(t); stopped = false }
		t.Cleanup(func() {
			if stopped {
				r.Start(t)
			}
		})
	}
	admin := func(t testing.TB) *amqp.Channel {
		t.Helper()
		conn, err := amqp.Dial(r.AMQPURL)
		if err != nil {
			t.Fatalf("admin dial: %v", err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		ch, err := conn.Channel()
		if err != nil {
			t.Fatalf("admin channel: %v", err)
		}
		return ch
	}
	e.deadLetters = func(t testing.TB, physical string, want int) []deadLetter {
		t.Helper()
		ch := admin(t)
		var got []deadLetter
		poll.Within(t, 30*time.Second, fmt.Sprintf("%d dead letters in %s", want, contract.DeadLetterQueueName(physical)), func() bool {
			for {
				d, ok, err := ch.Get(contract.DeadLetterQueueName(physical), true)
				if err != nil {
					t.Fatalf("get from dead-letter queue: %v", err)
				}
				if !ok {
					return len(got) >= want
				}
				got = append(got, deadLetter{ID: d.MessageId, Body: string(d.Body)})
			}
		})
		return got
	}
	e.deliverUnacked = func(t testing.TB, _, physical string, n int) {
		t.Helper()
		for i := range n {
			ch := admin(t)
			if err := ch.Qos(1, 0, false); err != nil {
				t.Fatalf("qos: %v", err)
			}
			ds, err := ch.Consume(physical, "", false, false, false, false, nil)
			if err != nil {
				t.Fatalf("consume: %v", err)
			}
			select {
			case <-ds:
			case <-time.After(10 * time.Second):
				t.Fatalf("delivery %d of %s did not arrive", i+1, physical)
			}
			// Closing the channel unacked returns the message, as a crash would.
			if err := ch.Close(); err != nil {
				t.Fatalf("close channel: %v", err)
			}
		}
	}
	e.backlog = func(t testing.TB, _, physical string) int {
		t.Helper()
		q, err := admin(t).QueueDeclarePassive(physical, true, false, false, false, nil)
		if err != nil {
			t.Fatalf("inspect queue: %v", err)
		}
		// Messages counts ready ones; unacked ones are held by consumers,
		// and the tests ask once their consumers are gone.
		return q.Messages
	}
	return e
}

func natsEnv(t *testing.T) env {
	n := brokertest.StartNATS(t)
	e := env{kind: contract.BrokerNATS, url: n.URL, stop: n.Stop, start: n.Start}
	admin := func(t testing.TB) jetstream.JetStream {
		t.Helper()
		nc, err := nats.Connect(n.URL)
		if err != nil {
			t.Fatalf("admin connect: %v", err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatalf("admin jetstream: %v", err)
		}
		return js
	}
	streamOf := func(physical string) string {
		// Tests name apps so that the physical name starts with "<app>.".
		return contract.StreamName(strings.SplitN(physical, ".", 2)[0])
	}
	e.deadLetters = func(t testing.TB, physical string, want int) []deadLetter {
		t.Helper()
		js := admin(t)
		ctx := t.Context()
		cons, err := js.CreateOrUpdateConsumer(ctx, streamOf(physical), jetstream.ConsumerConfig{
			Durable:       "test-dead-letters",
			FilterSubject: contract.DeadLetterSubject(physical),
			AckPolicy:     jetstream.AckExplicitPolicy,
		})
		if err != nil {
			t.Fatalf("dead-letter consumer: %v", err)
		}
		var got []deadLetter
		poll.Within(t, 30*time.Second, fmt.Sprintf("%d dead letters on %s", want, contract.DeadLetterSubject(physical)), func() bool {
			batch, err := cons.Fetch(want, jetstream.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				t.Fatalf("fetch dead letters: %v", err)
			}
			for m := range batch.Messages() {
				got = append(got, deadLetter{ID: m.Headers().Get(messaging.HeaderOriginalMessageID), Body: string(m.Data())})
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatalf("ack dead letter: %v", err)
				}
			}
			return len(got) >= want
		})
		return got
	}
	e.deliverUnacked = func(t testing.TB, app, physical string, n int) {
		t.Helper()
		js := admin(t)
		cons, err := js.Consumer(t.Context(), contract.StreamName(app), contract.ConsumerName(physical))
		if err != nil {
			t.Fatalf("bind consumer: %v", err)
		}
		for i := range n {
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			m, ok := <-batch.Messages()
			if !ok {
				t.Fatalf("delivery %d of %s did not arrive", i+1, physical)
			}
			// Nak redelivers at once, as an expired AckWait after a crash
			// would, only sooner.
			if err := m.Nak(); err != nil {
				t.Fatalf("nak: %v", err)
			}
		}
	}
	e.backlog = func(t testing.TB, app, physical string) int {
		t.Helper()
		cons, err := admin(t).Consumer(t.Context(), contract.StreamName(app), contract.ConsumerName(physical))
		if err != nil {
			t.Fatalf("bind consumer: %v", err)
		}
		info, err := cons.Info(t.Context())
		if err != nil {
			t.Fatalf("consumer info: %v", err)
		}
		return int(info.NumPending) + info.NumAckPending
	}
	return e
}

var appSeq atomic.Int64

// newApp returns an app name unique in the test binary, so tests sharing a
// broker never share queues or streams.
func newApp(t testing.TB) string {
	return fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1_000_000, appSeq.Add(1))
}

// connect connects to e with the dev topology for app's queues and closes
// the broker when the test ends.
func connect(t testing.TB, e env, app string, queues ...string) (messaging.Broker, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	b, err := connectWith(t, messaging.Config{
		Kind:            e.kind,
		URL:             e.url,
		App:             app,
		Queues:          physicalNames(app, queues...),
		DeclareTopology: true,
		Metrics:         messaging.NewMetrics(reg),
	})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return b, reg
}

// connectWith connects with cfg plus a test logger, closing at the end.
func connectWith(t testing.TB, cfg messaging.Config) (messaging.Broker, error) {
	t.Helper()
	cfg.Logger = testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b, err := messaging.Connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
	return b, nil
}

func physicalNames(app string, queues ...string) map[string]string {
	m := make(map[string]string, len(queues))
	for _, q := range queues {
		m[q] = contract.QueueName(app, q)
	}
	return m
}

// testLogger logs warnings and errors through t, and stops once t ended
// (background goroutines may log after it).
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// consume runs b.Consume in the background and returns a function that
// cancels it and waits for it to return.
func consume(t testing.TB, b messaging.Broker, queue string, h messaging.Handler, opts messaging.ConsumeOptions) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Consume(ctx, queue, h, opts) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Consume returned %v, want nil after cancel", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Consume did not return within 30s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// counter reads a counter of the registry by queue and outcome.
func counter(t testing.TB, reg *prometheus.Registry, name, queue, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["queue"] == queue && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
