package resource_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/resource"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with the builders' current output")

// TestBuilders renders every object the builders produce for one service of
// an app, in apply order, and compares it with testdata/<name>.yaml.
func TestBuilders(t *testing.T) {
	tests := []struct {
		name    string
		app     *v1alpha1.MicroserviceApp
		service string
	}{
		{
			name:    "defaults",
			app:     fixture.App("shop", "cart", fixture.WithService("api")),
			service: "api",
		},
		{
			name:    "calls",
			app:     fixture.Blog("blog-ns"),
			service: "gateway",
		},
		{
			name: "replicated",
			app: fixture.App("shop", "cart",
				fixture.WithService("api", fixture.Replicas(3))),
			service: "api",
		},
		{
			name: "scaled-to-zero",
			app: fixture.App("shop", "cart",
				fixture.WithService("api", fixture.Replicas(0))),
			service: "api",
		},
		{
			name: "overrides",
			app: fixture.App("shop", "cart",
				fixture.WithService("stock", fixture.Ports(7000, 7001)),
				fixture.WithService("api",
					fixture.Ports(3000, 3001),
					fixture.Calls("stock"),
					fixture.Env("LOG_LEVEL", "debug"),
					fixture.Env("HTTP_PORT", "3000"), // replaces the contract's value in place
					fixture.Probes(v1alpha1.Probes{
						Liveness: &v1alpha1.Probe{Path: "/healthz", PeriodSeconds: ptr.To[int32](20)},
						Readiness: &v1alpha1.Probe{
							Path:             "/ready",
							Port:             v1alpha1.PortHTTP,
							TimeoutSeconds:   ptr.To[int32](3),
							FailureThreshold: ptr.To[int32](6),
						},
						Startup: &v1alpha1.Probe{InitialDelaySeconds: ptr.To[int32](5)},
					}),
					fixture.Metrics("/internal/metrics", v1alpha1.PortHTTP),
					fixture.Resources(corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceMemory: apiresource.MustParse("1Gi")},
						Limits:   corev1.ResourceList{corev1.ResourceMemory: apiresource.MustParse("1Gi")},
					}),
					fixture.Mutate(func(s *v1alpha1.Service) {
						s.ImagePullPolicy = corev1.PullIfNotPresent
						s.Command = []string{"/api"}
						s.Args = []string{"--verbose"}
						s.EnvFrom = []corev1.EnvFromSource{{
							SecretRef: &corev1.SecretEnvSource{
								LocalObjectReference: corev1.LocalObjectReference{Name: "api-secrets"},
							},
						}}
					}),
				)),
			service: "api",
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := resource.Input{App: tt.app, Service: service(t, tt.app, tt.service)}
			var got bytes.Buffer
			for _, b := range resource.PerService {
				obj := b.Build(in)
				if obj == nil {
					continue
				}
				out, err := yaml.Marshal(obj)
				if err != nil {
					t.Fatalf("marshal %s: %v", b.Kind, err)
				}
				got.WriteString("---\n")
				got.Write(out)
			}
			assertGolden(t, filepath.Join("testdata", tt.name+".yaml"), got.Bytes())
		})
	}
}

// TestBuildersArePure checks builders leave the app untouched and give the
// same answer twice, which the controller's compare-before-apply relies on.
func TestBuildersArePure(t *testing.T) {
	app := fixture.Blog("ns", fixture.WithService("extra", fixture.Replicas(2), fixture.Env("A", "b")))
	before := app.DeepCopy()
	for i := range app.Spec.Services {
		in := resource.Input{App: app, Service: &app.Spec.Services[i]}
		for _, b := range resource.PerService {
			first, err1 := yaml.Marshal(b.Build(in))
			second, err2 := yaml.Marshal(b.Build(in))
			if err1 != nil || err2 != nil {
				t.Fatalf("marshal %s: %v %v", b.Kind, err1, err2)
			}
			if !bytes.Equal(first, second) {
				t.Errorf("%s of %s differs between two builds:\n%s", b.Kind, in.Service.Name, cmp.Diff(string(first), string(second)))
			}
		}
	}
	if diff := cmp.Diff(before, app); diff != "" {
		t.Errorf("builders changed the app (-before +after):\n%s", diff)
	}
}

func service(t *testing.T, app *v1alpha1.MicroserviceApp, name string) *v1alpha1.Service {
	t.Helper()
	for i := range app.Spec.Services {
		if app.Spec.Services[i].Name == name {
			return &app.Spec.Services[i]
		}
	}
	t.Fatalf("app %s has no service %q", app.Name, name)
	return nil
}

// assertGolden compares got with the golden file, or rewrites the file when
// the test runs with -update.
func assertGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("update golden file: %v", err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got); run go test -update if the change is intended:\n%s", path, diff)
	}
}
