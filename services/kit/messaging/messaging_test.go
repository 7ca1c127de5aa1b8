package messaging_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/poll"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
)

const queue = "jobs"

func publishN(t testing.TB, b messaging.Publisher, n int, body func(i int) string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		id, err := b.Publish(ctx, queue, []byte(body(i)))
		cancel()
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		ids[i] = id
	}
	return ids
}

func TestRoundTrip(t *testing.T) {
	forEachBroker(t, false, func(t *testing.T, e env) {
		app := newApp(t)
		b, reg := connect(t, e, app, queue)
		const n = 20
		ids := publishN(t, b, n, func(i int) string { return fmt.Sprintf("body-%d", i) })

		got := make(chan messaging.Message, n)
		stop := consume(t, b, queue, func(_ context.Context, m messaging.Message) error {
			got <- m
			return nil
		}, messaging.ConsumeOptions{Concurrency: 4})

		seen := map[string]messaging.Message{}
		timeout := time.After(30 * time.Second)
		for len(seen) < n {
			select {
			case m := <-got:
				seen[m.ID] = m
			case <-timeout:
				t.Fatalf("received %d of %d messages", len(seen), n)
			}
		}
		stop()
		for i, id := range ids {
			m, ok := seen[id]
			if !ok {
				t.Fatalf("message %d (id %s) not received", i, id)
			}
			if want := fmt.Sprintf("body-%d", i); string(m.Body) != want {
				t.Errorf("message %s body = %q, want %q", id, m.Body, want)
			}
			if m.Queue != queue || m.Attempt != 1 {
				t.Errorf("message %s: queue %q attempt %d, want %q and 1", id, m.Queue, m.Attempt, queue)
			}
			if m.Headers[contract.HeaderMessageID] != id {
				t.Errorf("message %s: header %s = %q", id, contract.HeaderMessageID, m.Headers[contract.HeaderMessageID])
			}
		}
		if v := counter(t, reg, contract.MetricMessagesPublished, queue, contract.OutcomeSuccess); v != n {
			t.Errorf("published{success} = %v, want %d", v, n)
		}
		if v := counter(t, reg, contract.MetricMessagesConsumed, queue, contract.OutcomeSuccess); v != n {
			t.Errorf("consumed{success} = %v, want %d", v, n)
		}
		if got := e.backlog(t, app, contract.QueueName(app, queue)); got != 0 {
			t.Errorf("backlog after consuming everything = %d, want 0", got)
		}
	})
}

func TestUnknownQueue(t *testing.T) {
	forEachBroker(t, false, func(t *testing.T, e env) {
		b, _ := connect(t, e, newApp(t), queue)
		if _, err := b.Publish(t.Context(), "nope", []byte("x")); err == nil {
			t.Fatal("Publish to an unconfigured queue succeeded")
		}
		err := b.Consume(t.Context(), "nope", func(context.Context, messaging.Message) error { return nil }, messaging.ConsumeOptions{})
		if err == nil {
			t.Fatal("Consume of an unconfigured queue returned nil")
		}
	})
}

