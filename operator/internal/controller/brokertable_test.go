package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/nats"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
	"github.com/courier-dev/courier/services/kit/contract"
)

// The tests of this file hold for every broker kind and run once per kind
// (testedKinds): the same app, the same least privilege, the same
// guarantees, each checked on the real broker with the credentials the
// operator wrote.

// TestTopologyFromPublishesAndConsumes checks that users and posts
// publishing to emails and mailer consuming it give exactly the expected
// topology, users and permissions on the broker, read back with the
// broker's own tools; and that the services' Secrets, environment and
// status follow.
func TestTopologyFromPublishesAndConsumes(t *testing.T) {
	t.Parallel()
	for _, k := range testedKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			app := blogOn(t, k, "topology")
			k.checkTopology(t, app)

			// Each service that uses the queue has a Secret with its own
			// user and the variables that point at it; the gateway has
			// neither.
			for _, svc := range []string{"users", "posts", "mailer"} {
				secret := connectionSecret(t, app, svc)
				if got, want := string(secret.Data["url"]), k.wantURL(app, svc, secret); got != want {
					t.Errorf("%s url = %q, want %q", svc, got, want)
				}
				d := get(t, app.Namespace, metadata.Name(app.Name, svc), &appsv1.Deployment{})
				env := envOf(d)
				if env[contract.EnvBrokerKind] != string(k.kind) || env[contract.QueueEnv("emails")] != "topology.emails" ||
					env[contract.EnvBrokerURL] != "secret "+metadata.ConnectionSecretName(app.Name, svc)+"/url" {
					t.Errorf("%s env = %v", svc, env)
				}
				// NATS credentials are a file, mounted from the Secret;
				// RabbitMQ's are in the url.
				if file, ok := env[contract.EnvBrokerCredentialsFile]; ok != (k.kind == v1alpha1.BrokerNATS) || (ok && file != nats.CredentialsFile) {
					t.Errorf("%s %s = %q (set: %t)", svc, contract.EnvBrokerCredentialsFile, file, ok)
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
			err := k8s.Get(context.Background(), client.ObjectKey{Namespace: app.Namespace, Name: metadata.ConnectionSecretName(app.Name, "gateway")}, &corev1.Secret{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("gateway connection Secret: %v, want not found", err)
			}

			// With every service available, the app is Ready and reports
			// its queue.
			markAllAvailable(t, app)
			waitReady(t, app, metav1.ConditionTrue)
			live := &v1alpha1.MicroserviceApp{}
			if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
				t.Fatal(err)
			}
			want := []v1alpha1.QueueStatus{{Name: "emails", Type: k.queueType}}
			if diff := cmp.Diff(want, live.Status.Queues); diff != "" || live.Status.QueuedMessages == nil || *live.Status.QueuedMessages != 0 {
				t.Errorf("status.queues (-want +got):\n%s\nqueuedMessages %v", diff, live.Status.QueuedMessages)
			}
			for _, typ := range []string{v1alpha1.ConditionBrokerReady, v1alpha1.ConditionCredentialsReady} {
				if c := findCondition(live, typ); c == nil || c.Status != metav1.ConditionTrue {
					t.Errorf("%s = %+v", typ, c)
				}
			}
		})
	}
}

