package rabbitmq

import (
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/podspec"
	"github.com/courier-dev/courier/services/kit/contract"
)

// Pod template annotations.
const (
	// AnnotationConfigHash carries the hash of the broker ConfigMap's data, so
	// a configuration change rolls the nodes.
	AnnotationConfigHash = "courier.dev/broker-config-hash"
	// AnnotationSkipPreStopChecks, set to any non-empty value on the broker
	// pods, makes their preStop hook skip waiting for quorum queue replicas.
	// The controller sets it before it deletes or scales the whole broker
	// away: when every node stops, no replica can ever catch up, and each
	// pod would wait out quorumWaitSeconds for nothing.
	AnnotationSkipPreStopChecks = "courier.dev/skip-prestop-checks"
)

// Prometheus scrape annotations, the keys resource.AnnotationScrape and its
// siblings use (spelled out so that package resource can import this one).
const (
	annotationScrape = "prometheus.io/scrape"
	annotationPort   = "prometheus.io/port"
	annotationPath   = "prometheus.io/path"
)

// The official image's rabbitmq user and group.
const rabbitmqID int64 = 999

// Paths inside the official image.
const (
	// homeDir is the rabbitmq user's HOME, where Erlang and the CLI tools
	// look for .erlang.cookie.
	homeDir = "/var/lib/rabbitmq"
	// dataDir is RABBITMQ_MNESIA_BASE, the node's database and message store.
	dataDir = "/var/lib/rabbitmq/mnesia"
	// configDir holds rabbitmq.conf and enabled_plugins, where RabbitMQ
	// looks for them by default.
	configDir = "/etc/rabbitmq"
	// cookieSecretDir is where the setup container reads the cookie from.
	cookieSecretDir = "/etc/courier/erlang-cookie"
	// podInfoDir holds the downward API file of AnnotationSkipPreStopChecks.
	podInfoDir = "/etc/pod-info"
)

// Volume names.
const (
	volumeData         = "data"
	volumeHome         = "home"
	volumeConfig       = "config"
	volumeCookieSecret = "erlang-cookie"
	volumePodInfo      = "pod-info"
)

// Shutdown. A node leaving the cluster first waits until every quorum queue
// keeps a quorum without it, then drains: it hands its queue leaderships to
// other nodes and closes client connections, which reconnect to the others.
// The waits are bounded so that a broker whose nodes all stop at once (the
// controller should set AnnotationSkipPreStopChecks then) still terminates.
//
// The kubelet counts the grace period from the start of the preStop hook and
// sends SIGKILL when it runs out, so it holds the whole sequence:
//
//	quorumWaitSeconds       300 s  rabbitmq-upgrade await_online_quorum_plus_one -t 300
//	+ drainSeconds          120 s  rabbitmq-upgrade drain -t 120
//	+ 2 × cliStartSeconds    60 s  each command first starts an Erlang VM and
//	                               connects to the node, outside its -t
//	+ stopSeconds           120 s  after SIGTERM, RabbitMQ stops: closes the
//	                               queues and flushes the message store to disk
//	= 600 s
//
// A SIGKILL inside the last step would leave the message store to be
// recovered at the next start, which is slow and can lose what a classic
// queue had not synced.
const (
	quorumWaitSeconds = 300
	drainSeconds      = 120
	// cliStartSeconds bounds the start of one CLI command: 0.5 to 2.2 s
	// (measured with RabbitMQ 3.10.8 on 2 shared cores), far more on a node
	// busy enough to need a long drain.
	cliStartSeconds = 30
	// stopSeconds is RabbitMQ's own stop after SIGTERM.
	stopSeconds                   = 120
	terminationGracePeriodSeconds = int64(quorumWaitSeconds + drainSeconds + 2*cliStartSeconds + stopSeconds)
)

