package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The literal defaults in the markers below are the values of
// services/kit/contract (HTTPPort, AdminPort, MetricsPath, the port names).
// Markers cannot reference Go constants, so TestDefaultsFollowContract (in
// the controller's envtest suite) and TestPortNamesFollowContract keep the
// two in step.

// MicroserviceAppSpec declares the services of one application, the queues
// between them and the broker that carries the queues.
//
// The cross-reference rules have fixed messages: a messageExpression naming
// the offending entries exceeds the API server's CEL cost budget.
// +kubebuilder:validation:XValidation:rule="self.services.all(s, !has(s.calls) || s.calls.all(c, self.services.exists(t, t.name == c)))",fieldPath=".services",message="spec.services[].calls must name services of this app"
// +kubebuilder:validation:XValidation:rule="self.services.all(s, !has(s.publishes) || s.publishes.all(q, has(self.queues) && self.queues.exists(x, x.name == q)))",fieldPath=".services",message="spec.services[].publishes must name queues in spec.queues"
// +kubebuilder:validation:XValidation:rule="self.services.all(s, !has(s.consumes) || s.consumes.all(q, has(self.queues) && self.queues.exists(x, x.name == q)))",fieldPath=".services",message="spec.services[].consumes must name queues in spec.queues"
// +kubebuilder:validation:XValidation:rule="!has(self.queues) || self.queues.all(q, self.services.exists(s, has(s.publishes) && q.name in s.publishes))",fieldPath=".queues",message="every queue in spec.queues needs a service that publishes to it (spec.services[].publishes)"
// +kubebuilder:validation:XValidation:rule="!has(self.queues) || self.queues.all(q, self.services.exists(s, has(s.consumes) && q.name in s.consumes))",fieldPath=".queues",message="every queue in spec.queues needs a service that consumes it (spec.services[].consumes)"
// +kubebuilder:validation:XValidation:rule="!has(self.queues) || size(self.queues) == 0 || has(self.broker)",fieldPath=".queues",message="spec.queues needs spec.broker"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.broker) || has(self.broker)",fieldPath=".broker",message="spec.broker cannot be removed once set"
// +kubebuilder:validation:XValidation:rule="!has(self.broker) || self.broker.kind != 'nats' || !has(self.queues) || self.queues.all(q, !has(q.type))",fieldPath=".queues",message="spec.queues[].type (classic or quorum) is only for kind rabbitmq; a nats broker (spec.broker.kind) keeps every queue in one JetStream stream"
// +kubebuilder:validation:XValidation:rule="!has(self.broker) || self.broker.kind != 'nats' || !has(self.queues) || self.queues.all(q, self.queues.all(p, has(p.messageTTL) == has(q.messageTTL) && (!has(q.messageTTL) || duration(p.messageTTL) == duration(q.messageTTL))))",fieldPath=".queues",message="spec.queues[].messageTTL must be the same on every queue with kind nats: the app's queues share one JetStream stream, whose max age is one value"
// +kubebuilder:validation:XValidation:rule="!has(self.broker) || self.broker.kind != 'nats' || !has(self.queues) || self.queues.all(q, self.queues.all(p, has(p.maxLength) == has(q.maxLength) && (!has(q.maxLength) || p.maxLength == q.maxLength)))",fieldPath=".queues",message="spec.queues[].maxLength must be the same on every queue with kind nats: the app's queues share one JetStream stream, whose per-subject limit is one value"
//
// A queue named "<q>-max-deliveries" beside a queue "<q>" would give two
// variables one name: QUEUE_<Q>_MAX_DELIVERIES is the first queue's
// physical name (contract.QueueEnv) and the second one's delivery limit
// (contract.QueueMaxDeliveriesEnv), and the Deployment of a service using
// both could not be written. The pair is refused whether or not <q> sets
// maxDeliveries today, so that adding the limit later, or a default limit,
// never turns a valid app into a broken one. No other pair of derived names
// can collide: queue and service names are DNS labels, which envToken maps
// one to one, and the QUEUE_ and SERVICE_ prefixes differ.
// +kubebuilder:validation:XValidation:rule="!has(self.queues) || self.queues.all(q, !self.queues.exists(p, q.name == p.name + '-max-deliveries'))",fieldPath=".queues",message="spec.queues[].name cannot be another queue's name followed by -max-deliveries: QUEUE_<NAME>_MAX_DELIVERIES would hold both that queue's physical name and the other queue's delivery limit"
type MicroserviceAppSpec struct {
	// services are the workloads of the app. Each becomes a Deployment and a
	// Service named "<app>-<service>", plus a PodDisruptionBudget when it runs
	// more than one replica and a PersistentVolumeClaim
	// "<app>-<service>-data" when it has storage.
	//
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +required
	Services []Service `json:"services"`

	// broker is the message broker that carries the app's queues: one the
	// operator runs for the app (managed) or one that already exists
	// (external). Required when the app has queues. Once set it cannot be
	// removed, nor can its kind change or it switch between managed and
	// external: the queues, their messages and the services' users live on
	// it.
	//
	// +optional
	Broker *Broker `json:"broker,omitempty"`

	// queues are the app's logical queues. Services name them in publishes
	// and consumes; every queue needs at least one publisher and one
	// consumer. On RabbitMQ, queue <q> of app <app> is the queue "<app>.<q>"
	// in the vhost "<app>", with its own exchange "<app>.<q>.exchange" and a
	// dead-letter queue "<app>.<q>.dlq".
	//
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Queues []Queue `json:"queues,omitempty"`

	// monitoring says who scrapes the app's metrics. The NetworkPolicies
	// the operator writes admit these pods to every service's admin port
	// (and to the port of spec.services[].metrics) and to a managed
	// broker's Prometheus port; nothing else from outside the app reaches
	// them, apart from the node's own traffic (kubelet probes), which
	// network plugins let through. Unset, every pod in the namespace named
	// "monitoring" may scrape. When the prometheus-operator's CRDs are
	// installed, it also labels the app's PodMonitor and PrometheusRule.
	//
	// +optional
	Monitoring *Monitoring `json:"monitoring,omitempty"`

	// tracing sends every service's spans to an OpenTelemetry collector.
	// Unset, the services export no spans (unless their own env sets the
	// standard OTEL_* variables).
	//
	// +optional
	Tracing *Tracing `json:"tracing,omitempty"`
}

