package nats

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"

	"github.com/courier-dev/courier/operator/internal/metadata"
)

// PodDisruptionBudget lets drains take one server at a time from a
// JetStream cluster, which keeps the majority its streams need. One server
// gets no budget (nil), as for RabbitMQ; a not-ready server is evicted only
// while the rest is healthy, since it may be catching up as a replica.
func PodDisruptionBudget(b Broker) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	if !b.clustered() {
		return nil
	}
	return policyv1ac.PodDisruptionBudget(metadata.BrokerNamesFor(b.App).PodDisruptionBudget, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(metadata.BrokerSelectorLabels(b.App))).
			WithMaxUnavailable(intstr.FromInt32(1)).
			WithUnhealthyPodEvictionPolicy(policyv1.IfHealthyBudget))
}

// labelNamespaceName is the label the API server sets on every namespace.
const labelNamespaceName = "kubernetes.io/metadata.name"

// NetworkPolicy isolates the servers as the RabbitMQ broker's policy does:
// the client port admits the app's services and the operator's namespace;
// the monitoring port the operator's namespace; the metrics port also the
// monitoring pods; the cluster port, over which routes carry every
// account's traffic, only the other servers.
func NetworkPolicy(b Broker) *networkingv1ac.NetworkPolicyApplyConfiguration {
	n := b.Network
	var operator *networkingv1ac.NetworkPolicyPeerApplyConfiguration
	if n.OperatorNamespace != "" {
		operator = networkingv1ac.NetworkPolicyPeer().
			WithNamespaceSelector(metav1ac.LabelSelector().
				WithMatchLabels(map[string]string{labelNamespaceName: n.OperatorNamespace}))
	}
	clients := networkingv1ac.NetworkPolicyIngressRule().WithPorts(tcpPort(ClientPort))
	if len(n.Clients) > 0 {
		clients.WithFrom(networkingv1ac.NetworkPolicyPeer().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(n.Clients)))
	}
	rules := []*networkingv1ac.NetworkPolicyIngressRuleApplyConfiguration{clients}
	if operator != nil {
		clients.WithFrom(operator)
		rules = append(rules, networkingv1ac.NetworkPolicyIngressRule().
			WithPorts(tcpPort(MonitorPort), tcpPort(MetricsPort)).
			WithFrom(operator))
	}
	if n.Monitoring != nil {
		rules = append(rules, networkingv1ac.NetworkPolicyIngressRule().
			WithPorts(tcpPort(MetricsPort)).
			WithFrom(n.Monitoring))
	}
	rules = append(rules, networkingv1ac.NetworkPolicyIngressRule().
		WithPorts(tcpPort(ClusterPort)).
		WithFrom(networkingv1ac.NetworkPolicyPeer().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(metadata.BrokerSelectorLabels(b.App)))))
	return networkingv1ac.NetworkPolicy(metadata.BrokerNamesFor(b.App).NetworkPolicy, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithSpec(networkingv1ac.NetworkPolicySpec().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(metadata.BrokerSelectorLabels(b.App))).
			WithPolicyTypes(networkingv1.PolicyTypeIngress).
			WithIngress(rules...))
}

func tcpPort(port int32) *networkingv1ac.NetworkPolicyPortApplyConfiguration {
	return networkingv1ac.NetworkPolicyPort().WithProtocol(corev1.ProtocolTCP).WithPort(intstr.FromInt32(port))
}
