package rabbitmq

import (
	"github.com/courier-dev/courier/operator/internal/metadata"
	rbacv1 "k8s.io/api/rbac/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
)

// ServiceAccount is the identity the nodes call the Kubernetes API with for
// peer discovery. The pods, not the account, opt into a token.
func ServiceAccount(b Broker) *corev1ac.ServiceAccountApplyConfiguration {
	return corev1ac.ServiceAccount(metadata.BrokerNamesFor(b.App).ServiceAccount, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...)
}

// Role grants what rabbitmq_peer_discovery_k8s does with the API: it reads
// the headless Service's Endpoints to list the nodes and records events
// about cluster formation. Nothing else, and only in the app's namespace.
// The plugin reads the Endpoints API (not EndpointSlices), which Kubernetes
// still serves.
func Role(b Broker) *rbacv1ac.RoleApplyConfiguration {
	return rbacv1ac.Role(metadata.BrokerNamesFor(b.App).Role, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithRules(
			rbacv1ac.PolicyRule().
				WithAPIGroups("").
				WithResources("endpoints").
				WithVerbs("get", "list"),
			rbacv1ac.PolicyRule().
				WithAPIGroups("").
				WithResources("events").
				WithVerbs("create"))
}

// RoleBinding binds Role to ServiceAccount.
func RoleBinding(b Broker) *rbacv1ac.RoleBindingApplyConfiguration {
	n := metadata.BrokerNamesFor(b.App)
	return rbacv1ac.RoleBinding(n.RoleBinding, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithRoleRef(rbacv1ac.RoleRef().
			WithAPIGroup(rbacv1.GroupName).
			WithKind("Role").
			WithName(n.Role)).
		WithSubjects(rbacv1ac.Subject().
			WithKind(rbacv1.ServiceAccountKind).
			WithName(n.ServiceAccount).
			WithNamespace(b.Namespace))
}
