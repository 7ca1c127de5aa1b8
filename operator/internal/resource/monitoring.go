package resource

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/courier-dev/courier/config/prometheus/rules"
	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/metadata"
)

// DefaultMonitoringLabels are the labels of an app's PodMonitor and
// PrometheusRule unless the operator's --monitoring-labels or the app's
// spec.monitoring.labels say otherwise: kube-prometheus-stack's Prometheus
// selects both kinds by its release name, kube-prometheus-stack by default.
var DefaultMonitoringLabels = map[string]string{"release": "kube-prometheus-stack"}

// Labels the PodMonitor adds to every series it scrapes. `service` is what
// the alert rules and the dashboard group by (the ServiceMonitor and
// annotation-based scrapes of config/prometheus set it too); `app` is what
// the PrometheusRule scopes each rule to, and what the operator's queue
// gauges carry.
const (
	ScrapeLabelService = "service"
	ScrapeLabelApp     = "app"
)

// PodMonitorName is the name of an app's PodMonitor, "<app>-services". It
// differs from the blog chart's PodMonitor ("<release>"), so both can exist
// while a user moves from one to the other.
func PodMonitorName(app string) string { return app + "-services" }

// PrometheusRuleName is the name of an app's PrometheusRule,
// "<app>-courier-alerts", unlike the blog chart's "<release>-alerts".
func PrometheusRuleName(app string) string { return app + "-courier-alerts" }

// MonitoringLabels are the labels of an app's PodMonitor and PrometheusRule:
// spec.monitoring.labels when set, else defaults (the operator's
// --monitoring-labels), and the operator's own labels, which always win,
// since its cache and pruning select on them.
func MonitoringLabels(app *v1alpha1.MicroserviceApp, defaults map[string]string) map[string]string {
	out := maps.Clone(defaults)
	if m := app.Spec.Monitoring; m != nil && len(m.Labels) > 0 {
		out = maps.Clone(m.Labels)
	}
	if out == nil {
		out = map[string]string{}
	}
	out[metadata.LabelInstance] = app.Name
	out[metadata.LabelManagedBy] = metadata.ManagedBy
	return out
}

// PodMonitor scrapes the metrics of every service of an app: the port and
// path each service's spec.services[].metrics names (the admin port and
// /metrics by default), one endpoint per distinct pair, each keeping only
// the pods of its own services (the selector also matches a managed
// broker's pods). Every series gets the labels service (the service's name
// within the app) and app, which the PrometheusRule's rules select on.
func PodMonitor(app *v1alpha1.MicroserviceApp, labels map[string]string) *monitoringv1.PodMonitor {
	type target struct{ port, path string }
	var order []target
	services := map[target][]string{}
	for i := range app.Spec.Services {
		svc := &app.Spec.Services[i]
		_, portName := port(svc, metricsPortName(svc))
		t := target{port: portName, path: metricsPath(svc)}
		if _, ok := services[t]; !ok {
			order = append(order, t)
		}
		services[t] = append(services[t], svc.Name)
	}
	endpoints := make([]monitoringv1.PodMetricsEndpoint, 0, len(order))
	for _, t := range order {
		names := services[t]
		slices.Sort(names)
		for i, n := range names {
			names[i] = regexp.QuoteMeta(n)
		}
		endpoints = append(endpoints, monitoringv1.PodMetricsEndpoint{
			Port: ptr.To(t.port),
			Path: t.path,
			RelabelConfigs: []monitoringv1.RelabelConfig{
				{
					Action:       "keep",
					SourceLabels: []monitoringv1.LabelName{podLabelMeta(metadata.LabelName)},
					Regex:        strings.Join(names, "|"),
				},
				{
					Action:       "replace",
					SourceLabels: []monitoringv1.LabelName{podLabelMeta(metadata.LabelName)},
					TargetLabel:  ScrapeLabelService,
				},
				{
					Action:       "replace",
					SourceLabels: []monitoringv1.LabelName{podLabelMeta(metadata.LabelInstance)},
					TargetLabel:  ScrapeLabelApp,
				},
			},
		})
	}
	return &monitoringv1.PodMonitor{
		TypeMeta:   metav1.TypeMeta{APIVersion: monitoringv1.SchemeGroupVersion.String(), Kind: monitoringv1.PodMonitorsKind},
		ObjectMeta: monitoringMeta(app, PodMonitorName(app.Name), labels),
		Spec: monitoringv1.PodMonitorSpec{
			Selector:            metav1.LabelSelector{MatchLabels: metadata.AppLabels(app.Name)},
			PodMetricsEndpoints: endpoints,
		},
	}
}

