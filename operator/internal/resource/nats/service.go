package nats

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/courier-dev/courier/operator/internal/metadata"
)

// HeadlessService gives every server the stable DNS name its routes use,
// "<pod>.<headless>.<namespace>.svc.<domain>". Not-ready servers are
// published: a booting server must find its peers before it can be ready.
func HeadlessService(b Broker) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(metadata.BrokerNamesFor(b.App).Headless, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithSpec(corev1ac.ServiceSpec().
			WithClusterIP(corev1.ClusterIPNone).
			WithPublishNotReadyAddresses(true).
			WithSelector(metadata.BrokerSelectorLabels(b.App)).
			WithPorts(
				servicePort(PortNameClient, ClientPort, ""),
				servicePort(PortNameCluster, ClusterPort, "")))
}

// ClientService is what services and the operator dial, and what
// Prometheus scrapes, balanced over ready servers; any server serves every
// stream of the cluster.
func ClientService(b Broker) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(metadata.BrokerNamesFor(b.App).Client, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(metadata.BrokerSelectorLabels(b.App)).
			WithPorts(
				servicePort(PortNameClient, ClientPort, ""),
				servicePort(PortNameMonitor, MonitorPort, "http"),
				servicePort(PortNameMetrics, MetricsPort, "http")))
}

func servicePort(name string, port int32, appProtocol string) *corev1ac.ServicePortApplyConfiguration {
	p := corev1ac.ServicePort().
		WithName(name).
		WithPort(port).
		WithTargetPort(intstr.FromString(name)).
		WithProtocol(corev1.ProtocolTCP)
	if appProtocol != "" {
		p.WithAppProtocol(appProtocol)
	}
	return p
}
