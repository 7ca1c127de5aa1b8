package controller

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rh "github.com/michaelklishin/rabbit-hole/v2"

	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"

	"github.com/courier-dev/courier/operator/internal/resource/kind"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/services/kit/contract"
)

// blog creates the example app in a namespace of the test's own, with users
// replicated so it also gets a disruption budget.
func blog(t *testing.T) *v1alpha1.MicroserviceApp {
	t.Helper()
	ns := namespace(t)
	app := fixture.Blog(ns)
	app.UID = "" // the API server assigns it
	app.Spec.Services[1].Replicas = ptr.To[int32](2)
	create(t, app)
	return app
}

// TestCreate checks that a new app gets exactly the objects the builders
// describe, no more, each owned by the app, and events saying so.
func TestCreate(t *testing.T) {
	t.Parallel()
	app := blog(t)
	ns := app.Namespace

	for _, svc := range app.Spec.Services {
		name := metadata.Name(app.Name, svc.Name)
		get(t, ns, name, &appsv1.Deployment{})
		get(t, ns, name, &corev1.Service{})
	}
	get(t, ns, "blog-users", &policyv1.PodDisruptionBudget{})

	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}

	t.Run("objects are what the builders describe", func(t *testing.T) {
		want := 0
		for _, b := range resource.PerService {
			for i := range live.Spec.Services {
				desired := b.Build(resource.Input{App: live, Service: &live.Spec.Services[i]})
				if desired == nil {
					continue
				}
				want++
				name := ptr.Deref(desired.(namedApplyConfiguration).GetName(), "")
				obj := get(t, ns, name, b.New())
				owned, err := b.Owned(obj, metadata.FieldOwner)
				if err != nil {
					t.Fatalf("extract %s %s: %v", b.Kind, name, err)
				}
				if !equality.Semantic.DeepEqual(owned, desired) {
					t.Errorf("%s %s: operator-owned fields differ from the builder's:\n%s", b.Kind, name, diffYAML(desired, owned))
				}
				if !metav1.IsControlledBy(obj, live) {
					t.Errorf("%s %s is not controlled by the app: %v", b.Kind, name, obj.GetOwnerReferences())
				}
			}
		}
		if got := countOwned(t, app); got != want {
			t.Errorf("app owns %d objects, want %d (a NetworkPolicy, a Deployment and a Service per service, one PodDisruptionBudget)", got, want)
		}
	})

	t.Run("deployments carry the contract", func(t *testing.T) {
		d := get(t, ns, "blog-gateway", &appsv1.Deployment{})
		pod := d.Spec.Template
		c := pod.Spec.Containers[0]
		env := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			env[e.Name] = e
		}
		for name, value := range map[string]string{
			contract.EnvAppName:             "blog",
			contract.EnvServiceName:         "gateway",
			contract.EnvHTTPPort:            "8080",
			contract.EnvAdminPort:           "9090",
			contract.ServiceURLEnv("users"): "http://blog-users." + ns + ".svc:8080",
			contract.ServiceURLEnv("posts"): "http://blog-posts." + ns + ".svc:8080",
		} {
			if got := env[name].Value; got != value {
				t.Errorf("env %s = %q, want %q", name, got, value)
			}
		}
		if ref := env[contract.EnvPodName].ValueFrom; ref == nil || ref.FieldRef.FieldPath != "metadata.name" {
			t.Errorf("env %s = %+v, want the downward API's metadata.name", contract.EnvPodName, env[contract.EnvPodName])
		}
		if ref := env[contract.EnvPodNamespace].ValueFrom; ref == nil || ref.FieldRef.FieldPath != "metadata.namespace" {
			t.Errorf("env %s = %+v, want the downward API's metadata.namespace", contract.EnvPodNamespace, env[contract.EnvPodNamespace])
		}
		for probe, path := range map[*corev1.Probe]string{
			c.LivenessProbe:  contract.LivezPath,
			c.ReadinessProbe: contract.ReadyzPath,
			c.StartupProbe:   contract.LivezPath,
		} {
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path ||
				probe.HTTPGet.Port != intstr.FromString(contract.AdminPortName) {
				t.Errorf("probe %+v, want GET %s on the admin port", probe, path)
			}
		}
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
			return p.Name == contract.AdminPortName && p.ContainerPort == contract.AdminPort
		}) {
			t.Errorf("container ports %+v lack admin:%d", c.Ports, contract.AdminPort)
		}
		if got := pod.Annotations; got[resource.AnnotationScrape] != "true" || got[resource.AnnotationPort] != "9090" || got[resource.AnnotationPath] != contract.MetricsPath {
			t.Errorf("pod annotations %v, want prometheus.io scrape of :9090%s", got, contract.MetricsPath)
		}
		sc := c.SecurityContext
		if sc == nil || !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
			!ptr.Deref(sc.ReadOnlyRootFilesystem, false) || sc.Capabilities == nil ||
			!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			pod.Spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("security context %+v / %+v is not restricted", sc, pod.Spec.SecurityContext)
		}
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
			t.Errorf("no preStop sleep: %+v", c.Lifecycle)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("resources %+v lack default requests and limits", c.Resources)
		}
		if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
			t.Errorf("strategy %s, want RollingUpdate", d.Spec.Strategy.Type)
		}
	})

	t.Run("single-replica services get no disruption budget", func(t *testing.T) {
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "blog-gateway"}, &policyv1.PodDisruptionBudget{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("get PodDisruptionBudget blog-gateway: %v, want not found", err)
		}
	})

	t.Run("events record the creations", func(t *testing.T) {
		owned := ownedObjects(t, app)
		eventually(t, "Created events naming every object", func(ctx context.Context) error {
			list := &eventsv1.EventList{}
			if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
				return err
			}
			named := map[string]bool{}
			for _, e := range list.Items {
				if e.Regarding.UID == live.UID && e.Reason == eventCreated {
					for _, o := range noteObjects(e.Note, eventCreated) {
						named[o] = true
					}
				}
			}
			for _, o := range owned {
				if !named[o] {
					return fmt.Errorf("no Created event names %s (named: %v)", o, named)
				}
			}
			return nil
		})
	})
}

