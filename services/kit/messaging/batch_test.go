package messaging_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/poll"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
)

// batchPublisher returns b's batch API; the drivers implement it.
func batchPublisher(t testing.TB, b messaging.Broker) messaging.BatchPublisher {
	t.Helper()
	bp, ok := b.(messaging.BatchPublisher)
	if !ok {
		t.Fatalf("%T does not implement messaging.BatchPublisher", b)
	}
	return bp
}

// connectWindow connects like connect, with a given confirm window.
func connectWindow(t testing.TB, e env, app string, window int) (messaging.Broker, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	b, err := connectWith(t, messaging.Config{
		Kind:            e.kind,
		URL:             e.url,
		App:             app,
		Queues:          physicalNames(app, queue),
		DeclareTopology: true,
		ConfirmWindow:   window,
		Metrics:         messaging.NewMetrics(reg),
	})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return b, reg
}

// consumedLog records what a consumer handled, by message id.
type consumedLog struct {
	mu    sync.Mutex
	count map[string]int
	msgs  map[string]messaging.Message
	trace map[string]trace.TraceID
}

func newConsumedLog() *consumedLog {
	return &consumedLog{count: map[string]int{}, msgs: map[string]messaging.Message{}, trace: map[string]trace.TraceID{}}
}

func (l *consumedLog) handler(ctx context.Context, m messaging.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count[m.ID]++
	l.msgs[m.ID] = m
	l.trace[m.ID] = trace.SpanContextFromContext(ctx).TraceID()
	return nil
}

func (l *consumedLog) distinct() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.count)
}

// missing counts the ids in ids (ignoring "") not consumed yet.
func (l *consumedLog) missing(ids []string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, id := range ids {
		if id != "" && l.count[id] == 0 {
			n++
		}
	}
	return n
}

func (l *consumedLog) duplicates() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := 0
	for _, c := range l.count {
		d += c - 1
	}
	return d
}

