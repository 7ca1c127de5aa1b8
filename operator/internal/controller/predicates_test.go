package controller

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
)

func TestSpecOrMetadataChanged(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*v1alpha1.MicroserviceApp)
		want   bool
	}{
		{"status alone, as every status write", func(a *v1alpha1.MicroserviceApp) {
			a.ResourceVersion = "2"
			a.Status.ReadyServices = "1/1"
			a.Status.ObservedGeneration = 1
		}, false},
		{"spec (a new generation)", func(a *v1alpha1.MicroserviceApp) {
			a.ResourceVersion, a.Generation = "2", 2
		}, true},
		{"an annotation", func(a *v1alpha1.MicroserviceApp) {
			a.ResourceVersion = "2"
			a.Annotations = map[string]string{v1alpha1.AnnotationSkipBrokerCleanup: "true"}
		}, true},
		{"a finalizer", func(a *v1alpha1.MicroserviceApp) {
			a.ResourceVersion = "2"
			a.Finalizers = append(a.Finalizers, cleanupFinalizer)
		}, true},
		{"deletion", func(a *v1alpha1.MicroserviceApp) {
			a.ResourceVersion = "2"
			a.DeletionTimestamp = &metav1.Time{}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			old := fixture.App("ns", "blog", fixture.WithService("api"))
			old.ResourceVersion, old.Generation = "1", 1
			updated := old.DeepCopy()
			tt.change(updated)
			if got := specOrMetadataChanged.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: updated}); got != tt.want {
				t.Errorf("Update = %v, want %v", got, tt.want)
			}
		})
	}
}
