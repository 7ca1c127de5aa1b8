package resource_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/prometheus/promql/parser"
	"gotest.tools/v3/golden"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"

	"github.com/courier-dev/courier/config/prometheus/rules"
	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/resource"
)

// TestMonitoringObjects renders an app's PodMonitor and PrometheusRule and
// compares them with testdata/monitoring-<name>.yaml.
func TestMonitoringObjects(t *testing.T) {
	tests := []struct {
		name string
		app  *v1alpha1.MicroserviceApp
	}{
		// Every service on the admin port's /metrics: one endpoint.
		{name: "blog", app: fixture.Blog("blog-ns")},
		// Two services scraped elsewhere, one of them on its HTTP port,
		// and labels of the app's own.
		{name: "overrides", app: fixture.App("shop", "cart",
			fixture.WithService("api", fixture.Metrics("/internal/metrics", v1alpha1.PortHTTP)),
			fixture.WithService("worker"),
			fixture.WithService("search", fixture.Metrics("/stats", v1alpha1.PortAdmin)),
			func(a *v1alpha1.MicroserviceApp) {
				a.Spec.Monitoring = &v1alpha1.Monitoring{Labels: map[string]string{"prometheus": "team-shop"}}
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.app.DeepCopy()
			labels := resource.MonitoringLabels(tt.app, resource.DefaultMonitoringLabels)
			var got bytes.Buffer
			for _, obj := range []any{resource.PodMonitor(tt.app, labels), resource.PrometheusRule(tt.app, labels)} {
				out, err := yaml.Marshal(obj)
				if err != nil {
					t.Fatal(err)
				}
				got.WriteString("---\n")
				got.Write(out)
			}
			golden.Assert(t, got.String(), "monitoring-"+tt.name+".yaml")
			if !equality.Semantic.DeepEqual(before, tt.app) {
				t.Errorf("the builders changed the app:\n%s", cmp.Diff(before, tt.app))
			}
		})
	}
}

// TestMonitoringLabels checks where the labels come from: the app's own
// replace the operator's defaults, and neither can replace the labels the
// operator selects its objects by.
func TestMonitoringLabels(t *testing.T) {
	defaults := map[string]string{"release": "kube-prometheus-stack"}
	app := fixture.App("shop", "cart", fixture.WithService("api"))
	if diff := cmp.Diff(map[string]string{
		"release":                      "kube-prometheus-stack",
		"app.kubernetes.io/instance":   "cart",
		"app.kubernetes.io/managed-by": "courier-operator",
	}, resource.MonitoringLabels(app, defaults)); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	app.Spec.Monitoring = &v1alpha1.Monitoring{Labels: map[string]string{
		"prometheus": "team", "app.kubernetes.io/managed-by": "me",
	}}
	if diff := cmp.Diff(map[string]string{
		"prometheus":                   "team",
		"app.kubernetes.io/instance":   "cart",
		"app.kubernetes.io/managed-by": "courier-operator",
	}, resource.MonitoringLabels(app, defaults)); diff != "" {
		t.Errorf("the app's labels (-want +got):\n%s", diff)
	}
	if defaults["app.kubernetes.io/instance"] != "" || len(app.Spec.Monitoring.Labels) != 2 {
		t.Error("MonitoringLabels changed its inputs")
	}
}

// TestScopedRules checks the PrometheusRule against courier-alerts.yaml
// itself: the same groups and rules in the same order, and each expression
// the file's with exactly the matchers namespace and app added to every
// selector, and nothing else changed.
func TestScopedRules(t *testing.T) {
	groups, err := resource.ParseAlertGroups(rules.CourierAlerts)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) == 0 {
		t.Fatal("courier-alerts.yaml has no groups")
	}
	app := fixture.Blog("blog-ns")
	rule := resource.PrometheusRule(app, nil)
	if len(rule.Spec.Groups) != len(groups) {
		t.Fatalf("%d groups, the file has %d", len(rule.Spec.Groups), len(groups))
	}
	p := parser.NewParser(parser.Options{})
	for i, g := range groups {
		got := rule.Spec.Groups[i]
		if got.Name != g.Name || len(got.Rules) != len(g.Rules) {
			t.Fatalf("group %d is %s with %d rules, the file's is %s with %d", i, got.Name, len(got.Rules), g.Name, len(g.Rules))
		}
		for j, want := range g.Rules {
			r := got.Rules[j]
			// Everything but the expression is the file's.
			wantRest, gotRest := want.DeepCopy(), r.DeepCopy()
			wantRest.Expr = gotRest.Expr
			if diff := cmp.Diff(wantRest, gotRest); diff != "" {
				t.Errorf("%s changed besides its expression (-file +rule):\n%s", want.Alert, diff)
			}

			scoped, err := p.ParseExpr(r.Expr.String())
			if err != nil {
				t.Fatalf("%s: scoped expression does not parse: %v", want.Alert, err)
			}
			selectors := 0
			parser.Inspect(scoped, func(n parser.Node, _ []parser.Node) error {
				vs, ok := n.(*parser.VectorSelector)
				if !ok {
					return nil
				}
				selectors++
				var ns, name []string
				rest := vs.LabelMatchers[:0:0]
				for _, m := range vs.LabelMatchers {
					switch m.Name {
					case "namespace":
						ns = append(ns, m.String())
					case "app":
						name = append(name, m.String())
					default:
						rest = append(rest, m)
					}
				}
				if !cmp.Equal(ns, []string{`namespace="blog-ns"`}) || !cmp.Equal(name, []string{`app="blog"`}) {
					t.Errorf("%s: selector %s has namespace matchers %q and app matchers %q", want.Alert, vs, ns, name)
				}
				vs.LabelMatchers = rest
				return nil
			})
			if selectors == 0 {
				t.Errorf("%s: no selector in %s", want.Alert, r.Expr.String())
			}
			original, err := p.ParseExpr(want.Expr.String())
			if err != nil {
				t.Fatal(err)
			}
			if scoped.String() != original.String() {
				t.Errorf("%s: without the scope matchers the expression is\n%s\nnot the file's\n%s", want.Alert, scoped, original)
			}
		}
	}
}

// TestScopedExprReplacesMatchers checks that a selector already naming a
// namespace or app is narrowed to the app's, never widened or doubled.
func TestScopedExprReplacesMatchers(t *testing.T) {
	app := fixture.App("shop", "cart", fixture.WithService("api"))
	got, err := resource.ScopedExpr(`up{namespace=~".+", app="other", job="x"} or absent(up{app!="y"})`, app)
	if err != nil {
		t.Fatal(err)
	}
	want := `up{app="cart",job="x",namespace="shop"} or absent(up{app="cart",namespace="shop"})`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if _, err := resource.ScopedExpr("sum(", app); err == nil || !strings.Contains(err.Error(), "parse") {
		t.Errorf("an expression that does not parse: err = %v", err)
	}
}