// Tracing says where the services export their spans.
type Tracing struct {
	// otlpEndpoint is the base URL of an OTLP/HTTP collector, such as
	// "http://otel-collector.observability.svc:4318". Every service's
	// container gets it as OTEL_EXPORTER_OTLP_ENDPOINT, and the service kit
	// sends its spans to <otlpEndpoint>/v1/traces, named after the service
	// (service.name) and the app (service.namespace). A service's own env
	// entry of that name wins.
	//
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s/?#]+(/\S*)?$`
	// +required
	OTLPEndpoint string `json:"otlpEndpoint"`
}

// Monitoring selects the pods that may scrape an app's metrics: those
// podSelector selects in the namespaces namespaceSelector selects; and the
// labels by which a prometheus-operator Prometheus selects the app's
// PodMonitor and PrometheusRule.
//
// +kubebuilder:validation:XValidation:rule="!has(self.labels) || !self.labels.exists(k, k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/managed-by'])",fieldPath=".labels",message="spec.monitoring.labels cannot set app.kubernetes.io/name, app.kubernetes.io/instance or app.kubernetes.io/managed-by: the operator's own labels"
type Monitoring struct {
	// namespaceSelector selects the namespaces Prometheus runs in. Unset
	// means the namespace named "monitoring" (the label
	// kubernetes.io/metadata.name=monitoring, which the API server sets on
	// every namespace); {} means every namespace.
	//
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// podSelector narrows the scraping pods within those namespaces, such
	// as app.kubernetes.io/name=prometheus. Unset means every pod there.
	//
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`

	// labels are put on the PodMonitor "<app>-services" and the
	// PrometheusRule "<app>-courier-alerts" that the operator writes for
	// the app when the prometheus-operator's CRDs (monitoring.coreos.com)
	// are installed, so that the Prometheus meant to scrape the app
	// selects them. Set, they replace the operator's --monitoring-labels
	// (by default release=kube-prometheus-stack, which kube-prometheus-stack
	// selects unless told otherwise). They cannot set the operator's own
	// app.kubernetes.io/name, app.kubernetes.io/instance and
	// app.kubernetes.io/managed-by.
	//
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
}

// BrokerKind names a message broker.
//
// +kubebuilder:validation:Enum=rabbitmq;nats
type BrokerKind string

// Broker kinds, the values services see in BROKER_KIND
// (contract.BrokerRabbitMQ, contract.BrokerNATS).
const (
	// BrokerRabbitMQ is RabbitMQ 3.x with the management plugin.
	BrokerRabbitMQ BrokerKind = "rabbitmq"
	// BrokerNATS is NATS JetStream in operator mode (JWT and nkeys).
	BrokerNATS BrokerKind = "nats"
)

// Broker is where an app's queues live and who administers it: exactly one
// of managed and external.
//
// +kubebuilder:validation:XValidation:rule="has(self.managed) != has(self.external)",message="spec.broker must set exactly one of managed and external"
// +kubebuilder:validation:XValidation:rule="self.kind == oldSelf.kind",fieldPath=".kind",message="spec.broker.kind cannot change once set"
// +kubebuilder:validation:XValidation:rule="has(self.managed) == has(oldSelf.managed)",message="spec.broker cannot switch between managed and external once set"
// +kubebuilder:validation:XValidation:rule="self.kind == 'nats' || !has(self.managed) || !has(self.managed.exporterImage)",fieldPath=".managed.exporterImage",message="spec.broker.managed.exporterImage is only for kind nats: RabbitMQ serves its own metrics"
// +kubebuilder:validation:XValidation:rule="self.kind != 'nats' || !has(self.managed) || !has(self.managed.replicas) || self.managed.replicas != 2",fieldPath=".managed.replicas",message="spec.broker.managed.replicas cannot be 2 with kind nats: a JetStream cluster needs a majority, so 0, 1, or 3 and more servers"
type Broker struct {
	// kind is the broker's kind: "rabbitmq" (RabbitMQ 3.x: a vhost per
	// app, a user per service) or "nats" (NATS JetStream in operator mode:
	// an account per app, a user per service, one stream COURIER_<APP>
	// with a durable consumer per queue). It cannot change once set.
	//
	// +required
	Kind BrokerKind `json:"kind"`

	// managed makes the operator run the broker for this app: a RabbitMQ
	// StatefulSet "<app>-broker" whose nodes form one cluster, reached
	// through the Service "<app>-broker" (AMQP 5672, management 15672,
	// Prometheus 15692), with generated administrator credentials and Erlang
	// cookie in the Secret "<app>-broker-admin". With a managed broker the
	// app's name may have at most 45 characters, and no service may be named
	// "broker" or "broker-nodes".
	//
	// +optional
	Managed *ManagedBroker `json:"managed,omitempty"`

	// external points the operator at a broker that already runs. The
	// operator creates the app's vhost, topology and users on it with the
	// administrator credentials of secretRef. Apps sharing one external
	// broker must have distinct names: the vhost and the user names derive
	// from the app's name.
	//
	// +optional
	External *ExternalBroker `json:"external,omitempty"`
}

// ManagedBroker is a broker the operator runs for one app.
//
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",fieldPath=".storageClassName",message="spec.broker.managed.storageClassName is immutable"
// +kubebuilder:validation:XValidation:rule="!has(self.podLabels) || !self.podLabels.exists(k, k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/managed-by'])",fieldPath=".podLabels",message="spec.broker.managed.podLabels cannot set app.kubernetes.io/name, app.kubernetes.io/instance or app.kubernetes.io/managed-by: the operator's selector labels"
// +kubebuilder:validation:XValidation:rule="!has(self.podAnnotations) || !self.podAnnotations.exists(k, k.startsWith('prometheus.io/') || k.startsWith('courier.dev/'))",fieldPath=".podAnnotations",message="spec.broker.managed.podAnnotations cannot set prometheus.io/ or courier.dev/ keys: the operator sets them"
type ManagedBroker struct {
	// image is the broker's image. For rabbitmq: the official RabbitMQ
	// 3.x image with the management plugin, or one built on it (the pods
	// rely on its user, uid 999, and its paths); unset,
	// rabbitmq:3.13.7-management. For nats: a nats-server 2.x image that
	// runs nats-server with the pod's arguments and has it on its PATH
	// (the preStop hook runs `nats-server --signal`), as the official
	// alpine image does; unset, nats:2.15.2-alpine. The default is pinned,
	// so a broker changes version only when this field does.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:Pattern=`^\S+$`
	// +optional
	Image string `json:"image,omitempty"`

	// exporterImage is, for nats only, the image of the servers'
	// Prometheus exporter sidecar: natsio/prometheus-nats-exporter or one
	// taking its command line (-port, -varz, -jsz, -connz, -routez,
	// -healthz and the monitoring URL); unset,
	// natsio/prometheus-nats-exporter:0.16.0. RabbitMQ serves its own
	// metrics and has no sidecar.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:Pattern=`^\S+$`
	// +optional
	ExporterImage string `json:"exporterImage,omitempty"`

	// replicas is the number of RabbitMQ nodes. Three or more make quorum
	// queues the default and let them survive the loss of a node.
	//
	// It can grow but never shrink: a removed node stays a member of the
	// cluster, so after 3 -> 1 the remaining node sees a minority of its
	// cluster, pauses (cluster_partition_handling = pause_minority) and
	// the quorum queues lose their majority; only scaling back recovers it.
	// The one decrease allowed is 1 -> 0, which stops a single-node broker
	// and keeps its volume (the app is then not ready): a single node
	// needs no peer to start again, at 1 or at any larger count. A broker
	// of two or more nodes cannot be stopped this way, since nothing would
	// hold a scale-up from 0 to the count it had: delete the app (the
	// broker's volumes go with it) or keep it running.
	//
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:XValidation:rule="self >= oldSelf || (oldSelf == 1 && self == 0)",message="spec.broker.managed.replicas cannot decrease (only 1 -> 0, which stops a single-node broker): the removed RabbitMQ nodes stay cluster members, so the remaining ones lose the quorum queues' majority and pause (pause_minority)"
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// storageSize is each node's persistent volume. Immutable: a
	// StatefulSet's volume claims cannot change.
	//
	// +kubebuilder:default="10Gi"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.broker.managed.storageSize is immutable"
	// +optional
	StorageSize *resource.Quantity `json:"storageSize,omitempty"`

	// storageClassName is the storage class of the nodes' volumes; unset,
	// the cluster's default class. Immutable like storageSize.
	//
	// +kubebuilder:validation:MinLength=1
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// resources are the RabbitMQ container's compute resources. Unset, a
	// node requests 200m CPU and 1Gi memory, limited to 1Gi memory and no
	// CPU limit (throttling stalls the Erlang schedulers). The memory limit
	// also sets RabbitMQ's memory alarm.
	//
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// PodOptions are the broker pods' scheduling settings, pull Secrets,
	// extra labels and annotations. The nodes keep their own
	// ServiceAccount, which peer discovery is granted to. An affinity
	// without podAntiAffinity keeps the default one, which prefers one
	// RabbitMQ node per Kubernetes node.
	PodOptions `json:",inline"`
}

// Keys of the Secret an external broker's secretRef names.
const (
	// ExternalManagementURLKey holds the base URL of the RabbitMQ HTTP API,
	// without /api: "http://rabbitmq.messaging.svc:15672".
	ExternalManagementURLKey = "management-url"
	// ExternalUsernameKey holds the administrator's user name. It needs the
	// "administrator" tag: the operator creates vhosts, users and
	// permissions.
	ExternalUsernameKey = "username"
	// ExternalPasswordKey holds the administrator's password.
	ExternalPasswordKey = "password"
)

// ExternalBroker is a broker the operator does not run.
type ExternalBroker struct {
	// secretRef names a Secret in the app's namespace holding what the
	// operator administers the broker with. For rabbitmq: the keys
	// "management-url" (the HTTP API's base URL without /api, such as
	// "http://rabbitmq.messaging.svc:15672"), "username" and "password".
	// For nats (operator mode with a full resolver): "url" (the client URL
	// the operator dials), "operator-signing-key" (the seed of the operator
	// key or of one of its signing keys) and "system-user.creds" (the
	// creds file of a system account user). A change to the Secret is
	// picked up at once.
	//
	// +required
	SecretRef SecretReference `json:"secretRef"`

	// host is the host the services dial, such as
	// "rabbitmq.messaging.svc" (AMQP) or "nats.messaging.svc" (NATS). For
	// rabbitmq the operator dials it too, to count a retained quorum
	// queue's messages when the app is deleted.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([-.A-Za-z0-9]*[A-Za-z0-9])?$`
	// +required
	Host string `json:"host"`

	// port is the port the services dial; unset, the kind's: 5672 for
	// rabbitmq, 4222 for nats.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
}

