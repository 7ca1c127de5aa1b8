package kit_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/poll"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/brokertest"
)

// TestServiceWithNATS runs a service against a real (embedded) NATS
// JetStream server: a request publishes a job, the service's own consumer
// handles it, the two share a trace id in the logs, and a shutdown with the
// handler in flight waits for it and acks the message.
func TestServiceWithNATS(t *testing.T) {
	n := brokertest.StartNATS(t)
	env := map[string]string{
		"COURIER_APP": "blog", "COURIER_SERVICE": "users",
		"BROKER_KIND": contract.BrokerNATS, "BROKER_URL": n.URL,
		"QUEUE_EMAILS": "blog.emails", "COURIER_DEV_DECLARE_TOPOLOGY": "true",
	}
	svc, logs := newServiceWithQueues(t, env, []string{"emails"})
	router := kit.NewRouter()

	router.POST("/signup", func(c *gin.Context) {
		id, err := svc.Broker().Publish(c.Request.Context(), "emails", []byte(`{"to":"ada@example.com"}`))
		if err != nil {
			kit.WriteInternalError(c, err)
			return
		}
		c.JSON(http.StatusCreated, gin.H{"job": id})
	})
	entered, release := make(chan messaging.Message, 1), make(chan struct{})
	r := start(t, svc, kit.App{Handler: router, Consumers: []kit.Consumer{{
		Queue: "emails",
		Handler: func(ctx context.Context, msg messaging.Message) error {
			svc.Logger().InfoContext(ctx, "sending e-mail", "job", msg.ID)
			entered <- msg
			<-release
			return nil
		},
		Options: messaging.ConsumeOptions{Concurrency: 1},
	}}})

	poll.Until(t, "ready with the broker connected", func() bool {
		code, body := get(t, r.adminURL("/readyz"))
		return code == 200 && strings.Contains(body, `"broker":"ok"`)
	})

	const traceID = "0af7651916cd43dd8448eb211c80319c"
	req, _ := http.NewRequest(http.MethodPost, r.apiURL("/signup"), nil)
	req.Header.Set("traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /signup = %d", resp.StatusCode)
	}

	var msg messaging.Message
	select {
	case msg = <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the job was not consumed")
	}
	families := scrape(t, r)
	var published float64
	for _, m := range families[contract.MetricMessagesPublished].GetMetric() {
		if l := labels(m); l["queue"] == "emails" && l["outcome"] == contract.OutcomeSuccess {
			published = m.GetCounter().GetValue()
		}
	}
	if published != 1 {
		t.Errorf("%s{queue=emails,outcome=success} = %v, want 1", contract.MetricMessagesPublished, published)
	}

	// Shut down with the handler in flight: Run must wait for it.
	r.cancel()
	poll.Until(t, "readiness false", func() bool { code, _ := get(t, r.adminURL("/readyz")); return code == 503 })
	select {
	case err := <-r.done:
		t.Fatalf("Run returned %v with a message handler in flight", err)
	default:
	}
	close(release)
	if err := r.wait(t); err != nil {
		t.Fatalf("Run = %v", err)
	}

	if access := logs.one(t, "request"); access["trace_id"] != traceID {
		t.Errorf("access log trace_id = %v, want %s", access["trace_id"], traceID)
	}
	if job := logs.one(t, "sending e-mail"); job["trace_id"] != traceID || job["job"] != msg.ID {
		t.Errorf("consumer log = %v, want trace %s and job %s", job, traceID, msg.ID)
	}

	// The in-flight message was acked before Run returned: nothing pending,
	// nothing waiting for an ack, delivered once.
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(t.Context(), contract.StreamName("blog"), contract.ConsumerName("blog.emails"))
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || info.Delivered.Consumer != 1 {
		t.Errorf("consumer state: ack pending %d, pending %d, delivered %d; want 0, 0, 1",
			info.NumAckPending, info.NumPending, info.Delivered.Consumer)
	}
	var consumed float64
	mfs, err := svc.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != contract.MetricMessagesConsumed {
			continue
		}
		for _, m := range mf.GetMetric() {
			if l := labels(m); l["queue"] == "emails" && l["outcome"] == contract.OutcomeSuccess {
				consumed = m.GetCounter().GetValue()
			}
		}
	}
	if consumed != 1 {
		t.Errorf("%s{queue=emails,outcome=success} = %v, want 1", contract.MetricMessagesConsumed, consumed)
	}
}

