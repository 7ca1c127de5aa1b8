// Package e2e measures the whole path a request takes through a kit
// service and its broker, HTTP request -> publish -> consume -> handler,
// against the same path written with the raw clients (net/http +
// nats.go/jetstream on an embedded NATS JetStream server, net/http +
// amqp091-go on a real RabbitMQ node). run.sh runs it; RESULTS.md holds
// the last run.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/brokertest"
)

const (
	app   = "bench"
	queue = "jobs"
)

// rawFirst runs each broker's raw variant before the kit's. run.sh
// alternates it from round to round, so that neither side always runs
// first on a broker just started.
var rawFirst = flag.Bool("rawfirst", false, "run the raw variant before the kit's")

// inOrder runs the kit and raw sub-benchmarks in the order rawFirst says.
func inOrder(b *testing.B, kit, raw func(*testing.B)) {
	b.Helper()
	if *rawFirst {
		b.Run("raw", raw)
		b.Run("kit", kit)
		return
	}
	b.Run("kit", kit)
	b.Run("raw", raw)
}

// handled receives the sequence number of each job a handler ran.
type handled chan int

func (h handled) run(body []byte) error {
	n, err := strconv.Atoi(string(body))
	if err != nil {
		return fmt.Errorf("job %q: %w", body, err)
	}
	h <- n
	return nil
}

// drive sends b.N requests one after another, each waiting for its job's
// handler, and reports the latency percentiles from sending the request to
// the handler running.
func drive(b *testing.B, url string, done handled) {
	b.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(i int) {
		resp, err := client.Post(url+"?n="+strconv.Itoa(i), "text/plain", nil)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Fatalf("POST = %d", resp.StatusCode)
		}
	}
	wait := func(i int) {
		select {
		case n := <-done:
			if n != i {
				b.Fatalf("handled job %d, want %d", n, i)
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("job %d not handled", i)
		}
	}
	for i := range 50 { // warm up connections, consumers and the JIT-free caches
		post(-1 - i)
		wait(-1 - i)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		post(i)
		wait(i)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
}

func listen(b *testing.B) net.Listener {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return ln
}

// driveKit drives a kit service on the broker of kind at url, as a
// service runs: LOG_LEVEL=warn, the development topology, a kit.NewRouter
// route whose handler publishes the job (confirmed), and an App.Consumers
// handler (acked after it returns).
func driveKit(b *testing.B, kind, url string) {
	b.Helper()
	env := map[string]string{
		"COURIER_APP": app, "COURIER_SERVICE": "e2e", "BROKER_KIND": kind, "BROKER_URL": url,
		"QUEUE_JOBS": contract.QueueName(app, queue), "COURIER_DEV_DECLARE_TOPOLOGY": "true", "LOG_LEVEL": "warn",
	}
	getenv := func(k string) string { return env[k] }
	cfg, err := kit.LoadConfig(getenv, nil, queue)
	if err != nil {
		b.Fatal(err)
	}
	api := listen(b)
	svc, err := kit.New(context.Background(), cfg, getenv, kit.WithLogOutput(io.Discard), kit.WithListeners(api, listen(b)))
	if err != nil {
		b.Fatal(err)
	}
	router := kit.NewRouter()
	router.POST("/jobs", func(c *gin.Context) {
		if _, err := svc.Broker().Publish(c.Request.Context(), queue, []byte(c.Query("n"))); err != nil {
			kit.WriteInternalError(c, err)
			return
		}
		c.Status(http.StatusAccepted)
	})
	done := make(handled, 1)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() {
		stopped <- svc.Run(ctx, kit.App{Handler: router, Consumers: []kit.Consumer{{
			Queue:   queue,
			Handler: func(_ context.Context, m messaging.Message) error { return done.run(m.Body) },
		}}})
	}()
	defer func() {
		cancel()
		if err := <-stopped; err != nil {
			b.Errorf("Run = %v", err)
		}
	}()
	drive(b, "http://"+api.Addr().String()+"/jobs", done)
}

// serveRaw serves mux on a loopback listener until b ends and drives it.
func serveRaw(b *testing.B, mux *http.ServeMux, done handled) {
	b.Helper()
	ln := listen(b)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()
	drive(b, "http://"+ln.Addr().String()+"/jobs", done)
}

// BenchmarkNATS: "kit" is a kit service whose route publishes the job and
// whose consumer runs the handler; "raw" is http.ServeMux + a confirmed
// jetstream PublishMsg, and a jetstream consumer that runs the handler and
// acks, as the kit does.
func BenchmarkNATS(b *testing.B) {
	n := brokertest.StartNATS(b)
	inOrder(b, func(b *testing.B) { driveKit(b, contract.BrokerNATS, n.URL) }, func(b *testing.B) {
		nc, err := nats.Connect(n.URL)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: "RAW", Subjects: []string{"raw.jobs"}, Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy,
		})
		if err != nil {
			b.Fatal(err)
		}
		cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			b.Fatal(err)
		}
		done := make(handled, 1)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			if err := done.run(m.Data()); err != nil {
				_ = m.Nak()
				return
			}
			_ = m.Ack()
		})
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Stop()
		mux := http.NewServeMux()
		mux.HandleFunc("POST /jobs", func(w http.ResponseWriter, r *http.Request) {
			if _, err := js.PublishMsg(r.Context(), &nats.Msg{Subject: "raw.jobs", Data: []byte(r.URL.Query().Get("n"))}); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusAccepted)
		})
		serveRaw(b, mux, done)
	})
}

