package resource

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Builder is one kind of object the operator owns for every service of an
// app. It ties the pure builder to what the controller needs to read, compare,
// delete and watch objects of that kind.
type Builder struct {
	// Kind names the objects in events and condition messages.
	Kind string
	// Build returns the desired object, or nil when the service needs none
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

// PerService lists the builders every service goes through, in the order the
// controller applies them across all services: broker connection Secrets
// first, since pods cannot start without the Secret their BROKER_URL comes
// from; Services next, so every URL a caller is given resolves before any pod
// starts; Deployments next; disruption budgets last, once there are pods for
// them to protect.
var PerService = []Builder{
	{
		Kind: "Secret",
		Build: func(in Input) runtime.ApplyConfiguration {
			// A nil pointer in a non-nil interface would read as "wanted".
			if s := ConnectionSecret(in); s != nil {
				return s
			}
			return nil
		},
		Owned:   ownedSecret,
		New:     func() client.Object { return &corev1.Secret{} },
		NewList: func() client.ObjectList { return &corev1.SecretList{} },
	},
	{
		Kind: "Service",
		Build: func(in Input) runtime.ApplyConfiguration {
			return Service(in)
		},
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return corev1ac.ExtractService(obj.(*corev1.Service), owner)
		},
		New:     func() client.Object { return &corev1.Service{} },
		NewList: func() client.ObjectList { return &corev1.ServiceList{} },
	},
	{
		Kind: "Deployment",
		Build: func(in Input) runtime.ApplyConfiguration {
			return Deployment(in)
		},
		Owned: func(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
			return appsv1ac.ExtractDeployment(obj.(*appsv1.Deployment), owner)
		},
		New:     func() client.Object { return &appsv1.Deployment{} },
		NewList: func() client.ObjectList { return &appsv1.DeploymentList{} },
	},
	{
		Kind: "PodDisruptionBudget",
		Build: func(in Input) runtime.ApplyConfiguration {
			// A nil pointer in a non-nil interface would read as "wanted".
			if pdb := PodDisruptionBudget(in); pdb != nil {
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

func ownedSecret(obj client.Object, owner string) (runtime.ApplyConfiguration, error) {
	return corev1ac.ExtractSecret(obj.(*corev1.Secret), owner)
}
