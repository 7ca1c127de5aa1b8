package broker

import (
	"regexp"
	"slices"
	"strings"

	"github.com/courier-dev/courier/services/kit/contract"
)

// Settings is the desired RabbitMQ state of one app, computed by Generate
// without any I/O. Every list is in the order Declare writes it.
type Settings struct {
	// VHost is the app's virtual host.
	VHost string `json:"vhost"`
	// Owner is recorded in the vhost's description (Topology.Owner).
	Owner string `json:"owner,omitempty"`
	// Exchanges are the direct exchanges in front of every queue and its
	// dead-letter queue.
	Exchanges []Exchange `json:"exchanges"`
	// Queues are the app's queues and their dead-letter queues.
	Queues []Queue `json:"queues"`
	// Bindings bind every queue to its exchange.
	Bindings []Binding `json:"bindings"`
	// Policies hold the mutable limits, one policy per queue that has any.
	Policies []Policy `json:"policies"`
	// Users are the services' users and the monitoring user.
	Users []User `json:"users"`
	// Permissions are the users' permissions in VHost.
	Permissions []Permission `json:"permissions"`
}

// Exchange is one exchange to declare.
type Exchange struct {
	// Name is the physical exchange name from the contract package.
	Name string `json:"name"`
	// Type is always "direct": one exchange per queue, keyed by routing key.
	Type string `json:"type"`
	// Durable exchanges survive a broker restart.
	Durable bool `json:"durable"`
}

// Queue is one queue to declare. Its Arguments are fixed at declaration
// (RabbitMQ refuses to redeclare a queue with different arguments), so they
// only hold what never changes: the type and where dead letters go.
type Queue struct {
	// Name is the physical queue name from the contract package.
	Name string `json:"name"`
	// Durable queues survive a broker restart (quorum queues always are).
	Durable bool `json:"durable"`
	// Arguments are x-queue-type and, on a queue that has one, its
	// dead-letter exchange and routing key.
	Arguments map[string]any `json:"arguments"`
	// DeletionPolicy is the policy of the logical queue it belongs to.
	DeletionPolicy DeletionPolicy `json:"deletionPolicy"`
}

// Binding binds a queue to an exchange with a routing key.
type Binding struct {
	// Source is the exchange.
	Source string `json:"source"`
	// Destination is the queue.
	Destination string `json:"destination"`
	// RoutingKey is contract.RoutingKey of the queue.
	RoutingKey string `json:"routingKey"`
}

// Policy is a RabbitMQ policy. Limits live in policies rather than queue
// arguments because a changed policy applies to the existing queue at once,
// while a changed argument would need the queue deleted and declared again.
type Policy struct {
	// Name is the physical name of the queue it applies to.
	Name string `json:"name"`
	// Pattern matches exactly that queue name (regex-escaped, anchored).
	Pattern string `json:"pattern"`
	// ApplyTo is "queues", so an exchange of the same name is not matched.
	ApplyTo string `json:"applyTo"`
	// Priority is 0: the pattern matches exactly one queue, so no other
	// Courier policy competes with it.
	Priority int `json:"priority"`
	// Definition holds message-ttl, max-length with overflow, and
	// delivery-limit, each only when set.
	Definition map[string]any `json:"definition"`
}

// User is a broker user; Service is empty for the monitoring user.
type User struct {
	// Name is UserName or MonitoringUserName.
	Name string `json:"name"`
	// Service is the service the user belongs to.
	Service string `json:"service,omitempty"`
	// Tags always include ManagedTag.
	Tags []string `json:"tags"`
}

// Permission is a user's configure, write and read permission in the vhost:
// regular expressions over exchange and queue names.
type Permission struct {
	// User is the user's name.
	User string `json:"user"`
	// Configure is always "^$": the operator declares everything.
	Configure string `json:"configure"`
	// Write matches the exchanges of the queues the service publishes to.
	Write string `json:"write"`
	// Read matches the queues the service consumes.
	Read string `json:"read"`
}

// Queue argument and policy keys, as RabbitMQ 3.10 names them.
const (
	argQueueType            = "x-queue-type"
	argDeadLetterExchange   = "x-dead-letter-exchange"
	argDeadLetterRoutingKey = "x-dead-letter-routing-key"

	policyMessageTTL    = "message-ttl"    // classic and quorum (quorum since 3.10)
	policyMaxLength     = "max-length"     // classic and quorum
	policyOverflow      = "overflow"       // quorum: drop-head or reject-publish only
	policyDeliveryLimit = "delivery-limit" // quorum only; classic queues ignore it

	// overflowRejectPublish makes a full queue refuse new messages with a
	// negative publisher confirm, which the kit's publisher retries with
	// backoff; the default, drop-head, would silently discard (dead-letter)
	// the oldest job instead. Both queue types support it.
	overflowRejectPublish = "reject-publish"
)

// matchNothing is the permission that matches no exchange or queue. Publishing
// to the default exchange is checked against the name "amq.default", so it
// does not match either.
const matchNothing = "^$"

