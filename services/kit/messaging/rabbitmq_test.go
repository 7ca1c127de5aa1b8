package messaging_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/brokertest"
)

// declareOperatorTopology declares physical as the operator does
// (operator/internal/broker.Generate), with a classic queue: the kit must
// work on both queue types without declaring anything itself.
func declareOperatorTopology(t *testing.T, r *brokertest.RabbitMQ, physical string) {
	t.Helper()
	conn, err := amqp.Dial(r.AMQPURL)
	if err != nil {
		t.Fatalf("admin dial: %v", err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("admin channel: %v", err)
	}
	ex, dlx, dlq := contract.ExchangeName(physical), contract.DeadLetterExchangeName(physical), contract.DeadLetterQueueName(physical)
	classic := amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeClassic}
	for _, err := range []error{
		ch.ExchangeDeclare(dlx, amqp.ExchangeDirect, true, false, false, false, nil),
		ch.ExchangeDeclare(ex, amqp.ExchangeDirect, true, false, false, false, nil),
		func() error { _, err := ch.QueueDeclare(dlq, true, false, false, false, classic); return err }(),
		func() error {
			_, err := ch.QueueDeclare(physical, true, false, false, false, amqp.Table{
				amqp.QueueTypeArg:           amqp.QueueTypeClassic,
				"x-dead-letter-exchange":    dlx,
				"x-dead-letter-routing-key": contract.RoutingKey(dlq),
			})
			return err
		}(),
		ch.QueueBind(dlq, contract.RoutingKey(dlq), dlx, false, nil),
		ch.QueueBind(physical, contract.RoutingKey(physical), ex, false, nil),
	} {
		if err != nil {
			t.Fatalf("declare operator topology: %v", err)
		}
	}
}

// addUser creates a user with the permissions the operator grants a
// service on the default vhost and returns its AMQP URL.
func addUser(t *testing.T, r *brokertest.RabbitMQ, name string, perms rabbithole.Permissions) string {
	t.Helper()
	rh, err := rabbithole.NewClient(r.ManagementURL, r.AdminUser, r.AdminPassword)
	if err != nil {
		t.Fatalf("management client: %v", err)
	}
	const password = "secret-" + "for-tests"
	if _, err := rh.PutUser(name, rabbithole.UserSettings{Password: password}); err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	if _, err := rh.UpdatePermissionsIn("/", name, perms); err != nil {
		t.Fatalf("grant %s: %v", name, err)
	}
	t.Cleanup(func() { _, _ = rh.DeleteUser(name) })
	return r.URL(name, password, "/")
}

func exactly(name string) string { return "^" + regexp.QuoteMeta(name) + "$" }

// TestRabbitMQLeastPrivilegeClassicQueue runs the kit as the operator
// deploys it: topology declared by someone else, a classic queue, a
// publisher that may only write to the queue's exchange and a consumer that
// may only read the queue, neither with configure permission. Publishing,
// consuming, retrying and dead-lettering all work within that.
func TestRabbitMQLeastPrivilegeClassicQueue(t *testing.T) {
	r := brokertest.SharedRabbitMQ(t)
	app := newApp(t)
	physical := contract.QueueName(app, queue)
	declareOperatorTopology(t, r, physical)
	none := "^$"
	pubURL := addUser(t, r, app+"-publisher", rabbithole.Permissions{Configure: none, Write: exactly(contract.ExchangeName(physical)), Read: none})
	conURL := addUser(t, r, app+"-consumer", rabbithole.Permissions{Configure: none, Write: none, Read: exactly(physical)})

	cfg := func(url string) messaging.Config {
		return messaging.Config{Kind: contract.BrokerRabbitMQ, URL: url, App: app, Queues: physicalNames(app, queue)}
	}
	pub, err := connectWith(t, cfg(pubURL))
	if err != nil {
		t.Fatalf("connect publisher: %v", err)
	}
	con, err := connectWith(t, cfg(conURL))
	if err != nil {
		t.Fatalf("connect consumer: %v", err)
	}
	ids := publishN(t, pub, 2, func(i int) string { return []string{"poison", "good"}[i] })

	var mu sync.Mutex
	attempts := map[string][]int{}
	stop := consume(t, con, queue, func(_ context.Context, m messaging.Message) error {
		mu.Lock()
		attempts[m.ID] = append(attempts[m.ID], m.Attempt)
		mu.Unlock()
		if string(m.Body) == "poison" {
			return errors.New("cannot handle this")
		}
		return nil
	}, messaging.ConsumeOptions{MaxDeliveries: 2, RetryBackoff: 10 * time.Millisecond})

	e := rabbitEnv(t, false)
	dead := e.deadLetters(t, physical, 1)
	stop()
	if len(dead) != 1 || dead[0].ID != ids[0] {
		t.Fatalf("dead letters = %+v, want the poison message %s", dead, ids[0])
	}
	mu.Lock()
	defer mu.Unlock()
	if got := attempts[ids[0]]; !slices.Equal(got, []int{1, 2}) {
		t.Errorf("poison attempts = %v, want [1 2]", got)
	}
	if got := attempts[ids[1]]; !slices.Equal(got, []int{1}) {
		t.Errorf("good attempts = %v, want [1]", got)
	}
	if got := e.backlog(t, app, physical); got != 0 {
		t.Errorf("backlog = %d, want 0", got)
	}
}

// TestRabbitMQUnroutableIsNotConfirmed: a message the broker cannot route
// (the exchange exists, no queue is bound) is confirmed by RabbitMQ but
// lost; the kit publishes it as mandatory and reports the failure instead
// of a success.
func TestRabbitMQUnroutableIsNotConfirmed(t *testing.T) {
	r := brokertest.SharedRabbitMQ(t)
	app := newApp(t)
	physical := contract.QueueName(app, queue)
	conn, err := amqp.Dial(r.AMQPURL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(contract.ExchangeName(physical), amqp.ExchangeDirect, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	b, err := connectWith(t, messaging.Config{Kind: contract.BrokerRabbitMQ, URL: r.AMQPURL, App: app, Queues: physicalNames(app, queue)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, err = b.Publish(ctx, queue, []byte("nowhere"))
	if err == nil {
		t.Fatal("Publish of an unroutable message succeeded")
	}
	if !strings.Contains(err.Error(), "unroutable") {
		t.Errorf("Publish error = %v, want it to say the message was unroutable", err)
	}

	bctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	ids, err := batchPublisher(t, b).PublishBatch(bctx, queue, []messaging.Outgoing{{Body: []byte("a")}, {Body: []byte("b")}, {Body: []byte("c")}})
	if err == nil || !strings.Contains(err.Error(), "3 of 3 messages not confirmed") || !strings.Contains(err.Error(), "unroutable") {
		t.Errorf("PublishBatch error = %v, want 3 of 3 not confirmed because unroutable", err)
	}
	if fmt.Sprint(ids) != "[  ]" {
		t.Errorf("PublishBatch ids = %q, want three empty ones", ids)
	}
}
