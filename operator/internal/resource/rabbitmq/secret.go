package rabbitmq

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/courier-dev/courier/operator/internal/metadata"
)

// Keys of the admin Secret.
const (
	// AdminUsernameKey holds the administrator's user name.
	AdminUsernameKey = "username"
	// AdminPasswordKey holds the administrator's password.
	AdminPasswordKey = "password"
	// ErlangCookieKey holds the Erlang cookie the nodes and the CLI tools
	// authenticate each other with.
	ErlangCookieKey = "erlang-cookie"
)

// Credentials are a managed broker's secrets: the administrator the operator
// manages the broker as, and the Erlang cookie of its cluster.
type Credentials struct {
	Username     string
	Password     string
	ErlangCookie string
}

// CredentialsFromSecret reads the credentials of an existing admin Secret.
func CredentialsFromSecret(s *corev1.Secret) (Credentials, error) {
	var errs []error
	get := func(key string) string {
		v, ok := s.Data[key]
		if !ok || len(v) == 0 {
			errs = append(errs, fmt.Errorf("key %q is missing or empty", key))
		}
		return string(v)
	}
	c := Credentials{
		Username:     get(AdminUsernameKey),
		Password:     get(AdminPasswordKey),
		ErlangCookie: get(ErlangCookieKey),
	}
	if err := errors.Join(errs...); err != nil {
		return Credentials{}, fmt.Errorf("read admin secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return c, nil
}

// AdminSecret holds the administrator's credentials, which the pods read as
// RABBITMQ_DEFAULT_USER and RABBITMQ_DEFAULT_PASS, and the Erlang cookie.
//
// The controller must create it only when it is missing, from credentials
// it generates, and otherwise build it from CredentialsFromSecret of the
// existing Secret, so that applying it again changes nothing: RabbitMQ
// reads the default user only when a node initialises an empty database, so
// rotating the values here would lock the operator out, and a new cookie
// would split the cluster. The Secret is immutable for the same reason;
// kubelets also stop watching it.
func AdminSecret(b Broker, c Credentials) *corev1ac.SecretApplyConfiguration {
	return corev1ac.Secret(metadata.BrokerNamesFor(b.App).AdminSecret, b.Namespace).
		WithLabels(b.labels()).
		WithOwnerReferences(b.owners()...).
		WithType(corev1.SecretTypeOpaque).
		WithImmutable(true).
		WithData(map[string][]byte{
			AdminUsernameKey: []byte(c.Username),
			AdminPasswordKey: []byte(c.Password),
			ErlangCookieKey:  []byte(c.ErlangCookie),
		})
}
