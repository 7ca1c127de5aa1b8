package nats

import (
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/podspec"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
	"github.com/courier-dev/courier/services/kit/contract"
)

// natsID is the user and group the servers run as. The official image
// defines no user; nats-server needs none, only a writable data volume.
const natsID int64 = 1000

// terminationGracePeriodSeconds covers what a stopping server does after
// the preStop hook put it in lame duck mode: the grace period before it
// stops accepting (lameDuckGraceSeconds), moving its clients to the other
// servers over lameDuckSeconds, then the JetStream store's flush and the
// shutdown, for which 20 s is left. The kubelet's SIGTERM, sent when the
// hook returns, does not cut this short: nats-server ignores SIGTERM while
// in lame duck mode and exits by itself when it is over.
const terminationGracePeriodSeconds = int64(lameDuckGraceSeconds + lameDuckSeconds + 20)

const (
	volumeData   = "data"
	volumeConfig = "config"
	volumePID    = "pid"
)

// StatefulSet runs the servers. Parallel pod management, as for RabbitMQ:
// the servers of a JetStream cluster elect a meta leader once a majority is
// up, and OrderedReady would wait for pod 0 to be ready, which it only is
// once it has that majority.
func StatefulSet(b Broker, keys natsbroker.Managed) *appsv1ac.StatefulSetApplyConfiguration {
	n := metadata.BrokerNamesFor(b.App)
	return appsv1ac.StatefulSet(n.StatefulSet, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithSpec(appsv1ac.StatefulSetSpec().
			WithReplicas(b.Replicas).
			WithServiceName(n.Headless).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(metadata.BrokerSelectorLabels(b.App))).
			WithPodManagementPolicy(appsv1.ParallelPodManagement).
			WithUpdateStrategy(appsv1ac.StatefulSetUpdateStrategy().
				WithType(appsv1.RollingUpdateStatefulSetStrategyType)).
			// As for RabbitMQ: the data goes with the app (its accounts
			// were signed by an operator key that goes with it too); a
			// scale-down keeps it for the servers' return.
			WithPersistentVolumeClaimRetentionPolicy(appsv1ac.StatefulSetPersistentVolumeClaimRetentionPolicy().
				WithWhenDeleted(appsv1.DeletePersistentVolumeClaimRetentionPolicyType).
				WithWhenScaled(appsv1.RetainPersistentVolumeClaimRetentionPolicyType)).
			WithVolumeClaimTemplates(volumeClaimTemplate(b)).
			WithTemplate(podTemplate(b, keys)))
}

// volumeClaimTemplate is each server's JetStream and account store, built
// with every field the API server defaults (see the RabbitMQ builder).
func volumeClaimTemplate(b Broker) *corev1ac.PersistentVolumeClaimApplyConfiguration {
	spec := corev1ac.PersistentVolumeClaimSpec().
		WithAccessModes(corev1.ReadWriteOnce).
		WithResources(corev1ac.VolumeResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceStorage: b.storageSize()}))
	if b.StorageClassName != nil {
		spec.WithStorageClassName(*b.StorageClassName)
	}
	spec.WithVolumeMode(corev1.PersistentVolumeFilesystem)
	return (&corev1ac.PersistentVolumeClaimApplyConfiguration{}).
		WithAPIVersion("v1").
		WithKind("PersistentVolumeClaim").
		WithName(volumeData).
		WithLabels(metadata.BrokerSelectorLabels(b.App)).
		WithSpec(spec).
		WithStatus(corev1ac.PersistentVolumeClaimStatus().WithPhase(corev1.ClaimPending))
}