// StatefulSet runs the broker's nodes.
//
// The pods use podManagementPolicy Parallel. Peer discovery is built for
// nodes that boot together (the RabbitMQ cluster operator starts its nodes
// the same way): one forms the cluster and the others join it. OrderedReady
// would even deadlock a full restart: a restarted node only becomes ready
// once the peers it last saw are back, but OrderedReady starts pod 1 only
// after pod 0 is ready.
func StatefulSet(b Broker) *appsv1ac.StatefulSetApplyConfiguration {
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
			// Deleting the broker (with its app) deletes its data: the admin
			// Secret goes with the app, and a volume kept for a re-created app
			// would hold a database whose administrator the new Secret does
			// not know. Scaling down keeps the volumes, so the removed nodes,
			// still cluster members, rejoin with their data on scale-up.
			WithPersistentVolumeClaimRetentionPolicy(appsv1ac.StatefulSetPersistentVolumeClaimRetentionPolicy().
				WithWhenDeleted(appsv1.DeletePersistentVolumeClaimRetentionPolicyType).
				WithWhenScaled(appsv1.RetainPersistentVolumeClaimRetentionPolicyType)).
			WithVolumeClaimTemplates(volumeClaimTemplate(b)).
			WithTemplate(podTemplate(b)))
}

// volumeClaimTemplate is each node's data volume. Only the selector labels
// go on it: the templates are immutable, so they must never change.
func volumeClaimTemplate(b Broker) *corev1ac.PersistentVolumeClaimApplyConfiguration {
	spec := corev1ac.PersistentVolumeClaimSpec().
		WithAccessModes(corev1.ReadWriteOnce).
		WithResources(corev1ac.VolumeResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceStorage: b.storageSize()}))
	if b.StorageClassName != nil {
		spec.WithStorageClassName(*b.StorageClassName)
	}
	// The templates are an atomic list: the operator owns each template
	// whole, including what the API server defaults into it (apiVersion,
	// kind, volumeMode, the status phase). Building those in keeps the
	// operator's fields as stored equal to the built ones, so a reconcile
	// that changes nothing writes nothing. corev1ac.PersistentVolumeClaim
	// is not used because it also sets an empty namespace, which the server
	// drops.
	spec.WithVolumeMode(corev1.PersistentVolumeFilesystem)
	return (&corev1ac.PersistentVolumeClaimApplyConfiguration{}).
		WithAPIVersion("v1").
		WithKind("PersistentVolumeClaim").
		WithName(volumeData).
		WithLabels(metadata.BrokerSelectorLabels(b.App)).
		WithSpec(spec).
		WithStatus(corev1ac.PersistentVolumeClaimStatus().WithPhase(corev1.ClaimPending))
}

