// Package natsbroker is the operator's NATS JetStream admin driver, the
// counterpart of package broker's RabbitMQ client for the same
// broker.Topology.
//
// Auth is NATS' decentralised JWT model (nats-io/jwt/v2, nkeys): the server
// trusts an operator key; the operator signs one account JWT per app and
// pushes it to the server's resolver through the system account; each
// service gets a user whose JWT is signed by a signing key of that account.
// Every service has its own scoped signing key (jwt.UserScope): the scope,
// which lives in the account JWT, holds the service's permissions, and the
// user JWT holds none. So the permissions are in one document the operator
// compares and repairs at every Declare, and rotating a service's
// credentials (a new scoped key) cuts off every user signed by the old one.
//
// Topology: one stream per app (contract.StreamName) with work-queue
// retention holding every queue's subject and dead-letter subject, and one
// durable pull consumer per queue, configured as the service kit configures
// them when it declares its own topology.
//
// Like package broker, the package is a pure settings generator (Generate)
// and a client (NATS) that makes a server match the settings.
package natsbroker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
)

// Kinds of NATS entities in the broker.Change values Declare returns.
const (
	KindAccount  broker.Kind = "account"
	KindStream   broker.Kind = "stream"
	KindConsumer broker.Kind = "consumer"
)

// AckWait is the AckWait of every consumer: the kit's own (it declares its
// consumers with 30 s), so a message is redelivered after the same wait
// whoever declared the consumer. The kit keeps a slow handler's message in
// progress every half AckWait.
const AckWait = 30 * time.Second

// InboxPrefix is the prefix of the reply subjects a service's connection
// uses (messaging.Config.InboxPrefix): contract.InboxPrefix, shared with
// the kit so the two never disagree. Pulled messages, publish acks and API
// responses all come back on it, so a service that may subscribe only to
// its own prefix can never read another's replies; with NATS' default
// "_INBOX." every service could read the messages pulled by any other.
func InboxPrefix(service string) string { return contract.InboxPrefix(service) }

// Settings is the desired state of one app on a NATS system, computed by
// Generate without I/O.
type Settings struct {
	// App names the account.
	App string `json:"app"`
	// Stream is the app's stream.
	Stream jetstream.StreamConfig `json:"stream"`
	// Consumers are the durable consumers, one per queue, by queue name.
	Consumers []jetstream.ConsumerConfig `json:"consumers"`
	// Users are the permissions of each service's scoped signing key.
	Users []User `json:"users"`
}

// User is what a service may do: the template of its scoped signing key.
type User struct {
	// Service is the service's name, also the scope's role.
	Service string `json:"service"`
	// Name is the user name its JWT carries (broker.UserName).
	Name string `json:"name"`
	// Permissions allow exactly what the kit calls, see Generate.
	Permissions jwt.Permissions `json:"permissions"`
}

