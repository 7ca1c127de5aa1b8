package controller

import (
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/internal/resource"
)

// CacheByObject restricts the manager's cache, for every kind the operator
// owns, to the objects the operator labelled, so it does not hold every
// Deployment and Service in the cluster. The cache must keep managedFields
// (no TransformStripManagedFields): the reconciler compares them with its
// intent to skip writes that would change nothing.
//
// For Secrets the restriction also keeps the cache from holding every
// Secret's data. An external broker's admin Secret, which the user labels as
// they like, is watched through a separate metadata-only informer (see
// SetupWithManager) and read from the API server when needed.
func CacheByObject() map[client.Object]cache.ByObject {
	managed := labels.SelectorFromSet(labels.Set{resource.LabelManagedBy: resource.ManagedBy})
	kinds := ownedKinds()
	out := make(map[client.Object]cache.ByObject, len(kinds))
	for _, k := range kinds {
		out[k.New()] = cache.ByObject{Label: managed}
	}
	return out
}