func podTemplate(b Broker, keys natsbroker.Managed) *corev1ac.PodTemplateSpecApplyConfiguration {
	n := metadata.BrokerNamesFor(b.App)
	return corev1ac.PodTemplateSpec().
		WithLabels(podspec.Merge(b.labels(), b.Pod.Labels)).
		WithAnnotations(podspec.Merge(map[string]string{
			"prometheus.io/scrape":        "true",
			"prometheus.io/port":          strconv.Itoa(int(MetricsPort)),
			"prometheus.io/path":          "/metrics",
			rabbitmq.AnnotationConfigHash: configHash(b, keys),
		}, b.Pod.Annotations)).
		// As for RabbitMQ: the user's scheduling settings, pull Secrets,
		// labels and annotations; an affinity without podAntiAffinity
		// keeps the one below.
		WithSpec(podspec.Apply(corev1ac.PodSpec().
			// The servers never call the Kubernetes API.
			WithAutomountServiceAccountToken(false).
			WithEnableServiceLinks(false).
			WithTerminationGracePeriodSeconds(terminationGracePeriodSeconds).
			WithSecurityContext(corev1ac.PodSecurityContext().
				WithRunAsNonRoot(true).
				WithRunAsUser(natsID).
				WithRunAsGroup(natsID).
				WithFSGroup(natsID).
				WithFSGroupChangePolicy(corev1.FSGroupChangeOnRootMismatch).
				WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
			WithAffinity(corev1ac.Affinity().
				WithPodAntiAffinity(corev1ac.PodAntiAffinity().
					WithPreferredDuringSchedulingIgnoredDuringExecution(corev1ac.WeightedPodAffinityTerm().
						WithWeight(100).
						WithPodAffinityTerm(corev1ac.PodAffinityTerm().
							WithTopologyKey(corev1.LabelHostname).
							WithLabelSelector(metav1ac.LabelSelector().
								WithMatchLabels(metadata.BrokerSelectorLabels(b.App))))))).
			WithContainers(natsContainer(b), exporterContainer(b)).
			WithVolumes(
				corev1ac.Volume().
					WithName(volumeConfig).
					WithConfigMap(corev1ac.ConfigMapVolumeSource().
						WithName(n.ConfigMap).
						WithItems(corev1ac.KeyToPath().WithKey(ConfigKey).WithPath(ConfigKey))),
				// The server's PID file, which the preStop hook signals
				// (the root filesystem is read-only).
				corev1ac.Volume().
					WithName(volumePID).
					WithEmptyDir(corev1ac.EmptyDirVolumeSource())),
			b.Pod, metadata.BrokerSelectorLabels(b.App)))
}

func natsContainer(b Broker) *corev1ac.ContainerApplyConfiguration {
	return corev1ac.Container().
		WithName("nats").
		WithImage(orDefault(b.Image, DefaultImage)).
		WithArgs("--config", configDir+"/"+ConfigKey).
		WithPorts(
			containerPort(PortNameClient, ClientPort),
			containerPort(PortNameCluster, ClusterPort),
			containerPort(PortNameMonitor, MonitorPort)).
		WithEnv(corev1ac.EnvVar().WithName(contract.EnvPodName).WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath("metadata.name")))).
		WithResources(applyResources(b.resources())).
		// As the NATS chart probes: started once JetStream has caught up
		// (a restarted server replays its streams first, which may take
		// minutes), alive while JetStream is enabled, ready while the
		// server itself is, so clients are sent to it while it catches up
		// on streams that have other healthy replicas.
		WithStartupProbe(httpProbe("/healthz", 10, 5, 90)).
		WithLivenessProbe(httpProbe("/healthz?js-enabled-only=true", 30, 5, 3)).
		WithReadinessProbe(httpProbe("/healthz?js-server-only=true", 10, 5, 3)).
		// Lame duck mode before the SIGTERM, as the NATS chart stops its
		// servers: the server stops accepting, then closes its clients
		// over lameDuckSeconds, so they reconnect to the other servers
		// spread out rather than all at once, and JetStream hands its
		// stream and consumer leaders over first. The hook only signals
		// and returns; terminationGracePeriodSeconds covers the rest.
		WithLifecycle(corev1ac.Lifecycle().
			WithPreStop(corev1ac.LifecycleHandler().
				WithExec(corev1ac.ExecAction().WithCommand("nats-server", "--signal", "ldm="+pidFile)))).
		WithTerminationMessagePolicy(corev1.TerminationMessageFallbackToLogsOnError).
		WithSecurityContext(containerSecurityContext()).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName(volumeData).WithMountPath(dataDir),
			corev1ac.VolumeMount().WithName(volumeConfig).WithMountPath(configDir).WithReadOnly(true),
			corev1ac.VolumeMount().WithName(volumePID).WithMountPath(pidDir))
}

// exporterContainer serves the server's monitoring endpoint as Prometheus
// metrics: server, JetStream (per account, stream and consumer),
// connections, routes and health.
func exporterContainer(b Broker) *corev1ac.ContainerApplyConfiguration {
	return corev1ac.Container().
		WithName("metrics").
		WithImage(orDefault(b.ExporterImage, DefaultExporterImage)).
		WithArgs("-port="+strconv.Itoa(int(MetricsPort)), "-varz", "-jsz=all", "-connz", "-routez", "-healthz",
			"http://localhost:"+strconv.Itoa(int(MonitorPort))).
		WithPorts(containerPort(PortNameMetrics, MetricsPort)).
		WithResources(corev1ac.ResourceRequirements().
			WithRequests(corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("32Mi"),
			}).
			WithLimits(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")})).
		WithTerminationMessagePolicy(corev1.TerminationMessageFallbackToLogsOnError).
		WithSecurityContext(containerSecurityContext())
}

// containerSecurityContext meets the "restricted" Pod Security Standard
// with a read-only root filesystem: the server writes only to the data
// volume.
func containerSecurityContext() *corev1ac.SecurityContextApplyConfiguration {
	return corev1ac.SecurityContext().
		WithRunAsNonRoot(true).
		WithAllowPrivilegeEscalation(false).
		WithReadOnlyRootFilesystem(true).
		WithCapabilities(corev1ac.Capabilities().WithDrop("ALL"))
}

func containerPort(name string, port int32) *corev1ac.ContainerPortApplyConfiguration {
	return corev1ac.ContainerPort().WithName(name).WithContainerPort(port).WithProtocol(corev1.ProtocolTCP)
}

// httpProbe asks the monitoring port, every timing field set so that the
// operator owns them (see the RabbitMQ builder's tcpProbe).
func httpProbe(path string, periodSeconds, timeoutSeconds, failureThreshold int32) *corev1ac.ProbeApplyConfiguration {
	return corev1ac.Probe().
		WithHTTPGet(corev1ac.HTTPGetAction().
			WithPath(path).
			WithPort(intstr.FromString(PortNameMonitor)).
			WithScheme(corev1.URISchemeHTTP)).
		WithPeriodSeconds(periodSeconds).
		WithTimeoutSeconds(timeoutSeconds).
		WithSuccessThreshold(1).
		WithFailureThreshold(failureThreshold)
}

// applyResources copies r into its apply configuration, sharing no map.
func applyResources(r corev1.ResourceRequirements) *corev1ac.ResourceRequirementsApplyConfiguration {
	out := corev1ac.ResourceRequirements()
	if len(r.Requests) > 0 {
		out.WithRequests(r.Requests.DeepCopy())
	}
	if len(r.Limits) > 0 {
		out.WithLimits(r.Limits.DeepCopy())
	}
	return out
}
