package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/courier-dev/courier/services/kit/contract"
	rh "github.com/michaelklishin/rabbit-hole/v2"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Admin is the broker work the controller does for one app. RabbitMQ
// implements it; a NATS implementation takes the same Topology.
type Admin interface {
	// Declare makes the broker match the topology and returns what it had to
	// change; nil when the broker already matched.
	Declare(ctx context.Context, ep Endpoint, t Topology, creds Credentials) ([]Change, error)
	// Delete removes the app's users, queues (per deletion policy) and vhost.
	Delete(ctx context.Context, ep Endpoint, t Topology) (DeleteResult, error)
	// QueueStats reads the depth and consumers of every queue.
	QueueStats(ctx context.Context, ep Endpoint, t Topology) ([]QueueStat, error)
	// ListQueues reads the depth and consumers of every queue of every
	// vhost the credentials may see, in one request: one poll serves every
	// app on the broker (Queues.Stats).
	ListQueues(ctx context.Context, ep Endpoint) (Queues, error)
	// Verify checks cheaply, in one read, that the users and permissions
	// of the topology are still on the broker, so that conditions claiming
	// them are not trusted until the next full Declare: ErrDrift when one
	// is missing or changed.
	Verify(ctx context.Context, ep Endpoint, t Topology) error
	// RunningNodes counts the nodes of the broker's cluster that run, as
	// the broker itself sees them: a pod can be ready before the cluster
	// it belongs to holds every node.
	RunningNodes(ctx context.Context, ep Endpoint) (int, error)
}

var _ Admin = (*RabbitMQ)(nil)

// Endpoint says where a broker is and who talks to it.
type Endpoint struct {
	// ManagementURL is the base URL of the HTTP API, without /api:
	// "http://blog-broker.apps.svc:15672".
	ManagementURL string
	// AMQPHost and AMQPPort are the AMQP listener. Delete uses it to count
	// the messages of quorum queues, whose HTTP statistics lag behind.
	AMQPHost string
	AMQPPort int
	// Username and Password authenticate both: the administrator for Declare
	// and Delete, the monitoring user (or the administrator) for QueueStats.
	Username string
	Password string
}

// Credentials are the passwords Declare sets. The controller generates them
// (GeneratePassword) and keeps them in the services' connection Secrets.
type Credentials struct {
	// Services maps a service name to its user's password; every service
	// that publishes or consumes needs one.
	Services map[string]string
	// Monitoring is the password of MonitoringUserName(app).
	Monitoring string
}

// DeleteResult says what Delete had to leave on the broker.
type DeleteResult struct {
	// Retained lists the queues kept because they still hold messages (or,
	// rarely, still had consumers after their connections were closed). When
	// it is not empty the vhost is kept too, with its exchanges, bindings and
	// policies, so an app re-created with the same name finds its messages.
	Retained []string
}

// QueueStat is the state of one logical queue, for the app's status.
type QueueStat struct {
	// Queue is the logical name, Name the physical one.
	Queue string `json:"queue"`
	Name  string `json:"name"`
	// Exists is false when the broker has no such queue.
	Exists bool `json:"exists"`
	// Messages counts ready and unacknowledged messages; Consumers the
	// consumers; DeadLetters the messages in the dead-letter queue. They come
	// from the broker's statistics, which refresh every 5 s by default.
	Messages    int `json:"messages"`
	Consumers   int `json:"consumers"`
	DeadLetters int `json:"deadLetters"`
}

