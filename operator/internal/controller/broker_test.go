package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/google/go-cmp/cmp"
	rh "github.com/michaelklishin/rabbit-hole/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
	"github.com/courier-dev/courier/services/kit/contract"
)

// blogOnBroker creates the blog, with users and posts publishing to emails
// and mailer consuming it, under the given name on a one-node managed broker
// mapped to the shared test node, and waits until its topology is declared.
func blogOnBroker(t *testing.T, name string, opts ...fixture.AppOption) *v1alpha1.MicroserviceApp {
	t.Helper()
	app := fixture.BlogWithQueues(namespace(t), opts...)
	app.Name = name
	createManaged(t, app)
	waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
	return app
}

// TestTopologyFromPublishesAndConsumes checks that users and posts
// publishing to emails and mailer consuming it give exactly the expected
// vhost, exchanges, queues, dead-letter queue, bindings, users and
// permissions, read back over the management API; and that the services'
// Secrets, environment and status follow.
func TestTopologyFromPublishesAndConsumes(t *testing.T) {
	t.Parallel()
	app := blogOnBroker(t, "topology")
	api := adminAPI(t)
	const vhost = "topology"

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
	if diff := cmp.Diff([]string{"topology.emails.dlx direct", "topology.emails.exchange direct"}, gotExchanges); diff != "" {
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
		// One replica: classic queues by default.
		"topology.emails":     "durable=true type=quorum dlx=topology.emails.dlx dlk=topology.emails.dlq",
		"topology.emails.dlq": "durable=true type=quorum dlx=<nil> dlk=<nil>",
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
		"topology.emails.dlx -> topology.emails.dlq (topology.emails.dlq)",
		"topology.emails.exchange -> topology.emails (topology.emails)",
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
		"topology.users":       {broker.ManagedTag},
		"topology.posts":       {broker.ManagedTag},
		"topology.mailer":      {broker.ManagedTag},
		"topology._monitoring": {broker.ManagedTag, broker.MonitoringTag},
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
		"topology.users":       `configure ^$ write ^topology\.emails\.exchange$ read ^$`,
		"topology.posts":       `configure ^$ write ^topology\.emails\.exchange$ read ^$`,
		"topology.mailer":      `configure ^$ write ^$ read ^topology\.emails$`,
		"topology._monitoring": `configure ^$ write ^$ read ^$`,
		// The administrator the operator declares everything as.
		testBroker(t).AdminUser: `configure .* write .* read .*`,
	}
	if diff := cmp.Diff(wantPerms, gotPerms); diff != "" {
		t.Errorf("permissions (-want +got):\n%s", diff)
	}

	// Each service that uses the queue has a Secret with its own user and
	// the variables that point at it; the gateway has neither.
	for _, svc := range []string{"users", "posts", "mailer"} {
		secret := connectionSecret(t, app, svc)
		wantURL := fmt.Sprintf("amqp://topology.%s:%s@topology-broker.%s.svc:5672/topology", svc, secret.Data["password"], app.Namespace)
		if got := string(secret.Data["url"]); got != wantURL {
			t.Errorf("%s url = %q, want %q", svc, got, wantURL)
		}
		d := get(t, app.Namespace, metadata.Name(app.Name, svc), &appsv1.Deployment{})
		env := envOf(d)
		if env[contract.EnvBrokerKind] != "rabbitmq" || env[contract.QueueEnv("emails")] != "topology.emails" ||
			env[contract.EnvBrokerURL] != "secret "+metadata.ConnectionSecretName(app.Name, svc)+"/url" {
			t.Errorf("%s env = %v", svc, env)
		}
		if got, want := d.Spec.Template.Annotations[contract.AnnotationConnectionHash], rabbitmq.ConnectionHash(secret.Data); got != want {
			t.Errorf("%s pod template hash = %q, want the Secret's %q", svc, got, want)
		}
	}
	gateway := get(t, app.Namespace, metadata.Name(app.Name, "gateway"), &appsv1.Deployment{})
	for name := range envOf(gateway) {
		if strings.HasPrefix(name, "BROKER_") || strings.HasPrefix(name, "QUEUE_") {
			t.Errorf("the gateway, which uses no queue, has %s", name)
		}
	}
	if _, ok := gateway.Spec.Template.Annotations[contract.AnnotationConnectionHash]; ok {
		t.Error("the gateway's pod template has a connection hash")
	}
	err = k8s.Get(context.Background(), client.ObjectKey{Namespace: app.Namespace, Name: metadata.ConnectionSecretName(app.Name, "gateway")}, &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("gateway connection Secret: %v, want not found", err)
	}

	// With every service available, the app is Ready and reports its queue.
	markAllAvailable(t, app)
	waitReady(t, app, metav1.ConditionTrue)
	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	want := []v1alpha1.QueueStatus{{Name: "emails", Type: v1alpha1.QueueQuorum}}
	if diff := cmp.Diff(want, live.Status.Queues); diff != "" || live.Status.QueuedMessages == nil || *live.Status.QueuedMessages != 0 {
		t.Errorf("status.queues (-want +got):\n%s\nqueuedMessages %v", diff, live.Status.QueuedMessages)
	}
	for _, typ := range []string{v1alpha1.ConditionBrokerReady, v1alpha1.ConditionCredentialsReady} {
		if c := findCondition(live, typ); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("%s = %+v", typ, c)
		}
	}
}

