package rabbitmq_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"gotest.tools/v3/golden"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

func testConnection(opts ...func(*rabbitmq.Connection)) rabbitmq.Connection {
	b := testBroker()
	c := rabbitmq.Connection{
		App:       b.App,
		Service:   "users",
		Namespace: b.Namespace,
		Host:      b.AMQPHost(),
		Port:      rabbitmq.AMQPPort,
		VHost:     b.App,
		Username:  broker.UserName(b.App, "users"),
		Password:  "USERSPASSWORDUSERSPASSWORD",
		Labels:    metadata.Labels(b.App, "users"),
		Owner:     b.Owner,
	}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// TestConnectionSecret compares connection Secrets with their golden files
// and checks that the URL in each is one an AMQP client reads back into
// exactly the parts it was built from.
func TestConnectionSecret(t *testing.T) {
	tests := []struct {
		name string
		conn rabbitmq.Connection
	}{
		{name: "connection-managed", conn: testConnection()},
		{
			// An external broker on the default vhost, with a password that
			// needs escaping in a URL.
			name: "connection-external",
			conn: testConnection(func(c *rabbitmq.Connection) {
				c.Host = "rabbit.example.com"
				c.Port = 5673
				c.VHost = "/"
				c.Password = "p@ss:w/rd%?#"
				c.Owner = nil
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rabbitmq.ConnectionSecret(tt.conn)
			out, err := yaml.Marshal(s)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			golden.Assert(t, "---\n"+string(out), tt.name+".yaml")

			if *s.Name != metadata.ConnectionSecretName(tt.conn.App, tt.conn.Service) {
				t.Errorf("name = %q, want %q", *s.Name, metadata.ConnectionSecretName(tt.conn.App, tt.conn.Service))
			}
			uri, err := amqp.ParseURI(string(s.Data[rabbitmq.ConnectionURLKey]))
			if err != nil {
				t.Fatalf("amqp091-go cannot parse the URL: %v", err)
			}
			c := tt.conn
			if uri.Scheme != "amqp" || uri.Host != c.Host || uri.Port != int(c.Port) || uri.Vhost != c.VHost ||
				uri.Username != c.Username || uri.Password != c.Password {
				t.Errorf("URL parses to %+v, want host %s port %d vhost %q user %s password %q",
					uri, c.Host, c.Port, c.VHost, c.Username, c.Password)
			}
			if got := string(s.Data[rabbitmq.ConnectionUsernameKey]); got != c.Username {
				t.Errorf("username = %q, want %q", got, c.Username)
			}
			if got := string(s.Data[rabbitmq.ConnectionPasswordKey]); got != c.Password {
				t.Errorf("password = %q, want %q", got, c.Password)
			}
		})
	}
}

func TestConnectionHash(t *testing.T) {
	base := rabbitmq.ConnectionData(testConnection())
	hash := rabbitmq.ConnectionHash(base)

	t.Run("is hex SHA-256 and pinned", func(t *testing.T) {
		// Pinned, and computed independently (Python's hashlib over the
		// same length-prefixed encoding): a different hash for the same
		// data would roll every service's pods when the operator upgrades.
		const want = "4c85080db5ddf2132b1d5c7c7e40e581cfc3175e4a072ca6702cd3f9c16a6043"
		got := rabbitmq.ConnectionHash(map[string][]byte{"password": []byte("secret"), "url": []byte("amqp://u:secret@h:5672/v"), "username": []byte("u")})
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(got) {
			t.Fatalf("hash %q is not 64 hex digits", got)
		}
		if got != want {
			t.Errorf("hash = %s, want %s", got, want)
		}
	})

	t.Run("changes when the password changes", func(t *testing.T) {
		rotated := rabbitmq.ConnectionData(testConnection(func(c *rabbitmq.Connection) { c.Password = "ANOTHERPASSWORDANOTHERPASS" }))
		if rabbitmq.ConnectionHash(rotated) == hash {
			t.Error("rotating the password left the hash unchanged, so pods would not roll")
		}
	})

	t.Run("changes when any one value changes", func(t *testing.T) {
		for key := range base {
			changed := copyData(base)
			changed[key] = append(bytes.Clone(changed[key]), 'x')
			if rabbitmq.ConnectionHash(changed) == hash {
				t.Errorf("changing %q left the hash unchanged", key)
			}
		}
	})

	t.Run("is stable across map orders", func(t *testing.T) {
		// Go randomises map iteration on every range; build the same data
		// in every insertion order and hash each many times.
		keys := []string{rabbitmq.ConnectionURLKey, rabbitmq.ConnectionUsernameKey, rabbitmq.ConnectionPasswordKey}
		for _, order := range [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}} {
			m := make(map[string][]byte, len(keys))
			for _, i := range order {
				m[keys[i]] = base[keys[i]]
			}
			for range 50 {
				if got := rabbitmq.ConnectionHash(m); got != hash {
					t.Fatalf("insertion order %v hashed to %s, want %s", order, got, hash)
				}
			}
		}
	})

	t.Run("tells apart data that concatenates the same", func(t *testing.T) {
		a := rabbitmq.ConnectionHash(map[string][]byte{"ab": []byte("c")})
		b := rabbitmq.ConnectionHash(map[string][]byte{"a": []byte("bc")})
		c := rabbitmq.ConnectionHash(map[string][]byte{"a": []byte("b"), "c": nil})
		if a == b || b == c || a == c {
			t.Errorf("different data hashed the same: %s %s %s", a, b, c)
		}
	})

	t.Run("equals the hash of the Secret's data", func(t *testing.T) {
		s := rabbitmq.ConnectionSecret(testConnection())
		if got := rabbitmq.ConnectionHash(s.Data); got != hash {
			t.Errorf("hash of the built Secret = %s, ConnectionData hashes to %s", got, hash)
		}
	})
}

func TestCredentialsFromSecret(t *testing.T) {
	want := testCredentials
	built := rabbitmq.AdminSecret(testBroker(), want)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: *built.Namespace, Name: *built.Name},
		Data:       built.Data,
	}
	got, err := rabbitmq.CredentialsFromSecret(secret)
	if err != nil {
		t.Fatalf("CredentialsFromSecret: %v", err)
	}
	if got != want {
		t.Errorf("read back %+v, want %+v", got, want)
	}

	delete(secret.Data, rabbitmq.ErlangCookieKey)
	secret.Data[rabbitmq.AdminPasswordKey] = nil
	_, err = rabbitmq.CredentialsFromSecret(secret)
	if err == nil {
		t.Fatal("CredentialsFromSecret accepted a Secret without cookie and password")
	}
	for _, key := range []string{rabbitmq.ErlangCookieKey, rabbitmq.AdminPasswordKey, "apps/blog-broker-admin"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error %q does not name %q", err, key)
		}
	}
}

func copyData(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = bytes.Clone(v)
	}
	return out
}
