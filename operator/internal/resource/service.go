package resource

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/services/kit/contract"
)

// Service gives a service its stable in-cluster name, the host of the
// SERVICE_<NAME>_URL its callers get. It exposes the admin port too, named,
// so a ServiceMonitor can select it.
func Service(in Input) *corev1ac.ServiceApplyConfiguration {
	app, svc := in.App, in.Service
	return corev1ac.Service(metadata.Name(app.Name, svc.Name), app.Namespace).
		WithLabels(metadata.Labels(app.Name, svc.Name)).
		WithOwnerReferences(metadata.OwnerReference(app)).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(metadata.SelectorLabels(app.Name, svc.Name)).
			WithPorts(
				corev1ac.ServicePort().
					WithName(contract.HTTPPortName).
					WithPort(httpPort(svc)).
					WithTargetPort(intstr.FromString(contract.HTTPPortName)).
					WithProtocol(corev1.ProtocolTCP).
					WithAppProtocol("http"),
				corev1ac.ServicePort().
					WithName(contract.AdminPortName).
					WithPort(adminPort(svc)).
					WithTargetPort(intstr.FromString(contract.AdminPortName)).
					WithProtocol(corev1.ProtocolTCP).
					WithAppProtocol("http")))
}
