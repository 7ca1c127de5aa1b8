package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/kind"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

// The suite runs the controller in a manager against a real API server
// (envtest: etcd and kube-apiserver, no kubelet, no controllers), the way
// cmd/main.go wires it.
var (
	scheme = runtime.NewScheme()
	// cfg reaches the test API server.
	cfg *rest.Config
	// k8s is an uncached client for the tests' own reads and writes, so a
	// test never sees a stale object.
	k8s client.Client
	// mgrClient is the manager's cached client, the one the controller uses.
	mgrClient client.Client
	// reconciler is the manager's reconciler.
	reconciler *MicroserviceAppReconciler
)

const (
	// timeout bounds every wait for the controller; generous because the
	// test machine is shared: at a load of 35 on its 2 cores one apply
	// took about a second and an app's first reconcile 14 s, and waits of
	// 30 s ran out.
	timeout = time.Minute
	poll    = 100 * time.Millisecond
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set; run `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest.sh)")
		return 1
	}
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		// envtest's default of 20 s is too short on a shared machine: at a
		// load of 30 on 2 cores kube-apiserver took longer, five times.
		ControlPlaneStartTimeout: 2 * time.Minute,
	}
	// envtest's default Service range is a /24: 254 Services, and envtest
	// runs no garbage collector, so every app the suite creates keeps its
	// Services' addresses. The suite outgrew it ("range is full").
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	var err error
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "start envtest: %v\n", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop envtest: %v\n", err)
		}
	}()

	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintf(os.Stderr, "create client: %v\n", err)
		return 1
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{ByObject: CacheByObject()},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "create manager: %v\n", err)
		return 1
	}
	mgrClient = mgr.GetClient()
	suiteReads = &countingReader{Reader: mgr.GetAPIReader()}
	reconciler = &MicroserviceAppReconciler{
		Client:    mgr.GetClient(),
		APIReader: suiteReads,
		Recorder:  mgr.GetEventRecorder("courier-operator"),
		Admin:     testAdmin,
		NATSAdmin: testNATSAdmin,
		// The managed brokers' NetworkPolicies admit this namespace.
		OperatorNamespace: "courier-system",
		// Short enough for the drift tests to see a resync, and for queue
		// depths to reach status, within a wait.
		ResyncInterval:     3 * time.Second,
		QueueStatsInterval: time.Second,
		// Longer than any wait: a test that passes never relied on a
		// retry, which is how the external Secret test proves the watch.
		RetryInterval: 10 * time.Minute,
	}
	if err := reconciler.SetupWithManager(mgr); err != nil {
		fmt.Fprintf(os.Stderr, "set up controller: %v\n", err)
		return 1
	}
	defer stopTestBroker()
	defer stopTestNATS()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintf(os.Stderr, "manager: %v\n", err)
		return 1
	}
	return code
}

// zapLevel keeps the controller's logs to errors unless TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("TEST_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

// namespace creates a namespace of its own for a test. envtest runs no
// namespace controller, so namespaces are left behind with the API server.
func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")),
	}}
	if len(ns.Name) > 63 {
		ns.Name = strings.TrimRight(ns.Name[:63], "-")
	}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace %s: %v", ns.Name, err)
	}
	return ns.Name
}

// eventually polls cond until it returns nil, failing the test with cond's
// last error after timeout.
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

// create creates obj with the uncached client.
func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// get waits for the object named name in ns to exist and returns it.
func get[T client.Object](t *testing.T, ns, name string, obj T) T {
	t.Helper()
	eventually(t, fmt.Sprintf("%T %s/%s exists", obj, ns, name), func(ctx context.Context) error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
	})
	return obj
}

// updateApp re-reads the app, applies change and writes it, retrying on
// conflicts with the controller's status writes.
func updateApp(t *testing.T, ns, name string, change func(*v1alpha1.MicroserviceApp)) {
	t.Helper()
	eventually(t, "update app "+name, func(ctx context.Context) error {
		app := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
			return err
		}
		change(app)
		return k8s.Update(ctx, app)
	})
}

// markAvailable plays the deployment controller, which envtest lacks: it
// reports the Deployment's current spec as fully rolled out and available.
func markAvailable(t *testing.T, ns, name string) {
	t.Helper()
	setDeploymentStatus(t, ns, name, func(d *appsv1.Deployment) {
		n := ptr.Deref(d.Spec.Replicas, 1)
		d.Status = appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation,
			Replicas:           n,
			UpdatedReplicas:    n,
			ReadyReplicas:      n,
			AvailableReplicas:  n,
			Conditions: []appsv1.DeploymentCondition{{
				Type:               appsv1.DeploymentAvailable,
				Status:             corev1.ConditionTrue,
				Reason:             "MinimumReplicasAvailable",
				LastUpdateTime:     metav1.Now(),
				LastTransitionTime: metav1.Now(),
			}},
		}
	})
}

// setDeploymentStatus rewrites a Deployment's status, retrying on conflicts.
func setDeploymentStatus(t *testing.T, ns, name string, change func(*appsv1.Deployment)) {
	t.Helper()
	setStatus(t, ns, name, change)
}

// setStatus plays a controller envtest lacks: it reads the object named
// name in ns, lets change set its status and writes the status back,
// retrying on conflicts with a fresh read.
func setStatus[T any, P interface {
	*T
	client.Object
}](t *testing.T, ns, name string, change func(P)) {
	t.Helper()
	var obj P = new(T)
	eventually(t, fmt.Sprintf("set status of %T %s", obj, name), func(ctx context.Context) error {
		obj = new(T)
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
			return err
		}
		change(obj)
		return k8s.Status().Update(ctx, obj)
	})
}

// cacheCaughtUp reports whether the manager's cache holds app and the
// operator's Deployments in its namespace at the resourceVersions the API
// server has.
func cacheCaughtUp(ctx context.Context, app *v1alpha1.MicroserviceApp) error {
	live, cached := &v1alpha1.MicroserviceApp{}, &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
		return err
	}
	if err := mgrClient.Get(ctx, client.ObjectKeyFromObject(app), cached); err != nil {
		return err
	}
	if live.ResourceVersion != cached.ResourceVersion {
		return fmt.Errorf("app at %s in the cache, %s in the API server", cached.ResourceVersion, live.ResourceVersion)
	}
	// Only the operator's own: its cache holds nothing else.
	ours := client.MatchingLabels{metadata.LabelManagedBy: metadata.ManagedBy}
	var liveDeps, cachedDeps appsv1.DeploymentList
	if err := k8s.List(ctx, &liveDeps, client.InNamespace(app.Namespace), ours); err != nil {
		return err
	}
	if err := mgrClient.List(ctx, &cachedDeps, client.InNamespace(app.Namespace), ours); err != nil {
		return err
	}
	versions := map[string]string{}
	for _, d := range cachedDeps.Items {
		versions[d.Name] = d.ResourceVersion
	}
	for _, d := range liveDeps.Items {
		if versions[d.Name] != d.ResourceVersion {
			return fmt.Errorf("deployment %s at %q in the cache, %s in the API server", d.Name, versions[d.Name], d.ResourceVersion)
		}
	}
	// The app's status must be the operator's answer to those Deployments,
	// not to earlier ones: a Ready=True from before the last status change
	// of a Deployment (a test marking it available again) matches the
	// cache's resourceVersion while the operator's reconcile is still due.
	deps := map[string]appsv1.Deployment{}
	for _, d := range liveDeps.Items {
		deps[d.Name] = d
	}
	for _, st := range cached.Status.Services {
		d, ok := deps[metadata.Name(app.Name, st.Name)]
		if !ok {
			continue
		}
		if st.ReadyReplicas != d.Status.ReadyReplicas || st.DesiredReplicas != ptr.Deref(d.Spec.Replicas, 1) {
			return fmt.Errorf("the app's status shows %s with %d of %d replicas ready, its Deployment %d of %d",
				st.Name, st.ReadyReplicas, st.DesiredReplicas, d.Status.ReadyReplicas, ptr.Deref(d.Spec.Replicas, 1))
		}
	}
	return nil
}

// steadyVersions returns the resourceVersions of app and of every object of
// kinds in its namespace, after checking that there are want of them and
// that none changes for 30 seconds. The assertion covers a period, so the
// test watches the whole of it.
func steadyVersions(t *testing.T, app *v1alpha1.MicroserviceApp, kinds []kind.Object, want int) map[string]string {
	t.Helper()
	before := resourceVersions(t, app, kinds)
	if len(before) != want {
		t.Fatalf("tracking %d objects, want %d: %v", len(before), want, before)
	}
	// The app's status as well, so a change says what changed.
	status := func() v1alpha1.MicroserviceAppStatus {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
			t.Fatalf("get app: %v", err)
		}
		return live.Status
	}
	statusBefore := status()
	throughout(t, 30*time.Second, time.Second, func() error {
		if diff := cmp.Diff(before, resourceVersions(t, app, kinds)); diff != "" {
			return fmt.Errorf("resourceVersions changed at steady state (-before +now):\n%s\napp status (-before +now):\n%s",
				diff, cmp.Diff(statusBefore, status()))
		}
		return nil
	})
	return before
}

// throughout checks cond every interval for the whole window and fails the
// test at the first error: the claims it serves (nothing changes, nothing
// loops) hold over a period, so the test watches all of it, unlike
// eventually, which stops at the first success.
func throughout(t *testing.T, window, interval time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		if err := cond(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(interval)
	}
}

// resourceVersions returns the resourceVersion of app and of every object
// of kinds in its namespace, by kind and name.
func resourceVersions(t *testing.T, app *v1alpha1.MicroserviceApp, kinds []kind.Object) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range kinds {
		list := k.NewList()
		if err := k8s.List(context.Background(), list, client.InNamespace(app.Namespace)); err != nil {
			t.Fatal(err)
		}
		_ = meta.EachListItem(list, func(o runtime.Object) error {
			obj := o.(client.Object)
			out[k.Kind+"/"+obj.GetName()] = obj.GetResourceVersion()
			return nil
		})
	}
	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	out["MicroserviceApp/"+live.Name] = live.ResourceVersion
	return out
}

// reconcileWritesNothing reconciles app once more, through a client that
// counts writes, and fails the test if the reconcile writes or emits an
// event: at steady state it must not.
func reconcileWritesNothing(t *testing.T, app *v1alpha1.MicroserviceApp) {
	t.Helper()
	// The reconcile reads through the manager's cache. Right after the app
	// turned Ready that cache may still lag the API server (seen under
	// load), and a reconcile on stale input rightly writes what it sees as
	// new; wait until the cache holds what the API server holds.
	eventually(t, "the manager's cache caught up with the app and its Deployments", func(ctx context.Context) error {
		return cacheCaughtUp(ctx, app)
	})
	before := &v1alpha1.MicroserviceApp{}
	if err := mgrClient.Get(context.Background(), client.ObjectKeyFromObject(app), before); err != nil {
		t.Fatal(err)
	}
	writes, recorder, what := reconcileOnce(t, app)
	if writes != 0 {
		st, _ := json.Marshal(before.Status)
		t.Errorf("a reconcile at steady state made %d writes, want 0: %v\nthe status it started from: %s", writes, what, st)
	}
	if n := len(recorder.Events); n != 0 {
		t.Errorf("a reconcile at steady state emitted %d events, want 0: %v", n, <-recorder.Events)
	}
}

// reconcileOnce runs one reconcile of app now, outside the manager, through
// a client that counts its writes, and returns that count and the events
// it emitted: a retry on demand, where waiting for the manager's own would
// take a sleep.
func reconcileOnce(t *testing.T, app *v1alpha1.MicroserviceApp) (int64, *events.FakeRecorder, []string) {
	t.Helper()
	counter := newWriteCounter(mgrClient)
	recorder := events.NewFakeRecorder(10)
	r := &MicroserviceAppReconciler{Client: counter, APIReader: k8s, Recorder: recorder, Admin: testAdmin, NATSAdmin: testNATSAdmin,
		OperatorNamespace: reconciler.OperatorNamespace}
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(app)}); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	counter.mu.Lock()
	defer counter.mu.Unlock()
	return counter.writes.Load(), recorder, counter.what
}

// writeCounter wraps the manager's cached client and counts every request
// that would change something in the API server.
type writeCounter struct {
	writes atomic.Int64
	client.WithWatch
	mu   sync.Mutex
	what []string // "patch *v1.Deployment blog-users", for a failure to show
}

func newWriteCounter(c client.Client) *writeCounter {
	w := &writeCounter{}
	count := func(verb string, obj any) {
		w.writes.Add(1)
		name := ""
		if o, ok := obj.(client.Object); ok {
			name = o.GetName()
		} else if a, ok := obj.(namedApplyConfiguration); ok {
			name = ptr.Deref(a.GetName(), "")
		}
		w.mu.Lock()
		w.what = append(w.what, fmt.Sprintf("%s %T %s", verb, obj, name))
		w.mu.Unlock()
	}
	w.WithWatch = interceptor.NewClient(noWatch{c}, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			count("create", obj)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			count("update", obj)
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			count("patch", obj)
			return c.Patch(ctx, obj, p, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			count("apply", obj)
			return c.Apply(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			count("delete", obj)
			return c.Delete(ctx, obj, opts...)
		},
		DeleteAllOf: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteAllOfOption) error {
			count("delete all of", obj)
			return c.DeleteAllOf(ctx, obj, opts...)
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj, subObj client.Object, opts ...client.SubResourceCreateOption) error {
			count("create "+sub, obj)
			return c.SubResource(sub).Create(ctx, obj, subObj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			count("update "+sub, obj)
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			data, _ := p.Data(obj)
			count("patch "+sub+" "+string(data), obj)
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
		SubResourceApply: func(ctx context.Context, c client.Client, sub string, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
			count("apply "+sub, obj)
			return c.SubResource(sub).Apply(ctx, obj, opts...)
		},
	})
	return w
}

// noWatch lets the interceptor wrap the manager's client, which has no Watch;
// the reconciler never watches through its client.
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("watch is not supported by the counting client")
}
