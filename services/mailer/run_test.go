package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/poll"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/servicetest"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/brokertest"
	"github.com/courier-dev/courier/test/smtpsink"
)

const testApp = "blog"

var physicalEmails = contract.QueueName(testApp, mailjob.Queue)

// world is a real broker, a real SMTP server and a database path shared by
// the mailer processes a test starts.
type world struct {
	nats   *brokertest.NATS
	sink   *smtpsink.Sink
	dbPath string
	env    map[string]string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{
		nats:   brokertest.StartNATS(t),
		sink:   smtpsink.StartTest(t, smtpsink.Options{}),
		dbPath: filepath.Join(t.TempDir(), "mailer.db"),
	}
	w.env = map[string]string{
		contract.EnvAppName:            testApp,
		contract.EnvServiceName:        "mailer",
		contract.EnvBrokerKind:         contract.BrokerNATS,
		contract.EnvBrokerURL:          w.nats.URL,
		contract.QueueEnv("emails"):    physicalEmails,
		contract.EnvDevDeclareTopology: "true",
		contract.EnvShutdownGrace:      "10s",
		"DATABASE_PATH":                w.dbPath,
		"SMTP_HOST":                    w.sink.Host(),
		"SMTP_PORT":                    strconv.Itoa(w.sink.Port()),
		"SMTP_FROM":                    "Courier Blog <no-reply@courier.test>",
		"SMTP_TIMEOUT":                 "5s",
		"MAILER_RETRY_BACKOFF":         "50ms",
		"MAILER_MAX_RETRY_BACKOFF":     "200ms",
	}
	return w
}

// onVolume runs the mailer as the operator does for a service with
// storage: no DATABASE_PATH, the record of sent jobs in COURIER_DATA_DIR,
// here the directory of dbPath (the mailer names its file mailer.db), and
// the test in a working directory of its own, as a container would be.
func (w *world) onVolume(t *testing.T) {
	t.Helper()
	delete(w.env, "DATABASE_PATH")
	w.env[contract.EnvDataDir] = filepath.Dir(w.dbPath)
	t.Chdir(t.TempDir())
}

// start runs the mailer's run function, as main would, until the test ends,
// and waits for it to be ready. Its readiness checks run every 50ms so the
// wait is short.
func (w *world) start(t *testing.T) *servicetest.Running {
	t.Helper()
	p := servicetest.Start(t, runWith(kit.WithReadiness(50*time.Millisecond, time.Second)), "mailer", w.env)
	p.WaitReady(t)
	return p
}

// runWith is run with kit options added, as the servicetest helpers take it.
func runWith(opts ...kit.Option) servicetest.RunFunc {
	return func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
		return run(ctx, args, getenv, stdout, opts...)
	}
}

// consumedCount reads messages_consumed_total for the emails queue from /metrics.
func consumedCount(t *testing.T, p *servicetest.Running, outcome string) int {
	t.Helper()
	resp, err := servicetest.HTTPClient().Get(p.AdminURL + contract.MetricsPath)
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, contract.MetricMessagesConsumed+"{") &&
			strings.Contains(line, `outcome="`+outcome+`"`) && strings.Contains(line, `queue="`+mailjob.Queue+`"`) {
			f := strings.Fields(line)
			n, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return int(n)
		}
	}
	return 0
}