// Generate computes the desired broker state of t. It is pure: the same
// topology always yields the same settings, in a stable order.
//
// Per logical queue q (physical name p = contract.QueueName(app, q)):
//   - a durable direct exchange contract.ExchangeName(p) and queue p bound to
//     it with contract.RoutingKey(p); services publish to the exchange, so a
//     write permission on it means "may publish to q" and nothing more;
//   - a dead-letter exchange contract.DeadLetterExchangeName(p) and queue
//     contract.DeadLetterQueueName(p), of the same type as p; p's arguments
//     send rejected, expired and over-delivered messages there;
//   - a policy named p holding the limits, if q has any.
//
// Per service that publishes or consumes: a user UserName(app, service) with
// no configure permission (the operator declares everything), write on
// exactly the exchanges of the queues it publishes to and read on exactly the
// queues it consumes. One more user, MonitoringUserName(app), may read the
// HTTP API of the vhost and nothing over AMQP.
func Generate(t Topology) (Settings, error) {
	if err := t.Validate(); err != nil {
		return Settings{}, err
	}
	s := Settings{
		VHost:       t.App,
		Owner:       t.Owner,
		Exchanges:   []Exchange{},
		Queues:      []Queue{},
		Bindings:    []Binding{},
		Policies:    []Policy{},
		Users:       []User{},
		Permissions: []Permission{},
	}
	queues := slices.Clone(t.Queues)
	slices.SortFunc(queues, func(a, b QueueSpec) int { return strings.Compare(a.Name, b.Name) })
	for _, q := range queues {
		p := contract.QueueName(t.App, q.Name)
		dlx, dlq := contract.DeadLetterExchangeName(p), contract.DeadLetterQueueName(p)
		dlKey := contract.RoutingKey(dlq)
		// Dead-letter entities come first so that a queue never exists
		// without the place its dead letters go to.
		s.Exchanges = append(s.Exchanges,
			Exchange{Name: dlx, Type: "direct", Durable: true},
			Exchange{Name: contract.ExchangeName(p), Type: "direct", Durable: true},
		)
		s.Queues = append(s.Queues,
			Queue{
				Name:           dlq,
				Durable:        true,
				Arguments:      map[string]any{argQueueType: string(q.Type)},
				DeletionPolicy: q.deletionPolicy(),
			},
			Queue{
				Name:    p,
				Durable: true,
				Arguments: map[string]any{
					argQueueType:            string(q.Type),
					argDeadLetterExchange:   dlx,
					argDeadLetterRoutingKey: dlKey,
				},
				DeletionPolicy: q.deletionPolicy(),
			},
		)
		s.Bindings = append(s.Bindings,
			Binding{Source: dlx, Destination: dlq, RoutingKey: dlKey},
			Binding{Source: contract.ExchangeName(p), Destination: p, RoutingKey: contract.RoutingKey(p)},
		)
		if def := policyDefinition(q); len(def) > 0 {
			s.Policies = append(s.Policies, Policy{
				Name:       p,
				Pattern:    exactly(p),
				ApplyTo:    "queues",
				Definition: def,
			})
		}
	}

	services := slices.Clone(t.Services)
	slices.SortFunc(services, func(a, b ServicePerms) int { return strings.Compare(a.Name, b.Name) })
	for _, svc := range services {
		if !svc.usesBroker() {
			continue
		}
		user := UserName(t.App, svc.Name)
		s.Users = append(s.Users, User{Name: user, Service: svc.Name, Tags: []string{ManagedTag}})
		s.Permissions = append(s.Permissions, Permission{
			User:      user,
			Configure: matchNothing,
			Write:     exactlyOneOf(physical(t.App, svc.Publishes, contract.ExchangeName)),
			Read:      exactlyOneOf(physical(t.App, svc.Consumes, func(p string) string { return p })),
		})
	}
	monitor := MonitoringUserName(t.App)
	s.Users = append(s.Users, User{Name: monitor, Tags: []string{MonitoringTag, ManagedTag}})
	// The HTTP API shows a "management" user only the vhosts it has a
	// permission entry in; an entry that matches nothing grants exactly that.
	s.Permissions = append(s.Permissions, Permission{
		User: monitor, Configure: matchNothing, Write: matchNothing, Read: matchNothing,
	})
	return s, nil
}

// policyDefinition is the policy of one queue as RabbitMQ 3.10 supports it.
func policyDefinition(q QueueSpec) map[string]any {
	def := map[string]any{}
	if q.MessageTTL > 0 {
		def[policyMessageTTL] = q.MessageTTL.Milliseconds()
	}
	if q.MaxLength > 0 {
		def[policyMaxLength] = q.MaxLength
		def[policyOverflow] = overflowRejectPublish
	}
	// A quorum queue dead-letters a message once its delivery count, which
	// starts at 0 and grows with every return, exceeds the limit: a limit of
	// n allows n+1 deliveries. Classic queues have no delivery limit in 3.10.
	if q.Type == QueueQuorum && q.MaxDeliveries > 0 {
		def[policyDeliveryLimit] = int64(q.MaxDeliveries) - 1
	}
	return def
}

// physical maps logical queue names to sorted, de-duplicated physical names
// of one kind (the queue itself or its exchange).
func physical(app string, logical []string, kind func(physicalQueue string) string) []string {
	names := make([]string, 0, len(logical))
	for _, q := range logical {
		names = append(names, kind(contract.QueueName(app, q)))
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// exactly is a regular expression matching only name. RabbitMQ evaluates
// permissions and policy patterns with Erlang's PCRE-compatible re module,
// where a backslash before punctuation means the literal character, the same
// as in Go's syntax, so QuoteMeta escapes correctly for both.
func exactly(name string) string { return "^" + regexp.QuoteMeta(name) + "$" }

// exactlyOneOf is an anchored alternation matching only the given names, or
// matchNothing when there are none.
func exactlyOneOf(names []string) string {
	switch len(names) {
	case 0:
		return matchNothing
	case 1:
		return exactly(names[0])
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	return "^(" + strings.Join(quoted, "|") + ")$"
}
