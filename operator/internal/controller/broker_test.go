package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	rh "github.com/michaelklishin/rabbit-hole/v2"
	amqp "github.com/rabbitmq/amqp091-go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
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
	return blogOn(t, rabbitMQKind, name, opts...)
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