// envOf flattens a Deployment's container env: values as they are, Secret
// references as "secret <name>/<key>".
func envOf(d *appsv1.Deployment) map[string]string {
	out := map[string]string{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			out[e.Name] = "secret " + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		case e.ValueFrom != nil:
			out[e.Name] = "<from>"
		default:
			out[e.Name] = e.Value
		}
	}
	return out
}

// dialService connects to the broker with a service's connection Secret,
// its host rewritten to the test node as the cluster's DNS would resolve it.
func dialService(t *testing.T, app *v1alpha1.MicroserviceApp, service string) (*amqp.Connection, error) {
	t.Helper()
	return amqp.Dial(localURL(t, string(connectionSecret(t, app, service).Data["url"])))
}

// isAccessRefused reports whether err is the broker refusing access
// (AMQP 403).
func isAccessRefused(err error) bool {
	var amqpErr *amqp.Error
	return errors.As(err, &amqpErr) && amqpErr.Code == amqp.AccessRefused
}

// TestLeastPrivilege connects as the services, with the credentials the
// operator wrote to their Secrets: users may publish to emails and do
// nothing else; mailer may consume emails.
func TestLeastPrivilege(t *testing.T) {
	t.Parallel()
	app := blogOnBroker(t, "privilege")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	users, err := dialService(t, app, "users")
	if err != nil {
		t.Fatalf("dial as users: %v", err)
	}
	defer func() { _ = users.Close() }()

	publish := func(exchange, key string) error { return publishAs(ctx, users, exchange, key) }

	if err := publish("privilege.emails.exchange", "privilege.emails"); err != nil {
		t.Errorf("users publishing to emails: %v, want it confirmed", err)
	}
	for _, exchange := range []string{"privilege.emails.dlx", "amq.direct", ""} {
		if err := publish(exchange, "privilege.emails"); !isAccessRefused(err) {
			t.Errorf("users publishing to exchange %q: %v, want access refused", exchange, err)
		}
	}
	ch, err := users.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Consume("privilege.emails", "", false, false, false, false, nil); !isAccessRefused(err) {
		t.Errorf("users consuming emails: %v, want access refused", err)
	}
	if ch, err = users.Channel(); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("privilege.mine", true, false, false, false, nil); !isAccessRefused(err) {
		t.Errorf("users declaring a queue: %v, want access refused", err)
	}

	mailer, err := dialService(t, app, "mailer")
	if err != nil {
		t.Fatalf("dial as mailer: %v", err)
	}
	defer func() { _ = mailer.Close() }()
	mch, err := mailer.Channel()
	if err != nil {
		t.Fatal(err)
	}
	deliveries, err := mch.ConsumeWithContext(ctx, "privilege.emails", "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("mailer consuming emails: %v", err)
	}
	select {
	case d := <-deliveries:
		if string(d.Body) != "job" {
			t.Errorf("mailer got %q, want the job users published", d.Body)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("mailer got nothing")
	}
	if err := publishAs(ctx, mailer, "privilege.emails.exchange", "privilege.emails"); !isAccessRefused(err) {
		t.Errorf("mailer publishing to emails: %v, want access refused", err)
	}
}

// publishAs publishes one persistent message on a new channel of conn and
// waits for the broker's answer: nil for a confirm, the error the broker
// closed the channel with (a 403 for a forbidden exchange), or an error for
// a negative confirm.
func publishAs(ctx context.Context, conn *amqp.Connection, exchange, key string) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Confirm(false); err != nil {
		return err
	}
	conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("job")})
	if err != nil {
		return err
	}
	select {
	case <-conf.Done():
		if conf.Acked() {
			return nil
		}
		// A closing channel fails its outstanding confirms, after it has
		// told its close listeners why.
		select {
		case e := <-closed:
			return e
		default:
			return errors.New("negative confirm")
		}
	case e := <-closed:
		return e
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestBrokerDriftIsRepaired changes the broker by hand and waits for the
// next resync to undo it: a deleted user comes back, a changed password is
// reset, a deleted permission and a deleted binding return.
func TestBrokerDriftIsRepaired(t *testing.T) {
	t.Parallel()
	app := blogOnBroker(t, "drift")
	api := adminAPI(t)

	check := func(what string, call func() (*http.Response, error)) {
		t.Helper()
		res, err := call()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		_ = res.Body.Close()
	}
	check("delete user drift.posts", func() (*http.Response, error) { return api.DeleteUser("drift.posts") })
	check("change the password of drift.mailer", func() (*http.Response, error) {
		return api.PutUser("drift.mailer", rh.UserSettings{Password: "changed-by-hand", Tags: rh.UserTags{broker.ManagedTag}})
	})
	check("delete the permissions of drift.users", func() (*http.Response, error) { return api.ClearPermissionsIn("drift", "drift.users") })
	check("delete the binding of drift.emails", func() (*http.Response, error) {
		return api.DeleteBinding("drift", rh.BindingInfo{
			Source: "drift.emails.exchange", Destination: "drift.emails", DestinationType: "queue",
			RoutingKey: "drift.emails", PropertiesKey: "drift.emails",
		})
	})

	eventually(t, "user drift.posts is back", func(context.Context) error {
		_, err := api.GetUser("drift.posts")
		return err
	})
	eventually(t, "drift.users' permissions are back", func(context.Context) error {
		p, err := api.GetPermissionsIn("drift", "drift.users")
		if err == nil && p.Write != `^drift\.emails\.exchange$` {
			err = fmt.Errorf("write permission %q", p.Write)
		}
		return err
	})
	eventually(t, "the binding of drift.emails is back", func(context.Context) error {
		bs, err := api.ListQueueBindings("drift", "drift.emails")
		if err != nil {
			return err
		}
		for _, b := range bs {
			if b.Source == "drift.emails.exchange" {
				return nil
			}
		}
		return fmt.Errorf("bindings %+v", bs)
	})
	eventually(t, "mailer's Secret works again", func(context.Context) error {
		conn, err := dialService(t, app, "mailer")
		if err != nil {
			return err
		}
		return conn.Close()
	})
	for _, svc := range []string{"users", "posts"} {
		conn, err := dialService(t, app, svc)
		if err != nil {
			t.Errorf("dial as %s after the repair: %v", svc, err)
			continue
		}
		_ = conn.Close()
	}
}

// TestRotation rotates users' credentials by deleting its connection
// Secret: the operator writes a new password, the broker takes it (the old
// one stops working), and users' pod template gets the new Secret's hash,
// which rolls its pods.
func TestRotation(t *testing.T) {
	t.Parallel()
	app := blogOnBroker(t, "rotation")
	old := connectionSecret(t, app, "users")
	oldHash := rabbitmq.ConnectionHash(old.Data)
	waitHash := func(what, want string) {
		t.Helper()
		eventually(t, "users' pod template carries "+what, func(ctx context.Context) error {
			d := &appsv1.Deployment{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: metadata.Name(app.Name, "users")}, d); err != nil {
				return err
			}
			if got := d.Spec.Template.Annotations[contract.AnnotationConnectionHash]; got != want {
				return fmt.Errorf("hash %q, want %q", got, want)
			}
			return nil
		})
	}
	waitHash("the Secret's hash", oldHash)

	if err := k8s.Delete(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	var rotated *corev1.Secret
	eventually(t, "a new Secret with a new password", func(ctx context.Context) error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(old), s); err != nil {
			return err
		}
		if s.UID == old.UID || string(s.Data["password"]) == string(old.Data["password"]) {
			return errors.New("not rotated yet")
		}
		rotated = s
		return nil
	})
	waitHash("the new hash", rabbitmq.ConnectionHash(rotated.Data))
	eventually(t, "the broker takes the new password", func(context.Context) error {
		conn, err := amqp.Dial(localURL(t, string(rotated.Data["url"])))
		if err != nil {
			return err
		}
		return conn.Close()
	})
	if conn, err := amqp.Dial(localURL(t, string(old.Data["url"]))); err == nil {
		_ = conn.Close()
		t.Error("the old password still works after the rotation")
	}
	// The other services keep their credentials.
	if posts := connectionSecret(t, app, "posts"); string(posts.Data["password"]) == string(rotated.Data["password"]) {
		t.Error("posts got users' new password")
	}
}

