package controller

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	rh "github.com/michaelklishin/rabbit-hole/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/nats"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
	"github.com/courier-dev/courier/test/brokertest"
)

// The broker tests run the operator against one real RabbitMQ node, started
// on first use and shared by the whole suite. Every in-cluster broker
// address the operator dials ("<app>-broker.<ns>.svc:15672", an external
// broker's "<name>.svc:5672") goes through the resolver below to that node,
// so apps must have distinct names: their vhosts and users share it.

var testRabbit struct {
	once sync.Once
	node *brokertest.RabbitMQ
	err  error
}

// testBroker starts the shared node on first use.
func testBroker(t *testing.T) *brokertest.RabbitMQ {
	t.Helper()
	testRabbit.once.Do(func() { testRabbit.node, testRabbit.err = brokertest.NewRabbitMQ() })
	if testRabbit.err != nil {
		t.Fatalf("start rabbitmq: %v", testRabbit.err)
	}
	return testRabbit.node
}

func stopTestBroker() {
	if testRabbit.node != nil {
		testRabbit.node.Close()
	}
}

// testResolver maps in-cluster broker addresses to the shared node, and
// makes the hosts a test cut off unreachable.
type testResolver struct {
	mu  sync.Mutex
	cut map[string]bool
}

var resolver = &testResolver{cut: map[string]bool{}}

// testAdmin is the broker admin the suite's reconciler uses: the real one,
// dialling through the resolver, with a short dial timeout.
var testAdmin = broker.NewRabbitMQ(broker.WithResolver(resolver.resolve))

// unreachable is an address nothing listens on: the first port, privileged
// and unused.
const unreachable = "127.0.0.1:1"

func (r *testResolver) resolve(_ context.Context, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	cut := r.cut[host]
	r.mu.Unlock()
	if cut {
		return unreachable, nil
	}
	if !strings.HasSuffix(host, ".svc") {
		return addr, nil
	}
	if port == strconv.Itoa(int(nats.ClientPort)) {
		return testNATSAddr(addr)
	}
	node := testRabbit.node
	if node == nil {
		return "", fmt.Errorf("no test broker for %s", addr)
	}
	switch port {
	case strconv.Itoa(int(rabbitmq.AMQPPort)):
		return net.JoinHostPort(node.Host, strconv.Itoa(node.AMQPPort)), nil
	case strconv.Itoa(int(rabbitmq.ManagementPort)):
		return net.JoinHostPort(node.Host, strconv.Itoa(node.ManagementPort)), nil
	}
	return "", fmt.Errorf("no test broker listener for port %s", port)
}

// cutOff makes host unreachable for the rest of the test.
func (r *testResolver) cutOff(t *testing.T, host string) {
	t.Helper()
	r.mu.Lock()
	r.cut[host] = true
	r.mu.Unlock()
	t.Cleanup(func() {
		r.mu.Lock()
		delete(r.cut, host)
		r.mu.Unlock()
	})
}

// localURL rewrites the host of an in-cluster AMQP URL to the address the
// resolver gives it, as a service in the cluster would reach it.
func localURL(t *testing.T, amqpURL string) string {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatalf("parse %q: %v", amqpURL, err)
	}
	addr, err := resolver.resolve(context.Background(), u.Host)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

// adminAPI is a management API client for the shared node's administrator.
func adminAPI(t *testing.T) *rh.Client {
	t.Helper()
	node := testBroker(t)
	api, err := rh.NewClient(node.ManagementURL, node.AdminUser, node.AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// createManaged creates app, which has a managed broker, as a cluster would
// run it: its admin Secret already holds the shared node's administrator
// (the operator keeps the credentials of an admin Secret the app controls), and once
// the operator has written the StatefulSet, its status reports every node
// ready (envtest runs no StatefulSet controller).
func createManaged(t *testing.T, app *v1alpha1.MicroserviceApp) {
	t.Helper()
	node := testBroker(t)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: app.Namespace,
			Name:      metadata.BrokerNamesFor(app.Name).AdminSecret,
			Labels:    metadata.Labels(app.Name, metadata.BrokerComponent),
		},
		Data: map[string][]byte{
			rabbitmq.AdminUsernameKey: []byte(node.AdminUser),
			rabbitmq.AdminPasswordKey: []byte(node.AdminPassword),
			rabbitmq.ErlangCookieKey:  []byte("test-cookie"),
		},
	}
	create(t, secret)
	app.UID = "" // the API server assigns it
	create(t, app)
	// The operator writes only objects the app controls: hand the Secret
	// to the app, as the operator would have made it. Until then the app
	// reports a NameConflict on it; the change brings it back (the Secret
	// carries the operator's labels, so its watch sees it).
	base := secret.DeepCopy()
	secret.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(app, v1alpha1.GroupVersion.WithKind("MicroserviceApp"))}
	if err := k8s.Patch(context.Background(), secret, client.MergeFrom(base)); err != nil {
		t.Fatalf("hand the admin Secret to the app: %v", err)
	}
	n := ptr.Deref(app.Spec.Broker.Managed.Replicas, 1)
	setBrokerReady(t, app, n)
}

// setBrokerReady plays the StatefulSet controller: ready of the broker's
// nodes are ready.
func setBrokerReady(t *testing.T, app *v1alpha1.MicroserviceApp, ready int32) {
	t.Helper()
	name := metadata.BrokerNamesFor(app.Name).StatefulSet
	get(t, app.Namespace, name, &appsv1.StatefulSet{})
	setStatus(t, app.Namespace, name, func(sts *appsv1.StatefulSet) {
		n := ptr.Deref(sts.Spec.Replicas, 1)
		sts.Status = appsv1.StatefulSetStatus{
			ObservedGeneration: sts.Generation,
			Replicas:           n,
			ReadyReplicas:      ready,
			AvailableReplicas:  ready,
			CurrentReplicas:    n,
			UpdatedReplicas:    n,
		}
	})
}

// markAllAvailable plays the deployment controller for every service.
func markAllAvailable(t *testing.T, app *v1alpha1.MicroserviceApp) {
	t.Helper()
	for _, svc := range app.Spec.Services {
		name := metadata.Name(app.Name, svc.Name)
		get(t, app.Namespace, name, &appsv1.Deployment{})
		markAvailable(t, app.Namespace, name)
	}
}

// waitCondition waits for the app's condition typ to have status and reason.
func waitCondition(t *testing.T, app *v1alpha1.MicroserviceApp, typ string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	t.Helper()
	var c *metav1.Condition
	eventually(t, fmt.Sprintf("app %s %s=%s (%s)", app.Name, typ, status, reason), func(ctx context.Context) error {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		c = findCondition(live, typ)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("%s = %+v", typ, c)
		}
		return nil
	})
	return c
}

func findCondition(app *v1alpha1.MicroserviceApp, typ string) *metav1.Condition {
	for i := range app.Status.Conditions {
		if app.Status.Conditions[i].Type == typ {
			return &app.Status.Conditions[i]
		}
	}
	return nil
}

// connectionSecret waits for a service's connection Secret and returns it.
func connectionSecret(t *testing.T, app *v1alpha1.MicroserviceApp, service string) *corev1.Secret {
	t.Helper()
	return get(t, app.Namespace, metadata.ConnectionSecretName(app.Name, service), &corev1.Secret{})
}