// TestLeastPrivilege connects as the services, with the credentials the
// operator wrote to their Secrets: users may publish to emails and do
// nothing else; mailer may consume emails and publish nowhere a job goes;
// neither may declare anything; another app on the same broker reaches
// nothing of this one.
func TestLeastPrivilege(t *testing.T) {
	t.Parallel()
	for _, k := range testedKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			app := blogOn(t, k, "privilege")
			queue := contract.QueueName(app.Name, "emails")
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()

			users := k.mustDial(t, app, "users")
			if err := users.publish(ctx, k.queueDest(app.Name, "emails")); err != nil {
				t.Errorf("users publishing to emails: %v, want it confirmed", err)
			}
			for _, d := range k.forbiddenToPublisher(app.Name) {
				if err := users.publish(ctx, d); !k.refused(err) {
					t.Errorf("users publishing to %s: %v, want it refused", d, err)
				}
			}
			if _, err := users.consume(ctx, queue); !k.refused(err) {
				t.Errorf("users consuming emails: %v, want it refused", err)
			}
			if err := users.declareOwn(ctx); !k.refused(err) {
				t.Errorf("users declaring a queue of its own: %v, want it refused", err)
			}

			mailer := k.mustDial(t, app, "mailer")
			body, err := mailer.consume(ctx, queue)
			if err != nil {
				t.Fatalf("mailer consuming emails: %v", err)
			}
			if string(body) != "job" {
				t.Errorf("mailer got %q, want the job users published", body)
			}
			for _, d := range k.forbiddenToConsumer(app.Name) {
				if err := mailer.publish(ctx, d); !k.refused(err) {
					t.Errorf("mailer publishing to %s: %v, want it refused", d, err)
				}
			}
			if err := mailer.declareOwn(ctx); !k.refused(err) {
				t.Errorf("mailer declaring a queue of its own: %v, want it refused", err)
			}

			other := blogIn(t, k, app.Namespace, "privilege-other")
			k.otherAppSeesNothing(t, app, other)
		})
	}
}

// blogIn is blogOn in the namespace ns.
func blogIn(t *testing.T, k brokerKind, ns, name string) *v1alpha1.MicroserviceApp {
	t.Helper()
	app := fixture.BlogWithQueues(ns)
	app.Name = name
	k.createManaged(t, app)
	waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
	return app
}

// TestBrokerDriftIsRepaired changes the broker by hand and waits for the
// next resync to undo it: a deleted user comes back, a revoked permission
// returns, a deleted binding (RabbitMQ) or durable consumer (NATS) is
// declared again, and a job flows from users to mailer as before.
func TestBrokerDriftIsRepaired(t *testing.T) {
	t.Parallel()
	for _, k := range testedKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			app := blogOn(t, k, "drift")
			posts := connectionSecret(t, app, "posts").Data

			k.deleteUser(t, app, "posts")
			k.revokePermissions(t, app, "users")
			k.deleteRoute(t, app, "emails")
			var extra func(context.Context) error
			if k.extraDrift != nil {
				extra = k.extraDrift(t, app)
			}

			eventually(t, "posts' user is back", func(context.Context) error {
				return k.connects(t, app, "posts", posts)
			})
			eventually(t, "users may publish to emails again", func(ctx context.Context) error {
				return k.publishPermitted(ctx, t, app, "users", "emails")
			})
			eventually(t, "the queue's route is back", func(ctx context.Context) error {
				return k.routeIntact(ctx, t, app, "emails")
			})
			if extra != nil {
				eventually(t, "the kind's own drift is repaired", extra)
			}
			for _, svc := range []string{"users", "posts", "mailer"} {
				if err := k.connects(t, app, svc, connectionSecret(t, app, svc).Data); err != nil {
					t.Errorf("dial as %s after the repair: %v", svc, err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if err := k.mustDial(t, app, "users").publish(ctx, k.queueDest(app.Name, "emails")); err != nil {
				t.Fatalf("users publishing after the repair: %v", err)
			}
			if body, err := k.mustDial(t, app, "mailer").consume(ctx, contract.QueueName(app.Name, "emails")); err != nil || string(body) != "job" {
				t.Errorf("mailer consuming after the repair: %q, %v; want the job", body, err)
			}
		})
	}
}

