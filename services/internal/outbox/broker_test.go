package outbox_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/poll"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/internal/outbox"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/brokertest"
)

// TestRelayThroughARealBrokerAcrossAnOutage runs the relay against the
// kit's NATS driver on an embedded JetStream server: a backlog of rows from
// three requests is published in batches and consumed, each message in its
// request's trace; rows enqueued while the server is down stay in the
// outbox through failed passes and are published once it is back. Every
// row arrives (duplicates allowed, counted) and the outbox ends empty.
func TestRelayThroughARealBrokerAcrossAnOutage(t *testing.T) {
	srv := brokertest.StartNATS(t)
	const app = "outbox"
	reg := prometheus.NewRegistry()
	connectCtx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	broker, err := messaging.Connect(connectCtx, messaging.Config{
		Kind:            contract.BrokerNATS,
		URL:             srv.URL,
		App:             app,
		Queues:          map[string]string{"emails": contract.QueueName(app, "emails")},
		DeclareTopology: true,
		ConfirmWindow:   16,
		Metrics:         messaging.NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = broker.Close(ctx)
	})

	var (
		mu       sync.Mutex
		received = map[string]int{}
		traces   = map[string]trace.TraceID{}
	)
	consumeCtx, stopConsuming := context.WithCancel(context.Background())
	consumed := make(chan error, 1)
	go func() {
		consumed <- broker.Consume(consumeCtx, "emails", func(ctx context.Context, m messaging.Message) error {
			mu.Lock()
			defer mu.Unlock()
			received[string(m.Body)]++
			traces[string(m.Body)] = trace.SpanContextFromContext(ctx).TraceID()
			return nil
		}, messaging.ConsumeOptions{Concurrency: 8})
	}()
	t.Cleanup(func() {
		stopConsuming()
		if err := <-consumed; err != nil {
			t.Errorf("Consume: %v", err)
		}
	})

	db := openDB(t)
	relay := outbox.NewRelay(db, broker, slog.New(slog.DiscardHandler))
	relay.PollInterval = time.Hour // Notify and the retry backoff drive it
	relay.PublishTimeout = time.Second
	relay.BatchSize = 64
	relayCtx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	t.Cleanup(func() {
		stopRelay()
		if err := <-relayDone; err != nil {
			t.Errorf("relay.Run: %v", err)
		}
	})

	wantTrace := map[string]trace.TraceID{}
	enqueueRequest := func(seed byte, n int) {
		ctx, traceID := requestContext(seed)
		bodies := make([]string, n)
		for i := range bodies {
			bodies[i] = fmt.Sprintf("request-%d-row-%d", seed, i)
			wantTrace[bodies[i]] = traceID
		}
		enqueue(t, ctx, db, true, bodies...)
		relay.Notify()
	}
	allReceived := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for body := range wantTrace {
			if received[body] == 0 {
				return false
			}
		}
		return true
	}

	for seed := range byte(3) {
		enqueueRequest(seed+1, 100)
	}
	// The consumer renews its pull request every few seconds (the kit's
	// natsPullExpiry), which bounds a stall on a request the server lost;
	// the deadline leaves room for several renewals on a loaded machine.
	poll.Within(t, consumeDeadline, "the backlog of 300 rows consumed", allReceived)
	poll.Until(t, "an empty outbox", func() bool { return pending(t, relay) == 0 })

	srv.Stop(t)
	enqueueRequest(9, 200)
	poll.Until(t, "a pass to fail while the server is down", func() bool {
		return publishErrors(t, reg) > 0
	})
	if n := pending(t, relay); n != 200 {
		t.Fatalf("%d rows in the outbox during the outage, want all 200 enqueued then", n)
	}
	srv.Start(t)
	poll.Within(t, consumeDeadline, "every row consumed after the outage", allReceived)
	poll.Until(t, "an empty outbox", func() bool { return pending(t, relay) == 0 })

	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for body, want := range wantTrace {
		dups += received[body] - 1
		if traces[body] != want {
			t.Errorf("%s consumed in trace %s, want its request's %s", body, traces[body], want)
		}
	}
	t.Logf("500 rows, %d messages consumed, %d duplicates, %v publish failures during the outage",
		len(received)+dups, dups, publishErrors(t, reg))
}

// consumeDeadline bounds the waits for consumed messages.
const consumeDeadline = 30 * time.Second

// publishErrors reads the kit's published{outcome="error"} counter.
func publishErrors(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != contract.MetricMessagesPublished {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabel(m, "outcome", contract.OutcomeError) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