// Errors callers branch on; match them with errors.Is.
var (
	// ErrUnreachable means no answer from the broker: connection refused,
	// no such host, a timeout. A finalizer may treat it as "the broker is
	// gone" and proceed.
	ErrUnreachable = errors.New("broker unreachable")
	// ErrUnauthorized means the broker refused the credentials.
	ErrUnauthorized = errors.New("broker refused the credentials")
	// ErrConflict means the broker holds an entity of the same name that
	// cannot be changed in place, such as a classic queue where the
	// topology now wants a quorum queue. Deleting it by hand resolves it.
	ErrConflict = errors.New("broker holds an incompatible entity")
	// ErrOwnedElsewhere means the app's vhost on the broker belongs to
	// another app of the same name (in another namespace): neither Declare
	// nor Delete touches it.
	ErrOwnedElsewhere = errors.New("the broker's vhost belongs to another app")
	// ErrDrift means Verify found a user or permission of the topology
	// missing or changed on the broker.
	ErrDrift = errors.New("the broker no longer holds the app's users and permissions")
)

// Resolver maps the "host:port" of a broker address to the address to dial.
// In a cluster it is nil (service DNS resolves); tests map a managed
// broker's service name to the local node.
type Resolver func(ctx context.Context, addr string) (string, error)

// Option configures RabbitMQ.
type Option func(*RabbitMQ)

// WithResolver makes every connection to the broker, HTTP and AMQP, dial the
// address resolve returns.
func WithResolver(resolve Resolver) Option { return func(r *RabbitMQ) { r.resolve = resolve } }

// WithDialTimeout bounds connecting to the broker (default 5s), so an
// unreachable broker is reported quickly.
func WithDialTimeout(d time.Duration) Option { return func(r *RabbitMQ) { r.dialTimeout = d } }

// WithTimeout bounds a whole Declare, Delete or QueueStats (default 30s),
// and each request of one to half of it at most; the caller's context may
// end them sooner. A broker that accepts connections but never answers
// then holds a reconcile for this long, not for ever.
func WithTimeout(d time.Duration) Option { return func(r *RabbitMQ) { r.timeout = d } }

// DefaultTimeout bounds one Declare, Delete or QueueStats unless
// WithTimeout says otherwise.
const DefaultTimeout = 30 * time.Second

// RabbitMQ administers RabbitMQ brokers through the HTTP API with
// rabbit-hole. It holds no per-broker state; one value serves every app.
type RabbitMQ struct {
	resolve     Resolver
	dialTimeout time.Duration
	timeout     time.Duration
	transport   *http.Transport
}

// NewRabbitMQ returns a RabbitMQ admin client.
func NewRabbitMQ(opts ...Option) *RabbitMQ {
	r := &RabbitMQ{dialTimeout: 5 * time.Second, timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(r)
	}
	r.transport = &http.Transport{
		// No proxy: the broker is an in-cluster Service or an address the
		// user gave, and the resolver must see the real address.
		Proxy:                 nil,
		DialContext:           r.dial,
		TLSHandshakeTimeout:   r.dialTimeout,
		ResponseHeaderTimeout: r.timeout / 2,
	}
	return r
}

func (r *RabbitMQ) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if r.resolve != nil {
		resolved, err := r.resolve(ctx, addr)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", addr, err)
		}
		addr = resolved
	}
	d := net.Dialer{Timeout: r.dialTimeout}
	return d.DialContext(ctx, network, addr)
}

// session is one operation against one broker: the caller's context, the
// operation's own deadline and a rabbit-hole client bound to it.
type session struct {
	r      *RabbitMQ
	ep     Endpoint
	parent context.Context
	ctx    context.Context
	api    *rh.Client
}

func (r *RabbitMQ) open(ctx context.Context, ep Endpoint) (*session, context.CancelFunc, error) {
	opCtx, cancel := context.WithTimeout(ctx, r.timeout)
	api, err := rh.NewTLSClient(strings.TrimSuffix(ep.ManagementURL, "/"), ep.Username, ep.Password,
		&boundTransport{ctx: opCtx, next: r.transport, user: ep.Username})
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("parse management URL %q: %w", ep.ManagementURL, err)
	}
	return &session{r: r, ep: ep, parent: ctx, ctx: opCtx, api: api}, cancel, nil
}