// publisher connects as users or posts would and publishes raw bodies.
func (w *world) publisher(t *testing.T) messaging.Broker {
	t.Helper()
	b, err := messaging.Connect(t.Context(), messaging.Config{
		Kind:            contract.BrokerNATS,
		URL:             w.nats.URL,
		App:             testApp,
		Queues:          map[string]string{mailjob.Queue: physicalEmails},
		DeclareTopology: true,
	})
	if err != nil {
		t.Fatalf("connect publisher: %v", err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

func (w *world) jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(w.nats.URL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// backlog is what the mailer's durable consumer has not acked yet.
func (w *world) backlog(t *testing.T) int {
	t.Helper()
	cons, err := w.jetStream(t).Consumer(t.Context(), contract.StreamName(testApp), contract.ConsumerName(physicalEmails))
	if err != nil {
		t.Fatalf("bind consumer: %v", err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	return int(info.NumPending) + info.NumAckPending
}

// deadLetter waits for the one dead letter of the emails queue.
func (w *world) deadLetter(t *testing.T) jetstream.Msg {
	t.Helper()
	// The stream is a work queue, so a reader needs a durable consumer with
	// explicit acks, filtered to the dead-letter subject only.
	cons, err := w.jetStream(t).CreateOrUpdateConsumer(t.Context(), contract.StreamName(testApp), jetstream.ConsumerConfig{
		Durable:       "test-dead-letters",
		FilterSubject: contract.DeadLetterSubject(physicalEmails),
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("dead-letter consumer: %v", err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(20 * time.Second))
	if err != nil {
		t.Fatalf("no dead letter on %s: %v", contract.DeadLetterSubject(physicalEmails), err)
	}
	if err := m.DoubleAck(t.Context()); err != nil {
		t.Fatalf("ack dead letter: %v", err)
	}
	return m
}

func publishJob(t *testing.T, b messaging.Broker, job mailjob.Job) {
	t.Helper()
	body, err := mailjob.Encode(job)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(t.Context(), mailjob.Queue, body); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// The broker redelivers a job whose e-mail went out and was recorded but
// whose ack never arrived, because the process died: the replacement mailer,
// in a new working directory with only the volume (COURIER_DATA_DIR) kept,
// acks it without sending, so the inbox holds one e-mail.
func TestRunRedeliveryAfterCrashSendsOnce(t *testing.T) {
	w := newWorld(t)
	w.onVolume(t)
	pub := w.publisher(t)
	job := welcomeJob("ada@example.com", "Ada")

	// The first "process": the mailer's own handler on a real consumer,
	// which dies right after the handler succeeded, before the ack.
	f := &fixture{sink: w.sink, dbPath: w.dbPath}
	f.open(t, SMTPConfig{})
	crashing, err := messaging.Connect(t.Context(), messaging.Config{
		Kind: contract.BrokerNATS, URL: w.nats.URL, App: testApp,
		Queues: map[string]string{mailjob.Queue: physicalEmails}, DeclareTopology: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan struct{})
	consumeCtx, stopConsuming := context.WithCancel(t.Context())
	consumed := make(chan error, 1)
	go func() {
		consumed <- crashing.Consume(consumeCtx, mailjob.Queue, func(ctx context.Context, msg messaging.Message) error {
			if err := f.mailer.Handle(ctx, msg); err != nil {
				return err
			}
			close(handled)
			// The process dies here, and no ack leaves it. Returning an
			// error makes the driver Nak, which redelivers at once what an
			// expired AckWait would redeliver after 30s; the mailer cannot
			// tell the two apart, it only sees attempt 2.
			<-consumeCtx.Done()
			return errors.New("crashed before the ack")
		}, messaging.ConsumeOptions{RetryBackoff: 50 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond})
	}()
	publishJob(t, pub, job)
	select {
	case <-handled:
	case <-time.After(20 * time.Second):
		t.Fatal("the first mailer never handled the job")
	}
	stopConsuming()
	if err := <-consumed; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("first consumer: %v", err)
	}
	_ = crashing.Close(context.Background())
	_ = f.store.Close()
	if n := len(w.sink.Messages()); n != 1 {
		t.Fatalf("after the first delivery the sink has %d messages, want 1", n)
	}

	// The replacement mailer, the real service, gets the redelivery.
	t.Chdir(t.TempDir())
	p := w.start(t)
	poll.Within(t, 20*time.Second, "redelivered job acked", func() bool {
		return consumedCount(t, p, contract.OutcomeSuccess) == 1 && w.backlog(t) == 0
	})
	if n := len(w.sink.Messages()); n != 1 {
		t.Fatalf("sink has %d messages after the redelivery, want exactly 1", n)
	}
	if p.Logs.Find("e-mail already sent; acknowledging the redelivered job") == nil {
		t.Error("the restarted mailer did not log the skipped resend")
	}
}

func TestRunSendsPublishedJobs(t *testing.T) {
	w := newWorld(t)
	p := w.start(t)
	pub := w.publisher(t)
	jobs := []mailjob.Job{welcomeJob("ada@example.com", "Ada"), welcomeJob("grace@example.com", "Grace")}
	for _, j := range jobs {
		publishJob(t, pub, j)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	msgs, err := w.sink.WaitCount(ctx, len(jobs))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range msgs {
		got[m.Header.Get("Message-Id")] = m.To[0]
	}
	for _, j := range jobs {
		if to := got["<"+j.ID+"@courier>"]; to != j.To {
			t.Errorf("job %s: e-mail to %q, want %q (got %v)", j.ID, to, j.To, got)
		}
	}
	poll.Until(t, "both jobs acked", func() bool {
		return consumedCount(t, p, contract.OutcomeSuccess) == 2 && w.backlog(t) == 0
	})
}

// A failing SMTP server gets the job retried with backoff up to the delivery
// limit; then the job lands in the dead-letter subject, not in a loop. The
// limit is the queue's, as the operator renders it from
// spec.queues[].maxDeliveries.
func TestRunRetriesThenDeadLettersWhenSMTPFails(t *testing.T) {
	w := newWorld(t)
	w.env[contract.QueueMaxDeliveriesEnv(mailjob.Queue)] = "3"
	w.sink.Fail(-1)
	p := w.start(t)
	job := welcomeJob("ada@example.com", "Ada")
	publishJob(t, w.publisher(t), job)

	dead := w.deadLetter(t)
	if got, err := mailjob.Decode(dead.Data()); err != nil || got.ID != job.ID {
		t.Errorf("dead letter holds %q (%v), want job %s", dead.Data(), err, job.ID)
	}
	if got := dead.Headers().Get(messaging.HeaderDeliveries); got != "3" {
		t.Errorf("dead letter after %s deliveries, want 3", got)
	}
	if got := w.sink.Rejected(); got != 3 {
		t.Errorf("SMTP server saw %d attempts, want 3", got)
	}
	if got := consumedCount(t, p, contract.OutcomeRetry); got != 2 {
		t.Errorf("%d retries counted, want 2", got)
	}
	if n := len(w.sink.Messages()); n != 0 {
		t.Errorf("sink has %d messages, want 0", n)
	}
}

// A job that can never be decoded is dead-lettered on its first delivery.
func TestRunDeadLettersUndecodableJob(t *testing.T) {
	w := newWorld(t)
	p := w.start(t)
	if _, err := w.publisher(t).Publish(t.Context(), mailjob.Queue, []byte("{not a job")); err != nil {
		t.Fatal(err)
	}
	dead := w.deadLetter(t)
	if got := dead.Headers().Get(messaging.HeaderDeliveries); got != "1" {
		t.Errorf("dead-lettered after %s deliveries, want 1", got)
	}
	if reason := dead.Headers().Get(messaging.HeaderDeadLetterReason); !strings.Contains(reason, "decode") {
		t.Errorf("dead-letter reason %q does not say the job did not decode", reason)
	}
	if got := consumedCount(t, p, contract.OutcomeRetry); got != 0 {
		t.Errorf("%d retries of an undecodable job, want 0", got)
	}
}

func TestRunConfigErrorsNameTheVariable(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name    string
		change  map[string]string
		wantErr string
	}{
		{"no SMTP host", map[string]string{"SMTP_HOST": ""}, "SMTP_HOST"},
		{"no database", map[string]string{"DATABASE_PATH": ""}, "DATABASE_PATH"},
		{"no database nor data dir", map[string]string{"DATABASE_PATH": "", contract.EnvDataDir: ""}, contract.EnvDataDir},
		{"no queue mapping", map[string]string{contract.QueueEnv(mailjob.Queue): ""}, contract.QueueEnv(mailjob.Queue)},
		{"no broker", map[string]string{contract.EnvBrokerKind: ""}, contract.EnvBrokerKind},
		{"bad sender", map[string]string{"SMTP_FROM": "not an address"}, "SMTP_FROM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			servicetest.RunFails(t, runWith(), "mailer", w.env, tt.change, tt.wantErr)
		})
	}
}