// noteObjects reads the objects a summarising event's note names, as
// "Kind/name": "Created NetworkPolicy a, b; Service a" gives
// NetworkPolicy/a, NetworkPolicy/b and Service/a.
func noteObjects(note, reason string) []string {
	var out []string
	for group := range strings.SplitSeq(strings.TrimPrefix(note, reason+" "), "; ") {
		kind, names, _ := strings.Cut(group, " ")
		for name := range strings.SplitSeq(names, ", ") {
			out = append(out, kind+"/"+name)
		}
	}
	return out
}

// TestFollowsSpecChanges changes images and replicas, adds and removes a
// service, and expects the owned objects to follow.
func TestFollowsSpecChanges(t *testing.T) {
	t.Parallel()
	app := blog(t)
	ns := app.Namespace
	get(t, ns, "blog-mailer", &appsv1.Deployment{})

	updateApp(t, ns, app.Name, func(a *v1alpha1.MicroserviceApp) {
		a.Spec.Services[0].Image = "ghcr.io/courier-dev/gateway:v2" // gateway
		a.Spec.Services[0].Replicas = ptr.To[int32](3)
		a.Spec.Services[1].Replicas = ptr.To[int32](1) // users: its budget must go
		a.Spec.Services = slices.DeleteFunc(a.Spec.Services, func(s v1alpha1.Service) bool { return s.Name == "mailer" })
		a.Spec.Services = append(a.Spec.Services, v1alpha1.Service{Name: "search", Image: "ghcr.io/courier-dev/search:v1"})
	})

	eventually(t, "gateway runs the new image and replica count", func(ctx context.Context) error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "blog-gateway"}, d); err != nil {
			return err
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/courier-dev/gateway:v2" || *d.Spec.Replicas != 3 {
			return fmt.Errorf("image %s, replicas %d", img, *d.Spec.Replicas)
		}
		return nil
	})
	get(t, ns, "blog-gateway", &policyv1.PodDisruptionBudget{})
	get(t, ns, "blog-search", &appsv1.Deployment{})
	get(t, ns, "blog-search", &corev1.Service{})
	for _, gone := range []client.Object{
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "blog-users"}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "blog-mailer"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "blog-mailer"}},
	} {
		eventually(t, fmt.Sprintf("%T %s is deleted", gone, gone.GetName()), func(ctx context.Context) error {
			err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: gone.GetName()}, gone)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (err %v)", err)
		})
	}
}