// SecretReference names a Secret in the app's namespace.
type SecretReference struct {
	// name is the Secret's name.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`
}

// QueueType is the type of a RabbitMQ queue.
//
// +kubebuilder:validation:Enum=classic;quorum
type QueueType string

// Queue types.
const (
	// QueueClassic is a classic queue, held by one node.
	QueueClassic QueueType = "classic"
	// QueueQuorum is a quorum queue, replicated over the broker's nodes.
	QueueQuorum QueueType = "quorum"
)

// DeletionPolicy says what happens to a queue when its app is deleted.
//
// +kubebuilder:validation:Enum=retain;delete
type DeletionPolicy string

// Deletion policies.
const (
	// DeletionRetain deletes the queue only if it is empty; a queue still
	// holding messages is kept, with its vhost, so an app created again under
	// the same name finds them.
	DeletionRetain DeletionPolicy = "retain"
	// DeletionDelete deletes the queue and its dead letters with the app.
	DeletionDelete DeletionPolicy = "delete"
)

// Queue is one logical queue of the app.
type Queue struct {
	// name is the logical name services use, such as "emails". A service
	// reads its physical name from the variable QUEUE_<NAME> (the name
	// upper-cased, '-' turned into '_').
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	// +required
	Name string `json:"name"`

	// type is "classic" or "quorum". Unset, a new queue is a quorum queue on
	// every broker, one node included: quorum queues count deliveries, so
	// maxDeliveries dead-letters a message that crashes its consumer. A
	// queue that exists keeps the type it was declared with, as
	// status.queues[].type shows. A queue's type
	// cannot change once it exists on the broker: the app reports
	// TopologyReady=False (DeclareFailed) until the queue is deleted by hand.
	//
	// +optional
	Type QueueType `json:"type,omitempty"`

	// maxDeliveries is the number of delivery attempts after which a message
	// is dead-lettered. The broker enforces it on quorum queues; on classic
	// queues only the consumer can (the service kit stops after its own
	// limit, 5 by default). Unset, the broker sets no limit.
	//
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxDeliveries *int32 `json:"maxDeliveries,omitempty"`

	// messageTTL dead-letters a message that waited longer than this, such
	// as "24h". At least 1ms; unset, messages never expire.
	//
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms')",message="messageTTL must be at least 1ms"
	// +optional
	MessageTTL *metav1.Duration `json:"messageTTL,omitempty"`

	// maxLength caps the messages ready in the queue; a full queue refuses
	// new messages, and publishers retry. Unset, no cap.
	//
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxLength *int64 `json:"maxLength,omitempty"`

	// deletionPolicy says what happens to the queue and its dead letters
	// when the app is deleted: "retain" (the default) deletes them only when
	// empty, keeping a queue that holds messages (and the app's vhost) for
	// an app created again under the same name; "delete" deletes them with
	// their messages. It matters on an external broker: a managed broker is
	// deleted with its app, volumes included.
	//
	// +kubebuilder:default=retain
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`
}

// Service declares one workload of the app: its image and ports, how it is
// run, which other services of the app it calls and which queues it uses.
//
// +kubebuilder:validation:XValidation:rule="self.httpPort != self.adminPort",fieldPath=".adminPort",message="adminPort must differ from httpPort"
// +kubebuilder:validation:XValidation:rule="!(self.name in ['broker', 'broker-nodes'])",fieldPath=".name",message="spec.services[].name: broker and broker-nodes are reserved for the managed broker's objects"
// +kubebuilder:validation:XValidation:rule="!has(self.calls) || !(self.name in self.calls)",fieldPath=".calls",message="calls must not name the service itself"
// +kubebuilder:validation:XValidation:rule="!has(self.storage) || !has(self.replicas) || self.replicas <= 1",fieldPath=".replicas",message="spec.services[].replicas must be 0 or 1 with spec.services[].storage: a ReadWriteOnce volume holds one pod's data"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.storage) || has(self.storage)",fieldPath=".storage",message="spec.services[].storage cannot be removed once set: remove the service to delete its volume"
// +kubebuilder:validation:XValidation:rule="!has(self.podLabels) || !self.podLabels.exists(k, k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/managed-by'])",fieldPath=".podLabels",message="spec.services[].podLabels cannot set app.kubernetes.io/name, app.kubernetes.io/instance or app.kubernetes.io/managed-by: the operator's selector labels"
// +kubebuilder:validation:XValidation:rule="!has(self.podAnnotations) || !self.podAnnotations.exists(k, k.startsWith('prometheus.io/') || k.startsWith('courier.dev/'))",fieldPath=".podAnnotations",message="spec.services[].podAnnotations cannot set prometheus.io/ or courier.dev/ keys: the operator sets them (spec.services[].metrics changes the scrape path and port)"
type Service struct {
	// name identifies the service within the app. It is a DNS-1035 label
	// (lower-case letters, digits and '-', starting with a letter) and, joined
	// to the app's name as "<app>-<name>", names the service's objects.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=62
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	// +required
	Name string `json:"name"`

	// image is the container image reference, such as
	// "ghcr.io/courier-dev/users:1.0.0".
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:Pattern=`^\S+$`
	// +required
	Image string `json:"image"`

	// imagePullPolicy is the container's image pull policy. Unset, the
	// cluster's default applies: Always for ":latest" or untagged images,
	// IfNotPresent otherwise.
	//
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// replicas is the number of pods. Zero scales the service down and keeps
	// its Service (and its volume). More than one adds a PodDisruptionBudget
	// that keeps all but one pod up through voluntary disruptions; a service
	// with storage runs at most one.
	//
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// httpPort is the container port of the service's public API, named
	// "http" on the container and the Service. Callers reach it through the
	// SERVICE_<NAME>_URL variable.
	//
	// +kubebuilder:default=8080
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	HTTPPort int32 `json:"httpPort,omitempty"`

	// adminPort is the container port of /livez, /readyz and /metrics, named
	// "admin", kept off the public port. It must differ from httpPort.
	//
	// +kubebuilder:default=9090
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	AdminPort int32 `json:"adminPort,omitempty"`

	// command replaces the image's entrypoint.
	//
	// +listType=atomic
	// +optional
	Command []string `json:"command,omitempty"`

	// args replaces the image's default arguments.
	//
	// +listType=atomic
	// +optional
	Args []string `json:"args,omitempty"`

	// env adds environment variables to the container. A variable named like
	// one the operator sets (COURIER_APP, HTTP_PORT, SERVICE_<NAME>_URL, ...)
	// replaces the operator's value.
	//
	// +listType=map
	// +listMapKey=name
	// +optional
	Env []EnvVar `json:"env,omitempty"`

	// envFrom adds every key of ConfigMaps or Secrets to the environment.
	// Variables in env, and those the operator sets, take precedence.
	//
	// +listType=atomic
	// +optional
	EnvFrom []EnvFromSource `json:"envFrom,omitempty"`

	// resources are the container's compute requests and limits. Unset, the
	// operator requests 50m CPU and 64Mi memory and limits the container to
	// 500m CPU and 256Mi memory.
	//
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// probes override the paths, ports and timing of the liveness, readiness
	// and startup probes, which otherwise follow the contract: /livez and
	// /readyz on the admin port.
	//
	// +optional
	Probes *Probes `json:"probes,omitempty"`

	// metrics overrides where Prometheus scrapes the service, which otherwise
	// is /metrics on the admin port.
	//
	// +optional
	Metrics *Metrics `json:"metrics,omitempty"`

	// calls names the other services of this app that this one sends
	// requests to. Each becomes a variable SERVICE_<NAME>_URL holding
	// "http://<app>-<name>.<namespace>.svc:<httpPort>", with <NAME> the
	// callee's name upper-cased and '-' turned into '_'. A service cannot call
	// itself.
	//
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=62
	// +optional
	Calls []string `json:"calls,omitempty"`

	// entryPoint marks a service that clients outside the app reach, such
	// as a gateway behind an Ingress or a LoadBalancer: its HTTP port
	// admits traffic from anywhere. A service without it admits on its
	// HTTP port only the pods of the services of this app that list it in
	// calls. The operator enforces both with a NetworkPolicy
	// "<app>-<service>", on network plugins that implement NetworkPolicies.
	//
	// +optional
	EntryPoint bool `json:"entryPoint,omitempty"`

	// publishes names the queues of spec.queues this service publishes to.
	// The service's broker user may write to exactly those queues'
	// exchanges, and nothing else.
	//
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	// +optional
	Publishes []string `json:"publishes,omitempty"`

	// consumes names the queues of spec.queues this service consumes. The
	// service's broker user may read exactly those queues, and nothing else.
	//
	// A service that publishes or consumes gets its own broker user, a
	// connection Secret "<app>-<service>-broker" (keys url, username,
	// password) and the variables BROKER_KIND, BROKER_URL (from the Secret's
	// url) and QUEUE_<NAME> per queue it uses.
	//
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	// +optional
	Consumes []string `json:"consumes,omitempty"`

	// storage gives the service a persistent volume, so what it stores
	// outlives its pods: a ReadWriteOnce PersistentVolumeClaim
	// "<app>-<service>-data" mounted at storage.mountPath, whose path the
	// service reads from COURIER_DATA_DIR. A ReadWriteOnce volume is
	// attached to one node and the data on it belongs to one process, so a
	// service with storage runs at most one replica, and its Deployment
	// replaces the pod (strategy Recreate) instead of starting the new one
	// beside the old. Once set, storage cannot be removed; the volume is
	// deleted with the service or the app.
	//
	// +optional
	Storage *Storage `json:"storage,omitempty"`

	// serviceAccountName runs the service's pods as this ServiceAccount of
	// the app's namespace, for cloud workload identity or a policy that
	// requires one. Unset, the namespace's default account runs them and
	// its token is not mounted (services never call the Kubernetes API);
	// set, the ServiceAccount's own automountServiceAccountToken decides.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// PodOptions are the service's pods' scheduling settings, pull Secrets,
	// extra labels and annotations.
	PodOptions `json:",inline"`
}

// PodOptions are what a cluster's policies and its nodes ask of a pod: where
// it may run, how it is spread, its priority, the Secrets its images are
// pulled with, and labels and annotations of the cluster's own. Each field
// is copied as it is into the pod template, beside what the operator sets.
type PodOptions struct {
	// imagePullSecrets name Secrets of the app's namespace holding
	// credentials for the registries of the pod's images.
	//
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	// +optional
	ImagePullSecrets []PullSecretReference `json:"imagePullSecrets,omitempty"`

	// nodeSelector restricts the pods to nodes with these labels.
	//
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations let the pods run on nodes with matching taints.
	//
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity holds the pods' node affinity and pod (anti-)affinity
	// scheduling rules, as in a Pod.
	//
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// topologySpreadConstraints spread the pods over zones or nodes, as in
	// a Pod. A constraint without labelSelector selects the pods of this
	// workload (its app.kubernetes.io/name and app.kubernetes.io/instance
	// labels), which is almost always what is meant.
	//
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// priorityClassName is the pods' PriorityClass.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// podLabels are added to the pods' labels. They cannot replace the
	// operator's labels app.kubernetes.io/name, app.kubernetes.io/instance
	// and app.kubernetes.io/managed-by, which select the pods.
	//
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	PodLabels map[string]string `json:"podLabels,omitempty"`

	// podAnnotations are added to the pods' annotations. They cannot set
	// keys under prometheus.io/ or courier.dev/, which the operator writes
	// (scrape settings, configuration and credential hashes).
	//
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`
}

