package rabbitmq

import (
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/courier-dev/courier/operator/internal/resource/kind"
)

// Input is what the broker builders build from.
type Input struct {
	// Broker describes the managed broker.
	Broker Broker
	// Credentials are the admin Secret's values: those of the existing
	// Secret (CredentialsFromSecret), or new ones the controller generates when there is
	// none yet. See AdminSecret.
	Credentials Credentials
}

// Builder is one kind of object of a managed broker. It is resource.Builder
// with the broker's Input, so the controller applies, compares, deletes and
// watches broker objects the way it does a service's.
type Builder = kind.Builder[Input]

// Builders are the managed broker's objects in the order the controller
// applies them: the NetworkPolicy first, so no node ever runs unprotected;
// whatever a pod mounts or calls the API as must exist before
// the StatefulSet creates pods, because a node that cannot list its peers
// boots alone and forms a cluster of its own, and a pod whose ConfigMap or
// Secret is missing never starts; the Services come before the pods so that
// node names resolve at first boot; the disruption budget comes last, once
// there are pods to protect.
var Builders = []Builder{
	{Object: kind.NetworkPolicy, Build: func(in Input) runtime.ApplyConfiguration { return NetworkPolicy(in.Broker) }},
	{Object: kind.ServiceAccount, Build: func(in Input) runtime.ApplyConfiguration { return ServiceAccount(in.Broker) }},
	{Object: kind.Role, Build: func(in Input) runtime.ApplyConfiguration { return Role(in.Broker) }},
	{Object: kind.RoleBinding, Build: func(in Input) runtime.ApplyConfiguration { return RoleBinding(in.Broker) }},
	{Object: kind.ConfigMap, Build: func(in Input) runtime.ApplyConfiguration { return ConfigMap(in.Broker) }},
	// Only ever created, never changed: see AdminSecret.
	{Object: kind.Secret, Build: func(in Input) runtime.ApplyConfiguration { return AdminSecret(in.Broker, in.Credentials) }},
	{Object: kind.Service, Build: func(in Input) runtime.ApplyConfiguration { return HeadlessService(in.Broker) }},
	{Object: kind.Service, Build: func(in Input) runtime.ApplyConfiguration { return ClientService(in.Broker) }},
	{Object: kind.StatefulSet, Build: func(in Input) runtime.ApplyConfiguration { return StatefulSet(in.Broker) }},
	{Object: kind.PodDisruptionBudget, Build: func(in Input) runtime.ApplyConfiguration { return kind.Optional(PodDisruptionBudget(in.Broker)) }},
}
