package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	rh "github.com/michaelklishin/rabbit-hole/v2"
	"github.com/nats-io/jwt/v2"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	amqp "github.com/rabbitmq/amqp091-go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/nats"
	"github.com/courier-dev/courier/services/kit/contract"
)

// The driver-independent broker tests run once per broker kind, each
// against its real broker (the suite's RabbitMQ node, the suite's embedded
// operator-mode nats-server). A brokerKind is what those tests need to know
// of one kind: how to run an app on it, how to connect with a service's
// connection Secret, and how to look at and tamper with what the broker
// holds for an app, the way a person with the broker's own tools would.
// The tests themselves only see the reconciler's API objects and the
// broker's answers, never a driver.
type brokerKind struct {
	name string
	kind v1alpha1.BrokerKind
	// createManaged creates app on a managed broker of this kind, as a
	// cluster would run it: its admin Secret already holds the suite
	// broker's administrator, and its pods report ready.
	createManaged func(t *testing.T, app *v1alpha1.MicroserviceApp)
	// credentialsKey is the key of a connection Secret holding the
	// service's own credentials.
	credentialsKey string
	// wantURL is the url a service's connection Secret should hold.
	wantURL func(app *v1alpha1.MicroserviceApp, service string, secret *corev1.Secret) string
	// queueType is what status.queues reports for a queue without a type.
	queueType v1alpha1.QueueType
	// dial connects as service with its connection Secret's data, the
	// host mapped by the suite's resolver as the cluster's DNS would.
	dial func(t *testing.T, app *v1alpha1.MicroserviceApp, service string, data map[string][]byte) (brokerClient, error)
	// refused reports whether err is the broker refusing what was asked.
	refused func(err error) bool
	// queueDest is where a publisher to a queue publishes.
	queueDest func(app, queue string) dest
	// forbiddenToPublisher and forbiddenToConsumer are destinations the
	// publishers of app's queue (users) and its consumer (mailer) must be
	// refused: the queue's dead letters, the broker's own, JetStream's
	// management API, another app's subjects.
	forbiddenToPublisher func(app string) []dest
	forbiddenToConsumer  func(app string) []dest
	// checkTopology checks the broker holds exactly app's topology, users
	// and permissions for the blog with the queue emails.
	checkTopology func(t *testing.T, app *v1alpha1.MicroserviceApp)
	// otherAppSeesNothing checks that other, an app on the same broker,
	// cannot reach anything of app with its services' credentials.
	otherAppSeesNothing func(t *testing.T, app, other *v1alpha1.MicroserviceApp)
	// deleteUser, revokePermissions and deleteRoute tamper with the
	// broker: a service's user, a service's publish permission, the
	// queue's binding or durable consumer.
	deleteUser        func(t *testing.T, app *v1alpha1.MicroserviceApp, service string)
	revokePermissions func(t *testing.T, app *v1alpha1.MicroserviceApp, service string)
	deleteRoute       func(t *testing.T, app *v1alpha1.MicroserviceApp, queue string)
	// publishPermitted and routeIntact say why the tampering is not
	// repaired yet, nil once it is.
	publishPermitted func(ctx context.Context, t *testing.T, app *v1alpha1.MicroserviceApp, service, queue string) error
	routeIntact      func(ctx context.Context, t *testing.T, app *v1alpha1.MicroserviceApp, queue string) error
	// extraDrift tampers in a way only this kind can, and returns the
	// check that it was repaired (nil if there is none).
	extraDrift func(t *testing.T, app *v1alpha1.MicroserviceApp) func(ctx context.Context) error
	// onBroker says whether the broker still holds anything of app (nil)
	// or nothing at all (errNotOnBroker).
	onBroker func(t *testing.T, app *v1alpha1.MicroserviceApp) error
	// snapshot is what a write to the broker for app would change (password
	// hashes are salted anew by every write of a user; an account JWT is
	// signed anew, with a new id, by every push), for the steady state.
	snapshot func(t *testing.T, app *v1alpha1.MicroserviceApp) string
	// steadyObjects counts the objects the steady state tracks for the
	// blog on a one-node managed broker: the broker's objects, the
	// app-wide Secrets, 3 connection Secrets, 4 NetworkPolicies, 4
	// Deployments and 4 Services, the app.
	steadyObjects int
}

// dest is where a client publishes: an exchange and routing key on
// RabbitMQ, a subject (name) on NATS.
type dest struct{ name, key string }

func (d dest) String() string {
	if d.key == "" {
		return fmt.Sprintf("%q", d.name)
	}
	return fmt.Sprintf("%q (key %s)", d.name, d.key)
}

// brokerClient is one service's connection to its broker.
type brokerClient interface {
	// publish publishes one persistent message to d and waits for the
	// broker to take it (nil) or refuse it.
	publish(ctx context.Context, d dest) error
	// consume receives one message from the physical queue, acknowledges
	// it and returns its body, or the broker's refusal.
	consume(ctx context.Context, queue string) ([]byte, error)
	// hold attaches a consumer to the physical queue that receives and
	// never acknowledges, until the client closes.
	hold(ctx context.Context, queue string) error
	// declareOwn tries to make a queue or stream of its own.
	declareOwn(ctx context.Context) error
	close()
}

