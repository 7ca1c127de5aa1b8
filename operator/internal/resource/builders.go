package resource

import (
	"slices"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/courier-dev/courier/operator/internal/resource/kind"
)

// Builder is one kind of object the operator owns for every service of an
// app: the pure builder and what the controller needs to read, compare,
// delete and watch objects of that kind.
type Builder = kind.Builder[Input]

// PerServiceSteps lists the builders every service goes through, in the
// steps the controller applies them across all services: first everything a
// pod needs, NetworkPolicies (so no pod ever runs without the rules that
// isolate it), broker connection Secrets (pods cannot start without the
// Secret their BROKER_URL comes from), volume claims (so a pod never waits
// for the claim it mounts) and Services (so every URL a caller is given
// resolves before any pod starts); then the Deployments, which make the
// pods, with their disruption budgets, which select those pods and mean
// nothing before they exist. The objects of one step do not depend on each
// other, so the controller applies them concurrently, and starts a step
// once every object of the one before it is applied.
var PerServiceSteps = [][]Builder{
	{
		{Object: kind.NetworkPolicy, Build: func(in Input) runtime.ApplyConfiguration { return NetworkPolicy(in) }},
		{Object: kind.Secret, Build: func(in Input) runtime.ApplyConfiguration { return kind.Optional(ConnectionSecret(in)) }},
		{Object: kind.PersistentVolumeClaim, Build: func(in Input) runtime.ApplyConfiguration { return kind.Optional(PersistentVolumeClaim(in)) }},
		{Object: kind.Service, Build: func(in Input) runtime.ApplyConfiguration { return Service(in) }},
	},
	{
		{Object: kind.Deployment, Build: func(in Input) runtime.ApplyConfiguration { return Deployment(in) }},
		{Object: kind.PodDisruptionBudget, Build: func(in Input) runtime.ApplyConfiguration { return kind.Optional(PodDisruptionBudget(in)) }},
	},
}

// PerService is every builder of PerServiceSteps, in order.
var PerService = slices.Concat(PerServiceSteps...)
