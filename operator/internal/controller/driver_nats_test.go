package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/nats"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
)

// The NATS tests run the operator against one real nats-server in operator
// mode with a full resolver, embedded, started on first use and shared by
// the suite: every "<host>.svc:4222" the operator dials goes to it through
// the suite's resolver. Its operator key and system account (testNATSKeys)
// are what a managed system's admin Secret or an external system's Secret
// hold, so apps must have distinct names: their accounts share it.

var testNATSServer struct {
	once sync.Once
	srv  *server.Server
	keys natsbroker.Managed
	addr string
	err  error
}

// testNATSAdmin is the NATS admin the suite's reconciler uses, dialling
// through the resolver. The suite retries a failed broker call only after
// ten minutes, so one connect timing out fails the test: at a load of 35
// on the shared 2 cores a JWT handshake with the embedded server took more
// than the 2 s this once had (seen as "i/o timeout" and, from the server's
// own 2 s auth timeout, "broken pipe").
var testNATSAdmin = natsbroker.New(natsbroker.WithResolver(resolver.resolve), natsbroker.WithDialTimeout(natsConnectTimeout))

// natsConnectTimeout bounds every connect to the suite's server, the
// server's wait for a client's credentials too.
const natsConnectTimeout = 15 * time.Second

// testNATS starts the shared server on first use.
func testNATS(t *testing.T) (natsbroker.Managed, string) {
	t.Helper()
	testNATSServer.once.Do(func() { testNATSServer.err = startTestNATS() })
	if testNATSServer.err != nil {
		t.Fatalf("start nats-server: %v", testNATSServer.err)
	}
	return testNATSServer.keys, "nats://" + testNATSServer.addr
}

func startTestNATS() error {
	m, err := natsbroker.GenerateManaged("test")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "courier-nats-")
	if err != nil {
		return err
	}
	conf := fmt.Sprintf(`
host: 127.0.0.1
port: -1
server_name: courier-controller-test
jetstream: {store_dir: %q}
operator: %s
system_account: %s
resolver: {type: full, dir: %q, allow_delete: true}
resolver_preload: {%s: %s}
`, filepath.Join(dir, "js"), m.OperatorJWT, m.SystemAccount(), filepath.Join(dir, "jwt"), m.SystemAccount(), m.SystemAccountJWT)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return err
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return fmt.Errorf("nats.conf: %w", err)
	}
	opts.NoLog, opts.NoSigs = true, true
	opts.AuthTimeout = natsConnectTimeout.Seconds()
	srv, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		return errors.New("nats-server not ready in 10s")
	}
	testNATSServer.srv, testNATSServer.keys = srv, m
	testNATSServer.addr = strings.TrimPrefix(srv.ClientURL(), "nats://")
	return nil
}

func stopTestNATS() {
	if testNATSServer.srv != nil {
		testNATSServer.srv.Shutdown()
		testNATSServer.srv.WaitForShutdown()
	}
}

// testNATSAddr is the shared server's address, for the resolver.
func testNATSAddr(addr string) (string, error) {
	if testNATSServer.srv == nil {
		return "", fmt.Errorf("no test nats-server for %s", addr)
	}
	return testNATSServer.addr, nil
}

// natsExternalSecret is an external system's Secret for the shared server.
func natsExternalSecret(ns, name string, keys natsbroker.Managed) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Data: map[string][]byte{
			natsbroker.SecretKeyURL:                []byte("nats://nats.messaging.svc:4222"),
			natsbroker.SecretKeyOperatorSigningKey: []byte(keys.OperatorSeed),
			natsbroker.SecretKeySystemUserCreds:    keys.SystemUserCreds,
		},
	}
}

// natsConnects reports whether creds still let a client in.
func natsConnects(creds []byte) error {
	dir, err := os.MkdirTemp("", "creds-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	path := filepath.Join(dir, "nats.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		return err
	}
	nc, err := natsgo.Connect("nats://"+testNATSServer.addr, natsgo.UserCredentials(path), natsgo.NoReconnect(), natsgo.Timeout(natsConnectTimeout))
	if err != nil {
		return err
	}
	nc.Close()
	return nil
}