// PullSecretReference names a Secret of the app's namespace holding registry
// credentials, as an entry of a Pod's imagePullSecrets.
type PullSecretReference struct {
	// name is the Secret's name.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`
}

// EnvVarNamePattern is the name a container's environment variable may
// have: one or more printable ASCII characters other than '=' (0x20 to 0x3C
// and 0x3E to 0x7E), what the API server requires of a Pod's env names and
// envFrom prefixes since Kubernetes 1.34 (RelaxedEnvironmentVariableValidation,
// k8s.io/apimachinery validation.IsRelaxedEnvVarName, which
// TestEnvVarNamePattern compares it with). The markers below spell it out:
// they cannot reference a constant.
//
// EnvVar and EnvFromSource copy corev1's types field for field (the JSON is
// the same, and a corev1 value converts with a plain conversion) only to
// carry this rule. It cannot be CEL on the corev1 types: their strings have
// no maxLength, so the API server estimates a regular expression over them
// beyond the rule cost budget, while an OpenAPI pattern has no such budget.
const EnvVarNamePattern = `^[ -<>-~]+$`

// EnvVar is an environment variable of a service's container, as
// corev1.EnvVar, with its name checked at admission.
type EnvVar struct {
	// name is the variable's name: one or more printable ASCII characters
	// other than '='.
	//
	// +kubebuilder:validation:Pattern=`^[ -<>-~]+$`
	// +required
	Name string `json:"name"`

	// value is the variable's value; $(VAR_NAME) references expand as in a
	// Pod (corev1.EnvVar). At most one of value and valueFrom.
	//
	// +optional
	Value string `json:"value,omitempty"`

	// valueFrom takes the value from a Secret, a ConfigMap, a field of the
	// pod or a resource of the container, as in a Pod.
	//
	// +optional
	ValueFrom *corev1.EnvVarSource `json:"valueFrom,omitempty"`
}