// errNotOnBroker is onBroker's answer when the broker holds nothing of an
// app.
var errNotOnBroker = errors.New("nothing of the app on the broker")

// testedKinds are the kinds the table tests run over.
var testedKinds = []brokerKind{rabbitMQKind, natsKind}

// blogOn creates the blog, with users and posts publishing to emails and
// mailer consuming it, under the given name on a one-node managed broker
// of kind k mapped to the suite's broker, and waits until its topology is
// declared.
func blogOn(t *testing.T, k brokerKind, name string, opts ...fixture.AppOption) *v1alpha1.MicroserviceApp {
	t.Helper()
	app := fixture.BlogWithQueues(namespace(t), opts...)
	app.Name = name
	k.createManaged(t, app)
	waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
	return app
}

// dialSecret connects as service with its current connection Secret.
func (k brokerKind) dialSecret(t *testing.T, app *v1alpha1.MicroserviceApp, service string) (brokerClient, error) {
	t.Helper()
	return k.dial(t, app, service, connectionSecret(t, app, service).Data)
}

// mustDial connects as service and closes the connection when the test
// ends.
func (k brokerKind) mustDial(t *testing.T, app *v1alpha1.MicroserviceApp, service string) brokerClient {
	t.Helper()
	c, err := k.dialSecret(t, app, service)
	if err != nil {
		t.Fatalf("dial as %s: %v", service, err)
	}
	t.Cleanup(c.close)
	return c
}

// connects reports whether data's credentials still let service in.
func (k brokerKind) connects(t *testing.T, app *v1alpha1.MicroserviceApp, service string, data map[string][]byte) error {
	t.Helper()
	c, err := k.dial(t, app, service, data)
	if err != nil {
		return err
	}
	c.close()
	return nil
}

// --- RabbitMQ ---

var rabbitMQKind = brokerKind{
	name:           "rabbitmq",
	kind:           v1alpha1.BrokerRabbitMQ,
	createManaged:  createManaged,
	credentialsKey: "password",
	wantURL: func(app *v1alpha1.MicroserviceApp, svc string, secret *corev1.Secret) string {
		return fmt.Sprintf("amqp://%s.%s:%s@%s-broker.%s.svc:5672/%s", app.Name, svc, secret.Data["password"], app.Name, app.Namespace, app.Name)
	},
	queueType: v1alpha1.QueueQuorum,
	dial: func(t *testing.T, _ *v1alpha1.MicroserviceApp, _ string, data map[string][]byte) (brokerClient, error) {
		conn, err := amqp.Dial(localURL(t, string(data["url"])))
		if err != nil {
			return nil, err
		}
		return amqpClient{conn}, nil
	},
	refused: isAccessRefused,
	queueDest: func(app, queue string) dest {
		p := contract.QueueName(app, queue)
		return dest{contract.ExchangeName(p), contract.RoutingKey(p)}
	},
	forbiddenToPublisher: func(app string) []dest {
		p := contract.QueueName(app, "emails")
		return []dest{{contract.DeadLetterExchangeName(p), p}, {"amq.direct", p}, {"", p}}
	},
	forbiddenToConsumer: func(app string) []dest {
		p := contract.QueueName(app, "emails")
		return []dest{{contract.ExchangeName(p), p}, {contract.DeadLetterExchangeName(p), p}}
	},
	checkTopology:       rabbitTopology,
	otherAppSeesNothing: rabbitOtherApp,
	deleteUser: func(t *testing.T, app *v1alpha1.MicroserviceApp, svc string) {
		rabbitCall(t, "delete user "+broker.UserName(app.Name, svc), func(api *rh.Client) (*http.Response, error) {
			return api.DeleteUser(broker.UserName(app.Name, svc))
		})
	},
	revokePermissions: func(t *testing.T, app *v1alpha1.MicroserviceApp, svc string) {
		rabbitCall(t, "delete the permissions of "+broker.UserName(app.Name, svc), func(api *rh.Client) (*http.Response, error) {
			return api.ClearPermissionsIn(app.Name, broker.UserName(app.Name, svc))
		})
	},
	deleteRoute: func(t *testing.T, app *v1alpha1.MicroserviceApp, queue string) {
		p := contract.QueueName(app.Name, queue)
		rabbitCall(t, "delete the binding of "+p, func(api *rh.Client) (*http.Response, error) {
			return api.DeleteBinding(app.Name, rh.BindingInfo{
				Source: contract.ExchangeName(p), Destination: p, DestinationType: "queue",
				RoutingKey: contract.RoutingKey(p), PropertiesKey: contract.RoutingKey(p),
			})
		})
	},
	publishPermitted: func(_ context.Context, t *testing.T, app *v1alpha1.MicroserviceApp, svc, queue string) error {
		p, err := adminAPI(t).GetPermissionsIn(app.Name, broker.UserName(app.Name, svc))
		if err != nil {
			return err
		}
		if want := "^" + strings.ReplaceAll(contract.ExchangeName(contract.QueueName(app.Name, queue)), ".", `\.`) + "$"; p.Write != want {
			return fmt.Errorf("write permission %q, want %q", p.Write, want)
		}
		return nil
	},
	routeIntact: func(_ context.Context, t *testing.T, app *v1alpha1.MicroserviceApp, queue string) error {
		p := contract.QueueName(app.Name, queue)
		bs, err := adminAPI(t).ListQueueBindings(app.Name, p)
		if err != nil {
			return err
		}
		for _, b := range bs {
			if b.Source == contract.ExchangeName(p) {
				return nil
			}
		}
		return fmt.Errorf("bindings %+v", bs)
	},
	// A password changed by hand is reset (NATS has no passwords: its
	// users are keys the operator alone holds).
	extraDrift: func(t *testing.T, app *v1alpha1.MicroserviceApp) func(ctx context.Context) error {
		user := broker.UserName(app.Name, "mailer")
		rabbitCall(t, "change the password of "+user, func(api *rh.Client) (*http.Response, error) {
			return api.PutUser(user, rh.UserSettings{Password: "changed-by-hand", Tags: rh.UserTags{broker.ManagedTag}})
		})
		return func(context.Context) error {
			conn, err := dialService(t, app, "mailer")
			if err != nil {
				return err
			}
			return conn.Close()
		}
	},
	onBroker: func(t *testing.T, app *v1alpha1.MicroserviceApp) error {
		_, err := adminAPI(t).GetVhost(app.Name)
		if isHTTPNotFound(err) {
			users, err := adminAPI(t).ListUsers()
			if err != nil {
				return err
			}
			for _, u := range users {
				if strings.HasPrefix(u.Name, app.Name+".") {
					return fmt.Errorf("vhost %s gone, user %s left", app.Name, u.Name)
				}
			}
			return errNotOnBroker
		}
		return err
	},
	snapshot: func(t *testing.T, app *v1alpha1.MicroserviceApp) string {
		api := adminAPI(t)
		users, err := api.ListUsers()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, u := range users {
			if strings.HasPrefix(u.Name, app.Name+".") {
				out = append(out, fmt.Sprintf("user %s %s %v", u.Name, u.PasswordHash, u.Tags))
			}
		}
		perms, err := api.ListPermissions()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range perms {
			if p.Vhost == app.Name {
				out = append(out, fmt.Sprintf("permission %s %s %s %s", p.User, p.Configure, p.Write, p.Read))
			}
		}
		slices.Sort(out)
		return strings.Join(out, "\n")
	},
	// 9 objects of a one-node broker (no disruption budget), the
	// monitoring Secret.
	steadyObjects: 9 + 1 + 3 + 4 + 4 + 4 + 1,
}