// TestNATSExternal runs the blog on an external NATS system: the missing
// Secret blocks the broker naming it; once it exists the operator declares
// the account, stream and consumer and writes each service's url and creds
// file; a job the users service publishes with only its rendered env
// reaches the mailer; rotation replaces the creds and cuts the old ones
// off; deleting the app removes its account.
func TestNATSExternal(t *testing.T) {
	t.Parallel()
	keys, _ := testNATS(t)
	ns := namespace(t)
	app := fixture.BlogWithQueues(ns, fixture.ExternalBroker("nats-system", "nats.messaging.svc", 0))
	app.Name = "natsext"
	app.UID = ""
	app.Spec.Broker.Kind = v1alpha1.BrokerNATS
	create(t, app)
	c := waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonExternalSecretMissing)
	if !strings.Contains(c.Message, "nats-system") {
		t.Errorf("BrokerReady message %q does not name the Secret", c.Message)
	}

	bad := natsExternalSecret(ns, "nats-system", keys)
	delete(bad.Data, natsbroker.SecretKeyOperatorSigningKey)
	create(t, bad)
	c = waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonBrokerSecretInvalid)
	if !strings.Contains(c.Message, natsbroker.SecretKeyOperatorSigningKey) {
		t.Errorf("BrokerReady message %q does not name the missing key", c.Message)
	}
	bad.Data = natsExternalSecret(ns, "nats-system", keys).Data
	if err := k8s.Update(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
	waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionTrue, v1alpha1.ReasonBrokerAvailable)
	waitCondition(t, app, v1alpha1.ConditionCredentialsReady, metav1.ConditionTrue, v1alpha1.ReasonCredentialsIssued)

	users := connectionSecret(t, app, "users")
	if got, want := string(users.Data[nats.ConnectionURLKey]), "nats://nats.messaging.svc:4222"; got != want {
		t.Errorf("users url %q, want %q (spec host, the kind's port)", got, want)
	}

	// users publishes, the mailer receives, each with what the operator
	// rendered for it alone.
	publisher := connectAs(t.Context(), t, app, "users", "emails")
	consumer := connectAs(t.Context(), t, app, "mailer", "emails")
	got := make(chan messaging.Message, 1)
	ctx, cancel := context.WithCancel(t.Context())
	consumed := make(chan error, 1)
	go func() {
		consumed <- consumer.Consume(ctx, "emails", func(_ context.Context, m messaging.Message) error {
			select {
			case got <- m:
			default:
			}
			return nil
		}, messaging.ConsumeOptions{})
	}()
	pctx, pcancel := context.WithTimeout(t.Context(), timeout)
	id, err := publisher.Publish(pctx, "emails", []byte(`{"to":"ada@example.com"}`))
	pcancel()
	if err != nil {
		cancel()
		t.Fatalf("publish as users: %v", err)
	}
	select {
	case m := <-got:
		if m.ID != id || string(m.Body) != `{"to":"ada@example.com"}` {
			t.Errorf("mailer got %q (id %s), want the job users published (id %s)", m.Body, m.ID, id)
		}
	case <-time.After(timeout):
		t.Error("the mailer never got the job users published")
	}
	cancel()
	if err := <-consumed; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("the mailer's consumer: %v", err)
	}

	// Queue depth reaches status from the broker.
	eventually(t, "status.queues lists emails with its consumer", func(ctx context.Context) error {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		for _, q := range live.Status.Queues {
			if q.Name == "emails" {
				return nil
			}
		}
		return fmt.Errorf("status.queues = %+v", live.Status.Queues)
	})

	// Rotation: delete the users Secret; new creds, a new hash on the pod
	// template, and the old creds no longer get in.
	oldCreds := users.Data[nats.ConnectionCredsKey]
	oldHash := get(t, ns, metadata.Name(app.Name, "users"), &appsv1.Deployment{}).Spec.Template.Annotations[contract.AnnotationConnectionHash]
	if err := natsConnects(oldCreds); err != nil {
		t.Fatalf("the users creds before rotation: %v", err)
	}
	if err := k8s.Delete(context.Background(), users); err != nil {
		t.Fatal(err)
	}
	eventually(t, "users rotated", func(ctx context.Context) error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: metadata.Name(app.Name, "users")}, d); err != nil {
			return err
		}
		if d.Spec.Template.Annotations[contract.AnnotationConnectionHash] == oldHash {
			return errors.New("the pod template still carries the old hash")
		}
		if natsConnects(oldCreds) == nil {
			return errors.New("the old creds still connect")
		}
		return nil
	})
	if fresh := connectionSecret(t, app, "users").Data[nats.ConnectionCredsKey]; natsConnects(fresh) != nil {
		t.Errorf("the new users creds do not connect: %v", natsConnects(fresh))
	}

	// Deletion removes the account: the mailer's creds are refused.
	mailer := connectionSecret(t, app, "mailer").Data[nats.ConnectionCredsKey]
	if err := k8s.Delete(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	waitGone(t, app)
	eventually(t, "the app's account is gone", func(context.Context) error {
		if natsConnects(mailer) == nil {
			return errors.New("the mailer's creds still connect")
		}
		return nil
	})
}