// PrometheusRule holds the alert rules of config/prometheus/rules/
// courier-alerts.yaml, every selector in every expression narrowed to the
// app's series (namespace and app, see ScopedExpr), so that one app's rule
// never fires on another's metrics and two apps never alert twice.
func PrometheusRule(app *v1alpha1.MicroserviceApp, labels map[string]string) *monitoringv1.PrometheusRule {
	groups := alertGroups()
	out := make([]monitoringv1.RuleGroup, len(groups))
	for i, g := range groups {
		g = *g.DeepCopy()
		for j := range g.Rules {
			r := &g.Rules[j]
			r.Expr = intstr.FromString(mustScope(r.Expr.String(), app))
		}
		out[i] = g
	}
	return &monitoringv1.PrometheusRule{
		TypeMeta:   metav1.TypeMeta{APIVersion: monitoringv1.SchemeGroupVersion.String(), Kind: monitoringv1.PrometheusRuleKind},
		ObjectMeta: monitoringMeta(app, PrometheusRuleName(app.Name), labels),
		Spec:       monitoringv1.PrometheusRuleSpec{Groups: out},
	}
}

// ScopedExpr returns expr with every vector selector narrowed to the series
// of app: namespace="<namespace>" and app="<name>" replace any matcher on
// those labels. The expression is printed back in PromQL's canonical form.
func ScopedExpr(expr string, app *v1alpha1.MicroserviceApp) (string, error) {
	node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return "", fmt.Errorf("parse %q: %w", expr, err)
	}
	scope := []*labels.Matcher{
		labels.MustNewMatcher(labels.MatchEqual, "namespace", app.Namespace),
		labels.MustNewMatcher(labels.MatchEqual, ScrapeLabelApp, app.Name),
	}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			vs.LabelMatchers = slices.DeleteFunc(vs.LabelMatchers, func(m *labels.Matcher) bool {
				return m.Name == "namespace" || m.Name == ScrapeLabelApp
			})
			vs.LabelMatchers = append(vs.LabelMatchers, scope...)
		}
		return nil
	})
	return node.String(), nil
}

// mustScope is ScopedExpr for the embedded rules, which parse (their test
// says so) whatever the app is called.
func mustScope(expr string, app *v1alpha1.MicroserviceApp) string {
	out, err := ScopedExpr(expr, app)
	if err != nil {
		panic(err)
	}
	return out
}

// alertGroups are the rule groups of courier-alerts.yaml, read once. The
// file is embedded, so it cannot fail at run time unless the build does;
// TestAlertGroups proves it parses.
var alertGroups = sync.OnceValue(func() []monitoringv1.RuleGroup {
	groups, err := ParseAlertGroups(rules.CourierAlerts)
	if err != nil {
		panic(err)
	}
	return groups
})

// ParseAlertGroups reads a Prometheus rule file into the groups of a
// PrometheusRule, refusing fields a PrometheusRule does not know.
func ParseAlertGroups(file []byte) ([]monitoringv1.RuleGroup, error) {
	var spec monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(file, &spec); err != nil {
		return nil, fmt.Errorf("read alert rules: %w", err)
	}
	return spec.Groups, nil
}

func monitoringMeta(app *v1alpha1.MicroserviceApp, name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: app.Namespace,
		Labels:    labels,
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion:         v1alpha1.GroupVersion.String(),
			Kind:               "MicroserviceApp",
			Name:               app.Name,
			UID:                app.UID,
			Controller:         ptr.To(true),
			BlockOwnerDeletion: ptr.To(true),
		}},
	}
}

// podLabelMeta is the meta label Prometheus's Kubernetes pod discovery
// gives a pod label.
func podLabelMeta(label string) monitoringv1.LabelName {
	return monitoringv1.LabelName("__meta_kubernetes_pod_label_" + strings.NewReplacer(".", "_", "/", "_", "-", "_").Replace(label))
}
