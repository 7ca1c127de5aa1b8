package resource_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gotest.tools/v3/golden"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/tracing"
)

// TestBuilders renders every object the builders produce for one service of
// an app, in apply order, and compares it with testdata/<name>.yaml.
func TestBuilders(t *testing.T) {
	tests := []struct {
		name    string
		app     *v1alpha1.MicroserviceApp
		service string
		// password, when set, wires the service to the app's broker with it.
		password string
	}{
		{
			name:     "publisher",
			app:      fixture.BlogWithQueues("blog-ns"),
			service:  "users",
			password: "users-password",
		},
		{
			name: "publisher-and-consumer",
			app: fixture.App("shop", "cart",
				fixture.ManagedBroker(3),
				fixture.WithQueue("orders"),
				fixture.WithQueue("order-events"),
				fixture.WithService("api", fixture.Publishes("orders")),
				fixture.WithService("worker", fixture.Consumes("orders"), fixture.Publishes("order-events", "orders")),
				fixture.WithService("audit", fixture.Consumes("order-events"))),
			service:  "worker",
			password: "p@ss/word:with%escapes",
		},
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
			// Called by gateway and posts, so its HTTP port admits their
			// pods and no other.
			name:    "callee",
			app:     fixture.Blog("blog-ns"),
			service: "users",
		},
		{
			// Monitoring narrowed to Prometheus's pods in every namespace.
			name: "monitoring",
			app: fixture.App("shop", "cart", fixture.WithService("api"), func(a *v1alpha1.MicroserviceApp) {
				a.Spec.Monitoring = &v1alpha1.Monitoring{
					NamespaceSelector: &metav1.LabelSelector{},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "prometheus"}},
				}
			}),
			service: "api",
		},
		{
			name: "replicated",
			app: fixture.App("shop", "cart",
				fixture.WithService("api", fixture.Replicas(3))),
			service: "api",
		},
		{
			name: "storage",
			app: fixture.BlogWithQueues("blog-ns",
				fixture.WithService("search", fixture.Mutate(func(s *v1alpha1.Service) {
					s.Storage = &v1alpha1.Storage{
						Size:             apiresource.MustParse("5Gi"),
						StorageClassName: ptr.To("fast"),
						MountPath:        "/var/lib/search",
					}
				}))),
			service: "search",
		},
		{
			name: "storage-consumer",
			app: fixture.App("shop", "cart",
				fixture.ManagedBroker(1),
				fixture.WithQueue("orders"),
				fixture.WithService("api", fixture.Publishes("orders")),
				fixture.WithService("worker", fixture.Consumes("orders"), fixture.Storage("1Gi"))),
			service:  "worker",
			password: "worker-password",
		},
		{
			name: "scaled-to-zero",
			app: fixture.App("shop", "cart",
				fixture.WithService("api", fixture.Replicas(0))),
			service: "api",
		},
		{
			// Every pod option and a ServiceAccount: the token is no longer
			// refused, the spread selects the service's pods, and the
			// extra label and annotation cannot replace the operator's.
			name: "pod-options",
			app: fixture.App("shop", "cart",
				fixture.WithService("api", fixture.Mutate(withPodOptions))),
			service: "api",
		},
		{
			// The app's collector reaches every container as
			// OTEL_EXPORTER_OTLP_ENDPOINT.
			name: "tracing",
			app: fixture.App("shop", "cart", fixture.WithService("api"), func(a *v1alpha1.MicroserviceApp) {
				a.Spec.Tracing = &v1alpha1.Tracing{OTLPEndpoint: "http://otel-collector.observability.svc:4318"}
			}),
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
					fixture.Env("HTTP_PORT", "3000"),       // replaces the contract's value in place
					fixture.Env("SHUTDOWN_GRACE", "44.5s"), // the pod waits 5 + 45 + 10 s
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
						s.EnvFrom = []v1alpha1.EnvFromSource{{
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
			if tt.password != "" {
				in.Broker = &resource.Broker{
					Kind: contract.BrokerRabbitMQ,
					Data: rabbitmq.ConnectionData(resource.Connection(tt.app, tt.service,
						metadata.BrokerNamesFor(tt.app.Name).Client+"."+tt.app.Namespace+".svc", rabbitmq.AMQPPort, tt.password)),
					URLKey: rabbitmq.ConnectionURLKey,
				}
			}
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
			golden.Assert(t, got.String(), tt.name+".yaml")
		})
	}
}