// rabbitCall makes one call to the management API as its administrator.
func rabbitCall(t *testing.T, what string, call func(*rh.Client) (*http.Response, error)) {
	t.Helper()
	res, err := call(adminAPI(t))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	_ = res.Body.Close()
}

// amqpClient is a service's AMQP connection.
type amqpClient struct{ conn *amqp.Connection }

func (c amqpClient) publish(ctx context.Context, d dest) error {
	return publishAs(ctx, c.conn, d.name, d.key)
}

func (c amqpClient) consume(ctx context.Context, queue string) ([]byte, error) {
	ch, err := c.conn.Channel()
	if err != nil {
		return nil, err
	}
	defer func() { _ = ch.Close() }()
	deliveries, err := ch.ConsumeWithContext(ctx, queue, "", false, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	select {
	case d := <-deliveries:
		return d.Body, d.Ack(false)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c amqpClient) hold(_ context.Context, queue string) error {
	ch, err := c.conn.Channel()
	if err != nil {
		return err
	}
	_, err = ch.Consume(queue, "", false, false, false, false, nil)
	return err
}

func (c amqpClient) declareOwn(context.Context) error {
	ch, err := c.conn.Channel()
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	_, err = ch.QueueDeclare("courier-test.mine", true, false, false, false, nil)
	return err
}

func (c amqpClient) close() { _ = c.conn.Close() }

// rabbitTopology checks, over the management API, that users and posts
// publishing to emails and mailer consuming it give exactly the expected
// vhost, exchanges, queues, dead-letter queue, bindings, users and
// permissions.
func rabbitTopology(t *testing.T, app *v1alpha1.MicroserviceApp) {
	t.Helper()
	api := adminAPI(t)
	vhost := app.Name
	if _, err := api.GetVhost(vhost); err != nil {
		t.Fatalf("vhost %s: %v", vhost, err)
	}

	exchanges, err := api.ListExchangesIn(vhost)
	if err != nil {
		t.Fatal(err)
	}
	var gotExchanges []string
	for _, e := range exchanges {
		if e.Name != "" && !strings.HasPrefix(e.Name, "amq.") { // RabbitMQ's own
			gotExchanges = append(gotExchanges, e.Name+" "+e.Type)
		}
	}
	slices.Sort(gotExchanges)
	if diff := cmp.Diff([]string{vhost + ".emails.dlx direct", vhost + ".emails.exchange direct"}, gotExchanges); diff != "" {
		t.Errorf("exchanges (-want +got):\n%s", diff)
	}

	queues, err := api.ListQueuesIn(vhost)
	if err != nil {
		t.Fatal(err)
	}
	gotQueues := map[string]string{}
	for _, q := range queues {
		gotQueues[q.Name] = fmt.Sprintf("durable=%t type=%v dlx=%v dlk=%v", q.Durable,
			q.Arguments["x-queue-type"], q.Arguments["x-dead-letter-exchange"], q.Arguments["x-dead-letter-routing-key"])
	}
	wantQueues := map[string]string{
		// A queue without a type is a quorum queue, on one node too.
		vhost + ".emails":     "durable=true type=quorum dlx=" + vhost + ".emails.dlx dlk=" + vhost + ".emails.dlq",
		vhost + ".emails.dlq": "durable=true type=quorum dlx=<nil> dlk=<nil>",
	}
	if diff := cmp.Diff(wantQueues, gotQueues); diff != "" {
		t.Errorf("queues (-want +got):\n%s", diff)
	}

	bindings, err := api.ListBindingsIn(vhost)
	if err != nil {
		t.Fatal(err)
	}
	var gotBindings []string
	for _, b := range bindings {
		if b.Source != "" { // the default exchange's implicit bindings
			gotBindings = append(gotBindings, b.Source+" -> "+b.Destination+" ("+b.RoutingKey+")")
		}
	}
	slices.Sort(gotBindings)
	wantBindings := []string{
		vhost + ".emails.dlx -> " + vhost + ".emails.dlq (" + vhost + ".emails.dlq)",
		vhost + ".emails.exchange -> " + vhost + ".emails (" + vhost + ".emails)",
	}
	if diff := cmp.Diff(wantBindings, gotBindings); diff != "" {
		t.Errorf("bindings (-want +got):\n%s", diff)
	}

	users, err := api.ListUsers()
	if err != nil {
		t.Fatal(err)
	}
	gotUsers := map[string][]string{}
	for _, u := range users {
		if strings.HasPrefix(u.Name, vhost+".") {
			gotUsers[u.Name] = slices.Sorted(slices.Values(u.Tags))
		}
	}
	wantUsers := map[string][]string{ // no user for the gateway, which uses no queue
		vhost + ".users":       {broker.ManagedTag},
		vhost + ".posts":       {broker.ManagedTag},
		vhost + ".mailer":      {broker.ManagedTag},
		vhost + "._monitoring": {broker.ManagedTag, broker.MonitoringTag},
	}
	if diff := cmp.Diff(wantUsers, gotUsers); diff != "" {
		t.Errorf("users (-want +got):\n%s", diff)
	}

	perms, err := api.ListPermissions()
	if err != nil {
		t.Fatal(err)
	}
	gotPerms := map[string]string{}
	for _, p := range perms {
		if p.Vhost != vhost {
			continue
		}
		gotPerms[p.User] = "configure " + p.Configure + " write " + p.Write + " read " + p.Read
	}
	wantPerms := map[string]string{
		vhost + ".users":       `configure ^$ write ^` + vhost + `\.emails\.exchange$ read ^$`,
		vhost + ".posts":       `configure ^$ write ^` + vhost + `\.emails\.exchange$ read ^$`,
		vhost + ".mailer":      `configure ^$ write ^$ read ^` + vhost + `\.emails$`,
		vhost + "._monitoring": `configure ^$ write ^$ read ^$`,
		// The administrator the operator declares everything as.
		testBroker(t).AdminUser: `configure .* write .* read .*`,
	}
	if diff := cmp.Diff(wantPerms, gotPerms); diff != "" {
		t.Errorf("permissions (-want +got):\n%s", diff)
	}
}

// rabbitOtherApp checks that other's services cannot open app's vhost with
// their credentials: one vhost per app is RabbitMQ's isolation.
func rabbitOtherApp(t *testing.T, app, other *v1alpha1.MicroserviceApp) {
	t.Helper()
	for _, svc := range []string{"users", "mailer"} {
		u, err := url.Parse(localURL(t, string(connectionSecret(t, other, svc).Data["url"])))
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + app.Name
		if conn, err := amqp.Dial(u.String()); err == nil {
			_ = conn.Close()
			t.Errorf("%s of %s opened the vhost %s", svc, other.Name, app.Name)
		}
	}
}

// --- NATS ---

var natsKind = brokerKind{
	name:           "nats",
	kind:           v1alpha1.BrokerNATS,
	createManaged:  createManagedNATS,
	credentialsKey: nats.ConnectionCredsKey,
	wantURL: func(app *v1alpha1.MicroserviceApp, _ string, _ *corev1.Secret) string {
		return fmt.Sprintf("nats://%s-broker.%s.svc:4222", app.Name, app.Namespace)
	},
	queueType: "",
	dial:      dialNATS,
	refused: func(err error) bool {
		var v *natsViolation
		return errors.As(err, &v)
	},
	queueDest: func(app, queue string) dest { return dest{name: contract.Subject(contract.QueueName(app, queue))} },
	forbiddenToPublisher: func(app string) []dest {
		p := contract.QueueName(app, "emails")
		stream, consumer := contract.StreamName(app), contract.ConsumerName(p)
		return []dest{
			{name: contract.DeadLetterSubject(p)},
			{name: "courier-other.emails"},
			{name: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer},
			{name: "$JS.API.STREAM.DELETE." + stream},
			{name: "$JS.API.STREAM.PURGE." + stream},
		}
	},
	forbiddenToConsumer: func(app string) []dest {
		p := contract.QueueName(app, "emails")
		stream := contract.StreamName(app)
		return []dest{
			{name: contract.Subject(p)},
			{name: "courier-other.emails"},
			{name: "$JS.API.CONSUMER.CREATE." + stream + ".mine"},
			{name: "$JS.API.CONSUMER.DELETE." + stream + "." + contract.ConsumerName(p)},
		}
	},
	checkTopology:       natsTopology,
	otherAppSeesNothing: natsOtherApp,
	deleteUser: func(t *testing.T, app *v1alpha1.MicroserviceApp, svc string) {
		editAccount(t, app, func(ac *jwt.AccountClaims) {
			for key, s := range ac.SigningKeys {
				if scope, ok := s.(*jwt.UserScope); ok && scope.Role == svc {
					delete(ac.SigningKeys, key)
				}
			}
		})
	},
	revokePermissions: func(t *testing.T, app *v1alpha1.MicroserviceApp, svc string) {
		editAccount(t, app, func(ac *jwt.AccountClaims) {
			for _, s := range ac.SigningKeys {
				if scope, ok := s.(*jwt.UserScope); ok && scope.Role == svc {
					scope.Template.Pub = jwt.Permission{Deny: []string{">"}}
				}
			}
		})
	},
	deleteRoute: func(t *testing.T, app *v1alpha1.MicroserviceApp, queue string) {
		p := contract.QueueName(app.Name, queue)
		if err := accountJetStream(t, app).DeleteConsumer(t.Context(), contract.StreamName(app.Name), contract.ConsumerName(p)); err != nil {
			t.Fatalf("delete the consumer of %s: %v", p, err)
		}
	},
	publishPermitted: func(ctx context.Context, t *testing.T, app *v1alpha1.MicroserviceApp, svc, queue string) error {
		scope, err := natsScope(ctx, t, app, svc)
		if err != nil {
			return err
		}
		want := jwt.Permission{Allow: []string{contract.Subject(contract.QueueName(app.Name, queue))}}
		if !cmp.Equal(want, scope.Template.Pub) {
			return fmt.Errorf("publish permission %+v, want %+v", scope.Template.Pub, want)
		}
		return nil
	},
	routeIntact: func(ctx context.Context, t *testing.T, app *v1alpha1.MicroserviceApp, queue string) error {
		p := contract.QueueName(app.Name, queue)
		_, err := accountJetStream(t, app).Consumer(ctx, contract.StreamName(app.Name), contract.ConsumerName(p))
		return err
	},
	onBroker: func(t *testing.T, app *v1alpha1.MicroserviceApp) error {
		tok, err := lookupAccount(t.Context(), t, appAccount(t, app))
		switch {
		case err != nil:
			return err
		case tok == "":
			return errNotOnBroker
		}
		return nil
	},
	snapshot: func(t *testing.T, app *v1alpha1.MicroserviceApp) string {
		tok, err := lookupAccount(t.Context(), t, appAccount(t, app))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	},
	// 6 objects of a one-node system (no disruption budget), the
	// account Secret.
	steadyObjects: 6 + 1 + 3 + 4 + 4 + 4 + 1,
}

// createManagedNATS is createManaged for NATS: the admin Secret holds the
// suite server's operator and system account, and the app's one server
// reports ready.
func createManagedNATS(t *testing.T, app *v1alpha1.MicroserviceApp) {
	t.Helper()
	keys, _ := testNATS(t)
	app.Spec.Broker.Kind = v1alpha1.BrokerNATS
	app.Spec.Broker.Managed.Image = "" // the kind's default
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: app.Namespace,
			Name:      metadata.BrokerNamesFor(app.Name).AdminSecret,
			Labels:    metadata.Labels(app.Name, metadata.BrokerComponent),
		},
		Data: keys.SecretData(),
	}
	create(t, secret)
	app.UID = ""
	create(t, app)
	base := secret.DeepCopy()
	secret.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(app, v1alpha1.GroupVersion.WithKind("MicroserviceApp"))}
	if err := k8s.Patch(context.Background(), secret, client.MergeFrom(base)); err != nil {
		t.Fatalf("hand the admin Secret to the app: %v", err)
	}
	setBrokerReady(t, app, ptr.Deref(app.Spec.Broker.Managed.Replicas, 1))
}

