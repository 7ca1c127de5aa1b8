package controller

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/courier-dev/courier/operator/internal/metadata"
)

func TestKeepOwnManagedFields(t *testing.T) {
	own := metav1.ManagedFieldsEntry{Manager: metadata.FieldOwner, Operation: metav1.ManagedFieldsOperationApply}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "blog-users", ManagedFields: []metav1.ManagedFieldsEntry{
		{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status"},
		own,
		{Manager: "kubectl-edit", Operation: metav1.ManagedFieldsOperationUpdate},
		{Manager: metadata.FieldOwner, Operation: metav1.ManagedFieldsOperationApply, Subresource: "status"},
	}}}
	out, err := keepOwnManagedFields(d)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*appsv1.Deployment).ManagedFields
	if len(got) != 1 || got[0] != own {
		t.Errorf("managedFields after the transform = %+v, want only %+v", got, own)
	}

	tombstone := cache.DeletedFinalStateUnknown{Key: "ns/blog-users"}
	if out, err := keepOwnManagedFields(tombstone); err != nil || out != tombstone {
		t.Errorf("tombstone: got %v, %v; want it unchanged", out, err)
	}
}
