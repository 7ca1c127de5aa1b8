package resource

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/metadata"
)

// DefaultMonitoringNamespace is the namespace whose pods may scrape an app
// that sets no spec.monitoring.namespaceSelector.
const DefaultMonitoringNamespace = "monitoring"

// labelNamespaceName is the label the API server sets on every namespace,
// holding its name.
const labelNamespaceName = "kubernetes.io/metadata.name"

// NetworkPolicy isolates a service's pods within the app's service graph.
// Its HTTP port admits the pods of the services that list it in calls, or
// anyone when it is an entry point; its admin port (and the port its
// metrics are served on) admits the monitoring pods (MonitoringPeer). The
// node's own traffic, such as the kubelet's probes, is not subject to
// NetworkPolicies on the common plugins. Egress is not restricted.
func NetworkPolicy(in Input) *networkingv1ac.NetworkPolicyApplyConfiguration {
	app, svc := in.App, in.Service
	var rules []*networkingv1ac.NetworkPolicyIngressRuleApplyConfiguration
	http := networkingv1ac.NetworkPolicyIngressRule().WithPorts(tcpPort(httpPort(svc)))
	switch callers := Callers(app, svc.Name); {
	case svc.EntryPoint:
		rules = append(rules, http) // no from: every source
	case len(callers) > 0:
		for _, caller := range callers {
			http.WithFrom(networkingv1ac.NetworkPolicyPeer().WithPodSelector(selector(app.Name, caller)))
		}
		rules = append(rules, http)
	}

	scrape := networkingv1ac.NetworkPolicyIngressRule().
		WithPorts(tcpPort(adminPort(svc))).
		WithFrom(MonitoringPeer(app))
	if svc.Metrics != nil {
		if p, _ := port(svc, svc.Metrics.Port); p != adminPort(svc) {
			scrape.WithPorts(tcpPort(p))
		}
	}
	rules = append(rules, scrape)

	return networkingv1ac.NetworkPolicy(metadata.Name(app.Name, svc.Name), app.Namespace).
		WithLabels(metadata.Labels(app.Name, svc.Name)).
		WithOwnerReferences(metadata.OwnerReference(app)).
		WithSpec(networkingv1ac.NetworkPolicySpec().
			WithPodSelector(selector(app.Name, svc.Name)).
			WithPolicyTypes(networkingv1.PolicyTypeIngress).
			WithIngress(rules...))
}

// Callers are the services of app that list service in calls, sorted, so
// that the order of spec.services does not change the policy.
func Callers(app *v1alpha1.MicroserviceApp, service string) []string {
	var out []string
	for _, s := range app.Spec.Services {
		if slices.Contains(s.Calls, service) {
			out = append(out, s.Name)
		}
	}
	slices.Sort(out)
	return out
}

// MonitoringPeer selects the pods that may scrape the app: those of
// spec.monitoring, by default every pod in the namespace
// DefaultMonitoringNamespace.
func MonitoringPeer(app *v1alpha1.MicroserviceApp) *networkingv1ac.NetworkPolicyPeerApplyConfiguration {
	namespaces := metav1ac.LabelSelector().WithMatchLabels(map[string]string{labelNamespaceName: DefaultMonitoringNamespace})
	peer := networkingv1ac.NetworkPolicyPeer()
	if m := app.Spec.Monitoring; m != nil {
		if m.NamespaceSelector != nil {
			namespaces = applyConfig[metav1ac.LabelSelectorApplyConfiguration](m.NamespaceSelector)
		}
		if m.PodSelector != nil {
			peer.WithPodSelector(applyConfig[metav1ac.LabelSelectorApplyConfiguration](m.PodSelector))
		}
	}
	return peer.WithNamespaceSelector(namespaces)
}

func tcpPort(port int32) *networkingv1ac.NetworkPolicyPortApplyConfiguration {
	return networkingv1ac.NetworkPolicyPort().
		WithProtocol(corev1.ProtocolTCP).
		WithPort(intstr.FromInt32(port))
}