// TestPoisonMessageDeadLettered: a message whose handler always fails is
// tried MaxDeliveries times and lands in the dead-letter queue; one failing
// with a Permanent error lands there after one attempt; neither stays in
// the queue, and a good message beside them is handled.
func TestPoisonMessageDeadLettered(t *testing.T) {
	forEachBroker(t, false, func(t *testing.T, e env) {
		app := newApp(t)
		b, reg := connect(t, e, app, queue)
		ids := publishN(t, b, 3, func(i int) string { return []string{"poison", "permanent", "good"}[i] })
		poison, permanent, good := ids[0], ids[1], ids[2]

		var mu sync.Mutex
		attempts := map[string][]int{}
		stop := consume(t, b, queue, func(_ context.Context, m messaging.Message) error {
			mu.Lock()
			attempts[m.ID] = append(attempts[m.ID], m.Attempt)
			mu.Unlock()
			switch string(m.Body) {
			case "poison":
				return errors.New("cannot handle this")
			case "permanent":
				return messaging.Permanent(errors.New("malformed"))
			}
			return nil
		}, messaging.ConsumeOptions{MaxDeliveries: 3, RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 40 * time.Millisecond})

		dead := e.deadLetters(t, contract.QueueName(app, queue), 2)
		stop()

		deadIDs := []string{dead[0].ID, dead[1].ID}
		slices.Sort(deadIDs)
		want := []string{poison, permanent}
		slices.Sort(want)
		if !slices.Equal(deadIDs, want) || len(dead) != 2 {
			t.Fatalf("dead letters = %+v, want ids %v", dead, want)
		}
		for _, d := range dead {
			if (d.ID == poison && d.Body != "poison") || (d.ID == permanent && d.Body != "permanent") {
				t.Errorf("dead letter %s has body %q", d.ID, d.Body)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if got := attempts[poison]; !slices.Equal(got, []int{1, 2, 3}) {
			t.Errorf("poison attempts = %v, want [1 2 3]", got)
		}
		if got := attempts[permanent]; !slices.Equal(got, []int{1}) {
			t.Errorf("permanent attempts = %v, want [1]", got)
		}
		if got := attempts[good]; !slices.Equal(got, []int{1}) {
			t.Errorf("good attempts = %v, want [1]", got)
		}
		if got := e.backlog(t, app, contract.QueueName(app, queue)); got != 0 {
			t.Errorf("backlog after dead-lettering = %d, want 0 (no endless redelivery)", got)
		}
		for outcome, want := range map[string]float64{contract.OutcomeSuccess: 1, contract.OutcomeRetry: 2, contract.OutcomeDeadLetter: 2} {
			if v := counter(t, reg, contract.MetricMessagesConsumed, queue, outcome); v != want {
				t.Errorf("consumed{%s} = %v, want %v", outcome, v, want)
			}
		}
	})
}

// TestCrashLoopingMessageDeadLettered: a message that already used up its
// deliveries on consumers that died without settling it (a handler that
// crashes the process) is dead-lettered on arrival instead of crashing the
// next consumer too. On RabbitMQ this relies on the quorum queue's
// x-delivery-count.
func TestCrashLoopingMessageDeadLettered(t *testing.T) {
	forEachBroker(t, false, func(t *testing.T, e env) {
		app := newApp(t)
		physical := contract.QueueName(app, queue)
		b, _ := connect(t, e, app, queue)
		const maxDeliveries = 2
		opts := messaging.ConsumeOptions{MaxDeliveries: maxDeliveries}
		id := publishN(t, b, 1, func(int) string { return "crasher" })[0]
		e.deliverUnacked(t, app, physical, maxDeliveries)

		var called atomic.Int32
		stop := consume(t, b, queue, func(context.Context, messaging.Message) error {
			called.Add(1)
			return nil
		}, opts)
		dead := e.deadLetters(t, physical, 1)
		stop()
		if dead[0].ID != id {
			t.Errorf("dead letter id = %s, want %s", dead[0].ID, id)
		}
		if n := called.Load(); n != 0 {
			t.Errorf("handler ran %d times for a message past its delivery limit, want 0", n)
		}
	})
}

// TestConsumeCancelLosesNothing cancels a consumer while its handlers are
// busy and more messages are prefetched: Consume returns only after the
// busy handlers finished, and a second consumer gets every message the
// first did not ack.
func TestConsumeCancelLosesNothing(t *testing.T) {
	forEachBroker(t, false, func(t *testing.T, e env) {
		app := newApp(t)
		b1, _ := connect(t, e, app, queue)
		const n = 40
		ids := publishN(t, b1, n, func(i int) string { return fmt.Sprint(i) })

		var (
			mu       sync.Mutex
			handled  = map[string]int{}
			started  atomic.Int32
			finished atomic.Int32
		)
		release := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- b1.Consume(ctx, queue, func(_ context.Context, m messaging.Message) error {
				started.Add(1)
				<-release
				mu.Lock()
				handled[m.ID]++
				mu.Unlock()
				finished.Add(1)
				return nil
			}, messaging.ConsumeOptions{Concurrency: 4})
		}()
		poll.Within(t, 30*time.Second, "4 busy handlers", func() bool { return started.Load() == 4 })
		cancel()
		select {
		case err := <-done:
			t.Fatalf("Consume returned (%v) while handlers were still running", err)
		default:
		}
		close(release)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Consume = %v, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Consume did not return after its handlers finished")
		}
		if s, f := started.Load(), finished.Load(); s != f {
			t.Fatalf("Consume returned with %d of %d handlers unfinished", s-f, s)
		}
		first := len(handled)

		// A new consumer, on its own connection, like the replacement pod.
		b2, _ := connect(t, e, app, queue)
		stop := consume(t, b2, queue, func(_ context.Context, m messaging.Message) error {
			mu.Lock()
			handled[m.ID]++
			mu.Unlock()
			return nil
		}, messaging.ConsumeOptions{Concurrency: 4})
		poll.Within(t, 60*time.Second, "every message handled", func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if handled[id] == 0 {
					return false
				}
			}
			return true
		})
		stop()
		dups := 0
		for _, c := range handled {
			dups += c - 1
		}
		t.Logf("%s: first consumer acked %d, second handled the other %d; %d duplicates", e.kind, first, n-first, dups)
		if dups != 0 {
			// Every ack of the first consumer completed before Consume
			// returned, so nothing it handled may come back.
			t.Errorf("%d messages were handled twice", dups)
		}
	})
}

