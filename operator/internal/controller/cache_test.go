package controller

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/internal/resource/kind"
)

// TestSlimCache checks what the manager's cache keeps of an app's objects:
// the slim copy slimOwned makes, without managedFields or the pod
// template's spec, with what the reconciler reads, and with the digest of
// the operator's owned fields that extraction from the whole object gives.
func TestSlimCache(t *testing.T) {
	t.Parallel()
	app := blog(t)
	ns := app.Namespace
	markAvailable(t, ns, "blog-users")

	full := &appsv1.Deployment{}
	slim := &appsv1.Deployment{}
	eventually(t, "the cache holds Deployment blog-users as it is on the API server", func(ctx context.Context) error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "blog-users"}, full); err != nil {
			return err
		}
		if err := mgrClient.Get(ctx, client.ObjectKeyFromObject(full), slim); err != nil {
			return err
		}
		if slim.ResourceVersion != full.ResourceVersion {
			return fmt.Errorf("cached resourceVersion %s, API server's %s", slim.ResourceVersion, full.ResourceVersion)
		}
		return nil
	})

	want, err := ownedFieldsDigest(kind.Deployment, full)
	if err != nil {
		t.Fatal(err)
	}
	if !isSlim(slim) || slim.Annotations[ownedDigestAnnotation] != want {
		t.Errorf("cached digest %q (slim: %v), want %q, the digest of the fields extracted from the whole object",
			slim.Annotations[ownedDigestAnnotation], isSlim(slim), want)
	}
	if len(slim.ManagedFields) != 0 {
		t.Errorf("cached copy keeps %d managedFields entries, want none", len(slim.ManagedFields))
	}
	if !metav1.IsControlledBy(slim, ownerOf(full)) {
		t.Errorf("cached copy lost its controller reference: %+v", slim.OwnerReferences)
	}
	if !equality.Semantic.DeepEqual(slim.Labels, full.Labels) || slim.Generation != full.Generation || slim.UID != full.UID {
		t.Errorf("cached metadata: labels %v, generation %d, uid %s; want %v, %d, %s",
			slim.Labels, slim.Generation, slim.UID, full.Labels, full.Generation, full.UID)
	}
	// What rolloutOf reads.
	if *slim.Spec.Replicas != *full.Spec.Replicas || !equality.Semantic.DeepEqual(slim.Status, full.Status) {
		t.Errorf("cached replicas %d, status %+v; want %d, %+v", *slim.Spec.Replicas, slim.Status, *full.Spec.Replicas, full.Status)
	}
	if got := rolloutOf(&app.Spec.Services[1], slim); got != rolloutOf(&app.Spec.Services[1], full) || !got.available || got.image == "" {
		t.Errorf("rollout read from the cached copy %+v, from the whole object %+v", got, rolloutOf(&app.Spec.Services[1], full))
	}
	// What it does not.
	c := slim.Spec.Template.Spec.Containers
	if len(c) != 1 || c[0].Env != nil || c[0].LivenessProbe != nil || slim.Spec.Template.Labels != nil || slim.Spec.Selector != nil {
		t.Errorf("cached pod template keeps more than the container's name and image: %+v, %+v", slim.Spec.Template, slim.Spec.Selector)
	}

	svc := &corev1.Service{}
	if err := mgrClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "blog-users"}, svc); err != nil {
		t.Fatal(err)
	}
	fullSvc := &corev1.Service{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(svc), fullSvc); err != nil {
		t.Fatal(err)
	}
	wantSvc, err := ownedFieldsDigest(kind.Service, fullSvc)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Annotations[ownedDigestAnnotation] != wantSvc || len(svc.Spec.Ports) != 0 || len(svc.ManagedFields) != 0 {
		t.Errorf("cached Service: digest %q (want %q), %d ports, %d managedFields entries; want only metadata and the digest",
			svc.Annotations[ownedDigestAnnotation], wantSvc, len(svc.Spec.Ports), len(svc.ManagedFields))
	}
}

// ownerOf returns a stand-in for obj's controller, for IsControlledBy.
func ownerOf(obj client.Object) metav1.Object {
	ref := metav1.GetControllerOf(obj)
	return &metav1.ObjectMeta{UID: ref.UID}
}

// TestSlimOwnedPassesThrough checks the transform leaves alone what it
// must not slim: a tombstone, and a copy it already slimmed.
func TestSlimOwnedPassesThrough(t *testing.T) {
	transform := slimOwned(kind.Deployment)
	tombstone := cache.DeletedFinalStateUnknown{Key: "ns/blog-users"}
	if out, err := transform(tombstone); err != nil || out != tombstone {
		t.Errorf("tombstone: got %v, %v; want it unchanged", out, err)
	}
	slim := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "blog-users", Annotations: map[string]string{ownedDigestAnnotation: "d"}}}
	if out, err := transform(slim); err != nil || out != slim {
		t.Errorf("a slim copy: got %v, %v; want it unchanged", out, err)
	}
}
