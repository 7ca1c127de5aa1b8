package kit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
)

// connectBroker dials the configured broker with the kit's logger and the
// message metrics on the service's registry. messaging.Connect retries
// until the broker answers or ctx ends; it gives up early only on a
// configuration error.
func connectBroker(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer, tp trace.TracerProvider) (messaging.Broker, error) {
	var name []string
	for _, n := range []string{cfg.App, cfg.Service, cfg.PodName} {
		if n != "" {
			name = append(name, n)
		}
	}
	var inbox string
	if cfg.BrokerKind == contract.BrokerNATS && cfg.Service != "" {
		// The operator lets a service subscribe to its own inbox only.
		inbox = contract.InboxPrefix(cfg.Service)
	}
	b, err := messaging.Connect(ctx, messaging.Config{
		Kind:            cfg.BrokerKind,
		URL:             cfg.BrokerURL,
		CredentialsFile: cfg.BrokerCredentialsFile,
		InboxPrefix:     inbox,
		App:             cfg.App,
		Queues:          cfg.Queues,
		DeclareTopology: cfg.DevDeclareTopology,
		ClientName:      strings.Join(name, "/"),
		Logger:          log,
		Metrics:         messaging.NewMetrics(reg),
		TracerProvider:  tp,
	})
	if err != nil {
		return nil, fmt.Errorf("kit: connect to %s: %w", cfg.BrokerKind, err)
	}
	return b, nil
}

// errConnecting is what readiness and a cancelled Publish report while the
// first connection is still being made.
var errConnecting = errors.New("connecting to the broker")

// pendingBroker is the Broker a Service hands out while it connects in the
// background. Connecting in New would keep the admin listener from serving
// until the broker answered: during a broker outage /livez would go
// unanswered and the kubelet would restart pods that are fine. With it,
// the service starts, /readyz says "connecting to the broker", Publish and
// Consume wait for the connection (within their context), and everything
// is passed straight through once it is up.
type pendingBroker struct {
	done   chan struct{} // closed once connecting ended
	b      messaging.Broker
	err    error              // set when connecting failed
	cancel context.CancelFunc // stops connecting
}

// connectInBackground starts connecting with connect under ctx.
func connectInBackground(ctx context.Context, connect func(context.Context) (messaging.Broker, error)) *pendingBroker {
	ctx, cancel := context.WithCancel(ctx)
	p := &pendingBroker{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(p.done)
		p.b, p.err = connect(ctx)
	}()
	return p
}

// wait returns the connected broker once there is one.
func (p *pendingBroker) wait(ctx context.Context) (messaging.Broker, error) {
	select {
	case <-p.done:
		return p.b, p.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", errConnecting, ctx.Err())
	}
}

// failed is closed when connecting has ended; err then tells whether it
// failed. Run watches it so a service whose settings can never work (a
// malformed URL, refused credentials) exits with a message naming them
// instead of idling unready forever.
func (p *pendingBroker) failed() <-chan struct{} { return p.done }

// Publish implements messaging.Publisher.
func (p *pendingBroker) Publish(ctx context.Context, queue string, body []byte) (string, error) {
	b, err := p.wait(ctx)
	if err != nil {
		return "", fmt.Errorf("publish to queue %q: %w", queue, err)
	}
	return b.Publish(ctx, queue, body)
}

// PublishBatch implements messaging.BatchPublisher, so callers holding the
// kit's broker (the outbox relay) get the driver's pipelined batch publish
// rather than one confirmed round trip per message.
func (p *pendingBroker) PublishBatch(ctx context.Context, queue string, msgs []messaging.Outgoing) ([]string, error) {
	b, err := p.wait(ctx)
	if err != nil {
		return make([]string, len(msgs)), fmt.Errorf("publish to queue %q: %w", queue, err)
	}
	return messaging.PublishBatch(ctx, b, queue, msgs)
}

var _ messaging.BatchPublisher = (*pendingBroker)(nil)

// Consume implements messaging.Broker.
func (p *pendingBroker) Consume(ctx context.Context, queue string, handler messaging.Handler, opts messaging.ConsumeOptions) error {
	b, err := p.wait(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // cancelled before the broker was ever reached
		}
		return err
	}
	return b.Consume(ctx, queue, handler, opts)
}

// Ready implements messaging.Broker without blocking.
func (p *pendingBroker) Ready(ctx context.Context) error {
	select {
	case <-p.done:
		if p.err != nil {
			return p.err
		}
		return p.b.Ready(ctx)
	default:
		return errConnecting
	}
}

// Close stops connecting and closes the broker if there is one.
func (p *pendingBroker) Close(ctx context.Context) error {
	p.cancel()
	select {
	case <-p.done:
	case <-ctx.Done():
		return fmt.Errorf("wait for the broker connection attempt to stop: %w", ctx.Err())
	}
	if p.b == nil {
		return nil
	}
	return p.b.Close(ctx)
}
