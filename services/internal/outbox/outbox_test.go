package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/poll"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/internal/outbox"
	"github.com/courier-dev/courier/services/internal/sqlitedb"
	"github.com/courier-dev/courier/services/kit/messaging"
)

func init() { otel.SetTextMapPropagator(propagation.TraceContext{}) }

// requestContext returns a context carrying a sampled span of a new trace,
// as a request enqueueing rows has.
func requestContext(seed byte) (context.Context, trace.TraceID) {
	traceID := trace.TraceID{seed, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	return trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled,
	})), traceID
}

// batchRecorder is an in-memory messaging.BatchPublisher: the relay must
// use PublishBatch when there is one. Its first call confirms only the
// messages at odd positions, like a broker lost mid-batch.
type batchRecorder struct {
	mu    sync.Mutex
	calls [][]published
}

func (r *batchRecorder) Publish(context.Context, string, []byte) (string, error) {
	return "", errors.New("Publish called on a BatchPublisher")
}

func (r *batchRecorder) PublishBatch(_ context.Context, queue string, msgs []messaging.Outgoing) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	call := make([]published, len(msgs))
	ids := make([]string, len(msgs))
	failed := 0
	for i, m := range msgs {
		call[i] = published{queue, string(m.Body), trace.SpanContextFromContext(m.Context).TraceID().String()}
		if len(r.calls) == 0 && i%2 == 0 {
			failed++
			continue
		}
		ids[i] = fmt.Sprintf("msg-%d-%d", len(r.calls), i)
	}
	r.calls = append(r.calls, call)
	if failed > 0 {
		return ids, fmt.Errorf("%d of %d messages not confirmed", failed, len(msgs))
	}
	return ids, nil
}

func (r *batchRecorder) snapshot() [][]published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]published(nil), r.calls...)
}

type published struct {
	queue   string
	body    string
	traceID string
}

// recorder is an in-memory Publisher that fails the first failures calls.
type recorder struct {
	mu       sync.Mutex
	failures int
	calls    int
	got      []published
}

func (r *recorder) Publish(ctx context.Context, queue string, body []byte) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.failures > 0 {
		r.failures--
		return "", errors.New("broker unavailable")
	}
	r.got = append(r.got, published{queue, string(body), trace.SpanContextFromContext(ctx).TraceID().String()})
	return fmt.Sprint("msg-", len(r.got)), nil
}

func (r *recorder) snapshot() ([]published, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]published(nil), r.got...), r.calls
}

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sqlitedb.Open(t.Context(), filepath.Join(t.TempDir(), "outbox.db"), []string{outbox.Migration})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func enqueue(t *testing.T, ctx context.Context, db *sql.DB, commit bool, bodies ...string) {
	t.Helper()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bodies {
		if err := outbox.Enqueue(ctx, tx, "emails", []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	if commit {
		err = tx.Commit()
	} else {
		err = tx.Rollback()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func startRelay(t *testing.T, db *sql.DB, pub outbox.Publisher) *outbox.Relay {
	t.Helper()
	relay := outbox.NewRelay(db, pub, slog.New(slog.DiscardHandler))
	// A long poll interval proves Notify, not polling, triggers the pass.
	relay.PollInterval = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay.Run: %v", err)
		}
	})
	return relay
}

func pending(t *testing.T, relay *outbox.Relay) int {
	t.Helper()
	n, err := relay.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRelayPublishesCommittedMessagesInOrderWithTraceContext(t *testing.T) {
	db := openDB(t)
	pub := &recorder{}
	relay := startRelay(t, db, pub)

	traceID := trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled,
	}))
	enqueue(t, ctx, db, false, "rolled back")
	enqueue(t, ctx, db, true, "one", "two", "three")
	relay.Notify()

	poll.Until(t, "three messages", func() bool { got, _ := pub.snapshot(); return len(got) >= 3 })
	poll.Until(t, "an empty outbox", func() bool { return pending(t, relay) == 0 })
	got, _ := pub.snapshot()
	want := []string{"one", "two", "three"}
	if len(got) != len(want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	for i, p := range got {
		if p.queue != "emails" || p.body != want[i] || p.traceID != traceID.String() {
			t.Errorf("message %d = %+v, want queue emails, body %q, trace %s", i, p, want[i], traceID)
		}
	}
}

