package installers

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	sigsyaml "sigs.k8s.io/yaml"
)

const crdName = "microserviceapps.apps.courier.dev"

// helmCLI runs the real helm against one API server, with its own
// configuration, cache and release storage (Secrets in the release's
// namespace).
type helmCLI struct {
	bin, kubeconfig, home string
}

// newHelmCLI starts an API server with no CRD installed (the courier chart
// installs it) and returns helm pointed at it, with a client for checks.
func newHelmCLI(t *testing.T) (*helmCLI, client.Client) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run through `make test` or export KUBEBUILDER_ASSETS=$(hack/envtest.sh)")
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	admin, err := env.AddUser(envtest.User{Name: "helm-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	path := filepath.Join(home, "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return &helmCLI{bin: tool(t, "HELM", "helm"), kubeconfig: path, home: home}, c
}

// run runs helm in the repository root and returns its stdout, or its
// error with stderr.
func (h *helmCLI) run(args ...string) (string, error) {
	cmd := exec.Command(h.bin, append(args, "--kubeconfig", h.kubeconfig)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &helmError{args: args, err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

func (h *helmCLI) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := h.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type helmError struct {
	args   []string
	err    error
	stderr string
}

func (e *helmError) Error() string {
	return "helm " + strings.Join(e.args, " ") + ": " + e.err.Error() + "\n" + e.stderr
}

// previousCourierChart is charts/courier as an earlier release shipped it:
// the same templates with the CRD of test/e2e/kind/testdata/crd-previous.yaml
// (before services[].storage and entryPoint).
func previousCourierChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "courier")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(root, "charts", "courier"))); err != nil {
		t.Fatal(err)
	}
	crds, err := filepath.Glob(filepath.Join(dir, "files", "crds", "*.yaml"))
	if err != nil || len(crds) == 0 {
		t.Fatalf("the chart has no files/crds/*.yaml (%v)", err)
	}
	for _, f := range crds {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	previous, err := os.ReadFile(filepath.Join(root, "test", "e2e", "kind", "testdata", "crd-previous.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "files", "crds", "previous.yaml"), previous, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serviceSchema is the CRD's schema of spec.services[] in its served version.
func serviceSchema(t *testing.T, c client.Client) apiextensionsv1.JSONSchemaProps {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(context.Background(), types.NamespacedName{Name: crdName}, crd); err != nil {
		t.Fatalf("get CRD: %v", err)
	}
	if len(crd.Spec.Versions) == 0 || crd.Spec.Versions[0].Schema == nil {
		t.Fatal("the CRD has no versions with a schema")
	}
	return *crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["services"].Items.Schema
}

func getCRD(t *testing.T, c client.Client) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(context.Background(), types.NamespacedName{Name: crdName}, crd); err != nil {
		t.Fatalf("get CRD: %v", err)
	}
	return crd
}

// TestHelmReleases installs, upgrades and uninstalls the charts with the
// real helm against a real API server: what `helm install`/`upgrade` do to
// the CRD, the RBAC and the Secrets, beyond what rendering shows.
func TestHelmReleases(t *testing.T) {
	h, c := newHelmCLI(t)
	ctx := context.Background()

	t.Run("a value the schema does not know fails helm install, naming it", func(t *testing.T) {
		_, err := h.run("install", "blog", "charts/blog", "--namespace", "typo", "--create-namespace",
			"--set", "users.storage.storageClass=fast")
		if err == nil || !strings.Contains(err.Error(), "storageClass") || !strings.Contains(err.Error(), "/users/storage") {
			t.Fatalf("want helm install to refuse /users/storage storageClass, got %v", err)
		}
		_, err = h.run("install", "courier", "charts/courier", "--namespace", "typo", "--create-namespace",
			"--set", "metrics.serviceMonitor.additionalLabel.release=x")
		if err == nil || !strings.Contains(err.Error(), "additionalLabel") {
			t.Fatalf("want helm install to refuse metrics.serviceMonitor.additionalLabel, got %v", err)
		}
	})

	t.Run("helm upgrade updates a CRD that changed", func(t *testing.T) {
		h.must(t, "install", "courier", previousCourierChart(t), "--namespace", "courier-system", "--create-namespace")
		crd := getCRD(t, c)
		if crd.Annotations["helm.sh/resource-policy"] != "keep" || crd.Labels["app.kubernetes.io/managed-by"] != "Helm" {
			t.Fatalf("the installed CRD lacks the keep policy or helm's label: %v %v", crd.Annotations, crd.Labels)
		}
		if _, ok := serviceSchema(t, c).Properties["storage"]; ok {
			t.Fatal("the previous chart's CRD already has services[].storage; the test proves nothing")
		}
		notes := h.must(t, "upgrade", "courier", "charts/courier", "--namespace", "courier-system")
		if _, ok := serviceSchema(t, c).Properties["storage"]; !ok {
			t.Fatal("after helm upgrade the CRD still lacks services[].storage")
		}
		if !strings.Contains(notes, "helm test courier") {
			t.Errorf("the upgrade printed no NOTES with what to do next:\n%s", notes)
		}
		// The upgraded schema admits an app using the new field.
		createNamespace(t, c, "apps")
		app := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apps.courier.dev/v1alpha1", "kind": "MicroserviceApp",
			"metadata": map[string]any{"name": "stateful", "namespace": "apps"},
			"spec": map[string]any{
				"broker": map[string]any{"kind": "rabbitmq", "managed": map[string]any{}},
				"services": []any{map[string]any{"name": "db", "image": "example.com/db:1",
					"storage": map[string]any{"size": "1Gi"}}},
			},
		}}
		if err := c.Create(ctx, app, client.DryRunAll); err != nil {
			t.Fatalf("an app with services[].storage is refused after the upgrade: %v", err)
		}
	})

	t.Run("helm upgrade puts back a CRD changed by hand (test-e2e.sh's upgrade from the previous CRD)", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(root, "test", "e2e", "kind", "testdata", "crd-previous.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		previous := &unstructured.Unstructured{}
		if err := sigsyaml.Unmarshal(data, &previous.Object); err != nil {
			t.Fatalf("decode crd-previous.yaml: %v", err)
		}
		// As `kubectl apply --server-side --force-conflicts` does.
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(previous), client.FieldOwner("kubectl"), client.ForceOwnership); err != nil {
			t.Fatalf("apply the previous CRD: %v", err)
		}
		if _, ok := serviceSchema(t, c).Properties["storage"]; ok {
			t.Fatal("applying the previous CRD left services[].storage; the test proves nothing")
		}
		h.must(t, "upgrade", "courier", "charts/courier", "--namespace", "courier-system")
		if _, ok := serviceSchema(t, c).Properties["storage"]; !ok {
			t.Fatal("helm upgrade with an unchanged chart left the hand-applied previous CRD in place")
		}
	})

	t.Run("the metrics-reader binding lets Prometheus' service account GET /metrics", func(t *testing.T) {
		allowed := func(sa string) bool {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:                  "system:serviceaccount:" + sa,
				Groups:                []string{"system:serviceaccounts"},
				NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"},
			}}
			if err := c.Create(ctx, sar); err != nil {
				t.Fatalf("subject access review: %v", err)
			}
			return sar.Status.Allowed
		}
		if !allowed("monitoring:kube-prometheus-stack-prometheus") {
			t.Error("kube-prometheus-stack's Prometheus may not GET /metrics")
		}
		if allowed("monitoring:someone-else") {
			t.Error("an unrelated service account may GET /metrics: the binding is too wide")
		}
	})

	t.Run("the aggregated roles are selected by the built-in view, edit and admin roles", func(t *testing.T) {
		want := map[string][]string{ // built-in role: the chart's roles it must aggregate
			"view":  {"courier-view"},
			"edit":  {"courier-view", "courier-edit"},
			"admin": {"courier-view", "courier-edit"},
		}
		for builtin, ours := range want {
			role := &rbacv1.ClusterRole{}
			if err := c.Get(ctx, types.NamespacedName{Name: builtin}, role); err != nil {
				t.Fatalf("get ClusterRole %s: %v", builtin, err)
			}
			if role.AggregationRule == nil {
				t.Fatalf("ClusterRole %s has no aggregationRule", builtin)
			}
			for _, name := range ours {
				r := &rbacv1.ClusterRole{}
				if err := c.Get(ctx, types.NamespacedName{Name: name}, r); err != nil {
					t.Fatalf("get ClusterRole %s: %v", name, err)
				}
				if !selectedByAny(t, role.AggregationRule.ClusterRoleSelectors, r.Labels) {
					t.Errorf("ClusterRole %s (labels %v) is not aggregated into %s", name, r.Labels, builtin)
				}
			}
		}
	})

	t.Run("blog: a generated token key survives upgrades; existingSecret replaces it", func(t *testing.T) {
		h.must(t, "install", "blog", "charts/blog", "--namespace", "blog", "--create-namespace")
		key := func() string {
			s := &corev1.Secret{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: "blog", Name: "blog-secrets"}, s); err != nil {
				t.Fatalf("get blog-secrets: %v", err)
			}
			return string(s.Data["token-private-key"])
		}
		first := key()
		if !strings.Contains(first, "BEGIN PRIVATE KEY") {
			t.Fatalf("the generated key is not PKCS #8 PEM: %q", first)
		}
		h.must(t, "upgrade", "blog", "charts/blog", "--namespace", "blog", "--set", "gateway.replicas=3")
		if key() != first {
			t.Fatal("helm upgrade changed the token signing key")
		}

		h.must(t, "upgrade", "blog", "charts/blog", "--namespace", "blog",
			"--set", "token.existingSecret=blog-token", "--set", "smtp.existingSecret=blog-smtp-credentials")
		err := c.Get(ctx, types.NamespacedName{Namespace: "blog", Name: "blog-secrets"}, &corev1.Secret{})
		if err == nil {
			t.Error("with token.existingSecret the chart still keeps its own key Secret")
		}
		app := &unstructured.Unstructured{}
		app.SetAPIVersion("apps.courier.dev/v1alpha1")
		app.SetKind("MicroserviceApp")
		if err := c.Get(ctx, types.NamespacedName{Namespace: "blog", Name: "blog"}, app); err != nil {
			t.Fatalf("get msa blog: %v", err)
		}
		refs := secretRefs(t, app)
		if refs["users/TOKEN_PRIVATE_KEY"] != "blog-token/token-private-key" {
			t.Errorf("users' TOKEN_PRIVATE_KEY = %q, want blog-token/token-private-key", refs["users/TOKEN_PRIVATE_KEY"])
		}
		if refs["mailer/SMTP_PASSWORD"] != "blog-smtp-credentials/SMTP_PASSWORD" ||
			refs["mailer/SMTP_USERNAME"] != "blog-smtp-credentials/SMTP_USERNAME" {
			t.Errorf("mailer's SMTP credentials come from %v, want blog-smtp-credentials", refs)
		}
		h.must(t, "uninstall", "blog", "--namespace", "blog")
	})

	t.Run("helm uninstall keeps the CRD; a new install adopts it", func(t *testing.T) {
		h.must(t, "uninstall", "courier", "--namespace", "courier-system")
		crd := getCRD(t, c)
		if crd.DeletionTimestamp != nil {
			t.Fatal("helm uninstall deletes the CRD despite crds.keep")
		}
		h.must(t, "install", "courier", "charts/courier", "--namespace", "courier-system")
		if getCRD(t, c).UID != crd.UID {
			t.Fatal("the reinstall replaced the kept CRD")
		}
	})

	t.Run("a CRD no release owns (chart 0.1.0's crds/) is adopted as docs/operations.md says", func(t *testing.T) {
		h.must(t, "uninstall", "courier", "--namespace", "courier-system")
		crd := getCRD(t, c)
		// What chart 0.1.0 left: the CRD without helm's label and annotations.
		patch := []byte(`{"metadata":{"labels":{"app.kubernetes.io/managed-by":null},` +
			`"annotations":{"meta.helm.sh/release-name":null,"meta.helm.sh/release-namespace":null}}}`)
		if err := c.Patch(ctx, crd, client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
		_, err := h.run("install", "courier", "charts/courier", "--namespace", "courier-system")
		if err == nil || !strings.Contains(err.Error(), "invalid ownership metadata") {
			t.Fatalf("want helm install to refuse the unowned CRD, got %v", err)
		}
		// The documented kubectl label and annotate.
		adopt := []byte(`{"metadata":{"labels":{"app.kubernetes.io/managed-by":"Helm"},` +
			`"annotations":{"meta.helm.sh/release-name":"courier","meta.helm.sh/release-namespace":"courier-system"}}}`)
		if err := c.Patch(ctx, crd, client.RawPatch(types.MergePatchType, adopt)); err != nil {
			t.Fatal(err)
		}
		h.must(t, "install", "courier", "charts/courier", "--namespace", "courier-system")
		if getCRD(t, c).UID != crd.UID {
			t.Fatal("the install replaced the adopted CRD")
		}
	})
}

