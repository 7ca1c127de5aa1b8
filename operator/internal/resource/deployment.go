package resource

import (
	"path"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/utils/ptr"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/podspec"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
	"github.com/courier-dev/courier/services/kit/contract"
)

// Prometheus scrape annotations on the pod template, honoured by the common
// "kubernetes-pods" scrape configuration.
const (
	AnnotationScrape = "prometheus.io/scrape"
	AnnotationPort   = "prometheus.io/port"
	AnnotationPath   = "prometheus.io/path"
)

// preStopSleepSeconds keeps a terminating pod serving while endpoint
// controllers and proxies stop routing to it; SIGTERM only follows the pause.
// It uses the kubelet's sleep action because service images are distroless
// and have no shell or sleep binary to exec.
const preStopSleepSeconds = 5

// The termination budget of a service's pod. The kubelet counts
// terminationGracePeriodSeconds from the start of the preStop hook and
// sends SIGKILL when it runs out, so the budget must hold the hook, then
// the service's whole graceful shutdown, then the exit:
//
//	preStopSleepSeconds             5 s   endpoints drop the pod; SIGTERM follows
//	+ the service's shutdown grace 25 s   the kit drains requests and consumers,
//	                                      waits for in-flight handlers, closes the
//	                                      broker (SHUTDOWN_GRACE, default 25s)
//	+ terminationMarginSeconds     10 s   the process exits after its shutdown
//	                                      returns: a slow broker Close, log flush,
//	                                      a loaded node scheduling the process late
//	= 40 s
//
// Kubernetes' default of 30 s is exactly preStop plus the kit's grace, so a
// shutdown that used its grace in full was killed mid-drain, its last
// message unacknowledged (and redelivered) and its last requests cut.
const (
	// defaultShutdownGraceSeconds is the kit's default SHUTDOWN_GRACE
	// (services/kit Config.ShutdownGrace); TestShutdownGraceFollowsKit keeps
	// the two equal.
	defaultShutdownGraceSeconds = 25
	// terminationMarginSeconds is the time left after the service's own
	// grace for it to exit.
	terminationMarginSeconds = 10
)

// envOTLPEndpoint is OpenTelemetry's standard variable for the collector's
// base URL, which the kit's exporter reads (services/kit/tracing).
const envOTLPEndpoint = "OTEL_EXPORTER_OTLP_ENDPOINT"

// tmpVolume is the writable scratch directory of a container whose root
// filesystem is read-only.
const tmpVolume = "tmp"

// dataVolume is the persistent volume of a service with storage.
const dataVolume = "data"

// brokerVolume holds a service's broker credentials file, for a broker
// kind that authenticates with one (Broker.CredentialsKey).
const brokerVolume = "broker-credentials"

// defaultDataMountPath is where the data volume is mounted when
// spec.services[].storage.mountPath is unset, as the CRD defaults it.
const defaultDataMountPath = "/data"

// serviceGroupID is the group of the nonroot user (65532:65532) the service
// images run as (the Dockerfile's USER, hack/images). As the pod's fsGroup
// it makes the data volume writable by that user.
const serviceGroupID int64 = 65532

// Deployment runs a service: one container on the contract's ports and
// environment, probed and scraped on the admin port, under a restricted
// security context.
func Deployment(in Input) *appsv1ac.DeploymentApplyConfiguration {
	app, svc := in.App, in.Service
	name := metadata.Name(app.Name, svc.Name)
	metricsPort, _ := port(svc, metricsPortName(svc))

	return appsv1ac.Deployment(name, app.Namespace).
		WithLabels(metadata.Labels(app.Name, svc.Name)).
		WithOwnerReferences(metadata.OwnerReference(app)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas(svc)).
			WithSelector(selector(app.Name, svc.Name)).
			WithStrategy(strategy(svc)).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(podspec.Merge(metadata.Labels(app.Name, svc.Name), svc.PodLabels)).
				WithAnnotations(podspec.Merge(podAnnotations(in, metricsPort), svc.PodAnnotations)).
				WithSpec(podSpec(in))))
}