// BenchmarkRabbitMQ: "kit" as in BenchmarkNATS, on a real RabbitMQ node;
// "raw" is http.ServeMux + amqp091-go on the topology the kit declares (a
// durable direct exchange bound to a quorum queue): the route publishes a
// persistent, mandatory message on a confirm channel and waits for its
// confirmation, and a consumer with manual acks and the kit's default
// prefetch runs the handler and acks.
func BenchmarkRabbitMQ(b *testing.B) {
	r := brokertest.StartRabbitMQ(b)
	inOrder(b, func(b *testing.B) { driveKit(b, contract.BrokerRabbitMQ, r.AMQPURL) }, func(b *testing.B) {
		const exchange, rawQueue = "raw.jobs.exchange", "raw.jobs"
		conn, err := amqp.Dial(r.AMQPURL)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		pub, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := pub.ExchangeDeclare(exchange, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
			b.Fatal(err)
		}
		if _, err := pub.QueueDeclare(rawQueue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
			b.Fatal(err)
		}
		if err := pub.QueueBind(rawQueue, rawQueue, exchange, false, nil); err != nil {
			b.Fatal(err)
		}
		if err := pub.Confirm(false); err != nil {
			b.Fatal(err)
		}
		sub, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := sub.Qos(messaging.DefaultConcurrency, 0, false); err != nil {
			b.Fatal(err)
		}
		deliveries, err := sub.Consume(rawQueue, "raw", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		done := make(handled, 1)
		consumed := make(chan struct{})
		go func() {
			defer close(consumed)
			for d := range deliveries {
				if err := done.run(d.Body); err != nil {
					_ = d.Nack(false, false)
					continue
				}
				_ = d.Ack(false)
			}
		}()
		defer func() { _ = sub.Close(); <-consumed }()
		mux := http.NewServeMux()
		mux.HandleFunc("POST /jobs", func(w http.ResponseWriter, req *http.Request) {
			dc, err := pub.PublishWithDeferredConfirmWithContext(req.Context(), exchange, rawQueue, true, false,
				amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(req.URL.Query().Get("n"))})
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			if ok, err := dc.WaitContext(req.Context()); err != nil || !ok {
				http.Error(w, fmt.Sprintf("not confirmed: %v", err), http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusAccepted)
		})
		serveRaw(b, mux, done)
	})
}