func podTemplate(b Broker) *corev1ac.PodTemplateSpecApplyConfiguration {
	n := metadata.BrokerNamesFor(b.App)
	return corev1ac.PodTemplateSpec().
		WithLabels(podspec.Merge(b.labels(), b.Pod.Labels)).
		WithAnnotations(podspec.Merge(map[string]string{
			annotationScrape:     "true",
			annotationPort:       strconv.Itoa(int(PrometheusPort)),
			annotationPath:       "/metrics",
			AnnotationConfigHash: configHash(b),
		}, b.Pod.Annotations)).
		WithSpec(podspec.Apply(corev1ac.PodSpec().
			WithServiceAccountName(n.ServiceAccount).
			// Peer discovery calls the Kubernetes API with the pod's token.
			WithAutomountServiceAccountToken(true).
			// RabbitMQ reads RABBITMQ_* variables; a Service named rabbitmq in
			// the namespace would inject RABBITMQ_PORT and friends.
			WithEnableServiceLinks(false).
			WithTerminationGracePeriodSeconds(terminationGracePeriodSeconds).
			WithSecurityContext(corev1ac.PodSecurityContext().
				WithRunAsNonRoot(true).
				WithRunAsUser(rabbitmqID).
				WithRunAsGroup(rabbitmqID).
				// The data volume must be writable by the rabbitmq group. The
				// kubelet only walks a volume to fix ownership when its root
				// is wrong, not at every mount of a large message store.
				WithFSGroup(rabbitmqID).
				WithFSGroupChangePolicy(corev1.FSGroupChangeOnRootMismatch).
				WithSeccompProfile(corev1ac.SeccompProfile().
					WithType(corev1.SeccompProfileTypeRuntimeDefault))).
			// Spread the nodes over Kubernetes nodes where the scheduler can,
			// so losing one Kubernetes node costs one RabbitMQ node; preferred
			// rather than required, so a small cluster still schedules them.
			WithAffinity(corev1ac.Affinity().
				WithPodAntiAffinity(corev1ac.PodAntiAffinity().
					WithPreferredDuringSchedulingIgnoredDuringExecution(corev1ac.WeightedPodAffinityTerm().
						WithWeight(100).
						WithPodAffinityTerm(corev1ac.PodAffinityTerm().
							WithTopologyKey(corev1.LabelHostname).
							WithLabelSelector(metav1ac.LabelSelector().
								WithMatchLabels(metadata.BrokerSelectorLabels(b.App))))))).
			WithInitContainers(cookieContainer(b)).
			WithContainers(rabbitmqContainer(b)).
			WithVolumes(
				corev1ac.Volume().
					WithName(volumeHome).
					WithEmptyDir(corev1ac.EmptyDirVolumeSource()),
				corev1ac.Volume().
					WithName(volumeConfig).
					WithConfigMap(corev1ac.ConfigMapVolumeSource().
						WithName(n.ConfigMap).
						WithItems(
							corev1ac.KeyToPath().WithKey(ConfigKeyRabbitMQConf).WithPath("rabbitmq.conf"),
							corev1ac.KeyToPath().WithKey(ConfigKeyEnabledPlugins).WithPath("enabled_plugins"))),
				corev1ac.Volume().
					WithName(volumeCookieSecret).
					WithSecret(corev1ac.SecretVolumeSource().
						WithSecretName(n.AdminSecret).
						// Readable by the rabbitmq group (fsGroup) only, and
						// only the cookie, not the administrator's password.
						WithDefaultMode(0o440).
						WithItems(corev1ac.KeyToPath().WithKey(ErlangCookieKey).WithPath(".erlang.cookie"))),
				corev1ac.Volume().
					WithName(volumePodInfo).
					WithDownwardAPI(corev1ac.DownwardAPIVolumeSource().
						WithItems(corev1ac.DownwardAPIVolumeFile().
							WithPath("skip-prestop-checks").
							WithFieldRef(fieldRef(fmt.Sprintf("metadata.annotations['%s']", AnnotationSkipPreStopChecks)))))),
			b.Pod, metadata.BrokerSelectorLabels(b.App)))
}

// cookieContainer installs the Erlang cookie in the rabbitmq user's HOME
// before RabbitMQ starts.
//
// Erlang refuses a cookie file that group or others can read, and the cookie
// cannot be mounted from the Secret directly: with fsGroup set the kubelet
// makes every file of a Secret volume group-readable and owned by root,
// whatever defaultMode says. The RABBITMQ_ERLANG_COOKIE variable does work
// with the official 3.x image, but RabbitMQ deprecates it and every CLI
// command (including the preStop hook's) prints a warning about it. So this
// container copies the cookie into the HOME emptyDir as a file of the
// rabbitmq user with mode 0400, as the RabbitMQ cluster operator's setup
// container does, without its root privileges: the emptyDir is writable by
// everyone. The old copy is removed first because a restarted pod keeps its
// emptyDir, and a 0400 file cannot be overwritten.
func cookieContainer(b Broker) *corev1ac.ContainerApplyConfiguration {
	cookie := homeDir + "/.erlang.cookie"
	return corev1ac.Container().
		WithName("erlang-cookie").
		WithImage(b.image()).
		WithCommand("/bin/sh", "-c",
			fmt.Sprintf("rm -f %[2]s && cp %[1]s/.erlang.cookie %[2]s && chmod 400 %[2]s", cookieSecretDir, cookie)).
		WithResources(corev1ac.ResourceRequirements().
			WithRequests(corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			}).
			WithLimits(corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			})).
		WithTerminationMessagePolicy(corev1.TerminationMessageFallbackToLogsOnError).
		WithSecurityContext(containerSecurityContext()).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName(volumeHome).WithMountPath(homeDir),
			corev1ac.VolumeMount().WithName(volumeCookieSecret).WithMountPath(cookieSecretDir).WithReadOnly(true))
}