func podSpec(in Input) *corev1ac.PodSpecApplyConfiguration {
	svc := in.Service
	spec := corev1ac.PodSpec().
		// Callers get explicit SERVICE_<NAME>_URL variables; the legacy
		// per-Service variables would only add noise.
		WithEnableServiceLinks(false).
		WithTerminationGracePeriodSeconds(terminationGracePeriodSeconds(svc)).
		WithSecurityContext(podSecurityContext(svc)).
		WithContainers(container(in)).
		WithVolumes(volumes(in)...)
	if svc.ServiceAccountName != "" {
		// The user's account, for workload identity or a policy: its own
		// automountServiceAccountToken decides about the token.
		spec.WithServiceAccountName(svc.ServiceAccountName)
	} else {
		// Services never talk to the Kubernetes API.
		spec.WithAutomountServiceAccountToken(false)
	}
	return podspec.Apply(spec, PodOptions(svc.PodOptions), metadata.SelectorLabels(in.App.Name, svc.Name))
}

// PodOptions maps the API's pod options, of a service or of the managed
// broker, to the builders' input.
func PodOptions(o v1alpha1.PodOptions) podspec.Options {
	out := podspec.Options{
		NodeSelector:              o.NodeSelector,
		Tolerations:               o.Tolerations,
		Affinity:                  o.Affinity,
		TopologySpreadConstraints: o.TopologySpreadConstraints,
		PriorityClassName:         o.PriorityClassName,
		Labels:                    o.PodLabels,
		Annotations:               o.PodAnnotations,
	}
	for _, s := range o.ImagePullSecrets {
		out.ImagePullSecrets = append(out.ImagePullSecrets, s.Name)
	}
	return out
}

// terminationGracePeriodSeconds is the pod's budget for the preStop pause,
// the service's shutdown grace and the margin (see the constants). The grace
// is the service's own SHUTDOWN_GRACE when its env sets one as a plain
// value: a service given more time to drain gets a pod that waits for it.
// A value the kit would refuse, or one from a Secret or ConfigMap that the
// builder cannot read, counts as the kit's default.
func terminationGracePeriodSeconds(svc *v1alpha1.Service) int64 {
	grace := time.Duration(defaultShutdownGraceSeconds) * time.Second
	for _, e := range svc.Env {
		if e.Name != contract.EnvShutdownGrace || e.ValueFrom != nil {
			continue
		}
		if d, err := time.ParseDuration(e.Value); err == nil && d > 0 {
			grace = d
		}
	}
	// Whole seconds, rounded up: the budget may only err on the long side.
	graceSeconds := int64((grace + time.Second - 1) / time.Second)
	return preStopSleepSeconds + graceSeconds + terminationMarginSeconds
}

// strategy surges instead of taking pods down, so a single-replica service
// keeps serving through a rollout. A service with storage cannot: its
// ReadWriteOnce volume stays attached to the old pod, so a surged pod on
// another node would never start, and one on the same node would open the
// database beside the old process. Its pod is replaced instead, with a
// short outage per rollout.
func strategy(svc *v1alpha1.Service) *appsv1ac.DeploymentStrategyApplyConfiguration {
	if svc.Storage != nil {
		return appsv1ac.DeploymentStrategy().WithType(appsv1.RecreateDeploymentStrategyType)
	}
	return appsv1ac.DeploymentStrategy().
		WithType(appsv1.RollingUpdateDeploymentStrategyType).
		WithRollingUpdate(appsv1ac.RollingUpdateDeployment().
			WithMaxSurge(intstr.FromString("25%")).
			WithMaxUnavailable(intstr.FromInt32(0)))
}

func podSecurityContext(svc *v1alpha1.Service) *corev1ac.PodSecurityContextApplyConfiguration {
	sc := corev1ac.PodSecurityContext().
		WithRunAsNonRoot(true).
		WithSeccompProfile(corev1ac.SeccompProfile().
			WithType(corev1.SeccompProfileTypeRuntimeDefault))
	if svc.Storage != nil {
		// A new volume's root belongs to root; the kubelet gives it to the
		// service's group. It walks the volume only when its root is wrong,
		// not at every start.
		sc.WithFSGroup(serviceGroupID).
			WithFSGroupChangePolicy(corev1.FSGroupChangeOnRootMismatch)
	}
	return sc
}