// TestRotation rotates users' credentials by deleting its connection
// Secret: the operator writes new credentials, the broker takes them and
// refuses the old ones, and users' pod template gets the new Secret's
// hash, which rolls its pods. The other services keep theirs.
func TestRotation(t *testing.T) {
	t.Parallel()
	for _, k := range testedKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			app := blogOn(t, k, "rotation")
			old := connectionSecret(t, app, "users")
			posts := connectionSecret(t, app, "posts")
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
			if err := k.connects(t, app, "users", old.Data); err != nil {
				t.Fatalf("users' credentials before the rotation: %v", err)
			}

			if err := k8s.Delete(context.Background(), old); err != nil {
				t.Fatal(err)
			}
			var rotated *corev1.Secret
			eventually(t, "a new Secret with new credentials", func(ctx context.Context) error {
				s := &corev1.Secret{}
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(old), s); err != nil {
					return err
				}
				if s.UID == old.UID || bytes.Equal(s.Data[k.credentialsKey], old.Data[k.credentialsKey]) {
					return errors.New("not rotated yet")
				}
				rotated = s
				return nil
			})
			waitHash("the new hash", rabbitmq.ConnectionHash(rotated.Data))
			eventually(t, "the broker takes the new credentials", func(context.Context) error {
				return k.connects(t, app, "users", rotated.Data)
			})
			// The same write that let the new ones in shut the old ones out.
			if err := k.connects(t, app, "users", old.Data); err == nil {
				t.Error("the old credentials still work after the rotation")
			}
			// The other services keep their credentials.
			now := connectionSecret(t, app, "posts")
			if bytes.Equal(now.Data[k.credentialsKey], rotated.Data[k.credentialsKey]) {
				t.Error("posts got users' new credentials")
			}
			if !bytes.Equal(now.Data[k.credentialsKey], posts.Data[k.credentialsKey]) {
				t.Error("posts' credentials changed with users' rotation")
			}
			if err := k.connects(t, app, "posts", now.Data); err != nil {
				t.Errorf("posts after users' rotation: %v", err)
			}
		})
	}
}

// TestDeletionCleansUpBroker deletes an app: everything of it leaves the
// broker (RabbitMQ: its users and vhost; NATS: its account, and with it
// its stream and users), its services' credentials are refused, and the
// finalizer lets the app go.
func TestDeletionCleansUpBroker(t *testing.T) {
	t.Parallel()
	for _, k := range testedKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			app := blogOn(t, k, "deleted")
			live := &v1alpha1.MicroserviceApp{}
			if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(live.Finalizers, cleanupFinalizer) {
				t.Fatalf("finalizers %v, want %s", live.Finalizers, cleanupFinalizer)
			}
			if err := k.onBroker(t, app); err != nil {
				t.Fatalf("the app on the broker before its deletion: %v", err)
			}
			mailer := connectionSecret(t, app, "mailer").Data

			if err := k8s.Delete(context.Background(), app); err != nil {
				t.Fatal(err)
			}
			waitGone(t, app)
			// envtest runs no garbage collector: the app's Secrets (the
			// NATS account key among them) outlive it, so the broker can
			// still be asked about the app.
			if err := k.onBroker(t, app); !errors.Is(err, errNotOnBroker) {
				t.Errorf("the app on the broker after its deletion: %v, want nothing left", err)
			}
			if err := k.connects(t, app, "mailer", mailer); err == nil {
				t.Error("the mailer's credentials still work after the deletion")
			}
			waitEvent(t, live, corev1.EventTypeNormal, eventBrokerCleanedUp)
		})
	}
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
	for _, k := range testedKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					app := blogOn(t, k, "stuck-"+tt.name)
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
					if err := k.onBroker(t, app); err != nil {
						t.Errorf("the app on the broker: %v, want it left behind", err)
					}
				})
			}
		})
	}
}

// TestSteadyStateWithBroker lets an app with a broker settle, then checks
// for 30 s, across ten resyncs and thirty queue depth polls, that nothing
// it owns changes, its status is not rewritten and the broker needs no
// repair nor gets any write; and that a reconcile on top makes no write at
// all, to the API server or to the broker.
func TestSteadyStateWithBroker(t *testing.T) {
	t.Parallel()
	for _, k := range testedKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			app := blogOn(t, k, "steady")
			markAllAvailable(t, app)
			waitReady(t, app, metav1.ConditionTrue)
			ns := app.Namespace

			// Events count what the operator did: an apply the API server
			// found changed nothing keeps every resourceVersion, but not
			// its event; a repair on the broker has one too
			// (BrokerUpdated).
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
			brokerBefore := k.snapshot(t, app)
			steadyVersions(t, app, ownedKinds(), k.steadyObjects)
			if diff := cmp.Diff(eventsBefore, events()); diff != "" {
				t.Errorf("events at steady state (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(brokerBefore, k.snapshot(t, app)); diff != "" {
				t.Errorf("the broker was written at steady state (-before +after):\n%s", diff)
			}
			reconcileWritesNothing(t, app)
			if diff := cmp.Diff(brokerBefore, k.snapshot(t, app)); diff != "" {
				t.Errorf("a reconcile at steady state wrote to the broker (-before +after):\n%s", diff)
			}
		})
	}
}