func TestRelayRetriesUntilTheBrokerConfirms(t *testing.T) {
	db := openDB(t)
	pub := &recorder{failures: 3}
	relay := startRelay(t, db, pub)
	enqueue(t, context.Background(), db, true, "survives")
	relay.Notify()

	poll.Until(t, "the message to be published", func() bool { got, _ := pub.snapshot(); return len(got) == 1 })
	poll.Until(t, "an empty outbox", func() bool { return pending(t, relay) == 0 })
	if got, calls := pub.snapshot(); calls != 4 || got[0].body != "survives" {
		t.Fatalf("published %+v after %d calls; want it once after 3 failures", got, calls)
	}
}

func TestRelayPublishesRowsLeftByAnEarlierProcess(t *testing.T) {
	db := openDB(t)
	enqueue(t, context.Background(), db, true, "left over")
	pub := &recorder{}
	startRelay(t, db, pub) // no Notify: the first pass must find it
	poll.Until(t, "the left-over message", func() bool { got, _ := pub.snapshot(); return len(got) == 1 })
}

// TestRelayDeletesExactlyTheConfirmedRows: the relay publishes a page as
// one batch and, when the broker confirmed only some of it, deletes those
// rows and publishes exactly the others again, with the same bodies (so
// the same job ids) and trace context.
func TestRelayDeletesExactlyTheConfirmedRows(t *testing.T) {
	db := openDB(t)
	pub := &batchRecorder{}
	relay := startRelay(t, db, pub)
	ctx, traceID := requestContext(7)
	bodies := []string{"a", "b", "c", "d", "e", "f"}
	enqueue(t, ctx, db, true, bodies...)
	relay.Notify()

	poll.Until(t, "an empty outbox", func() bool { return pending(t, relay) == 0 })
	calls := pub.snapshot()
	if len(calls) != 2 {
		t.Fatalf("%d PublishBatch calls, want 2 (all rows, then the unconfirmed ones): %+v", len(calls), calls)
	}
	var first, second []string
	for _, p := range calls[0] {
		first = append(first, p.body)
	}
	for _, p := range calls[1] {
		second = append(second, p.body)
		if p.queue != "emails" || p.traceID != traceID.String() {
			t.Errorf("republished %+v, want queue emails and trace %s", p, traceID)
		}
	}
	if fmt.Sprint(first) != fmt.Sprint(bodies) {
		t.Errorf("first batch = %q, want every row in order %q", first, bodies)
	}
	// The first call confirmed b, d and f; a, c and e must come again,
	// and nothing else.
	if want := []string{"a", "c", "e"}; fmt.Sprint(second) != fmt.Sprint(want) {
		t.Errorf("second batch = %q, want exactly the unconfirmed rows %q", second, want)
	}
}

// TestRelayBatchesOneQueueAtATime: a page with rows for two queues is
// published as one batch per run of rows for the same queue, in order.
func TestRelayBatchesOneQueueAtATime(t *testing.T) {
	db := openDB(t)
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"emails", "emails", "sms", "emails"} {
		if err := outbox.Enqueue(t.Context(), tx, q, []byte(q)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	pub := &batchRecorder{calls: [][]published{nil}} // confirm everything
	startRelay(t, db, pub)
	relay := outbox.NewRelay(db, pub, slog.New(slog.DiscardHandler))
	poll.Until(t, "an empty outbox", func() bool { return pending(t, relay) == 0 })
	var got []string
	for _, call := range pub.snapshot()[1:] {
		got = append(got, fmt.Sprintf("%s×%d", call[0].queue, len(call)))
	}
	if want := "[emails×2 sms×1 emails×1]"; fmt.Sprint(got) != want {
		t.Errorf("batches = %v, want %s", got, want)
	}
}