// TestDeletionCleansUpBroker deletes an app: its users and vhost leave the
// broker, and the finalizer lets the app go.
func TestDeletionCleansUpBroker(t *testing.T) {
	t.Parallel()
	app := blogOnBroker(t, "deleted")
	api := adminAPI(t)
	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(live.Finalizers, cleanupFinalizer) {
		t.Fatalf("finalizers %v, want %s", live.Finalizers, cleanupFinalizer)
	}

	if err := k8s.Delete(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	waitGone(t, app)
	if _, err := api.GetVhost("deleted"); !isHTTPNotFound(err) {
		t.Errorf("vhost deleted: %v, want not found", err)
	}
	users, err := api.ListUsers()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if strings.HasPrefix(u.Name, "deleted.") {
			t.Errorf("user %s is left on the broker", u.Name)
		}
	}
	waitEvent(t, live, corev1.EventTypeNormal, eventBrokerCleanedUp)
}

// TestDeletionNeverStuck deletes apps whose broker cannot be cleaned up:
// unreachable, scaled to zero, or without its admin Secret. Each deletion
// completes, and says what it left behind.
func TestDeletionNeverStuck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		breakBroker func(t *testing.T, app *v1alpha1.MicroserviceApp)
	}{
		{"unreachable", func(t *testing.T, app *v1alpha1.MicroserviceApp) {
			resolver.cutOff(t, metadata.BrokerNamesFor(app.Name).Client+"."+app.Namespace+".svc")
		}},
		{"scaled-to-zero", func(t *testing.T, app *v1alpha1.MicroserviceApp) {
			updateApp(t, app.Namespace, app.Name, func(a *v1alpha1.MicroserviceApp) {
				a.Spec.Broker.Managed.Replicas = new(int32)
			})
			eventually(t, "the StatefulSet is scaled to zero", func(ctx context.Context) error {
				sts := &appsv1.StatefulSet{}
				if err := mgrClient.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: metadata.BrokerNamesFor(app.Name).StatefulSet}, sts); err != nil {
					return err
				}
				if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 0 {
					return fmt.Errorf("replicas %v", sts.Spec.Replicas)
				}
				return nil
			})
		}},
		{"admin-secret-missing", func(t *testing.T, app *v1alpha1.MicroserviceApp) {
			secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: app.Namespace, Name: metadata.BrokerNamesFor(app.Name).AdminSecret}}
			if err := k8s.Delete(context.Background(), secret); err != nil {
				t.Fatal(err)
			}
			// The broker exists, so the operator makes no new credentials
			// its nodes would not know, and says so.
			c := waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonAdminSecretMissing)
			if !strings.Contains(c.Message, secret.Name) {
				t.Errorf("BrokerReady message %q does not name the Secret", c.Message)
			}
			err := k8s.Get(context.Background(), client.ObjectKeyFromObject(secret), &corev1.Secret{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("admin Secret after deleting it: %v, want it not recreated", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := blogOnBroker(t, "stuck-"+tt.name)
			tt.breakBroker(t, app)
			live := &v1alpha1.MicroserviceApp{}
			if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
				t.Fatal(err)
			}
			if err := k8s.Delete(context.Background(), app); err != nil {
				t.Fatal(err)
			}
			waitGone(t, app)
			waitEvent(t, live, corev1.EventTypeWarning, eventBrokerCleanupSkipped)
			// What could not be cleaned up is still there.
			if _, err := adminAPI(t).GetVhost(app.Name); err != nil {
				t.Errorf("vhost %s: %v, want it left behind", app.Name, err)
			}
		})
	}
}