func volumes(in Input) []*corev1ac.VolumeApplyConfiguration {
	vols := []*corev1ac.VolumeApplyConfiguration{
		corev1ac.Volume().
			WithName(tmpVolume).
			WithEmptyDir(corev1ac.EmptyDirVolumeSource()),
	}
	if in.Service.Storage != nil {
		vols = append(vols, corev1ac.Volume().
			WithName(dataVolume).
			WithPersistentVolumeClaim(corev1ac.PersistentVolumeClaimVolumeSource().
				WithClaimName(metadata.DataClaimName(in.App.Name, in.Service.Name))))
	}
	if b := in.Broker; b != nil && b.CredentialsKey != "" {
		vols = append(vols, corev1ac.Volume().
			WithName(brokerVolume).
			WithSecret(corev1ac.SecretVolumeSource().
				WithSecretName(metadata.ConnectionSecretName(in.App.Name, in.Service.Name)).
				WithItems(corev1ac.KeyToPath().WithKey(b.CredentialsKey).WithPath(path.Base(b.CredentialsFile))).
				WithDefaultMode(0o440)))
	}
	return vols
}

func volumeMounts(in Input) []*corev1ac.VolumeMountApplyConfiguration {
	svc := in.Service
	mounts := []*corev1ac.VolumeMountApplyConfiguration{
		corev1ac.VolumeMount().
			WithName(tmpVolume).
			WithMountPath("/tmp"),
	}
	if svc.Storage != nil {
		mounts = append(mounts, corev1ac.VolumeMount().
			WithName(dataVolume).
			WithMountPath(dataMountPath(svc)))
	}
	if b := in.Broker; b != nil && b.CredentialsKey != "" {
		mounts = append(mounts, corev1ac.VolumeMount().
			WithName(brokerVolume).
			WithMountPath(path.Dir(b.CredentialsFile)).
			WithReadOnly(true))
	}
	return mounts
}

// dataMountPath is where a service with storage finds its volume.
func dataMountPath(svc *v1alpha1.Service) string {
	if svc.Storage.MountPath == "" {
		return defaultDataMountPath
	}
	return svc.Storage.MountPath
}

// podAnnotations are the scrape annotations and, for a service that uses
// the broker, the hash of its connection Secret's data: the env takes
// BROKER_URL from the Secret only when a pod starts, so a new password must
// change the template to reach the pods.
func podAnnotations(in Input, metricsPort int32) map[string]string {
	a := map[string]string{
		AnnotationScrape: "true",
		AnnotationPort:   strconv.Itoa(int(metricsPort)),
		AnnotationPath:   metricsPath(in.Service),
	}
	if in.Broker != nil {
		a[contract.AnnotationConnectionHash] = rabbitmq.ConnectionHash(in.Broker.Data)
	}
	return a
}

