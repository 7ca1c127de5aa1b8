package controller

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
)

// countingAdmin is the real broker admin, counting its calls by method.
type countingAdmin struct {
	broker.Admin
	mu    sync.Mutex
	calls map[string]int
}

func (a *countingAdmin) count(method string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls[method]++
}

func (a *countingAdmin) get(method string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[method]
}

func (a *countingAdmin) Declare(ctx context.Context, ep broker.Endpoint, t broker.Topology, creds broker.Credentials) ([]broker.Change, error) {
	a.count("Declare")
	return a.Admin.Declare(ctx, ep, t, creds)
}

func (a *countingAdmin) Verify(ctx context.Context, ep broker.Endpoint, t broker.Topology) error {
	a.count("Verify")
	return a.Admin.Verify(ctx, ep, t)
}

func (a *countingAdmin) QueueStats(ctx context.Context, ep broker.Endpoint, t broker.Topology) ([]broker.QueueStat, error) {
	a.count("QueueStats")
	return a.Admin.QueueStats(ctx, ep, t)
}

func (a *countingAdmin) ListQueues(ctx context.Context, ep broker.Endpoint) (broker.Queues, error) {
	a.count("ListQueues")
	return a.Admin.ListQueues(ctx, ep)
}

// countingReader reads from the API server, recording its requests.
type countingReader struct {
	client.Reader
	mu    sync.Mutex
	reads []string
	// notFound are the reads answered "not found", kept until the test
	// ends (the suite's reconciler records every test's).
	notFound []client.ObjectKey
}

// suiteReads records what the suite's reconciler reads from the API server.
var suiteReads *countingReader

func (r *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := r.Reader.Get(ctx, key, obj, opts...)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads = append(r.reads, fmt.Sprintf("get %T %s", obj, key))
	if apierrors.IsNotFound(err) {
		r.notFound = append(r.notFound, key)
	}
	return err
}

// missingIn are the objects of namespace it was asked for that did not exist.
func (r *countingReader) missingIn(namespace string) []client.ObjectKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []client.ObjectKey
	for _, k := range r.notFound {
		if k.Namespace == namespace {
			out = append(out, k)
		}
	}
	return out
}

func (r *countingReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	r.mu.Lock()
	r.reads = append(r.reads, fmt.Sprintf("list %T", list))
	r.mu.Unlock()
	return r.Reader.List(ctx, list, opts...)
}

func (r *countingReader) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.reads
	r.reads = nil
	return out
}

