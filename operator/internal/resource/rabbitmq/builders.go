package rabbitmq

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Input is what the broker builders build from.
type Input struct {
	// Broker describes the managed broker.
	Broker Broker
	// Credentials are the admin Secret's values: those of the existing
	// Secret (CredentialsFromSecret), or GenerateCredentials when there is
	// none yet. See AdminSecret.
	Credentials Credentials
}

// Builder is one kind of object of a managed broker. Its fields mirror
// resource.Builder, so the controller applies, compares, deletes and watches
// broker objects the way it does a service's.
type Builder struct {
	// Kind names the objects in events and condition messages.
	Kind string
	// Build returns the desired object, or nil when the broker needs none
	// (the controller then deletes any it owns).
	Build func(Input) runtime.ApplyConfiguration
	// Owned returns the fields of obj that fieldOwner manages, as an apply
	// configuration comparable with Build's result.
	Owned func(obj client.Object, fieldOwner string) (runtime.ApplyConfiguration, error)
	// New returns an empty object of the kind.
	New func() client.Object
	// NewList returns an empty list of the kind.
	NewList func() client.ObjectList
}

// Builders are the managed broker's objects in the order the controller
// applies them: whatever a pod mounts or calls the API as must exist before
// the StatefulSet creates pods, because a node that cannot list its peers
// boots alone and forms a cluster of its own, and a pod whose ConfigMap or
// Secret is missing never starts; the Services come before the pods so that
// node names resolve at first boot; the disruption budget comes last, once
// there are pods to protect.
var Builders = []Builder{
	{
		Kind:  "ServiceAccount",
		Build: func(in Input) runtime.ApplyConfiguration { return ServiceAccount(in.Broker) },
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return corev1ac.ExtractServiceAccount(obj.(*corev1.ServiceAccount), owner)
		},
		New:     func() client.Object { return &corev1.ServiceAccount{} },
		NewList: func() client.ObjectList { return &corev1.ServiceAccountList{} },
	},
	{
		Kind:  "Role",
		Build: func(in Input) runtime.ApplyConfiguration { return Role(in.Broker) },
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return rbacv1ac.ExtractRole(obj.(*rbacv1.Role), owner)
		},
		New:     func() client.Object { return &rbacv1.Role{} },
		NewList: func() client.ObjectList { return &rbacv1.RoleList{} },
	},
	{
		Kind:  "RoleBinding",
		Build: func(in Input) runtime.ApplyConfiguration { return RoleBinding(in.Broker) },
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return rbacv1ac.ExtractRoleBinding(obj.(*rbacv1.RoleBinding), owner)
		},
		New:     func() client.Object { return &rbacv1.RoleBinding{} },
		NewList: func() client.ObjectList { return &rbacv1.RoleBindingList{} },
	},
	{
		Kind:  "ConfigMap",
		Build: func(in Input) runtime.ApplyConfiguration { return ConfigMap(in.Broker) },
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return corev1ac.ExtractConfigMap(obj.(*corev1.ConfigMap), owner)
		},
		New:     func() client.Object { return &corev1.ConfigMap{} },
		NewList: func() client.ObjectList { return &corev1.ConfigMapList{} },
	},
	{
		// Only ever created, never changed: see AdminSecret.
		Kind:  "Secret",
		Build: func(in Input) runtime.ApplyConfiguration { return AdminSecret(in.Broker, in.Credentials) },
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return corev1ac.ExtractSecret(obj.(*corev1.Secret), owner)
		},
		New:     func() client.Object { return &corev1.Secret{} },
		NewList: func() client.ObjectList { return &corev1.SecretList{} },
	},
	{
		Kind:    "Service",
		Build:   func(in Input) runtime.ApplyConfiguration { return HeadlessService(in.Broker) },
		Owned:   ownedService,
		New:     func() client.Object { return &corev1.Service{} },
		NewList: func() client.ObjectList { return &corev1.ServiceList{} },
	},
	{
		Kind:    "Service",
		Build:   func(in Input) runtime.ApplyConfiguration { return ClientService(in.Broker) },
		Owned:   ownedService,
		New:     func() client.Object { return &corev1.Service{} },
		NewList: func() client.ObjectList { return &corev1.ServiceList{} },
	},
	{
		Kind:    "StatefulSet",
		Build:   func(in Input) runtime.ApplyConfiguration { return StatefulSet(in.Broker) },
		Owned:   ownedStatefulSet,
		New:     func() client.Object { return &appsv1.StatefulSet{} },
		NewList: func() client.ObjectList { return &appsv1.StatefulSetList{} },
	},
	{
		Kind: "PodDisruptionBudget",
		Build: func(in Input) runtime.ApplyConfiguration {
			// A nil pointer in a non-nil interface would read as "wanted".
			if pdb := PodDisruptionBudget(in.Broker); pdb != nil {
				return pdb
			}
			return nil
		},
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return policyv1ac.ExtractPodDisruptionBudget(obj.(*policyv1.PodDisruptionBudget), owner)
		},
		New:     func() client.Object { return &policyv1.PodDisruptionBudget{} },
		NewList: func() client.ObjectList { return &policyv1.PodDisruptionBudgetList{} },
	},
}

func ownedService(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
	return corev1ac.ExtractService(obj.(*corev1.Service), owner)
}

// ownedStatefulSet extracts the operator's fields of a StatefulSet. The API
// server stores the volume claim templates with apiVersion and kind, and a
// JSON read returns them, but protobuf has no field for them in an embedded
// object, and controller-runtime reads built-in types over protobuf. Setting
// them back as volumeClaimTemplate builds them makes the result independent
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
