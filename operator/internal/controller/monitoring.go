package controller

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
)

// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=podmonitors;prometheusrules,verbs=get;list;watch;create;patch;delete

// defaultMonitoringDiscoveryInterval is how often the operator looks for
// the prometheus-operator's CRDs until they are installed.
const defaultMonitoringDiscoveryInterval = time.Minute

// monitoringKinds are the prometheus-operator kinds the operator writes for
// every app, one object each, once their CRDs are installed.
var monitoringKinds = []kind.Object{kind.PodMonitor, kind.PrometheusRule}

// monitoringState records whether the prometheus-operator's CRDs were
// found. Until they are, the operator reads, writes and watches nothing of
// their kinds: the API server would refuse, and the manager's cache would
// retry an informer for a kind that does not exist.
type monitoringState struct {
	available atomic.Bool
}

// monitoringKinds are the prometheus-operator kinds the reconcile writes
// and prunes: none until their CRDs are found.
func (r *MicroserviceAppReconciler) monitoringKinds() []kind.Object {
	if !r.monitoring.available.Load() {
		return nil
	}
	return monitoringKinds
}

func (r *MicroserviceAppReconciler) monitoringLabels() map[string]string {
	if r.MonitoringLabels == nil {
		return resource.DefaultMonitoringLabels
	}
	return r.MonitoringLabels
}

// reconcileMonitoring applies the app's PodMonitor and PrometheusRule when
// the prometheus-operator's CRDs are installed. Each is applied like every
// other child (applyChild: written only when the operator's fields differ,
// never over an object another app or a person owns).
func (r *MicroserviceAppReconciler) reconcileMonitoring(ctx context.Context, s *scope) []error {
	if !r.monitoring.available.Load() {
		return nil
	}
	labels := resource.MonitoringLabels(s.app, r.monitoringLabels())
	objects := []struct {
		kind kind.Object
		obj  client.Object
	}{
		{kind.PodMonitor, resource.PodMonitor(s.app, labels)},
		{kind.PrometheusRule, resource.PrometheusRule(s.app, labels)},
	}
	var errs []error
	for _, o := range objects {
		doc, err := kind.NewDocument(o.obj)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := r.applyChild(ctx, s, o.kind, doc); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// setupMonitoring makes the controller notice the prometheus-operator's
// CRDs: a runnable asks the API server's discovery whether both kinds are
// served, when the manager starts and then every discovery interval until
// they are. The first time they are, it starts the watches of both kinds
// (so a deleted or edited object brings its app back) and sends every app
// to reconcile, which then writes their objects. Nothing is restarted.
// Removing the CRDs later is not noticed: restart the operator then.
func (r *MicroserviceAppReconciler) setupMonitoring(mgr ctrl.Manager, c controller.Controller) error {
	disc, err := discovery.NewDiscoveryClientForConfig(mgr.GetConfig())
	if err != nil {
		return fmt.Errorf("create discovery client: %w", err)
	}
	found := make(chan event.GenericEvent)
	if err := c.Watch(source.Channel(found, handler.EnqueueRequestsFromMapFunc(r.allApps))); err != nil {
		return fmt.Errorf("watch for the monitoring CRDs: %w", err)
	}
	watches := []source.Source{
		source.Kind(mgr.GetCache(), client.Object(&monitoringv1.PodMonitor{}),
			handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &v1alpha1.MicroserviceApp{}, handler.OnlyControllerOwner())),
		source.Kind(mgr.GetCache(), client.Object(&monitoringv1.PrometheusRule{}),
			handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &v1alpha1.MicroserviceApp{}, handler.OnlyControllerOwner())),
	}
	interval := cmp.Or(r.MonitoringDiscoveryInterval, defaultMonitoringDiscoveryInterval)
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		log := logf.FromContext(ctx).WithName("monitoring")
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			ok, err := monitoringCRDsInstalled(disc)
			switch {
			case err != nil:
				log.Error(err, "look for the prometheus-operator's CRDs")
			case ok:
				for _, w := range watches {
					if err := c.Watch(w); err != nil {
						return fmt.Errorf("watch the monitoring objects: %w", err)
					}
				}
				r.monitoring.available.Store(true)
				log.Info("prometheus-operator CRDs found: writing a PodMonitor and a PrometheusRule per app")
				select {
				case found <- event.GenericEvent{Object: &v1alpha1.MicroserviceApp{}}:
				case <-ctx.Done():
				}
				return nil
			}
			select {
			case <-ticker.C:
			case <-ctx.Done():
				return nil
			}
		}
	}))
}

// monitoringCRDsInstalled reports whether the API server serves both
// PodMonitors and PrometheusRules of monitoring.coreos.com/v1.
func monitoringCRDsInstalled(disc discovery.DiscoveryInterface) (bool, error) {
	list, err := disc.ServerResourcesForGroupVersion(monitoringv1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	need := []string{monitoringv1.PodMonitorName, monitoringv1.PrometheusRuleName}
	served := 0
	for _, res := range list.APIResources {
		if slices.Contains(need, res.Name) {
			served++
		}
	}
	return served == len(need), nil
}

// allApps maps the discovery of the monitoring CRDs to every app.
func (r *MicroserviceAppReconciler) allApps(ctx context.Context, _ client.Object) []reconcile.Request {
	apps := &v1alpha1.MicroserviceAppList{}
	if err := r.List(ctx, apps); err != nil {
		logf.FromContext(ctx).Error(err, "list apps")
		return nil
	}
	out := make([]reconcile.Request, 0, len(apps.Items))
	for i := range apps.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&apps.Items[i])})
	}
	return out
}
