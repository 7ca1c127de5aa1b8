// Package controller reconciles MicroserviceApps: it writes the objects the
// resource builders describe with server-side apply, deletes those no longer
// wanted, and reports the app's state in its status conditions.
package controller

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/resource"
)

// cleanupFinalizer guards clean-up that owner references cannot do: state
// outside the cluster, such as an app's broker users and topology. Objects in
// the cluster need no finalizer, since garbage collection deletes them with
// the app.
const cleanupFinalizer = "apps.courier.dev/cleanup"

// MicroserviceAppReconciler runs the services of MicroserviceApps.
type MicroserviceAppReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	client.Client
	// Recorder emits events on the app when objects are created, updated,
	// deleted or fail to apply.
	Recorder events.EventRecorder
}

// +kubebuilder:rbac:groups=apps.courier.dev,resources=microserviceapps,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=apps.courier.dev,resources=microserviceapps/status,verbs=get;patch
// +kubebuilder:rbac:groups=apps.courier.dev,resources=microserviceapps/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one app's objects to the state its spec describes and
// records what it observed in the app's status.
func (r *MicroserviceAppReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	app := &v1alpha1.MicroserviceApp{}
	if err := r.Get(ctx, req.NamespacedName, app); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if !app.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, app)
	}
	if needsCleanup(app) && controllerutil.AddFinalizer(app, cleanupFinalizer) {
		if err := r.Update(ctx, app); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}

	s := newScope(app)
	defer func() {
		if err := r.patchStatus(ctx, s, retErr); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	return ctrl.Result{}, r.reconcile(ctx, s)
}

// reconcile applies every wanted object, in the order of
// resource.PerService, then deletes the owned objects no longer wanted. One
// object failing does not stop the others, so one bad service cannot hold
// back the rest of the app.
func (r *MicroserviceAppReconciler) reconcile(ctx context.Context, s *scope) error {
	var errs []error
	for _, b := range resource.PerService {
		for i := range s.app.Spec.Services {
			svc := &s.app.Spec.Services[i]
			desired := b.Build(resource.Input{App: s.app, Service: svc})
			if desired == nil {
				continue
			}
			obj, err := r.applyChild(ctx, s, b, desired)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if d, ok := obj.(*appsv1.Deployment); ok {
				s.deployments[svc.Name] = d
			}
		}
	}
	if err := r.prune(ctx, s); err != nil {
		errs = append(errs, err)
	}
	return kerrors.NewAggregate(errs)
}

// reconcileDelete runs the clean-up the finalizer guards, then lets the app
// go. The owned objects follow through garbage collection.
func (r *MicroserviceAppReconciler) reconcileDelete(ctx context.Context, app *v1alpha1.MicroserviceApp) error {
	if !controllerutil.ContainsFinalizer(app, cleanupFinalizer) {
		return nil
	}
	logf.FromContext(ctx).Info("cleaning up before deletion")
	controllerutil.RemoveFinalizer(app, cleanupFinalizer)
	if err := r.Update(ctx, app); err != nil {
		return fmt.Errorf("remove finalizer: %w", err)
	}
	return nil
}

// needsCleanup reports whether the app has state outside the cluster that
// must be removed before it is deleted. None yet: broker users and topology
// will be the first.
func needsCleanup(*v1alpha1.MicroserviceApp) bool { return false }

// SetupWithManager registers the reconciler with mgr. It watches the objects
// of every builder, so a deleted or hand-edited object brings its app back
// into reconcile and is restored.
func (r *MicroserviceAppReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.MicroserviceApp{}).
		Named("microserviceapp")
	for _, builder := range resource.PerService {
		b = b.Owns(builder.New())
	}
	return b.Complete(r)
}