// selectedByAny says whether any of the label selectors matches labels.
func selectedByAny(t *testing.T, selectors []metav1.LabelSelector, labels map[string]string) bool {
	t.Helper()
	for i := range selectors {
		s, err := metav1.LabelSelectorAsSelector(&selectors[i])
		if err != nil {
			t.Fatal(err)
		}
		if s.Matches(k8slabels.Set(labels)) {
			return true
		}
	}
	return false
}

// secretRefs maps "service/VARIABLE" to "secret/key" for every env entry of
// the app's services that reads a Secret key.
func secretRefs(t *testing.T, app *unstructured.Unstructured) map[string]string {
	t.Helper()
	services, _, err := unstructured.NestedSlice(app.Object, "spec", "services")
	if err != nil {
		t.Fatal(err)
	}
	refs := map[string]string{}
	for _, s := range services {
		svc := s.(map[string]any)
		env, _, _ := unstructured.NestedSlice(svc, "env")
		for _, e := range env {
			name, _, _ := unstructured.NestedString(e.(map[string]any), "name")
			secret, _, _ := unstructured.NestedString(e.(map[string]any), "valueFrom", "secretKeyRef", "name")
			key, _, _ := unstructured.NestedString(e.(map[string]any), "valueFrom", "secretKeyRef", "key")
			if secret != "" {
				refs[svc["name"].(string)+"/"+name] = secret + "/" + key
			}
		}
	}
	return refs
}
