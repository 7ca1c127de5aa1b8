package resource

import (
	"github.com/courier-dev/courier/operator/internal/metadata"
	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
)

// PersistentVolumeClaim is the volume of a service with storage, which its
// Deployment mounts at the storage's mount path; a service without storage
// gets none (nil).
//
// The app owns the claim, so the volume is deleted with the app, as a
// managed broker's volumes are; removing the service deletes it too. The
// claim is ReadWriteOnce, the one access mode every storage class offers,
// which is why a service with storage runs one replica and its Deployment
// recreates its pod.
func PersistentVolumeClaim(in Input) *corev1ac.PersistentVolumeClaimApplyConfiguration {
	app, svc := in.App, in.Service
	if svc.Storage == nil {
		return nil
	}
	spec := corev1ac.PersistentVolumeClaimSpec().
		WithAccessModes(corev1.ReadWriteOnce).
		WithResources(corev1ac.VolumeResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceStorage: svc.Storage.Size}))
	if svc.Storage.StorageClassName != nil {
		spec.WithStorageClassName(*svc.Storage.StorageClassName)
	}
	return corev1ac.PersistentVolumeClaim(metadata.DataClaimName(app.Name, svc.Name), app.Namespace).
		WithLabels(metadata.Labels(app.Name, svc.Name)).
		WithOwnerReferences(metadata.OwnerReference(app)).
		WithSpec(spec)
}
