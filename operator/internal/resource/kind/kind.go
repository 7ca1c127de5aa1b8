// Package kind describes the kinds of object the operator owns: how to read
// one, list them and extract the fields the operator manages, once per kind,
// and the Builder that pairs a kind with a pure builder. Package resource
// (per service) and package rabbitmq (per managed broker) both list their
// builders with it, so the controller applies, compares, deletes and watches
// every owned object the same way. It is a leaf package: resource imports
// rabbitmq, so neither could hold this for the other.
package kind

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Object is one kind of object the operator owns: what the controller needs
// to read, compare, delete and watch objects of that kind.
type Object struct {
	// Kind names the objects in events and condition messages.
	Kind string
	// Owned returns the fields of obj that fieldOwner manages, as an apply
	// configuration comparable with a builder's result.
	Owned func(obj client.Object, fieldOwner string) (runtime.ApplyConfiguration, error)
	// New returns an empty object of the kind.
	New func() client.Object
	// NewList returns an empty list of the kind.
	NewList func() client.ObjectList
}

// Builder is one object the operator builds from an In (a service's input,
// or a managed broker's), with the kind the controller handles it as.
type Builder[In any] struct {
	Object
	// Build returns the desired object, or nil when none is wanted (the
	// controller then deletes any it owns). See Optional.
	Build func(In) runtime.ApplyConfiguration
}

// Optional returns a builder's result, a pointer that is nil when no object
// is wanted, as Build returns it: a nil pointer in a non-nil interface would
// read as "wanted".
func Optional[T any, P interface {
	*T
	runtime.ApplyConfiguration
}](obj P) runtime.ApplyConfiguration {
	if obj == nil {
		return nil
	}
	return obj
}

// The kinds the operator owns.
var (
	ServiceAccount = Object{
		Kind: "ServiceAccount",
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return corev1ac.ExtractServiceAccount(obj.(*corev1.ServiceAccount), owner)
		},
		New:     func() client.Object { return &corev1.ServiceAccount{} },
		NewList: func() client.ObjectList { return &corev1.ServiceAccountList{} },
	}
	Role = Object{
		Kind: "Role",
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return rbacv1ac.ExtractRole(obj.(*rbacv1.Role), owner)
		},
		New:     func() client.Object { return &rbacv1.Role{} },
		NewList: func() client.ObjectList { return &rbacv1.RoleList{} },
	}
	RoleBinding = Object{
		Kind: "RoleBinding",
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return rbacv1ac.ExtractRoleBinding(obj.(*rbacv1.RoleBinding), owner)
		},
		New:     func() client.Object { return &rbacv1.RoleBinding{} },
		NewList: func() client.ObjectList { return &rbacv1.RoleBindingList{} },
	}
	ConfigMap = Object{
		Kind: "ConfigMap",
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return corev1ac.ExtractConfigMap(obj.(*corev1.ConfigMap), owner)
		},
		New:     func() client.Object { return &corev1.ConfigMap{} },
		NewList: func() client.ObjectList { return &corev1.ConfigMapList{} },
	}
	Secret = Object{
		Kind: "Secret",
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return corev1ac.ExtractSecret(obj.(*corev1.Secret), owner)
		},
		New:     func() client.Object { return &corev1.Secret{} },
		NewList: func() client.ObjectList { return &corev1.SecretList{} },
	}
	Service = Object{
		Kind: "Service",
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return corev1ac.ExtractService(obj.(*corev1.Service), owner)
		},
		New:     func() client.Object { return &corev1.Service{} },
		NewList: func() client.ObjectList { return &corev1.ServiceList{} },
	}
	Deployment = Object{
		Kind: "Deployment",
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return appsv1ac.ExtractDeployment(obj.(*appsv1.Deployment), owner)
		},
		New:     func() client.Object { return &appsv1.Deployment{} },
		NewList: func() client.ObjectList { return &appsv1.DeploymentList{} },
	}
	StatefulSet = Object{
		Kind:    "StatefulSet",
		Owned:   ownedStatefulSet,
		New:     func() client.Object { return &appsv1.StatefulSet{} },
		NewList: func() client.ObjectList { return &appsv1.StatefulSetList{} },
	}
	PersistentVolumeClaim = Object{
		Kind: "PersistentVolumeClaim",
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return corev1ac.ExtractPersistentVolumeClaim(obj.(*corev1.PersistentVolumeClaim), owner)
		},
		New:     func() client.Object { return &corev1.PersistentVolumeClaim{} },
		NewList: func() client.ObjectList { return &corev1.PersistentVolumeClaimList{} },
	}
	PodDisruptionBudget = Object{
		Kind: "PodDisruptionBudget",
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return policyv1ac.ExtractPodDisruptionBudget(obj.(*policyv1.PodDisruptionBudget), owner)
		},
		New:     func() client.Object { return &policyv1.PodDisruptionBudget{} },
		NewList: func() client.ObjectList { return &policyv1.PodDisruptionBudgetList{} },
	}
	NetworkPolicy = Object{
		Kind: "NetworkPolicy",
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return networkingv1ac.ExtractNetworkPolicy(obj.(*networkingv1.NetworkPolicy), owner)
		},
		New:     func() client.Object { return &networkingv1.NetworkPolicy{} },
		NewList: func() client.ObjectList { return &networkingv1.NetworkPolicyList{} },
	}
)

// ownedStatefulSet extracts the operator's fields of a StatefulSet. The API
// server stores the volume claim templates with apiVersion and kind, and a
// JSON read returns them, but protobuf has no field for them in an embedded
// object, and controller-runtime reads built-in types over protobuf. Setting
// them back as rabbitmq.StatefulSet builds them makes the result independent
// of the wire format, so a reconcile that changes nothing writes nothing.
func ownedStatefulSet(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
	sts, err := appsv1ac.ExtractStatefulSet(obj.(*appsv1.StatefulSet), owner)
	if err != nil || sts.Spec == nil {
		return sts, err
	}
	for i := range sts.Spec.VolumeClaimTemplates {
		t := &sts.Spec.VolumeClaimTemplates[i]
		if t.APIVersion == nil && t.Kind == nil {
			t.WithAPIVersion("v1").WithKind("PersistentVolumeClaim")
		}
	}
	return sts, nil
}
