package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/kind"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/resource"
)

// Event reasons on the app.
const (
	eventCreated      = "Created"
	eventUpdated      = "Updated"
	eventDeleted      = "Deleted"
	eventApplyFailed  = "ApplyFailed"
	eventDeleteFailed = "DeleteFailed"
)

// namedApplyConfiguration is what every generated apply configuration of an
// object offers.
type namedApplyConfiguration interface {
	runtime.ApplyConfiguration
	GetName() *string
	GetNamespace() *string
}

// ownedKinds are all kinds the operator writes, each once, in the order
// they are first applied; the controller watches and prunes them.
func ownedKinds() []kind.Object {
	var out []kind.Object
	seen := map[string]bool{}
	add := func(k kind.Object) {
		if !seen[k.Kind] {
			seen[k.Kind] = true
			out = append(out, k)
		}
	}
	for _, k := range brokerKinds() {
		add(k)
	}
	for _, b := range resource.PerService {
		add(b.Object)
	}
	return out
}

// applyChild brings one owned object to its desired state and returns the
// object as the API server holds it: when nothing changed, the cache's slim
// copy, which holds what the reconciler reads (see readFields).
//
// It writes only when the fields the operator owns differ from the desired
// ones. Server-side apply of an unchanged object would also change nothing,
// but it is still a request per object per reconcile; comparing against the
// owned fields (extracted from managedFields; the cache keeps only their
// digest, see ownedFieldsUnchanged) makes a reconcile that changes nothing
// write nothing. A hand edit moves the edited fields to another manager, so
// it shows up as a difference and is rolled back.
//
// It never writes an object that exists and is not controlled by the app
// (ForceOwnership would take it over, the same field manager would drop the
// other app's owner reference): it returns a nameConflictError instead.
func (r *MicroserviceAppReconciler) applyChild(ctx context.Context, s *scope, b kind.Object, desired runtime.ApplyConfiguration) (client.Object, error) {
	named, ok := desired.(namedApplyConfiguration)
	if !ok {
		return nil, fmt.Errorf("%s apply configuration %T has no name", b.Kind, desired)
	}
	key := client.ObjectKey{Namespace: ptr.Deref(named.GetNamespace(), ""), Name: ptr.Deref(named.GetName(), "")}
	s.wanted[wantedKey(b.Kind, key.Name)] = true

	current := b.New()
	found, err := r.getChild(ctx, key, current)
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", b.Kind, key.Name, err)
	}
	created := !found
	if found {
		if !metav1.IsControlledBy(current, s.app) {
			conflict := newNameConflict(b.Kind, current)
			r.Recorder.Eventf(s.app, nil, corev1.EventTypeWarning, v1alpha1.ReasonNameConflict, "Apply", "%v", conflict)
			return nil, conflict
		}
		unchanged, err := ownedFieldsUnchanged(b, current, desired)
		if err != nil {
			return nil, fmt.Errorf("compare owned fields of %s %s: %w", b.Kind, key.Name, err)
		}
		if unchanged {
			return current, nil
		}
	}

	if err := r.Apply(ctx, desired, client.FieldOwner(metadata.FieldOwner), client.ForceOwnership); err != nil {
		r.Recorder.Eventf(s.app, nil, corev1.EventTypeWarning, eventApplyFailed, "Apply",
			"apply %s %s: %v", b.Kind, key.Name, err)
		return nil, fmt.Errorf("apply %s %s: %w", b.Kind, key.Name, err)
	}
	// The client decodes the API server's answer, the whole object, into the
	// apply configuration; converting it spares a read that the cache could
	// only answer with the object as it was before the write.
	applied := b.New()
	if err := convert(desired, applied); err != nil {
		return nil, fmt.Errorf("decode applied %s %s: %w", b.Kind, key.Name, err)
	}

	reason := eventUpdated
	if created {
		reason = eventCreated
	}
	logf.FromContext(ctx).Info("applied", "kind", b.Kind, "object", key.Name, "created", created)
	r.Recorder.Eventf(s.app, applied, corev1.EventTypeNormal, reason, "Apply", "%s %s %s", reason, b.Kind, key.Name)
	return applied, nil
}