func rabbitmqContainer(b Broker) *corev1ac.ContainerApplyConfiguration {
	n := metadata.BrokerNamesFor(b.App)
	return corev1ac.Container().
		WithName("rabbitmq").
		WithImage(b.image()).
		WithPorts(
			containerPort(PortNameAMQP, AMQPPort),
			containerPort(PortNameManagement, ManagementPort),
			containerPort(PortNamePrometheus, PrometheusPort),
			containerPort(PortNameEPMD, EPMDPort),
			containerPort(PortNameDistribution, DistributionPort)).
		WithEnv(
			corev1ac.EnvVar().WithName(contract.EnvPodName).WithValueFrom(corev1ac.EnvVarSource().
				WithFieldRef(fieldRef("metadata.name"))),
			// Long names: the node is known by its fully qualified DNS name,
			// the name peer discovery builds from the endpoints' hostname
			// and cluster_formation.k8s.hostname_suffix.
			corev1ac.EnvVar().WithName("RABBITMQ_USE_LONGNAME").WithValue("true"),
			corev1ac.EnvVar().WithName("RABBITMQ_NODENAME").
				WithValue("rabbit@$("+contract.EnvPodName+")."+b.nodeDomain()),
			// RabbitMQ creates its default user from these when a node
			// initialises an empty database; the CLI tools ignore them.
			secretEnv("RABBITMQ_DEFAULT_USER", n.AdminSecret, AdminUsernameKey),
			secretEnv("RABBITMQ_DEFAULT_PASS", n.AdminSecret, AdminPasswordKey)).
		WithResources(applyResources(b.resources())).
		// Started means AMQP accepts connections, which happens last in a
		// node's boot. A restarted node first waits for the peers it last
		// saw, up to RabbitMQ's 10 × 30 s, before it gets there; ten
		// minutes covers that and a slow volume.
		WithStartupProbe(tcpProbe(PortNameAMQP, 10, 5, 60)).
		// Ready means AMQP accepts connections: a TCP check costs nothing,
		// where rabbitmq-diagnostics would start an Erlang VM every period.
		WithReadinessProbe(tcpProbe(PortNameAMQP, 10, 5, 3)).
		// Alive means the rabbit application runs. An open Erlang port is
		// not enough: a node that paused itself (pause_minority, when it
		// sees a minority of its cluster) or whose application stopped
		// keeps its VM and ports up and serves nobody, and nothing else
		// would ever restart it. check_running fails on both and passes
		// during a drain (maintenance mode keeps the application running).
		// It starts an Erlang VM per probe (measured with 3.10.8 on 2
		// shared cores: 0.5 to 2.2 s and 62 to 67 MB, which the memory
		// headroom of availableMemory holds), so it runs every 30 s, not
		// every 10 s, and may take 20 s: a node under load answers
		// slowly, and a restart would make things worse. Measured too:
		// a node paused by pause_minority fails it (exit 69) while its
		// Erlang distribution port, the previous probe, stays open.
		// Three misses in a row, 60 to 90 s, let a short partition heal
		// before the node is restarted; the startup probe holds this one
		// back through the boot, while the application is not yet running.
		WithLivenessProbe(execProbe([]string{"rabbitmq-diagnostics", "-q", "check_running"}, 30, 20, 3)).
		WithLifecycle(corev1ac.Lifecycle().
			WithPreStop(corev1ac.LifecycleHandler().
				WithExec(corev1ac.ExecAction().WithCommand("/bin/sh", "-c", preStopScript)))).
		WithTerminationMessagePolicy(corev1.TerminationMessageFallbackToLogsOnError).
		WithSecurityContext(containerSecurityContext()).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName(volumeHome).WithMountPath(homeDir),
			corev1ac.VolumeMount().WithName(volumeData).WithMountPath(dataDir),
			corev1ac.VolumeMount().WithName(volumeConfig).WithMountPath(configDir).WithReadOnly(true),
			corev1ac.VolumeMount().WithName(volumePodInfo).WithMountPath(podInfoDir).WithReadOnly(true))
}

// preStopScript waits until the node can leave without costing any quorum
// queue its quorum, then drains it; see terminationGracePeriodSeconds. A
// single-node cluster returns from the wait at once. Both commands are
// bounded and their failure only moves on: the kubelet sends SIGTERM after
// the hook whatever it returns.
var preStopScript = fmt.Sprintf(
	`if [ -s %s/skip-prestop-checks ]; then exit 0; fi; `+
		`rabbitmq-upgrade await_online_quorum_plus_one -t %d; `+
		`rabbitmq-upgrade drain -t %d`,
	podInfoDir, quorumWaitSeconds, drainSeconds)

