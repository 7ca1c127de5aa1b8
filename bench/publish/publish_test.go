package publish_test

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/services/kit/tracing"
	"github.com/courier-dev/courier/test/brokertest"
)

const (
	// window is the confirm window of both sides: at most this many
	// messages published and not yet confirmed.
	window = 64
	// bodySize is about an e-mail job.
	bodySize = 512
	app      = "bench"
	queue    = "jobs"
	// traceParent is what a sampled-out request's context injects.
	traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
)

var (
	physical = contract.QueueName(app, queue)
	body     = make([]byte, bodySize)
)

// rawFirst runs each broker's raw variants before the kit's. run.sh
// alternates it from round to round, so that neither side always runs
// first (on a broker just warmed up, or in whatever the machine's other
// jobs were doing at that moment).
var rawFirst = flag.Bool("rawfirst", false, "run the raw variants before the kit's")

// inOrder runs kit and raw in the order rawFirst says.
func inOrder(kit, raw func()) {
	if *rawFirst {
		raw()
		kit()
		return
	}
	kit()
	raw()
}

// kitTracer is the tracer provider a kit service without an OTLP endpoint
// has: it mints (unsampled) producer spans.
var kitTracer *sdktrace.TracerProvider

func TestMain(m *testing.M) {
	// The kit's publish path as services run it: W3C propagation and the
	// service's SDK tracer provider.
	tracing.Install()
	tp, _, err := tracing.NewProvider(context.Background(), func(string) string { return "" }, tracing.Resource{Service: "bench"})
	if err != nil {
		panic(err)
	}
	kitTracer = tp
	brokertest.Main(m)
}

// connectKit connects the kit with its development topology (one quorum
// queue on RabbitMQ, the app's stream on NATS) and the bench's window.
func connectKit(b *testing.B, kind, url string) messaging.Broker {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	br, err := messaging.Connect(ctx, messaging.Config{
		Kind:            kind,
		URL:             url,
		App:             app,
		Queues:          map[string]string{queue: physical},
		DeclareTopology: true,
		ConfirmWindow:   window,
		TracerProvider:  kitTracer,
	})
	if err != nil {
		b.Fatalf("connect: %v", err)
	}
	b.Cleanup(func() { _ = br.Close(context.Background()) })
	return br
}

// processCPU is the CPU time this process has used. Reported per message
// next to throughput because this machine is shared: wall-clock throughput
// swings with the neighbours' load, CPU per message much less. The embedded
// NATS server runs in this process, so on NATS it includes the server's
// work; RabbitMQ runs in its own process, so there it is the client's only.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure times b.N messages sent by publish and reports msgs/s and CPU
// microseconds per message.
func measure(b *testing.B, publish func()) {
	b.Helper()
	cpu := processCPU()
	b.ResetTimer()
	publish()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(processCPU()-cpu)/float64(time.Microsecond)/float64(b.N), "cpu-us/msg")
}

// warmUp sends a few thousand messages before the first measured run, so
// that a freshly started broker's first queue writes are not charged to
// whichever variant happens to run first.
func warmUp(b *testing.B, br messaging.Broker) {
	b.Helper()
	for range 2000 {
		if _, err := br.Publish(context.Background(), queue, body); err != nil {
			b.Fatalf("warm up: %v", err)
		}
	}
}

// benchKit measures the kit's two publish paths, Publish and PublishBatch,
// each on an emptied queue.
func benchKit(b *testing.B, kit messaging.Broker, purge func()) {
	b.Run("kit", func(b *testing.B) {
		purge()
		measure(b, func() { publishKit(b, kit) })
	})
	b.Run("kit-batch", func(b *testing.B) {
		purge()
		measure(b, func() { publishKitBatch(b, kit) })
	})
}

// publishKit publishes b.N messages from window goroutines, since Publish
// returns only once its message is confirmed: the kit keeps the same
// number of messages in flight as the raw side's confirm window.
func publishKit(b *testing.B, br messaging.Broker) {
	callers(b, func() error {
		_, err := br.Publish(context.Background(), queue, body)
		return err
	})
}

// publishKitBatch publishes b.N messages with one PublishBatch call: the
// kit keeps up to window of them awaiting confirmation, as the raw loops do.
func publishKitBatch(b *testing.B, br messaging.Broker) {
	bp, ok := br.(messaging.BatchPublisher)
	if !ok {
		b.Fatalf("%T does not implement messaging.BatchPublisher", br)
	}
	msgs := make([]messaging.Outgoing, b.N)
	for i := range msgs {
		msgs[i].Body = body
	}
	if _, err := bp.PublishBatch(context.Background(), queue, msgs); err != nil {
		b.Fatal(err)
	}
}

