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
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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

// maxConcurrentApplies bounds how many objects of one app's ordering step
// (resource.PerServiceSteps) are applied at once. The API client's rate
// limit bounds the requests of all apps together; this only keeps an app
// with many services from holding as many goroutines and requests in flight.
const maxConcurrentApplies = 16

// createOnlyResourceVersion is the resourceVersion of an apply that may
// only create its object. The API server compares the resourceVersion of
// an apply with the stored object's and refuses the apply with a Conflict
// when they differ; when no object has the name it creates one and drops
// the resourceVersion (store.Update wipes it, after checking preconditions).
// No stored object has this one, the largest uint64 (etcd numbers writes
// with int64 revisions), so the apply creates the object or changes
// nothing, in one request. A create (POST) would refuse a taken name too,
// but it records the operator's fields under an Update entry of
// managedFields, which kind.Object.Owned does not read: the next reconcile
// would find nothing owned and apply the object again.
const createOnlyResourceVersion = "18446744073709551615"

// applyChild brings one owned object to its desired state, as applyObject
// does, marks it wanted and records what it changed for the reconcile's
// events. It must not run concurrently with another applyChild of the same
// scope; the per-service steps apply concurrently through applyStep.
func (r *MicroserviceAppReconciler) applyChild(ctx context.Context, s *scope, b kind.Object, desired runtime.ApplyConfiguration) (client.Object, error) {
	named, ok := desired.(namedApplyConfiguration)
	if !ok {
		return nil, fmt.Errorf("%s apply configuration %T has no name", b.Kind, desired)
	}
	s.wanted[wantedKey(b.Kind, ptr.Deref(named.GetName(), ""))] = true
	obj, change, err := r.applyObject(ctx, s.app, b, desired)
	s.changes.add(change, b.Kind, ptr.Deref(named.GetName(), ""))
	return obj, err
}

// applyObject brings one object app owns to its desired state and returns
// the object as the API server holds it, and eventCreated or eventUpdated
// when it wrote (empty when the object was up to date). It is safe for
// concurrent use.
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
// other app's owner reference): it returns a nameConflictError instead. The
// cache holds only objects the operator labelled, so an object missing from
// it may still exist, made by someone else; rather than ask the API server
// before every creation, the object is created with an apply that can only
// create (createOnlyResourceVersion), and only when that finds an object
// under the name is the object read from the API server and its owner
// checked. A creation is one request, a name conflict two.
func (r *MicroserviceAppReconciler) applyObject(ctx context.Context, app *v1alpha1.MicroserviceApp, b kind.Object, desired runtime.ApplyConfiguration) (client.Object, string, error) {
	named, ok := desired.(namedApplyConfiguration)
	if !ok {
		return nil, "", fmt.Errorf("%s apply configuration %T has no name", b.Kind, desired)
	}
	key := client.ObjectKey{Namespace: ptr.Deref(named.GetNamespace(), ""), Name: ptr.Deref(named.GetName(), "")}

	current := b.New()
	err := r.Get(ctx, key, current)
	if apierrors.IsNotFound(err) {
		created, createErr := r.create(ctx, b, desired)
		switch {
		case createErr == nil:
			if b.Kind == kind.Secret.Kind {
				r.createdSecrets.created(key)
			}
			logf.FromContext(ctx).Info("applied", "kind", b.Kind, "object", key.Name, "created", true)
			return created, eventCreated, nil
		case !apierrors.IsConflict(createErr):
			r.Recorder.Eventf(app, nil, corev1.EventTypeWarning, eventApplyFailed, "Apply", "apply %s %s: %v", b.Kind, key.Name, createErr)
			return nil, "", fmt.Errorf("apply %s %s: %w", b.Kind, key.Name, createErr)
		}
		// An object the cache does not hold has the name: one made by
		// someone else, or the app's own, written by an earlier reconcile
		// whose event the cache has not seen yet.
		err = r.apiReader().Get(ctx, key, current)
	}
	if err != nil {
		return nil, "", fmt.Errorf("read %s %s: %w", b.Kind, key.Name, err)
	}
	if !metav1.IsControlledBy(current, app) {
		conflict := newNameConflict(b.Kind, current)
		r.Recorder.Eventf(app, nil, corev1.EventTypeWarning, v1alpha1.ReasonNameConflict, "Apply", "%v", conflict)
		return nil, "", conflict
	}
	unchanged, err := ownedFieldsUnchanged(b, current, desired)
	if err != nil {
		return nil, "", fmt.Errorf("compare owned fields of %s %s: %w", b.Kind, key.Name, err)
	}
	if unchanged {
		return current, "", nil
	}

	if err := r.Apply(ctx, desired, client.FieldOwner(metadata.FieldOwner), client.ForceOwnership); err != nil {
		r.Recorder.Eventf(app, nil, corev1.EventTypeWarning, eventApplyFailed, "Apply", "apply %s %s: %v", b.Kind, key.Name, err)
		return nil, "", fmt.Errorf("apply %s %s: %w", b.Kind, key.Name, err)
	}
	// The client decodes the API server's answer, the whole object, into the
	// apply configuration; converting it spares a read that the cache could
	// only answer with the object as it was before the write.
	applied := b.New()
	if err := convert(desired, applied); err != nil {
		return nil, "", fmt.Errorf("decode applied %s %s: %w", b.Kind, key.Name, err)
	}
	logf.FromContext(ctx).Info("applied", "kind", b.Kind, "object", key.Name, "created", false)
	return applied, eventUpdated, nil
}

// create applies desired with createOnlyResourceVersion and returns the
// object the API server created; an object that already has the name makes
// it fail with a Conflict and stays as it is. The generated apply
// configurations offer no common way to set a resourceVersion, so desired
// goes as unstructured content (the same JSON the typed apply sends), which
// the client decodes the answer into.
func (r *MicroserviceAppReconciler) create(ctx context.Context, b kind.Object, desired runtime.ApplyConfiguration) (client.Object, error) {
	raw, err := json.Marshal(desired)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", b.Kind, err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("encode %s: %w", b.Kind, err)
	}
	u.SetResourceVersion(createOnlyResourceVersion)
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(metadata.FieldOwner), client.ForceOwnership); err != nil {
		return nil, err
	}
	created := b.New()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, created); err != nil {
		return nil, fmt.Errorf("decode created %s %s: %w", b.Kind, u.GetName(), err)
	}
	return created, nil
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
			s.changes.add(eventDeleted, b.Kind, obj.GetName())
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
