package messaging_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/brokertest"
)

// TestNATSOperatorTopologySlowHandler runs the kit on a stream and durable
// consumer it did not declare (as the operator deploys it), with an AckWait
// shorter than the handler takes: the kit keeps the message in progress, so
// the server does not hand it to another worker meanwhile.
func TestNATSOperatorTopologySlowHandler(t *testing.T) {
	srv := brokertest.StartNATS(t)
	app := newApp(t)
	physical := contract.QueueName(app, queue)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      contract.StreamName(app),
		Subjects:  []string{contract.Subject(physical), contract.DeadLetterSubject(physical)},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	const ackWait = 500 * time.Millisecond
	if _, err := js.CreateConsumer(ctx, contract.StreamName(app), jetstream.ConsumerConfig{
		Durable:       contract.ConsumerName(physical),
		FilterSubject: contract.Subject(physical),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    6,
	}); err != nil {
		t.Fatal(err)
	}

	b, err := connectWith(t, messaging.Config{Kind: contract.BrokerNATS, URL: srv.URL, App: app, Queues: physicalNames(app, queue)})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, b, 1, func(int) string { return "slow" })
	var calls atomic.Int32
	done := make(chan struct{})
	stop := consume(t, b, queue, func(context.Context, messaging.Message) error {
		if calls.Add(1) == 1 {
			// The work itself takes three AckWaits.
			time.Sleep(3 * ackWait)
			close(done)
		}
		return nil
	}, messaging.ConsumeOptions{Concurrency: 4})
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("message not handled")
	}
	stop()
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1 (redelivered while in progress)", n)
	}
	if got := natsEnvBacklog(t, js, app, physical); got != 0 {
		t.Errorf("backlog = %d, want 0", got)
	}
}

func natsEnvBacklog(t *testing.T, js jetstream.JetStream, app, physical string) int {
	t.Helper()
	cons, err := js.Consumer(t.Context(), contract.StreamName(app), contract.ConsumerName(physical))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return int(info.NumPending) + info.NumAckPending
}
