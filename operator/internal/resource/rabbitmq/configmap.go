package rabbitmq

import (
	"fmt"
	"strings"

	"github.com/courier-dev/courier/operator/internal/metadata"
	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
)

// Ports every node listens on.
const (
	// AMQPPort is the AMQP 0-9-1 listener services connect to.
	AMQPPort int32 = 5672
	// ManagementPort serves the management UI and the HTTP API the operator
	// declares topology through.
	ManagementPort int32 = 15672
	// PrometheusPort serves /metrics from the rabbitmq_prometheus plugin.
	PrometheusPort int32 = 15692
	// EPMDPort is the Erlang port mapper, which nodes and CLI tools ask for
	// a node's distribution port.
	EPMDPort int32 = 4369
	// DistributionPort carries inter-node and CLI traffic (Erlang
	// distribution); RabbitMQ uses the AMQP port + 20000.
	DistributionPort int32 = 25672
)

// Port names on the containers and Services.
const (
	// PortNameAMQP names AMQPPort.
	PortNameAMQP = "amqp"
	// PortNameManagement names ManagementPort.
	PortNameManagement = "management"
	// PortNamePrometheus names PrometheusPort, so a ServiceMonitor can select it.
	PortNamePrometheus = "prometheus"
	// PortNameEPMD names EPMDPort.
	PortNameEPMD = "epmd"
	// PortNameDistribution names DistributionPort.
	PortNameDistribution = "erlang-dist"
)

// Keys of the broker ConfigMap.
const (
	// ConfigKeyRabbitMQConf holds rabbitmq.conf.
	ConfigKeyRabbitMQConf = "rabbitmq.conf"
	// ConfigKeyEnabledPlugins holds the enabled_plugins file.
	ConfigKeyEnabledPlugins = "enabled_plugins"
)

// Plugins are the plugins every node runs. All three ship with RabbitMQ; the
// official image only enables them.
var Plugins = []string{
	// The HTTP API the operator declares topology and users through.
	"rabbitmq_management",
	// Peer discovery through the Kubernetes API.
	"rabbitmq_peer_discovery_k8s",
	// Prometheus metrics on PrometheusPort.
	"rabbitmq_prometheus",
}

// Memory settings. RabbitMQ 3.x computes its memory alarm from the host's
// memory unless told otherwise, which in a container means the node's
// memory, not the pod's limit; the kernel would then kill the pod long
// before the alarm throttled publishers.
const (
	// memoryHighWatermark is the fraction of the available memory at which
	// RabbitMQ blocks publishers (RabbitMQ 3.x's default).
	memoryHighWatermark = "0.4"
	// maxMemoryHeadroom caps the part of the limit kept back for the Erlang
	// VM's own allocations, which the watermark does not cover.
	maxMemoryHeadroom int64 = 2 << 30
)

// availableMemory is what RabbitMQ is told it may use: the container's
// memory limit less a headroom of 20%, at most 2 GiB, as the RabbitMQ
// cluster operator does. Zero means no limit, and RabbitMQ measures itself.
func availableMemory(r corev1.ResourceRequirements) int64 {
	limit, ok := r.Limits[corev1.ResourceMemory]
	if !ok || limit.IsZero() {
		return 0
	}
	bytes := limit.Value()
	return bytes - min(bytes/5, maxMemoryHeadroom)
}

// rabbitmqConf renders rabbitmq.conf. Every key is checked against the
// installed RabbitMQ's configuration schema in the tests. It holds no
// secrets: the default user comes from the admin Secret through the
// environment, so the ConfigMap can be read by anyone who can read the
// namespace's configuration.
func rabbitmqConf(b Broker) string {
	n := metadata.BrokerNamesFor(b.App)
	var conf strings.Builder
	comment := func(text string) { conf.WriteString("# " + text + "\n") }
	set := func(key, value string) { conf.WriteString(key + " = " + value + "\n") }

	comment(fmt.Sprintf("Written by the Courier operator for the MicroserviceApp %s; edits are overwritten.", b.App))
	set("cluster_name", b.App)

	comment("Nodes find each other in the endpoints of the headless Service through the Kubernetes API.")
	set("cluster_formation.peer_discovery_backend", "rabbit_peer_discovery_k8s")
	set("cluster_formation.k8s.host", "kubernetes.default.svc."+b.clusterDomain())
	set("cluster_formation.k8s.address_type", "hostname")
	set("cluster_formation.k8s.service_name", n.Headless)
	set("cluster_formation.k8s.hostname_suffix", "."+b.nodeDomain())
	comment("A node missing from the endpoints may be restarting with its data: never remove it.")
	set("cluster_formation.node_cleanup.only_log_warning", "true")
	comment("A node on the minority side of a partition pauses rather than diverging.")
	set("cluster_partition_handling", "pause_minority")
	comment("Spread quorum queue leaders over the nodes.")
	set("queue_leader_locator", "balanced")

	comment("No user is confined to localhost. There is no guest user: the default user is the")
	comment("administrator from the admin Secret (RABBITMQ_DEFAULT_USER and RABBITMQ_DEFAULT_PASS).")
	set("loopback_users", "none")

	set("listeners.tcp.default", fmt.Sprint(AMQPPort))
	set("management.tcp.port", fmt.Sprint(ManagementPort))
	set("prometheus.tcp.port", fmt.Sprint(PrometheusPort))

	comment("Block publishers before the container reaches its memory limit.")
	set("vm_memory_high_watermark.relative", memoryHighWatermark)
	if mem := availableMemory(b.resources()); mem > 0 {
		comment("The container's memory limit less headroom for the Erlang VM, in bytes.")
		set("total_memory_available_override_value", fmt.Sprint(mem))
	}

	comment("Log to standard output only, for kubectl logs.")
	set("log.console", "true")
	set("log.console.level", "info")
	set("log.file", "false")
	return conf.String()
}

// enabledPlugins renders the enabled_plugins file, an Erlang term.
func enabledPlugins() string {
	return "[" + strings.Join(Plugins, ",") + "].\n"
}

// configData is the ConfigMap's data; its hash is on the pod template.
func configData(b Broker) map[string]string {
	return map[string]string{
		ConfigKeyRabbitMQConf:   rabbitmqConf(b),
		ConfigKeyEnabledPlugins: enabledPlugins(),
	}
}

// ConfigMap holds rabbitmq.conf and enabled_plugins. RabbitMQ reads both only
// at boot, so the StatefulSet's pod template carries their hash
// (AnnotationConfigHash) and a change rolls the nodes one by one.
func ConfigMap(b Broker) *corev1ac.ConfigMapApplyConfiguration {
	return corev1ac.ConfigMap(metadata.BrokerNamesFor(b.App).ConfigMap, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithData(configData(b))
}
