// Package rabbitmq builds the objects of a managed RabbitMQ 3.x broker, one
// per MicroserviceApp: a StatefulSet whose nodes form one cluster through
// Kubernetes peer discovery, its headless and client Services, the admin
// Secret, the configuration, a PodDisruptionBudget and the RBAC peer
// discovery needs; and the per-service connection Secrets.
//
// Like package resource, every builder is a pure function of a plain input
// (Broker, Credentials, Connection): no client, no clock, no randomness, no
// mutation of the input. Builders return server-side apply configurations
// holding exactly the fields the operator owns. The input is independent of
// the MicroserviceApp API; the controller maps the custom resource into it.
package rabbitmq

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/podspec"
)

// DefaultImage is the broker image when Broker.Image is empty: the official
// image with the management plugin, pinned to the last open-source 3.13
// release so that a cluster never changes RabbitMQ version by itself.
const DefaultImage = "rabbitmq:3.13.7-management"

// DefaultClusterDomain is the cluster's DNS domain when Broker.ClusterDomain
// is empty.
const DefaultClusterDomain = "cluster.local"

// DefaultStorageSize is each node's volume when Broker.StorageSize is zero.
var DefaultStorageSize = resource.MustParse("10Gi")

// DefaultResources are a node's compute resources when Broker.Resources is
// empty. Memory request and limit are equal, as RabbitMQ recommends: the
// memory alarm is computed from the limit (see rabbitmqConf), so a node that
// is scheduled on its request can always reach its alarm threshold. 1 GiB
// puts the alarm at about 340 MB, well above the 100 to 150 MB an idle node
// with the management plugin uses. There is no CPU limit: throttling stalls
// the Erlang schedulers, and a stalled node misses inter-node heartbeats and
// is taken for partitioned.
func DefaultResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("200m"),
			corev1.ResourceMemory: resource.MustParse("1Gi"),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse("1Gi"),
		},
	}
}

// Broker is what the builders build a managed broker from. The controller
// fills it from the MicroserviceApp; zero values mean the documented default.
type Broker struct {
	// App is the MicroserviceApp's name; every object name derives from it
	// (metadata.BrokerNamesFor). At most metadata.MaxBrokerAppNameLength characters.
	App string
	// Namespace is the app's namespace, where every object goes.
	Namespace string
	// Image is the RabbitMQ 3.x image; empty means DefaultImage. It must be
	// the official image or one built on it: the pod relies on its user
	// (uid 999), its HOME (/var/lib/rabbitmq) and its shell.
	Image string
	// Replicas is the number of nodes. Zero is valid (the broker is scaled
	// down, its volumes kept); three or more let quorum queues survive the
	// loss of a node.
	Replicas int32
	// StorageSize is each node's persistent volume; zero means
	// DefaultStorageSize. The StatefulSet's volume claim templates are
	// immutable, so changing it after creation is rejected by the API server.
	StorageSize resource.Quantity
	// StorageClassName selects the volumes' storage class; nil means the
	// cluster's default. Immutable like StorageSize.
	StorageClassName *string
	// Resources are the RabbitMQ container's compute resources; empty means
	// DefaultResources. A memory limit also sets RabbitMQ's memory alarm.
	Resources corev1.ResourceRequirements
	// ClusterDomain is the cluster's DNS domain, part of every node name;
	// empty means DefaultClusterDomain.
	ClusterDomain string
	// Labels go on every object and on the pods, next to SelectorLabels
	// (which win on a clash). Pass the operator's labels (managed-by, name),
	// so that the operator's cache sees the objects.
	Labels map[string]string
	// Owner, when set, becomes every object's single owner reference. The
	// builders do not look into it; the controller passes a controller
	// reference to the MicroserviceApp so that deleting the app collects
	// the broker.
	Owner *metav1ac.OwnerReferenceApplyConfiguration
	// Network says who may reach the nodes; see NetworkPolicy.
	Network Network
	// Pod adds the user's scheduling settings, pull Secrets, labels and
	// annotations to the nodes' pods (see podspec.Apply).
	Pod podspec.Options
}