// Generate computes the desired state of t on NATS. It is pure.
//
// Per queue q (physical name p): subjects contract.Subject(p) and
// contract.DeadLetterSubject(p) in the stream, and a durable consumer
// contract.ConsumerName(p) filtering contract.Subject(p), with explicit
// acks, AckWait, and MaxDeliver = maxDeliveries + 1 (the kit dead-letters at
// maxDeliveries itself; the extra delivery is its backstop for a handler
// that crashed the process on the last attempt; maxDeliveries 0 means the
// kit's default, messaging.DefaultMaxDeliveries).
//
// The stream holds every queue, so its limits are the queues': messageTTL
// becomes the stream's MaxAge and maxLength its MaxMsgsPerSubject with
// DiscardNew per subject (a full queue refuses new messages, as RabbitMQ's
// reject-publish does). JetStream has no per-subject age limit, so every
// queue of an app must set the same messageTTL, and for the same reason the
// same maxLength; Generate refuses different values naming the field. Both
// limits also apply to the dead-letter subjects.
//
// Per service that publishes or consumes, permissions and nothing more:
//   - publish: the subjects of the queues it publishes to; for each queue it
//     consumes, its dead-letter subject (the kit stores a dead letter
//     itself), $JS.API.CONSUMER.INFO and $JS.API.CONSUMER.MSG.NEXT of the
//     queue's consumer, and $JS.ACK.<stream>.<consumer>.> (ack, nak, term,
//     in progress);
//   - subscribe: its own inbox, InboxPrefix(service).>;
//   - no other $JS.API subject: it can neither create, change nor delete a
//     stream or consumer, nor read another queue's consumer.
func Generate(t broker.Topology) (Settings, error) {
	if err := t.Validate(); err != nil {
		return Settings{}, err
	}
	if err := validateLimits(t.Queues); err != nil {
		return Settings{}, err
	}
	replicas := max(t.Replicas, 1)
	stream := contract.StreamName(t.App)
	s := Settings{
		App: t.App,
		Stream: jetstream.StreamConfig{
			Name:      stream,
			Retention: jetstream.WorkQueuePolicy,
			Storage:   jetstream.FileStorage,
			Replicas:  replicas,
			Discard:   jetstream.DiscardOld,
			// The server's default, spelled out so that Declare compares it.
			Duplicates: 2 * time.Minute,
		},
		Consumers: []jetstream.ConsumerConfig{},
		Users:     []User{},
	}
	queues := slices.Clone(t.Queues)
	slices.SortFunc(queues, func(a, b broker.QueueSpec) int { return strings.Compare(a.Name, b.Name) })
	for _, q := range queues {
		p := contract.QueueName(t.App, q.Name)
		s.Stream.Subjects = append(s.Stream.Subjects, contract.Subject(p), contract.DeadLetterSubject(p))
		maxDeliveries := int(q.MaxDeliveries)
		if maxDeliveries <= 0 {
			maxDeliveries = messaging.DefaultMaxDeliveries
		}
		s.Consumers = append(s.Consumers, jetstream.ConsumerConfig{
			Durable:       contract.ConsumerName(p),
			FilterSubject: contract.Subject(p),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       AckWait,
			MaxDeliver:    maxDeliveries + 1,
			Replicas:      replicas,
		})
	}
	if len(queues) > 0 {
		if ttl := queues[0].MessageTTL; ttl > 0 {
			s.Stream.MaxAge = ttl
		}
		if n := queues[0].MaxLength; n > 0 {
			s.Stream.MaxMsgsPerSubject = n
			s.Stream.Discard = jetstream.DiscardNew
			s.Stream.DiscardNewPerSubject = true
		}
	}

	services := slices.Clone(t.Services)
	slices.SortFunc(services, func(a, b broker.ServicePerms) int { return strings.Compare(a.Name, b.Name) })
	for _, svc := range services {
		if len(svc.Publishes)+len(svc.Consumes) == 0 {
			continue
		}
		var pub []string
		for _, q := range sortedUnique(svc.Publishes) {
			pub = append(pub, contract.Subject(contract.QueueName(t.App, q)))
		}
		for _, q := range sortedUnique(svc.Consumes) {
			p := contract.QueueName(t.App, q)
			consumer := contract.ConsumerName(p)
			pub = append(pub,
				contract.DeadLetterSubject(p),
				"$JS.API.CONSUMER.INFO."+stream+"."+consumer,
				"$JS.API.CONSUMER.MSG.NEXT."+stream+"."+consumer,
				"$JS.ACK."+stream+"."+consumer+".>",
			)
		}
		slices.Sort(pub)
		s.Users = append(s.Users, User{
			Service: svc.Name,
			Name:    broker.UserName(t.App, svc.Name),
			Permissions: jwt.Permissions{
				Pub: jwt.Permission{Allow: slices.Compact(pub)},
				Sub: jwt.Permission{Allow: []string{InboxPrefix(svc.Name) + ".>"}},
			},
		})
	}
	return s, nil
}

// validateLimits refuses per-queue limits that one stream cannot express.
func validateLimits(queues []broker.QueueSpec) error {
	var errs []error
	for i, q := range queues[min(1, len(queues)):] {
		first := queues[0]
		if q.MessageTTL != first.MessageTTL {
			errs = append(errs, fmt.Errorf("queues[%d].messageTTL: %s differs from queues[0]'s %s; on NATS all queues of an app share one stream, whose MaxAge is the one TTL", i+1, q.MessageTTL, first.MessageTTL))
		}
		if q.MaxLength != first.MaxLength {
			errs = append(errs, fmt.Errorf("queues[%d].maxLength: %d differs from queues[0]'s %d; on NATS all queues of an app share one stream, whose MaxMsgsPerSubject is the one limit", i+1, q.MaxLength, first.MaxLength))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", broker.ErrInvalidTopology, errors.Join(errs...))
	}
	return nil
}

func sortedUnique(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return slices.Compact(out)
}
