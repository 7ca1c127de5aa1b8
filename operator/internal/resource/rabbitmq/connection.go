package rabbitmq

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/metadata"
)

// Keys of a service's connection Secret.
const (
	// ConnectionURLKey holds the complete AMQP URL, credentials and vhost
	// included; the service's BROKER_URL comes from it.
	ConnectionURLKey = "url"
	// ConnectionUsernameKey holds the service's broker user.
	ConnectionUsernameKey = "username"
	// ConnectionPasswordKey holds the service's broker password.
	ConnectionPasswordKey = "password"
)

// Connection is what a service's connection Secret is built from. It serves
// managed brokers (Host from Broker.AMQPHost, Port AMQPPort) and external
// ones (the address the app's spec gives) alike.
type Connection struct {
	// App and Service name the Secret (metadata.ConnectionSecretName).
	App     string
	Service string
	// Namespace is the app's namespace.
	Namespace string
	// Host and Port are the AMQP listener the service dials.
	Host string
	Port int32
	// VHost is the app's virtual host.
	VHost string
	// Username and Password are the service's own broker user
	// (broker.UserName) and its password.
	Username string
	Password string
	// Labels go on the Secret.
	Labels map[string]string
	// Owner, when set, is the Secret's single owner reference.
	Owner *metav1ac.OwnerReferenceApplyConfiguration
}

// ConnectionSecret is a service's broker connection: the complete AMQP URL
// (broker.ConnectionURL, which escapes the credentials and the vhost) and
// the user name and password on their own, for clients that take them
// separately. The service's pod template carries ConnectionHash of its data,
// so changing the password rolls the service's pods onto the new one.
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

// ConnectionData is the data of the service's connection Secret, for
// ConnectionHash before the Secret is written.
func ConnectionData(c Connection) map[string][]byte {
	return map[string][]byte{
		ConnectionURLKey:      []byte(broker.ConnectionURL(c.Host, int(c.Port), c.VHost, c.Username, c.Password)),
		ConnectionUsernameKey: []byte(c.Username),
		ConnectionPasswordKey: []byte(c.Password),
	}
}

// ConnectionHash is the hex SHA-256 of a Secret's data, independent of map
// order: keys in sorted order, each key and value preceded by its length so
// that no two different maps hash the same input. The controller writes it to
// the pod template annotation contract.AnnotationConnectionHash, computed
// from the data it applies (ConnectionData) or reads back (Secret.Data).
func ConnectionHash(data map[string][]byte) string {
	return hashData(data)
}

// hashData hashes a map of byte strings as ConnectionHash describes.
func hashData(data map[string][]byte) string {
	h := sha256.New()
	field := func(b []byte) {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
		h.Write(b)
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		field([]byte(k))
		field(data[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Endpoint is where the operator reaches app's managed broker, as the
// administrator, for the broker admin layer.
func Endpoint(b Broker, c Credentials) broker.Endpoint {
	return broker.Endpoint{
		ManagementURL: b.ManagementURL(),
		AMQPHost:      b.AMQPHost(),
		AMQPPort:      int(AMQPPort),
		Username:      c.Username,
		Password:      c.Password,
	}
}