// TestPublishBatchRoundTrip: one batch, every message confirmed under its
// own id, consumed once with its body, in the trace of its own Context
// (or of the batch's ctx when it has none); the metrics count the batch;
// an empty batch, an unknown queue and a closed broker behave as
// documented.
func TestPublishBatchRoundTrip(t *testing.T) {
	forEachBroker(t, false, func(t *testing.T, e env) {
		app := newApp(t)
		b, reg := connect(t, e, app, queue)
		bp := batchPublisher(t, b)

		tracer := otel.Tracer("test")
		batchCtx, batchSpan := tracer.Start(t.Context(), "batch")
		defer batchSpan.End()
		reqA, spanA := tracer.Start(context.Background(), "request A")
		defer spanA.End()
		reqB, spanB := tracer.Start(context.Background(), "request B")
		defer spanB.End()

		const n = 300
		msgs := make([]messaging.Outgoing, n)
		wantTrace := make([]trace.TraceID, n)
		for i := range msgs {
			msgs[i].Body = fmt.Appendf(nil, "body-%d", i)
			switch i % 3 {
			case 0:
				msgs[i].Context, wantTrace[i] = reqA, spanA.SpanContext().TraceID()
			case 1:
				msgs[i].Context, wantTrace[i] = reqB, spanB.SpanContext().TraceID()
			default:
				wantTrace[i] = batchSpan.SpanContext().TraceID()
			}
		}
		ctx, cancel := context.WithTimeout(batchCtx, time.Minute)
		defer cancel()
		ids, err := bp.PublishBatch(ctx, queue, msgs)
		if err != nil {
			t.Fatalf("PublishBatch: %v", err)
		}
		if len(ids) != n {
			t.Fatalf("PublishBatch returned %d ids for %d messages", len(ids), n)
		}
		seen := map[string]bool{}
		for i, id := range ids {
			if id == "" || seen[id] {
				t.Fatalf("id %d = %q: want a distinct, non-empty id per message", i, id)
			}
			seen[id] = true
		}

		got := newConsumedLog()
		stop := consume(t, b, queue, got.handler, messaging.ConsumeOptions{Concurrency: 8})
		poll.Within(t, time.Minute, "every message of the batch consumed", func() bool { return got.missing(ids) == 0 })
		stop()
		if d := got.duplicates(); d != 0 {
			t.Errorf("%d duplicates without any failure", d)
		}
		if d := got.distinct(); d != n {
			t.Errorf("consumed %d distinct messages, want %d", d, n)
		}
		for i, id := range ids {
			m := got.msgs[id]
			if want := fmt.Sprintf("body-%d", i); string(m.Body) != want {
				t.Errorf("message %d (%s): body %q, want %q", i, id, m.Body, want)
			}
			if m.Headers[contract.HeaderMessageID] != id {
				t.Errorf("message %d: header %s = %q, want %s", i, contract.HeaderMessageID, m.Headers[contract.HeaderMessageID], id)
			}
			if got.trace[id] != wantTrace[i] {
				t.Errorf("message %d handled in trace %s, want %s", i, got.trace[id], wantTrace[i])
			}
		}
		if v := counter(t, reg, contract.MetricMessagesPublished, queue, contract.OutcomeSuccess); v != n {
			t.Errorf("published{success} = %v, want %d", v, n)
		}
		if v := counter(t, reg, contract.MetricMessagesPublished, queue, contract.OutcomeError); v != 0 {
			t.Errorf("published{error} = %v, want 0", v)
		}

		if ids, err := bp.PublishBatch(t.Context(), queue, nil); err != nil || len(ids) != 0 {
			t.Errorf("empty batch = %v, %v; want no ids, nil", ids, err)
		}
		if ids, err := bp.PublishBatch(t.Context(), "nope", msgs[:2]); err == nil || len(ids) != 2 || ids[0] != "" || ids[1] != "" {
			t.Errorf("batch to an unknown queue = %q, %v; want two empty ids and an error", ids, err)
		}
		closeCtx, cancelClose := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancelClose()
		if err := b.Close(closeCtx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if ids, err := bp.PublishBatch(t.Context(), queue, msgs[:2]); !errors.Is(err, messaging.ErrClosed) || len(ids) != 2 {
			t.Errorf("batch after Close = %q, %v; want two empty ids and ErrClosed", ids, err)
		}
	})
}

// batchAcrossOutage starts one batch of n messages with a small confirm
// window (so it takes a while), stops the broker once the first of them
// has been consumed, and returns the consumer's log and a channel that
// receives the batch's outcome. It fails the test if the batch finished
// before the broker was down: then nothing was tested.
func batchAcrossOutage(t *testing.T, e env, ctx context.Context, n int) (app string, reg *prometheus.Registry, got *consumedLog, outcome <-chan batchOutcome) {
	t.Helper()
	app = newApp(t)
	b, reg := connectWindow(t, e, app, 8)
	got = newConsumedLog()
	consume(t, b, queue, got.handler, messaging.ConsumeOptions{Concurrency: 16})

	msgs := make([]messaging.Outgoing, n)
	for i := range msgs {
		msgs[i].Body = fmt.Appendf(nil, "%d", i)
	}
	bp := batchPublisher(t, b)
	done := make(chan batchOutcome, 1)
	var returned atomic.Bool
	go func() {
		ids, err := bp.PublishBatch(ctx, queue, msgs)
		returned.Store(true)
		done <- batchOutcome{ids, err}
	}()
	poll.Within(t, time.Minute, "the first message of the batch consumed", func() bool { return got.distinct() > 0 })
	e.stop(t)
	if returned.Load() {
		t.Fatalf("the batch of %d finished before the broker was down; make it larger", n)
	}
	poll.Within(t, 30*time.Second, "Ready to fail while the broker is down", func() bool { return b.Ready(t.Context()) != nil })
	return app, reg, got, done
}

type batchOutcome struct {
	ids []string
	err error
}

// TestPublishBatchAcrossBrokerRestart: the broker stops and starts while
// one batch is in flight; the batch returns nil with every message
// confirmed, and every one of them is consumed (duplicates allowed,
// counted and reported).
func TestPublishBatchAcrossBrokerRestart(t *testing.T) {
	forEachBroker(t, true, func(t *testing.T, e env) {
		const n = 20000
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		_, reg, got, outcome := batchAcrossOutage(t, e, ctx, n)
		atStop := got.distinct()
		e.start(t)

		var res batchOutcome
		select {
		case res = <-outcome:
		case <-time.After(3 * time.Minute):
			t.Fatal("the batch did not return within 3 minutes of the restart")
		}
		if res.err != nil {
			t.Fatalf("PublishBatch across a restart: %v", res.err)
		}
		seen := map[string]bool{}
		for i, id := range res.ids {
			if id == "" || seen[id] {
				t.Fatalf("id %d = %q: want a distinct, non-empty id per message", i, id)
			}
			seen[id] = true
		}
		poll.Within(t, 2*time.Minute, "every confirmed message consumed", func() bool { return got.missing(res.ids) == 0 })
		lost := got.missing(res.ids)
		t.Logf("%s restart after %d consumed: batch of %d confirmed, consumed %d distinct, lost %d, duplicates %d",
			e.kind, atStop, n, got.distinct(), lost, got.duplicates())
		if lost != 0 {
			t.Errorf("%d confirmed messages lost", lost)
		}
		if d := got.distinct(); d != n {
			t.Errorf("consumed %d distinct messages, want %d", d, n)
		}
		if v := counter(t, reg, contract.MetricMessagesPublished, queue, contract.OutcomeSuccess); v != n {
			t.Errorf("published{success} = %v, want %d", v, n)
		}
	})
}

// TestPublishBatchPartialWhenContextEndsInOutage: the broker stops while a
// batch is in flight and the caller gives up before it is back. The batch
// reports exactly which messages were confirmed: some but not all, every
// one of them stored (consumed once the broker is back), the count in the
// error and the metrics.
func TestPublishBatchPartialWhenContextEndsInOutage(t *testing.T) {
	forEachBroker(t, true, func(t *testing.T, e env) {
		const n = 20000
		ctx, cancel := context.WithCancelCause(t.Context())
		defer cancel(nil)
		_, reg, got, outcome := batchAcrossOutage(t, e, ctx, n)
		giveUp := errors.New("caller gave up")
		cancel(giveUp)

		var res batchOutcome
		select {
		case res = <-outcome:
		case <-time.After(30 * time.Second):
			t.Fatal("PublishBatch did not return within 30s of its ctx ending")
		}
		if !errors.Is(res.err, giveUp) {
			t.Fatalf("PublishBatch error = %v, want it to wrap the ctx's cause", res.err)
		}
		if len(res.ids) != n {
			t.Fatalf("PublishBatch returned %d ids for %d messages", len(res.ids), n)
		}
		confirmed := 0
		for _, id := range res.ids {
			if id != "" {
				confirmed++
			}
		}
		if confirmed == 0 || confirmed == n {
			t.Fatalf("%d of %d confirmed; want some but not all (the broker stopped mid-batch)", confirmed, n)
		}
		if want := fmt.Sprintf("%d of %d messages not confirmed", n-confirmed, n); !strings.Contains(res.err.Error(), want) {
			t.Errorf("PublishBatch error = %v, want it to say %q", res.err, want)
		}
		if v := counter(t, reg, contract.MetricMessagesPublished, queue, contract.OutcomeSuccess); v != float64(confirmed) {
			t.Errorf("published{success} = %v, want %d", v, confirmed)
		}
		if v := counter(t, reg, contract.MetricMessagesPublished, queue, contract.OutcomeError); v != float64(n-confirmed) {
			t.Errorf("published{error} = %v, want %d", v, n-confirmed)
		}

		e.start(t)
		poll.Within(t, 2*time.Minute, "every confirmed message consumed", func() bool { return got.missing(res.ids) == 0 })
		t.Logf("%s: %d of %d confirmed before the caller gave up; %d distinct consumed (unconfirmed ones may have been stored), %d duplicates",
			e.kind, confirmed, n, got.distinct(), got.duplicates())
	})
}

// onlyPublisher is a Publisher without PublishBatch, like a wrapper or an
// in-memory fake: messaging.PublishBatch must fall back to Publish.
type onlyPublisher struct {
	mu     sync.Mutex
	bodies []string
	traces []trace.TraceID
}

func (p *onlyPublisher) Publish(ctx context.Context, _ string, body []byte) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		return "", errors.New("no deadline: the batch's ctx was not passed on")
	}
	if strings.HasPrefix(string(body), "fail") {
		return "", errors.New("refused " + string(body))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bodies = append(p.bodies, string(body))
	p.traces = append(p.traces, trace.SpanContextFromContext(ctx).TraceID())
	return "id-" + string(body), nil
}

func TestPublishBatchFallsBackToPublish(t *testing.T) {
	_, span := otel.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	msgCtx := trace.ContextWithSpan(context.Background(), span)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	p := &onlyPublisher{}
	ids, err := messaging.PublishBatch(ctx, p, queue, []messaging.Outgoing{
		{Body: []byte("a"), Context: msgCtx},
		{Body: []byte("fail-b")},
		{Body: []byte("c")},
		{Body: []byte("fail-d")},
	})
	if want := []string{"id-a", "", "id-c", ""}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("ids = %q, want %q", ids, want)
	}
	if err == nil || !strings.Contains(err.Error(), "2 of 4 messages not confirmed") || !strings.Contains(err.Error(), "refused fail-b") {
		t.Errorf("error = %v, want 2 of 4 not confirmed, the first refused fail-b", err)
	}
	if fmt.Sprint(p.bodies) != "[a c]" {
		t.Errorf("published %q in that order, want [a c]", p.bodies)
	}
	if p.traces[0] != span.SpanContext().TraceID() {
		t.Errorf("message a published in trace %s, want its Context's %s", p.traces[0], span.SpanContext().TraceID())
	}
}