// A broker that cannot be reached does not keep the service from starting:
// /livez answers, /readyz says why it is not ready, a publish gives up with
// its context, and shutdown stops the connection attempt.
func TestServiceStartsWhileBrokerUnreachable(t *testing.T) {
	env := map[string]string{
		"COURIER_APP": "blog", "BROKER_KIND": contract.BrokerNATS, "QUEUE_EMAILS": "blog.emails",
		"BROKER_URL": "nats://" + localListener(t).Addr().String(), // accepts, never speaks NATS
	}
	svc, _ := newServiceWithQueues(t, env, []string{"emails"})
	r := start(t, svc, kit.App{Consumers: []kit.Consumer{{
		Queue: "emails", Handler: func(context.Context, messaging.Message) error { return nil },
	}}})

	if code, _ := get(t, r.adminURL("/livez")); code != http.StatusOK {
		t.Errorf("/livez = %d, want 200 while the broker is unreachable", code)
	}
	poll.Until(t, "readyz explains", func() bool {
		code, body := get(t, r.adminURL("/readyz"))
		return code == 503 && strings.Contains(body, `"broker":"connecting to the broker"`)
	})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := svc.Broker().Publish(ctx, "emails", []byte("{}")); err == nil || !strings.Contains(err.Error(), "connecting to the broker") {
		t.Errorf("Publish = %v, want a connecting error once its context ended", err)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want a clean shutdown", err)
	}
}

// A service whose writes go through an outbox serves while the broker is
// unreachable: /readyz answers 200, says "degraded" and names what is
// missing; the database and any other check still gate it.
func TestBrokerOptionalKeepsTheServiceReady(t *testing.T) {
	env := map[string]string{
		"COURIER_APP": "blog", "BROKER_KIND": contract.BrokerNATS, "QUEUE_EMAILS": "blog.emails",
		"BROKER_URL": "nats://" + localListener(t).Addr().String(), // accepts, never speaks NATS
	}
	svc, _ := newServiceWithQueues(t, env, []string{"emails"}, kit.WithBrokerOptional())
	var dbDown atomic.Bool
	r := start(t, svc, kit.App{Checks: map[string]kit.CheckFunc{"database": func(context.Context) error {
		if dbDown.Load() {
			return errors.New("database closed")
		}
		return nil
	}}})

	poll.Until(t, "readyz degraded and still 200", func() bool {
		code, body := get(t, r.adminURL("/readyz"))
		return code == http.StatusOK && strings.Contains(body, `"status":"degraded"`) &&
			strings.Contains(body, `"broker":"connecting to the broker"`) && strings.Contains(body, `"database":"ok"`)
	})
	dbDown.Store(true)
	poll.Until(t, "readyz unavailable once a required check fails", func() bool {
		code, body := get(t, r.adminURL("/readyz"))
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"status":"unavailable"`)
	})
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want a clean shutdown", err)
	}
}

// A broker configuration that can never work ends Run with the reason,
// rather than leaving the pod unready forever.
func TestRunFailsWhenBrokerConnectFailsForGood(t *testing.T) {
	cfg, err := kit.LoadConfig(envMap(map[string]string{
		"COURIER_APP": "blog", "BROKER_KIND": contract.BrokerNATS, "BROKER_URL": "nats://127.0.0.1:1",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Queues = map[string]string{"emails": ""} // messaging.Connect rejects it outright
	svc, err := kit.New(t.Context(), cfg, envMap(nil), kit.WithLogOutput(&logBuffer{}), kit.WithListeners(localListener(t), localListener(t)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := start(t, svc, kit.App{})
	if err := r.wait(t); err == nil || !strings.Contains(err.Error(), "connect to nats") {
		t.Errorf("Run = %v, want the connect error", err)
	}
}

// A consumer that ends on its own leaves its queue unserved, so Run shuts
// the service down and says why, and the pod restarts.
func TestRunStopsWhenAConsumerFails(t *testing.T) {
	n := brokertest.StartNATS(t)
	env := map[string]string{
		"COURIER_APP": "blog", "BROKER_KIND": contract.BrokerNATS, "BROKER_URL": n.URL,
		"QUEUE_EMAILS": "blog.emails", "COURIER_DEV_DECLARE_TOPOLOGY": "true",
	}
	svc, _ := newServiceWithQueues(t, env, []string{"emails"})
	// "audit" has no physical name, so the driver refuses to consume it.
	r := start(t, svc, kit.App{Consumers: []kit.Consumer{{
		Queue: "audit", Handler: func(context.Context, messaging.Message) error { return nil },
	}}})
	err := r.wait(t)
	if err == nil || !strings.Contains(err.Error(), `consumer of queue "audit" stopped`) {
		t.Errorf("Run = %v, want the consumer's failure", err)
	}
}