// TestQueueStatsCostOneBrokerCallPerBrokerPerInterval puts several apps on
// one external RabbitMQ (the real test node) with one admin Secret, and
// reconciles them all, round after round, on a reconciler whose clock the
// test steps by the queue statistics interval: each interval costs one
// listing of the broker's queues, whatever the number of apps
// (TestListQueuesServesEveryAppOnTheBroker shows each app's stats come out
// of it as its own poll would read them). At rest (after the first
// round) the reconciles read nothing from the API server: the admin
// Secret comes from the memo its unchanged resourceVersion in the metadata
// cache vouches for.
func TestQueueStatsCostOneBrokerCallPerBrokerPerInterval(t *testing.T) {
	t.Parallel()
	const ns, apps, rounds = "shared-stats", 4, 4
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	createBrokerAdminSecret(t, ns, "")
	var all []*v1alpha1.MicroserviceApp
	for i := range apps {
		app := fixture.BlogWithQueues(ns, fixture.ExternalBroker("broker-admin", "rabbitmq.messaging.svc", 5672))
		app.Name = fmt.Sprintf("stats-%d", i)
		app.UID = ""
		create(t, app)
		all = append(all, app)
	}
	// The suite's operator declares them; the reconciler below then finds
	// nothing to change on the broker.
	for _, app := range all {
		waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
	}
	// TopologyReady comes before the operator's last objects (a Deployment
	// waits for its broker user): the first round must find every one in
	// the manager's cache, or it reads the missing ones from the API server.
	for _, app := range all {
		eventually(t, "the objects of "+app.Name+" are cached", func(ctx context.Context) error {
			if err := mgrClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: metadata.MonitoringSecretName(app.Name)}, &corev1.Secret{}); err != nil {
				return err
			}
			for _, svc := range app.Spec.Services {
				if err := mgrClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: metadata.Name(app.Name, svc.Name)}, &appsv1.Deployment{}); err != nil {
					return err
				}
				if len(svc.Publishes)+len(svc.Consumes) == 0 {
					continue
				}
				if err := mgrClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: metadata.ConnectionSecretName(app.Name, svc.Name)}, &corev1.Secret{}); err != nil {
					return err
				}
			}
			return nil
		})
	}

	admin := &countingAdmin{Admin: testAdmin, calls: map[string]int{}}
	reads := &countingReader{Reader: k8s}
	clock := clocktesting.NewFakePassiveClock(time.Now())
	const interval = 30 * time.Second
	r := &MicroserviceAppReconciler{Client: mgrClient, APIReader: reads, Recorder: events.NewFakeRecorder(1000), Admin: admin,
		OperatorNamespace: reconciler.OperatorNamespace, ResyncInterval: time.Hour, QueueStatsInterval: interval,
		RetryInterval: time.Hour, secretMetadata: reconciler.secretMetadata, clock: clock}
	// The metadata cache must show the Secret before the first round, or
	// that round reads it once per app.
	eventually(t, "the Secret's metadata is cached", func(ctx context.Context) error {
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		return reconciler.secretMetadata.Get(ctx, client.ObjectKey{Namespace: ns, Name: "broker-admin"}, m)
	})

	reconcileAll := func() {
		t.Helper()
		for _, app := range all {
			if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(app)}); err != nil {
				t.Fatalf("reconcile %s: %v", app.Name, err)
			}
		}
	}
	for round := range rounds {
		reconcileAll()
		if got, want := admin.get("ListQueues"), round+1; got != want {
			t.Fatalf("after round %d of %d apps: %d listings of the broker's queues, want %d (one per interval)", round+1, apps, got, want)
		}
		// A second round within the interval polls nothing.
		reconcileAll()
		if got, want := admin.get("ListQueues"), round+1; got != want {
			t.Fatalf("round %d again within the interval: %d listings, want %d", round+1, got, want)
		}
		got := reads.take()
		switch {
		case round == 0 && len(got) != 1:
			t.Errorf("first round read %v from the API server, want the admin Secret once", got)
		case round > 0 && len(got) != 0:
			t.Errorf("round %d at rest read %v from the API server, want nothing", round+1, got)
		}
		clock.SetTime(clock.Now().Add(interval))
	}
	if n := admin.get("QueueStats"); n != 0 {
		t.Errorf("%d per-app QueueStats calls, want none", n)
	}
	t.Logf("%d apps x %d intervals x 2 reconciles: broker calls %v", apps, rounds, admin.calls)

}

// TestANewAppAsksTheAPIServerForNoSecretThatDoesNotExist: creating an app
// with queues reads none of its connection or monitoring Secrets from the
// API server only to learn they are not there. The cache lacking them is
// enough, except right after the operator created one (createdSecrets),
// and those reads find the Secret.
func TestANewAppAsksTheAPIServerForNoSecretThatDoesNotExist(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	createBrokerAdminSecret(t, ns, "")
	app := fixture.BlogWithQueues(ns, fixture.ExternalBroker("broker-admin", "rabbitmq.messaging.svc", 5672))
	// Its own name: the test broker is shared, and a vhost belongs to the
	// first namespace that declares its name.
	app.Name = "fresh-secrets"
	create(t, app)
	waitCondition(t, app, v1alpha1.ConditionCredentialsReady, metav1.ConditionTrue, v1alpha1.ReasonCredentialsIssued)
	for _, svc := range app.Spec.Services {
		if len(svc.Publishes)+len(svc.Consumes) == 0 {
			continue
		}
		eventually(t, "the connection Secret of "+svc.Name, func(ctx context.Context) error {
			return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: metadata.ConnectionSecretName(app.Name, svc.Name)}, &corev1.Secret{})
		})
	}
	if missing := suiteReads.missingIn(ns); len(missing) > 0 {
		t.Errorf("the operator asked the API server for %v, which did not exist", missing)
	}
}
