package metadata

import (
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

// FieldOwner is the server-side apply field manager of every object the
// operator writes. One owner means one consistent view of what the operator
// manages, and lets the controller compare its intent with exactly the fields
// it owns.
const FieldOwner = "courier-operator"

// Label keys, the recommended app.kubernetes.io set.
const (
	// LabelName holds the service's name within its app (BrokerComponent
	// on the broker's objects).
	LabelName = "app.kubernetes.io/name"
	// LabelInstance holds the MicroserviceApp's name.
	LabelInstance = "app.kubernetes.io/instance"
	// LabelManagedBy marks objects the operator writes; the operator's cache
	// only holds objects carrying it.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelComponent says which part of the app an object belongs to; only
	// the managed broker's pods carry it (BrokerComponent).
	LabelComponent = "app.kubernetes.io/component"
)

// ManagedBy is the value of LabelManagedBy.
const ManagedBy = "courier-operator"

// BrokerComponent is the LabelComponent value on the managed broker's
// objects, and their LabelName and that of the monitoring and account
// Secrets: to the labels, the broker is one more part of the app. The API
// reserves the service names the broker's object names could collide with
// ("broker", "broker-nodes").
const BrokerComponent = "broker"

// Labels are put on every object the operator owns for a service and on its
// pods.
func Labels(app, service string) map[string]string {
	return map[string]string{
		LabelName:      service,
		LabelInstance:  app,
		LabelManagedBy: ManagedBy,
	}
}

// SelectorLabels select a service's pods. They are the part of Labels that
// never changes, since a Deployment's selector is immutable.
func SelectorLabels(app, service string) map[string]string {
	return map[string]string{
		LabelName:     service,
		LabelInstance: app,
	}
}

// AppLabels select every object the operator owns for an app, to find those
// no longer wanted.
func AppLabels(app string) map[string]string {
	return map[string]string{
		LabelInstance:  app,
		LabelManagedBy: ManagedBy,
	}
}

// BrokerSelectorLabels select app's managed broker pods. They never
// change, since a StatefulSet's selector and volume claim templates are
// immutable, and they do not overlap a service's selector
// (app.kubernetes.io/name = <service>), because no service's pods carry
// the component label.
func BrokerSelectorLabels(app string) map[string]string {
	return map[string]string{
		LabelInstance:  app,
		LabelComponent: BrokerComponent,
	}
}

// OwnerReference makes the app the controller of an object, so deleting the
// app garbage-collects it and the controller's watch maps it back to the app.
func OwnerReference(app *v1alpha1.MicroserviceApp) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(v1alpha1.GroupVersion.String()).
		WithKind("MicroserviceApp").
		WithName(app.Name).
		WithUID(app.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}