// TestMonitoringSecret renders the monitoring Secret of an app.
func TestMonitoringSecret(t *testing.T) {
	out, err := yaml.Marshal(resource.MonitoringSecret(fixture.BlogWithQueues("blog-ns"), "monitoring-password"))
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, string(out), "monitoring-secret.yaml")
}

// TestManagedBroker checks the mapping of spec.broker.managed to the
// rabbitmq builders' input, unset fields left to the builders' defaults.
func TestManagedBroker(t *testing.T) {
	class := "fast"
	size := apiresource.MustParse("1Gi")
	res := corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: apiresource.MustParse("2Gi")}}
	app := fixture.BlogWithQueues("blog-ns", func(a *v1alpha1.MicroserviceApp) {
		a.Spec.Broker.Managed = &v1alpha1.ManagedBroker{
			Image: "rabbitmq:custom", Replicas: ptr.To[int32](3),
			StorageSize: &size, StorageClassName: &class, Resources: &res,
		}
	})
	got := resource.ManagedBroker(app, "example.org", "courier-system")
	if got.App != "blog" || got.Namespace != "blog-ns" || got.Image != "rabbitmq:custom" || got.Replicas != 3 ||
		got.StorageSize.Cmp(size) != 0 || got.StorageClassName != &class || !equality.Semantic.DeepEqual(got.Resources, res) ||
		got.ClusterDomain != "example.org" || got.Owner == nil || *got.Owner.UID != app.UID {
		t.Errorf("ManagedBroker = %+v", got)
	}
	if diff := cmp.Diff(metadata.Labels("blog", metadata.BrokerComponent), got.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("the mapped broker is invalid: %v", err)
	}

	app.Spec.Broker.Managed = &v1alpha1.ManagedBroker{}
	unset := resource.ManagedBroker(app, "", "")
	if unset.Replicas != 1 || !unset.StorageSize.IsZero() || len(unset.Resources.Limits) != 0 || unset.StorageClassName != nil {
		t.Errorf("ManagedBroker of an undefaulted spec = %+v, want one replica and the builders' defaults", unset)
	}
}

// withPodOptions sets every pod option of a service and its
// ServiceAccount, with a label and an annotation that try to replace the
// operator's.
func withPodOptions(s *v1alpha1.Service) {
	s.ServiceAccountName = "api-identity"
	s.PodOptions = v1alpha1.PodOptions{
		ImagePullSecrets: []v1alpha1.PullSecretReference{{Name: "registry-creds"}},
		NodeSelector:     map[string]string{"kubernetes.io/arch": "arm64"},
		Tolerations: []corev1.Toleration{{
			Key: "arch", Operator: corev1.TolerationOpEqual, Value: "arm64", Effect: corev1.TaintEffectNoSchedule,
		}},
		Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
				Weight: 50,
				PodAffinityTerm: corev1.PodAffinityTerm{
					TopologyKey:   corev1.LabelHostname,
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "api"}},
				},
			}},
		}},
		TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
			MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.DoNotSchedule,
		}},
		PriorityClassName: "business-critical",
		PodLabels:         map[string]string{"team": "checkout", metadata.LabelInstance: "someone-else"},
		PodAnnotations:    map[string]string{"example.org/owner": "checkout", resource.AnnotationPath: "/spoofed"},
	}
}