// boundTransport gives every request of a session the session's context:
// rabbit-hole's calls take no context, so this is how cancellation and the
// operation deadline reach them. It also turns a 401 into ErrUnauthorized,
// which rabbit-hole reports only as text.
type boundTransport struct {
	ctx  context.Context
	next http.RoundTripper
	user string
}

func (t *boundTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req.WithContext(t.ctx))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("%w: user %q", ErrUnauthorized, t.user)
	}
	return resp, nil
}

// wrap says what failed and classifies err for the caller.
func (s *session) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	var apiErr rh.ErrorResponse
	var urlErr *url.Error
	switch {
	case errors.Is(err, ErrUnauthorized), s.parent.Err() != nil:
		// The caller's cancellation is theirs to interpret; err wraps it.
		return fmt.Errorf("%s: %w", what, err)
	case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusBadRequest &&
		strings.Contains(apiErr.Reason, "inequivalent arg"):
		return fmt.Errorf("%s: %w: %w", what, ErrConflict, err)
	case errors.As(err, &urlErr):
		// No HTTP answer at all: refused, unresolvable, timed out.
		return unreachable(what, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// write runs one rabbit-hole write and releases its response.
func (s *session) write(what string, call func() (*http.Response, error)) error {
	res, err := call()
	if res != nil && res.Body != nil {
		_ = res.Body.Close()
	}
	return s.wrap(what, err)
}

func isNotFound(err error) bool {
	var apiErr rh.ErrorResponse
	return errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound
}

// Declare makes the broker match t: it reads the vhost's definitions, users
// and permissions, computes the difference (plan) and writes only that. It
// is idempotent: a second call returns no changes. A user deleted by hand is
// created again, a password changed by hand is reset, a binding or queue
// deleted by hand comes back, and users Courier created for services the
// topology no longer has are deleted. On error it returns the changes made
// before it.
func (r *RabbitMQ) Declare(ctx context.Context, ep Endpoint, t Topology, creds Credentials) ([]Change, error) {
	want, err := Generate(t)
	if err != nil {
		return nil, err
	}
	passwords, err := creds.byUser(t.App, want.Users)
	if err != nil {
		return nil, err
	}
	s, cancel, err := r.open(ctx, ep)
	if err != nil {
		return nil, err
	}
	defer cancel()
	have, err := s.observe(want)
	if err != nil {
		return nil, err
	}
	if err := checkOwner(want.VHost, t.Owner, have); err != nil {
		return nil, err
	}
	var done []Change
	for _, st := range plan(want, passwords, ep.Username, have) {
		if err := s.write(st.String(), func() (*http.Response, error) { return st.apply(s.api) }); err != nil {
			return done, err
		}
		done = append(done, st.Change)
	}
	return done, nil
}

// byUser maps every user of the settings to its password.
func (c Credentials) byUser(app string, users []User) (map[string]string, error) {
	out := make(map[string]string, len(users))
	var missing []string
	for _, u := range users {
		p := c.Monitoring
		if u.Service != "" {
			p = c.Services[u.Service]
		}
		if p == "" {
			missing = append(missing, u.Name)
		}
		out[u.Name] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("declare %s: no password for user %s", app, strings.Join(missing, ", "))
	}
	return out, nil
}

// observe reads what plan compares: the vhost, its definitions and its
// permissions, and each user the app has or that holds permissions in the
// vhost. Every read is about this app only: listing the broker's users or
// permissions would make each Declare cost O(apps on the broker), and a
// shared broker with 1,000 apps spent its CPU encoding those lists.
func (s *session) observe(want Settings) (observed, error) {
	vhost := want.VHost
	have := observed{
		exchanges:   map[string]rh.ExchangeInfo{},
		queues:      map[string]rh.QueueInfo{},
		bindings:    map[Binding]bool{},
		policies:    map[string]rh.Policy{},
		users:       map[string]rh.UserInfo{},
		permissions: map[string]rh.PermissionInfo{},
	}
	info, err := s.api.GetVhost(vhost)
	switch {
	case isNotFound(err):
	case err != nil:
		return have, s.wrap("read vhost "+vhost, err)
	default:
		have.vhost = true
		have.vhostDescription = info.Description
		defs, err := s.api.ListVhostDefinitions(vhost)
		if err != nil {
			return have, s.wrap("read definitions of vhost "+vhost, err)
		}
		have.read(defs)
		// A vhost deleted since the read above has no permissions.
		if perms, err := s.vhostPermissions(vhost); err == nil {
			have.permissions = perms
		} else if !isNotFound(err) {
			return have, err
		}
	}
	names := make([]string, 0, len(want.Users)+len(have.permissions))
	for _, u := range want.Users {
		names = append(names, u.Name)
	}
	for user := range have.permissions {
		names = append(names, user)
	}
	have.users, err = s.users(names)
	return have, err
}

// vhostPermissions reads the permissions in one vhost, by user. A vhost
// that is gone is an error isNotFound recognises.
func (s *session) vhostPermissions(vhost string) (map[string]rh.PermissionInfo, error) {
	var perms []rh.PermissionInfo
	if err := s.getJSON("/api/vhosts/"+url.PathEscape(vhost)+"/permissions", &perms); err != nil {
		return nil, s.wrap("list permissions in vhost "+vhost, err)
	}
	out := make(map[string]rh.PermissionInfo, len(perms))
	for _, p := range perms {
		out[p.User] = p
	}
	return out, nil
}

// users reads the named users, one request each; a user that does not
// exist is left out.
func (s *session) users(names []string) (map[string]rh.UserInfo, error) {
	out := make(map[string]rh.UserInfo, len(names))
	for _, name := range names {
		if _, seen := out[name]; seen {
			continue
		}
		u, err := s.api.GetUser(name)
		switch {
		case isNotFound(err):
		case err != nil:
			return nil, s.wrap("read user "+name, err)
		default:
			out[name] = *u
		}
	}
	return out, nil
}

// read indexes a vhost's exported definitions.
func (o *observed) read(defs *rh.ExportedDefinitions) {
	if defs.Exchanges != nil {
		for _, e := range *defs.Exchanges {
			o.exchanges[e.Name] = e
		}
	}
	if defs.Queues != nil {
		for _, q := range *defs.Queues {
			o.queues[q.Name] = q
		}
	}
	if defs.Bindings != nil {
		for _, b := range *defs.Bindings {
			// Courier's bindings carry no arguments; one with arguments is a
			// different binding.
			if b.DestinationType == "queue" && len(b.Arguments) == 0 {
				o.bindings[Binding{Source: b.Source, Destination: b.Destination, RoutingKey: b.RoutingKey}] = true
			}
		}
	}
	if defs.Policies != nil {
		// rabbit-hole leaves exported policies untyped; its Policy type has
		// the same JSON shape.
		for _, raw := range *defs.Policies {
			var p rh.Policy
			if b, err := json.Marshal(raw); err == nil && json.Unmarshal(b, &p) == nil {
				o.policies[p.Name] = p
			}
		}
	}
}

// Delete removes what Declare created for t, in this order:
//
//  1. Courier's users of the app (ManagedTag, named after the app's services
//     or holding permissions in its vhost), so nothing can reconnect;
//  2. the vhost's open connections, so no message arrives or is in flight
//     (an unacknowledged message would not count as "held");
//  3. each queue and then its dead-letter queue: DeletionPolicy Delete
//     deletes it, Retain deletes it only if it is empty;
//  4. the vhost, unless a queue was retained: deleting a vhost deletes all
//     its queues, so a retained queue keeps its vhost (and the exchanges,
//     bindings and policies in it) alive.
//
// Whether a queue is empty: RabbitMQ deletes a classic queue with if-empty
// atomically, but 3.10 refuses if-empty for quorum queues, and the HTTP API's
// message counts lag up to the statistics interval. Delete therefore counts a
// quorum queue's messages with an AMQP passive declare, answered by the queue
// itself, after step 2 made sure nothing else can publish to it.
//
// Everything already gone counts as deleted. If the broker cannot be reached
// the error wraps ErrUnreachable, after at most the dial timeout.
func (r *RabbitMQ) Delete(ctx context.Context, ep Endpoint, t Topology) (DeleteResult, error) {
	var result DeleteResult
	if t.App == "" {
		return result, fmt.Errorf("delete: %w: app: name is empty", ErrInvalidTopology)
	}
	s, cancel, err := r.open(ctx, ep)
	if err != nil {
		return result, err
	}
	defer cancel()
	vhost := t.App

	info, err := s.api.GetVhost(vhost)
	if err != nil && !isNotFound(err) {
		return result, s.wrap("read vhost "+vhost, err)
	}
	if err == nil {
		if err := checkOwner(vhost, t.Owner, observed{vhost: true, vhostDescription: info.Description}); err != nil {
			return result, err
		}
	}
	if err := s.deleteUsers(t); err != nil {
		return result, err
	}
	if isNotFound(err) {
		return result, nil
	}
	if err := s.closeConnections(vhost); err != nil {
		return result, err
	}
	// The admin may have lost its access to the vhost by hand; queue
	// operations over HTTP need it.
	if err := s.write("grant "+ep.Username+" access to vhost "+vhost, func() (*http.Response, error) {
		return s.api.UpdatePermissionsIn(vhost, ep.Username, fullAccess)
	}); err != nil {
		return result, err
	}
	queues := slices.Clone(t.Queues)
	slices.SortFunc(queues, func(a, b QueueSpec) int { return strings.Compare(a.Name, b.Name) })
	var amqpConn *amqp.Connection
	defer func() {
		if amqpConn != nil {
			_ = amqpConn.Close()
		}
	}()
	for _, q := range queues {
		p := contract.QueueName(t.App, q.Name)
		// The queue before its dead-letter queue: a message expiring from
		// the queue meanwhile moves to the DLQ, which is looked at later.
		for _, name := range []string{p, contract.DeadLetterQueueName(p)} {
			if q.deletionPolicy() == Delete {
				if err := s.write("delete queue "+name, func() (*http.Response, error) {
					return s.api.DeleteQueue(vhost, name)
				}); err != nil {
					return result, err
				}
				continue
			}
			if q.Type == QueueQuorum && amqpConn == nil {
				if amqpConn, err = s.dialAMQP(vhost); err != nil {
					return result, err
				}
			}
			retained, err := s.deleteIfEmpty(vhost, name, q.Type, amqpConn)
			if err != nil {
				return result, err
			}
			if retained {
				result.Retained = append(result.Retained, name)
			}
		}
	}
	if len(result.Retained) > 0 {
		return result, nil
	}
	return result, s.write("delete vhost "+vhost, func() (*http.Response, error) {
		return s.api.DeleteVhost(vhost)
	})
}

// deleteUsers deletes the app's users Courier created: those named after the
// topology's services or the monitoring user, and any other Courier user
// with permissions in the vhost (a service removed from the app earlier).
func (s *session) deleteUsers(t Topology) error {
	names := map[string]bool{MonitoringUserName(t.App): true}
	for _, svc := range t.Services {
		names[UserName(t.App, svc.Name)] = true
	}
	perms, err := s.vhostPermissions(t.App)
	if err != nil && !isNotFound(err) {
		return err
	}
	for user := range perms {
		names[user] = true
	}
	users, err := s.users(slices.Sorted(maps.Keys(names)))
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(users)) {
		if !slices.Contains(users[name].Tags, ManagedTag) {
			continue
		}
		if err := s.write("delete user "+name, func() (*http.Response, error) {
			return s.api.DeleteUser(name)
		}); err != nil {
			return err
		}
	}
	return nil
}

// closeConnections closes every client connection to the vhost. Deleting a
// user does not close its open connections.
func (s *session) closeConnections(vhost string) error {
	conns, err := s.api.ListVhostConnections(vhost)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return s.wrap("list connections of vhost "+vhost, err)
	}
	for _, c := range conns {
		if err := s.write("close connection "+c.Name, func() (*http.Response, error) {
			return s.api.CloseConnection(c.Name)
		}); err != nil {
			return err
		}
	}
	return nil
}

