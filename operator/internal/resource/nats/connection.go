package nats

import (
	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/courier-dev/courier/operator/internal/metadata"
)

// Keys of a service's NATS connection Secret.
const (
	// ConnectionURLKey holds the client URL, without credentials; the
	// service's BROKER_URL comes from it.
	ConnectionURLKey = "url"
	// ConnectionCredsKey holds the service's creds file
	// (natsbroker.IssueUser): its user JWT and nkey seed.
	ConnectionCredsKey = "nats.creds"
)

// CredentialsDir is where the service's Deployment mounts the Secret's
// ConnectionCredsKey (read-only); the kit reads CredentialsFile
// (messaging.Config.CredentialsFile).
const (
	CredentialsDir  = "/etc/courier/broker"
	CredentialsFile = CredentialsDir + "/" + ConnectionCredsKey
)

// Connection is what a service's NATS connection Secret is built from.
type Connection struct {
	// App and Service name the Secret (metadata.ConnectionSecretName: the
	// same name whatever the kind).
	App, Service string
	Namespace    string
	// URL is the client URL (Broker.URL, or an external system's).
	URL string
	// Creds is the service's creds file.
	Creds  []byte
	Labels map[string]string
	Owner  *metav1ac.OwnerReferenceApplyConfiguration
}

// ConnectionSecret is a service's NATS connection. The pod template carries
// rabbitmq.ConnectionHash of its data, so new creds roll the pods.
func ConnectionSecret(c Connection) *corev1ac.SecretApplyConfiguration {
	s := corev1ac.Secret(metadata.ConnectionSecretName(c.App, c.Service), c.Namespace).
		WithLabels(c.Labels).
		WithType(corev1.SecretTypeOpaque).
		WithData(ConnectionData(c))
	if c.Owner != nil {
		s.WithOwnerReferences(c.Owner)
	}
	return s
}

// ConnectionData is the Secret's data, for the hash before it is written.
func ConnectionData(c Connection) map[string][]byte {
	return map[string][]byte{
		ConnectionURLKey:   []byte(c.URL),
		ConnectionCredsKey: append([]byte(nil), c.Creds...),
	}
}