// EnvFromSource adds the keys of a ConfigMap or a Secret to a service's
// environment, as corev1.EnvFromSource, with its prefix checked at admission.
type EnvFromSource struct {
	// prefix is prepended to the name of each variable: printable ASCII
	// characters other than '='.
	//
	// +kubebuilder:validation:Pattern=`^[ -<>-~]*$`
	// +optional
	Prefix string `json:"prefix,omitempty"`

	// configMapRef names the ConfigMap to take the variables from.
	//
	// +optional
	ConfigMapRef *corev1.ConfigMapEnvSource `json:"configMapRef,omitempty"`

	// secretRef names the Secret to take the variables from.
	//
	// +optional
	SecretRef *corev1.SecretEnvSource `json:"secretRef,omitempty"`
}

// Storage is a service's persistent volume.
//
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",fieldPath=".storageClassName",message="spec.services[].storage.storageClassName is immutable"
// +kubebuilder:validation:XValidation:rule="quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0",fieldPath=".size",message="spec.services[].storage.size cannot shrink: a PersistentVolumeClaim only grows"
type Storage struct {
	// size is the volume's requested capacity, such as "1Gi". It may grow
	// when the storage class allows volume expansion; it cannot shrink.
	// At most 32 characters, which bounds the cost of the rules that parse it
	// (the XIntOrString marker lets controller-gen put the limit on a
	// quantity).
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="spec.services[].storage.size must be greater than zero"
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=32
	// +required
	Size resource.Quantity `json:"size"`

	// storageClassName is the volume's storage class; unset, the cluster's
	// default class. Immutable: a claim's class cannot change.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// mountPath is where the volume is mounted in the service's container,
	// and the value of its COURIER_DATA_DIR. It must be absolute and cannot
	// be "/" or "/tmp" (the container's scratch directory).
	//
	// +kubebuilder:default="/data"
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/\S*$`
	// +kubebuilder:validation:XValidation:rule="!(self in ['/', '/tmp', '/tmp/'])",message="spec.services[].storage.mountPath cannot be / or /tmp"
	// +optional
	MountPath string `json:"mountPath,omitempty"`
}

// PortName selects one of a service's two ports by its name.
//
// +kubebuilder:validation:Enum=http;admin
type PortName string

// The names of a service's ports, the same as contract.HTTPPortName and
// contract.AdminPortName.
const (
	// PortHTTP selects the httpPort.
	PortHTTP PortName = "http"
	// PortAdmin selects the adminPort.
	PortAdmin PortName = "admin"
)

// Probes overrides the probes of a service's container. An unset probe, and
// every unset field of a set one, keeps its default.
type Probes struct {
	// liveness restarts the container when it fails. Default: /livez on the
	// admin port every 10s, failing after 3 misses.
	//
	// +optional
	Liveness *Probe `json:"liveness,omitempty"`

	// readiness removes the pod from its Service's endpoints while it fails.
	// Default: /readyz on the admin port every 5s, failing after 3 misses.
	//
	// +optional
	Readiness *Probe `json:"readiness,omitempty"`

	// startup holds back the other probes until the container has started.
	// Default: /livez on the admin port every 2s, allowing 60s to start.
	//
	// +optional
	Startup *Probe `json:"startup,omitempty"`
}

// Probe overrides one HTTP probe.
type Probe struct {
	// path is the HTTP path requested.
	//
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/\S*$`
	// +optional
	Path string `json:"path,omitempty"`

	// port names the port probed: "admin" (the default) or "http".
	//
	// +optional
	Port PortName `json:"port,omitempty"`

	// initialDelaySeconds waits this long after the container starts before
	// the first probe.
	//
	// +kubebuilder:validation:Minimum=0
	// +optional
	InitialDelaySeconds *int32 `json:"initialDelaySeconds,omitempty"`

	// periodSeconds is the time between probes.
	//
	// +kubebuilder:validation:Minimum=1
	// +optional
	PeriodSeconds *int32 `json:"periodSeconds,omitempty"`

	// timeoutSeconds is how long one probe may take.
	//
	// +kubebuilder:validation:Minimum=1
	// +optional
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`

	// failureThreshold is how many consecutive failures make the probe fail.
	//
	// +kubebuilder:validation:Minimum=1
	// +optional
	FailureThreshold *int32 `json:"failureThreshold,omitempty"`
}

// Metrics overrides where Prometheus scrapes a service.
type Metrics struct {
	// path is the HTTP path of the metrics.
	//
	// +kubebuilder:default="/metrics"
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/\S*$`
	// +optional
	Path string `json:"path,omitempty"`

	// port names the port scraped: "admin" or "http".
	//
	// +kubebuilder:default=admin
	// +optional
	Port PortName `json:"port,omitempty"`
}

