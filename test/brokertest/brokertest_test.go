package brokertest

import (
	"testing"

	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
)

func TestMain(m *testing.M) { Main(m) }

func TestRabbitMQStartsStopsAndRestarts(t *testing.T) {
	r := SharedRabbitMQ(t)
	dialAndDeclare := func(t *testing.T) {
		t.Helper()
		conn, err := amqp.Dial(r.AMQPURL)
		if err != nil {
			t.Fatalf("dial %s: %v", r.AMQPURL, err)
		}
		defer func() { _ = conn.Close() }()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatalf("channel: %v", err)
		}
		if _, err := ch.QueueDeclare("brokertest", true, false, false, false, nil); err != nil {
			t.Fatalf("declare: %v", err)
		}
	}
	dialAndDeclare(t)
	r.Stop(t)
	if _, err := amqp.Dial(r.AMQPURL); err == nil {
		t.Fatal("dial succeeded while the node was stopped")
	}
	r.Start(t)
	dialAndDeclare(t)
}

func TestNATSRestartKeepsJetStream(t *testing.T) {
	n := StartNATS(t)
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	nc.Close()
	n.Restart(t)
	nc, err = nats.Connect(n.URL)
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer nc.Close()
	if !n.Server().JetStreamEnabled() {
		t.Fatal("jetstream disabled after restart")
	}
}