// Validate reports what would make the built objects invalid: a missing
// namespace, an app name too long for the derived names, a negative replica
// count.
func (b Broker) Validate() error {
	var errs []error
	if err := validateAppName(b.App); err != nil {
		errs = append(errs, err)
	}
	if b.Namespace == "" {
		errs = append(errs, errors.New("namespace is empty"))
	}
	if b.Replicas < 0 {
		errs = append(errs, fmt.Errorf("replicas is %d; it must not be negative", b.Replicas))
	}
	if b.StorageSize.Sign() < 0 {
		errs = append(errs, fmt.Errorf("storage size %s is negative", b.StorageSize.String()))
	}
	return errors.Join(errs...)
}

// owners are the owner references of every object: Owner, or none.
func (b Broker) owners() []*metav1ac.OwnerReferenceApplyConfiguration {
	if b.Owner == nil {
		return nil
	}
	return []*metav1ac.OwnerReferenceApplyConfiguration{b.Owner}
}

func (b Broker) image() string {
	if b.Image == "" {
		return DefaultImage
	}
	return b.Image
}

func (b Broker) storageSize() resource.Quantity {
	if b.StorageSize.IsZero() {
		return DefaultStorageSize
	}
	return b.StorageSize
}

func (b Broker) resources() corev1.ResourceRequirements {
	r := b.Resources
	if len(r.Requests) == 0 && len(r.Limits) == 0 && len(r.Claims) == 0 {
		return DefaultResources()
	}
	return r
}

func (b Broker) clusterDomain() string {
	if b.ClusterDomain == "" {
		return DefaultClusterDomain
	}
	return b.ClusterDomain
}

// nodeDomain is the DNS suffix of every node: a StatefulSet pod with the
// headless Service as its subdomain is "<pod>.<headless>.<ns>.svc.<domain>".
func (b Broker) nodeDomain() string {
	return metadata.BrokerNamesFor(b.App).Headless + "." + b.Namespace + ".svc." + b.clusterDomain()
}

// NodeName is the RabbitMQ node name of the pod with the given ordinal, as
// the node itself and peer discovery compute it.
func (b Broker) NodeName(ordinal int) string {
	return fmt.Sprintf("rabbit@%s-%d.%s", metadata.BrokerNamesFor(b.App).StatefulSet, ordinal, b.nodeDomain())
}

// AMQPHost is the host services and the operator dial for AMQP: the client
// Service's namespace-qualified name, which resolves from every namespace.
func (b Broker) AMQPHost() string {
	return metadata.BrokerNamesFor(b.App).Client + "." + b.Namespace + ".svc"
}

// ManagementURL is the base URL of the broker's HTTP API, without /api.
func (b Broker) ManagementURL() string {
	return fmt.Sprintf("http://%s:%d", b.AMQPHost(), ManagementPort)
}

// labels are the caller's labels plus the selector labels, which win: the
// pods must match the selector whatever the caller passed.
func (b Broker) labels() map[string]string {
	return podspec.Merge(metadata.BrokerSelectorLabels(b.App), b.Labels)
}

// validateAppName checks that every name derived from app is a valid object
// name and label value.
func validateAppName(app string) error {
	if app == "" {
		return fmt.Errorf("app name is empty")
	}
	if len(app) > metadata.MaxBrokerAppNameLength {
		return fmt.Errorf("app name %q is %d characters; a managed broker allows at most %d", app, len(app), metadata.MaxBrokerAppNameLength)
	}
	n := metadata.BrokerNamesFor(app)
	for _, name := range []string{n.StatefulSet, n.Headless, n.Client} {
		if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
			return fmt.Errorf("app name %q gives the invalid object name %q: %v", app, name, errs)
		}
	}
	return nil
}