// natsViolation is the server refusing a subject: the permissions
// violation it reports asynchronously.
type natsViolation struct{ msg string }

func (v *natsViolation) Error() string { return v.msg }

// natsClient is a service's NATS connection with the options the kit
// uses: its creds file and its own inbox prefix, the only subjects it may
// subscribe to.
type natsClient struct {
	nc  *natsgo.Conn
	js  jetstream.JetStream
	app string

	mu         sync.Mutex
	violations []string
}

func dialNATS(t *testing.T, app *v1alpha1.MicroserviceApp, svc string, data map[string][]byte) (brokerClient, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), nats.ConnectionCredsKey)
	if err := os.WriteFile(path, data[nats.ConnectionCredsKey], 0o600); err != nil {
		t.Fatal(err)
	}
	c := &natsClient{app: app.Name}
	nc, err := natsgo.Connect(localURL(t, string(data[nats.ConnectionURLKey])),
		natsgo.UserCredentials(path),
		natsgo.CustomInboxPrefix(contract.InboxPrefix(svc)),
		natsgo.NoReconnect(),
		natsgo.Timeout(natsConnectTimeout),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			c.mu.Lock()
			c.violations = append(c.violations, err.Error())
			c.mu.Unlock()
		}))
	if err != nil {
		return nil, err
	}
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// violation is the server's permissions violation naming subject, if it
// reported one.
func (c *natsClient) violation(subject string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.violations {
		if strings.Contains(v, "Permissions Violation") && strings.Contains(v, fmt.Sprintf("%q", subject)) {
			return &natsViolation{v}
		}
	}
	return nil
}