// containerSecurityContext is as strict as the official image allows, which
// meets the "restricted" Pod Security Standard (the tests check it). A
// read-only root filesystem is not possible with the official image: it
// expects to write at run time under /etc/rabbitmq, /var/log/rabbitmq and
// /tmp/rabbitmq-ssl, which its Dockerfile makes world-writable for that
// reason, and the Erlang runtime and CLI tools write elsewhere too; the image
// neither documents nor supports replacing every such path with an emptyDir.
func containerSecurityContext() *corev1ac.SecurityContextApplyConfiguration {
	return corev1ac.SecurityContext().
		WithRunAsNonRoot(true).
		WithAllowPrivilegeEscalation(false).
		WithReadOnlyRootFilesystem(false).
		WithCapabilities(corev1ac.Capabilities().WithDrop("ALL"))
}

func containerPort(name string, port int32) *corev1ac.ContainerPortApplyConfiguration {
	return corev1ac.ContainerPort().
		WithName(name).
		WithContainerPort(port).
		WithProtocol(corev1.ProtocolTCP)
}

// fieldRef selects a field of the pod. The selector is an atomic struct, so
// the apiVersion the server defaults in is the operator's: it is set here
// so that the stored selector equals the built one.
func fieldRef(path string) *corev1ac.ObjectFieldSelectorApplyConfiguration {
	return corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath(path)
}

func secretEnv(name, secret, key string) *corev1ac.EnvVarApplyConfiguration {
	return corev1ac.EnvVar().WithName(name).WithValueFrom(corev1ac.EnvVarSource().
		WithSecretKeyRef(corev1ac.SecretKeySelector().WithName(secret).WithKey(key)))
}

// tcpProbe has every timing field set, so the operator owns, and rolls back
// edits to, all of them; all but initialDelaySeconds, whose zero the API
// leaves out of the stored object, so it could never compare equal.
func tcpProbe(port string, periodSeconds, timeoutSeconds, failureThreshold int32) *corev1ac.ProbeApplyConfiguration {
	return corev1ac.Probe().
		WithTCPSocket(corev1ac.TCPSocketAction().WithPort(intstr.FromString(port))).
		WithPeriodSeconds(periodSeconds).
		WithTimeoutSeconds(timeoutSeconds).
		WithSuccessThreshold(1).
		WithFailureThreshold(failureThreshold)
}

// execProbe runs command in the container, every timing field set as in
// tcpProbe. The command targets the container's own node: the CLI reads
// RABBITMQ_NODENAME and RABBITMQ_USE_LONGNAME from the container's
// environment, as the preStop hook's commands do.
func execProbe(command []string, periodSeconds, timeoutSeconds, failureThreshold int32) *corev1ac.ProbeApplyConfiguration {
	return corev1ac.Probe().
		WithExec(corev1ac.ExecAction().WithCommand(command...)).
		WithPeriodSeconds(periodSeconds).
		WithTimeoutSeconds(timeoutSeconds).
		WithSuccessThreshold(1).
		WithFailureThreshold(failureThreshold)
}

// applyResources converts resource requirements into their apply
// configuration, copying the maps so the built object never aliases the
// caller's input.
func applyResources(r corev1.ResourceRequirements) *corev1ac.ResourceRequirementsApplyConfiguration {
	out := corev1ac.ResourceRequirements()
	if len(r.Requests) > 0 {
		out.WithRequests(r.Requests.DeepCopy())
	}
	if len(r.Limits) > 0 {
		out.WithLimits(r.Limits.DeepCopy())
	}
	for _, c := range r.Claims {
		claim := corev1ac.ResourceClaim().WithName(c.Name)
		if c.Request != "" {
			claim.WithRequest(c.Request)
		}
		out.WithClaims(claim)
	}
	return out
}

// configHash is the hash of the ConfigMap's data, as ConnectionHash computes
// it for a Secret.
func configHash(b Broker) string {
	data := configData(b)
	raw := make(map[string][]byte, len(data))
	for k, v := range data {
		raw[k] = []byte(v)
	}
	return hashData(raw)
}
