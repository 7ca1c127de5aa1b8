package resource

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/utils/ptr"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

// Keys of the monitoring Secret.
const (
	// MonitoringUsernameKey holds broker.MonitoringUserName of the app.
	MonitoringUsernameKey = "username"
	// MonitoringPasswordKey holds its password.
	MonitoringPasswordKey = "password"
)

// Broker is a service's broker wiring, the part of Input the controller
// gathers for every service that publishes or consumes. Its layout comes
// from the broker kind's driver (rabbitmq.ConnectionData,
// nats.ConnectionData); the builders here only place it: the connection
// Secret, BROKER_URL from one of its keys, the hash that rolls the pods and,
// for a kind that authenticates with a file, the file mounted read-only
// with its path in contract.EnvBrokerCredentialsFile.
type Broker struct {
	// Kind is BROKER_KIND: contract.BrokerRabbitMQ or contract.BrokerNATS.
	Kind string
	// Data is what the service's connection Secret holds.
	Data map[string][]byte
	// URLKey is the key of Data that BROKER_URL comes from.
	URLKey string
	// CredentialsKey, when set, is the key of Data mounted as the file
	// CredentialsFile.
	CredentialsKey string
	// CredentialsFile is the absolute path the key is mounted at; its
	// directory holds nothing else.
	CredentialsFile string
}

// UsesBroker reports whether a service of app publishes or consumes, and so
// gets a broker user, a connection Secret and the broker's variables.
func UsesBroker(app *v1alpha1.MicroserviceApp, svc *v1alpha1.Service) bool {
	return app.Spec.Broker != nil && len(svc.Publishes)+len(svc.Consumes) > 0
}

// ServiceQueues are the logical queues a service publishes to or consumes,
// sorted and without duplicates: one QUEUE_<NAME> variable each.
func ServiceQueues(svc *v1alpha1.Service) []string {
	queues := slices.Concat(svc.Publishes, svc.Consumes)
	slices.Sort(queues)
	return slices.Compact(queues)
}

// ManagedBroker maps the app's spec.broker.managed to the rabbitmq
// builders' input; clusterDomain is the cluster's DNS domain ("" for
// cluster.local), operatorNamespace the namespace the operator runs in ("" when
// it runs outside the cluster), whose pods may call the broker. The app's
// spec must have a managed broker.
func ManagedBroker(app *v1alpha1.MicroserviceApp, clusterDomain, operatorNamespace string) rabbitmq.Broker {
	m := app.Spec.Broker.Managed
	b := rabbitmq.Broker{
		App:              app.Name,
		Namespace:        app.Namespace,
		Image:            m.Image,
		Replicas:         ptr.Deref(m.Replicas, 1),
		StorageClassName: m.StorageClassName,
		ClusterDomain:    clusterDomain,
		// The managed-by label puts the broker's objects in the operator's
		// cache; the instance label lets pruning find them.
		Labels: metadata.Labels(app.Name, metadata.BrokerComponent),
		Owner:  metadata.OwnerReference(app),
		Network: rabbitmq.Network{
			Clients:           metadata.AppLabels(app.Name),
			OperatorNamespace: operatorNamespace,
			Monitoring:        MonitoringPeer(app),
		},
	}
	if m.StorageSize != nil {
		b.StorageSize = *m.StorageSize
	}
	if m.Resources != nil {
		b.Resources = *m.Resources
	}
	b.Pod = PodOptions(m.PodOptions)
	return b
}

// Connection is a service's connection to the app's vhost on the broker at
// host:port, as the service's own user with password.
func Connection(app *v1alpha1.MicroserviceApp, service, host string, port int32, password string) rabbitmq.Connection {
	return rabbitmq.Connection{
		App:       app.Name,
		Service:   service,
		Namespace: app.Namespace,
		Host:      host,
		Port:      port,
		VHost:     VHost(app),
		Username:  broker.UserName(app.Name, service),
		Password:  password,
		Labels:    metadata.Labels(app.Name, service),
		Owner:     metadata.OwnerReference(app),
	}
}

// VHost is the app's RabbitMQ virtual host: its name, as broker.Generate
// derives it.
func VHost(app *v1alpha1.MicroserviceApp) string { return app.Name }

// ConnectionSecret is a service's connection Secret,
// metadata.ConnectionSecretName, holding Broker.Data; nil when the service uses no
// queue. The service's pod template carries ConnectionHash of the data, so
// new credentials roll its pods.
func ConnectionSecret(in Input) *corev1ac.SecretApplyConfiguration {
	if in.Broker == nil {
		return nil
	}
	return corev1ac.Secret(metadata.ConnectionSecretName(in.App.Name, in.Service.Name), in.App.Namespace).
		WithLabels(metadata.Labels(in.App.Name, in.Service.Name)).
		WithOwnerReferences(metadata.OwnerReference(in.App)).
		WithType(corev1.SecretTypeOpaque).
		WithData(in.Broker.Data)
}

// MonitoringSecret keeps the password of the app's monitoring user
// (broker.MonitoringUserName), which may only read the app's queue depths
// over the management API, so that it survives restarts. The operator
// itself reads every app's depths at once as the administrator
// (broker.RabbitMQ.ListQueues), one call per broker.
func MonitoringSecret(app *v1alpha1.MicroserviceApp, password string) *corev1ac.SecretApplyConfiguration {
	return corev1ac.Secret(metadata.MonitoringSecretName(app.Name), app.Namespace).
		WithLabels(metadata.Labels(app.Name, metadata.BrokerComponent)).
		WithOwnerReferences(metadata.OwnerReference(app)).
		WithType(corev1.SecretTypeOpaque).
		WithData(map[string][]byte{
			MonitoringUsernameKey: []byte(broker.MonitoringUserName(app.Name)),
			MonitoringPasswordKey: []byte(password),
		})
}

// AccountSecret keeps the seed of the app's NATS account key (generated by
// the controller with natsbroker.GenerateAccount): the account the
// operator declares the app's stream in and signs its services' users
// for, so it must survive restarts like the monitoring password.
func AccountSecret(app *v1alpha1.MicroserviceApp, key string, seed []byte) *corev1ac.SecretApplyConfiguration {
	return corev1ac.Secret(metadata.AccountSecretName(app.Name), app.Namespace).
		WithLabels(metadata.Labels(app.Name, metadata.BrokerComponent)).
		WithOwnerReferences(metadata.OwnerReference(app)).
		WithType(corev1.SecretTypeOpaque).
		WithData(map[string][]byte{key: seed})
}