// TestCloseDrains: Close waits for the running handler, makes Consume
// return nil, and refuses later publishes.
func TestCloseDrains(t *testing.T) {
	forEachBroker(t, false, func(t *testing.T, e env) {
		app := newApp(t)
		cfg := messaging.Config{Kind: e.kind, URL: e.url, App: app, Queues: physicalNames(app, queue), DeclareTopology: true}
		b, err := connectWith(t, cfg)
		if err != nil {
			t.Fatal(err)
		}
		publishN(t, b, 1, func(int) string { return "x" })
		started, release := make(chan struct{}), make(chan struct{})
		var finished atomic.Bool
		consumed := make(chan error, 1)
		go func() {
			consumed <- b.Consume(context.Background(), queue, func(context.Context, messaging.Message) error {
				close(started)
				<-release
				finished.Store(true)
				return nil
			}, messaging.ConsumeOptions{})
		}()
		<-started
		closed := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			closed <- b.Close(ctx)
		}()
		poll.Within(t, 10*time.Second, "new publishes refused while closing", func() bool {
			_, err := b.Publish(t.Context(), queue, []byte("late"))
			return errors.Is(err, messaging.ErrClosed)
		})
		close(release)
		if err := <-closed; err != nil {
			t.Fatalf("Close = %v", err)
		}
		if !finished.Load() {
			t.Fatal("Close returned before the handler finished")
		}
		if err := <-consumed; err != nil {
			t.Fatalf("Consume = %v, want nil after Close", err)
		}
		if err := b.Ready(t.Context()); err == nil {
			t.Error("Ready = nil after Close")
		}
	})
}