// waitGone waits for the app to be deleted.
func waitGone(t *testing.T, app *v1alpha1.MicroserviceApp) {
	t.Helper()
	eventually(t, "app "+app.Name+" is gone", func(ctx context.Context) error {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(app), &v1alpha1.MicroserviceApp{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("get: %v", err)
	})
}

func isHTTPNotFound(err error) bool {
	var e rh.ErrorResponse
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

// TestManagedBrokerObjects checks a three-node managed broker at the
// controller level: the operator writes every object of the rabbitmq
// builders into the API server, keeps the admin Secret it finds, holds a
// new quorum queue until the broker itself counts every node (the suite's
// broker is one node, whatever the StatefulSet says), waits for the nodes,
// and declares once one answers.
func TestManagedBrokerObjects(t *testing.T) {
	t.Parallel()
	node := testBroker(t)
	app := fixture.BlogWithQueues(namespace(t), fixture.ManagedBroker(3))
	app.Name = "managed"
	createManaged(t, app)
	ns := app.Namespace
	// Every pod ready, but the cluster has one running node: the new
	// quorum queue waits, and the app says why.
	eventually(t, "BrokerReady says the cluster lacks nodes", func(ctx context.Context) error {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		c := findCondition(live, v1alpha1.ConditionBrokerReady)
		if c == nil || c.Reason != v1alpha1.ReasonWaitingForBrokerPods || !strings.Contains(c.Message, "1 of 3 broker nodes have joined the cluster") {
			return fmt.Errorf("BrokerReady %+v", c)
		}
		return nil
	})
	if _, err := adminAPI(t).GetQueue("managed", "managed.emails"); !isHTTPNotFound(err) {
		t.Errorf("queue managed.emails while the cluster lacks nodes: %v, want it not declared", err)
	}
	// The rest of the test uses a classic queue, which needs no quorum of
	// members and is declared as soon as one node answers.
	updateApp(t, app.Namespace, app.Name, func(a *v1alpha1.MicroserviceApp) {
		a.Spec.Queues[0].Type = v1alpha1.QueueClassic
	})
	// createManaged reported every node ready; start over from none.
	setBrokerReady(t, app, 0)
	eventually(t, "BrokerReady says no pod is ready", func(ctx context.Context) error {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		if c := findCondition(live, v1alpha1.ConditionBrokerReady); c == nil || c.Message != "0 of 3 broker pods ready" {
			return fmt.Errorf("BrokerReady %+v", c)
		}
		return nil
	})
	c := waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForBrokerPods)
	if c.Message != "0 of 3 broker pods ready" {
		t.Errorf("BrokerReady message %q", c.Message)
	}
	c = waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker)
	if !strings.Contains(c.Message, v1alpha1.ReasonWaitingForBrokerPods) {
		t.Errorf("TopologyReady message %q does not say what it waits for", c.Message)
	}

	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	n := metadata.BrokerNamesFor(app.Name)
	for _, o := range []struct {
		name string
		obj  client.Object
	}{
		{n.ServiceAccount, &corev1.ServiceAccount{}},
		{n.Role, &rbacv1.Role{}},
		{n.RoleBinding, &rbacv1.RoleBinding{}},
		{n.ConfigMap, &corev1.ConfigMap{}},
		{n.AdminSecret, &corev1.Secret{}},
		{n.Headless, &corev1.Service{}},
		{n.Client, &corev1.Service{}},
		{n.StatefulSet, &appsv1.StatefulSet{}},
		{n.PodDisruptionBudget, &policyv1.PodDisruptionBudget{}},
		{n.NetworkPolicy, &networkingv1.NetworkPolicy{}},
		{metadata.MonitoringSecretName(app.Name), &corev1.Secret{}},
	} {
		obj := get(t, ns, o.name, o.obj)
		if !metav1.IsControlledBy(obj, live) {
			t.Errorf("%T %s is not controlled by the app: %v", obj, o.name, obj.GetOwnerReferences())
		}
	}
	np := get(t, ns, n.NetworkPolicy, &networkingv1.NetworkPolicy{})
	if got := admittedOn(np, rabbitmq.ManagementPort); !slices.Contains(got.Namespaces, "kubernetes.io/metadata.name=courier-system") {
		t.Errorf("the broker's NetworkPolicy does not admit the operator's namespace to the management API: %+v", got)
	}
	admin := get(t, ns, n.AdminSecret, &corev1.Secret{})
	if string(admin.Data[rabbitmq.AdminUsernameKey]) != node.AdminUser || string(admin.Data[rabbitmq.AdminPasswordKey]) != node.AdminPassword {
		t.Error("the operator replaced the admin Secret's credentials")
	}

	// One node answers: the topology is declared while the broker still
	// waits for the others.
	setBrokerReady(t, app, 1)
	waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
	c = waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForBrokerPods)
	if c.Message != "1 of 3 broker pods ready" {
		t.Errorf("BrokerReady message %q", c.Message)
	}
	q, err := adminAPI(t).GetQueue("managed", "managed.emails")
	if err != nil {
		t.Fatal(err)
	}
	if q.Arguments["x-queue-type"] != "classic" {
		t.Errorf("queue type %v, want the spec's classic", q.Arguments["x-queue-type"])
	}

	setBrokerReady(t, app, 3)
	waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionTrue, v1alpha1.ReasonBrokerAvailable)
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	if len(live.Status.Queues) != 1 || live.Status.Queues[0].Type != v1alpha1.QueueClassic {
		t.Errorf("status.queues %+v, want emails as a classic queue", live.Status.Queues)
	}
}

