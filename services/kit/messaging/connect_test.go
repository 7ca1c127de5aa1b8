package messaging_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
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