// TestRecreatesDeletedObjects deletes an owned Deployment and Service and
// expects new ones in their place.
func TestRecreatesDeletedObjects(t *testing.T) {
	t.Parallel()
	app := blog(t)
	ns := app.Namespace
	for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}} {
		old := get(t, ns, "blog-posts", obj)
		oldUID := old.GetUID()
		if err := k8s.Delete(context.Background(), old); err != nil {
			t.Fatalf("delete %T: %v", old, err)
		}
		eventually(t, fmt.Sprintf("%T blog-posts is recreated", obj), func(ctx context.Context) error {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "blog-posts"}, obj); err != nil {
				return err
			}
			if obj.GetUID() == oldUID {
				return fmt.Errorf("still the old object %s", oldUID)
			}
			return nil
		})
	}
}

// TestRollsBackDrift hand-edits an owned Deployment's replicas and liveness
// probe, as `kubectl edit` would, and expects the operator to restore them.
func TestRollsBackDrift(t *testing.T) {
	t.Parallel()
	app := blog(t)
	ns := app.Namespace
	d := get(t, ns, "blog-users", &appsv1.Deployment{})

	eventually(t, "hand-edit Deployment blog-users", func(ctx context.Context) error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
			return err
		}
		d.Spec.Replicas = ptr.To[int32](7)
		d.Spec.Template.Spec.Containers[0].LivenessProbe.HTTPGet.Path = "/edited"
		d.Spec.Template.Spec.Containers[0].LivenessProbe.PeriodSeconds = 99
		return k8s.Update(ctx, d, client.FieldOwner("kubectl-edit"))
	})
	edited := d.ResourceVersion

	eventually(t, "the edit is rolled back", func(ctx context.Context) error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
			return err
		}
		probe := d.Spec.Template.Spec.Containers[0].LivenessProbe
		if d.ResourceVersion == edited || *d.Spec.Replicas != 2 || probe.HTTPGet.Path != contract.LivezPath || probe.PeriodSeconds != 10 {
			return fmt.Errorf("replicas %d, liveness %s every %ds", *d.Spec.Replicas, probe.HTTPGet.Path, probe.PeriodSeconds)
		}
		return nil
	})
	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, live, corev1.EventTypeNormal, eventUpdated)
}

// TestSteadyState lets an app settle, then checks that nothing it owns
// changes for 30 s and that a reconcile on top makes no write at all.
func TestSteadyState(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	// The blog, with users replicated (a disruption budget) and the mailer
	// given user-written fields the API server defaults or normalises, which
	// must not read back as differences.
	app := fixture.Blog(ns)
	app.UID = ""
	app.Spec.Services[1].Replicas = ptr.To[int32](2)
	mailer := &app.Spec.Services[3]
	mailer.Env = []v1alpha1.EnvVar{
		{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
		{Name: "SMTP_HOST", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "smtp"}, Key: "host",
		}}},
	}
	mailer.EnvFrom = []v1alpha1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "mail"}}}}
	mailer.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{
		corev1.ResourceCPU: apiresource.MustParse("0.5"), corev1.ResourceMemory: apiresource.MustParse("1G"),
	}}
	mailer.Probes = &v1alpha1.Probes{Startup: &v1alpha1.Probe{InitialDelaySeconds: ptr.To[int32](0), Port: v1alpha1.PortHTTP}}
	mailer.Metrics = &v1alpha1.Metrics{Path: "/m"}
	// Every pod option, so that what the API server defaults in them
	// cannot make a reconcile write.
	gateway := &app.Spec.Services[0]
	gateway.ServiceAccountName = "gateway"
	gateway.PodOptions = v1alpha1.PodOptions{
		ImagePullSecrets: []v1alpha1.PullSecretReference{{Name: "registry"}},
		NodeSelector:     map[string]string{"kubernetes.io/os": "linux"},
		Tolerations:      []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists, TolerationSeconds: ptr.To[int64](30), Effect: corev1.TaintEffectNoExecute}},
		Affinity: &corev1.Affinity{PodAffinity: &corev1.PodAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 10, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: corev1.LabelTopologyZone,
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{metadata.LabelName: "users"}}},
		}}}},
		TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.ScheduleAnyway}},
		PriorityClassName:         "business-critical",
		PodLabels:                 map[string]string{"team": "edge"},
		PodAnnotations:            map[string]string{"example.org/owner": "edge"},
	}
	create(t, app)
	for _, svc := range app.Spec.Services {
		get(t, ns, metadata.Name(app.Name, svc.Name), &appsv1.Deployment{})
		markAvailable(t, ns, metadata.Name(app.Name, svc.Name))
	}
	waitReady(t, app, metav1.ConditionTrue)
	pod := get(t, ns, metadata.Name(app.Name, "gateway"), &appsv1.Deployment{}).Spec.Template
	if pod.Spec.ServiceAccountName != "gateway" || pod.Spec.PriorityClassName != "business-critical" ||
		len(pod.Spec.ImagePullSecrets) != 1 || len(pod.Spec.Tolerations) != 1 || pod.Spec.Affinity == nil ||
		len(pod.Spec.TopologySpreadConstraints) != 1 || pod.Spec.NodeSelector["kubernetes.io/os"] != "linux" ||
		pod.Labels["team"] != "edge" || pod.Annotations["example.org/owner"] != "edge" {
		t.Errorf("gateway's pod template lacks a pod option:\n%s", diffYAML(gateway.PodOptions, pod))
	}

	var kinds []kind.Object
	for _, b := range resource.PerService {
		kinds = append(kinds, b.Object)
	}
	// 4 NetworkPolicies, 4 Deployments, 4 Services, 1 budget, the app.
	before := steadyVersions(t, app, kinds, 14)
	reconcileWritesNothing(t, app)
	if diff := cmp.Diff(before, resourceVersions(t, app, kinds)); diff != "" {
		t.Errorf("resourceVersions changed after the reconcile (-before +now):\n%s", diff)
	}
}