// TestTraceContextTravels: the handler's context carries the trace id of
// the span that published the message.
func TestTraceContextTravels(t *testing.T) {
	forEachBroker(t, false, func(t *testing.T, e env) {
		app := newApp(t)
		b, _ := connect(t, e, app, queue)
		ctx, span := otel.Tracer("test").Start(t.Context(), "request")
		if _, err := b.Publish(ctx, queue, []byte("traced")); err != nil {
			t.Fatal(err)
		}
		span.End()

		got := make(chan trace.SpanContext, 1)
		headers := make(chan map[string]string, 1)
		stop := consume(t, b, queue, func(ctx context.Context, m messaging.Message) error {
			got <- trace.SpanContextFromContext(ctx)
			headers <- m.Headers
			return nil
		}, messaging.ConsumeOptions{})
		var sc trace.SpanContext
		select {
		case sc = <-got:
		case <-time.After(30 * time.Second):
			t.Fatal("message not consumed")
		}
		stop()
		if want := span.SpanContext().TraceID(); sc.TraceID() != want {
			t.Errorf("handler trace id = %s, want the publisher's %s", sc.TraceID(), want)
		}
		if sc.SpanID() == span.SpanContext().SpanID() {
			t.Error("handler runs in the publisher's span, want its own consumer span")
		}
		if h := <-headers; h[contract.HeaderTraceParent] == "" {
			t.Errorf("message headers %v lack %s", h, contract.HeaderTraceParent)
		}
	})
}

// TestBrokerRestart stops and starts the broker while 1,000 confirmed
// messages flow: readiness follows the connection, every confirmed message
// is consumed, duplicates are counted and reported.
func TestBrokerRestart(t *testing.T) {
	forEachBroker(t, true, func(t *testing.T, e env) {
		app := newApp(t)
		b, reg := connect(t, e, app, queue)
		if err := b.Ready(t.Context()); err != nil {
			t.Fatalf("Ready before the restart = %v", err)
		}

		var (
			mu       sync.Mutex
			consumed = map[string]int{}
		)
		stopConsumer := consume(t, b, queue, func(_ context.Context, m messaging.Message) error {
			mu.Lock()
			consumed[m.ID]++
			mu.Unlock()
			return nil
		}, messaging.ConsumeOptions{Concurrency: 8})

		const total, publishers = 1000, 8
		var (
			confirmedMu sync.Mutex
			confirmed   []string
			pubWG       sync.WaitGroup
		)
		for p := range publishers {
			pubWG.Go(func() {
				for i := range total / publishers {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
					id, err := b.Publish(ctx, queue, fmt.Appendf(nil, "%d-%d", p, i))
					cancel()
					if err != nil {
						t.Errorf("publish %d-%d: %v", p, i, err)
						return
					}
					confirmedMu.Lock()
					confirmed = append(confirmed, id)
					confirmedMu.Unlock()
				}
			})
		}
		poll.Within(t, time.Minute, "the first 200 confirmations", func() bool {
			confirmedMu.Lock()
			defer confirmedMu.Unlock()
			return len(confirmed) >= 200
		})
		e.stop(t)
		poll.Within(t, 30*time.Second, "Ready to fail while the broker is down", func() bool { return b.Ready(t.Context()) != nil })
		confirmedMu.Lock()
		atStop := len(confirmed)
		confirmedMu.Unlock()
		e.start(t)
		poll.Within(t, time.Minute, "Ready after the broker is back", func() bool { return b.Ready(t.Context()) == nil })
		pubWG.Wait()
		if t.Failed() {
			t.FailNow()
		}
		if len(confirmed) != total {
			t.Fatalf("%d of %d messages confirmed", len(confirmed), total)
		}
		poll.Within(t, 2*time.Minute, "every confirmed message consumed", func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range confirmed {
				if consumed[id] == 0 {
					return false
				}
			}
			return true
		})
		stopConsumer()
		mu.Lock()
		defer mu.Unlock()
		dups := 0
		for _, c := range consumed {
			dups += c - 1
		}
		lost := 0
		for _, id := range confirmed {
			if consumed[id] == 0 {
				lost++
			}
		}
		t.Logf("%s restart after %d confirmations: published %d, consumed %d distinct, lost %d, duplicates %d, publish errors %v",
			e.kind, atStop, total, len(consumed), lost, dups, counter(t, reg, contract.MetricMessagesPublished, queue, contract.OutcomeError))
		if lost != 0 {
			t.Errorf("%d confirmed messages lost", lost)
		}
		if len(consumed) != total {
			t.Errorf("consumed %d distinct messages, want %d", len(consumed), total)
		}
	})
}