// consumersGoneTimeout bounds the wait for the consumers of closed
// connections to detach from a queue; it takes milliseconds.
const consumersGoneTimeout = 10 * time.Second

// deleteIfEmpty deletes a retained queue if it holds no messages and reports
// whether it kept it.
func (s *session) deleteIfEmpty(vhost, name string, typ QueueType, conn *amqp.Connection) (bool, error) {
	if typ == QueueQuorum {
		held, found, err := s.quorumHeld(conn, name)
		if err != nil || !found || held {
			return held, err
		}
		return false, s.write("delete queue "+name, func() (*http.Response, error) {
			return s.api.DeleteQueue(vhost, name)
		})
	}
	// Classic: if-empty is checked inside the queue, atomically, but it counts
	// ready messages only, and if-unused refuses while a consumer (holding
	// unacknowledged messages) remains. Consumers of the connections just
	// closed detach within moments; wait for that, bounded.
	deadline := time.Now().Add(consumersGoneTimeout)
	for {
		res, err := s.api.DeleteQueue(vhost, name, rh.QueueDeleteOptions{IfEmpty: true, IfUnused: true})
		if res != nil && res.Body != nil {
			_ = res.Body.Close()
		}
		var apiErr rh.ErrorResponse
		switch {
		case err == nil:
			return false, nil
		case errors.As(err, &apiErr) && strings.Contains(apiErr.Reason, "not empty"):
			return true, nil
		case errors.As(err, &apiErr) && strings.Contains(apiErr.Reason, "in use"):
			if time.Now().After(deadline) {
				return true, nil
			}
		default:
			return false, s.wrap("delete queue "+name+" if empty", err)
		}
		if err := s.pause(100 * time.Millisecond); err != nil {
			return false, s.wrap("delete queue "+name+" if empty", err)
		}
	}
}

