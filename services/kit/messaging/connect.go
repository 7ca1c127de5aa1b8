package messaging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/contract"
)

// DefaultConfirmWindow is the number of published messages that may await
// their broker confirmation at once when Config.ConfirmWindow is zero.
const DefaultConfirmWindow = 256

// Config selects and tunes a driver. Kind, URL and Queues come from the
// environment the operator sets (contract.EnvBrokerKind, contract.EnvBrokerURL
// and one contract.QueueEnv variable per queue).
type Config struct {
	// Kind is contract.BrokerRabbitMQ or contract.BrokerNATS.
	Kind string
	// URL is the service's own broker URL, credentials included
	// (amqp://user:pass@host:5672/vhost or nats://user:pass@host:4222).
	URL string
	// App is the MicroserviceApp's name; on NATS it names the stream
	// (contract.StreamName).
	App string
	// Queues maps every logical queue the service publishes to or consumes
	// from to its physical name. Publishing to or consuming from a logical
	// name that is not here is an error: it means the service and its
	// MicroserviceApp disagree.
	Queues map[string]string
	// CredentialsFile is the path of a NATS credentials file: a user JWT and
	// its nkey seed, as the operator writes them into the service's
	// connection Secret (decentralised JWT auth). nats.go reads it at every
	// connect and reconnect, so a rotated file is picked up. NATS only;
	// empty means BROKER_URL alone authenticates.
	CredentialsFile string
	// InboxPrefix replaces "_INBOX" as the prefix of the subjects replies
	// come back on (publish acks, pulled messages, API responses). NATS
	// only. The operator lets each service subscribe to its own prefix
	// only, so no service can read the replies meant for another; empty
	// keeps nats.go's default.
	InboxPrefix string
	// DeclareTopology makes Connect declare the topology the operator would
	// (exchanges, queues and dead-letter queues on RabbitMQ; the stream on
	// NATS, and each durable consumer when Consume starts). It needs
	// configure permission, which services never get in a cluster, so it is
	// for local runs and tests only. Off by default.
	DeclareTopology bool
	// ConfirmWindow bounds the messages published and not yet confirmed,
	// across all Publish and PublishBatch calls (default
	// DefaultConfirmWindow); further messages wait for a slot.
	ConfirmWindow int
	// ClientName names the connection in the broker's UI (default App).
	ClientName string
	// Logger receives connection state changes, retries and dead letters
	// (default: discard).
	Logger *slog.Logger
	// Metrics records published and consumed messages (default: none).
	Metrics *Metrics
	// TracerProvider starts the publish and process spans (default: the
	// global provider). The kit passes the service's own, which exports
	// them when OTLP is configured.
	TracerProvider trace.TracerProvider
	// AuthRetryFor is how long Connect keeps retrying while the broker
	// refuses the credentials before it returns an ErrConfig error
	// (default DefaultAuthRetryFor): long enough for the operator to finish
	// creating the service's user, short enough that a wrong password ends
	// the process with a message naming BROKER_URL.
	AuthRetryFor time.Duration
}

// ErrClosed is returned by Publish and Consume once Close was called.
var ErrClosed = errors.New("messaging: broker closed")

// Connect dials the broker named by cfg.Kind and declares the development
// topology if asked to, retrying both with backoff for as long as ctx lives:
// a broker that is down, slow or restarting is waited for. It returns
// early only with an error wrapping ErrConfig, for settings no retry can fix
// (see AuthRetryFor). The Broker it returns reconnects by itself after later
// outages.
func Connect(ctx context.Context, cfg Config) (Broker, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("messaging: broker URL is empty (set %s)", contract.EnvBrokerURL)
	}
	if cfg.App == "" {
		return nil, errors.New("messaging: app name is empty")
	}
	for logical, physical := range cfg.Queues {
		if logical == "" || physical == "" {
			return nil, fmt.Errorf("messaging: queue %q maps to %q: names must not be empty", logical, physical)
		}
	}
	if cfg.ConfirmWindow <= 0 {
		cfg.ConfirmWindow = DefaultConfirmWindow
	}
	if cfg.AuthRetryFor <= 0 {
		cfg.AuthRetryFor = DefaultAuthRetryFor
	}
	if cfg.ClientName == "" {
		cfg.ClientName = cfg.App
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch cfg.Kind {
	case contract.BrokerRabbitMQ:
		return connectRabbitMQ(ctx, cfg)
	case contract.BrokerNATS:
		return connectNATS(ctx, cfg)
	default:
		return nil, fmt.Errorf("messaging: unknown broker kind %q (set %s to %q or %q)",
			cfg.Kind, contract.EnvBrokerKind, contract.BrokerRabbitMQ, contract.BrokerNATS)
	}
}

// physical resolves a logical queue name.
func (c *Config) physical(queue string) (string, error) {
	p, ok := c.Queues[queue]
	if !ok {
		return "", fmt.Errorf("messaging: unknown queue %q: no physical name configured (set %s)", queue, contract.QueueEnv(queue))
	}
	return p, nil
}

// physicalQueues returns the configured physical names in a stable order, so
// declarations and logs are deterministic.
func (c *Config) physicalQueues() []string {
	out := make([]string, 0, len(c.Queues))
	for _, p := range c.Queues {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
