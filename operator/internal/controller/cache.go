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
func CacheByObject() map[client.Object]cache.ByObject {
	managed := labels.SelectorFromSet(labels.Set{resource.LabelManagedBy: resource.ManagedBy})
	out := make(map[client.Object]cache.ByObject, len(resource.PerService))
	for _, b := range resource.PerService {
		out[b.New()] = cache.ByObject{Label: managed}
	}
	return out
}
