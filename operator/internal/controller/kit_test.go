package controller

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
)

// podEnv is the environment a pod of the service's Deployment would start
// with, as the kubelet resolves it: values as written, Secret keys read from
// the Secret, the downward API filled in. BROKER_URL's host is the only
// thing changed: the test resolves it to the test broker, as the cluster's
// DNS would resolve the Service.
func podEnv(t *testing.T, app *v1alpha1.MicroserviceApp, service string) func(string) string {
	t.Helper()
	d := get(t, app.Namespace, metadata.Name(app.Name, service), &appsv1.Deployment{})
	env := map[string]string{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			secret := get(t, app.Namespace, ref.Name, &corev1.Secret{})
			env[e.Name] = string(secret.Data[ref.Key])
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = d.Name + "-0"
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = app.Namespace
		default:
			t.Fatalf("%s: no test resolution for %s", service, e.Name)
		}
	}
	if u, ok := env[contract.EnvBrokerURL]; ok {
		env[contract.EnvBrokerURL] = localURL(t, u)
	}
	// The Secret volumes, as the kubelet mounts them: each item of the
	// Secret a file under the mount path, here a directory of the test's;
	// a variable naming a path under the mount names the test's file.
	for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
		var vol *corev1.SecretVolumeSource
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name {
				vol = v.Secret
			}
		}
		if vol == nil {
			continue
		}
		secret := get(t, app.Namespace, vol.SecretName, &corev1.Secret{})
		dir := t.TempDir()
		for _, item := range vol.Items {
			if err := os.WriteFile(filepath.Join(dir, item.Path), secret.Data[item.Key], 0o400); err != nil {
				t.Fatal(err)
			}
		}
		for name, value := range env {
			if rest, ok := strings.CutPrefix(value, m.MountPath+"/"); ok {
				env[name] = filepath.Join(dir, rest)
			}
		}
	}
	return func(name string) string { return env[name] }
}

// connectAs connects the kit's messaging driver the way the kit does in a
// service's pod: configuration from kit.LoadConfig over the pod's
// environment, for the logical queues the service says it uses, and no
// topology of its own.
func connectAs(ctx context.Context, t *testing.T, app *v1alpha1.MicroserviceApp, service string, queues ...string) messaging.Broker {
	t.Helper()
	cfg, err := kit.LoadConfig(podEnv(t, app, service), nil, queues...)
	if err != nil {
		t.Fatalf("%s: load config: %v", service, err)
	}
	if cfg.DevDeclareTopology {
		t.Fatalf("%s: the operator set %s", service, contract.EnvDevDeclareTopology)
	}
	// As the kit's connectBroker, which is not exported: on NATS a
	// service may subscribe to its own inbox only.
	var inbox string
	if cfg.BrokerKind == contract.BrokerNATS {
		inbox = contract.InboxPrefix(cfg.Service)
	}
	b, err := messaging.Connect(ctx, messaging.Config{
		Kind:            cfg.BrokerKind,
		URL:             cfg.BrokerURL,
		CredentialsFile: cfg.BrokerCredentialsFile,
		InboxPrefix:     inbox,
		App:             cfg.App,
		Queues:          cfg.Queues,
		ClientName:      cfg.App + "/" + cfg.Service,
	})
	if err != nil {
		t.Fatalf("%s: connect: %v", service, err)
	}
	t.Cleanup(func() {
		if err := b.Close(context.Background()); err != nil {
			t.Errorf("%s: close: %v", service, err)
		}
	})
	return b
}

// TestKitDriverOnOperatorWiring runs the real example end to end on the
// broker side, on each broker kind: the kit's driver, given only the
// environment (and, on NATS, the mounted creds file) the operator rendered
// for users and for mailer, publishes a welcome e-mail job as users and
// consumes it as mailer, through the topology, users and permissions the
// operator declared.
func TestKitDriverOnOperatorWiring(t *testing.T) {
	t.Parallel()
	for _, k := range testedKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			app := blogOn(t, k, "kit")
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()

			users := connectAs(ctx, t, app, "users", "emails")
			mailer := connectAs(ctx, t, app, "mailer", "emails")

			// The job as services/internal/mailjob encodes it; that package
			// is internal to services/, so the wire form is spelled out
			// here.
			job, err := json.Marshal(map[string]any{
				"id":       "6f1c1a52-5b0e-4c8e-9d6b-2f1d2c3b4a5e",
				"to":       "ann@example.com",
				"template": "welcome",
				"data":     map[string]string{"name": "Ann"},
			})
			if err != nil {
				t.Fatal(err)
			}
			id, err := users.Publish(ctx, "emails", job)
			if err != nil {
				t.Fatalf("users publishes the job: %v", err)
			}

			got := make(chan messaging.Message, 1)
			consumeCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- mailer.Consume(consumeCtx, "emails", func(_ context.Context, m messaging.Message) error {
					got <- m
					stop()
					return nil
				}, messaging.ConsumeOptions{Concurrency: 1})
			}()
			select {
			case m := <-got:
				if m.ID != id || string(m.Body) != string(job) || m.Queue != "emails" {
					t.Errorf("mailer got id %q queue %q body %s, want id %q on emails with the job", m.ID, m.Queue, m.Body, id)
				}
			case <-ctx.Done():
				t.Fatal("mailer consumed nothing")
			}
			if err := <-done; err != nil {
				t.Errorf("mailer's consumer: %v", err)
			}
		})
	}
}
