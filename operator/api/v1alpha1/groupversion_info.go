// Package v1alpha1 holds the MicroserviceApp API: one resource that declares
// an application's services and how they call each other, from which the
// Courier operator derives Deployments, Services and disruption budgets.
//
// +kubebuilder:object:generate=true
// +groupName=apps.courier.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "apps.courier.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a runtime.Scheme.
	// It is apimachinery's, not controller-runtime's deprecated helper, so
	// the API package depends on apimachinery alone.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &MicroserviceApp{}, &MicroserviceAppList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
