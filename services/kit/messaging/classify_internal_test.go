package messaging

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name     string
		classify func(error) failure
		err      error
		want     failure
	}{
		{"amqp refused credentials", classifyRabbit, amqp.ErrCredentials, refused},
		{"amqp vhost not allowed yet", classifyRabbit, fmt.Errorf("open: %w", &amqp.Error{Code: amqp.NotAllowed, Server: true}), refused},
		{"amqp dial refused", classifyRabbit, errors.New("dial tcp: connection refused"), transient},
		{"amqp handshake timeout", classifyRabbit, &amqp.Error{Code: amqp.FrameError, Reason: "i/o timeout"}, transient},
		{"amqp declare without configure permission", classifyRabbit, &declareError{what: "queue q", err: &amqp.Error{Code: amqp.AccessRefused, Server: true}}, misconfigured},
		{"amqp declare with other arguments", classifyRabbit, &declareError{what: "queue q", err: &amqp.Error{Code: amqp.PreconditionFailed, Server: true}}, misconfigured},
		{"amqp declare cut by a restart", classifyRabbit, &declareError{what: "queue q", err: amqp.ErrClosed}, transient},
		{"nats authorization", classifyNATS, nats.ErrAuthorization, refused},
		{"nats revoked", classifyNATS, fmt.Errorf("connect: %w", nats.ErrAuthRevoked), refused},
		{"nats no servers", classifyNATS, nats.ErrNoServers, transient},
		{"jetstream timeout", classifyNATS, fmt.Errorf("declare consumer: %w", context.DeadlineExceeded), transient},
		{"jetstream not ready", classifyNATS, &jetstream.APIError{Code: 503, ErrorCode: 10008}, transient},
		{"jetstream subjects overlap", classifyNATS, fmt.Errorf("declare stream: %w", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamNameInUse}), misconfigured},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.classify(tc.err); got != tc.want {
				t.Errorf("classify(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}
