package nats_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
	"github.com/courier-dev/courier/operator/internal/resource/nats"
)

// startAPIServer starts a real etcd and kube-apiserver (envtest) for t.
func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set; run the tests with make test, or with KUBEBUILDER_ASSETS=$(hack/envtest.sh)")
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	return c
}

// TestObjectsPassServerSideDryRun sends every object of a one-server and a
// three-server system, and a connection Secret, through a dry-run
// server-side apply against a real API server with the operator's field
// owner: the server validates and defaults each object, and the fields the
// operator owns in its answer must be exactly what was built, or
// compare-before-apply would write on every reconcile. A pod made from the
// StatefulSet's template is dry-run created in a namespace enforcing the
// "restricted" Pod Security Standard.
func TestObjectsPassServerSideDryRun(t *testing.T) {
	c := startAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	keys, err := natsbroker.GenerateManaged("blog")
	if err != nil {
		t.Fatal(err)
	}

	// podOptions names this PriorityClass; admission refuses a pod of an
	// unknown one.
	if err := c.Create(ctx, &schedulingv1.PriorityClass{
		ObjectMeta: metav1.ObjectMeta{Name: "infrastructure"}, Value: 1000,
	}); err != nil {
		t.Fatalf("create PriorityClass: %v", err)
	}
	for i, tc := range []struct {
		name string
		opts []BrokerOption
	}{
		{"replicas=1", []BrokerOption{replicas(1)}},
		{"replicas=3", []BrokerOption{replicas(3)}},
		{"pod-options", []BrokerOption{replicas(3), podOptions}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := fmt.Sprintf("nats-%d", i)
			if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
				Name:   ns,
				Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
			}}); err != nil {
				t.Fatalf("create namespace: %v", err)
			}
			b := testBroker(append(tc.opts, func(b *nats.Broker) { b.Namespace = ns })...)
			n := b.Replicas
			in := nats.Input{Broker: b, Keys: keys}
			built := 0
			for _, bl := range nats.Builders {
				obj := bl.Build(in)
				if obj == nil {
					continue
				}
				built++
				dryRunApply(ctx, t, c, bl.Object, obj)
			}
			want := len(nats.Builders)
			if n < 3 {
				want-- // no disruption budget
			}
			if built != want {
				t.Errorf("built %d objects, want %d", built, want)
			}
			seed, err := natsbroker.GenerateAccount()
			if err != nil {
				t.Fatal(err)
			}
			creds, err := natsbroker.IssueUser(b.App, "users", seed)
			if err != nil {
				t.Fatal(err)
			}
			dryRunApply(ctx, t, c, kind.Secret, nats.ConnectionSecret(nats.Connection{
				App: b.App, Service: "users", Namespace: ns, URL: b.URL(), Creds: creds,
				Labels: metadata.Labels(b.App, "users"), Owner: b.Owner,
			}))
			dryRunPod(ctx, t, c, b, keys)
			err = c.Get(ctx, client.ObjectKey{Namespace: ns, Name: metadata.BrokerNamesFor(b.App).StatefulSet}, &appsv1.StatefulSet{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("get StatefulSet after dry runs = %v, want not found", err)
			}
		})
	}
}

// dryRunApply applies obj, of kind k, with the operator's field owner in
// dry-run mode and checks that the fields the owner holds in the server's
// answer equal obj.
func dryRunApply(ctx context.Context, t *testing.T, c client.Client, k kind.Object, obj runtime.ApplyConfiguration) {
	t.Helper()
	want := toMap(t, obj)
	// An unstructured apply keeps the whole answer, managed fields included,
	// which a typed apply configuration has no field for.
	u := &unstructured.Unstructured{Object: toMap(t, obj)}
	err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(metadata.FieldOwner), client.ForceOwnership, client.DryRunAll)
	if err != nil {
		t.Errorf("dry-run apply %s %s: %v", k.Kind, u.GetName(), err)
		return
	}
	typed := k.New()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, typed); err != nil {
		t.Fatalf("convert %s %s: %v", k.Kind, u.GetName(), err)
	}
	if typed.GetUID() == "" || len(typed.GetManagedFields()) == 0 {
		t.Fatalf("%s %s: the answer is not a stored object (no uid or managed fields): %+v", k.Kind, u.GetName(), u.Object)
	}
	got, err := k.Owned(typed, metadata.FieldOwner)
	if err != nil {
		t.Fatalf("extract the operator's fields of %s %s: %v", k.Kind, u.GetName(), err)
	}
	if diff := cmp.Diff(want, toMap(t, got)); diff != "" {
		t.Errorf("%s %s: the operator's fields as stored differ from what was built (-built +stored):\n%s", k.Kind, u.GetName(), diff)
	}
}

// dryRunPod creates, in dry-run mode, the first pod the StatefulSet
// controller would create, so that admission (Pod Security "restricted"
// included) judges the pod template itself.
func dryRunPod(ctx context.Context, t *testing.T, c client.Client, b nats.Broker, keys natsbroker.Managed) {
	t.Helper()
	sts := nats.StatefulSet(b, keys)
	var tmpl corev1.PodTemplateSpec
	fromApplyConfig(t, sts.Spec.Template, &tmpl)
	pod := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	pod.Name = *sts.Name + "-0"
	pod.Namespace = b.Namespace
	// What the StatefulSet controller adds: the pod's DNS identity and its
	// claim from the volume claim template.
	pod.Spec.Hostname = pod.Name
	pod.Spec.Subdomain = *sts.Spec.ServiceName
	for _, vct := range sts.Spec.VolumeClaimTemplates {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
			Name: *vct.Name,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
				ClaimName: *vct.Name + "-" + pod.Name,
			}},
		})
	}
	if err := c.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Errorf("dry-run create pod %s in a namespace enforcing the restricted Pod Security Standard: %v", pod.Name, err)
	}
}

func toMap(t *testing.T, v any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("unmarshal %T: %v", v, err)
	}
	return m
}

func fromApplyConfig(t *testing.T, ac, out any) {
	t.Helper()
	raw, err := json.Marshal(ac)
	if err != nil {
		t.Fatalf("marshal %T: %v", ac, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("unmarshal into %T: %v", out, err)
	}
}