// TestQueueDepthInStatus publishes to a queue nobody consumes and waits for
// the depth to reach the app's status.
func TestQueueDepthInStatus(t *testing.T) {
	t.Parallel()
	app := blogOnBroker(t, "depth")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	users, err := dialService(t, app, "users")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = users.Close() }()
	for range 3 {
		if err := publishAs(ctx, users, "depth.emails.exchange", "depth.emails"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "status counts three messages", func(ctx context.Context) error {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		if len(live.Status.Queues) != 1 || live.Status.Queues[0].Messages != 3 ||
			live.Status.QueuedMessages == nil || *live.Status.QueuedMessages != 3 {
			return fmt.Errorf("status.queues %+v, queuedMessages %v", live.Status.Queues, live.Status.QueuedMessages)
		}
		return nil
	})
	// The same figures reach the operator's metrics, which the alert rules use.
	labels := prometheus.Labels{"namespace": app.Namespace, "app": app.Name, "queue": "emails"}
	for name, g := range map[string]*prometheus.GaugeVec{"courier_queue_messages": queueMessages, "courier_queue_consumers": queueConsumers} {
		m := &dto.Metric{}
		if err := g.With(labels).Write(m); err != nil {
			t.Fatal(err)
		}
		want := map[string]float64{"courier_queue_messages": 3, "courier_queue_consumers": 0}[name]
		if got := m.GetGauge().GetValue(); got != want {
			t.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
	}
}

// TestExternalBroker points an app at an existing broker through a Secret
// and follows the Secret: missing, wrong, then right. The suite retries a
// broker that is not ready only after ten minutes, so each step being seen
// within a wait shows the operator watches the Secret.
func TestExternalBroker(t *testing.T) {
	t.Parallel()
	node := testBroker(t)
	ns := namespace(t)
	app := fixture.BlogWithQueues(ns, fixture.ExternalBroker("rabbitmq-admin", "rabbitmq.messaging.svc", 5672))
	app.Name = "external"
	app.UID = ""
	create(t, app)
	c := waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonExternalSecretMissing)
	if !strings.Contains(c.Message, "rabbitmq-admin") {
		t.Errorf("BrokerReady message %q does not name the Secret", c.Message)
	}
	waitCondition(t, app, v1alpha1.ConditionCredentialsReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker)

	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rabbitmq-admin"},
		Data: map[string][]byte{
			v1alpha1.ExternalManagementURLKey: []byte("http://rabbitmq.messaging.svc:15672"),
			v1alpha1.ExternalUsernameKey:      []byte(node.AdminUser),
			v1alpha1.ExternalPasswordKey:      []byte("wrong"),
		},
	}
	create(t, secret)
	waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonBrokerUnauthorized)

	secret.Data[v1alpha1.ExternalPasswordKey] = []byte(node.AdminPassword)
	if err := k8s.Update(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
	waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionTrue, v1alpha1.ReasonBrokerAvailable)
	users := connectionSecret(t, app, "users")
	if want := "@rabbitmq.messaging.svc:5672/external"; !strings.HasSuffix(string(users.Data["url"]), want) {
		t.Errorf("users url %q, want the external broker's address (%s)", users.Data["url"], want)
	}
	conn, err := amqp.Dial(localURL(t, string(users.Data["url"])))
	if err != nil {
		t.Fatalf("dial as users: %v", err)
	}
	_ = conn.Close()

	// Deleting it cleans up the external broker too.
	if err := k8s.Delete(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	waitGone(t, app)
	if _, err := adminAPI(t).GetVhost("external"); !isHTTPNotFound(err) {
		t.Errorf("vhost external after deletion: %v, want not found", err)
	}
}

