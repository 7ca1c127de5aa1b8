package nats

import (
	"fmt"
	"strings"

	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

// Ports.
const (
	ClientPort  int32 = 4222
	ClusterPort int32 = 6222
	MonitorPort int32 = 8222
	MetricsPort int32 = 7777

	PortNameClient  = "nats"
	PortNameCluster = "cluster"
	PortNameMonitor = "monitor"
	PortNameMetrics = "metrics"
)

// ConfigKey is the ConfigMap key of nats.conf.
const ConfigKey = "nats.conf"

// Paths in the server container.
const (
	configDir = "/etc/nats"
	dataDir   = "/data"
	pidDir    = "/var/run/nats"
	pidFile   = pidDir + "/nats.pid"
)

// lameDuckSeconds is how long a stopping server takes to move its clients
// to the others (lame duck mode) before it shuts down, and
// lameDuckGraceSeconds how long it waits, no longer accepting clients,
// before it starts closing them.
const (
	lameDuckSeconds      = 30
	lameDuckGraceSeconds = 10
)

// Config renders nats.conf: operator mode trusting keys' operator, the
// system account preloaded into a full resolver whose account JWTs live on
// the data volume (the operator pushes one per app; deletes are allowed so
// that deleting an app deletes its account), JetStream on the data volume,
// and, from three servers up, a cluster whose routes name every server.
// server_name comes from the pod name, which the StatefulSet keeps stable,
// so a restarted server keeps its JetStream identity.
func Config(b Broker, keys natsbroker.Managed) string {
	var c strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&c, format+"\n", args...) }
	w("# Rendered by the Courier operator; changes are overwritten.")
	w("port: %d", ClientPort)
	w("http_port: %d", MonitorPort)
	w("server_name: $POD_NAME")
	w("pid_file: %s", pidFile)
	w("lame_duck_duration: %ds", lameDuckSeconds)
	w("lame_duck_grace_period: %ds", lameDuckGraceSeconds)
	w("jetstream {")
	w("  store_dir: %s/jetstream", dataDir)
	w("}")
	if b.clustered() {
		w("cluster {")
		w("  name: %s", metadata.BrokerNamesFor(b.App).StatefulSet)
		w("  port: %d", ClusterPort)
		w("  routes: [")
		for i := range b.Replicas {
			w("    %s", b.routeURL(i))
		}
		w("  ]")
		w("  connect_retries: 120")
		w("}")
	}
	w("operator: %s", keys.OperatorJWT)
	w("system_account: %s", keys.SystemAccount())
	w("resolver {")
	w("  type: full")
	w("  dir: %s/jwt", dataDir)
	w("  allow_delete: true")
	w("  interval: \"2m\"")
	w("}")
	w("resolver_preload {")
	w("  %s: %s", keys.SystemAccount(), keys.SystemAccountJWT)
	w("}")
	return c.String()
}

// ConfigMap holds nats.conf. It holds only public material: JWTs are
// signed, not secret.
func ConfigMap(b Broker, keys natsbroker.Managed) *corev1ac.ConfigMapApplyConfiguration {
	return corev1ac.ConfigMap(metadata.BrokerNamesFor(b.App).ConfigMap, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithData(map[string]string{ConfigKey: Config(b, keys)})
}

// AdminSecret holds what the operator administers the system with
// (natsbroker.Managed.SecretData): the operator and system account seeds
// and a system user's creds. The servers do not mount it.
func AdminSecret(b Broker, keys natsbroker.Managed) *corev1ac.SecretApplyConfiguration {
	return corev1ac.Secret(metadata.BrokerNamesFor(b.App).AdminSecret, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithType("Opaque").
		WithData(keys.SecretData())
}

// configHash is the hash of the ConfigMap's data, so a changed nats.conf
// rolls the servers.
func configHash(b Broker, keys natsbroker.Managed) string {
	return rabbitmq.ConnectionHash(map[string][]byte{ConfigKey: []byte(Config(b, keys))})
}