// MicroserviceAppStatus is what the operator observed when it last reconciled
// the app.
type MicroserviceAppStatus struct {
	// observedGeneration is the metadata.generation of the spec the operator
	// last reconciled to the end: successfully, or held back only by a name
	// conflict that needs a person (Stalled=True, NameConflict).
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions say whether the app is Ready and, when it is not, which
	// concern holds it back: ResourcesApplied (the operator wrote every
	// object), BrokerReady (the broker answers), TopologyReady (its vhost,
	// exchanges, queues, users and permissions match the spec),
	// CredentialsReady (every service that uses a queue has its connection
	// Secret and the broker accepts it) and ServicesAvailable (every
	// Deployment has rolled out). Each false condition's reason says what it
	// waits for. Reconciling (the app is making progress on its own) and
	// Stalled (it waits for a change by a person) follow kstatus, which
	// Flux, Argo CD and kpt read: at most one is true, both are false when
	// the app is Ready.
	//
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// services report each service's rollout, in the order of spec.services.
	//
	// +listType=map
	// +listMapKey=name
	// +optional
	Services []ServiceStatus `json:"services,omitempty"`

	// readyServices counts available services of all services, as
	// "available/total", for kubectl get.
	//
	// +optional
	ReadyServices string `json:"readyServices,omitempty"`

	// queues report each queue's type and, as the broker last counted them,
	// its depth, consumers and dead letters, in the order of the queues'
	// names. The operator polls them with a read-only monitoring user every
	// 30 seconds; the broker itself refreshes the counts every 5 seconds.
	//
	// +listType=map
	// +listMapKey=name
	// +optional
	Queues []QueueStatus `json:"queues,omitempty"`

	// queuedMessages is the sum of status.queues[].messages, for kubectl
	// get -o wide; unset when the app has no queues.
	//
	// +optional
	QueuedMessages *int64 `json:"queuedMessages,omitempty"`

	// deadLetters is the sum of status.queues[].deadLetters, for kubectl
	// get -o wide; unset when the app has no queues.
	//
	// +optional
	DeadLetters *int64 `json:"deadLetters,omitempty"`
}