// TestReadyFollowsDeployments plays the deployment controller and checks
// Ready, ServicesAvailable and per-service status follow it.
func TestReadyFollowsDeployments(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	app := fixture.App(ns, "shop", fixture.WithService("api", fixture.Replicas(2)), fixture.WithService("worker"))
	app.UID = ""
	create(t, app)
	get(t, ns, "shop-api", &appsv1.Deployment{})
	get(t, ns, "shop-worker", &appsv1.Deployment{})

	c := waitReady(t, app, metav1.ConditionFalse)
	if c.Reason != v1alpha1.ReasonRollingOut {
		t.Errorf("Ready reason %s before any rollout, want %s", c.Reason, v1alpha1.ReasonRollingOut)
	}
	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	if got := kstatusOf(t, live); got.Status != status.InProgressStatus {
		t.Errorf("kstatus while rolling out = %s (%s), want InProgress", got.Status, got.Message)
	}

	markAvailable(t, ns, "shop-api")
	markAvailable(t, ns, "shop-worker")
	c = waitReady(t, app, metav1.ConditionTrue)
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	if got := kstatusOf(t, live); got.Status != status.CurrentStatus {
		t.Errorf("kstatus when Ready = %s (%s), want Current", got.Status, got.Message)
	}
	if live.Status.ObservedGeneration != live.Generation || c.ObservedGeneration != live.Generation {
		t.Errorf("observedGeneration %d (condition %d), want %d", live.Status.ObservedGeneration, c.ObservedGeneration, live.Generation)
	}
	wantServices := []v1alpha1.ServiceStatus{
		{Name: "api", Image: "ghcr.io/courier-dev/api:latest", DesiredReplicas: 2, ReadyReplicas: 2, Available: true},
		{Name: "worker", Image: "ghcr.io/courier-dev/worker:latest", DesiredReplicas: 1, ReadyReplicas: 1, Available: true},
	}
	if diff := cmp.Diff(wantServices, live.Status.Services); diff != "" || live.Status.ReadyServices != "2/2" {
		t.Errorf("service status (-want +got):\n%s\nreadyServices %q, want 2/2", diff, live.Status.ReadyServices)
	}

	setDeploymentStatus(t, ns, "shop-api", func(d *appsv1.Deployment) {
		d.Status.AvailableReplicas = 1
		d.Status.ReadyReplicas = 1
	})
	c = waitReady(t, app, metav1.ConditionFalse)
	if c.Reason != v1alpha1.ReasonRollingOut || c.Message != v1alpha1.ConditionServicesAvailable+": waiting for api: 1 of 2 pods available" {
		t.Errorf("Ready = %s %q, want it to name api's unavailable pod", c.Reason, c.Message)
	}

	setDeploymentStatus(t, ns, "shop-api", func(d *appsv1.Deployment) {
		d.Status.Conditions = append(d.Status.Conditions, appsv1.DeploymentCondition{
			Type:   appsv1.DeploymentProgressing,
			Status: corev1.ConditionFalse,
			Reason: progressDeadlineExceeded,
		})
	})
	eventually(t, "Ready reports the stalled rollout", func(ctx context.Context) error {
		c := readyCondition(ctx, app)
		if c == nil || c.Reason != v1alpha1.ReasonRolloutStalled {
			return fmt.Errorf("Ready = %+v", c)
		}
		return nil
	})

	markAvailable(t, ns, "shop-api")
	waitReady(t, app, metav1.ConditionTrue)

	// A spec change is not Ready until the deployment controller has
	// rolled it out, however available the old pods are.
	updateApp(t, ns, app.Name, func(a *v1alpha1.MicroserviceApp) { a.Spec.Services[1].Image = "ghcr.io/courier-dev/worker:v2" })
	waitReady(t, app, metav1.ConditionFalse)
	markAvailable(t, ns, "shop-worker")
	waitReady(t, app, metav1.ConditionTrue)
}

