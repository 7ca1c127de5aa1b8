package resource

import (
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/courier-dev/courier/operator/internal/resource/kind"
)

// Builder is one kind of object the operator owns for every service of an
// app: the pure builder and what the controller needs to read, compare,
// delete and watch objects of that kind.
type Builder = kind.Builder[Input]

// PerService lists the builders every service goes through, in the order the
// controller applies them across all services: NetworkPolicies first, so no
// pod ever runs without the rules that isolate it; broker connection Secrets
// next, since pods cannot start without the Secret their BROKER_URL comes
// from; volume claims next, so a pod never waits for the claim it mounts;
// Services next, so every URL a caller is given resolves before any pod
// starts; Deployments next; disruption budgets last, once there are pods for
// them to protect.
var PerService = []Builder{
	{Object: kind.NetworkPolicy, Build: func(in Input) runtime.ApplyConfiguration { return NetworkPolicy(in) }},
	{Object: kind.Secret, Build: func(in Input) runtime.ApplyConfiguration { return kind.Optional(ConnectionSecret(in)) }},
	{Object: kind.PersistentVolumeClaim, Build: func(in Input) runtime.ApplyConfiguration { return kind.Optional(PersistentVolumeClaim(in)) }},
	{Object: kind.Service, Build: func(in Input) runtime.ApplyConfiguration { return Service(in) }},
	{Object: kind.Deployment, Build: func(in Input) runtime.ApplyConfiguration { return Deployment(in) }},
	{Object: kind.PodDisruptionBudget, Build: func(in Input) runtime.ApplyConfiguration { return kind.Optional(PodDisruptionBudget(in)) }},
}
