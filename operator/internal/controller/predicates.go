package controller

import (
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

// statusConflictRetry is how soon an app whose status patch was refused
// (the cache had not seen its latest version yet) is reconciled again.
const statusConflictRetry = 100 * time.Millisecond

// specOrMetadataChanged passes every event of an app but an update that
// changed nothing but its status. Every status patch the operator writes
// comes back as such an update, and reconciling the app again for it
// computes the same status and writes nothing: one wasted reconcile per
// status write. Status is computed from the app's own objects (their watch
// events still bring the app back, a Deployment's status changes among
// them) and its broker (polled on timers), never read from the app's
// previous status by anyone but the operator.
//
// Unlike predicate.GenerationChangedPredicate, a change of metadata alone
// passes: the annotation that skips the broker clean-up of a deleted app,
// the finalizers and labels.
var specOrMetadataChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, oldOK := e.ObjectOld.(*v1alpha1.MicroserviceApp)
		updated, newOK := e.ObjectNew.(*v1alpha1.MicroserviceApp)
		if !oldOK || !newOK {
			return true
		}
		return !equality.Semantic.DeepEqual(comparableMeta(old), comparableMeta(updated))
	},
}

// comparableMeta is app's metadata, generation included, without what
// changes with every write: the resourceVersion and managedFields.
func comparableMeta(app *v1alpha1.MicroserviceApp) *metav1.ObjectMeta {
	m := app.ObjectMeta.DeepCopy()
	m.ResourceVersion, m.ManagedFields = "", nil
	return m
}
