package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
}

// operatorUser is the user the operator under test (ours or the peer)
// authenticates as; the audit log records only its requests.
const operatorUser = "bench-operator"

// auditPolicy logs the operator's requests without their bodies, and
// nothing else, so the log costs the API server little.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: [` + operatorUser + `]
- level: None
`

// apiServer is a fresh etcd and kube-apiserver (envtest's binaries) with
// the CRD installed, a Service IP range of a /16 (envtest's default /24
// holds only 254 Services) and an audit log of the operator's requests.
// envtest runs no controllers, so no garbage collector: each scenario gets
// its own API server and throws it away.
type apiServer struct {
	env *envtest.Environment
	cfg *rest.Config
	// c is the driver's own client, not rate limited.
	c client.Client
	// auditLog is the path of the audit log.
	auditLog string
	// kubeconfig is the path of a kubeconfig for operatorUser.
	kubeconfig string
}

func startAPIServer(dir, crdDir string) (*apiServer, error) {
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return nil, fmt.Errorf("write audit policy: %w", err)
	}
	a := &apiServer{auditLog: filepath.Join(dir, "audit.log"), kubeconfig: filepath.Join(dir, "operator.kubeconfig")}
	a.env = &envtest.Environment{CRDDirectoryPaths: []string{crdDir}, ErrorIfCRDPathMissing: true}
	a.env.ControlPlane.GetAPIServer().Configure().
		Set("service-cluster-ip-range", "10.96.0.0/16").
		Set("audit-policy-file", policy).
		Set("audit-log-path", a.auditLog).
		Set("audit-log-format", "json").
		Set("audit-log-mode", "batch")
	cfg, err := a.env.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest: %w", err)
	}
	cfg.QPS, cfg.Burst = -1, 0 // the driver is not the one measured
	a.cfg = cfg
	if a.c, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return nil, errors.Join(fmt.Errorf("create client: %w", err), a.stop())
	}
	u, err := a.env.AddUser(envtest.User{Name: operatorUser, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("add operator user: %w", err), a.stop())
	}
	kc, err := u.KubeConfig()
	if err == nil {
		err = os.WriteFile(a.kubeconfig, kc, 0o600)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("write operator kubeconfig: %w", err), a.stop())
	}
	return a, nil
}

func (a *apiServer) stop() error { return a.env.Stop() }

// requests counts the operator's requests received in [from, to). The
// audit backend runs in batch mode, so the driver waits for the batch
// holding `to` to be flushed first (it flushes at least once a second).
func (a *apiServer) requests(from, to time.Time) (requestCounts, error) {
	if wait := time.Until(to.Add(2 * time.Second)); wait > 0 {
		time.Sleep(wait) // the audit backend's flush interval, not a condition
	}
	f, err := os.Open(a.auditLog)
	if err != nil {
		return requestCounts{}, fmt.Errorf("open audit log: %w", err)
	}
	defer func() { _ = f.Close() }()
	return countRequests(f, operatorUser, from, to)
}

// process is the operator under test, a real process.
type process struct {
	cmd     *exec.Cmd
	log     string
	metrics string
	pprof   string // net/http/pprof's base URL
	// done is closed when the process has exited.
	done chan struct{}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// startProcess runs bin with args against the API server as operatorUser,
// serving plain-HTTP metrics and pprof on free ports, and waits until its
// controller's workers start (its caches are synced).
func startProcess(ctx context.Context, bin, logPath string, a *apiServer, args ...string) (*process, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pprofAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	args = append([]string{"--metrics-bind-address", addr, "--health-probe-bind-address", "0", "--pprof-bind-address", pprofAddr}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+a.kubeconfig)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, log: logPath, metrics: "http://" + addr + "/metrics", pprof: "http://" + pprofAddr + "/debug/pprof/",
		done: make(chan struct{})}
	go func() {
		// Its exit status tells nothing: it is stopped, or its log says why.
		_ = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	err = waitFor(ctx, time.Minute, filepath.Base(bin)+" to start its workers", func() bool {
		b, _ := os.ReadFile(logPath)
		return bytes.Contains(b, []byte("Starting workers"))
	})
	if err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// rss is the process's resident set size in bytes.
func (p *process) rss() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("read process status: %w", err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
}

// scrape reads the process's metrics: the sum of each named family's
// samples (counters, gauges, and histograms' sums as name_sum, counts as
// name_count).
func (p *process) scrape() (map[string]float64, error) {
	resp, err := http.Get(p.metrics)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[name] += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[name] += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[name+"_sum"] += m.GetHistogram().GetSampleSum()
				out[name+"_count"] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out, nil
}

// heapProfile forces a garbage collection in the process (gc=1 makes
// net/http/pprof run runtime.GC before it writes the profile) and returns
// its heap profile.
func (p *process) heapProfile() ([]byte, error) {
	resp, err := http.Get(p.pprof + "heap?gc=1")
	if err != nil {
		return nil, fmt.Errorf("get heap profile: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	if err != nil {
		return nil, fmt.Errorf("get heap profile: %w", err)
	}
	return b, nil
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// observer is the driver's view of the cluster: it plays the deployment
// controller envtest lacks (marking every Deployment rolled out and
// available, as the envtest suite's markAvailable does) and records when
// each app first became Ready and when each owned object first appeared.
type observer struct {
	mgr ctrl.Manager

	mu      sync.Mutex
	readyAt map[string]time.Time // app name
	seenAt  map[string]time.Time // kind/namespace/name
	// perApp counts objects seen by kind and app instance label.
	perApp map[string]map[string]int
}

// watchedKinds are the kinds whose objects the observer records.
var watchedKinds = []client.Object{
	&appsv1.Deployment{}, &corev1.Service{}, &networkingv1.NetworkPolicy{},
	&policyv1.PodDisruptionBudget{}, &corev1.Secret{}, &corev1.PersistentVolumeClaim{},
}

func startObserver(ctx context.Context, a *apiServer) (*observer, error) {
	mgr, err := ctrl.NewManager(a.cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, fmt.Errorf("create observer manager: %w", err)
	}
	o := &observer{mgr: mgr, readyAt: map[string]time.Time{}, seenAt: map[string]time.Time{}, perApp: map[string]map[string]int{}}
	err = ctrl.NewControllerManagedBy(mgr).For(&appsv1.Deployment{}).Named("mark-available").
		WithOptions(controller.Options{MaxConcurrentReconciles: 4, SkipNameValidation: ptr.To(true)}).
		Complete(markAvailable{mgr.GetClient()})
	if err != nil {
		return nil, fmt.Errorf("set up the Deployment marker: %w", err)
	}
	for _, obj := range watchedKinds {
		inf, err := mgr.GetCache().GetInformer(ctx, obj)
		if err != nil {
			return nil, fmt.Errorf("watch %T: %w", obj, err)
		}
		kind := fmt.Sprintf("%T", obj)[1:]
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(x any) {
			o.seen(kind, x.(client.Object))
		}}); err != nil {
			return nil, fmt.Errorf("handle %T: %w", obj, err)
		}
	}
	apps, err := mgr.GetCache().GetInformer(ctx, &v1alpha1.MicroserviceApp{})
	if err != nil {
		return nil, fmt.Errorf("watch apps: %w", err)
	}
	onApp := func(x any) {
		if app, ok := x.(*v1alpha1.MicroserviceApp); ok && app.Status.ObservedGeneration == app.Generation &&
			meta.IsStatusConditionTrue(app.Status.Conditions, v1alpha1.ConditionReady) {
			o.ready(app.Name)
		}
	}
	if _, err := apps.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onApp, UpdateFunc: func(_, x any) { onApp(x) },
	}); err != nil {
		return nil, fmt.Errorf("handle apps: %w", err)
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return nil, errors.New("observer cache did not sync")
	}
	return o, nil
}

func (o *observer) seen(kind string, obj client.Object) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	key := kind + "/" + obj.GetNamespace() + "/" + obj.GetName()
	if _, ok := o.seenAt[key]; !ok {
		o.seenAt[key] = now
	}
	app := obj.GetLabels()["app.kubernetes.io/instance"]
	if app == "" {
		return
	}
	if o.perApp[app] == nil {
		o.perApp[app] = map[string]int{}
	}
	o.perApp[app][kind]++
}

func (o *observer) ready(app string) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.readyAt[app]; !ok {
		o.readyAt[app] = now
	}
}

// readyCount is how many apps have been Ready.
func (o *observer) readyCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.readyAt)
}

// lastReady is when the last app became Ready.
func (o *observer) lastReady() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	var last time.Time
	for _, t := range o.readyAt {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// objects returns how many objects of each kind app has had.
func (o *observer) objects(app string) map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]int{}
	for k, n := range o.perApp[app] {
		out[k] = n
	}
	return out
}

// totalObjects is how many objects of kind all apps have had.
func (o *observer) totalObjects(kind string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, byKind := range o.perApp {
		n += byKind[kind]
	}
	return n
}

// lastSeen is when the last object of app appeared.
func (o *observer) lastSeen(app string) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	var last time.Time
	for k, t := range o.seenAt {
		// Objects are named "<app>-<service>".
		if strings.Contains(k, "/"+app+"-") && t.After(last) {
			last = t
		}
	}
	return last
}

// markAvailable plays the deployment controller: it reports each
// Deployment's current spec as fully rolled out and available.
type markAvailable struct{ c client.Client }

func (m markAvailable) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	d := &appsv1.Deployment{}
	if err := m.c.Get(ctx, req.NamespacedName, d); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	n := ptr.Deref(d.Spec.Replicas, 1)
	if d.Status.ObservedGeneration == d.Generation && d.Status.AvailableReplicas == n && d.Status.UpdatedReplicas == n {
		return ctrl.Result{}, nil
	}
	now := metav1.Now()
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation,
		Replicas:           n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
		Conditions: []appsv1.DeploymentCondition{{
			Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable",
			LastUpdateTime: now, LastTransitionTime: now,
		}},
	}
	err := m.c.Status().Update(ctx, d)
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return ctrl.Result{RequeueAfter: 10 * time.Millisecond}, nil
	}
	return ctrl.Result{}, err
}
