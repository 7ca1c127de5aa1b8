package controller

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/metadata"
)

// CacheByObject restricts the manager's cache, for every kind the operator
// owns, to the objects the operator labelled, so it does not hold every
// Deployment and Service in the cluster, and drops from each cached object
// what the operator never reads, since the cache's size grows with every
// app (bench/operator measures it):
//
//   - owned objects keep only the operator's own managedFields entry. The
//     reconciler compares that entry with its intent to skip writes that
//     would change nothing, so it must stay; the entries of other managers
//     (the deployment controller's status, a person's kubectl edit) are
//     never read and are often as large as the object's spec.
//   - apps keep no managedFields at all: the operator writes an app's
//     status with a merge patch and its finalizer with an update, neither
//     of which reads or sends them (an update without managedFields leaves
//     them as they are).
//
// For Secrets the label restriction also keeps the cache from holding every
// Secret's data. An external broker's admin Secret, which the user labels as
// they like, is watched through a separate metadata-only informer (see
// SetupWithManager) and read from the API server when needed.
func CacheByObject() map[client.Object]ctrlcache.ByObject {
	managed := labels.SelectorFromSet(labels.Set{metadata.LabelManagedBy: metadata.ManagedBy})
	kinds := ownedKinds()
	out := make(map[client.Object]ctrlcache.ByObject, len(kinds)+1)
	for _, k := range kinds {
		out[k.New()] = ctrlcache.ByObject{Label: managed, Transform: keepOwnManagedFields}
	}
	out[&v1alpha1.MicroserviceApp{}] = ctrlcache.ByObject{Transform: ctrlcache.TransformStripManagedFields()}
	return out
}

// keepOwnManagedFields is the cache transform of owned objects: it drops
// every managedFields entry but the one the operator's applies own
// (metadata.FieldOwner, operation Apply, the main resource), the only one
// kind.Object.Owned reads.
var keepOwnManagedFields cache.TransformFunc = func(in any) (any, error) {
	obj, ok := in.(client.Object)
	if !ok {
		// A tombstone (cache.DeletedFinalStateUnknown) passes as it is.
		return in, nil
	}
	entries := obj.GetManagedFields()
	kept := entries[:0:0]
	for _, e := range entries {
		if e.Manager == metadata.FieldOwner && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == "" {
			kept = append(kept, e)
		}
	}
	if len(kept) != len(entries) {
		obj.SetManagedFields(kept)
	}
	return obj, nil
}
