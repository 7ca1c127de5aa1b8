package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
)

// CacheByObject restricts the manager's cache, for every kind the operator
// owns, to the objects the operator labelled, so it does not hold every
// Deployment and Service in the cluster, and keeps of each cached object
// only what the operator reads, since the cache's size grows with every app
// (bench/operator measures it):
//
//   - owned objects are slimmed (see slimOwned): their metadata, the few
//     fields the reconciler reads (a Deployment's replicas, images and
//     status, a Secret's data), and the digest of the fields the operator's
//     applies own, which is all applyChild compares with its intent to skip
//     writes that would change nothing. The spec a Deployment's pod template
//     spells out, and every managedFields entry (often as large as the
//     object's spec), stay out of memory.
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
		out[k.New()] = ctrlcache.ByObject{Label: managed, Transform: slimOwned(k)}
	}
	out[&v1alpha1.MicroserviceApp{}] = ctrlcache.ByObject{Transform: ctrlcache.TransformStripManagedFields()}
	return out
}

// ownedDigestAnnotation carries, on the cache's copy of an owned object and
// nowhere else (the operator never writes a cached object back), the digest
// of the fields the operator's applies own, taken by slimOwned from the
// managedFields it then drops.
const ownedDigestAnnotation = "cache.apps.courier.dev/owned-fields-sha256"

// readFields copies from a full owned object into its slim copy what the
// reconciler reads of objects of that kind besides their metadata: a
// Deployment's replicas, container images and status (rolloutOf), a
// StatefulSet's replicas and status (podsReady, managedBrokerGone), a
// Secret's data (the credentials kept across reconciles). Kinds not listed
// are only compared, listed and deleted, for which metadata and the digest
// suffice.
var readFields = map[string]func(full, slim client.Object){
	kind.Deployment.Kind: func(full, slim client.Object) {
		f, s := full.(*appsv1.Deployment), slim.(*appsv1.Deployment)
		s.Spec.Replicas = f.Spec.Replicas
		for _, c := range f.Spec.Template.Spec.Containers {
			s.Spec.Template.Spec.Containers = append(s.Spec.Template.Spec.Containers,
				corev1.Container{Name: c.Name, Image: c.Image})
		}
		s.Status = f.Status
	},
	kind.StatefulSet.Kind: func(full, slim client.Object) {
		f, s := full.(*appsv1.StatefulSet), slim.(*appsv1.StatefulSet)
		s.Spec.Replicas = f.Spec.Replicas
		s.Status = f.Status
	},
	kind.Secret.Kind: func(full, slim client.Object) {
		f, s := full.(*corev1.Secret), slim.(*corev1.Secret)
		s.Type, s.Data = f.Type, f.Data
	},
}

// slimOwned is the cache transform of objects of kind k: it replaces each
// with a new object holding the metadata the controller reads (name, UID,
// resourceVersion, generation, labels for prune's list, owner references
// for IsControlledBy and the Owns watch, deletionTimestamp), k's
// readFields, and the digest of the operator's owned fields as
// ownedDigestAnnotation. An object whose owned fields cannot be extracted
// is cached whole, so the reconcile extracts them itself and reports why.
func slimOwned(k kind.Object) cache.TransformFunc {
	read := readFields[k.Kind]
	return func(in any) (any, error) {
		full, ok := in.(client.Object)
		if !ok {
			// A tombstone (cache.DeletedFinalStateUnknown) passes as it is.
			return in, nil
		}
		if isSlim(full) {
			return full, nil
		}
		digest, err := ownedFieldsDigest(k, full)
		if err != nil {
			return full, nil
		}
		slim := k.New()
		slim.GetObjectKind().SetGroupVersionKind(full.GetObjectKind().GroupVersionKind())
		slim.SetName(full.GetName())
		slim.SetNamespace(full.GetNamespace())
		slim.SetUID(full.GetUID())
		slim.SetResourceVersion(full.GetResourceVersion())
		slim.SetGeneration(full.GetGeneration())
		slim.SetCreationTimestamp(full.GetCreationTimestamp())
		slim.SetDeletionTimestamp(full.GetDeletionTimestamp())
		slim.SetLabels(full.GetLabels())
		slim.SetOwnerReferences(full.GetOwnerReferences())
		slim.SetFinalizers(full.GetFinalizers())
		slim.SetAnnotations(map[string]string{ownedDigestAnnotation: digest})
		if read != nil {
			read(full, slim)
		}
		return slim, nil
	}
}

// isSlim reports whether obj is a copy slimOwned made: it has the digest
// and no managedFields, which every object the API server returns has.
func isSlim(obj client.Object) bool {
	_, ok := obj.GetAnnotations()[ownedDigestAnnotation]
	return ok && len(obj.GetManagedFields()) == 0
}

// ownedFieldsDigest returns the digest of the fields of obj that the
// operator's applies own: the one slimOwned recorded for a cached copy, or,
// for an object read whole (from the API server, or of a kind the cache
// does not slim), that of the fields extracted from its managedFields.
func ownedFieldsDigest(k kind.Object, obj client.Object) (string, error) {
	if isSlim(obj) {
		return obj.GetAnnotations()[ownedDigestAnnotation], nil
	}
	owned, err := k.Owned(obj, metadata.FieldOwner)
	if err != nil {
		return "", fmt.Errorf("extract owned fields: %w", err)
	}
	return digestOf(owned)
}

// ownedFieldsUnchanged reports whether the fields of obj that the operator
// owns are those of desired, so that applying desired would change nothing.
// Apply configurations serialise deterministically (struct fields in order,
// map keys sorted, quantities in canonical form, empty and nil alike
// omitted), so equal JSON is equal content.
func ownedFieldsUnchanged(k kind.Object, obj client.Object, desired runtime.ApplyConfiguration) (bool, error) {
	have, err := ownedFieldsDigest(k, obj)
	if err != nil {
		return false, err
	}
	want, err := digestOf(desired)
	if err != nil {
		return false, err
	}
	return have == want, nil
}

// digestOf is the SHA-256 of an apply configuration's JSON.
func digestOf(ac runtime.ApplyConfiguration) (string, error) {
	raw, err := json.Marshal(ac)
	if err != nil {
		return "", fmt.Errorf("marshal %T: %w", ac, err)
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:]), nil
}