func container(in Input) *corev1ac.ContainerApplyConfiguration {
	svc := in.Service
	c := corev1ac.Container().
		WithName(svc.Name).
		WithImage(svc.Image).
		WithPorts(
			corev1ac.ContainerPort().
				WithName(contract.HTTPPortName).
				WithContainerPort(httpPort(svc)).
				WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().
				WithName(contract.AdminPortName).
				WithContainerPort(adminPort(svc)).
				WithProtocol(corev1.ProtocolTCP)).
		WithEnv(env(in)...).
		WithResources(resources(svc)).
		WithLivenessProbe(probe(svc, liveness, overrides(svc).Liveness)).
		WithReadinessProbe(probe(svc, readiness, overrides(svc).Readiness)).
		WithStartupProbe(probe(svc, startup, overrides(svc).Startup)).
		WithLifecycle(corev1ac.Lifecycle().
			WithPreStop(corev1ac.LifecycleHandler().
				WithSleep(corev1ac.SleepAction().WithSeconds(preStopSleepSeconds)))).
		// Distroless images have no shell to inspect a crash with; the log
		// tail in the pod status is the next best thing.
		WithTerminationMessagePolicy(corev1.TerminationMessageFallbackToLogsOnError).
		WithSecurityContext(corev1ac.SecurityContext().
			WithRunAsNonRoot(true).
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithSeccompProfile(corev1ac.SeccompProfile().
				WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithVolumeMounts(volumeMounts(in)...)
	if svc.ImagePullPolicy != "" {
		c.WithImagePullPolicy(svc.ImagePullPolicy)
	}
	if len(svc.Command) > 0 {
		c.WithCommand(svc.Command...)
	}
	if len(svc.Args) > 0 {
		c.WithArgs(svc.Args...)
	}
	for i := range svc.EnvFrom {
		c.WithEnvFrom(applyConfig[corev1ac.EnvFromSourceApplyConfiguration](svc.EnvFrom[i]))
	}
	return c
}

// env is the contract's environment followed by the service's own variables.
// A variable of the service's that has the name of a contract variable
// replaces it in place: server-side apply rejects duplicate names, and the
// user's explicit choice wins.
func env(in Input) []*corev1ac.EnvVarApplyConfiguration {
	app, svc := in.App, in.Service
	vars := []*corev1ac.EnvVarApplyConfiguration{
		envValue(contract.EnvAppName, app.Name),
		envValue(contract.EnvServiceName, svc.Name),
		envField(contract.EnvPodName, "metadata.name"),
		envField(contract.EnvPodNamespace, "metadata.namespace"),
		envValue(contract.EnvHTTPPort, strconv.Itoa(int(httpPort(svc)))),
		envValue(contract.EnvAdminPort, strconv.Itoa(int(adminPort(svc)))),
	}
	if svc.Storage != nil {
		vars = append(vars, envValue(contract.EnvDataDir, dataMountPath(svc)))
	}
	if t := app.Spec.Tracing; t != nil {
		// The kit names the spans after COURIER_SERVICE and COURIER_APP, so
		// the endpoint is all it needs.
		vars = append(vars, envValue(envOTLPEndpoint, t.OTLPEndpoint))
	}
	for _, callee := range svc.Calls {
		vars = append(vars, envValue(contract.ServiceURLEnv(callee), serviceURL(app, callee)))
	}
	if in.Broker != nil {
		// BROKER_URL may hold the service's password, so it comes from the
		// Secret rather than sitting in the Deployment.
		vars = append(vars,
			envValue(contract.EnvBrokerKind, in.Broker.Kind),
			corev1ac.EnvVar().WithName(contract.EnvBrokerURL).WithValueFrom(corev1ac.EnvVarSource().
				WithSecretKeyRef(corev1ac.SecretKeySelector().
					WithName(metadata.ConnectionSecretName(app.Name, svc.Name)).
					WithKey(in.Broker.URLKey))))
		if in.Broker.CredentialsKey != "" {
			vars = append(vars, envValue(contract.EnvBrokerCredentialsFile, in.Broker.CredentialsFile))
		}
		for _, q := range ServiceQueues(svc) {
			vars = append(vars, envValue(contract.QueueEnv(q), contract.QueueName(app.Name, q)))
		}
		// Consumers enforce the delivery limit themselves (classic queues
		// have none on the broker), so they are told it.
		for _, q := range svc.Consumes {
			if limit := queueMaxDeliveries(app, q); limit != nil {
				vars = append(vars, envValue(contract.QueueMaxDeliveriesEnv(q), strconv.Itoa(int(*limit))))
			}
		}
	}

	index := make(map[string]int, len(vars))
	for i, v := range vars {
		index[*v.Name] = i
	}
	for i := range svc.Env {
		v := applyConfig[corev1ac.EnvVarApplyConfiguration](svc.Env[i])
		if v.ValueFrom != nil && v.ValueFrom.FieldRef != nil && v.ValueFrom.FieldRef.APIVersion == nil {
			v.ValueFrom.FieldRef.WithAPIVersion("v1") // the API server's default, as in envField
		}
		if at, ok := index[svc.Env[i].Name]; ok {
			vars[at] = v
			continue
		}
		vars = append(vars, v)
	}
	return vars
}

// serviceURL is the in-cluster base URL of the app's service named callee.
// The API guarantees callee exists; the default port covers the impossible
// case rather than building a URL without one.
func serviceURL(app *v1alpha1.MicroserviceApp, callee string) string {
	p := contract.HTTPPort
	for i := range app.Spec.Services {
		if app.Spec.Services[i].Name == callee {
			p = httpPort(&app.Spec.Services[i])
		}
	}
	return "http://" + metadata.Name(app.Name, callee) + "." + app.Namespace + ".svc:" + strconv.Itoa(int(p))
}

func envValue(name, value string) *corev1ac.EnvVarApplyConfiguration {
	return corev1ac.EnvVar().WithName(name).WithValue(value)
}

func envField(name, fieldPath string) *corev1ac.EnvVarApplyConfiguration {
	// apiVersion is what the API server would default; setting it keeps the
	// stored object equal to the desired one.
	return corev1ac.EnvVar().WithName(name).WithValueFrom(corev1ac.EnvVarSource().
		WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath(fieldPath)))
}

func resources(svc *v1alpha1.Service) *corev1ac.ResourceRequirementsApplyConfiguration {
	if svc.Resources != nil {
		return applyConfig[corev1ac.ResourceRequirementsApplyConfiguration](svc.Resources)
	}
	return corev1ac.ResourceRequirements().
		WithRequests(corev1.ResourceList{
			corev1.ResourceCPU:    defaultCPURequest,
			corev1.ResourceMemory: defaultMemoryRequest,
		}).
		WithLimits(corev1.ResourceList{
			corev1.ResourceCPU:    defaultCPULimit,
			corev1.ResourceMemory: defaultMemoryLimit,
		})
}

// probeDefaults are a probe's settings when the app overrides none.
type probeDefaults struct {
	path                                    string
	periodSeconds, timeoutSeconds, failures int32
}

var (
	liveness  = probeDefaults{path: contract.LivezPath, periodSeconds: 10, timeoutSeconds: 1, failures: 3}
	readiness = probeDefaults{path: contract.ReadyzPath, periodSeconds: 5, timeoutSeconds: 1, failures: 3}
	// startup allows 30 × 2s = 60s to start before liveness takes over.
	startup = probeDefaults{path: contract.LivezPath, periodSeconds: 2, timeoutSeconds: 1, failures: 30}
)

func overrides(svc *v1alpha1.Service) v1alpha1.Probes {
	if svc.Probes == nil {
		return v1alpha1.Probes{}
	}
	return *svc.Probes
}

// probe is an HTTP probe on a named port. Its timing fields are all set, so
// the operator owns them and rolls back edits to any of them.
func probe(svc *v1alpha1.Service, def probeDefaults, o *v1alpha1.Probe) *corev1ac.ProbeApplyConfiguration {
	if o == nil {
		o = &v1alpha1.Probe{}
	}
	path := def.path
	if o.Path != "" {
		path = o.Path
	}
	_, portName := port(svc, o.Port)
	p := corev1ac.Probe().
		WithHTTPGet(corev1ac.HTTPGetAction().
			WithPath(path).
			WithPort(intstr.FromString(portName)).
			WithScheme(corev1.URISchemeHTTP)).
		WithPeriodSeconds(ptr.Deref(o.PeriodSeconds, def.periodSeconds)).
		WithTimeoutSeconds(ptr.Deref(o.TimeoutSeconds, def.timeoutSeconds)).
		WithFailureThreshold(ptr.Deref(o.FailureThreshold, def.failures))
	// The API server does not store a zero delay (the field is omitempty),
	// so asking for one would read back as a difference on every reconcile.
	if d := ptr.Deref(o.InitialDelaySeconds, 0); d > 0 {
		p.WithInitialDelaySeconds(d)
	}
	return p
}

func metricsPath(svc *v1alpha1.Service) string {
	if svc.Metrics == nil || svc.Metrics.Path == "" {
		return contract.MetricsPath
	}
	return svc.Metrics.Path
}

func metricsPortName(svc *v1alpha1.Service) v1alpha1.PortName {
	if svc.Metrics == nil {
		return v1alpha1.PortAdmin
	}
	return svc.Metrics.Port
}

// queueMaxDeliveries is spec.queues[name].maxDeliveries, nil when unset.
func queueMaxDeliveries(app *v1alpha1.MicroserviceApp, name string) *int32 {
	for _, q := range app.Spec.Queues {
		if q.Name == name {
			return q.MaxDeliveries
		}
	}
	return nil
}