// await runs op, which asks the server something through subject, and
// returns its result, or the permissions violation the server reports for
// subject, whichever comes first: a refused request is otherwise only a
// timeout.
func (c *natsClient) await(ctx context.Context, subject string, op func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err == nil {
				return nil
			}
			// The client reports a violation on its own goroutine, so a
			// request that failed otherwise (no responders) may see it
			// a moment later.
			var v error
			_ = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 2*time.Second, true, func(context.Context) (bool, error) {
				v = c.violation(subject)
				return v != nil, nil
			})
			if v != nil {
				return v
			}
			return err
		case <-tick.C:
			if v := c.violation(subject); v != nil {
				return v
			}
		}
	}
}

// publish is a JetStream publish: nil once the stream acknowledged it.
func (c *natsClient) publish(ctx context.Context, d dest) error {
	return c.await(ctx, d.name, func(ctx context.Context) error {
		_, err := c.js.Publish(ctx, d.name, []byte("job"))
		return err
	})
}

// consume pulls one message from the queue's durable consumer, as the kit
// does: the consumer's info, then a pull, then the ack.
func (c *natsClient) consume(ctx context.Context, queue string) ([]byte, error) {
	stream, durable := contract.StreamName(c.app), contract.ConsumerName(queue)
	var cons jetstream.Consumer
	err := c.await(ctx, "$JS.API.CONSUMER.INFO."+stream+"."+durable, func(ctx context.Context) error {
		var err error
		cons, err = c.js.Consumer(ctx, stream, durable)
		return err
	})
	if err != nil {
		return nil, err
	}
	var body []byte
	err = c.await(ctx, "$JS.API.CONSUMER.MSG.NEXT."+stream+"."+durable, func(ctx context.Context) error {
		wait := time.Until(deadlineOf(ctx))
		msg, err := cons.Next(jetstream.FetchMaxWait(wait))
		if err != nil {
			return err
		}
		body = msg.Data()
		return msg.DoubleAck(ctx)
	})
	return body, err
}