// TestNATSManaged runs an app on a managed NATS system: the operator writes
// the nats objects with the keys of the admin Secret the app controls,
// declares once the StatefulSet reports a ready server, and a deleted app
// whose servers are gone is never held by its finalizer.
func TestNATSManaged(t *testing.T) {
	t.Parallel()
	keys, _ := testNATS(t)
	ns := namespace(t)
	app := fixture.BlogWithQueues(ns)
	app.Name = "natsmanaged"
	app.UID = ""
	app.Spec.Broker.Kind = v1alpha1.BrokerNATS
	app.Spec.Broker.Managed.Image = "" // the kind's default
	// The exporter's image and the pod options reach the servers' pods,
	// as RabbitMQ's pod options reach its nodes.
	app.Spec.Broker.Managed.ExporterImage = "registry.example/prometheus-nats-exporter:1"
	app.Spec.Broker.Managed.PodLabels = map[string]string{"team": "mail"}
	app.Spec.Broker.Managed.NodeSelector = map[string]string{"kubernetes.io/os": "linux"}
	names := metadata.BrokerNamesFor(app.Name)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: names.AdminSecret, Labels: metadata.Labels(app.Name, metadata.BrokerComponent)},
		Data:       keys.SecretData(),
	}
	create(t, secret)
	create(t, app)
	base := secret.DeepCopy()
	secret.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(app, v1alpha1.GroupVersion.WithKind("MicroserviceApp"))}
	if err := k8s.Patch(context.Background(), secret, client.MergeFrom(base)); err != nil {
		t.Fatalf("hand the admin Secret to the app: %v", err)
	}
	waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForBrokerPods)
	sts := get(t, ns, names.StatefulSet, &appsv1.StatefulSet{})
	if img := sts.Spec.Template.Spec.Containers[0].Image; img != nats.DefaultImage {
		t.Errorf("server image %q, want %q", img, nats.DefaultImage)
	}
	if img := sts.Spec.Template.Spec.Containers[1].Image; img != app.Spec.Broker.Managed.ExporterImage {
		t.Errorf("exporter image %q, want spec.broker.managed.exporterImage %q", img, app.Spec.Broker.Managed.ExporterImage)
	}
	if tmpl := sts.Spec.Template; tmpl.Labels["team"] != "mail" || tmpl.Spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("pod labels %v, node selector %v: want spec.broker.managed's podLabels and nodeSelector", tmpl.Labels, tmpl.Spec.NodeSelector)
	}
	cm := get(t, ns, names.ConfigMap, &corev1.ConfigMap{})
	if !strings.Contains(cm.Data[nats.ConfigKey], keys.OperatorJWT) {
		t.Error("nats.conf does not trust the admin Secret's operator")
	}
	setBrokerReady(t, app, 1)
	waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
	mailer := connectionSecret(t, app, "mailer")
	if got, want := string(mailer.Data[nats.ConnectionURLKey]), "nats://natsmanaged-broker."+ns+".svc:4222"; got != want {
		t.Errorf("mailer url %q, want %q", got, want)
	}
	if err := natsConnects(mailer.Data[nats.ConnectionCredsKey]); err != nil {
		t.Errorf("the mailer's creds: %v", err)
	}

	// The servers go first: the clean-up is skipped, the app still goes.
	if err := k8s.Delete(context.Background(), sts); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	waitGone(t, app)
}
