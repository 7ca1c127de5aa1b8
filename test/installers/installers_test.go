// Package installers checks that what users install with — the Helm charts
// and the kustomize overlay — renders and is accepted by a real API server
// (envtest) with a server-side dry run, and that a rendered MicroserviceApp
// passes the CRD's schema and CEL validation.
package installers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

var root = filepath.Join("..", "..")

// tool returns the path of a pinned tool from ./bin; `make test` installs
// them (make helm kustomize) and passes their paths in the environment.
func tool(t *testing.T, env, name string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(root, "bin", name)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found at %s: run `make %s` or set %s", name, p, name, env)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run through `make test` or export KUBEBUILDER_ASSETS=$(hack/envtest.sh)")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func render(t *testing.T, name string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, stderr.String())
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decode %s output: %v", filepath.Base(name), err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	if len(objs) == 0 {
		t.Fatalf("%s %v rendered nothing", filepath.Base(name), args)
	}
	return objs
}

// dryRunApply sends every object through a server-side apply dry run: the
// API server runs defaulting, schema and CEL validation, and admission.
func dryRunApply(t *testing.T, c client.Client, ns string, objs []*unstructured.Unstructured) map[string]int {
	t.Helper()
	ctx := context.Background()
	kinds := map[string]int{}
	for _, o := range objs {
		if o.GetKind() == "Namespace" || o.GetKind() == "CustomResourceDefinition" {
			// Created for real: namespaced objects and custom resources need them.
			if err := c.Create(ctx, o); err != nil && !isAlreadyExists(err) {
				t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
			}
			kinds[o.GetKind()]++
			continue
		}
		if o.GetNamespace() == "" && isNamespaced(t, c, o) {
			o.SetNamespace(ns)
		}
		o.SetManagedFields(nil)
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("installers-test"), client.DryRunAll, client.ForceOwnership); err != nil {
			t.Errorf("dry-run apply %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		kinds[o.GetKind()]++
	}
	return kinds
}

func isNamespaced(t *testing.T, c client.Client, o *unstructured.Unstructured) bool {
	t.Helper()
	namespaced, err := c.IsObjectNamespaced(o)
	if err != nil {
		t.Fatalf("scope of %s: %v", o.GetObjectKind().GroupVersionKind(), err)
	}
	return namespaced
}

func isAlreadyExists(err error) bool {
	var status interface{ Status() metav1.Status }
	return errors.As(err, &status) && status.Status().Reason == metav1.StatusReasonAlreadyExists
}

func createNamespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(context.Background(), ns); err != nil && !isAlreadyExists(err) {
		t.Fatal(err)
	}
}

func requireKinds(t *testing.T, got map[string]int, want ...string) {
	t.Helper()
	for _, k := range want {
		if got[k] == 0 {
			t.Errorf("rendered no %s (got %v)", k, got)
		}
	}
}