// quorumHeld reports whether a quorum queue holds messages, counted once no
// consumer is attached so that none is unacknowledged; a consumer still
// attached after consumersGoneTimeout counts as holding. found is false if
// the queue does not exist.
func (s *session) quorumHeld(conn *amqp.Connection, name string) (held, found bool, err error) {
	deadline := time.Now().Add(consumersGoneTimeout)
	for {
		ch, err := conn.Channel()
		if err != nil {
			return false, false, s.wrapAMQP("open channel", err)
		}
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
			return false, false, nil // the broker closed the channel
		}
		_ = ch.Close()
		if err != nil {
			return false, false, s.wrapAMQP("count messages of queue "+name, err)
		}
		if q.Messages > 0 || q.Consumers == 0 || time.Now().After(deadline) {
			return q.Messages > 0 || q.Consumers > 0, true, nil
		}
		if err := s.pause(100 * time.Millisecond); err != nil {
			return false, false, s.wrap("count messages of queue "+name, err)
		}
	}
}

// pause waits d or until the operation ends.
func (s *session) pause(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
		return s.ctx.Err()
	case <-t.C:
		return nil
	}
}

// dialAMQP connects to the vhost as the session's user through the resolver.
func (s *session) dialAMQP(vhost string) (*amqp.Connection, error) {
	if s.ep.AMQPHost == "" || s.ep.AMQPPort == 0 {
		return nil, fmt.Errorf("connect to vhost %s: endpoint has no AMQP address, needed to count quorum queue messages", vhost)
	}
	uri := ConnectionURL(s.ep.AMQPHost, s.ep.AMQPPort, vhost, s.ep.Username, s.ep.Password)
	conn, err := amqp.DialConfig(uri, amqp.Config{
		Dial: func(network, addr string) (net.Conn, error) {
			return s.r.dial(s.ctx, network, addr)
		},
		Heartbeat: 10 * time.Second,
	})
	if err != nil {
		return nil, s.wrapAMQP("connect to vhost "+vhost+" at "+net.JoinHostPort(s.ep.AMQPHost, strconv.Itoa(s.ep.AMQPPort)), err)
	}
	return conn, nil
}

