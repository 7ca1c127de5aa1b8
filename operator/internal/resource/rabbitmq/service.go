package rabbitmq

import (
	"github.com/courier-dev/courier/operator/internal/metadata"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
)

// HeadlessService gives every node its stable DNS name,
// "<pod>.<headless>.<namespace>.svc.<domain>", which is also the host part of
// its RabbitMQ node name; its Endpoints are what peer discovery reads.
// Not-ready pods are published: a booting node must be found, and must
// resolve its peers, before it is ready, since it only becomes ready once it
// has joined the cluster.
func HeadlessService(b Broker) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(metadata.BrokerNamesFor(b.App).Headless, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithSpec(corev1ac.ServiceSpec().
			WithClusterIP(corev1.ClusterIPNone).
			WithPublishNotReadyAddresses(true).
			WithSelector(metadata.BrokerSelectorLabels(b.App)).
			WithPorts(
				servicePort(PortNameEPMD, EPMDPort, ""),
				servicePort(PortNameDistribution, DistributionPort, "")))
}

// ClientService is the address services and the operator dial: AMQP, the
// management HTTP API and Prometheus metrics, balanced over ready nodes.
// Every node serves every queue, forwarding to the node that holds it.
func ClientService(b Broker) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(metadata.BrokerNamesFor(b.App).Client, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(metadata.BrokerSelectorLabels(b.App)).
			WithPorts(
				servicePort(PortNameAMQP, AMQPPort, "amqp"),
				servicePort(PortNameManagement, ManagementPort, "http"),
				servicePort(PortNamePrometheus, PrometheusPort, "http")))
}

// servicePort targets the container port of the same name; appProtocol is
// set when one is standard, so meshes and gateways know what they carry.
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
