// Command peer is the benchmark's peer operator: a MicroserviceApp
// controller written the way the kubebuilder scaffold writes one by default.
// Owns() on every kind it creates (so the manager caches every object of
// those kinds, whole, cluster-wide, managedFields included), and
// controllerutil.CreateOrUpdate per object.
//
// It writes the same objects as the Courier operator for the same app: it
// does not build them itself but renames the objects the Courier operator
// wrote for a reference app (-templates, written by the driver), so both
// operators cache objects of the same size. It does no broker work and
// writes no status.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		os.Exit(1)
	}
}

func run() error {
	var metricsAddr, probeAddr, pprofAddr, templates, refApp string
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "metrics address")
	flag.StringVar(&probeAddr, "health-probe-bind-address", "0", "probe address")
	// The scaffold has no profiler; the driver reads both operators' memory
	// through the same endpoint (a forced GC), so the peer serves it too.
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0", "pprof address")
	flag.StringVar(&templates, "templates", "", "JSON list of the objects the Courier operator wrote for the reference app")
	flag.StringVar(&refApp, "reference-app", "", "the reference app's name, replaced by each app's name")
	flag.Parse()
	ctrl.SetLogger(ctrlLogger())

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	raw, err := os.ReadFile(templates)
	if err != nil {
		return fmt.Errorf("read -templates: %w", err)
	}
	var tmpl []unstructured.Unstructured
	if err := json.Unmarshal(raw, &tmpl); err != nil || len(tmpl) == 0 || refApp == "" {
		return fmt.Errorf("-templates must be a non-empty JSON list of objects and -reference-app set: %v", err)
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		PprofBindAddress:       pprofAddr,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	r := &reconciler{Client: mgr.GetClient(), scheme: scheme, tmpl: tmpl, refApp: refApp}
	err = ctrl.NewControllerManagedBy(mgr).For(&v1alpha1.MicroserviceApp{}).
		Owns(&appsv1.Deployment{}).Owns(&corev1.Service{}).Owns(&networkingv1.NetworkPolicy{}).
		Owns(&policyv1.PodDisruptionBudget{}).Owns(&corev1.Secret{}).Owns(&corev1.PersistentVolumeClaim{}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("set up controller: %w", err)
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

type reconciler struct {
	client.Client
	scheme *runtime.Scheme
	tmpl   []unstructured.Unstructured
	refApp string
}

func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	app := &v1alpha1.MicroserviceApp{}
	if err := r.Get(ctx, req.NamespacedName, app); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	for _, t := range r.tmpl {
		desired, err := r.desired(t, app)
		if err != nil {
			return ctrl.Result{}, err
		}
		obj := desired.DeepCopyObject().(client.Object)
		_, err = controllerutil.CreateOrUpdate(ctx, r.Client, obj, func() error {
			if created := obj.GetCreationTimestamp(); created.IsZero() {
				// The scaffold's mutate sets the desired spec; an existing
				// object keeps what the API server defaulted.
				if err := copyInto(desired, obj); err != nil {
					return err
				}
			}
			obj.SetLabels(desired.GetLabels())
			return controllerutil.SetControllerReference(app, obj, r.scheme)
		})
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("create or update %s %s: %w", t.GetKind(), obj.GetName(), err)
		}
	}
	return ctrl.Result{}, nil
}

// desired renames the reference app's object for app, as a typed object.
func (r *reconciler) desired(t unstructured.Unstructured, app *v1alpha1.MicroserviceApp) (client.Object, error) {
	b, err := json.Marshal(t.Object)
	if err != nil {
		return nil, err
	}
	b = []byte(strings.ReplaceAll(string(b), r.refApp, app.Name))
	ro, err := r.scheme.New(t.GroupVersionKind())
	if err != nil {
		return nil, err
	}
	obj := ro.(client.Object)
	if err := json.Unmarshal(b, obj); err != nil {
		return nil, err
	}
	obj.SetNamespace(app.Namespace)
	return obj, nil
}

// copyInto copies everything but the object metadata from src into dst.
func copyInto(src, dst client.Object) error {
	name, ns := dst.GetName(), dst.GetNamespace()
	b, err := json.Marshal(src)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, dst); err != nil {
		return err
	}
	dst.SetName(name)
	dst.SetNamespace(ns)
	return nil
}

func ctrlLogger() logr.Logger { return zap.New() }
