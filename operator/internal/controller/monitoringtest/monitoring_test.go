// Package monitoringtest runs the controller against an API server of its
// own that starts without the prometheus-operator's CRDs and has them
// installed mid-test, which the shared controller suite cannot do without
// changing what its other tests see.
package monitoringtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/controller"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource"
)

const (
	timeout = 30 * time.Second
	poll    = 100 * time.Millisecond
)

// monitoringWrites counts the controller's writes of PodMonitors and
// PrometheusRules, through the manager's reconciler.
var monitoringWrites atomic.Int64

// TestMonitoringObjects starts the operator without the prometheus-operator's
// CRDs: the app becomes Ready with its scrape annotations and nothing else.
// Then it installs the CRDs: the operator notices them (its discovery
// re-check, nothing else triggers a reconcile of the idle app) and writes
// the app's PodMonitor and PrometheusRule, which a steady state leaves alone,
// drift and deletion bring back, the app's labels relabel, and pruning
// covers.
func TestMonitoringObjects(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set; run `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest.sh)")
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	utilruntime.Must(monitoringv1.AddToScheme(scheme))

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{ByObject: controller.CacheByObject()},
	})
	if err != nil {
		t.Fatal(err)
	}
	counting := interceptor.NewClient(noWatch{mgr.GetClient()}, interceptor.Funcs{
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			if k, ok := obj.(interface{ GetKind() *string }); ok && isMonitoringKind(ptr.Deref(k.GetKind(), "")) {
				monitoringWrites.Add(1)
			}
			return c.Apply(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			switch obj.(type) {
			case *monitoringv1.PodMonitor, *monitoringv1.PrometheusRule:
				monitoringWrites.Add(1)
			}
			return c.Delete(ctx, obj, opts...)
		},
	})
	reconciler := &controller.MicroserviceAppReconciler{
		Client:                      counting,
		APIReader:                   mgr.GetAPIReader(),
		Recorder:                    mgr.GetEventRecorder("courier-operator"),
		MonitoringDiscoveryInterval: 200 * time.Millisecond,
		// Longer than any wait: nothing but the discovery re-check and the
		// watches may bring the app back into reconcile.
		RetryInterval:  10 * time.Minute,
		ResyncInterval: 10 * time.Minute,
	}
	if err := reconciler.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	app := fixture.Blog(ns.Name)
	app.UID = ""
	app.Spec.Services[3].Metrics = &v1alpha1.Metrics{Path: "/m"}
	if err := k8s.Create(ctx, app); err != nil {
		t.Fatal(err)
	}

	// Without the CRDs: Ready, scrape annotations, nothing of the kinds.
	for _, svc := range app.Spec.Services {
		name := metadata.Name(app.Name, svc.Name)
		d := &appsv1.Deployment{}
		eventually(t, "Deployment "+name, func(ctx context.Context) error {
			return k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: name}, d)
		})
		if got := d.Spec.Template.Annotations[resource.AnnotationScrape]; got != "true" {
			t.Errorf("Deployment %s: %s = %q, want true", name, resource.AnnotationScrape, got)
		}
		markAvailable(t, k8s, d)
	}
	eventually(t, "app Ready", func(ctx context.Context) error {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(live.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready = %+v", c)
		}
		app = live
		return nil
	})
	if n := monitoringWrites.Load(); n != 0 {
		t.Errorf("%d writes of monitoring objects without their CRDs", n)
	}
	if notes := eventNotes(t, k8s, ns.Name, "PodMonitor", "PrometheusRule"); len(notes) > 0 {
		t.Errorf("events about monitoring objects without their CRDs: %q", notes)
	}

	// The CRDs appear.
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("testdata", "crds")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("install the prometheus-operator CRDs: %v", err)
	}
	disc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	eventually(t, "the API server serves the CRDs", func(context.Context) error {
		_, err := disc.ServerResourcesForGroupVersion("monitoring.coreos.com/v1")
		return err
	})

	labels := resource.MonitoringLabels(app, resource.DefaultMonitoringLabels)
	wantPM, wantRule := resource.PodMonitor(app, labels), resource.PrometheusRule(app, labels)
	pm, rule := &monitoringv1.PodMonitor{}, &monitoringv1.PrometheusRule{}
	eventually(t, "the app's PodMonitor and PrometheusRule", func(ctx context.Context) error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: app.Name + "-services"}, pm); err != nil {
			return err
		}
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: app.Name + "-courier-alerts"}, rule)
	})
	for _, obj := range []client.Object{pm, rule} {
		if got := obj.GetLabels()["release"]; got != "kube-prometheus-stack" {
			t.Errorf("%s: release label %q, want kube-prometheus-stack", obj.GetName(), got)
		}
		if diff := cmp.Diff(labels, obj.GetLabels()); diff != "" {
			t.Errorf("%s labels (-want +got):\n%s", obj.GetName(), diff)
		}
		if ref := metav1.GetControllerOf(obj); ref == nil || ref.UID != app.UID {
			t.Errorf("%s: controller %+v, want the app", obj.GetName(), ref)
		}
	}
	if diff := cmp.Diff(wantPM.Spec, pm.Spec); diff != "" {
		t.Errorf("PodMonitor spec (-built +stored):\n%s", diff)
	}
	if diff := cmp.Diff(wantRule.Spec, rule.Spec); diff != "" {
		t.Errorf("PrometheusRule spec (-built +stored):\n%s", diff)
	}
	if got := pm.Spec.Selector.MatchLabels; !equality.Semantic.DeepEqual(got, metadata.AppLabels(app.Name)) {
		t.Errorf("PodMonitor selects %v", got)
	}
	if n := len(pm.Spec.PodMetricsEndpoints); n != 2 || pm.Spec.PodMetricsEndpoints[1].Path != "/m" {
		t.Errorf("PodMonitor endpoints %+v, want /metrics for three services and /m for the mailer", pm.Spec.PodMetricsEndpoints)
	}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			if e := r.Expr.String(); !strings.Contains(e, `namespace="shop"`) || !strings.Contains(e, `app="blog"`) {
				t.Errorf("%s is not scoped to the app: %s", r.Alert, e)
			}
		}
	}

	// A steady state writes nothing: one reconcile on demand, and whatever
	// the manager does meanwhile.
	eventually(t, "the manager's cache holds both objects", func(ctx context.Context) error {
		for _, obj := range []client.Object{&monitoringv1.PodMonitor{}, &monitoringv1.PrometheusRule{}} {
			want := pm.ResourceVersion
			name := pm.Name
			if _, ok := obj.(*monitoringv1.PrometheusRule); ok {
				want, name = rule.ResourceVersion, rule.Name
			}
			if err := mgr.GetClient().Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: name}, obj); err != nil {
				return err
			}
			if obj.GetResourceVersion() != want {
				return fmt.Errorf("%s at %s, want %s", name, obj.GetResourceVersion(), want)
			}
		}
		return nil
	})
	writes := monitoringWrites.Load()
	if _, err := reconciler.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(app)}); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if n := monitoringWrites.Load() - writes; n != 0 {
		t.Errorf("a reconcile at steady state wrote monitoring objects %d times", n)
	}
	for _, obj := range []client.Object{pm, rule} {
		live := obj.DeepCopyObject().(client.Object)
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
			t.Fatal(err)
		}
		if live.GetResourceVersion() != obj.GetResourceVersion() {
			t.Errorf("%s changed at steady state", obj.GetName())
		}
	}

	// Drift: a hand edit of a field the operator owns is rolled back.
	edited := pm.DeepCopy()
	edited.Spec.PodMetricsEndpoints[0].Path = "/hacked"
	edited.ManagedFields = nil
	if err := k8s.Update(ctx, edited, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the PodMonitor's path restored", func(ctx context.Context) error {
		live := &monitoringv1.PodMonitor{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pm), live); err != nil {
			return err
		}
		if p := live.Spec.PodMetricsEndpoints[0].Path; p != "/metrics" {
			return fmt.Errorf("path %q", p)
		}
		return nil
	})
	// Deletion: the PrometheusRule comes back.
	if err := k8s.Delete(ctx, rule); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the PrometheusRule recreated", func(ctx context.Context) error {
		live := &monitoringv1.PrometheusRule{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), live); err != nil {
			return err
		}
		if live.UID == rule.UID {
			return fmt.Errorf("still the deleted one")
		}
		return nil
	})

	// The app's own labels replace the operator's, the release label goes.
	update(t, k8s, app, func(a *v1alpha1.MicroserviceApp) {
		a.Spec.Monitoring = &v1alpha1.Monitoring{Labels: map[string]string{"prometheus": "team-shop"}}
	})
	for _, obj := range []client.Object{&monitoringv1.PodMonitor{}, &monitoringv1.PrometheusRule{}} {
		name := pm.Name
		if _, ok := obj.(*monitoringv1.PrometheusRule); ok {
			name = rule.Name
		}
		eventually(t, name+" relabelled", func(ctx context.Context) error {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: name}, obj); err != nil {
				return err
			}
			want := map[string]string{
				"prometheus":                   "team-shop",
				"app.kubernetes.io/instance":   app.Name,
				"app.kubernetes.io/managed-by": "courier-operator",
			}
			if diff := cmp.Diff(want, obj.GetLabels()); diff != "" {
				return fmt.Errorf("labels (-want +got):\n%s", diff)
			}
			return nil
		})
	}

	// Pruning covers the kinds: a PodMonitor the app controls but no
	// longer wants (a former name, say) is deleted.
	stale := resource.PodMonitor(app, resource.MonitoringLabels(app, nil))
	stale.Name = app.Name + "-old"
	if err := k8s.Create(ctx, stale); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stale PodMonitor pruned", func(ctx context.Context) error {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(stale), &monitoringv1.PodMonitor{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
}

// noWatch lets the interceptor wrap the manager's client, which does not
// watch; the reconciler never calls Watch.
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, fmt.Errorf("not supported")
}

func isMonitoringKind(kind string) bool {
	return kind == monitoringv1.PodMonitorsKind || kind == monitoringv1.PrometheusRuleKind
}

func eventually(t *testing.T, what string, cond func(ctx context.Context) error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), poll, timeout, true, func(ctx context.Context) (bool, error) {
		last = cond(ctx)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: not true after %s: %v", what, timeout, last)
	}
}

// markAvailable plays the deployment controller, which envtest lacks.
func markAvailable(t *testing.T, k8s client.Client, d *appsv1.Deployment) {
	t.Helper()
	eventually(t, "mark "+d.Name+" available", func(ctx context.Context) error {
		live := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(d), live); err != nil {
			return err
		}
		n := ptr.Deref(live.Spec.Replicas, 1)
		live.Status = appsv1.DeploymentStatus{
			ObservedGeneration: live.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
			Conditions: []appsv1.DeploymentCondition{{
				Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable",
				LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now(),
			}},
		}
		return k8s.Status().Update(ctx, live)
	})
}

// update re-reads the app, applies change and writes it, retrying on
// conflicts with the controller's status writes.
func update(t *testing.T, k8s client.Client, app *v1alpha1.MicroserviceApp, change func(*v1alpha1.MicroserviceApp)) {
	t.Helper()
	eventually(t, "update app", func(ctx context.Context) error {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		change(live)
		return k8s.Update(ctx, live)
	})
}

// eventNotes are the notes of the events in ns that mention any of words.
func eventNotes(t *testing.T, k8s client.Client, ns string, words ...string) []string {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		for _, w := range words {
			if strings.Contains(e.Note, w) {
				out = append(out, e.Note)
				break
			}
		}
	}
	return out
}