// TestSteadyStateWithBroker lets an app with a broker settle, then checks
// for 30 s, across ten resyncs and thirty queue depth polls, that nothing
// it owns changes, its status is not rewritten and the broker needs no
// repair; and that a reconcile on top makes no write at all.
func TestSteadyStateWithBroker(t *testing.T) {
	t.Parallel()
	app := blogOnBroker(t, "steady")
	markAllAvailable(t, app)
	waitReady(t, app, metav1.ConditionTrue)
	ns := app.Namespace

	// Events count what the operator did: an apply the API server found
	// changed nothing keeps every resourceVersion, but not its event; a
	// repair on the broker has one too (BrokerUpdated).
	events := func() map[string]int32 {
		list := &eventsv1.EventList{}
		if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		out := map[string]int32{}
		for _, e := range list.Items {
			n := int32(1)
			if e.Series != nil {
				n = e.Series.Count
			}
			out[e.Reason+" "+e.Note] += n
		}
		return out
	}

	eventsBefore := events()
	// 9 objects of a one-node broker (no disruption budget), the monitoring
	// Secret, 3 connection Secrets, 4 NetworkPolicies, 4 Deployments and 4
	// Services, the app.
	steadyVersions(t, app, ownedKinds(), 26)
	if diff := cmp.Diff(eventsBefore, events()); diff != "" {
		t.Errorf("events at steady state (-before +after):\n%s", diff)
	}
	reconcileWritesNothing(t, app)
}