// QueueStatus reports one queue as the broker last counted it.
type QueueStatus struct {
	// name is the queue's logical name in spec.queues.
	//
	// +required
	Name string `json:"name"`

	// type is the queue's type as declared: spec.queues[].type, or the
	// operator's default when that is unset.
	//
	// +optional
	Type QueueType `json:"type,omitempty"`

	// messages counts the messages ready or delivered and not yet
	// acknowledged.
	//
	// +optional
	Messages int64 `json:"messages"`

	// consumers counts the consumers attached to the queue.
	//
	// +optional
	Consumers int32 `json:"consumers"`

	// deadLetters counts the messages in the queue's dead-letter queue.
	//
	// +optional
	DeadLetters int64 `json:"deadLetters"`
}

// ServiceStatus reports one service's Deployment.
type ServiceStatus struct {
	// name is the service's name in spec.services.
	//
	// +required
	Name string `json:"name"`

	// image is the image the service's Deployment runs.
	//
	// +optional
	Image string `json:"image,omitempty"`

	// desiredReplicas is the number of pods asked for.
	//
	// +optional
	DesiredReplicas int32 `json:"desiredReplicas"`

	// readyReplicas is the number of pods passing their readiness probe.
	//
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`

	// available is true once the Deployment has rolled out the current spec
	// and every desired pod is available.
	//
	// +optional
	Available bool `json:"available"`
}

// MicroserviceApp is an application made of services that call each other.
// The operator runs each service as a Deployment with the contract's probes,
// metrics annotations and environment, and a Service in front of it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=msa,categories=courier
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Services",type=string,JSONPath=`.status.readyServices`
// +kubebuilder:printcolumn:name="Reason",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Queued",type=integer,priority=1,JSONPath=`.status.queuedMessages`
// +kubebuilder:printcolumn:name="Dead Letters",type=integer,priority=1,JSONPath=`.status.deadLetters`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter and ending with a letter or digit), since it prefixes the names of the app's objects, such as the Service <app>-<service>"
// +kubebuilder:validation:XValidation:rule="self.spec.services.all(s, size(self.metadata.name) + size(s.name) <= 62)",message="metadata.name and each spec.services[].name together must be at most 62 characters, since objects are named <app>-<service>"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.broker) || !has(self.spec.broker.managed) || size(self.metadata.name) <= 45",message="metadata.name must be at most 45 characters with a managed broker (spec.broker.managed), since its pods are named after it"
type MicroserviceApp struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	//
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the app's services.
	//
	// +required
	Spec MicroserviceAppSpec `json:"spec"`

	// status is what the operator observed.
	//
	// +optional
	Status MicroserviceAppStatus `json:"status,omitempty"`
}

// MicroserviceAppList is a list of MicroserviceApps.
//
// +kubebuilder:object:root=true
type MicroserviceAppList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the MicroserviceApps.
	Items []MicroserviceApp `json:"items"`
}