// TestSample applies config/samples, the blog app users start from.
func TestSample(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "samples", "apps_v1alpha1_microserviceapp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.MicroserviceApp{}
	if err := yaml.UnmarshalStrict(raw, app); err != nil {
		t.Fatalf("decode sample: %v", err)
	}
	app.Namespace = ns
	create(t, app)

	// Reconciled; the broker's pods never start by themselves, since
	// envtest runs no StatefulSet controller. Until the broker holds their
	// users, the services that use the queue get no Deployment.
	c := waitReady(t, app, metav1.ConditionFalse)
	if c.Reason != v1alpha1.ReasonWaitingForBrokerPods {
		t.Errorf("Ready reason %s, want %s", c.Reason, v1alpha1.ReasonWaitingForBrokerPods)
	}
	get(t, ns, "blog-gateway", &appsv1.Deployment{})
	for _, name := range []string{"users", "posts", "mailer"} {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "blog-" + name}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
			t.Errorf("Deployment blog-%s before the broker holds its user: %v, want none", name, err)
		}
	}

	// Play the broker: the shared test node takes the administrator the
	// operator generated, and the StatefulSet reports its node ready.
	admin := get(t, ns, metadata.BrokerNamesFor(app.Name).AdminSecret, &corev1.Secret{})
	user := string(admin.Data[rabbitmq.AdminUsernameKey])
	if _, err := adminAPI(t).PutUser(user, rh.UserSettings{Password: string(admin.Data[rabbitmq.AdminPasswordKey]), Tags: rh.UserTags{"administrator"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adminAPI(t).DeleteUser(user) })
	setBrokerReady(t, app, 1)

	for _, name := range []string{"gateway", "users", "posts", "mailer"} {
		get(t, ns, "blog-"+name, &appsv1.Deployment{})
		get(t, ns, "blog-"+name, &corev1.Service{})
	}
	posts := get(t, ns, "blog-posts", &appsv1.Deployment{})
	if !slices.ContainsFunc(posts.Spec.Template.Spec.Containers[0].Env, func(e corev1.EnvVar) bool {
		return e.Name == contract.ServiceURLEnv("users") && e.Value == "http://blog-users."+ns+".svc:8080"
	}) {
		t.Errorf("posts lacks %s: %+v", contract.ServiceURLEnv("users"), posts.Spec.Template.Spec.Containers[0].Env)
	}

	// The queue: a managed broker, and users, posts and mailer wired to it.
	get(t, ns, "blog-broker", &appsv1.StatefulSet{})
	for _, svc := range []string{"users", "posts", "mailer"} {
		get(t, ns, "blog-"+svc+"-broker", &corev1.Secret{})
		env := envOf(get(t, ns, "blog-"+svc, &appsv1.Deployment{}))
		if env[contract.QueueEnv("emails")] != "blog.emails" || env[contract.EnvBrokerURL] != "secret blog-"+svc+"-broker/url" {
			t.Errorf("%s is not wired to the queue: %v", svc, env)
		}
		// Only the consumer is told the queue's delivery limit (5 in the sample).
		wantLimit := map[string]string{"mailer": "5"}[svc]
		if got := env[contract.QueueMaxDeliveriesEnv("emails")]; got != wantLimit {
			t.Errorf("%s has %s=%q, want %q", svc, contract.QueueMaxDeliveriesEnv("emails"), got, wantLimit)
		}
	}
	waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
}