// getChild reads the object named key into obj and reports whether it
// exists. The cache holds only objects the operator labelled, so an object
// someone else made under the same name reads as not found there; before
// taking an object for missing, and creating it, the API server is asked.
// That costs one read per creation, and per retry of an app held back by a
// name conflict.
func (r *MicroserviceAppReconciler) getChild(ctx context.Context, key client.ObjectKey, obj client.Object) (bool, error) {
	err := r.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) {
		err = r.apiReader().Get(ctx, key, obj)
	}
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// nameConflictError says that an object the app needs exists under its name
// but is not controlled by the app: another app's object (two apps whose
// names and service names concatenate alike), or one made by hand. The
// operator never writes such an object; ResourcesApplied reports it.
type nameConflictError struct {
	kind, name string
	// owner is the object's controller, as "Kind/name"; empty when it has
	// none.
	owner string
}

func newNameConflict(kind string, obj client.Object) *nameConflictError {
	e := &nameConflictError{kind: kind, name: obj.GetName()}
	if ref := metav1.GetControllerOf(obj); ref != nil {
		e.owner = ref.Kind + "/" + ref.Name
	}
	return e
}

// Error is stable for the same conflict, so a retry that finds it again
// rewrites no status.
func (e *nameConflictError) Error() string {
	owner := "has no owner"
	if e.owner != "" {
		owner = "is controlled by " + e.owner
	}
	return fmt.Sprintf("%s/%s already exists and %s; the operator leaves it untouched: "+
		"delete it, or rename the app or service", e.kind, e.name, owner)
}

// nameConflicts splits err into its name conflicts and the other errors.
func nameConflicts(err error) (conflicts, others []error) {
	if err == nil {
		return nil, nil
	}
	for _, e := range kerrors.Flatten(kerrors.NewAggregate([]error{err})).Errors() {
		var c *nameConflictError
		if errors.As(e, &c) {
			conflicts = append(conflicts, e)
		} else {
			others = append(others, e)
		}
	}
	return conflicts, others
}

// prune deletes the objects the app owns but no longer wants: those of a
// removed service, a disruption budget once a service or the broker is down
// to one replica, the connection Secret of a service that stopped using
// queues.
func (r *MicroserviceAppReconciler) prune(ctx context.Context, s *scope) error {
	for _, b := range append(ownedKinds(), r.monitoringKinds()...) {
		list := b.NewList()
		if err := r.List(ctx, list,
			client.InNamespace(s.app.Namespace),
			client.MatchingLabels(metadata.AppLabels(s.app.Name)),
		); err != nil {
			return fmt.Errorf("list %ss: %w", b.Kind, err)
		}
		err := meta.EachListItem(list, func(o runtime.Object) error {
			obj := o.(client.Object)
			if s.wanted[wantedKey(b.Kind, obj.GetName())] ||
				!metav1.IsControlledBy(obj, s.app) ||
				!obj.GetDeletionTimestamp().IsZero() {
				return nil
			}
			// The UID precondition keeps a stale cache from deleting an
			// object that was meanwhile recreated under the same name.
			err := r.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())})
			if client.IgnoreNotFound(err) != nil {
				r.Recorder.Eventf(s.app, obj, corev1.EventTypeWarning, eventDeleteFailed, "Delete",
					"delete %s %s: %v", b.Kind, obj.GetName(), err)
				return fmt.Errorf("delete %s %s: %w", b.Kind, obj.GetName(), err)
			}
			logf.FromContext(ctx).Info("deleted", "kind", b.Kind, "object", obj.GetName())
			r.Recorder.Eventf(s.app, nil, corev1.EventTypeNormal, eventDeleted, "Delete",
				"Deleted %s %s", b.Kind, obj.GetName())
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// convert copies an apply configuration into the typed object of the same
// kind; the two share their JSON form.
func convert(from runtime.ApplyConfiguration, to client.Object) error {
	raw, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, to)
}