func TestInstallersApplyToARealAPIServer(t *testing.T) {
	c := startAPIServer(t)
	helm := tool(t, "HELM", "helm")
	kustomize := tool(t, "KUSTOMIZE", "kustomize")

	t.Run("helm chart courier", func(t *testing.T) {
		createNamespace(t, c, "courier-system")
		objs := render(t, helm, "template", "courier", "charts/courier", "--namespace", "courier-system")
		kinds := dryRunApply(t, c, "courier-system", objs)
		requireKinds(t, kinds, "CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service")
	})
	t.Run("helm chart blog", func(t *testing.T) {
		createNamespace(t, c, "blog")
		objs := render(t, helm, "template", "blog", "charts/blog", "--namespace", "blog")
		kinds := dryRunApply(t, c, "blog", objs)
		requireKinds(t, kinds, "MicroserviceApp", "Secret")
	})
	t.Run("helm chart blog with an external broker", func(t *testing.T) {
		objs := render(t, helm, "template", "blog", "charts/blog", "--namespace", "blog",
			"--set", "broker.external.secretName=rabbit-admin", "--set", "broker.external.host=rabbitmq.shared.svc")
		requireKinds(t, dryRunApply(t, c, "blog", objs), "MicroserviceApp")
	})
	t.Run("helm chart blog on NATS: one value switches the broker", func(t *testing.T) {
		objs := render(t, helm, "template", "blog", "charts/blog", "--namespace", "blog", "--set", "broker.kind=nats",
			"--set", "broker.managed.replicas=3", "--set", "broker.managed.exporterImage=registry.example/exporter:1")
		requireKinds(t, dryRunApply(t, c, "blog", objs), "MicroserviceApp")
		for _, o := range objs {
			if o.GetKind() != "MicroserviceApp" {
				continue
			}
			kind, _, _ := unstructured.NestedString(o.Object, "spec", "broker", "kind")
			exporter, _, _ := unstructured.NestedString(o.Object, "spec", "broker", "managed", "exporterImage")
			if kind != "nats" || exporter != "registry.example/exporter:1" {
				t.Errorf("spec.broker.kind %q, managed.exporterImage %q; want nats and the value set", kind, exporter)
			}
		}
	})
	t.Run("helm chart blog with an invalid value is refused naming the field", func(t *testing.T) {
		objs := render(t, helm, "template", "blog", "charts/blog", "--namespace", "blog", "--set", "emails.maxDeliveries=0")
		for _, o := range objs {
			if o.GetKind() != "MicroserviceApp" {
				continue
			}
			o.SetNamespace("blog")
			err := c.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("installers-test"), client.DryRunAll)
			if err == nil || !strings.Contains(err.Error(), "spec.queues[0].maxDeliveries") {
				t.Fatalf("want a refusal naming spec.queues[0].maxDeliveries, got %v", err)
			}
			return
		}
		t.Fatal("rendered no MicroserviceApp")
	})
	t.Run("helm charts: pods and test hooks pass the restricted Pod Security Standard", func(t *testing.T) {
		createRestrictedNamespace(t, c, "restricted")
		objs := render(t, helm, "template", "courier", "charts/courier", "--namespace", "restricted")
		requireKinds(t, dryRunApply(t, c, "restricted", objs), "Deployment", "Pod")
		objs = render(t, helm, "template", "blog", "charts/blog", "--namespace", "restricted")
		kinds := dryRunApply(t, c, "restricted", objs)
		requireKinds(t, kinds, "MicroserviceApp", "Pod", "Role", "RoleBinding")
		if kinds["Pod"] != 2 {
			t.Errorf("blog renders %d test pods, want 2 (app Ready, gateway answers)", kinds["Pod"])
		}
	})
	t.Run("helm chart courier: pod knobs from values reach the Deployment", func(t *testing.T) {
		pc := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
			"metadata": map[string]any{"name": "platform-critical"}, "value": int64(1000000),
		}}
		if err := c.Create(context.Background(), pc); err != nil && !isAlreadyExists(err) {
			t.Fatal(err)
		}
		values := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(values, []byte(podKnobs), 0o644); err != nil {
			t.Fatal(err)
		}
		objs := render(t, helm, "template", "courier", "charts/courier", "--namespace", "courier-system", "--values", values)
		dryRunApply(t, c, "courier-system", objs)
		dep := find(t, objs, "Deployment", "courier")
		spec := func(fields ...string) any {
			v, _, err := unstructured.NestedFieldNoCopy(dep.Object, append([]string{"spec", "template", "spec"}, fields...)...)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		if got := spec("priorityClassName"); got != "platform-critical" {
			t.Errorf("priorityClassName = %v", got)
		}
		if got := fmt.Sprint(spec("topologySpreadConstraints")); !strings.Contains(got, "topology.kubernetes.io/zone") {
			t.Errorf("topologySpreadConstraints = %v", got)
		}
		if got := fmt.Sprint(spec("securityContext")); !strings.Contains(got, "fsGroup:65532") {
			t.Errorf("pod securityContext = %v", got)
		}
		containers := spec("containers").([]any)
		manager := containers[0].(map[string]any)
		args := fmt.Sprint(manager["args"])
		for _, want := range []string{"--zap-log-level=debug", "--max-concurrent-reconciles=3", "--kube-api-qps=20", "--kube-api-burst=40", "--broker-resync-interval=10m"} {
			if !strings.Contains(args, want) {
				t.Errorf("manager args %s lack %s", args, want)
			}
		}
		if got := fmt.Sprint(manager["resources"]); !strings.Contains(got, "cpu:250m") {
			t.Errorf("resources = %v", got)
		}
	})
	t.Run("helm charts: every monitoring object carries the release label and additionalLabels", func(t *testing.T) {
		courier := render(t, helm, "template", "courier", "charts/courier", "--namespace", "courier-system",
			"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.additionalLabels.team=platform")
		blog := render(t, helm, "template", "blog", "charts/blog", "--namespace", "blog",
			"--set", "monitoring.podMonitor=true", "--set", "monitoring.prometheusRule=true",
			"--set", "monitoring.grafanaDashboard=true", "--set", "monitoring.additionalLabels.team=platform")
		monitoring := 0
		for _, o := range append(courier, blog...) {
			isDashboard := o.GetKind() == "ConfigMap" && o.GetLabels()["grafana_dashboard"] == "1"
			if o.GroupVersionKind().Group != "monitoring.coreos.com" && !isDashboard {
				continue
			}
			monitoring++
			if l := o.GetLabels(); l["release"] != "kube-prometheus-stack" || l["team"] != "platform" {
				t.Errorf("%s %s has labels %v, want release=kube-prometheus-stack and team=platform", o.GetKind(), o.GetName(), l)
			}
		}
		if monitoring != 4 {
			t.Errorf("found %d monitoring objects, want 4 (ServiceMonitor, PodMonitor, PrometheusRule, dashboard)", monitoring)
		}
	})
	t.Run("helm chart courier with crds.install=false renders no CRD", func(t *testing.T) {
		for _, o := range render(t, helm, "template", "courier", "charts/courier", "--set", "crds.install=false") {
			if o.GetKind() == "CustomResourceDefinition" {
				t.Fatalf("crds.install=false still renders CRD %s", o.GetName())
			}
		}
	})
	t.Run("kustomize config/default", func(t *testing.T) {
		objs := render(t, kustomize, "build", "config/default")
		kinds := dryRunApply(t, c, "courier-system", objs)
		requireKinds(t, kinds, "CustomResourceDefinition", "Deployment", "ClusterRole")
	})
	t.Run("config/samples", func(t *testing.T) {
		createNamespace(t, c, "samples")
		objs := render(t, kustomize, "build", "config/samples")
		requireKinds(t, dryRunApply(t, c, "samples", objs), "MicroserviceApp")
	})
	t.Run("config/samples-nats", func(t *testing.T) {
		createNamespace(t, c, "samples-nats")
		objs := render(t, kustomize, "build", "config/samples-nats")
		requireKinds(t, dryRunApply(t, c, "samples-nats", objs), "MicroserviceApp", "Secret")
		for _, o := range objs {
			if kind, _, _ := unstructured.NestedString(o.Object, "spec", "broker", "kind"); o.GetKind() == "MicroserviceApp" && kind != "nats" {
				t.Errorf("config/samples-nats: spec.broker.kind %q, want nats", kind)
			}
		}
	})
}

// podKnobs sets every pod-level value of charts/courier away from its default.
const podKnobs = `
logLevel: debug
maxConcurrentReconciles: 3
kubeAPIQPS: 20
kubeAPIBurst: 40
extraArgs: [--broker-resync-interval=10m]
priorityClassName: platform-critical
resources:
  requests: {cpu: 250m, memory: 128Mi}
podSecurityContext:
  runAsNonRoot: true
  fsGroup: 65532
  seccompProfile: {type: RuntimeDefault}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels: {app.kubernetes.io/name: courier-operator}
`

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("rendered no %s %s", kind, name)
	return nil
}

// createRestrictedNamespace makes a namespace whose pods the API server's
// PodSecurity admission holds to the restricted standard.
func createRestrictedNamespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	}}}
	if err := c.Create(context.Background(), ns); err != nil && !isAlreadyExists(err) {
		t.Fatal(err)
	}
}