// TestPoisonMessageOnTheDefaultQueueIsDeadLettered declares a queue with
// maxDeliveries and no type on a one-node broker, then plays a consumer
// that crashes on a message: it is requeued every time and never settled
// by the consumer itself. The broker counts the deliveries and dead-letters
// the message after maxDeliveries of them, so it cannot loop for ever.
func TestPoisonMessageOnTheDefaultQueueIsDeadLettered(t *testing.T) {
	t.Parallel()
	const maxDeliveries = 3
	app := blogOnBroker(t, "poison", func(a *v1alpha1.MicroserviceApp) {
		a.Spec.Queues[0].Type = ""
		a.Spec.Queues[0].MaxDeliveries = ptr.To(int32(maxDeliveries))
	})
	queue := contract.QueueName(app.Name, "emails")
	eventually(t, "status.queues records a quorum queue", func(ctx context.Context) error {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		if len(live.Status.Queues) != 1 || live.Status.Queues[0].Type != v1alpha1.QueueQuorum {
			return fmt.Errorf("status.queues %+v", live.Status.Queues)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	users, err := dialService(t, app, "users")
	if err != nil {
		t.Fatalf("dial as users: %v", err)
	}
	defer func() { _ = users.Close() }()
	if err := publishAs(ctx, users, contract.ExchangeName(queue), contract.RoutingKey(queue)); err != nil {
		t.Fatalf("publish: %v", err)
	}

	mailer, err := dialService(t, app, "mailer")
	if err != nil {
		t.Fatalf("dial as mailer: %v", err)
	}
	defer func() { _ = mailer.Close() }()
	ch, err := mailer.Channel()
	if err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.ConsumeWithContext(ctx, queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("mailer consuming: %v", err)
	}
	crashes := 0
	for crashes < maxDeliveries {
		select {
		case d := <-deliveries:
			crashes++
			if err := d.Nack(false, true); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("the message was delivered %d times, want %d", crashes, maxDeliveries)
		}
	}

	api := adminAPI(t)
	eventually(t, "the poison message is in the dead-letter queue", func(context.Context) error {
		q, err := api.GetQueue(app.Name, contract.DeadLetterQueueName(queue))
		if err != nil {
			return err
		}
		if q.Messages != 1 {
			return fmt.Errorf("%d messages in %s", q.Messages, q.Name)
		}
		return nil
	})
	select {
	case d := <-deliveries:
		t.Errorf("delivery %d of the poison message (redelivered %v), want none after %d", crashes+1, d.Redelivered, maxDeliveries)
	default:
	}
}

// TestDeletedBrokerUserIsRepairedBeforeTheResync deletes a service's broker
// user by hand and runs one reconcile on a reconciler whose resync is an
// hour away and whose memo says the topology was declared a moment ago:
// the reconcile checks what the conditions claim, finds the user missing
// and declares again, so the user is back at once.
func TestDeletedBrokerUserIsRepairedBeforeTheResync(t *testing.T) {
	t.Parallel()
	app := blogOnBroker(t, "verified")
	r := &MicroserviceAppReconciler{Client: mgrClient, APIReader: k8s, Recorder: events.NewFakeRecorder(100), Admin: testAdmin,
		OperatorNamespace: reconciler.OperatorNamespace, ResyncInterval: time.Hour, QueueStatsInterval: time.Hour}
	reconcileWith := func() {
		t.Helper()
		if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(app)}); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
	}
	reconcileWith() // declares and remembers it for an hour
	mailer := broker.UserName(app.Name, "mailer")
	api := adminAPI(t)
	if _, err := api.DeleteUser(mailer); err != nil {
		t.Fatal(err)
	}
	reconcileWith()
	if _, err := api.GetUser(mailer); err != nil {
		t.Fatalf("user %s after a reconcile: %v, want it declared again", mailer, err)
	}
	conn, err := dialService(t, app, "mailer")
	if err != nil {
		t.Fatalf("dial as mailer after the repair: %v", err)
	}
	_ = conn.Close()
}
