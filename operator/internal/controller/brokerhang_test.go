package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/metadata"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/test/brokertest"
)

// createBrokerAdminSecret creates the Secret broker-admin in ns, the
// external broker's administrator: the test node's, with its management API
// at managementURL, or at the node's own address when managementURL is empty.
func createBrokerAdminSecret(t *testing.T, ns, managementURL string) {
	t.Helper()
	node := testBroker(t)
	if managementURL == "" {
		managementURL = "http://" + net.JoinHostPort(node.Host, strconv.Itoa(node.ManagementPort))
	}
	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "broker-admin"},
		Data: map[string][]byte{
			v1alpha1.ExternalManagementURLKey: []byte(managementURL),
			v1alpha1.ExternalUsernameKey:      []byte(node.AdminUser),
			v1alpha1.ExternalPasswordKey:      []byte(node.AdminPassword),
		},
	})
}

// externalApp creates, in a namespace of its own, the blog with queues on an
// external broker whose management API is at managementURL, with the test
// node's administrator.
func externalApp(t *testing.T, ns, name, managementURL string) *v1alpha1.MicroserviceApp {
	t.Helper()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	createBrokerAdminSecret(t, ns, managementURL)
	app := fixture.BlogWithQueues(ns, fixture.ExternalBroker("broker-admin", "rabbitmq.messaging.svc", 5672))
	app.Name = name
	app.UID = ""
	create(t, app)
	return app
}

// TestHangingBrokerHoldsBackOnlyItsApp gives app A an external broker that
// accepts connections and never answers. App B, on a working broker,
// becomes Ready meanwhile, and A's broker call ends at the broker timeout
// with a condition saying so. With one worker and unbounded broker calls,
// B would wait behind A.
func TestHangingBrokerHoldsBackOnlyItsApp(t *testing.T) {
	t.Parallel()
	node := testBroker(t)
	hang := brokertest.StartProxy(t, net.JoinHostPort(node.Host, strconv.Itoa(node.ManagementPort)), true)
	a := externalApp(t, "hanging-broker-a", "hanging", "http://"+hang.Addr)
	eventually(t, "app A's reconcile is in a call to its broker", func(context.Context) error {
		if hang.Accepts() == 0 {
			return errors.New("no connection to the hanging broker yet")
		}
		return nil
	})

	b := blogOnBroker(t, "beside-hanging")
	markAllAvailable(t, b)
	waitReady(t, b, metav1.ConditionTrue)

	c := waitCondition(t, a, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonBrokerUnreachable)
	if want := "no answer in time"; !strings.Contains(c.Message, want) {
		t.Errorf("BrokerReady message %q, want it to say %q", c.Message, want)
	}
}

// TestFailingBrokerIsRetriedAtTheRetryInterval points an app at a broker
// that resets every connection, whose error text carries the client's
// ephemeral port. The app's status says so once and stays as it is: each
// attempt's message is the same, so the status write does not bring the
// app straight back for another attempt. The suite's retry interval is ten
// minutes: within the window below the operator makes only the attempts of
// the reconciles its own first writes (objects, status) still bring, not
// one per status write, which was a hot loop of dozens a second.
func TestFailingBrokerIsRetriedAtTheRetryInterval(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	var attempts atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			attempts.Add(1)
			// A zero linger makes Close send a reset.
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		}
	}()
	app := externalApp(t, "resetting-broker", "resetting", "http://"+l.Addr().String())
	c := waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonBrokerUnreachable)
	if want := "connection reset by the broker"; !strings.Contains(c.Message, want) {
		t.Errorf("BrokerReady message %q, want it to say %q", c.Message, want)
	}

	before := attempts.Load()
	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	// Absence of a hot loop can only be watched for a while.
	const window = 5 * time.Second
	throughout(t, window, poll, func() error {
		if n := attempts.Load() - before; n > 5 {
			return fmt.Errorf("%d attempts on the broker within %s of reporting it unreachable, want a few at most (retry interval %s)",
				n, window, reconciler.retryInterval())
		}
		return nil
	})
	now := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), now); err != nil {
		t.Fatal(err)
	}
	if was, is := findCondition(live, v1alpha1.ConditionBrokerReady), findCondition(now, v1alpha1.ConditionBrokerReady); *was != *is {
		t.Errorf("BrokerReady rewritten for the same cause: %+v, then %+v", was, is)
	}
}

// TestDeploymentsWaitForTheirBrokerUsers: while an app's broker cannot be
// reached (its Secret is missing), the services that use a queue get no
// Deployment, and the gateway, which uses none, gets its own. Once the
// broker is declared, each held-back Deployment appears, and by then the
// broker holds its service's user and the connection Secret exists.
func TestDeploymentsWaitForTheirBrokerUsers(t *testing.T) {
	t.Parallel()
	ns := "deployments-wait"
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	app := fixture.BlogWithQueues(ns, fixture.ExternalBroker("broker-admin", "rabbitmq.messaging.svc", 5672))
	app.Name = "waiting"
	app.UID = ""
	create(t, app)
	waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonExternalSecretMissing)
	get(t, ns, metadata.Name(app.Name, "gateway"), &appsv1.Deployment{})
	for _, svc := range []string{"users", "posts", "mailer"} {
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: metadata.Name(app.Name, svc)}, &appsv1.Deployment{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("Deployment of %s while its broker user cannot exist: %v, want none", svc, err)
		}
	}

	createBrokerAdminSecret(t, ns, "")
	api := adminAPI(t)
	for _, svc := range []string{"users", "posts", "mailer"} {
		get(t, ns, metadata.Name(app.Name, svc), &appsv1.Deployment{})
		if _, err := api.GetUser(broker.UserName(app.Name, svc)); err != nil {
			t.Errorf("broker user of %s when its Deployment appeared: %v", svc, err)
		}
		connectionSecret(t, app, svc)
	}
}