// callers runs publish b.N times from window goroutines.
func callers(b *testing.B, publish func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range window {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := publish(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkRabbitMQ(b *testing.B) {
	r := brokertest.SharedRabbitMQ(b)
	kit := connectKit(b, contract.BrokerRabbitMQ, r.AMQPURL)

	conn, err := amqp.Dial(r.AMQPURL)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	admin, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	purge := func() {
		if _, err := admin.QueuePurge(physical, false); err != nil {
			b.Fatal(err)
		}
	}

	warmUp(b, kit)
	inOrder(func() { benchKit(b, kit, purge) }, func() { rawRabbitMQ(b, conn, purge) })
}

// rawRabbitMQ measures the raw amqp091-go variants.
func rawRabbitMQ(b *testing.B, conn *amqp.Connection, purge func()) {
	// The raw library's idiomatic fast path: one goroutine publishing
	// persistent messages on a confirm channel, with up to window deferred
	// confirmations outstanding, awaited in order by a second goroutine.
	// "raw" sends bare messages; "raw-same-message" sends what the kit
	// sends (mandatory, message id in the property and a header, trace
	// context, timestamp, app id), to tell the wrapper's cost from the
	// message's.
	for _, same := range []bool{false, true} {
		name := "raw"
		if same {
			name = "raw-same-message"
		}
		b.Run(name, func(b *testing.B) {
			purge()
			ch, err := conn.Channel()
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = ch.Close() }()
			if err := ch.Confirm(false); err != nil {
				b.Fatal(err)
			}
			measure(b, func() {
				pending := make(chan *amqp.DeferredConfirmation, window-1)
				var nacks atomic.Int64
				waited := make(chan struct{})
				go func() {
					defer close(waited)
					for dc := range pending {
						if ok, err := dc.WaitContext(context.Background()); err != nil || !ok {
							nacks.Add(1)
						}
					}
				}()
				for range b.N {
					msg := amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}
					if same {
						id := uuid.NewString()
						msg.MessageId, msg.Timestamp, msg.AppId = id, time.Now(), app
						msg.Headers = amqp.Table{contract.HeaderMessageID: id, contract.HeaderTraceParent: traceParent}
					}
					dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(),
						contract.ExchangeName(physical), contract.RoutingKey(physical), same, false, msg)
					if err != nil {
						b.Fatal(err)
					}
					pending <- dc
				}
				close(pending)
				<-waited
				if n := nacks.Load(); n > 0 {
					b.Fatalf("%d messages not confirmed", n)
				}
			})
		})
	}

	// "raw-64-callers": the raw library used the way the kit is called, by
	// 64 goroutines that each publish the kit's message on the shared
	// confirm channel and wait for their own confirmation.
	b.Run("raw-64-callers", func(b *testing.B) {
		purge()
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = ch.Close() }()
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		measure(b, func() {
			callers(b, func() error {
				id := uuid.NewString()
				dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(),
					contract.ExchangeName(physical), contract.RoutingKey(physical), true, false,
					amqp.Publishing{
						DeliveryMode: amqp.Persistent, Body: body, MessageId: id, Timestamp: time.Now(), AppId: app,
						Headers: amqp.Table{contract.HeaderMessageID: id, contract.HeaderTraceParent: traceParent},
					})
				if err != nil {
					return err
				}
				if ok, err := dc.WaitContext(context.Background()); err != nil || !ok {
					return fmt.Errorf("not confirmed: %v", err)
				}
				return nil
			})
		})
	})
}

func BenchmarkNATS(b *testing.B) {
	// A benchmark with sub-benchmarks runs once, so this server serves
	// every round of both.
	natsSrv := brokertest.StartNATS(b)
	kit := connectKit(b, contract.BrokerNATS, natsSrv.URL)

	nc, err := nats.Connect(natsSrv.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	var asyncErrs atomic.Int64
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(window),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { asyncErrs.Add(1) }))
	if err != nil {
		b.Fatal(err)
	}
	purge := func() {
		s, err := js.Stream(context.Background(), contract.StreamName(app))
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Purge(context.Background()); err != nil {
			b.Fatal(err)
		}
	}

	warmUp(b, kit)
	inOrder(func() { benchKit(b, kit, purge) }, func() { rawNATS(b, js, purge, &asyncErrs) })
}

// rawNATS measures the raw nats.go/jetstream variants; asyncErrs counts
// the PubAcks that came back as errors.
func rawNATS(b *testing.B, js jetstream.JetStream, purge func(), asyncErrs *atomic.Int64) {
	// The raw library's idiomatic fast path: PublishAsync with at most
	// window PubAcks pending, then wait for all of them. "raw" sends bare
	// messages; "raw-same-message" sends what the kit sends (Nats-Msg-Id,
	// which the server de-duplicates on, the expected stream, trace
	// context), to tell the wrapper's cost from the message's.
	for _, same := range []bool{false, true} {
		name := "raw"
		if same {
			name = "raw-same-message"
		}
		b.Run(name, func(b *testing.B) {
			purge()
			asyncErrs.Store(0)
			measure(b, func() {
				for range b.N {
					msg := &nats.Msg{Subject: contract.Subject(physical), Data: body}
					// A full window waits for a slot as long as the kit's
					// does (its context), not PublishAsync's default 200 ms,
					// which a loaded machine exceeds ("stalled with too many
					// outstanding async published messages").
					opts := []jetstream.PublishOpt{jetstream.WithStallWait(time.Minute)}
					if same {
						msg.Header = nats.Header{contract.HeaderTraceParent: []string{traceParent}}
						opts = append(opts, jetstream.WithMsgID(uuid.NewString()), jetstream.WithExpectStream(contract.StreamName(app)))
					}
					if _, err := js.PublishMsgAsync(msg, opts...); err != nil {
						b.Fatal(err)
					}
				}
				select {
				case <-js.PublishAsyncComplete():
				case <-time.After(time.Minute):
					b.Fatal("PubAcks still pending after a minute")
				}
			})
			if n := asyncErrs.Load(); n > 0 {
				b.Fatalf("%d messages not acknowledged", n)
			}
		})
	}

	// "raw-64-callers": the raw library used the way the kit is called, by
	// 64 goroutines that each publish the kit's message and wait for its
	// PubAck.
	b.Run("raw-64-callers", func(b *testing.B) {
		purge()
		measure(b, func() {
			callers(b, func() error {
				msg := &nats.Msg{Subject: contract.Subject(physical), Data: body,
					Header: nats.Header{contract.HeaderTraceParent: []string{traceParent}}}
				_, err := js.PublishMsg(context.Background(), msg,
					jetstream.WithMsgID(uuid.NewString()), jetstream.WithExpectStream(contract.StreamName(app)))
				return err
			})
		})
	})
}