// wrapAMQP classifies an amqp091-go error like wrap does an HTTP one.
func (s *session) wrapAMQP(what string, err error) error {
	var amqpErr *amqp.Error
	var netErr net.Error
	switch {
	case s.parent.Err() != nil:
		return fmt.Errorf("%s: %w", what, err)
	case errors.As(err, &amqpErr) && amqpErr.Code == amqp.AccessRefused:
		return fmt.Errorf("%s: %w: %w", what, ErrUnauthorized, err)
	case errors.As(err, &netErr), errors.Is(err, amqp.ErrClosed):
		return unreachable(what, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// QueueStats reads every queue's depth, consumers and dead letters of the
// app's vhost in one request. Give it the monitoring user's credentials
// (MonitoringUserName): it needs to read nothing else. Stats are in the
// order of the queues' names.
func (r *RabbitMQ) QueueStats(ctx context.Context, ep Endpoint, t Topology) ([]QueueStat, error) {
	s, cancel, err := r.open(ctx, ep)
	if err != nil {
		return nil, err
	}
	defer cancel()
	infos, err := s.api.ListQueuesWithParametersIn(t.App, url.Values{"columns": {"name,messages,consumers"}})
	if err != nil {
		return nil, s.wrap("list queues of vhost "+t.App, err)
	}
	for i := range infos {
		infos[i].Vhost = t.App // not among the columns asked for
	}
	return queuesOf(infos).Stats(t), nil
}

// ListQueues reads every queue of every vhost the endpoint's user may see
// in one request (GET /api/queues with only the columns Stats needs), so a
// shared broker is polled once for all its apps. Give it the
// administrator: the monitoring users see only their own app's vhost.
func (r *RabbitMQ) ListQueues(ctx context.Context, ep Endpoint) (Queues, error) {
	s, cancel, err := r.open(ctx, ep)
	if err != nil {
		return nil, err
	}
	defer cancel()
	infos, err := s.api.ListQueuesWithParameters(url.Values{"columns": {"vhost,name,messages,consumers"}})
	if err != nil {
		return nil, s.wrap("list the broker's queues", err)
	}
	return queuesOf(infos), nil
}

// QueueCounts are one queue's numbers as the broker's statistics last
// showed them (they refresh every 5 s by default).
type QueueCounts struct {
	// Messages counts ready and unacknowledged messages.
	Messages int
	// Consumers counts the queue's consumers.
	Consumers int
}

// Queues are a broker's queues by vhost and physical name, as ListQueues
// read them.
type Queues map[string]map[string]QueueCounts

func queuesOf(infos []rh.QueueInfo) Queues {
	out := Queues{}
	for _, q := range infos {
		if out[q.Vhost] == nil {
			out[q.Vhost] = map[string]QueueCounts{}
		}
		out[q.Vhost][q.Name] = QueueCounts{Messages: q.Messages, Consumers: q.Consumers}
	}
	return out
}

// Stats are the stats of the topology's queues, in the order of their
// names: a queue the broker does not hold has Exists false.
func (q Queues) Stats(t Topology) []QueueStat {
	byName := q[t.App]
	queues := slices.Clone(t.Queues)
	slices.SortFunc(queues, func(a, b QueueSpec) int { return strings.Compare(a.Name, b.Name) })
	stats := make([]QueueStat, 0, len(queues))
	for _, spec := range queues {
		p := contract.QueueName(t.App, spec.Name)
		info, ok := byName[p]
		stats = append(stats, QueueStat{
			Queue:       spec.Name,
			Name:        p,
			Exists:      ok,
			Messages:    info.Messages,
			Consumers:   info.Consumers,
			DeadLetters: byName[contract.DeadLetterQueueName(p)].Messages,
		})
	}
	return stats
}

// vhostDescriptionPrefix starts the description of every vhost Courier
// creates; the owner follows it.
const vhostDescriptionPrefix = "Managed by Courier"

// vhostDescription is the description Declare gives the vhost of owner.
func vhostDescription(owner string) string {
	if owner == "" {
		return vhostDescriptionPrefix
	}
	return vhostDescriptionPrefix + " for " + owner
}

// checkOwner refuses a vhost whose description names an owner other than
// owner. A vhost that names none (made by hand, or by a Courier version that
// did not record owners) is taken over: Declare then records owner on it.
func checkOwner(vhost, owner string, have observed) error {
	if owner == "" || !have.vhost {
		return nil
	}
	recorded, ok := strings.CutPrefix(have.vhostDescription, vhostDescriptionPrefix+" for ")
	if !ok || recorded == owner {
		return nil
	}
	return fmt.Errorf("vhost %s: %w: it is %s's; rename one of the apps, or give them different brokers",
		vhost, ErrOwnedElsewhere, recorded)
}

// Verify reads the vhost's permissions (one request) and checks that every
// user of the topology has exactly the permissions Declare gives it; a user
// deleted by hand loses its permissions with it. Passwords are not checked:
// that takes a read per user, which the next Declare does.
func (r *RabbitMQ) Verify(ctx context.Context, ep Endpoint, t Topology) error {
	want, err := Generate(t)
	if err != nil {
		return err
	}
	s, cancel, err := r.open(ctx, ep)
	if err != nil {
		return err
	}
	defer cancel()
	have, err := s.vhostPermissions(want.VHost)
	if isNotFound(err) {
		return fmt.Errorf("vhost %s: %w: the vhost is gone", want.VHost, ErrDrift)
	}
	if err != nil {
		return err
	}
	var drifted []string
	for _, p := range want.Permissions {
		if got, ok := have[p.User]; !ok || permissionsOf(got) != (rh.Permissions{Configure: p.Configure, Write: p.Write, Read: p.Read}) {
			drifted = append(drifted, p.User)
		}
	}
	if len(drifted) > 0 {
		return fmt.Errorf("vhost %s: %w: user(s) %s missing or changed", want.VHost, ErrDrift, strings.Join(drifted, ", "))
	}
	return nil
}

// getJSON reads one management API resource into out, for the resources
// rabbit-hole has no call for (the permissions of one vhost: rabbit-hole
// lists every permission on the broker, which on a shared broker is every
// app's). Errors take rabbit-hole's shapes, so wrap and isNotFound apply.
func (s *session) getJSON(path string, out any) error {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodGet, strings.TrimSuffix(s.ep.ManagementURL, "/")+path, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(s.ep.Username, s.ep.Password)
	httpClient := &http.Client{Transport: &boundTransport{ctx: s.ctx, next: s.r.transport, user: s.ep.Username}}
	res, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = res.Body.Close() }()
	if res.StatusCode != http.StatusOK {
		return rh.ErrorResponse{StatusCode: res.StatusCode, Message: res.Status}
	}
	return json.NewDecoder(res.Body).Decode(out)
}

// RunningNodes counts the running nodes of the cluster the management API
// belongs to, in one request.
func (r *RabbitMQ) RunningNodes(ctx context.Context, ep Endpoint) (int, error) {
	s, cancel, err := r.open(ctx, ep)
	if err != nil {
		return 0, err
	}
	defer cancel()
	var nodes []struct {
		Running bool `json:"running"`
	}
	if err := s.getJSON("/api/nodes?columns=name,running", &nodes); err != nil {
		return 0, s.wrap("list the broker's nodes", err)
	}
	n := 0
	for _, node := range nodes {
		if node.Running {
			n++
		}
	}
	return n, nil
}