// TestSampleSecrets checks the demo Secrets the sample app reads: the users
// service refuses a token private key that is not an Ed25519 key in PKCS #8
// PEM (services/internal/auth, internal to services/).
func TestSampleSecrets(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "samples", "blog_secrets.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		s := &corev1.Secret{}
		if err := yaml.UnmarshalStrict([]byte(doc), s); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if key, ok := s.StringData["token-private-key"]; ok {
			found = true
			block, _ := pem.Decode([]byte(key))
			if block == nil {
				t.Error("token-private-key is not PEM")
				continue
			}
			parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if _, ed := parsed.(ed25519.PrivateKey); err != nil || !ed {
				t.Errorf("token-private-key is %T (%v), want an Ed25519 key in PKCS #8", parsed, err)
			}
		}
	}
	if !found {
		t.Error("no token-private-key in the sample Secrets")
	}
}

// waitReady waits for the app's Ready condition to have status and returns it.
func waitReady(t *testing.T, app *v1alpha1.MicroserviceApp, status metav1.ConditionStatus) *metav1.Condition {
	t.Helper()
	var c *metav1.Condition
	eventually(t, fmt.Sprintf("app %s Ready=%s", app.Name, status), func(ctx context.Context) error {
		c = readyCondition(ctx, app)
		if c == nil || c.Status != status {
			return fmt.Errorf("Ready = %+v", c)
		}
		return nil
	})
	return c
}

func readyCondition(ctx context.Context, app *v1alpha1.MicroserviceApp) *metav1.Condition {
	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
		return nil
	}
	return meta.FindStatusCondition(live.Status.Conditions, v1alpha1.ConditionReady)
}

// countOwned counts the objects of every builder's kind controlled by app.
func countOwned(t *testing.T, app *v1alpha1.MicroserviceApp) int {
	t.Helper()
	return len(ownedObjects(t, app))
}

// ownedObjects lists the per-service objects app controls, as "Kind/name".
func ownedObjects(t *testing.T, app *v1alpha1.MicroserviceApp) []string {
	t.Helper()
	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range resource.PerService {
		list := b.NewList()
		if err := k8s.List(context.Background(), list, client.InNamespace(app.Namespace)); err != nil {
			t.Fatal(err)
		}
		_ = meta.EachListItem(list, func(o runtime.Object) error {
			if obj := o.(client.Object); metav1.IsControlledBy(obj, live) {
				out = append(out, b.Kind+"/"+obj.GetName())
			}
			return nil
		})
	}
	return out
}

func diffYAML(want, got any) string {
	w, _ := yaml.Marshal(want)
	g, _ := yaml.Marshal(got)
	return cmp.Diff(string(w), string(g))
}

// waitEvent waits for an event of type and reason regarding obj.
func waitEvent(t *testing.T, obj client.Object, eventType, reason string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s event %s on %s", eventType, reason, obj.GetName()), func(ctx context.Context) error {
		list := &eventsv1.EventList{}
		if err := k8s.List(ctx, list, client.InNamespace(obj.GetNamespace())); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Regarding.UID == obj.GetUID() && e.Type == eventType && e.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(list.Items))
	})
}

// TestWriteCounterCounts proves the counter TestSteadyState relies on sees
// every kind of write the reconciler makes.
func TestWriteCounterCounts(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	counter := newWriteCounter(mgrClient)

	app := fixture.App(ns, "counted", fixture.WithService("api", fixture.Replicas(0)))
	app.UID = ""
	if err := counter.Create(ctx, app); err != nil {
		t.Fatal(err)
	}
	base := app.DeepCopy()
	app.Status.ReadyServices = "0/1"
	if err := counter.Status().Patch(ctx, app, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	in := resource.Input{App: app, Service: &app.Spec.Services[0]}
	if err := counter.Apply(ctx, resource.Service(in), client.FieldOwner("test")); err != nil {
		t.Fatal(err)
	}
	if err := counter.Delete(ctx, app); err != nil {
		t.Fatal(err)
	}
	if n := counter.writes.Load(); n != 4 {
		t.Errorf("counted %d writes, want 4 (create, status patch, apply, delete)", n)
	}
}
