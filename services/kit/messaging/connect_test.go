package messaging_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/brokertest"
)

// closedPort returns a local port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func TestConnectErrors(t *testing.T) {
	down := closedPort(t)
	for _, tc := range []struct {
		name string
		cfg  messaging.Config
		// want are substrings of the error; secret must not appear in it.
		want   []string
		secret string
	}{
		{name: "unknown kind", cfg: messaging.Config{Kind: "kafka", URL: "x://y", App: "a"}, want: []string{`"kafka"`, contract.EnvBrokerKind}},
		{name: "no url", cfg: messaging.Config{Kind: contract.BrokerNATS, App: "a"}, want: []string{contract.EnvBrokerURL}},
		{name: "no app", cfg: messaging.Config{Kind: contract.BrokerNATS, URL: "nats://h:4222"}, want: []string{"app"}},
		{name: "empty physical name", cfg: messaging.Config{Kind: contract.BrokerNATS, URL: "nats://h:4222", App: "a", Queues: map[string]string{"emails": ""}}, want: []string{`"emails"`}},
		{
			name:   "amqp url with a bad scheme",
			cfg:    messaging.Config{Kind: contract.BrokerRabbitMQ, URL: "http://u:hunter2@h/", App: "a"},
			want:   []string{contract.EnvBrokerURL, "AMQP"},
			secret: "hunter2",
		},
		{
			name:   "unparsable amqp url",
			cfg:    messaging.Config{Kind: contract.BrokerRabbitMQ, URL: "amqp://u:hunter2%zz@h/", App: "a"},
			want:   []string{contract.EnvBrokerURL},
			secret: "hunter2",
		},
		{
			name:   "nats url with a bad scheme",
			cfg:    messaging.Config{Kind: contract.BrokerNATS, URL: "http://u:hunter2@h:4222", App: "a"},
			want:   []string{contract.EnvBrokerURL, `"http"`},
			secret: "hunter2",
		},
		{
			name: "rabbitmq down",
			cfg:  messaging.Config{Kind: contract.BrokerRabbitMQ, URL: "amqp://u:p@" + down + "/", App: "a"},
			want: []string{"deadline exceeded", "connection refused"},
		},
		{
			name: "nats down",
			cfg:  messaging.Config{Kind: contract.BrokerNATS, URL: "nats://" + down, App: "a"},
			want: []string{"deadline exceeded", "no servers"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			tc.cfg.Logger = testLogger(t)
			b, err := messaging.Connect(ctx, tc.cfg)
			if err == nil {
				_ = b.Close(context.Background())
				t.Fatal("Connect succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

// withHost returns rawURL with its host:port replaced by hostport.
func withHost(t *testing.T, rawURL, hostport string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostport
	return u.String()
}

// TestConnectWaitsOutAStalledBroker: a broker that goes silent, before
// the handshake or in the middle of declaring the topology, for longer
// than any timeout of the driver, is waited for: Connect neither fails nor
// gives up, and once the broker answers it returns a broker that works,
// its development topology declared.
func TestConnectWaitsOutAStalledBroker(t *testing.T) {
	forEachBroker(t, false, func(t *testing.T, e env) {
		target, err := url.Parse(e.url)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			// stall stalls the proxy, at once or at a marker.
			stall func(p *brokertest.Proxy, app string)
			// stalledFor is longer than every timeout on the way: nats.go's
			// 2 s connect timeout, JetStream's 5 s API timeout and the 5 s
			// AMQP dial timeout from the start; while declaring, AMQP calls
			// have no timeout of their own, and amqp091-go gives up on a
			// silent broker after three 5 s heartbeats.
			stalledFor time.Duration
		}{
			{"from the start", func(p *brokertest.Proxy, _ string) { p.Stall() }, 7 * time.Second},
			{"while declaring", func(p *brokertest.Proxy, app string) {
				if e.kind == contract.BrokerNATS {
					// The stream is declared; its consumer's create times
					// out, as in a server restart.
					p.StallWhenClientSends("$JS.API.CONSUMER.CREATE")
				} else {
					p.StallWhenClientSends(contract.DeadLetterExchangeName(contract.QueueName(app, "jobs")))
				}
			}, 17 * time.Second},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				proxy := brokertest.StartProxy(t, target.Host, false)
				app := newApp(t)
				tc.stall(proxy, app)
				connectThroughStall(t, e, proxy, app, tc.stalledFor)
			})
		}
	})
}

// connectThroughStall connects through proxy, which stalls, lets the stall
// last stalledFor, asserting Connect has not returned, then resumes the
// proxy and checks the broker Connect returns round-trips a message.
func connectThroughStall(t *testing.T, e env, proxy *brokertest.Proxy, app string, stalledFor time.Duration) {
	t.Helper()
	type connected struct {
		b   messaging.Broker
		err error
	}
	done := make(chan connected, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		b, err := messaging.Connect(ctx, messaging.Config{
			Kind: e.kind, URL: withHost(t, e.url, proxy.Addr), App: app,
			Queues: physicalNames(app, "jobs"), DeclareTopology: true, Logger: testLogger(t),
		})
		done <- connected{b, err}
	}()

	select {
	case c := <-done:
		if c.b != nil {
			_ = c.b.Close(context.Background())
		}
		t.Fatalf("Connect returned while the broker was stalled: %v", c.err)
	case <-time.After(stalledFor):
	}
	if proxy.Accepts() < 2 {
		t.Fatalf("the driver tried %d time(s) in %s, want it to retry", proxy.Accepts(), stalledFor)
	}
	proxy.Resume()

	var c connected
	select {
	case c = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Connect did not return within 30s of the broker answering again")
	}
	if c.err != nil {
		t.Fatalf("Connect = %v after the broker came back", c.err)
	}
	t.Cleanup(func() { _ = c.b.Close(context.Background()) })
	got := make(chan string, 1)
	consume(t, c.b, "jobs", func(_ context.Context, m messaging.Message) error {
		got <- string(m.Body)
		return nil
	}, messaging.ConsumeOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := c.b.Publish(ctx, "jobs", []byte("after the stall")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case body := <-got:
		if body != "after the stall" {
			t.Errorf("consumed %q", body)
		}
	case <-ctx.Done():
		t.Fatal("the message published after the stall was not consumed")
	}
}

// TestConnectGivesUpOnRefusedCredentials: credentials the broker keeps
// refusing are a configuration error, not an outage: after AuthRetryFor
// Connect returns an error wrapping ErrConfig that names BROKER_URL and
// does not leak the password.
func TestConnectGivesUpOnRefusedCredentials(t *testing.T) {
	forEachBroker(t, false, func(t *testing.T, e env) {
		rawURL := e.url
		if e.kind == contract.BrokerNATS {
			rawURL = natsWithPassword(t, "courier", "right")
		}
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(u.User.Username()+"x", "hunter2")
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		start := time.Now()
		b, err := messaging.Connect(ctx, messaging.Config{
			Kind: e.kind, URL: u.String(), App: newApp(t), Logger: testLogger(t),
			AuthRetryFor: 500 * time.Millisecond,
		})
		if err == nil {
			_ = b.Close(context.Background())
			t.Fatal("Connect succeeded with wrong credentials")
		}
		if !errors.Is(err, messaging.ErrConfig) {
			t.Fatalf("Connect = %v, want an ErrConfig error", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("Connect gave up only when its context ended (%s): %v", time.Since(start), err)
		}
		for _, w := range []string{contract.EnvBrokerURL, "refused the credentials"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %q leaks the password", err)
		}
	})
}

// natsWithPassword starts a NATS server that accepts only user:password
// and returns its URL without credentials.
func natsWithPassword(t *testing.T, user, password string) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, Username: user, Password: password, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return "nats://" + user + "@" + srv.Addr().String()
}
