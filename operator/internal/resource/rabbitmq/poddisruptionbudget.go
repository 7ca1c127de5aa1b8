package rabbitmq

import (
	"github.com/courier-dev/courier/operator/internal/metadata"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
)

// PodDisruptionBudget lets voluntary disruptions such as node drains take
// one node at a time, so a three-node cluster keeps the quorum its quorum
// queues need. A broker of one node (or none) gets no budget (nil): one that
// allowed no eviction would block every drain of the Kubernetes node, and the
// controller deletes any budget left from a larger broker.
func PodDisruptionBudget(b Broker) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	if b.Replicas <= 1 {
		return nil
	}
	return policyv1ac.PodDisruptionBudget(metadata.BrokerNamesFor(b.App).PodDisruptionBudget, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(metadata.BrokerSelectorLabels(b.App))).
			WithMaxUnavailable(intstr.FromInt32(1)).
			// Unlike the services' budgets: a node that is not ready may still
			// be a member of its quorum queues (it is booting and catching
			// up), so it is evicted only while the rest of the cluster is
			// healthy. A wedged drain needs a person; a lost quorum loses
			// messages.
			WithUnhealthyPodEvictionPolicy(policyv1.IfHealthyBudget))
}