// deadlineOf is ctx's deadline, or the suite's timeout from now.
func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(timeout)
}

// hold consumes as the kit does, with a pull request kept waiting on the
// durable consumer, and acknowledges nothing.
func (c *natsClient) hold(ctx context.Context, queue string) error {
	stream, durable := contract.StreamName(c.app), contract.ConsumerName(queue)
	return c.await(ctx, "$JS.API.CONSUMER.INFO."+stream+"."+durable, func(ctx context.Context) error {
		cons, err := c.js.Consumer(ctx, stream, durable)
		if err != nil {
			return err
		}
		_, err = cons.Consume(func(jetstream.Msg) {})
		return err
	})
}

// declareOwn tries to create a stream of its own.
func (c *natsClient) declareOwn(ctx context.Context) error {
	return c.await(ctx, "$JS.API.STREAM.CREATE.MINE", func(ctx context.Context) error {
		_, err := c.js.CreateStream(ctx, jetstream.StreamConfig{Name: "MINE", Subjects: []string{c.app + ".mine"}})
		return err
	})
}

func (c *natsClient) close() { c.nc.Close() }

// appAccount is the public key of app's NATS account, from the Secret the
// operator keeps it in.
func appAccount(t *testing.T, app *v1alpha1.MicroserviceApp) string {
	t.Helper()
	kp := accountKey(t, app)
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func accountKey(t *testing.T, app *v1alpha1.MicroserviceApp) nkeys.KeyPair {
	t.Helper()
	secret := get(t, app.Namespace, metadata.AccountSecretName(app.Name), &corev1.Secret{})
	kp, err := nkeys.FromSeed(secret.Data[natsbroker.AccountSecretKey])
	if err != nil {
		t.Fatalf("the account Secret of %s: %v", app.Name, err)
	}
	return kp
}

// systemConn connects to the suite's server as its system user, the
// identity a person administering the system with nsc would use.
func systemConn(t *testing.T) *natsgo.Conn {
	t.Helper()
	keys, addr := testNATS(t)
	path := filepath.Join(t.TempDir(), "system.creds")
	if err := os.WriteFile(path, keys.SystemUserCreds, 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(addr, natsgo.UserCredentials(path), natsgo.Timeout(natsConnectTimeout))
	if err != nil {
		t.Fatalf("connect as the system user: %v", err)
	}
	return nc
}

// lookupAccount is the account JWT the server's resolver holds, "" if
// none.
func lookupAccount(ctx context.Context, t *testing.T, account string) (string, error) {
	t.Helper()
	nc := systemConn(t)
	defer nc.Close()
	msg, err := nc.RequestWithContext(ctx, "$SYS.REQ.ACCOUNT."+account+".CLAIMS.LOOKUP", nil)
	if err != nil {
		return "", fmt.Errorf("look up account %s: %w", account, err)
	}
	return string(msg.Data), nil
}

// natsAccount is app's account as the resolver holds it.
func natsAccount(ctx context.Context, t *testing.T, app *v1alpha1.MicroserviceApp) (*jwt.AccountClaims, error) {
	t.Helper()
	tok, err := lookupAccount(ctx, t, appAccount(t, app))
	if err != nil {
		return nil, err
	}
	if tok == "" {
		return nil, fmt.Errorf("account of %s: not on the server", app.Name)
	}
	return jwt.DecodeAccountClaims(tok)
}

// natsScope is the scoped signing key of service in app's account.
func natsScope(ctx context.Context, t *testing.T, app *v1alpha1.MicroserviceApp, service string) (*jwt.UserScope, error) {
	t.Helper()
	ac, err := natsAccount(ctx, t, app)
	if err != nil {
		return nil, err
	}
	for _, s := range ac.SigningKeys {
		if scope, ok := s.(*jwt.UserScope); ok && scope.Role == service {
			return scope, nil
		}
	}
	return nil, fmt.Errorf("no signing key of %s in the account of %s", service, app.Name)
}

// editAccount changes app's account JWT by hand: signed with the
// operator's key and pushed to the resolver through the system account.
func editAccount(t *testing.T, app *v1alpha1.MicroserviceApp, change func(*jwt.AccountClaims)) {
	t.Helper()
	ac, err := natsAccount(t.Context(), t, app)
	if err != nil {
		t.Fatal(err)
	}
	change(ac)
	keys, _ := testNATS(t)
	op, err := nkeys.FromSeed([]byte(keys.OperatorSeed))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ac.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	nc := systemConn(t)
	defer nc.Close()
	msg, err := nc.RequestWithContext(t.Context(), "$SYS.REQ.CLAIMS.UPDATE", []byte(tok))
	if err != nil {
		t.Fatalf("push the account of %s: %v", app.Name, err)
	}
	if strings.Contains(string(msg.Data), `"error"`) {
		t.Fatalf("push the account of %s: %s", app.Name, msg.Data)
	}
}

// accountJetStream is an unrestricted user of app's account, signed with
// the account key itself: what a person with the account's key would use
// to tamper with its stream.
func accountJetStream(t *testing.T, app *v1alpha1.MicroserviceApp) jetstream.JetStream {
	t.Helper()
	nc, err := accountConn(t, accountKey(t, app))
	if err != nil {
		t.Fatalf("connect to the account of %s: %v", app.Name, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// accountConn connects as a new user of the account acct, without
// permission limits.
func accountConn(t *testing.T, acct nkeys.KeyPair) (*natsgo.Conn, error) {
	t.Helper()
	u, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	pub, _ := u.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = "test-admin"
	tok, err := uc.Encode(acct)
	if err != nil {
		return nil, err
	}
	seed, _ := u.Seed()
	creds, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(t.TempDir(), "admin.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		return nil, err
	}
	_, addr := testNATS(t)
	return natsgo.Connect(addr, natsgo.UserCredentials(path), natsgo.NoReconnect(), natsgo.Timeout(natsConnectTimeout))
}

// natsTopology checks the app's stream, its durable consumer and the
// account's scoped signing keys: one per service that uses a queue, each
// holding exactly that service's permissions, each the signer of the
// service's creds.
func natsTopology(t *testing.T, app *v1alpha1.MicroserviceApp) {
	t.Helper()
	ctx := t.Context()
	js := accountJetStream(t, app)
	a := app.Name
	stream := contract.StreamName(a)
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	cfg := st.CachedInfo().Config
	got := fmt.Sprintf("subjects=%v retention=%s storage=%s replicas=%d", slices.Sorted(slices.Values(cfg.Subjects)), cfg.Retention, cfg.Storage, cfg.Replicas)
	if want := fmt.Sprintf("subjects=[%s.emails %s.emails.dead] retention=WorkQueue storage=File replicas=1", a, a); got != want {
		t.Errorf("stream %s: %s, want %s", stream, got, want)
	}
	var names []string
	for name := range js.StreamNames(ctx).Name() {
		names = append(names, name)
	}
	if diff := cmp.Diff([]string{stream}, names); diff != "" {
		t.Errorf("streams of the account (-want +got):\n%s", diff)
	}
	consumer := contract.ConsumerName(contract.QueueName(a, "emails"))
	c, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		t.Fatalf("consumer %s: %v", consumer, err)
	}
	cc := c.CachedInfo().Config
	got = fmt.Sprintf("durable=%s filter=%s ack=%s ackWait=%s maxDeliver=%d", cc.Durable, cc.FilterSubject, cc.AckPolicy, cc.AckWait, cc.MaxDeliver)
	// maxDeliveries 5, plus the kit's backstop delivery.
	if want := fmt.Sprintf("durable=%s filter=%s.emails ack=AckExplicit ackWait=30s maxDeliver=6", consumer, a); got != want {
		t.Errorf("consumer: %s, want %s", got, want)
	}

	ac, err := natsAccount(ctx, t, app)
	if err != nil {
		t.Fatal(err)
	}
	gotScopes := map[string]string{}
	issuers := map[string]string{}
	for key, s := range ac.SigningKeys {
		scope, ok := s.(*jwt.UserScope)
		if !ok {
			t.Errorf("signing key %s has no scope: any user it signs may do anything", key)
			continue
		}
		p := scope.Template.Permissions
		gotScopes[scope.Role] = fmt.Sprintf("pub %v deny %v sub %v deny %v", p.Pub.Allow, p.Pub.Deny, p.Sub.Allow, p.Sub.Deny)
		issuers[scope.Role] = key
	}
	ack, info, next := "$JS.ACK."+stream+"."+consumer+".>", "$JS.API.CONSUMER.INFO."+stream+"."+consumer, "$JS.API.CONSUMER.MSG.NEXT."+stream+"."+consumer
	wantScopes := map[string]string{ // no user for the gateway, which uses no queue
		"users":  "pub [" + a + ".emails] deny [] sub [_INBOX_users.>] deny []",
		"posts":  "pub [" + a + ".emails] deny [] sub [_INBOX_posts.>] deny []",
		"mailer": "pub [" + ack + " " + info + " " + next + " " + a + ".emails.dead] deny [] sub [_INBOX_mailer.>] deny []",
	}
	if diff := cmp.Diff(wantScopes, gotScopes); diff != "" {
		t.Errorf("the account's scoped signing keys (-want +got):\n%s", diff)
	}
	for svc := range wantScopes {
		tok, err := jwt.ParseDecoratedJWT(connectionSecret(t, app, svc).Data[nats.ConnectionCredsKey])
		if err != nil {
			t.Fatalf("%s creds: %v", svc, err)
		}
		uc, err := jwt.DecodeUserClaims(tok)
		if err != nil {
			t.Fatalf("%s creds: %v", svc, err)
		}
		if uc.Issuer != issuers[svc] || uc.IssuerAccount != ac.Subject || uc.Name != broker.UserName(a, svc) {
			t.Errorf("%s creds: user %s signed by %s of account %s, want %s signed by its scoped key %s of %s",
				svc, uc.Name, uc.Issuer, uc.IssuerAccount, broker.UserName(a, svc), issuers[svc], ac.Subject)
		}
		if len(uc.Pub.Allow)+len(uc.Sub.Allow) > 0 {
			t.Errorf("%s creds carry permissions of their own: %+v", svc, uc.Permissions)
		}
	}
}

// natsOtherApp checks that other's services, in their own account, cannot
// reach app's subjects, and that other's account holds none of app's
// streams.
func natsOtherApp(t *testing.T, app, other *v1alpha1.MicroserviceApp) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	dial := func(svc string) *natsClient {
		t.Helper()
		c, err := dialNATS(t, other, svc, connectionSecret(t, other, svc).Data)
		if err != nil {
			t.Fatalf("dial as %s of %s: %v", svc, other.Name, err)
		}
		t.Cleanup(c.close)
		return c.(*natsClient)
	}
	var violation *natsViolation
	users := dial("users")
	if err := users.publish(ctx, dest{name: contract.Subject(contract.QueueName(app.Name, "emails"))}); !errors.As(err, &violation) {
		t.Errorf("users of %s publishing to %s's emails: %v, want it refused", other.Name, app.Name, err)
	}
	mailer := dial("mailer")
	stream := contract.StreamName(app.Name)
	durable := contract.ConsumerName(contract.QueueName(app.Name, "emails"))
	err := mailer.await(ctx, "$JS.API.CONSUMER.INFO."+stream+"."+durable, func(ctx context.Context) error {
		_, err := mailer.js.Consumer(ctx, stream, durable)
		return err
	})
	if !errors.As(err, &violation) {
		t.Errorf("mailer of %s reading %s's consumer: %v, want it refused", other.Name, app.Name, err)
	}
	js := accountJetStream(t, other)
	var names []string
	for name := range js.StreamNames(ctx).Name() {
		names = append(names, name)
	}
	if diff := cmp.Diff([]string{contract.StreamName(other.Name)}, names); diff != "" {
		t.Errorf("streams %s's account sees (-want +got):\n%s", other.Name, diff)
	}
	if _, err := js.Stream(ctx, stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("%s's stream from %s's account: %v, want not found", app.Name, other.Name, err)
	}
}