// TestQueueDepthInStatus publishes to a queue nobody consumes and waits for
// the depth to reach the app's status and the operator's metrics, then
// attaches a consumer that acknowledges nothing and waits for it to be
// counted, the messages still waiting.
func TestQueueDepthInStatus(t *testing.T) {
	t.Parallel()
	for _, k := range testedKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			app := blogOn(t, k, "depth")
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			users := k.mustDial(t, app, "users")
			for range 3 {
				if err := users.publish(ctx, k.queueDest(app.Name, "emails")); err != nil {
					t.Fatal(err)
				}
			}
			waitQueueStatus(t, app, 3, 0)

			if err := k.mustDial(t, app, "mailer").hold(ctx, contract.QueueName(app.Name, "emails")); err != nil {
				t.Fatalf("mailer consuming emails: %v", err)
			}
			waitQueueStatus(t, app, 3, 1)
		})
	}
}

// waitQueueStatus waits for the app's one queue to report messages and
// consumers in status and in the operator's metrics, which the alert
// rules use.
func waitQueueStatus(t *testing.T, app *v1alpha1.MicroserviceApp, messages int64, consumers int32) {
	t.Helper()
	eventually(t, fmt.Sprintf("status counts %d messages and %d consumers", messages, consumers), func(ctx context.Context) error {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		if len(live.Status.Queues) != 1 || live.Status.Queues[0].Messages != messages || live.Status.Queues[0].Consumers != consumers ||
			live.Status.QueuedMessages == nil || *live.Status.QueuedMessages != messages {
			return fmt.Errorf("status.queues %+v, queuedMessages %v", live.Status.Queues, live.Status.QueuedMessages)
		}
		return nil
	})
	labels := prometheus.Labels{"namespace": app.Namespace, "app": app.Name, "queue": "emails"}
	for name, g := range map[string]*prometheus.GaugeVec{"courier_queue_messages": queueMessages, "courier_queue_consumers": queueConsumers} {
		m := &dto.Metric{}
		if err := g.With(labels).Write(m); err != nil {
			t.Fatal(err)
		}
		want := map[string]float64{"courier_queue_messages": float64(messages), "courier_queue_consumers": float64(consumers)}[name]
		if got := m.GetGauge().GetValue(); got != want {
			t.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
	}
}

// TestDeletedBrokerUserIsRepairedBeforeTheResync deletes a service's broker
// user by hand and runs one reconcile on a reconciler whose resync is an
// hour away and whose memo says the topology was declared a moment ago:
// the reconcile checks what the conditions claim, finds the user missing
// and declares again, so the user is back at once.
func TestDeletedBrokerUserIsRepairedBeforeTheResync(t *testing.T) {
	t.Parallel()
	for _, k := range testedKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			app := blogOn(t, k, "verified")
			r := &MicroserviceAppReconciler{Client: mgrClient, APIReader: k8s, Recorder: events.NewFakeRecorder(100),
				Admin: testAdmin, NATSAdmin: testNATSAdmin,
				OperatorNamespace: reconciler.OperatorNamespace, ResyncInterval: time.Hour, QueueStatsInterval: time.Hour}
			reconcileWith := func() {
				t.Helper()
				if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(app)}); err != nil {
					t.Fatalf("reconcile: %v", err)
				}
			}
			reconcileWith() // declares and remembers it for an hour
			mailer := connectionSecret(t, app, "mailer").Data
			k.deleteUser(t, app, "mailer")
			reconcileWith()
			if err := k.connects(t, app, "mailer", mailer); err != nil {
				t.Fatalf("dial as mailer after a reconcile: %v, want its user declared again", err)
			}
		})
	}
}
