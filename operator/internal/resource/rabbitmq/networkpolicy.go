package rabbitmq

import (
	"github.com/courier-dev/courier/operator/internal/metadata"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
)

// Network says who, besides the broker's own nodes, may reach them. The
// controller fills it from the app and the operator's own namespace.
type Network struct {
	// Clients select, in the broker's namespace, the pods that may use the
	// client ports (AMQP, management, Prometheus): the app's services (the
	// app's labels, which the nodes carry too). Empty admits no pod of the
	// namespace.
	Clients map[string]string
	// OperatorNamespace is the namespace the operator runs in. Its pods may
	// use the client ports, since the operator calls the management API.
	// Empty admits no other namespace (an operator running outside the
	// cluster does not reach the broker over the pod network).
	OperatorNamespace string
	// Monitoring selects the pods that may scrape the Prometheus port; nil
	// admits none besides Clients and the operator.
	Monitoring *networkingv1ac.NetworkPolicyPeerApplyConfiguration
}

// labelNamespaceName is the label the API server sets on every namespace,
// holding its name.
const labelNamespaceName = "kubernetes.io/metadata.name"

// NetworkPolicy isolates the broker's nodes: the client ports admit the
// app's services and the operator, the Prometheus port also the monitoring
// pods, and the clustering ports (epmd, Erlang distribution), over which a
// peer can run any code on a node that trusts its cookie, admit only the
// other nodes. Egress is not restricted: nodes call the API server for peer
// discovery.
func NetworkPolicy(b Broker) *networkingv1ac.NetworkPolicyApplyConfiguration {
	n := b.Network
	clients := networkingv1ac.NetworkPolicyIngressRule().
		WithPorts(tcpPort(AMQPPort), tcpPort(ManagementPort), tcpPort(PrometheusPort))
	if len(n.Clients) > 0 {
		clients.WithFrom(networkingv1ac.NetworkPolicyPeer().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(n.Clients)))
	}
	if n.OperatorNamespace != "" {
		clients.WithFrom(networkingv1ac.NetworkPolicyPeer().
			WithNamespaceSelector(metav1ac.LabelSelector().
				WithMatchLabels(map[string]string{labelNamespaceName: n.OperatorNamespace})))
	}
	nodes := networkingv1ac.NetworkPolicyPeer().
		WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(metadata.BrokerSelectorLabels(b.App)))

	rules := []*networkingv1ac.NetworkPolicyIngressRuleApplyConfiguration{clients}
	if n.Monitoring != nil {
		rules = append(rules, networkingv1ac.NetworkPolicyIngressRule().
			WithPorts(tcpPort(PrometheusPort)).
			WithFrom(n.Monitoring))
	}
	rules = append(rules, networkingv1ac.NetworkPolicyIngressRule().
		WithPorts(tcpPort(EPMDPort), tcpPort(DistributionPort)).
		WithFrom(nodes))

	return networkingv1ac.NetworkPolicy(metadata.BrokerNamesFor(b.App).NetworkPolicy, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithSpec(networkingv1ac.NetworkPolicySpec().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(metadata.BrokerSelectorLabels(b.App))).
			WithPolicyTypes(networkingv1.PolicyTypeIngress).
			WithIngress(rules...))
}

func tcpPort(port int32) *networkingv1ac.NetworkPolicyPortApplyConfiguration {
	return networkingv1ac.NetworkPolicyPort().
		WithProtocol(corev1.ProtocolTCP).
		WithPort(intstr.FromInt32(port))
}
