package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/resource"
)

// cleanUpBroker removes the app's users, queues (per deletionPolicy) and
// vhost (or account) from the broker before the app goes. A broker that is
// gone, scaled to zero, unreachable or whose Secret is missing cannot be
// cleaned up and must not keep the app (or its namespace) from being
// deleted: that is reported in an event and the deletion proceeds. Any
// other failure is retried.
func (r *MicroserviceAppReconciler) cleanUpBroker(ctx context.Context, app *v1alpha1.MicroserviceApp) error {
	if app.Annotations[v1alpha1.AnnotationSkipBrokerCleanup] == "true" {
		r.Recorder.Eventf(app, nil, corev1.EventTypeWarning, eventBrokerCleanupSkipped, "Delete",
			"left the app's users, queues and vhost or account on the broker: the annotation %s asks so", v1alpha1.AnnotationSkipBrokerCleanup)
		return nil
	}
	d := r.driverFor(app)
	conn, skip, err := d.OpenForCleanup(ctx, driverHost{r: r}, app)
	if err != nil {
		return fmt.Errorf("clean up the broker: %w", err)
	}
	if skip == "" {
		topology, _ := d.Topology(app, app.Status.Queues)
		res, err := conn.Remove(ctx, topology)
		switch {
		case errors.Is(err, broker.ErrUnreachable):
			skip = "the broker is unreachable: " + err.Error()
		case errors.Is(err, broker.ErrOwnedElsewhere):
			skip = err.Error()
		case err != nil:
			return fmt.Errorf("clean up the broker: %w", err)
		case len(res.Retained) > 0:
			r.Recorder.Eventf(app, nil, corev1.EventTypeNormal, eventQueuesRetained, "Delete",
				"kept the queues %s (and the app's vhost or account %s) because they still hold messages (deletionPolicy retain)",
				strings.Join(res.Retained, ", "), resource.VHost(app))
		}
	}
	if skip != "" {
		logf.FromContext(ctx).Info("not cleaning up the broker", "reason", skip)
		r.Recorder.Eventf(app, nil, corev1.EventTypeWarning, eventBrokerCleanupSkipped, "Delete",
			"left the app's users, queues and vhost or account on the broker: %s", skip)
		return nil
	}
	r.Recorder.Eventf(app, nil, corev1.EventTypeNormal, eventBrokerCleanedUp, "Delete",
		"removed the app's users and, per deletionPolicy, its queues and vhost or account from the broker")
	return nil
}

// stopManagedBroker prepares a deleted app's managed broker to stop, as
// its kind needs (driver.Driver.Stop), and says how long the app must wait
// before it goes; an external broker is left alone.
func (r *MicroserviceAppReconciler) stopManagedBroker(ctx context.Context, app *v1alpha1.MicroserviceApp) (time.Duration, error) {
	if app.Spec.Broker.Managed == nil {
		return 0, nil
	}
	return r.driverFor(app).Stop(ctx, driverHost{r: r}, app)
}

// reportCleanupFailed says on a deleting app why its broker clean-up failed
// and how to get past it: a Warning event and Ready=False (CleanupFailed).
// The message is the error's, which the broker package keeps stable for
// the same cause, so retries do not rewrite it.
func (r *MicroserviceAppReconciler) reportCleanupFailed(ctx context.Context, app *v1alpha1.MicroserviceApp, cause error) {
	msg := fmt.Sprintf("%v; the deletion retries. To delete the app and leave its users, queues and vhost or account on the broker, "+
		"annotate it with %s=true", cause, v1alpha1.AnnotationSkipBrokerCleanup)
	r.Recorder.Eventf(app, nil, corev1.EventTypeWarning, eventBrokerCleanupFailed, "Delete", "%s", msg)
	original := app.DeepCopy()
	meta.SetStatusCondition(&app.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonCleanupFailed,
		Message: msg, ObservedGeneration: app.Generation,
	})
	if equality.Semantic.DeepEqual(original.Status, app.Status) {
		return
	}
	if err := r.Status().Patch(ctx, app, client.MergeFrom(original)); err != nil && !apierrors.IsNotFound(err) {
		logf.FromContext(ctx).Error(err, "report the failed broker clean-up")
	}
}
