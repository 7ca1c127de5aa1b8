package broker

import (
	"crypto/rand"
	"net"
	"net/url"
	"strconv"
)

// ManagedTag is the RabbitMQ user tag on every user Courier creates. RabbitMQ
// ignores tags it does not know; Courier uses it to tell its own users from
// hand-made ones, so it never deletes a user it did not create.
const ManagedTag = "courier"

// MonitoringTag is RabbitMQ's built-in "management" tag. It lets a user read
// the HTTP API for the vhosts it has permissions in and nothing else; the
// broader "monitoring" tag would show every vhost, connection and node of a
// shared broker, which queue depth polling does not need.
const MonitoringTag = "management"

// UserName is the broker user of a service: "<app>.<service>". Users are
// broker-wide, so the app prefix keeps two apps on one broker apart; service
// names have no dot (Validate), so no two (app, service) pairs share a name.
func UserName(app, service string) string { return app + "." + service }

// MonitoringUserName is the app's read-only user for queue depth polling.
// The underscore cannot occur in a service name (a DNS label), so it never
// collides with UserName.
func MonitoringUserName(app string) string { return app + "._monitoring" }

// ConnectionURL is the complete AMQP URL a service dials: user and password
// are userinfo-escaped and the vhost is path-escaped, so a vhost "/" becomes
// "%2F" and a password may hold any character.
func ConnectionURL(host string, port int, vhost, user, password string) string {
	u := url.URL{
		Scheme: "amqp",
		User:   url.UserPassword(user, password),
		Host:   net.JoinHostPort(host, strconv.Itoa(port)),
		Path:   "/" + vhost,
		// Path alone would leave a "/" inside the vhost unescaped, and
		// amqp091-go would read it as part of the path.
		RawPath: "/" + url.PathEscape(vhost),
	}
	return u.String()
}

// GeneratePassword returns a new random password with 130 bits of entropy
// from crypto/rand, in base32 letters and digits, so it needs no escaping in
// URLs, environment variables or shells.
func GeneratePassword() string { return rand.Text() }