// TestBuildersArePure checks builders leave the app untouched and give the
// same answer twice, which the controller's compare-before-apply relies on.
func TestBuildersArePure(t *testing.T) {
	app := fixture.Blog("ns",
		fixture.WithService("extra", fixture.Replicas(2), fixture.Env("A", "b"), fixture.Mutate(withPodOptions)),
		fixture.WithService("stateful", fixture.Storage("1Gi")))
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

// TestTerminationGracePeriod checks the pod's termination budget: the preStop
// pause, the service's shutdown grace (its own SHUTDOWN_GRACE when the env
// sets a plain value the kit accepts, else the kit's default) and a margin.
func TestTerminationGracePeriod(t *testing.T) {
	fromSecret := fixture.Mutate(func(s *v1alpha1.Service) {
		s.Env = append(s.Env, v1alpha1.EnvVar{Name: contract.EnvShutdownGrace, ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "grace"},
		}})
	})
	tests := []struct {
		name string
		opts []fixture.ServiceOption
		want int64
	}{
		{"the kit's default grace", nil, 5 + 25 + 10},
		{"a longer grace", []fixture.ServiceOption{fixture.Env(contract.EnvShutdownGrace, "2m")}, 5 + 120 + 10},
		{"a shorter grace", []fixture.ServiceOption{fixture.Env(contract.EnvShutdownGrace, "3s")}, 5 + 3 + 10},
		{"a grace rounded up", []fixture.ServiceOption{fixture.Env(contract.EnvShutdownGrace, "1500ms")}, 5 + 2 + 10},
		{"a grace the kit refuses", []fixture.ServiceOption{fixture.Env(contract.EnvShutdownGrace, "soon")}, 5 + 25 + 10},
		{"a negative grace", []fixture.ServiceOption{fixture.Env(contract.EnvShutdownGrace, "-5s")}, 5 + 25 + 10},
		{"a grace from a Secret", []fixture.ServiceOption{fromSecret}, 5 + 25 + 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := fixture.App("shop", "cart", fixture.WithService("api", tt.opts...))
			d := resource.Deployment(resource.Input{App: app, Service: &app.Spec.Services[0]})
			got := d.Spec.Template.Spec.TerminationGracePeriodSeconds
			if got == nil || *got != tt.want {
				t.Errorf("terminationGracePeriodSeconds %v, want %d", ptr.Deref(got, -1), tt.want)
			}
		})
	}
}

// TestShutdownGraceFollowsKit checks that the budget's default grace is the
// kit's: a service with no SHUTDOWN_GRACE gets 25 s, and its pod 5 + 25 + 10.
func TestShutdownGraceFollowsKit(t *testing.T) {
	cfg, err := kit.LoadConfig(func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	app := fixture.App("shop", "cart", fixture.WithService("api"))
	d := resource.Deployment(resource.Input{App: app, Service: &app.Spec.Services[0]})
	want := int64(5 + cfg.ShutdownGrace.Seconds() + 10)
	if got := d.Spec.Template.Spec.TerminationGracePeriodSeconds; got == nil || *got != want {
		t.Errorf("terminationGracePeriodSeconds %v with the kit's default SHUTDOWN_GRACE %s, want %d", ptr.Deref(got, -1), cfg.ShutdownGrace, want)
	}
}

// TestTracingFollowsKit gives the kit the environment the operator builds
// and checks that it exports spans exactly when spec.tracing is set, and
// that a service's own OTEL_EXPORTER_OTLP_ENDPOINT replaces the app's.
func TestTracingFollowsKit(t *testing.T) {
	const collector = "http://otel-collector.observability.svc:4318"
	withTracing := func(a *v1alpha1.MicroserviceApp) {
		a.Spec.Tracing = &v1alpha1.Tracing{OTLPEndpoint: collector}
	}
	tests := []struct {
		name       string
		app        *v1alpha1.MicroserviceApp
		wantExport bool
		wantValue  string
	}{
		{"no tracing", fixture.App("shop", "cart", fixture.WithService("api")), false, ""},
		{"tracing", fixture.App("shop", "cart", fixture.WithService("api"), withTracing), true, collector},
		{"the service's own endpoint", fixture.App("shop", "cart",
			fixture.WithService("api", fixture.Env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://sidecar:4318")), withTracing),
			true, "http://sidecar:4318"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := resource.Deployment(resource.Input{App: tt.app, Service: &tt.app.Spec.Services[0]})
			env := map[string]string{}
			count := 0
			for _, v := range d.Spec.Template.Spec.Containers[0].Env {
				if v.Value != nil {
					env[*v.Name] = *v.Value
				}
				if *v.Name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
					count++
				}
			}
			if got := env["OTEL_EXPORTER_OTLP_ENDPOINT"]; got != tt.wantValue || count > 1 {
				t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT = %q (%d entries), want %q once", got, count, tt.wantValue)
			}
			provider, exports, err := tracing.NewProvider(context.Background(), func(k string) string { return env[k] },
				tracing.Resource{Service: env[contract.EnvServiceName], App: env[contract.EnvAppName]})
			if err != nil {
				t.Fatalf("the kit refuses the operator's environment: %v", err)
			}
			defer func() { _ = provider.Shutdown(context.Background()) }()
			if exports != tt.wantExport {
				t.Errorf("the kit exports spans: %v, want %v", exports, tt.wantExport)
			}
		})
	}
}
